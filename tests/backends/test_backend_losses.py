"""The Keras 3 losses of `pwiser_tf` on this process's backend: values against
NumPy, and `PWiseRLoss` training a model where the pairwise term matters."""
import keras
import numpy as np
import pytest

import definition
import framework
import pwiser_tf
from pwiser_tf import losses


def packed_batch(size=96, seed=0):
    rng = np.random.default_rng(seed)
    click = (rng.random(size) < 0.5).astype("float32")
    conversion = click * (rng.random(size) < 0.4).astype("float32")
    click[:4], conversion[4:8] = -1.0, -1.0  # missing labels
    p = rng.uniform(0.02, 0.98, size).astype("float32")
    weight = rng.uniform(0.0, 2.0, size).astype("float32")
    return np.stack([click, conversion], 1), p, weight


def test_top_level_loss_is_the_keras_3_loss():
    assert pwiser_tf.PWiseRLoss is losses.PWiseRLoss
    assert issubclass(pwiser_tf.PWiseRLoss, keras.losses.Loss)
    assert pwiser_tf.PackedAUC is losses.PackedAUC


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
def test_pwiser_loss_is_bce_plus_weighted_definition(from_logits, weighted):
    y, p, weight = packed_batch()
    weight = weight if weighted else None
    options = dict(margin_click=0.2, margin_nonclick=0.1, normalization="pair")
    loss = pwiser_tf.PWiseRLoss(pwiser_weight=0.7, from_logits=from_logits, **options)
    y_pred = np.log(p / (1 - p)) if from_logits else p
    value = loss(framework.tensor(y), framework.tensor(y_pred[:, None]),
                 sample_weight=None if weight is None else framework.tensor(weight))
    # The term compares probabilities (pwiser_scores="probability") either way.
    term, _ = definition.pwiser(p, y[:, 0], y[:, 1], float(np.float32(0.2)),
                                float(np.float32(0.1)), True, "pair", weight)
    expected = definition.bce(y[:, 0], y_pred, weight, from_logits) + 0.7 * term
    assert term > 0
    np.testing.assert_allclose(framework.numpy(value), expected, rtol=2e-5)


def test_pwiser_loss_gradient_is_bce_plus_weighted_definition():
    y, p, weight = packed_batch(seed=1)
    loss = pwiser_tf.PWiseRLoss(pwiser_weight=1.5, margin_click=0.1, margin_nonclick=0.2)
    labels, w = framework.tensor(y), framework.tensor(weight)
    _, grad = framework.value_and_grad(lambda s: loss(labels, s, sample_weight=w), p)
    _, term_grad = definition.pwiser(p, y[:, 0], y[:, 1], float(np.float32(0.1)),
                                     float(np.float32(0.2)), True, "anchor", weight)
    c = y[:, 0].astype(np.float64)
    q = p.astype(np.float64)
    bce_grad = np.where(c >= 0, weight * (q - c) / (q * (1 - q)), 0.0) / np.sum(c >= 0)
    np.testing.assert_allclose(grad, bce_grad + 1.5 * term_grad, rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "none"])
@pytest.mark.parametrize("from_logits", [False, True], ids=["probabilities", "logits"])
def test_binary_crossentropy_against_numpy(from_logits, reduction):
    y, p, weight = packed_batch(seed=2)
    labels = y[:, 1]  # with missing rows
    y_pred = np.log(p / (1 - p)) if from_logits else p
    loss = losses.BinaryCrossentropy(from_logits=from_logits, reduction=reduction)
    value = framework.numpy(loss(framework.tensor(labels), framework.tensor(y_pred),
                                 sample_weight=framework.tensor(weight)))
    rows = np.array([definition.bce(labels[i:i + 1], y_pred[i:i + 1], weight[i:i + 1],
                                    from_logits) for i in range(len(labels))])
    if reduction == "none":
        np.testing.assert_allclose(value, rows, rtol=1e-5, atol=1e-7)
    elif reduction == "sum":
        np.testing.assert_allclose(value, rows.sum(), rtol=1e-5)
    else:
        np.testing.assert_allclose(value, definition.bce(labels, y_pred, weight, from_logits),
                                   rtol=1e-5)


@pytest.mark.parametrize("label", ["click", "conversion"])
def test_packed_auc_against_numpy(label):
    y, _, weight = packed_batch(seed=3)
    # Scores off Keras' thresholds (k / 200), each distinct one in its own bucket,
    # with ties: the thresholded AUC is then the exact pairwise one.
    scores = (np.random.default_rng(3).integers(0, 40, len(y)) + 0.5) / 40
    column = y[:, ["click", "conversion"].index(label)]
    auc = losses.PackedAUC(label=label, num_thresholds=201)
    auc.update_state(framework.tensor(y), framework.tensor(scores[:, None].astype("float32")),
                     sample_weight=framework.tensor(weight))
    labelled = column >= 0
    expected = definition.auc(column[labelled], scores[labelled], weight[labelled])
    assert auc.label == label and auc.name == f"{label}_auc"
    np.testing.assert_allclose(framework.numpy(auc.result()), expected, rtol=1e-5)


def toy_problem(rows=512, seed=0):
    """x0 decides the click; x1 (independent of x0) the conversion of a click. BCE
    on the click sees nothing in x1; only the pairwise term ranks converted clicks
    (S3) above the other clicks (S2), through x1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2)).astype("float32")
    click = (rng.random(rows) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype("float32")
    conversion = click * (x[:, 1] > 0).astype("float32")
    return x, np.stack([click, conversion], 1)


def fit(pwiser_weight, x, y, epochs=8):
    # Deterministic without a seed (zero kernel, no shuffling): Keras' seeding
    # would import TensorFlow where it is installed.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
        1, activation="sigmoid", kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=pwiser_tf.PWiseRLoss(pwiser_weight=pwiser_weight, margin_click=0.1,
                                            margin_nonclick=0.1))
    history = model.fit(x, y, batch_size=128, epochs=epochs, shuffle=False, verbose=0)
    return model, history.history["loss"]


def test_pwiser_loss_fits_a_model_where_the_pairwise_term_matters():
    x, y = toy_problem()
    model, history = fit(2.0, x, y)
    assert np.all(np.isfinite(history)) and history[-1] < 0.8 * history[0]
    baseline, _ = fit(0.0, x, y)
    term = pwiser_tf.PWiseRLoss(bce=False, margin_click=0.1, margin_nonclick=0.1)
    clicks = y[:, 0] == 1

    def pairwise(m):
        p = framework.numpy(m.predict(x, verbose=0))[:, 0]
        value = float(framework.numpy(term(framework.tensor(y), framework.tensor(p))))
        return value, definition.auc(y[clicks, 1], p[clicks])  # S3 above S2

    (trained_term, trained_auc), (base_term, base_auc) = pairwise(model), pairwise(baseline)
    assert trained_term < 0.5 * base_term
    assert trained_auc > 0.9 and base_auc < 0.65, (trained_auc, base_auc)
