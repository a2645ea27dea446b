"""The kernel and the Keras 3 losses on one Keras backend per process.

`tests/test_backends.py` runs this folder once per backend (TensorFlow, JAX,
PyTorch) with `PWISER_TEST_BACKEND` and `KERAS_BACKEND` set to it: the backend is
fixed when Keras is imported, and the suite's own process runs tf-keras. Started
any other way the folder refuses to run; inside the whole suite's collection it
is left out, as the other per-process folders are.

Under JAX and PyTorch the process must never import TensorFlow: the session
fails if it did (the last test checks it too, `test_backend_isolation.py`).
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = os.environ.get("PWISER_TEST_BACKEND")
BACKENDS = ("tensorflow", "jax", "torch")
ISOLATION = "test_backend_isolation.py"  # runs last

if BACKEND is None:
    collect_ignore_glob = ["test_*.py"]  # the whole suite's collection passes by
else:
    if BACKEND not in BACKENDS or os.environ.get("KERAS_BACKEND") != BACKEND:
        raise RuntimeError(f"tests/backends: PWISER_TEST_BACKEND must be one of {BACKENDS} "
                           f"and equal KERAS_BACKEND; got {BACKEND!r} and "
                           f"{os.environ.get('KERAS_BACKEND')!r}")
    if "keras" in sys.modules or "tensorflow" in sys.modules:
        raise RuntimeError("tests/backends: Keras was imported before its backend was set")
    os.environ["TF_USE_LEGACY_KERAS"] = "0"  # Keras 3: pwiser_tf.PWiseRLoss is its loss


def _inside_this_folder(arg: str, invocation_dir) -> bool:
    path = os.path.abspath(os.path.join(str(invocation_dir), arg.split("::")[0]))
    return os.path.commonpath([path, HERE]) == HERE


def pytest_configure(config):
    if BACKEND is None and any(_inside_this_folder(a, config.invocation_params.dir)
                               for a in config.args):
        raise pytest.UsageError(
            "tests/backends runs one Keras backend per process: run "
            "tests/test_backends.py, or set PWISER_TEST_BACKEND and KERAS_BACKEND "
            "to tensorflow, jax or torch")


def pytest_collection_modifyitems(items):
    """The isolation check runs after every other test of the process."""
    if BACKEND is not None:
        items.sort(key=lambda item: os.path.basename(str(item.path)) == ISOLATION)


def pytest_sessionfinish(session, exitstatus):
    if BACKEND in ("jax", "torch") and "tensorflow" in sys.modules:
        sys.stderr.write(f"tests/backends: TensorFlow was imported on the {BACKEND} "
                         f"backend\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
