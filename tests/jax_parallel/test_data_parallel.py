"""PWiseR over the global batch under JAX's `keras.distribution.DataParallel`.

Keras shards each batch along its rows over the devices and traces the loss
over the global batch, so PWiseR pairs every row with every other without an
all-gather. Each check trains one SGD step on a global batch with the batch
split over two virtual CPUs, and the same step on one device (no distribution)
from the same weights, and compares the reported loss and the updated weights.
The batch has sample weights and rows whose labels are missing.
"""
import jax
import keras
import numpy as np
import pytest

import pwiser_tf
from pwiser_tf import kernel, losses

ROWS, FEATURES = 256, 5
LEARNING_RATE = 0.5
RTOL = 1e-5
DEVICES = 2
LOSS_OPTIONS = dict(pwiser_weight=2.0, margin_click=0.2, margin_nonclick=0.3)


def data(seed: int = 0):
    """Features, packed labels [click, conversion] and sample weights. The click
    rate grows along the rows, so the two devices' halves hold the three groups
    in different proportions; one row in ten has missing labels (-1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES)).astype("float32")
    click = (rng.uniform(size=ROWS) < np.linspace(0.2, 0.7, ROWS)).astype("float32")
    conversion = click * (rng.uniform(size=ROWS) < 0.5)
    missing = rng.uniform(size=ROWS) < 0.1
    click[missing], conversion[missing] = -1.0, -1.0
    y = np.stack([click, conversion], axis=1).astype("float32")
    w = rng.uniform(0.5, 2.0, size=ROWS).astype("float32")
    return x, y, w


def initial_weights(seed: int = 1):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.5, size=(FEATURES, 8)).astype("float32"),
            rng.normal(scale=0.1, size=8).astype("float32"),
            rng.normal(scale=0.5, size=(8, 1)).astype("float32"),
            np.zeros(1, "float32")]


def dense_model():
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dense(1, activation="sigmoid")])
    model.set_weights(initial_weights())
    return model


def data_parallel():
    return keras.distribution.DataParallel(devices=jax.devices())


def one_step(distributed: bool, loss, y, how: str = "train_on_batch"):
    """Reported loss and weights after one SGD step on the global batch, with the
    rows split over the devices (`distributed`) or on one device."""
    x, _, w = data()
    keras.distribution.set_distribution(data_parallel() if distributed else None)
    try:
        model = dense_model()
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss=loss)
        if how == "fit":
            history = model.fit(x, y, sample_weight=w, batch_size=ROWS, epochs=1,
                                shuffle=False, verbose=0)
            value = history.history["loss"][0]
        else:
            value = model.train_on_batch(x, y, sample_weight=w)
        return float(value), model.get_weights()
    finally:
        keras.distribution.set_distribution(None)


def gaps(got, expected):
    """Relative differences of the loss and of the weight updates."""
    update = np.concatenate([(g - i).ravel() for g, i in zip(got[1], initial_weights())])
    ref = np.concatenate([(e - i).ravel() for e, i in zip(expected[1], initial_weights())])
    return (abs(got[0] - expected[0]) / abs(expected[0]),
            float(np.linalg.norm(update - ref) / np.linalg.norm(ref)))


def assert_same_step(got, expected, rtol: float = RTOL):
    """Same reported loss; same weight update (compared as the change from the
    initial weights, so that the check is not diluted by the weights' size)."""
    (loss, weights), (ref_loss, ref_weights) = got, expected
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    for initial, new, ref in zip(initial_weights(), weights, ref_weights):
        np.testing.assert_allclose(new - initial, ref - initial, rtol=rtol,
                                   atol=rtol * np.abs(ref - initial).max())


def test_runs_keras_3_on_jax_with_two_devices():
    assert keras.backend.backend() == "jax"
    assert len(jax.devices()) == DEVICES
    assert pwiser_tf.PWiseRLoss is losses.PWiseRLoss


def test_the_loss_sees_the_batch_split_over_both_devices():
    """Inside the compiled step, the loss's inputs are the global batch, laid out
    half on each device (so the other checks compare a really split batch)."""
    seen = {}

    class ShardingProbe(losses.PWiseRLoss):
        def __call__(self, y_true, y_pred, sample_weight=None):
            for name, value in (("y_true", y_true), ("y_pred", y_pred),
                                ("sample_weight", sample_weight)):
                jax.debug.inspect_array_sharding(
                    value, callback=lambda sharding, name=name: seen.update({name: sharding}))
            return super().__call__(y_true, y_pred, sample_weight)

    y = data()[1]
    one_step(True, ShardingProbe(**LOSS_OPTIONS), y)
    shapes = {"y_true": (ROWS, 2), "y_pred": (ROWS, 1), "sample_weight": (ROWS,)}
    assert set(seen) == set(shapes)
    for name, shape in shapes.items():
        assert len(seen[name].device_set) == DEVICES, (name, seen[name])
        assert seen[name].shard_shape(shape)[0] == ROWS // DEVICES, (name, seen[name])


@pytest.mark.parametrize("how, normalization", [("train_on_batch", "anchor"),
                                                ("fit", "pair")])
def test_pwiser_loss_step_equals_one_device(how, normalization):
    _, y, w = data()
    loss = lambda: pwiser_tf.PWiseRLoss(normalization=normalization, **LOSS_OPTIONS)  # noqa: E731
    got = one_step(True, loss(), y, how)
    expected = one_step(False, loss(), y, how)
    print(f"PWiseRLoss {how} {normalization}: gaps (loss, update) {gaps(got, expected)}")
    assert_same_step(got, expected)
    # The one-device step reports the loss of the initial model on the batch.
    x = data()[0]
    initial = float(loss()(y, dense_model()(x), sample_weight=w))
    np.testing.assert_allclose(expected[0], initial, rtol=RTOL)


def test_binary_crossentropy_step_equals_one_device():
    _, y, _ = data()
    click = y[:, :1]  # with the missing labels
    got = one_step(True, losses.BinaryCrossentropy(), click, "fit")
    expected = one_step(False, losses.BinaryCrossentropy(), click, "fit")
    print(f"BinaryCrossentropy fit: gaps (loss, update) {gaps(got, expected)}")
    assert_same_step(got, expected)


def halves_mean(term, *rows):
    """The mean of `term` on each device's half: what pairing each device's own
    rows only would give."""
    parts = [term(*(r[h] for r in rows))
             for h in np.array_split(np.arange(ROWS), DEVICES)]
    return float(np.mean([float(p) for p in parts]))


def test_kernel_pairs_the_global_batch():
    """`kernel.pwiser` jitted on arrays laid out by the distribution (half on each
    device) equals one device on the whole batch, not the mean of the halves."""
    x, y, w = data()
    scores = np.asarray(dense_model()(x))[:, 0]
    rows = (scores, y[:, 0], y[:, 1], w)

    def term(scores, click, conversion, weight):
        return kernel.pwiser(scores, click, conversion, sample_weight=weight,
                             margin_click=0.2, margin_nonclick=0.3)

    distribution = data_parallel()
    split = [keras.distribution.distribute_tensor(r, distribution.get_data_layout(r.shape))
             for r in rows]
    for array in split:
        assert [s.data.shape[0] for s in array.addressable_shards] == [ROWS // DEVICES] * 2
        assert {s.device for s in array.addressable_shards} == set(jax.devices())
    value = float(jax.jit(term)(*split))
    one_device = float(term(*rows))
    per_device = halves_mean(term, *rows)
    # What the check guards against: each device pairing its own rows only
    # (`shard_map`), which gives the mean of the halves.
    local = jax.jit(jax.shard_map(
        lambda *r: jax.lax.pmean(term(*r), distribution.batch_dim_name),
        mesh=distribution.device_mesh.backend_mesh,
        in_specs=(jax.sharding.PartitionSpec(distribution.batch_dim_name),) * len(rows),
        out_specs=jax.sharding.PartitionSpec()))
    print(f"kernel: split {value!r}, one device {one_device!r}, mean of halves "
          f"{per_device!r}, each device's own rows {float(local(*split))!r}")
    np.testing.assert_allclose(value, one_device, rtol=RTOL)
    np.testing.assert_allclose(float(local(*split)), per_device, rtol=RTOL)
    assert abs(per_device - one_device) > 0.05 * one_device


def test_the_step_pairs_the_global_batch():
    """PWiseR alone (`bce=False`), trained under `DataParallel`: the reported
    loss is the term of the whole batch, not the mean of the devices' halves, and
    `pairs="replica"` (a `tf.distribute` option) changes nothing."""
    x, y, w = data()
    loss = lambda **kw: losses.PWiseRLoss(bce=False, **LOSS_OPTIONS, **kw)  # noqa: E731
    got = one_step(True, loss(), y)
    replica = one_step(True, loss(pairs="replica"), y)
    expected = one_step(False, loss(), y)
    assert_same_step(got, expected)
    assert_same_step(replica, expected)
    per_device = halves_mean(lambda *r: loss()(r[0], dense_model()(r[1]), sample_weight=r[2]),
                             y, x, w)
    print(f"PWiseR step: split {got[0]!r}, one device {expected[0]!r}, mean of halves "
          f"{per_device!r}")
    assert abs(per_device - expected[0]) > 0.05 * expected[0]
