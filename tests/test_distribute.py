"""Training under tf.distribute strategies, mixed precision and TensorBoard logs.

There is no GPU or TPU here: `--virtual-devices` splits the CPU into logical
devices for `MirroredStrategy`, and the multi-worker run uses two local processes
on 127.0.0.1 ports. The CLI runs are subprocesses (devices are fixed per process).
The tests that start them or train are marked `slow`.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from models_data import write_converted
from pwiser_tf import distribute, training
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import Metadata

TINY = ["--set", "model.embedding_dim=4", "--set", "model.tower_units=[8]",
        "--set", "model_options.mmoe.num_experts=2", "--set", "model_options.mmoe.expert_units=[8]",
        "--set", "train.batch_size=128", "--set", "train.patience=1", "--no-progress"]
SCALARS = {"epoch_loss", "epoch_ctr_loss", "epoch_ctcvr_loss", "epoch_pwiser_loss",
           "epoch_ctr_auc", "epoch_ctcvr_auc", "epoch_cvr_auc"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("distribute")
    write_converted(str(root), {"train": 1200, "validation": 400, "test": 300}, shards=2)
    return root


def cli(*args, env=None):
    env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-m", "pwiser_tf.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def finish(proc, timeout=400):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out)


def assert_complete_run(run):
    for name in ("metrics.json", "run.json", "config.yaml", "history.json",
                 "checkpoints/best.weights.h5", "saved_model/saved_model.pb"):
        assert (run / name).is_file(), name
    assert not (run / "staging").exists()


def scalar_tags(folder):
    tags = set()
    for event_file in folder.iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {value.tag for value in event.summary.value}
    return tags


@pytest.mark.slow
def test_cli_trains_mirrored_on_two_virtual_devices_with_tensorboard_logs(data, tmp_path):
    out = tmp_path / "run"
    result = finish(cli("train", "--data", data, "--model", "mmoe", "--loss", "pwiser",
                        "--epochs", 2, "--output", out, "--strategy", "mirrored",
                        "--virtual-devices", 2, *TINY))
    assert result["replicas"] == 2
    assert result["epochs_trained"] == 2
    assert json.loads((out / "metrics.json").read_text()) == result
    assert_complete_run(out)
    history = json.loads((out / "history.json").read_text())
    for key in ("val_ctcvr_auc", "val_ctr_auc", "ctr_loss", "pwiser_loss"):
        assert len(history[key]) == 2, key
        assert all(0 <= v <= 1 for v in history[key] if key.endswith("auc")), history[key]
    # TensorBoard: the loss, its parts and the AUCs, for training and validation.
    assert SCALARS <= scalar_tags(out / "logs" / "train")
    assert SCALARS <= scalar_tags(out / "logs" / "validation")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(data, out, temp, epochs):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TMPDIR=str(temp), TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(cli("train", "--data", data, "--model", "mmoe", "--loss", "pwiser",
                         "--epochs", epochs, "--patience", 5, "--output", out,
                         "--strategy", "multi-worker", *TINY, env=env))
    return procs


def wait_for_epoch(state, procs, epoch, timeout=300):
    """Waits until the staged state (`state.json`) has finished `epoch`; fails when a
    worker exits first or when `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if json.loads(state.read_text())["epoch"] >= epoch:
                return
        except (OSError, ValueError, KeyError):
            pass  # not written yet
        exited = [p for p in procs if p.poll() is not None]
        assert not exited, exited[0].communicate()[1][-4000:]
        assert time.monotonic() < deadline, f"no epoch {epoch} in {state} after {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_two_workers_on_localhost_resume_and_write_exactly_one_complete_run(data, tmp_path):
    """Both workers get the same --output; killed after the first epoch and started
    again, they resume from the chief's staged state and finish one run."""
    out, temp = tmp_path / "output", tmp_path / "tmp"
    temp.mkdir()
    procs = start_workers(data, out, temp, epochs=2)
    state = out / "staging" / "state.json"
    try:
        wait_for_epoch(state, procs, 1)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert json.loads(state.read_text())["epoch"] == 1
    left_by_kill = set(temp.iterdir())  # a killed process cannot remove its folder
    chief, worker = [finish(p) for p in start_workers(data, out, temp, epochs=2)]
    assert chief == worker  # the other worker returns the chief's published result
    assert chief["replicas"] == 2 and chief["epochs_trained"] == 2
    assert_complete_run(out)
    assert len(json.loads((out / "history.json").read_text())["val_ctcvr_auc"]) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".lock", "checkpoints", "config.yaml", "history.json", "logs", "metrics.json",
         "run.json", "saved_model"])
    assert set(temp.iterdir()) == left_by_kill  # the restarted worker removed its own


def test_resolve_strategy_names_and_errors(monkeypatch):
    assert distribute.resolve_strategy("default") is tf.distribute.get_strategy()
    assert not distribute.is_distributed(distribute.resolve_strategy("auto"))
    with pytest.raises(InputError, match="unknown strategy 'gpu'"):
        distribute.resolve_strategy("gpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(InputError, match="TF_CONFIG is not set"):
        distribute.resolve_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InputError, match="TF_CONFIG"):
        distribute.resolve_strategy("multi-worker")
    with pytest.raises(InputError, match="no TPU found"):
        distribute.resolve_strategy("tpu")
    tf.constant(1.0)  # the devices are initialised now
    have = len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(InputError, match="already initialised"):
        distribute.configure_virtual_devices(have + 1)


def test_chief_is_the_chief_task_else_worker_zero(monkeypatch):
    class Resolver:
        def __init__(self, task_type, task_id, cluster):
            self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

        def cluster_spec(self):
            return tf.train.ClusterSpec(self._cluster)

    class Strategy:
        def __init__(self, resolver):
            self.cluster_resolver = resolver

    workers = {"worker": ["a:1", "b:1"]}
    with_chief = {"chief": ["c:1"], **workers}
    assert distribute.is_chief(Strategy(Resolver("worker", 0, workers)))
    assert not distribute.is_chief(Strategy(Resolver("worker", 1, workers)))
    assert distribute.is_chief(Strategy(Resolver("chief", 0, with_chief)))
    assert not distribute.is_chief(Strategy(Resolver("worker", 0, with_chief)))
    assert distribute.is_chief(tf.distribute.get_strategy())
    assert distribute.task_name(Strategy(Resolver("worker", 1, workers))) == "worker1"


def small_config(**train):
    return {"model": {"embedding_dim": 4, "tower_units": [8]},
            "model_options": {"mmoe": {"num_experts": 2, "expert_units": [8]}},
            "train": {"epochs": 1, "batch_size": 256, "patience": 1, **train}}


@pytest.mark.slow
def test_train_run_inside_a_strategy_scope_keeps_the_strategy(data, tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():  # was: clear_session dropped it, IndexError on exit
        result = training.train_run(str(data), str(tmp_path / "run"), "mmoe", "bce", 0,
                                    small_config(), progress=False)
        assert tf.distribute.get_strategy() is strategy
    assert result["replicas"] == 1 and 0 <= result["ctcvr_auc"] <= 1
    with pytest.raises(InputError, match="differs from the strategy whose scope"):
        with strategy.scope():
            training.train_run(str(data), str(tmp_path / "other"), "mmoe", "bce", 0,
                               small_config(), progress=False, strategy="mirrored")
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
@pytest.mark.parametrize("precision,compute,optimizer", [
    ("bf16", "bfloat16", "Adam"), ("fp16", "float16", "LossScaleOptimizerV3")])
def test_mixed_precision_trains_with_float32_outputs(data, precision, compute, optimizer):
    config = small_config(mixed_precision=precision)
    model, train_ds, _ = training.seeded_start(str(data), "mmoe", {"loss": "pwiser",
                                                                   **config["model"]},
                                               config["train"], seed=0)
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored
    assert type(model.optimizer).__name__ == optimizer
    assert model.embedding.compute_dtype == compute
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    features, _ = next(iter(train_ds))
    outputs = model(features)
    assert {v.dtype for v in outputs.values()} == {tf.float32}
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(train_ds.take(3), epochs=1, verbose=0).history
    assert all(tf.math.is_finite(history[k][-1]) for k in ("loss", "ctr_loss", "pwiser_loss"))
    moved = [not (b == v.numpy()).all() for b, v in zip(before, model.trainable_variables)]
    assert sum(moved) > len(moved) // 2  # the step updated the weights (no skipped steps)


def test_static_shapes_under_a_strategy_or_xla(data):
    metadata = Metadata.load(str(data))
    plain = training.Inputs(str(data), metadata, {"batch_size": 256}, tf.distribute.get_strategy())
    xla = training.Inputs(str(data), metadata, {"batch_size": 256, "jit_compile": True,
                                                "multi_valued_length": 5},
                          tf.distribute.get_strategy())
    assert plain.steps("train") == 5 and xla.steps("train") == 4  # 1200 rows: 4.7 batches
    shapes = {tuple(f["mv_tags"].shape) for f, _ in xla.dataset("train", seed=0)}
    assert shapes == {(256, 5)}
    assert {f["mv_tags"].shape[0] for f, _ in plain.dataset("train", seed=0)} == {256, 176}
