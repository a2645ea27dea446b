"""`PWiseRLoss` and the kernel under Keras 3 (run in its own process)."""
import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import loss_cases  # noqa: E402
from pwiser_tf import PWiseRLoss  # noqa: E402


def test_runs_on_keras_3():
    import keras

    assert keras.__version__.startswith("3.")
    assert issubclass(PWiseRLoss, keras.losses.Loss)


def test_value_is_bce_plus_weighted_pwiser():
    loss_cases.check_value_is_bce_plus_weighted_pwiser()


def test_reduction_none_gives_one_value_per_row():
    loss_cases.check_reduction_none_gives_rows()


def test_compile_fit_save_reload(tmp_path):
    loss_cases.check_compile_fit_save_reload(tmp_path)


def test_two_headed_model_with_packed_target():
    loss_cases.check_two_headed_model_with_packed_target()


def test_kernel_under_xla_with_keras_3_loaded():
    loss = PWiseRLoss(bce=False, margin_click=0.1)
    x, y = loss_cases.toy_data(512)
    p = tf.sigmoid(tf.constant(x[:, 0]))
    eager = loss(y, p)
    compiled = tf.function(lambda a, b: loss(a, b), jit_compile=True)(y, p)
    assert abs(float(eager) - float(compiled)) < 1e-5
