"""Each epoch's randomness comes from the run's seed and the epoch alone: a fit that
starts at epoch k (a resumed run) reads the batches and draws the dropout masks that
a fit from epoch 0 had at epoch k."""
import numpy as np
import pytest
import tensorflow as tf

from models_data import write_converted
from pwiser_tf import training
from pwiser_tf.pipelines.schema import Metadata

SIZES = {"embedding_dim": 4, "tower_units": [8], "num_experts": 2, "expert_units": [8],
         "dropout": 0.5, "loss": "bce"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("epoch_seeds"))
    write_converted(directory, {"train": 700, "validation": 200})
    return directory


def rows_of(dataset):
    """The rows of each batch, told apart by their numerical features."""
    return [features["numerical"].numpy() for features, _ in dataset]


def test_epoch_k_reads_the_same_batches_whatever_epoch_the_fit_starts_at(data):
    inputs = training.Inputs(data, Metadata.load(data), {"batch_size": 128},
                             tf.distribute.get_strategy())
    steps = inputs.steps("train")
    whole = rows_of(inputs.epochs(7, 0, 3))
    assert steps == 6 and len(whole) == 3 * steps  # 700 rows: 5 whole batches and 60 rows
    resumed = rows_of(inputs.epochs(7, 2, 3))
    assert len(resumed) == steps
    for ours, theirs in zip(whole[2 * steps:], resumed):
        np.testing.assert_array_equal(ours, theirs)
    first, second = (np.concatenate(whole[k * steps:(k + 1) * steps]) for k in (0, 1))
    assert not np.array_equal(first, second)  # a new order every epoch
    np.testing.assert_array_equal(np.sort(first, axis=0), np.sort(second, axis=0))
    other_seed = rows_of(inputs.epochs(8, 2, 3))
    assert not all(np.array_equal(a, b) for a, b in zip(other_seed, resumed))


def test_dropout_masks_come_from_the_seed_and_the_epoch(data):
    model, _, validation = training.seeded_start(data, "mmoe", SIZES, {"batch_size": 128}, 3)
    features, _ = next(iter(validation))
    random_state = training.EpochRandomState(3)
    random_state.set_model(model)

    def outputs():  # in training mode only the dropout masks vary (batch norm: batch stats)
        return model(features, training=True)["ctr"].numpy()

    random_state.on_epoch_begin(2)
    at_epoch_2 = outputs()
    assert not np.array_equal(outputs(), at_epoch_2)  # the masks move on within an epoch
    random_state.on_epoch_begin(1)
    assert not np.array_equal(outputs(), at_epoch_2)
    random_state.on_epoch_begin(2)
    np.testing.assert_array_equal(outputs(), at_epoch_2)
