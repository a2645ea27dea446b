"""Runs the backend tests (`tests/backends/`) once per Keras backend, each in its
own process: the kernel against its definition (value and gradient, eager and
compiled), the Keras 3 losses, and the errors on bad input, on TensorFlow, JAX
and PyTorch.

The backend is fixed when Keras is imported, and this session runs tf-keras, so
each backend needs a fresh interpreter with `KERAS_BACKEND` set and Keras 3
(`TF_USE_LEGACY_KERAS=0`).
"""
import pytest

from subsuite import assert_suite_passes

pytestmark = pytest.mark.slow  # each backend runs in a subprocess

BACKENDS = ("tensorflow", "jax", "torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_suite_passes(backend):
    assert_suite_passes("backends", KERAS_BACKEND=backend, PWISER_TEST_BACKEND=backend,
                        TF_USE_LEGACY_KERAS="0")
