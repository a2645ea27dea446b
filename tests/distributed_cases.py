"""PWiseR under `tf.distribute` against one device: checks shared by the tf-keras
tests and the Keras 3 ones (`tests/keras3/`).

Each check trains one SGD step on a global batch under `MirroredStrategy` over
N virtual CPUs, and the same step on one device, from the same weights, and
compares the reported loss and the updated weights. `pairs="global"` must equal
one device; `pairs="replica"` must equal the mean of the replicas' own losses.
The process must have split its CPU into at least 4 logical devices
(`split_cpu`) before TensorFlow initialised.
"""
import functools

import numpy as np
import tensorflow as tf

from pwiser_tf import PWiseRLoss

ROWS, FEATURES = 48, 5
LEARNING_RATE = 0.5
RTOL = 1e-5


def split_cpu(count: int = 4) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


@functools.lru_cache(maxsize=None)
def strategy(replicas: int) -> tf.distribute.Strategy:
    """One `MirroredStrategy` per replica count for the whole process. Strategies
    over different device sets would share collective group keys, so each count
    gets its own key range (`_collective_key_base`, which TensorFlow sets in its
    own tests for the same reason)."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
    assert len(devices) == replicas, f"need {replicas} logical CPUs, have {len(devices)}"
    tf.distribute.MirroredStrategy._collective_key_base = 1000 * replicas
    return tf.distribute.MirroredStrategy(devices)


def data(rows: int = ROWS, seed: int = 0, weighted: bool = False):
    """Features, packed labels [click, conversion] and sample weights. Every
    replica's slice holds all three groups, but in different proportions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    click = (rng.uniform(size=rows) < np.linspace(0.2, 0.7, rows)).astype("float32")
    conversion = click * (rng.uniform(size=rows) < 0.5)
    click[:4], conversion[:4] = [1, 1, 0, 1], [1, 0, 0, 0]
    y = np.stack([click, conversion], axis=1).astype("float32")
    w = rng.uniform(0.5, 2.0, size=rows).astype("float32") if weighted else None
    return x, y, w


def initial_weights(seed: int = 1):
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.5, size=(FEATURES, 8)).astype("float32"),
            rng.normal(scale=0.1, size=8).astype("float32"),
            rng.normal(scale=0.5, size=(8, 1)).astype("float32"),
            np.zeros(1, "float32")]


def dense_model():
    model = tf.keras.Sequential([
        tf.keras.Input((FEATURES,)),
        tf.keras.layers.Dense(8, activation="tanh"),
        tf.keras.layers.Dense(1, activation="sigmoid")])
    model.set_weights(initial_weights())
    return model


def dataset(x, y, w, batch):
    parts = (x, y) if w is None else (x, y, w)
    return tf.data.Dataset.from_tensor_slices(parts).batch(batch)


def compile_step(distribution, loss_fn, x, y, w=None):
    """Reported loss and weights after one SGD step of `compile(loss=...)`."""
    with distribution.scope():
        model = dense_model()
        model.compile(optimizer=tf.keras.optimizers.SGD(LEARNING_RATE), loss=loss_fn())
    history = model.fit(dataset(x, y, w, len(x)), epochs=1, verbose=0)
    return history.history["loss"][0], model.get_weights()


def reference_step(loss_fn, x, y, w=None, replicas: int = 1):
    """One device: the loss of the global batch, or with `replicas` > 1 the mean of
    the losses of its `replicas` consecutive slices; one SGD step on it."""
    model, loss = dense_model(), loss_fn()
    with tf.GradientTape() as tape:
        values = []
        for rows in np.array_split(np.arange(len(x)), replicas):
            values.append(loss(y[rows], model(x[rows]),
                               sample_weight=None if w is None else w[rows]))
        value = tf.add_n(values) / replicas
    grads = tape.gradient(value, model.trainable_variables)
    return float(value), [v.numpy() - LEARNING_RATE * g.numpy()
                          for v, g in zip(model.trainable_variables, grads)]


def assert_same_step(got, expected, rtol: float = RTOL):
    """Same reported loss; same weight update (compared as the change from the
    initial weights, so that the check is not diluted by the weights' size)."""
    (loss, weights), (ref_loss, ref_weights) = got, expected
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    for initial, new, ref in zip(initial_weights(), weights, ref_weights):
        np.testing.assert_allclose(new - initial, ref - initial, rtol=rtol,
                                   atol=rtol * np.abs(ref - initial).max())


def update_gap(got, expected) -> float:
    """Relative difference of the weight updates (for showing a failure)."""
    delta = np.concatenate([(g - i).ravel() for g, i in zip(got[1], initial_weights())])
    ref = np.concatenate([(e - i).ravel() for e, i in zip(expected[1], initial_weights())])
    return float(np.linalg.norm(delta - ref) / np.linalg.norm(ref))


def pwiser_loss(**kwargs):
    options = dict(pwiser_weight=2.0, margin_click=0.2, margin_nonclick=0.3)
    options.update(kwargs)
    return lambda: PWiseRLoss(**options)


def check_compile_matches_one_device(replicas: int, weighted: bool = False, **kwargs):
    x, y, w = data(weighted=weighted)
    got = compile_step(strategy(replicas), pwiser_loss(**kwargs), x, y, w)
    assert_same_step(got, reference_step(pwiser_loss(**kwargs), x, y, w))


def check_compile_replica_pairs(replicas: int, **kwargs):
    x, y, w = data()
    loss_fn = pwiser_loss(pairs="replica", **kwargs)
    got = compile_step(strategy(replicas), loss_fn, x, y, w)
    per_replica = reference_step(loss_fn, x, y, w, replicas=replicas)
    assert_same_step(got, per_replica)
    # ... which is not one device on the global batch.
    assert update_gap(got, reference_step(loss_fn, x, y, w)) > 1e-3


__all__ = ["split_cpu", "strategy", "data", "dense_model", "compile_step",
           "reference_step", "assert_same_step", "check_compile_matches_one_device",
           "check_compile_replica_pairs"]


def tfrs_step(distribution, loss_fn, x, y, w=None, metrics=()):
    """Reported loss and weights after one SGD step of a `tfrs.Model` whose
    `tfrs.tasks.Ranking` task owns the loss (tf-keras only)."""
    import tensorflow_recommenders as tfrs

    class Ranker(tfrs.Model):
        def __init__(self):
            super().__init__()
            self.net = dense_model()
            self.task = tfrs.tasks.Ranking(loss=loss_fn(), metrics=[m() for m in metrics])

        def compute_loss(self, inputs, training=False):
            features, labels, *weights = inputs
            return self.task(labels=labels, predictions=self.net(features, training=training),
                             sample_weight=weights[0] if weights else None)

    with distribution.scope():
        model = Ranker()
        model.compile(optimizer=tf.keras.optimizers.SGD(LEARNING_RATE))
    history = model.fit(dataset(x, y, w, len(x)), epochs=1, verbose=0)
    return history.history["loss"][0], model.net.get_weights(), history.history


def check_tfrs_ranking_matches_one_device(replicas: int, weighted: bool = False, **kwargs):
    x, y, w = data(weighted=weighted)
    loss, weights, _ = tfrs_step(strategy(replicas), pwiser_loss(**kwargs), x, y, w)
    assert_same_step((loss, weights), reference_step(pwiser_loss(**kwargs), x, y, w))


MODEL_ROWS = 64
MODEL_OPTIONS = dict(embedding_dim=4, tower_units=(8,), num_experts=2, expert_units=(8,),
                     dropout=0.0, batch_norm=False,  # batch norm's statistics are per replica
                     loss="pwiser", pwiser_weight=2.0, margin_click=0.2, margin_nonclick=0.3)


def model_step(distribution, name: str, **options):
    """Reported loss and weights after one SGD step of a model of `pwiser_tf.models`
    on the toy data's global batch, from the weights of a one-device build."""
    from pwiser_tf import models
    from tests.models_data import toy_dataset, toy_schema

    data = toy_dataset(MODEL_ROWS, MODEL_ROWS, seed=3)
    config = {**MODEL_OPTIONS, **options}
    tf.keras.utils.set_random_seed(0)
    template = models.build_model(name, toy_schema(), **config)
    template(next(iter(data))[0])
    with distribution.scope():
        model = models.build_model(name, toy_schema(), **config)
        model(next(iter(data))[0])
        model.set_weights(template.get_weights())
        model.compile(optimizer=tf.keras.optimizers.SGD(LEARNING_RATE))
    history = model.fit(data, epochs=1, verbose=0)
    return (history.history["loss"][0], model.get_weights()), template.get_weights()


def assert_same_model_step(got, expected, initial, rtol: float = RTOL):
    np.testing.assert_allclose(got[0], expected[0], rtol=rtol)
    for start, new, ref in zip(initial, got[1], expected[1]):
        np.testing.assert_allclose(new - start, ref - start, rtol=rtol,
                                   atol=rtol * max(np.abs(ref - start).max(), 1e-6))


def check_model_matches_one_device(name: str, replicas: int, **options):
    got, initial = model_step(strategy(replicas), name, **options)
    expected, _ = model_step(tf.distribute.get_strategy(), name, **options)
    assert_same_model_step(got, expected, initial)
