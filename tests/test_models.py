"""The models: every one trains with each loss on `make_dataset` batches and ranks
held-out rows; structural properties; export and serving; argument errors."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pwiser_tf import PWiseRLoss, metrics, models
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import make_dataset
from tests.models_data import serialize, toy_arrays, toy_schema, write_converted

pytestmark = pytest.mark.slow  # trains every model with each loss

COMMON = dict(embedding_dim=8, tower_units=(16,))
SMALL = {
    "stl": dict(bottom_units=(32, 16)),
    "shared-bottom": dict(bottom_units=(32, 16)),
    "omoe": dict(num_experts=3, expert_units=(32, 16)),
    "mmoe": dict(num_experts=3, expert_units=(32, 16)),
    "ple": dict(num_shared_experts=2, num_specific_experts=1, level_units=(32, 16)),
    "esmm": dict(bottom_units=(32, 16)),
    "aitm": dict(bottom_units=(32, 16), calibrator=True),
    "adaftr": dict(num_experts=3, expert_units=(32, 16)),
    "escm2": dict(bottom_units=(32, 16)),
}
LOSSES = ("bce", "pwiser")
EPOCHS = 3


def build(name, **config):
    return models.build_model(name, toy_schema(), **{**COMMON, **SMALL[name], **config})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("toy"))
    write_converted(directory, {"train": 6000, "test": 3000})
    return directory


@pytest.fixture(scope="module")
def test_rows(data_dir):
    labels = {"click": [], "conversion": []}
    batches = list(make_dataset(data_dir, 1000, split="test"))
    for _, batch_labels in batches:
        for key in labels:
            labels[key].append(batch_labels[key].numpy())
    return [f for f, _ in batches], {k: np.concatenate(v) for k, v in labels.items()}


@pytest.fixture(scope="module", params=[(m, l) for m in models.MODELS for l in LOSSES],
                ids=lambda p: "-".join(p))
def trained(request, data_dir, test_rows):
    name, loss = request.param
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(0)
    # The toy data converts often (many positives per batch), so a small weight.
    model = build(name, loss=loss, pwiser_weight=0.05)
    model.compile(optimizer=models.reference_optimizer(learning_rate=3e-3))
    train = make_dataset(data_dir, 200, split="train", shuffle=True, seed=0)
    history = model.fit(train, epochs=EPOCHS, verbose=0)
    features, labels = test_rows
    outputs = [model(f, training=False) for f in features]
    predicted = {k: np.concatenate([o[k].numpy() for o in outputs]) for k in outputs[0]}
    return name, loss, model, history.history, predicted, labels


def test_beats_a_constant_predictor_on_held_out_rows(trained):
    _, _, _, _, predicted, labels = trained
    # Trained models reach about 0.72-0.85 (CTR), 0.80-0.90 (CTCVR), 0.65-0.87 (CVR).
    assert metrics.auc(labels["click"], predicted["ctr"]) > 0.65
    assert metrics.auc(labels["conversion"], predicted["ctcvr"]) > 0.65
    assert metrics.auc(labels["conversion"], predicted["cvr"], mask=labels["click"]) > 0.58


def test_outputs_are_probabilities_of_shape_b(trained):
    _, _, _, _, predicted, labels = trained
    for key in ("ctr", "cvr", "ctcvr"):
        assert predicted[key].shape == labels["click"].shape
        assert predicted[key].dtype == np.float32
        assert np.all((predicted[key] >= 0) & (predicted[key] <= 1))


def test_reports_metrics_and_each_loss_part(trained):
    name, loss, _, history, _, _ = trained
    expected = {"ctr_auc", "ctcvr_auc", "cvr_auc", "ctr_logloss", "ctcvr_logloss",
                "cvr_logloss", "ctr_loss", "ctcvr_loss", "loss"}
    expected |= {"pwiser_loss"} if loss == "pwiser" else set()
    expected |= {"aitm": {"calibrator_loss"}, "adaftr": {"contrastive_loss"},
                 "escm2": {"counterfactual_loss"}}.get(name, set())
    assert expected <= set(history)
    if loss == "bce":
        assert "pwiser_loss" not in history
    else:
        assert all(np.isfinite(history["pwiser_loss"]))
        assert history["pwiser_loss"][-1] < history["pwiser_loss"][0]


def test_export_serves_serialized_examples_like_the_model(trained, tmp_path):
    name, _, model, _, _, _ = trained
    path = models.export_saved_model(model, str(tmp_path / "saved_model"), toy_schema())
    features, _ = toy_arrays(64, seed=7)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    served = serve(examples=tf.constant([serialize(features, i) for i in range(64)]))
    expected = model({k: tf.constant(v) for k, v in features.items()}, training=False)
    for head, key in (("ctr", "pctr"), ("cvr", "pcvr"), ("ctcvr", "pctcvr")):
        assert served[key].shape == [64]
        np.testing.assert_allclose(served[key].numpy(), expected[head].numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}")


def test_adaftr_contrastive_term_falls():
    # Trained alone so that the term's trend is visible on a fixed batch.
    tf.keras.utils.set_random_seed(1)
    model = build("adaftr", contrastive_weight=1.0)
    model.compile(optimizer=models.reference_optimizer(learning_rate=3e-3))
    features, labels = toy_arrays(512, seed=3)
    batch = ({k: tf.constant(v) for k, v in features.items()},
             {k: tf.constant(v) for k, v in labels.items()})

    def term():
        return float(model.forward(batch[0], training=False)[1]["contrastive"])

    before = term()
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=60, verbose=0)
    assert term() < 0.8 * before


@pytest.mark.parametrize("tau_range", [(0.05, 1.0), (0.2, 0.3)])
def test_adaftr_temperatures_stay_in_range(tau_range):
    model = build("adaftr", tau_min=tau_range[0], tau_max=tau_range[1])
    features, _ = toy_arrays(256, seed=4)
    tau = model.temperatures({k: tf.constant(v) for k, v in features.items()}).numpy()
    assert tau.shape == (256,)
    assert np.all((tau >= tau_range[0]) & (tau <= tau_range[1]))


def test_esmm_ctcvr_is_ctr_times_cvr():
    for name in ("esmm", "escm2"):
        features, _ = toy_arrays(100, seed=5)
        out = build(name)({k: tf.constant(v) for k, v in features.items()})
        np.testing.assert_allclose(out["ctcvr"], out["ctr"] * out["cvr"], rtol=1e-6)


@pytest.mark.parametrize("name", ["omoe", "mmoe", "ple", "adaftr"])
def test_gate_weights_sum_to_one(name):
    features, _ = toy_arrays(100, seed=6)
    gates = build(name).gate_weights({k: tf.constant(v) for k, v in features.items()})
    assert len(gates) == {"omoe": 1, "mmoe": 2, "adaftr": 2, "ple": 5}[name]
    for weights in gates:
        np.testing.assert_allclose(tf.reduce_sum(weights, -1), np.ones(100), rtol=1e-5)
        assert np.all(weights.numpy() >= 0)


def test_same_seed_same_model():
    features, _ = toy_arrays(10, seed=8)
    features = {k: tf.constant(v) for k, v in features.items()}
    outputs = []
    for _ in range(2):
        tf.keras.utils.set_random_seed(42)
        outputs.append(build("mmoe")(features)["ctr"].numpy())
    np.testing.assert_array_equal(*outputs)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_kernels_start_within_the_fan_in_bound(name):
    """Every kernel starts in U(+-1/sqrt(fan_in)) (the reference's initialisation),
    filling most of that range, and the embedding table is Glorot-uniform."""
    tf.keras.utils.set_random_seed(3)
    model = build(name)
    features, _ = toy_arrays(20, seed=3)
    model({k: tf.constant(v) for k, v in features.items()})
    kernels = [v for v in model.trainable_variables if "kernel" in v.name]
    assert kernels
    for kernel in kernels:
        bound = kernel.shape[-2] ** -0.5  # fan_in: the input axis, also of [E, in, out]
        peak = float(tf.reduce_max(tf.abs(kernel)))
        assert 0.5 * bound < peak <= bound, (kernel.name, peak, bound)
    table = next(v for v in model.trainable_variables if "table" in v.name)
    bound = (6.0 / sum(table.shape)) ** 0.5
    assert 0.9 * bound < float(tf.reduce_max(tf.abs(table))) <= bound


def test_out_of_vocabulary_and_padding_ids_embed_safely():
    layer = models.FeatureEmbedding(toy_schema(), embedding_dim=4)
    features = {"categorical": tf.constant([[0, 19, 20, -5]], tf.int64),
                "numerical": tf.zeros([1, 5]),
                "mv_tags": tf.constant([[3, -1, -1]], tf.int64),
                "mv_tags_values": tf.constant([[2.0, 0.0, 0.0]])}
    out = layer(features).numpy().reshape(6, 4)
    table = layer.table.numpy()
    np.testing.assert_allclose(out[1], table[21 + 19])      # field 1, last in-vocab id
    np.testing.assert_allclose(out[2], table[2 * 21 + 20])  # field 2's OOV row
    np.testing.assert_allclose(out[3], table[3 * 21 + 20])  # negative id -> OOV row
    np.testing.assert_allclose(out[5], 2.0 * table[4 * 21 + 3])  # mean over 1 id * value


def test_layers_round_trip_through_get_config():
    layers = [models.FeatureEmbedding(toy_schema(), 4), models.MLP((8, 4), 0.1),
              models.Tower((8,)), models.ExpertBank(2, (8, 4)), models.Gate(3),
              models.TransferAttention(4),
              models.CtrCvrTask(pwiser=PWiseRLoss(pwiser_weight=0.5, bce=False),
                                extra_weights={"calibrator": 0.3})]
    for layer in layers:
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    model = build("ple")
    assert type(model).from_config(model.get_config()).get_config() == model.get_config()


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError, match="unknown model 'mmeo'"):
        models.build_model("mmeo", toy_schema())
    with pytest.raises(InputError, match="no argument.*num_experts"):
        models.build_model("esmm", toy_schema(), num_experts=4)
    with pytest.raises(InputError, match="loss must be one of"):
        models.build_model("mmoe", toy_schema(), loss="hinge")
    with pytest.raises(InputError, match="pwiser_head"):
        models.build_model("mmoe", toy_schema(), loss="pwiser", pwiser_head="click")
    with pytest.raises(InputError, match="expert_units"):
        models.build_model("mmoe", toy_schema(), expert_units=[])


@pytest.mark.parametrize("script", [
    "import tensorflow as tf; tf.keras.layers.Dense; import pwiser_tf.models",
    "import os, tensorflow as tf; tf.keras.layers.Dense; "
    "os.environ['TF_USE_LEGACY_KERAS'] = '1'; import pwiser_tf.models",
], ids=["keras3-env", "env-set-too-late"])
def test_import_with_keras3_active_fails_clearly(script):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="0")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pwiser_tf.models.KerasVersionError:"), proc.stderr[-2000:]
    assert "TF_USE_LEGACY_KERAS=1" in last
