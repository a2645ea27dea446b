"""JAX tests on two virtual CPU devices, under `keras.distribution.DataParallel`.

They run in their own process, started by `tests/test_jax_data_parallel.py` with
`PWISER_TEST_JAX_PARALLEL=1`, `KERAS_BACKEND=jax` and
`XLA_FLAGS=--xla_force_host_platform_device_count=2`: the backend and the
device count are fixed when Keras and JAX load, and the main session runs
tf-keras on TensorFlow. Elsewhere the folder is left out of a wider run and
refused when named.
"""
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
STARTED = os.environ.get("PWISER_TEST_JAX_PARALLEL") == "1"
DEVICES = 2
REFUSAL = ("tests/jax_parallel runs with PWISER_TEST_JAX_PARALLEL=1, KERAS_BACKEND=jax "
           f"and XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES} "
           "(tests/test_jax_data_parallel.py starts it)")


def _names_this_folder(config) -> bool:
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    if STARTED:
        return None
    if _names_this_folder(config):
        raise pytest.UsageError(REFUSAL)
    return True  # a wider run started elsewhere: not these tests


if STARTED:
    # Both settings must reach JAX and Keras before they load, so the runner
    # puts them in the environment; here they are only checked.
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("KERAS_BACKEND") != "jax" \
            or f"--xla_force_host_platform_device_count={DEVICES}" not in flags:
        raise RuntimeError(REFUSAL)
    if "keras" in sys.modules or "jax" in sys.modules:
        raise RuntimeError("tests/jax_parallel: Keras or JAX was imported before the "
                           "environment was checked")
    os.environ["TF_USE_LEGACY_KERAS"] = "0"  # Keras 3: pwiser_tf.PWiseRLoss is its loss
    import jax

    if jax.device_count() != DEVICES:
        raise RuntimeError(f"{REFUSAL}; JAX sees {jax.devices()}")
