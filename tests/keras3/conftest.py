"""Keras 3 half of the suite: refuses to run under tf-keras.

It runs in its own process, so it splits the CPU into 4 logical devices before
TensorFlow initialises, for the tests under `tf.distribute` strategies."""
import os
import sys

if os.environ.get("PWISER_TEST_KERAS3") != "1":
    raise RuntimeError("tests/keras3 runs with PWISER_TEST_KERAS3=1 "
                       "(tests/test_keras3_mode.py starts it)")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import distributed_cases  # noqa: E402

distributed_cases.split_cpu(4)
