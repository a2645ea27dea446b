"""The wheel maps `models/` and `pipelines/` into the `pwiser_tf` namespace."""
import os
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow  # builds a wheel in a subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_layout(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path), REPO], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next(p for p in os.listdir(tmp_path) if p.endswith(".whl"))
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    for required in ("pwiser_tf/__init__.py", "pwiser_tf/kernel.py",
                     "pwiser_tf/models/__init__.py", "pwiser_tf/pipelines/__init__.py",
                     "pwiser_tf/pipelines/readers/__init__.py",
                     "pwiser_tf/configs/default.yaml"):
        assert required in names, required
    top_level = {name.split("/")[0] for name in names}
    assert "models" not in top_level and "pipelines" not in top_level, top_level
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pwiser-tf = pwiser_tf.cli:main" in \
        zipfile.ZipFile(tmp_path / wheel).read(entry_points).decode()
