"""Runs the Keras 3 tests (`tests/keras3/`) in their own process.

The Keras flavour is fixed at import, and this session runs tf-keras, so the
Keras 3 half of the suite needs a fresh interpreter.
"""
import pytest

from subsuite import assert_suite_passes

pytestmark = pytest.mark.slow  # the Keras 3 half runs in a subprocess


def test_keras3_suite_passes():
    assert_suite_passes("keras3", PWISER_TEST_KERAS3="1", TF_USE_LEGACY_KERAS="0")
