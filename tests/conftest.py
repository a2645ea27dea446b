"""Test session setup.

The Keras flavour is fixed when TensorFlow first loads Keras, so it is set here,
before any test module is imported. The models need tf-keras (TFRS is Keras 2), so
the session runs with `TF_USE_LEGACY_KERAS=1`; the tests under `tests/keras3/` need
Keras 3 and run in their own process, started by `tests/test_keras3_mode.py` with
`PWISER_TEST_KERAS3=1`. The tf-keras tests on virtual CPU devices
(`tests/distributed/`) run in their own process too, started by
`tests/test_distributed_pwiser.py`.

Tiers: tests that start a subprocess or train a run are marked `slow`;
`pytest -m "not slow"` is the quick loop, `pytest` runs everything.
"""
import os
import sys

# Folders of tests that run in their own process, started by a runner test, for
# settings fixed when a framework loads: the Keras flavour, Keras' backend, the
# logical devices.
SUBSUITES = ("keras3", "distributed", "backends", "jax_parallel")
KERAS3_SUBSUITES = ("keras3", "backends", "jax_parallel")
# The runner names its folder by one variable (each folder's conftest checks it).
STARTED_BY = {"PWISER_TEST_BACKEND": "backends", "PWISER_TEST_JAX_PARALLEL": "jax_parallel",
              "PWISER_TEST_DISTRIBUTED": "distributed", "PWISER_TEST_KERAS3": "keras3"}
SUBSUITE = next((folder for variable, folder in STARTED_BY.items()
                 if os.environ.get(variable)), None)
KERAS3 = SUBSUITE in KERAS3_SUBSUITES
os.environ["TF_USE_LEGACY_KERAS"] = "0" if KERAS3 else "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The main session collects none of them.
collect_ignore = [folder for folder in SUBSUITES if folder != SUBSUITE]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small real samples shipped with the tests (see tests/data/README.md).
SAMPLES = os.path.join(REPO, "tests", "data")
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def converted_synthetic(root, rows: int) -> str:
    """Synthetic AliExpress data, `rows` exposures, converted with train, validation
    and test splits under `root`; returns the converted folder."""
    from pwiser_tf.pipelines import synthesize
    from pwiser_tf.pipelines.convert import convert

    written = synthesize("aliexpress", rows, str(root / "files"), seed=5)
    convert(written["convert_format"], written["convert_inputs"], str(root / "data"),
            validation_fraction=0.25, progress=False)
    return str(root / "data")
