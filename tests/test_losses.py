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


def test_reduction_none_gives_one_value_per_row():
    loss_cases.check_reduction_none_gives_rows()


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
    (dict(pwiser_weight=-1.0), "must be a finite number >= 0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        PWiseRLoss(**kwargs)


def test_y_true_must_pack_both_labels():
    with pytest.raises(InputError, match=r"\[B, 2\]"):
        PWiseRLoss()(np.ones((4, 1), "float32"), np.full(4, 0.5, "float32"))


@pytest.mark.parametrize("lam, scores", [(0.0, "probability"), (0.3, "probability"),
                                         (2.0, "probability"), (1.0, "logit")])
def test_two_headed_compile_and_the_models_task_give_the_same_gradients(lam, scores):
    """One lambda: `PWiseRLoss` on the CTR output of a compiled two-headed model
    plus BCE on its CTCVR output is the models' task with the same `pwiser_weight`."""
    from pwiser_tf.models.task import CtrCvrTask

    x, y = loss_cases.toy_data(512)
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((6,))
    hidden = tf.keras.layers.Dense(8, activation="relu")(inputs)
    model = tf.keras.Model(inputs, {
        "ctr": tf.keras.layers.Dense(1, activation="sigmoid", name="ctr")(hidden),
        "ctcvr": tf.keras.layers.Dense(1, activation="sigmoid", name="ctcvr")(hidden)})
    options = dict(pwiser_weight=lam, margin_click=0.2, margin_nonclick=0.1,
                   pwiser_scores=scores)
    model.compile(optimizer="adam", loss={"ctr": PWiseRLoss(**options),
                                          "ctcvr": "binary_crossentropy"})
    task = CtrCvrTask(pwiser=PWiseRLoss(bce=False, **options))
    labels = {"click": tf.constant(y[:, 0]), "conversion": tf.constant(y[:, 1])}

    with tf.GradientTape() as tape:
        out = model(x)
        compiled = model.compute_loss(x, {"ctr": tf.constant(y), "ctcvr": tf.constant(y[:, 1:])},
                                      out)
    compiled_grads = tape.gradient(compiled, model.trainable_variables)
    with tf.GradientTape() as tape:
        out = model(x)
        ctr, ctcvr = out["ctr"][:, 0], out["ctcvr"][:, 0]
        tasked = task(labels, {"ctr": ctr, "ctcvr": ctcvr, "cvr": ctcvr / ctr})
    task_grads = tape.gradient(tasked, model.trainable_variables)

    if lam:
        assert float(task.parts["pwiser"].result()) > 0  # the term is active
    np.testing.assert_allclose(float(tasked), float(compiled), rtol=1e-5)
    for a, b in zip(task_grads, compiled_grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
