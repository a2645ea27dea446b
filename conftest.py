"""pytest setup for the whole repository.

The Keras flavour is fixed when TensorFlow first loads Keras. The models need
tf-keras (TFRS is Keras 2), so the session runs with `TF_USE_LEGACY_KERAS=1`;
the tests under `tests/keras3/` need Keras 3 and run in their own process, started
by `tests/test_keras3_mode.py` with `PWISER_TEST_KERAS3=1`. This is set here, at the
root, because the docstring examples of the packages (`--doctest-modules`) are
imported before `tests/conftest.py` is read.

The repository's `models/` and `pipelines/` folders are installed as
`pwiser_tf.models` and `pwiser_tf.pipelines` (`setup.py`); their doctests are run
on the modules under those names, so that no second copy of a module is imported
under a top-level name.
"""
import importlib
import os

from _pytest.doctest import DoctestModule

KERAS3 = os.environ.get("PWISER_TEST_KERAS3") == "1"
os.environ["TF_USE_LEGACY_KERAS"] = "0" if KERAS3 else "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.abspath(__file__))
INSTALLED_AS = {"pwiser_tf": "pwiser_tf", "models": "pwiser_tf.models",
                "pipelines": "pwiser_tf.pipelines"}
_import_by_path = DoctestModule._getobj


def _installed_name(path: str):
    parts = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
    if parts[0] not in INSTALLED_AS:
        return None
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([INSTALLED_AS[parts[0]]] + parts[1:])


def _import_installed(self):
    name = _installed_name(str(self.path))
    return importlib.import_module(name) if name else _import_by_path(self)


DoctestModule._getobj = _import_installed
