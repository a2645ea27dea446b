"""notebooks/colab_tpu.ipynb: its code cells run unchanged on this CPU-only machine.

The install cell (its first line is the marker `# colab-install`) is skipped: it
installs the TPU build of TensorFlow in Colab. Every other code cell runs, in
order, in one namespace of a fresh Python process, with small sizes set through
the environment variables the notebook reads. Without a TPU the notebook falls
back to the default strategy.
"""
import importlib.metadata
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # runs the notebook in a subprocess

NOTEBOOK = os.path.join(REPO, "notebooks", "colab_tpu.ipynb")
INSTALL_MARKER = "# colab-install"


def code_cells():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def test_only_the_marked_install_cell_uses_shell_or_magics():
    cells = code_cells()
    install = [c for c in cells if c.startswith(INSTALL_MARKER)]
    assert len(install) == 1
    assert 'tensorflow-tpu==2.21.*' in install[0]
    for cell in cells:
        if cell not in install:
            assert not re.search(r"^\s*[%!]", cell, re.M), cell


def test_install_cell_lists_the_package_dependencies():
    """pwiser-tf goes in with --no-deps (pip would add the CPU tensorflow wheel beside
    tensorflow-tpu), so the cell names every other dependency of setup.py."""
    install = next(c for c in code_cells() if c.startswith(INSTALL_MARKER))
    required = [r for r in importlib.metadata.requires("pwiser-tf") if "extra ==" not in r]
    names = {re.split(r"[<>=!;\s\[]", r)[0].lower() for r in required}
    assert "tensorflow" in names
    for name in names - {"tensorflow"}:
        assert re.search(rf'(^|[\s"]){re.escape(name)}([<>="\s]|$)', install, re.M), name


def test_notebook_runs_on_cpu_with_the_default_strategy(tmp_path):
    cells = [c for c in code_cells() if not c.startswith(INSTALL_MARKER)]
    script = tmp_path / "notebook.py"
    script.write_text("\n\n".join(cells) + "\n\nimport json\n"
                      "print('RESULT', json.dumps({'strategy': type(strategy).__name__,"
                      " 'on_tpu': ON_TPU, 'result': result}))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PWISER_NOTEBOOK_ROWS="3000",
               PWISER_NOTEBOOK_EPOCHS="1", PWISER_NOTEBOOK_BATCH="256",
               PWISER_NOTEBOOK_DIR=str(tmp_path / "work"))
    env.pop("TF_USE_LEGACY_KERAS", None)  # the notebook chooses it itself
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    printed = json.loads(line[len("RESULT "):])
    assert printed["on_tpu"] is False
    assert printed["strategy"] == "_DefaultDistributionStrategy"
    run = tmp_path / "work" / "runs" / "mmoe-pwiser"
    assert json.loads((run / "metrics.json").read_text()) == printed["result"]
    assert (run / "saved_model" / "saved_model.pb").is_file()
    assert any((run / "logs" / "train").iterdir())
