"""`pwiser_group=True` under `MirroredStrategy` on 2 virtual CPUs: with `pairs="global"`
the group ids are those of the global batch, so one step equals one device, also
where a group spans both replicas and the replicas hold different groups."""
import numpy as np
import tensorflow as tf

import distributed_cases as cases
from pwiser_tf import models
from pwiser_tf.models.task import dense_group_ids
from tests.models_data import toy_arrays, toy_schema

ROWS = cases.MODEL_ROWS  # 64: 32 rows a replica


def groups(rows: int = ROWS) -> np.ndarray:
    """int64 ids, 12 rows each: the third group spans both replicas' rows, and ids ranked
    within each replica would give it replica 0's third id and replica 1's first."""
    return np.int64(10 ** 12) + np.arange(rows, dtype=np.int64) // 12


def grouped_dataset():
    features, labels = toy_arrays(ROWS, seed=3)
    labels["group"] = groups()
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(ROWS)


def grouped_step(distribution):
    data = grouped_dataset()
    config = {**cases.MODEL_OPTIONS, "pwiser_group": True}
    tf.keras.utils.set_random_seed(0)
    template = models.build_model("mmoe", toy_schema(), **config)
    template(next(iter(data))[0])
    with distribution.scope():
        model = models.build_model("mmoe", toy_schema(), **config)
        model(next(iter(data))[0])
        model.set_weights(template.get_weights())
        model.compile(optimizer=tf.keras.optimizers.SGD(cases.LEARNING_RATE))
    history = model.fit(data, epochs=1, verbose=0)
    return (history.history["loss"][0], model.get_weights()), template.get_weights()


def test_dense_group_ids_are_the_global_batchs_on_every_replica():
    strategy = cases.strategy(2)
    ids = tf.constant(groups())
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda context: ids[context.replica_id_in_sync_group * 32:][:32])
    result = strategy.run(dense_group_ids, args=(per_replica,))
    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(result)])
    assert got.tolist() == dense_group_ids(ids).numpy().tolist()


def test_grouped_mmoe_step_equals_one_device():
    got, initial = grouped_step(cases.strategy(2))
    expected, _ = grouped_step(tf.distribute.get_strategy())
    cases.assert_same_model_step(got, expected, initial)
