"""Keras 3 half of the suite: refuses to run under tf-keras."""
import os

if os.environ.get("PWISER_TEST_KERAS3") != "1":
    raise RuntimeError("tests/keras3 runs with PWISER_TEST_KERAS3=1 "
                       "(tests/test_keras3_mode.py starts it)")
