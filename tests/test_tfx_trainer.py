"""The TFX Trainer module, driven the way TFX's generic executor drives it.

TFX does not install here (its ml-metadata wheels need a newer glibc); the
executor hands `run_fn` an object with the attributes of `tfx.components.FnArgs`,
which is all this module reads, so the tests build that object themselves, on
GZIP records in `Split-<name>/` folders as ExampleGen writes them
(`tests/example_gen.py` writes CsvExampleGen's per-column Examples and
SchemaGen's `schema.pbtxt`).

`run_fn` is an adapter over the training core of `pwiser-tf train`: its
settings are checked as the CLI's configuration (a bad value is refused before
anything is read or written), and it trains, stops early, logs, exports and
scores as `pwiser-tf train` does. The tests that train are marked `slow`.
"""
import glob
import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import tensorflow as tf

from example_gen import csv_example_gen, read_csv, schema_gen
from pwiser_tf import __version__, evaluation, metrics, options, tfx_schema, tfx_trainer
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import synthesize
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.readers.aliexpress import CATEGORICAL
from pwiser_tf.tfx_settings import run_settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_MODEL = {"embedding_dim": 4, "bottom_units": [16], "tower_units": [8]}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfx")
    return root, synthesize("aliexpress", 900, str(root / "synth"), seed=2, progress=False)


@pytest.fixture(scope="module")
def example_gen(synth):
    """CsvExampleGen's output of the processed AliExpress CSV (82 columns), SchemaGen's schema."""
    root, written = synth
    header, rows, kinds = read_csv(written["files"]["processed/train.csv"])
    third = len(rows) // 3
    out = root / "example_gen"
    patterns = csv_example_gen({"train": rows[:third], "extra": rows[third:2 * third],
                                "eval": rows[2 * third:]}, header, kinds, str(out))
    schema_path = schema_gen(header, rows, kinds, CATEGORICAL,
                             str(root / "schema_gen" / "schema.pbtxt"))
    return patterns, schema_path, kinds, len(rows) - 2 * third


def fn_args(tmp_path, train_files, eval_files, **kwargs):
    args = dict(working_dir=None, train_files=train_files, eval_files=eval_files,
                train_steps=None, eval_steps=None, schema_path=None,
                transform_output=None, transform_graph_path=None, data_accessor=None,
                serving_model_dir=str(tmp_path / "serving"),
                model_run_dir=str(tmp_path / "model_run"), base_model=None,
                hyperparameters=None,
                custom_config={"model": "shared-bottom", "loss": "pwiser",
                               "train": {"batch_size": 256, "epochs": 2},
                               "model_config": dict(SMALL_MODEL)})
    args.update(kwargs)
    return types.SimpleNamespace(**args)


def example_gen_args(example_gen, tmp_path, train=("train",), **kwargs):
    """FnArgs of a run on CsvExampleGen's records, with its schema.pbtxt."""
    patterns, schema_path, _, _ = example_gen
    args = fn_args(tmp_path, [patterns[split] for split in train], [patterns["eval"]],
                   schema_path=schema_path, **kwargs)
    args.custom_config["dataset"] = "aliexpress"
    return args


EXECUTOR_SCRIPT = textwrap.dedent("""
    import json, sys, types
    import tensorflow as tf          # the executor has TensorFlow loaded, not Keras
    args_path, out_path, keras_3_loaded, score = sys.argv[1:]
    if keras_3_loaded == "1":
        tf.keras.layers.Dense(1)     # the executor's process already runs Keras 3
    from pwiser_tf import tfx_trainer

    args = types.SimpleNamespace(**json.load(open(args_path)))
    out = {"metrics": tfx_trainer.run_fn(args), "keras": tf.keras.Model.__module__}
    if score == "1":                 # both serving signatures on the eval records
        loaded = tf.saved_model.load(args.serving_model_dir)
        records = tf.data.TFRecordDataset(tf.io.gfile.glob(args.eval_files[0]),
                                          compression_type="GZIP").batch(10_000)
        batch = next(iter(records))
        for name in ("serving_default", "serving_columns"):
            scores = loaded.signatures[name](examples=batch)
            out[name] = {k: v.numpy().tolist() for k, v in scores.items()}
    json.dump(out, open(out_path, "w"))
""")


def run_in_executor_process(args, tmp_path, keras_3_loaded=False, score=False):
    """Runs `tfx_trainer.run_fn(args)` in a fresh Python without
    `TF_USE_LEGACY_KERAS`, as a TFX executor does, and returns its metrics, the
    Keras its process ran and (with `score`) the serving signatures' scores."""
    args_path, out_path = tmp_path / "args.json", tmp_path / "out.json"
    args_path.write_text(json.dumps(vars(args)))
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = REPO
    subprocess.run([sys.executable, "-c", EXECUTOR_SCRIPT, str(args_path), str(out_path),
                    str(int(keras_3_loaded)), str(int(score))],
                   env=env, check=True, timeout=600)
    return json.loads(out_path.read_text())


@pytest.mark.slow
def test_run_fn_trains_on_csv_example_gen_records_in_a_clean_environment(example_gen,
                                                                          tmp_path):
    """Two train patterns, train_steps=None, schema.pbtxt, no TF_USE_LEGACY_KERAS."""
    args = example_gen_args(example_gen, tmp_path, train=("train", "extra"),
                            hyperparameters={"space": [], "values": {"learning_rate": 0.003}})
    out = run_in_executor_process(args, tmp_path, score=True)
    assert out["keras"].startswith("tf_keras")
    assert {"ctr_auc", "ctcvr_auc", "cvr_auc"} <= set(out["metrics"])
    eval_rows = example_gen[3]
    for name in ("pctr", "pcvr", "pctcvr"):
        scores = np.array(out["serving_default"][name])
        assert scores.shape == (eval_rows,) and ((scores >= 0) & (scores <= 1)).all()
        np.testing.assert_allclose(out["serving_columns"][name], scores, rtol=1e-6)
    # TensorBoard logs and the evaluation in model_run_dir
    assert glob.glob(str(tmp_path / "model_run" / "train" / "events.out.tfevents.*"))
    with open(tmp_path / "model_run" / "metrics.json") as f:
        assert json.load(f)["ctr_auc"] == pytest.approx(out["metrics"]["ctr_auc"])


@pytest.mark.slow
def test_run_fn_trains_in_a_tf_keras_child_when_keras_3_is_loaded(example_gen, tmp_path):
    args = example_gen_args(example_gen, tmp_path, train_steps=2, eval_steps=1)
    args.custom_config["train"]["batch_size"] = 64
    out = run_in_executor_process(args, tmp_path, keras_3_loaded=True)
    assert out["keras"].startswith("keras")  # the parent stayed on Keras 3
    assert {"ctr_auc", "ctcvr_auc"} <= set(out["metrics"])
    assert out["metrics"]["examples"] == 64  # eval_steps=1: one batch of eval records
    assert os.path.isfile(tmp_path / "serving" / "saved_model.pb")


@pytest.mark.slow
def test_run_fn_reads_vocabularies_from_the_records_without_a_schema(example_gen, tmp_path):
    patterns, _, kinds, _ = example_gen
    args = fn_args(tmp_path, [patterns["train"]], [patterns["eval"]], train_steps=3,
                   eval_steps=1, base_model=None)
    args.custom_config["dataset"] = "aliexpress"
    schema = tfx_schema.resolve_schema(tfx_trainer.match_files(args.train_files, "t"),
                                       dataset="aliexpress")
    assert schema.layout == "columns" and len(schema.numerical) == 63
    # one pass over the train files: max id + 1
    header, rows, _ = read_csv(os.path.join(os.path.dirname(patterns["train"]), "..", "..",
                                            "synth", "processed", "train.csv"))
    col = header.index("categorical_1")
    assert schema.categorical[0].vocab_size == 1 + max(
        int(r[col]) for r in rows[:len(rows) // 3])
    assert set(schema.int_columns) == {n for n in schema.numerical if kinds[n] == "int"}
    # train_steps and eval_steps set; then warm start a second run from the first model
    first = tfx_trainer.run_fn(args)
    second = tfx_trainer.run_fn(fn_args(tmp_path / "2", args.train_files, args.eval_files,
                                        train_steps=1, eval_steps=1,
                                        base_model=args.serving_model_dir,
                                        custom_config=args.custom_config))
    assert set(first) == set(second)


@pytest.mark.slow
def test_packed_records_and_per_column_examples_score_the_same(synth, tmp_path, capsys):
    """A model run_fn trained on converted records: `serving_default` on the packed
    records equals `serving_columns` on CsvExampleGen's Examples of the same rows;
    and run_fn's scores are `pwiser-tf evaluate`'s (exact AUC, not Keras' buckets)."""
    from pwiser_tf import cli

    root, written = synth
    data = tmp_path / "data"
    test_csv = written["files"]["processed/test.csv"]
    convert("aliexpress-csv", [written["files"]["processed/train.csv"], test_csv], str(data),
            compression="GZIP", progress=False)
    args = fn_args(tmp_path, [str(data / "train-*")], [str(data / "test-*")], train_steps=4)
    result = tfx_trainer.run_fn(args)  # metadata.json beside the files gives the schema
    capsys.readouterr()
    assert cli.main(["evaluate", "--model-dir", args.serving_model_dir, "--data", str(data),
                     "--split", "test"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["examples"] == result["examples"] > 0
    for name in ("ctr_auc", "ctcvr_auc", "cvr_auc", "ctr_logloss", "ctcvr_logloss"):
        assert result[name] == pytest.approx(evaluated[name], abs=1e-12, nan_ok=True), name
    loaded = tf.saved_model.load(args.serving_model_dir)
    packed = next(iter(tf.data.TFRecordDataset(sorted(glob.glob(str(data / "test-*"))),
                                               compression_type="GZIP").batch(100_000)))
    header, rows, kinds = read_csv(test_csv)
    click, conversion = header.index("click"), header.index("conversion")
    rows = [r for r in rows if not (r[click] == "0" and r[conversion] == "1")]  # dropped
    from example_gen import example
    columns = tf.constant([example(header, r, kinds) for r in rows])
    assert len(rows) == int(packed.shape[0])
    a = loaded.signatures["serving_default"](examples=packed)
    b = loaded.signatures["serving_columns"](examples=columns)
    for name in ("pctr", "pcvr", "pctcvr"):
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-5, atol=1e-7)


def test_run_fn_errors_name_the_problem(example_gen, tmp_path):
    patterns, schema_path, _, _ = example_gen
    args = fn_args(tmp_path, [patterns["train"]], [patterns["eval"]])
    with pytest.raises(InputError, match="custom_config\\['dataset'\\]"):
        tfx_trainer.run_fn(args)
    args.custom_config["dataset"] = "ali-ccp"
    with pytest.raises(InputError, match="no column"):
        tfx_trainer.run_fn(args)
    args = fn_args(tmp_path, [patterns["train"], str(tmp_path / "nothing-*")],
                   [patterns["eval"]])
    with pytest.raises(InputError, match="train_files.*nothing"):
        tfx_trainer.run_fn(args)
    assert not os.path.exists(tmp_path / "serving")


# --- the settings: checked as `pwiser-tf train` checks its configuration ----------------

BAD_CUSTOM_CONFIG = [
    ({"train": {"batch_sise": 256}},
     r"custom_config\['train'\].*'train\.batch_sise'.*batch_size"),
    ({"train": {"learning_rate": 0}}, r"custom_config\['train'\].*'train\.learning_rate'"),
    ({"train": {"mixed_precision": "fp8"}}, r"custom_config\['train'\].*mixed_precision"),
    ({"train": {"seed": 1}}, r"custom_config\['train'\].*'train\.seed'"),
    ({"pwiser": {"pwiser_head": "bogus"}}, r"custom_config\['pwiser'\].*pwiser_head"),
    ({"model_config": {"pwiser_weight": 1.0}},
     r"custom_config\['model_config'\].*pwiser\.pwiser_weight"),
    ({"model_config": {"no_such_argument": 1}},
     r"custom_config\['model_config'\].*no_such_argument"),
    ({"model": "nonesuch"}, r"custom_config\['model'\].*'nonesuch'"),
    ({"loss": "hinge"}, r"custom_config\['loss'\].*'hinge'.*bce, pwiser"),
    ({"strategy": "gpu"}, r"custom_config\['strategy'\].*'gpu'"),
    ({"seed": "zero"}, r"custom_config\['seed'\]"),
    ({"modle": "mmoe"}, r"custom_config: unknown key 'modle'; did you mean 'model'"),
]


@pytest.mark.parametrize("bad, message", BAD_CUSTOM_CONFIG)
def test_a_bad_custom_config_value_is_one_error_naming_its_key(bad, message, tmp_path):
    """Refused before any file is read (the patterns match nothing) or written."""
    args = fn_args(tmp_path, [str(tmp_path / "no-train-*")], [str(tmp_path / "no-eval-*")])
    args.custom_config.update(bad)
    with pytest.raises(InputError, match=message):
        tfx_trainer.run_fn(args)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("values, message", [
    ({"learning_rate": -1.0}, r"hyperparameters.*'train\.learning_rate'"),
    ({"pwiser_scores": "odds"}, r"hyperparameters.*pwiser_scores"),
    ({"no_such_argument": 2}, r"hyperparameters.*no_such_argument"),
])
def test_a_bad_hyperparameter_is_one_error_naming_it(values, message, tmp_path):
    args = fn_args(tmp_path, [str(tmp_path / "no-train-*")], [str(tmp_path / "no-eval-*")],
                   hyperparameters={"space": [], "values": values})
    with pytest.raises(InputError, match=message):
        tfx_trainer.run_fn(args)
    assert not os.listdir(tmp_path)


def test_settings_are_typed_resolved_and_hyperparameters_go_where_they_belong(tmp_path):
    args = fn_args(tmp_path, [], [], train_steps=0, eval_steps=5,
                   hyperparameters={"values": {"learning_rate": 0.003, "pwiser_weight": 0.5,
                                               "embedding_dim": 8, "seed": 3}})
    args.custom_config["pwiser"] = {"margin_click": 0.2}
    run = run_settings(args)
    assert (run.model, run.loss, run.seed, run.strategy) == ("shared-bottom", "pwiser", 3,
                                                             "auto")
    assert run.train.learning_rate == 0.003 and run.train.batch_size == 256
    assert run.train.patience == 2  # the defaults of `train:`, as `pwiser-tf train`
    assert run.train_steps is None and run.eval_steps == 5 and run.epochs == 2
    # PWiseR's settings resolved, every default spelled out
    assert run.model_config["pwiser_weight"] == 0.5 and run.model_config["margin_click"] == 0.2
    assert run.model_config["margin_nonclick"] == options.MARGIN_NONCLICK
    assert run.model_config["pwiser_head"] == options.PWISER_HEAD
    assert run.model_config["embedding_dim"] == 8 and run.model_config["loss"] == "pwiser"
    bce = run_settings(fn_args(tmp_path, [], [], custom_config={"loss": "bce"}))
    assert bce.model == "mmoe" and "pwiser_weight" not in bce.model_config


# --- the run: the core's early stopping, logging, export and scoring --------------------

def event_tags(folder):
    tags = set()
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.slow
def test_run_fn_stops_early_on_the_eval_files_logs_and_scores_exactly(example_gen, tmp_path):
    """train_steps=None: epochs with early stopping on the eval files (here, a learning
    rate too small to move a weight: no gain after the first epoch, patience 1); the
    TensorBoard logs of `pwiser-tf train`; metrics.py's exact scores of the eval records
    through the serving signature; the resolved settings and the version recorded."""
    args = example_gen_args(example_gen, tmp_path)
    args.custom_config["train"] = {"batch_size": 128, "epochs": 6, "patience": 1,
                                   "learning_rate": 1e-12}
    args.custom_config["model_config"] = dict(SMALL_MODEL, dropout=0.0, batch_norm=False)
    result = tfx_trainer.run_fn(args)
    assert result["epochs_trained"] == 2 and result["best_epoch"] == 1
    run_dir = tmp_path / "model_run"
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["val_ctcvr_auc"]) == 2
    assert {"epoch_loss", "epoch_ctr_auc"} <= event_tags(str(run_dir / "train"))
    assert {"epoch_loss", "epoch_ctr_auc"} <= event_tags(str(run_dir / "validation"))
    # the exact AUC of the exported model on every eval record
    patterns, _, _, eval_rows = example_gen
    files = sorted(glob.glob(patterns["eval"]))
    records = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP").batch(10_000)))
    scores = tf.saved_model.load(args.serving_model_dir).signatures["serving_default"](
        examples=records)
    click = tf.io.parse_example(records, {"click": tf.io.FixedLenFeature([], tf.int64)})
    assert result["examples"] == eval_rows
    assert result["ctr_auc"] == metrics.auc(click["click"].numpy(), scores["pctr"].numpy())
    assert json.loads((run_dir / "metrics.json").read_text()) == pytest.approx(result,
                                                                               nan_ok=True)
    recorded = json.loads((run_dir / "run.json").read_text())
    assert recorded["version"] == __version__ == result["version"]
    assert recorded["settings"]["model_config"]["pwiser_weight"] == options.PWISER_WEIGHT
    assert recorded["settings"]["model_config"]["margin_click"] == options.MARGIN_CLICK
    assert recorded["settings"]["train"]["patience"] == 1


@pytest.mark.slow
def test_prepare_reads_and_builds_as_pwiser_tf_train(example_gen, tmp_path):
    """The core's inputs and build: XLA and static shapes where `pwiser-tf train` sets
    them (`train.jit_compile`, or a TPU that `strategy: auto` picks), dynamic otherwise."""
    args = example_gen_args(example_gen, tmp_path)
    args.custom_config["train"] = {"batch_size": 64, "jit_compile": True}
    inputs, model = tfx_trainer.prepare(args)
    assert model.jit_compile
    features, labels = inputs.dataset("train").element_spec
    assert all(spec.shape[0] == 64 for spec in {**features, **labels}.values())
    args.custom_config["train"] = {"batch_size": 64}
    inputs, model = tfx_trainer.prepare(args)
    assert not model.jit_compile
    features, _ = inputs.dataset("train").element_spec
    assert all(spec.shape[0] is None for spec in features.values())


def test_warm_start_copies_every_variable_batch_norm_statistics_too(tmp_path):
    """A warm start copies the non-trainable variables too: batch norm's moving mean and
    variance, without which the warm-started model predicts differently."""
    from models_data import toy_dataset, toy_schema
    from pwiser_tf import models

    schema = toy_schema()
    features, _ = next(iter(toy_dataset(32, 32)))

    def fresh_model():
        tf.keras.backend.clear_session()  # the layer names of a fresh process
        model = models.build_model("mmoe", schema, embedding_dim=4, num_experts=2,
                                   expert_units=[8], tower_units=[8], loss="bce")
        model(features)
        return model

    base = fresh_model()
    rng = np.random.default_rng(0)
    for variable in base.variables:  # every value moved away from its initial one
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(
            variable.dtype.as_numpy_dtype))
    moving = [v.name for v in base.non_trainable_variables if "moving" in v.name]
    assert moving  # the towers have batch norm
    models.export_saved_model(base, str(tmp_path / "base"), schema)
    expected = {v.name: v.numpy() for v in base.variables}
    warm = fresh_model()
    tfx_trainer.warm_start(warm, str(tmp_path / "base"))
    for variable in warm.variables:
        np.testing.assert_array_equal(variable.numpy(), expected[variable.name],
                                      err_msg=variable.name)
    np.testing.assert_allclose(warm(features)["ctr"].numpy(), base(features)["ctr"].numpy())


@pytest.mark.slow
def test_run_fn_on_a_ram_filesystem_finds_the_metadata_beside_the_records(synth, tmp_path):
    """Packed records, their metadata.json, the export and the run directory on
    TensorFlow's in-memory `ram://` filesystem (the stand-in for `gs://`)."""
    root, written = synth
    local = tmp_path / "data"
    convert("aliexpress-csv", [written["files"]["processed/train.csv"],
                               written["files"]["processed/test.csv"]], str(local),
            compression="GZIP", progress=False)
    ram = "ram://pwiser-tfx/data"
    tf.io.gfile.makedirs(ram)
    for name in os.listdir(local):
        tf.io.gfile.copy(str(local / name), f"{ram}/{name}", overwrite=True)
    args = fn_args(tmp_path, [f"{ram}/train-*"], [f"{ram}/test-*"], train_steps=2,
                   serving_model_dir="ram://pwiser-tfx/serving",
                   model_run_dir="ram://pwiser-tfx/model_run")
    result = tfx_trainer.run_fn(args)
    assert tf.io.gfile.exists("ram://pwiser-tfx/serving/saved_model.pb")
    with tf.io.gfile.GFile("ram://pwiser-tfx/model_run/metrics.json") as f:
        assert json.load(f)["examples"] == result["examples"] > 0


@pytest.mark.slow
def test_a_model_predicting_non_finite_scores_is_not_published(example_gen, tmp_path,
                                                                monkeypatch):
    """As `pwiser-tf train`: non-finite predictions are not scored, and the export goes."""
    def nan_predictions(*args, **kwargs):
        labels = {"click": np.array([0, 1]), "conversion": np.array([0, 1])}
        return labels, {name: np.full(2, np.nan) for name in evaluation.OUTPUTS}

    monkeypatch.setattr(evaluation, "predict_files", nan_predictions)
    args = example_gen_args(example_gen, tmp_path, train_steps=1, eval_steps=1)
    with pytest.raises(InputError, match="non-finite"):
        tfx_trainer.run_fn(args)
    assert not os.path.exists(args.serving_model_dir)
    assert not os.path.exists(os.path.join(args.model_run_dir, "metrics.json"))
