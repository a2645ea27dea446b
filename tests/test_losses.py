"""`PWiseRLoss` under tf-keras (this session) and inside a TFRS Ranking task."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import loss_cases
from pwiser_tf import PWiseRLoss
from pwiser_tf.errors import InputError


def test_runs_on_tf_keras():
    assert tf.keras.Model.__module__.startswith("tf_keras")
    assert issubclass(PWiseRLoss, tf.keras.losses.Loss)


def test_value_is_bce_plus_weighted_pwiser():
    loss_cases.check_value_is_bce_plus_weighted_pwiser()


def test_compile_fit_save_reload(tmp_path):
    loss_cases.check_compile_fit_save_reload(tmp_path)


def test_two_headed_model_with_packed_target():
    loss_cases.check_two_headed_model_with_packed_target()


def test_sample_weight_weights_bce_and_pairs():
    _, y = loss_cases.toy_data(32)
    p = np.linspace(0.05, 0.95, 32).astype("float32")
    weights = np.ones(32, "float32")
    weights[:16] = 0.0
    loss = PWiseRLoss(margin_click=0.1)
    weighted = float(loss(y, p, sample_weight=weights))
    # Zero weights remove the rows from both parts, up to BCE's 1/B normaliser.
    half = PWiseRLoss(margin_click=0.1, bce=False)(y[16:], p[16:])
    bce = PWiseRLoss(pwiser_weight=0.0)(y[16:], p[16:])
    assert weighted == pytest.approx(float(bce) / 2 + float(half), rel=1e-5)


class RankingModel(tfrs.Model):
    def __init__(self):
        super().__init__()
        self.net = loss_cases.small_model()
        self.task = tfrs.tasks.Ranking(loss=PWiseRLoss(pwiser_weight=1.0, margin_click=0.05))

    def compute_loss(self, inputs, training=False):
        features, labels = inputs
        return self.task(labels=labels, predictions=self.net(features, training=training))


def test_in_a_tfrs_ranking_task():
    x, y = loss_cases.toy_data()
    model = RankingModel()
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(256)
    history = model.fit(dataset, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    features, labels = next(iter(dataset))
    direct = model.task._loss(labels, model.net(features))
    assert float(model.compute_loss((features, labels))) == pytest.approx(float(direct),
                                                                          rel=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(pwiser_scores="rank"), "pwiser_scores"),
    (dict(normalization="x"), "normalization"),
    (dict(pwiser_weight=-1.0), "must be >= 0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        PWiseRLoss(**kwargs)


def test_y_true_must_pack_both_labels():
    with pytest.raises(InputError, match=r"\[B, 2\]"):
        PWiseRLoss()(np.ones((4, 1), "float32"), np.full(4, 0.5, "float32"))
