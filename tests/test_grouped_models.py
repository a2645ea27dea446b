"""PWiseR within groups in the models: `pwiser_group=True` (`pwiser.group`) pairs only
the rows of one `labels["group"]`, the data's int64 group column; data without one is
refused by the models and by `pwiser-tf train`. The equality with one device under
`tf.distribute` is checked in `tests/distributed/test_grouped_model.py`."""
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import converted_synthetic
from pwiser_tf import cli, kernel
from pwiser_tf import config as config_lib
from pwiser_tf import models
from pwiser_tf.errors import InputError
from pwiser_tf.models.task import CtrCvrTask, dense_group_ids
from pwiser_tf.pipelines import make_dataset
from pwiser_tf.pipelines.schema import Metadata
from pwiser_tf.tf_keras_losses import PWiseRLoss
from tests.models_data import toy_dataset, toy_schema, write_converted

MARGINS = dict(margin_click=0.2, margin_nonclick=0.3)
SMALL = dict(embedding_dim=4, tower_units=(8,), bottom_units=(8,), dropout=0.0)


def batch(rows: int = 40, seed: int = 0):
    """Labels with int64 group ids far beyond float32's integers (ids that float32
    would merge), and the three heads' probabilities."""
    rng = np.random.default_rng(seed)
    click = (rng.uniform(size=rows) < 0.6).astype("float32")
    conversion = click * (rng.uniform(size=rows) < 0.5).astype("float32")
    click[:3], conversion[:3] = [1, 1, 0], [1, 0, 0]
    base = np.int64(2 ** 40)
    group = base + rng.integers(0, 4, size=rows).astype(np.int64)  # 2^40 + k: 1 apart
    group[-3:] = [-(2 ** 62), 2 ** 62, -1]
    labels = {"click": tf.constant(click), "conversion": tf.constant(conversion),
              "group": tf.constant(group)}
    ctr = rng.uniform(0.05, 0.95, size=rows).astype("float32")
    cvr = rng.uniform(0.05, 0.95, size=rows).astype("float32")
    predictions = {"ctr": tf.constant(ctr), "cvr": tf.constant(cvr),
                   "ctcvr": tf.constant(ctr * cvr)}
    return labels, predictions


def pwiser_only(grouped: bool, **options) -> CtrCvrTask:
    """A task whose loss is the PWiseR term alone (no BCE head, lambda 1)."""
    loss = PWiseRLoss(pwiser_weight=1.0, bce=False, grouped=grouped, **MARGINS, **options)
    return CtrCvrTask(pwiser=loss, bce_heads=())


def test_dense_group_ids_are_one_per_distinct_id():
    ids = tf.constant([2 ** 62, -5, 7, 2 ** 62, 7, -(2 ** 63), 2 ** 63 - 1], tf.int64)
    dense = dense_group_ids(ids).numpy()
    assert dense.tolist() == [3, 1, 2, 3, 2, 0, 4]
    assert dense_group_ids(ids[:, None]).numpy().tolist() == dense.tolist()  # [B, 1]
    traced = tf.function(dense_group_ids, jit_compile=True)  # XLA: no tf.unique
    assert traced(ids).numpy().tolist() == dense.tolist()


def test_the_tasks_grouped_term_is_the_kernels():
    labels, predictions = batch()
    task = pwiser_only(grouped=True)
    got = float(task(labels, predictions))
    args = (predictions["ctr"], labels["click"], labels["conversion"])
    expected = float(kernel.pwiser(*args, group=labels["group"], **MARGINS))
    dense = float(kernel.pwiser_dense(*args, group=labels["group"], **MARGINS))
    assert got == pytest.approx(expected, rel=1e-6) and got == pytest.approx(dense, rel=1e-5)
    assert float(task.parts["pwiser"].result()) == pytest.approx(expected, rel=1e-6)
    # Not the ungrouped term: the groups matter on this batch.
    ungrouped = float(kernel.pwiser(*args, **MARGINS))
    assert abs(got - ungrouped) > 1e-3 * ungrouped
    # The head and the scores are the loss's: logits of pCTCVR.
    task = CtrCvrTask(pwiser=PWiseRLoss(pwiser_weight=1.0, bce=False, grouped=True,
                                        pwiser_scores="logit", **MARGINS),
                      bce_heads=(), pwiser_head="ctcvr")
    scores = tf.math.log(predictions["ctcvr"] / (1 - predictions["ctcvr"]))
    expected = float(kernel.pwiser(scores, labels["click"], labels["conversion"],
                                   group=labels["group"], **MARGINS))
    assert float(task(labels, predictions)) == pytest.approx(expected, rel=1e-5)


def test_one_group_for_every_row_is_the_ungrouped_term():
    labels, predictions = batch(seed=1)
    one = dict(labels, group=tf.fill([40], tf.constant(123456789012345, tf.int64)))
    for normalization in ("anchor", "pair"):
        grouped = pwiser_only(True, normalization=normalization)(one, predictions)
        plain = pwiser_only(False, normalization=normalization)(labels, predictions)
        assert float(grouped) == pytest.approx(float(plain), rel=1e-6)


def test_the_group_is_read_in_a_graph_of_unknown_batch():
    labels, predictions = batch(seed=2)
    task = pwiser_only(grouped=True)
    spec = ({k: tf.TensorSpec([None], v.dtype) for k, v in labels.items()},
            {k: tf.TensorSpec([None], tf.float32) for k in predictions})
    traced = tf.function(lambda l, p: task(l, p), input_signature=spec)
    expected = kernel.pwiser(predictions["ctr"], labels["click"], labels["conversion"],
                             group=labels["group"], **MARGINS)
    assert float(traced(labels, predictions)) == pytest.approx(float(expected), rel=1e-6)


def test_labels_without_a_group_are_refused_in_one_clear_error():
    labels, predictions = batch()
    del labels["group"]
    with pytest.raises(InputError) as err:
        pwiser_only(grouped=True)(labels, predictions)
    message = str(err.value)
    assert "pwiser_group=True (pwiser.group)" in message and "no group column" in message
    assert "convert it again" in message and "\n" not in message
    pwiser_only(grouped=False)(labels, predictions)  # ungrouped needs none
    # A model: its first loss says the same.
    model = models.build_model("shared-bottom", toy_schema(), loss="pwiser",
                               pwiser_group=True, **SMALL)
    with pytest.raises(InputError, match=r"pwiser_group=True \(pwiser.group\)"):
        model.compute_loss(next(iter(toy_dataset(16, 16))))


def test_pwiser_group_is_a_model_argument_and_round_trips():
    for cls in models.MODELS.values():
        assert "pwiser_group" in models.model_arguments(cls)
    model = models.build_model("mmoe", toy_schema(), loss="pwiser", pwiser_group=True,
                               embedding_dim=4)
    assert model.task.pwiser.grouped and model.get_config()["pwiser_group"] is True
    again = type(model).from_config(model.get_config())
    assert again.task.pwiser.grouped
    assert not models.build_model("mmoe", toy_schema(), loss="pwiser").task.pwiser.grouped


def test_pwiser_group_setting_reaches_the_models():
    from pwiser_tf.training import model_kwargs

    config = config_lib.validate(config_lib.resolve(config_lib.packaged("base"),
                                                    overrides=["pwiser.group=true"]))
    assert config.pwiser.group is True
    kwargs = model_kwargs(config, "mmoe", "pwiser")
    assert kwargs["pwiser_group"] is True and "group" not in kwargs
    default = model_kwargs(config_lib.validate(config_lib.packaged("base")), "mmoe", "pwiser")
    assert default["pwiser_group"] is False
    assert "pwiser_group" not in model_kwargs(config, "mmoe", "bce")  # no PWiseR term
    raw = config_lib.resolve(config_lib.packaged("base"), overrides=["model.pwiser_group=true"])
    with pytest.raises(InputError, match=r"pwiser_group is not a model argument here: "
                                         r"PWiseR's settings go under pwiser: \(pwiser.group\)"):
        config_lib.validate(raw)


@pytest.fixture(scope="module")
def grouped_data(tmp_path_factory):
    return converted_synthetic(tmp_path_factory.mktemp("grouped"), 1200)


@pytest.mark.slow  # trains a model
def test_a_model_trains_with_pwiser_group_on_converted_data(grouped_data):
    assert Metadata.load(grouped_data).schema.group_source == "search_id"
    data = make_dataset(grouped_data, 128, split="train")
    features, labels = next(iter(data))
    assert labels["group"].dtype == tf.int64
    tf.keras.utils.set_random_seed(0)
    model = models.build_model("shared-bottom", Metadata.load(grouped_data).schema,
                               loss="pwiser", pwiser_group=True, pwiser_weight=1.0, **SMALL)
    model(features)
    # The model's PWiseR term on a real batch is the kernel's on the raw ids.
    predictions = model(features)
    model.compute_loss((features, labels))
    expected = kernel.pwiser(predictions["ctr"], labels["click"], labels["conversion"],
                             group=labels["group"])
    assert float(model.task.parts["pwiser"].result()) == pytest.approx(float(expected),
                                                                       rel=1e-5)
    model.compile(optimizer=models.reference_optimizer())
    history = model.fit(data.take(3), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["pwiser_loss"][0])


@pytest.mark.slow  # the command line, in process, and a converted directory
def test_train_refuses_pwiser_group_on_data_without_a_group_column(tmp_path, capsys):
    data = str(tmp_path / "old")
    os.makedirs(data)
    write_converted(data, {"train": 200, "validation": 100, "test": 100})
    out = tmp_path / "run"
    argv = ["train", "--data", data, "--model", "shared-bottom", "--loss", "pwiser",
            "--output", str(out), "--set", "pwiser.group=true", "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pwiser.group=true" in err and "no group column" in err
    assert data in err and not out.exists()
