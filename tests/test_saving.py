"""Saved models reload exactly: every variable, and so the same predictions.

Each model of the registry, trained a few steps (so that the batch-norm statistics
have left their initial values), is written in each format the project or Keras
writes: weights files (`.weights.h5`, the run's `checkpoints/best.weights.h5`
written by `pwiser_tf.training.save_weights`, legacy `.h5`, a TF checkpoint), a
whole model (`.keras`) and a tf-keras SavedModel directory. The reloaded model must
hold the same variables, one by one, and predict the same in inference mode.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from pwiser_tf import models, training
from tests.models_data import toy_arrays, toy_dataset, toy_schema

# Tiny, but every structure: two-layer MLPs (bottoms, towers, experts), PLE's two
# levels, AITM's calibrator, AdaFTR's projection MLP and relatedness network.
COMMON = dict(embedding_dim=4, tower_units=(8,))
TINY = {
    "stl": dict(bottom_units=(8, 8)),
    "shared-bottom": dict(bottom_units=(8, 8)),
    "omoe": dict(num_experts=2, expert_units=(8, 8)),
    "mmoe": dict(num_experts=2, expert_units=(8, 8)),
    "ple": dict(num_shared_experts=2, num_specific_experts=1, level_units=(8, 8)),
    "esmm": dict(bottom_units=(8, 8)),
    "aitm": dict(bottom_units=(8, 8), calibrator=True),
    "adaftr": dict(num_experts=2, expert_units=(8, 8), projection_units=(8,),
                   relatedness_units=(8,)),
    "escm2": dict(bottom_units=(8, 8)),
}
WEIGHT_FORMATS = ("weights.h5", "best.weights.h5", "h5", "tf-checkpoint")
MODEL_FORMATS = ("keras", "savedmodel")
ATOL = 1e-6


def build(name, **config):
    return models.build_model(name, toy_schema(), **{**COMMON, **TINY[name], **config})


def features(rows=32, seed=7):
    arrays, _ = toy_arrays(rows, seed)
    return {k: tf.constant(v) for k, v in arrays.items()}


def trained_model(name, **config):
    """`name` after a few training steps, and its inference-mode predictions."""
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    model = build(name, **config)
    model.compile(optimizer=models.reference_optimizer(learning_rate=1e-2))
    model.fit(toy_dataset(256, 64, seed=1), epochs=1, verbose=0)
    inputs = features()
    return model, inputs, model(inputs, training=False)


def moved_statistics(model):
    """The batch norms' moving statistics, each checked to have left its start."""
    stats = [v for v in model.variables if "moving_" in v.name]
    for v in stats:
        start = 0.0 if "moving_mean" in v.name else 1.0
        assert np.max(np.abs(v.numpy() - start)) > 1e-3, v.name
    return stats


def save_and_reload(model, fmt, directory, name, config=None):
    """Writes `model` in format `fmt` under `directory`; returns the model read back."""
    directory = str(directory)
    if fmt in MODEL_FORMATS:
        path = os.path.join(directory, "model.keras" if fmt == "keras" else "saved_model")
        model.save(path)
        return tf.keras.models.load_model(path)
    path = {"weights.h5": "model.weights.h5", "h5": "model.h5", "tf-checkpoint": "ckpt",
            "best.weights.h5": os.path.join("run", "checkpoints", "best.weights.h5")}[fmt]
    path = os.path.join(directory, path)
    if fmt == "best.weights.h5":
        training.save_weights(model, path)  # what every training run writes
    else:
        model.save_weights(path)
    fresh = build(name, **(config or {}))
    fresh(features(4, seed=11))  # create the variables
    fresh.load_weights(path)
    return fresh


def short_name(variable, model):
    """A variable's name without the model's scope (present when the model created
    its variables in a call, absent when in `fit`'s `compute_loss`)."""
    prefix = model.name + "/"
    return variable.name[len(prefix):] if variable.name.startswith(prefix) else variable.name


def assert_same_model(original, loaded, inputs, expected):
    """`loaded` holds `original`'s variables (in order, by value and name) and
    predicts `expected` on `inputs` in inference mode."""
    originals, reloaded = original.variables, loaded.variables
    assert len(reloaded) == len(originals)
    differ = [a.name for a, b in zip(originals, reloaded)
              if a.shape != b.shape or not np.array_equal(a.numpy(), b.numpy())]
    assert not differ, f"{len(differ)} of {len(originals)} variables differ: {differ}"
    out = loaded(inputs, training=False)
    assert sorted(out) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(out[key].numpy(), expected[key].numpy(), rtol=0,
                                   atol=ATOL, err_msg=key)
    assert [short_name(v, original) for v in originals] == \
        [short_name(v, loaded) for v in reloaded]


@pytest.fixture(scope="module", params=list(models.MODELS))
def trained(request):
    name = request.param
    model, inputs, expected = trained_model(name)
    assert moved_statistics(model)
    return name, model, inputs, expected


@pytest.mark.slow
@pytest.mark.parametrize("fmt", WEIGHT_FORMATS + MODEL_FORMATS)
def test_every_model_reloads_exactly_from_each_format(trained, fmt, tmp_path):
    name, model, inputs, expected = trained
    loaded = save_and_reload(model, fmt, tmp_path, name)
    assert_same_model(model, loaded, inputs, expected)
    if fmt in MODEL_FORMATS:  # the same class and configuration come back
        assert type(loaded) is type(model)
        assert loaded.get_config() == model.get_config()


@pytest.mark.parametrize("name", list(models.MODELS))
def test_the_weights_file_holds_every_variable(name, tmp_path):
    """The quick check of each model (no training): every variable is given a value
    no initializer gives, and `.weights.h5` brings each one back."""
    tf.keras.utils.set_random_seed(2)
    model = build(name)
    inputs = features()
    model(inputs)
    for v in model.variables:
        v.assign(v + tf.random.uniform(v.shape, 0.1, 0.2))
    expected = model(inputs, training=False)
    loaded = save_and_reload(model, "weights.h5", tmp_path, name)
    assert_same_model(model, loaded, inputs, expected)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["weights.h5", "keras"])
def test_models_without_batch_norm_or_dropout_reload_exactly(fmt, tmp_path):
    # No batch norm: the expert bank has no norms, the MLPs none either.
    config = dict(batch_norm=False, dropout=0.0)
    model, inputs, expected = trained_model("mmoe", **config)
    assert not [v for v in model.variables if "moving_" in v.name]
    loaded = save_and_reload(model, fmt, tmp_path, "mmoe", config)
    assert_same_model(model, loaded, inputs, expected)


def small_layers():
    return {
        "mlp": lambda: models.MLP((8, 4), dropout=0.1),
        "tower": lambda: models.Tower((8, 4)),
        "expert-bank": lambda: models.ExpertBank(2, (8, 4)),
        "expert-bank-no-bn": lambda: models.ExpertBank(2, (8, 4), batch_norm=False,
                                                       dropout=0.0),
        "mlp-no-bn": lambda: models.MLP((8,), dropout=0.0, batch_norm=False),
    }


@pytest.mark.parametrize("fmt", ["weights.h5", "keras", "h5"])
@pytest.mark.parametrize("layer", list(small_layers()))
def test_each_layer_saves_all_its_variables(layer, fmt, tmp_path):
    """Every variable of a layer, batch-norm statistics included, is in the file."""
    def wrapped():
        inputs = tf.keras.Input((5,))
        return tf.keras.Model(inputs, small_layers()[layer]()(inputs))

    tf.keras.utils.set_random_seed(1)
    model = wrapped()
    x = tf.random.normal([16, 5])
    model(x, training=True)  # moves the batch-norm statistics
    for v in model.variables:  # and gives every variable a value no initializer gives
        v.assign(v + tf.random.uniform(v.shape, 0.1, 0.2))
    path = str(tmp_path / {"weights.h5": "m.weights.h5", "keras": "m.keras",
                           "h5": "m.h5"}[fmt])
    if fmt == "keras":
        model.save(path)
        loaded = tf.keras.models.load_model(path)
    else:
        model.save_weights(path)
        loaded = wrapped()
        loaded.load_weights(path)
    assert len(loaded.variables) == len(model.variables)
    differ = [a.name for a, b in zip(model.variables, loaded.variables)
              if not np.array_equal(a.numpy(), b.numpy())]
    assert not differ, f"{len(differ)} of {len(model.variables)} variables differ: {differ}"
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False),
                               rtol=0, atol=ATOL)


def test_variable_names_are_unique_and_by_position():
    """Variables are named by their layer's position (`dense_1`, `batch_norm_0`),
    not by a session-wide counter, and no two share a name (legacy `.h5` files and
    name-matched warm starts need that)."""
    for name in ("mmoe", "ple", "stl"):
        tf.keras.backend.clear_session()
        build("shared-bottom")(features(2))  # layers made before do not shift names
        model = build(name)
        model(features(2))
        names = [v.name for v in model.variables]
        assert len(set(names)) == len(names), name
        if name == "stl":
            assert f"{model.name}/ctr_bottom/dense_1/kernel:0" in names
            assert f"{model.name}/ctcvr_tower/mlp/batch_norm_0/moving_mean:0" in names
        if name == "mmoe":
            assert f"{model.name}/experts/dense_0/kernel:0" in names
            assert f"{model.name}/experts/batch_norm_1/gamma:0" in names


def test_mlp_blocks_group_its_layers():
    mlp = models.MLP((8, 4), dropout=0.1)
    assert [[type(layer).__name__ for layer in block] for block in mlp.blocks] == \
        [["Dense", "BatchNormalization", "ReLU", "Dropout"]] * 2
    assert [layer.name for layer in models.MLP((8,), 0.0, False).blocks[0]] == \
        ["dense_0", "relu_0"]


def test_model_config_keeps_the_name():
    for name in models.MODELS:
        model = build(name)
        clone = type(model).from_config(model.get_config())
        assert clone.name == model.name == name.replace("-", "_")
        assert clone.get_config() == model.get_config()
