"""The command line's conventions: quiet, --version, python -m, one-line errors for
places that cannot be written, and the docs/ paths the code cites."""
import glob
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, SAMPLES
from pwiser_tf import __version__, cli

AE = os.path.join(SAMPLES, "aliexpress", "torch_rechub")


def run(*args, env=None):
    env = dict(os.environ if env is None else env)
    return subprocess.run([sys.executable, "-m", "pwiser_tf", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def one_line(err: str, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow  # four subprocesses
def test_quiet_by_default_version_and_python_m():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = run("evaluate", "--model-dir", "/nonexistent", "--data", "/nonexistent", env=env)
    assert proc.returncode == 2
    line = one_line(proc.stderr, "pwiser-tf evaluate: error:", "metadata.json")
    assert "cuInit" not in proc.stderr and "absl" not in proc.stderr, line
    helped = run("--help", env=env)
    assert helped.returncode == 0 and helped.stderr == "" and "train" in helped.stdout
    version = run("--version", env=env)
    assert version.returncode == 0 and version.stdout.strip() == f"pwiser-tf {__version__}"
    verbose = run("--verbose", "evaluate", "--model-dir", "/x", "--data", "/x", env=env)
    assert verbose.returncode == 2 and "metadata.json" in verbose.stderr


@pytest.fixture
def read_only(tmp_path):
    """A directory this process cannot write in (root writes everywhere but /sys)."""
    if os.geteuid() == 0:
        return "/sys/kernel"
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from pwiser_tf.pipelines.convert import convert

    out = str(tmp_path_factory.mktemp("cmd") / "data")
    convert("aliexpress-csv", [os.path.join(AE, "aliexpress_train_sample.csv"),
                               os.path.join(AE, "aliexpress_test_sample.csv")], out,
            validation_fraction=0.3, progress=False)
    return out


def main_error(capsys, *argv):
    assert cli.main(list(map(str, argv))) == 2
    return one_line(capsys.readouterr().err)


def test_unwritable_outputs_are_one_line(data, tmp_path, read_only, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    train = ["train", "--data", data, "--model", "mmoe", "--loss", "bce", "--epochs", 1]
    assert "--output " + str(afile) + ": is a file" in main_error(
        capsys, *train, "--output", afile)
    assert "cannot create it or write there" in main_error(
        capsys, *train, "--output", os.path.join(read_only, "run"))
    assert "cannot create it or write there" in main_error(
        capsys, *train, "--output", read_only)
    assert "is a file" in main_error(capsys, "experiment", "--data", data, "--output", afile)

    evaluate = ["evaluate", "--model-dir", tmp_path / "nomodel", "--data", data]
    folder = tmp_path / "preds"
    folder.mkdir()
    assert "--predictions " + str(folder) + ": is a directory" in main_error(
        capsys, *evaluate, "--predictions", folder)
    assert not glob.glob(str(folder) + ".tmp*")  # nothing left beside it
    assert "does not exist" in main_error(
        capsys, *evaluate, "--predictions", tmp_path / "missing" / "p.csv")
    assert "cannot create it or write there" in main_error(
        capsys, *evaluate, "--predictions", os.path.join(read_only, "p.csv"))


def test_every_cited_docs_path_exists():
    cited = set()
    files = [os.path.join(REPO, "setup.py"), os.path.join(REPO, "README.md")]
    for folder in ("pwiser_tf", "models", "pipelines", "benchmarks", "tests"):
        for pattern in ("**/*.py", "**/*.yaml", "**/*.md"):
            files += glob.glob(os.path.join(REPO, folder, pattern), recursive=True)
    for path in files:
        with open(path, encoding="utf-8") as f:
            # A path after --output is where a script writes, not a citation.
            for match in re.finditer(r"(?<![\w/])(?<!--output )docs/[\w./-]*\w", f.read()):
                cited.add((match.group(0), os.path.relpath(path, REPO)))
    assert cited
    missing = sorted(f"{doc} (cited in {where})" for doc, where in cited
                     if not os.path.exists(os.path.join(REPO, doc)))
    assert not missing, missing
