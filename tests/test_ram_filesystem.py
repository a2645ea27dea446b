"""End to end on TensorFlow's in-memory `ram://` filesystem, the stand-in for `gs://`.

Everything runs in this one process (a `ram://` tree lives in its process): the
CLI's `synth` and `convert` write into `ram://`, `make_dataset` streams from it (the
same records as a local conversion of the same files), and `train` and `evaluate`
read their data there and write their run there.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pwiser_tf import cli
from pwiser_tf.pipelines import make_dataset
from pwiser_tf.pipelines.schema import Metadata

pytestmark = pytest.mark.slow  # trains and evaluates through the command line

ROOT = "ram://pwiser-e2e"
TINY = ["--set", "model.embedding_dim=4", "--set", "train.batch_size=256",
        "--set", "train.patience=1"]


def _json_out(capsys, code):
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return json.loads(captured.out)


@pytest.fixture(scope="module")
def converted():
    assert cli.main(["synth", "--dataset", "aliexpress", "--rows", "6000", "--seed", "2",
                     "--no-progress", "--output", f"{ROOT}/synth"]) == 0
    assert cli.main(["convert", "--format", "aliexpress-csv", "--no-progress",
                     "--input", f"{ROOT}/synth/processed/train.csv",
                     f"{ROOT}/synth/processed/test.csv", "--validation-fraction", "0.2",
                     "--records-per-shard", "1500", "--compression", "gzip",
                     "--output", f"{ROOT}/data"]) == 0
    return f"{ROOT}/data"


def test_convert_and_stream_from_ram(converted, tmp_path):
    metadata = Metadata.load(converted)
    names = tf.io.gfile.listdir(converted)
    assert "metadata.json" in names and len(metadata.splits["train"].files) > 1
    assert all(name in names for split in metadata.splits.values() for name in split.files)
    assert not any(name.endswith((".partial", ".done.json")) or ".tmp" in name
                   for name in names)
    # the same bytes as a local conversion of the same files
    local = str(tmp_path / "local")
    source = str(tmp_path / "synth")
    for name in ("train.csv", "test.csv"):
        os.makedirs(os.path.join(source, "processed"), exist_ok=True)
        tf.io.gfile.copy(f"{ROOT}/synth/processed/{name}",
                         os.path.join(source, "processed", name))
    assert cli.main(["convert", "--format", "aliexpress-csv", "--no-progress", "--input",
                     os.path.join(source, "processed", "train.csv"),
                     os.path.join(source, "processed", "test.csv"), "--validation-fraction",
                     "0.2", "--records-per-shard", "1500", "--compression", "gzip",
                     "--output", local]) == 0
    assert Metadata.load(local).splits == metadata.splits
    for key in ("categorical", "numerical"):
        ram = [f[key].numpy() for f, _ in make_dataset(converted, 512, split="train")]
        disk = [f[key].numpy() for f, _ in make_dataset(local, 512, split="train")]
        np.testing.assert_array_equal(np.concatenate(ram), np.concatenate(disk))
    shuffled = make_dataset(converted, 512, split="train", shuffle=True, seed=0)
    assert sum(int(l["click"].shape[0]) for _, l in shuffled) == \
        metadata.splits["train"].counts["rows"]
def test_train_and_evaluate_on_ram(converted, capsys):
    run = f"{ROOT}/run"
    metrics = _json_out(capsys, cli.main([
        "train", "--data", converted, "--model", "mmoe", "--loss", "pwiser", "--epochs", "1",
        "--seed", "0", "--output", run, "--no-progress", *TINY]))
    assert tf.io.gfile.exists(f"{run}/saved_model/saved_model.pb")
    with tf.io.gfile.GFile(f"{run}/metrics.json") as f:
        assert json.load(f) == metrics
    test_rows = Metadata.load(converted).splits["test"].counts["rows"]
    assert metrics["examples"] == test_rows
    evaluated = _json_out(capsys, cli.main([
        "evaluate", "--model-dir", run, "--data", converted,
        "--predictions", f"{run}/predictions.csv"]))
    assert evaluated["ctr_auc"] == pytest.approx(metrics["ctr_auc"], abs=1e-6)
    with tf.io.gfile.GFile(f"{run}/predictions.csv") as f:
        assert len(f.read().splitlines()) == test_rows + 1
