"""The loss's contract on bad input: labels outside {0, 1}, non-finite settings, shapes,
scalar weights, reductions, the task's loss objects, and one rule for the BCE mean over
rows with a missing label."""
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from pwiser_tf import PackedAUC, PWiseRLoss, pwiser
from pwiser_tf.errors import InputError
from pwiser_tf.tf_keras_losses import BinaryCrossentropy
from pwiser_tf.models.task import CtrCvrTask

P = np.array([0.9, 0.2, 0.6, 0.1], np.float32)
GOOD = np.array([[1, 1], [1, 0], [0, 0], [0, 0]], np.float32)
BAD = np.array([[2, 0], [1, 0], [0, 0], [0, 0]], np.float32)  # a click of 2


@pytest.mark.parametrize("loss", [PWiseRLoss(), PWiseRLoss(pwiser_weight=0.0),
                                  PWiseRLoss(bce=False)], ids=["both", "bce", "pwiser"])
def test_a_label_outside_0_1_is_refused_eagerly(loss):
    with pytest.raises(InputError, match=r"click\[0\] = 2"):
        loss(BAD, P)


@pytest.mark.parametrize("loss", [PWiseRLoss(), PWiseRLoss(pwiser_weight=0.0)],
                         ids=["both", "bce"])
def test_a_label_outside_0_1_stops_a_graph(loss):
    step = tf.function(lambda y, p: loss(y, p))
    assert np.isfinite(float(step(tf.constant(GOOD), tf.constant(P))))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be 0, 1"):
        step(tf.constant(BAD), tf.constant(P))


def test_under_xla_the_loss_becomes_nan():
    # XLA compiles assertions away: the loss turns NaN, which the trainer reports.
    step = tf.function(lambda y, p: PWiseRLoss(pwiser_weight=0.0)(y, p), jit_compile=True)
    assert np.isfinite(float(step(tf.constant(GOOD), tf.constant(P))))
    assert math.isnan(float(step(tf.constant(BAD), tf.constant(P))))
    term = tf.function(lambda c: pwiser(P, c, GOOD[:, 1]), jit_compile=True)
    assert math.isnan(float(term(tf.constant(BAD[:, 0]))))


def test_fit_with_a_click_of_2_stops():
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1, "sigmoid")])
    model.compile("sgd", loss=PWiseRLoss(pwiser_weight=0.0))
    x = np.ones((8, 3), np.float32)
    y = np.tile(BAD, (2, 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be 0, 1"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_a_tfrs_ranking_task_refuses_a_bad_label():
    task = tfrs.tasks.Ranking(loss=PWiseRLoss(pwiser_weight=0.0))
    with pytest.raises(InputError, match="click"):
        task(labels=BAD, predictions=P[:, None])
    step = tf.function(lambda y: task(labels=y, predictions=P[:, None]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be 0, 1"):
        step(tf.constant(BAD))


def test_the_models_task_refuses_a_bad_label():
    task = CtrCvrTask()
    labels = {"click": tf.constant([1.0, 0.0]), "conversion": tf.constant([3.0, 0.0])}
    predictions = {head: tf.constant([0.6, 0.3]) for head in ("ctr", "cvr", "ctcvr")}
    with pytest.raises(InputError, match=r"conversion\[0\] = 3"):
        task(labels, predictions)
    step = tf.function(lambda: task(labels, predictions))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be 0, 1"):
        step()


def test_bce_averages_over_the_labelled_rows_on_both_paths():
    click = np.array([1, 0, -1, 0, 1, -1], np.float32)
    conversion = np.array([1, 0, -1, 0, 0, -1], np.float32)
    p = np.array([0.8, 0.3, 0.5, 0.2, 0.6, 0.9], np.float32)
    labelled = click >= 0
    expected = -np.mean(np.where(click[labelled] > 0, np.log(p[labelled]),
                                 np.log(1 - p[labelled])))
    packed = np.stack([click, conversion], 1)
    loss = float(PWiseRLoss(pwiser_weight=0.0)(packed, p))
    task = CtrCvrTask(bce_heads=("ctr",))
    task_loss = float(task({"click": click, "conversion": conversion},
                           {"ctr": p, "cvr": p, "ctcvr": p}))
    assert loss == pytest.approx(expected, rel=1e-6)
    assert task_loss == pytest.approx(expected, rel=1e-6)
    # Keras' own masking gives the same mean: the rule is Keras'.
    weighted = float(PWiseRLoss(pwiser_weight=0.0, reduction="sum")(packed, p))
    assert weighted == pytest.approx(expected * labelled.sum(), rel=1e-6)


def test_a_scalar_sample_weight_is_broadcast_as_keras_does():
    loss = PWiseRLoss(margin_click=0.5, margin_nonclick=0.5)
    plain = float(loss(GOOD, P))
    bce = float(PWiseRLoss(pwiser_weight=0.0)(GOOD, P))
    doubled = float(loss(GOOD, P, sample_weight=2.0))
    # BCE doubles; each pair weighs 2 * 2 over an anchor weight of 2: PWiseR doubles.
    assert doubled == pytest.approx(2 * plain, rel=1e-6)
    assert float(PWiseRLoss(pwiser_weight=0.0)(GOOD, P, sample_weight=3.0)) == \
        pytest.approx(3 * bce, rel=1e-6)
    assert float(loss(GOOD, P, sample_weight=np.ones((4, 1)))) == pytest.approx(plain)


@pytest.mark.parametrize("call, message", [
    (lambda: PWiseRLoss()(np.zeros((4, 2)), np.zeros(3)),
     r"PWiseRLoss: y_true and y_pred must have the same rows.*y_true \(4, 2\).*y_pred 3"),
    (lambda: PWiseRLoss()(np.zeros((4, 2)), np.zeros(4), sample_weight=np.ones(3)),
     r"PWiseRLoss: sample_weight must be a scalar or have one value per row \(4\)"),
    (lambda: PackedAUC().update_state(np.zeros((4, 4)), np.zeros(4)),
     r"PackedAUC: y_true must be \[B, 2\]"),
    (lambda: PackedAUC().update_state(np.zeros((4, 2)), np.zeros(5)),
     r"PackedAUC: y_true and y_pred must have the same rows"),
    (lambda: pwiser(P, GOOD[:, 0], GOOD[:, 1], sample_weight=[1, np.nan, 1, 1]),
     "sample_weight must be non-negative and not NaN"),
])
def test_shape_and_weight_errors_name_the_argument(call, message):
    # A Keras metric runs in a tf.function: its error arrives wrapped, message intact.
    with pytest.raises(Exception, match=message):
        call()


def test_a_shape_mismatch_inside_a_graph_names_the_arguments():
    step = tf.function(lambda y, p: PWiseRLoss()(y, p), input_signature=[
        tf.TensorSpec([None, 2]), tf.TensorSpec([None])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="y_true and y_pred"):
        step(tf.zeros([4, 2]), tf.zeros([3]))


@pytest.mark.parametrize("settings", [dict(pwiser_weight=float("nan")),
                                      dict(margin_click=float("inf")),
                                      dict(margin_nonclick=float("nan")),
                                      dict(pwiser_weight=-1.0)])
def test_non_finite_or_negative_settings_are_refused(settings):
    name = next(iter(settings))
    with pytest.raises(InputError, match=f"{name} must be a finite number >= 0"):
        PWiseRLoss(**settings)
    with pytest.raises(InputError, match=f"{name} must be a finite number >= 0"):
        CtrCvrTask(extra_weights=settings)  # the task checks its own weights too
    if name != "pwiser_weight":
        with pytest.raises(InputError, match=f"{name} must be a finite number >= 0"):
            pwiser(P, GOOD[:, 0], GOOD[:, 1], **settings)


def test_build_model_refuses_a_nan_weight():
    from pwiser_tf import models
    from pwiser_tf.pipelines.schema import Field, Schema
    schema = Schema("toy", categorical=(Field("a", 5),), numerical=("n",))
    with pytest.raises(InputError, match="pwiser_weight must be a finite number"):
        models.build_model("mmoe", schema, loss="pwiser", pwiser_weight=float("nan"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(bce="binary_crossentropy"), "bce must be a pwiser_tf.tf_keras_losses.BinaryCrossentropy"),
    (dict(bce=BinaryCrossentropy(reduction="none")), "bce must reduce its rows"),
    (dict(pwiser=PWiseRLoss()), "pwiser must be a PWiseRLoss with bce=False"),
    (dict(pwiser=BinaryCrossentropy()), "pwiser must be a pwiser_tf.tf_keras_losses.PWiseRLoss"),
])
def test_the_task_refuses_loss_objects_it_cannot_compose(kwargs, message):
    with pytest.raises(InputError, match=message):
        CtrCvrTask(**kwargs)


def test_a_bad_reduction_is_named_and_every_reduction_round_trips():
    with pytest.raises(InputError, match="PWiseRLoss: reduction must be one of"):
        PWiseRLoss(reduction="avg")
    for reduction in ("sum_over_batch_size", "mean_with_sample_weight", "sum", "none"):
        for loss in (PWiseRLoss(reduction=reduction), BinaryCrossentropy(reduction=reduction)):
            assert type(loss).from_config(loss.get_config()).get_config() == loss.get_config()
            assert loss.get_config()["reduction"] == reduction
