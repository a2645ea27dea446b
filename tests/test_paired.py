"""Each seed starts every arm of a comparison from the same weights and data order."""
import numpy as np
import pytest

from pwiser_tf import training
from tests.models_data import write_converted

TRAIN = {"batch_size": 64, "learning_rate": 1e-3}
SIZES = {"mmoe": dict(embedding_dim=4, tower_units=[8], num_experts=2, expert_units=[8]),
         "adaftr": dict(embedding_dim=4, tower_units=[8], num_experts=2, expert_units=[8])}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("paired"))
    write_converted(directory, {"train": 400, "validation": 128})
    return directory


def start(data_dir, model, seed, **options):
    net, train_ds, _ = training.seeded_start(data_dir, model, {**SIZES[model], **options},
                                             TRAIN, seed)
    weights = {v.name: v.numpy() for v in net.weights}
    batches = [labels["click"].numpy() for _, labels in train_ds.take(3)]
    return weights, np.concatenate(batches)


@pytest.mark.parametrize("model, arms", [
    ("mmoe", [dict(loss="bce"), dict(loss="pwiser", pwiser_weight=2.0, margin_click=0.3)]),
    ("adaftr", [dict(loss="bce"), dict(loss="bce", contrastive_weight=0.0),
                dict(loss="bce", temperature="fixed"), dict(loss="pwiser")]),
])
def test_arms_of_one_seed_share_initial_weights_and_batches(data_dir, model, arms):
    first_weights, first_order = start(data_dir, model, 5, **arms[0])
    for options in arms[1:]:
        weights, order = start(data_dir, model, 5, **options)
        np.testing.assert_array_equal(order, first_order)
        shared = set(weights) & set(first_weights)
        # Only the fixed temperature drops a network (the relatedness MLP); nothing else.
        assert set(first_weights) - shared <= {n for n in first_weights if "relatedness" in n}
        assert len(shared) > 10
        for name in shared:
            np.testing.assert_array_equal(weights[name], first_weights[name], err_msg=name)
    other_weights, other_order = start(data_dir, model, 6, **arms[0])
    assert not np.array_equal(other_order, first_order)
    assert any(not np.array_equal(other_weights[n], first_weights[n]) for n in first_weights
               if "kernel" in n)


def test_a_variant_grid_names_its_arms_and_checks_the_baseline():
    from pwiser_tf import config as config_lib
    from pwiser_tf import experiment
    from pwiser_tf.errors import InputError

    config = config_lib.validate(config_lib.packaged("adaftr_ablation"))
    config_lib.validate(config_lib.packaged("sweep"))
    cells = experiment.grid(config)
    assert len(cells) == 3 * len(config.seeds)
    assert {c["variant"] for c in cells} == {"base", "adaptive", "fixed"}
    fixed = next(c for c in cells if c["variant"] == "fixed")
    assert config.merged(fixed["overrides"]).model_options["adaftr"] == \
        {"expert_units": [64, 32], "num_experts": 4, "temperature": "fixed"}
    with pytest.raises(InputError, match="baseline 'bce' is not an arm"):
        experiment.grid(config.model_copy(update={"baseline": "bce"}))
    plain = experiment.grid(config.model_copy(update={"variants": None, "baseline": None}))
    assert {c["variant"] for c in plain} == {""}
