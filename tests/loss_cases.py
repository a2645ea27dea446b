"""Checks of `PWiseRLoss` that run unchanged under Keras 3 and under tf-keras.

`tests/test_losses.py` runs them in the tf-keras session and
`tests/keras3/test_losses_keras3.py` in the Keras 3 process.
"""
import numpy as np
import tensorflow as tf

from pwiser_tf import PWiseRLoss, pwiser


def toy_data(rows=2048, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)).astype("float32")
    click = (rng.random(rows) < 1 / (1 + np.exp(-(x[:, 0] + x[:, 1] - 1)))).astype("float32")
    conversion = click * (rng.random(rows) < 1 / (1 + np.exp(-(2 * x[:, 0] - 1))))
    return x, np.stack([click, conversion.astype("float32")], axis=1)


def small_model():
    return tf.keras.Sequential([tf.keras.Input((6,)),
                                tf.keras.layers.Dense(8, activation="relu"),
                                tf.keras.layers.Dense(1, activation="sigmoid")])


def check_value_is_bce_plus_weighted_pwiser():
    _, y = toy_data(64)
    p = np.random.default_rng(1).uniform(0.05, 0.95, 64).astype("float32")
    loss = PWiseRLoss(pwiser_weight=0.7, margin_click=0.2, margin_nonclick=0.1)
    bce = -np.mean(y[:, 0] * np.log(p) + (1 - y[:, 0]) * np.log(1 - p))
    term = float(pwiser(p, y[:, 0], y[:, 1], margin_click=0.2, margin_nonclick=0.1))
    assert term > 0
    np.testing.assert_allclose(float(loss(y, p[:, None])), bce + 0.7 * term, rtol=1e-5)
    only = PWiseRLoss(pwiser_weight=0.7, margin_click=0.2, margin_nonclick=0.1, bce=False)
    np.testing.assert_allclose(float(only(y, p)), 0.7 * term, rtol=1e-5)
    logits = np.log(p / (1 - p))
    from_logits = PWiseRLoss(pwiser_weight=0.7, margin_click=0.2, margin_nonclick=0.1,
                             from_logits=True)
    np.testing.assert_allclose(float(from_logits(y, logits)), bce + 0.7 * term, rtol=1e-4)


def check_reduction_none_gives_rows():
    """`reduction="none"`: `[B]` values, each row carrying the batch-level PWiseR
    term whole, so that their mean is the reduced loss (every row labelled)."""
    _, y = toy_data(64)
    p = np.random.default_rng(2).uniform(0.05, 0.95, 64).astype("float32")
    options = dict(pwiser_weight=0.7, margin_click=0.2, margin_nonclick=0.1)
    term = 0.7 * float(pwiser(p, y[:, 0], y[:, 1], margin_click=0.2, margin_nonclick=0.1))
    only = PWiseRLoss(bce=False, reduction="none", **options)(y, p).numpy()
    assert only.shape == (64,)
    np.testing.assert_allclose(only, term, rtol=1e-6)
    rows = PWiseRLoss(reduction="none", **options)(y, p[:, None]).numpy()
    bce = -(y[:, 0] * np.log(p) + (1 - y[:, 0]) * np.log(1 - p))
    np.testing.assert_allclose(rows, bce + term, rtol=1e-5)
    np.testing.assert_allclose(rows.mean(), float(PWiseRLoss(**options)(y, p)), rtol=1e-5)
    weights = np.linspace(0.0, 2.0, 64).astype("float32")
    weighted = PWiseRLoss(bce=False, reduction="none", **options)(y, p, sample_weight=weights)
    np.testing.assert_allclose(weighted.numpy(), float(
        PWiseRLoss(bce=False, **options)(y, p, sample_weight=weights)), rtol=1e-6)


def check_compile_fit_save_reload(tmp_path):
    x, y = toy_data()
    model = small_model()
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                  loss=PWiseRLoss(pwiser_weight=2.0, margin_click=0.05))
    history = model.fit(x, y, batch_size=256, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert isinstance(loaded.loss, PWiseRLoss)
    assert loaded.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(loaded.predict(x[:100], verbose=0),
                               model.predict(x[:100], verbose=0), rtol=1e-6)
    assert PWiseRLoss.from_config(model.loss.get_config()).get_config() == \
        model.loss.get_config()


def check_two_headed_model_with_packed_target():
    """A loss in `compile` sees one output: give the CTR output a packed target."""
    x, y = toy_data()
    inputs = tf.keras.Input((6,))
    hidden = tf.keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {"ctr": tf.keras.layers.Dense(1, activation="sigmoid", name="ctr")(hidden),
               "ctcvr": tf.keras.layers.Dense(1, activation="sigmoid", name="ctcvr")(hidden)}
    model = tf.keras.Model(inputs, outputs)
    model.compile(optimizer="adam",
                  loss={"ctr": PWiseRLoss(), "ctcvr": "binary_crossentropy"})
    history = model.fit(x, {"ctr": y, "ctcvr": y[:, 1:]}, batch_size=256, epochs=2,
                        verbose=0)
    assert np.isfinite(history.history["loss"]).all()
