"""Runs last (see conftest.py): the process ran on the backend it was started for,
and under JAX or PyTorch nothing it did (the kernel, the losses, fit) imported
TensorFlow."""
import os
import sys

import keras

import framework


def test_ran_on_the_requested_backend():
    assert keras.backend.backend() == os.environ["PWISER_TEST_BACKEND"] == framework.BACKEND
    assert keras.__version__.startswith("3.")


def test_tensorflow_imported_only_on_its_backend():
    if framework.BACKEND == "tensorflow":
        assert "tensorflow" in sys.modules
    else:
        assert "tensorflow" not in sys.modules
