"""The TFX Trainer module, driven the way TFX's generic executor drives it.

TFX does not install here (its ml-metadata wheels need a newer glibc); the
executor hands `run_fn` an object with the attributes of `tfx.components.FnArgs`,
which is all this module reads, so the tests build that object themselves, on
GZIP records in `Split-<name>/` folders as ExampleGen writes them
(`tests/example_gen.py` writes CsvExampleGen's per-column Examples and
SchemaGen's `schema.pbtxt`).
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
from pwiser_tf import tfx_trainer
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import synthesize
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.readers.aliexpress import CATEGORICAL

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
                               "train": {"batch_size": 256}, "model_config": SMALL_MODEL})
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


def test_run_fn_trains_in_a_tf_keras_child_when_keras_3_is_loaded(example_gen, tmp_path):
    args = example_gen_args(example_gen, tmp_path, train_steps=2, eval_steps=1)
    out = run_in_executor_process(args, tmp_path, keras_3_loaded=True)
    assert out["keras"].startswith("keras")  # the parent stayed on Keras 3
    assert {"ctr_auc", "ctcvr_auc"} <= set(out["metrics"])
    assert os.path.isfile(tmp_path / "serving" / "saved_model.pb")


def test_run_fn_reads_vocabularies_from_the_records_without_a_schema(example_gen, tmp_path):
    patterns, _, kinds, _ = example_gen
    args = fn_args(tmp_path, [patterns["train"]], [patterns["eval"]], train_steps=3,
                   eval_steps=1, base_model=None)
    args.custom_config["dataset"] = "aliexpress"
    schema = tfx_trainer.resolve_schema(args.custom_config,
                                        tfx_trainer.match_files(args.train_files, "t"), None)
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


def test_packed_records_and_per_column_examples_score_the_same(synth, tmp_path):
    """A model run_fn trained on converted records: `serving_default` on the packed
    records equals `serving_columns` on CsvExampleGen's Examples of the same rows."""
    root, written = synth
    data = tmp_path / "data"
    test_csv = written["files"]["processed/test.csv"]
    convert("aliexpress-csv", [written["files"]["processed/train.csv"], test_csv], str(data),
            compression="GZIP", progress=False)
    args = fn_args(tmp_path, [str(data / "train-*")], [str(data / "test-*")],
                   train_steps=4, eval_steps=2)
    tfx_trainer.run_fn(args)  # metadata.json beside the files gives the schema
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
