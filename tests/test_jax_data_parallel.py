"""Runs the JAX `keras.distribution.DataParallel` tests (`tests/jax_parallel/`)
in their own process, and the README's JAX snippet in a fresh one.

The backend (`KERAS_BACKEND=jax`) and the two virtual CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=2`) are fixed when Keras and
JAX load, and this session runs tf-keras on TensorFlow, so the JAX checks of
global-batch pairs need a fresh interpreter with both set before it starts.
"""
import os
import subprocess
import sys

import pytest

from subsuite import assert_suite_passes
from test_readme import snippet

pytestmark = pytest.mark.slow  # the JAX half runs in a subprocess

DEVICE_FLAG = "--xla_force_host_platform_device_count=2"


def test_jax_data_parallel_suite_passes():
    flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), DEVICE_FLAG) if f)
    assert_suite_passes("jax_parallel", PWISER_TEST_JAX_PARALLEL="1", KERAS_BACKEND="jax",
                        XLA_FLAGS=flags)


def test_readme_jax_snippet_runs_on_jax():
    """As a user runs it: no backend set beforehand (the snippet sets it), and
    `TF_USE_LEGACY_KERAS` unset, as the README says."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    code = snippet("jax") + ("assert keras.backend.backend() == 'jax'\n"
                             "restored = keras.models.load_model('/tmp/pwiser_jax_model.keras')\n"
                             "assert type(restored.loss) is pwiser_tf.losses.PWiseRLoss\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(env, TF_CPP_MIN_LOG_LEVEL="3"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
