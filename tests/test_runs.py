"""Run directories: fingerprints, staging, resume after a kill, locks, refusals."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pwiser_tf import config as config_lib
from pwiser_tf import experiment, fileio, training
from pwiser_tf.errors import InputError
from conftest import converted_synthetic

pytestmark = pytest.mark.slow  # trains models, most of them in subprocesses

TINY = {"model": {"embedding_dim": 4, "tower_units": [8]},
        "model_options": {"mmoe": {"expert_units": [8], "num_experts": 2}},
        "train": {"epochs": 1, "batch_size": 256, "patience": 1}}
TINY_FLAGS = ["--set", "model.embedding_dim=4", "--set", "model.tower_units=[8]",
              "--set", "model_options={mmoe: {expert_units: [8], num_experts: 2}}",
              "--set", "train.batch_size=256"]
# The command line hides TensorFlow's own log unless the user sets its level.
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic AliExpress data with train, validation and test splits."""
    return converted_synthetic(tmp_path_factory.mktemp("runs"), 12000)


def train_command(data, out, *extra):
    return [sys.executable, "-m", "pwiser_tf.cli", "train", "--data", data, "--model", "mmoe",
            "--loss", "pwiser", "--output", str(out), "--no-progress", *TINY_FLAGS,
            *map(str, extra)]


def read_state(out):
    path = os.path.join(out, training.STAGING_DIR, training.STATE_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def kill_when(command, out, ready, timeout=300):
    """Starts `command`, SIGKILLs it as soon as `ready(state)` holds; returns the state."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=ENV)
    deadline = time.time() + timeout
    state = None
    while time.time() < deadline and process.poll() is None:
        state = read_state(out)
        if state is not None and ready(state):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate()
    assert state is not None and ready(state), err.decode()[-3000:]
    return read_state(out)


def finished_run(out):
    """history.json and metrics.json of a finished run, without the measured throughput."""
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("train_examples_per_sec")
    return history, metrics


@pytest.mark.parametrize("strategy", [
    [], ["--strategy", "mirrored", "--virtual-devices", 2],  # one repeated stream per split
], ids=["plain", "mirrored"])
def test_killed_training_resumes_as_the_uninterrupted_run(data, tmp_path, strategy):
    """Case 5: history, early stopping's best and the best checkpoint survive a kill, and
    the resumed run ends as the same run uninterrupted, digit for digit: each epoch's data
    order and dropout masks come from the seed and the epoch, not from the process."""
    out = tmp_path / "run"
    command = train_command(data, out, "--epochs", 5, "--patience", 5, *strategy)
    before = kill_when(command, out, lambda s: s["epoch"] >= 2)
    assert 2 <= before["epoch"] < 5 and before["phase"] == "train"
    assert not (out / "metrics.json").exists()  # nothing looks finished
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history, metrics = finished_run(out)
    whole = tmp_path / "uninterrupted"
    proc = subprocess.run(train_command(data, whole, "--epochs", 5, "--patience", 5,
                                        *strategy),
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert finished_run(whole) == (history, metrics)
    done = before["epoch"]
    monitored = history[training.MONITOR]
    assert len(monitored) == 5 == metrics["epochs_trained"]  # before and after the kill
    for key, values in before["history"].items():
        assert history[key][:done] == values, key  # the epochs before the kill, kept
    best = max(range(5), key=monitored.__getitem__)
    assert metrics["best_epoch"] == best + 1
    assert metrics["best_val_ctcvr_auc"] == pytest.approx(monitored[best])
    assert (out / "checkpoints" / "best.weights.h5").is_file()
    assert not (out / training.STAGING_DIR).exists()


def test_kill_after_training_does_not_retrain(data, tmp_path):
    """Case 5: a kill during export (or scoring) resumes from the saved weights."""
    out = tmp_path / "run"
    command = train_command(data, out, "--epochs", 2)
    before = kill_when(command, out, lambda s: s["phase"] != "train")
    best = out / training.STAGING_DIR / "checkpoints" / "best.weights.h5"
    trained_at = best.stat().st_mtime_ns
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # fit() rewrites the best weights; the published file is the one from before the kill.
    assert (out / "checkpoints" / "best.weights.h5").stat().st_mtime_ns == trained_at
    assert json.loads((out / "history.json").read_text()) == before["history"]
    assert json.loads(proc.stdout)["epochs_trained"] == before["epoch"]


def test_rerun_reuses_refuses_or_replaces(data, tmp_path):
    """Cases 2 and 4: same settings reuse; other settings are refused in one line
    naming the differences and --overwrite; a failing rerun leaves the result as is."""
    out = str(tmp_path / "run")
    first = training.train_run(data, out, "mmoe", "pwiser", 3, TINY, progress=False)
    files = {name: open(os.path.join(out, name), "rb").read()
             for name in ("metrics.json", "config.yaml", "run.json", "history.json")}
    assert training.train_run(data, out, "mmoe", "pwiser", 3, TINY, progress=False) == first

    with pytest.raises(InputError) as err:
        training.train_run(data, out, "mmoe", "bce", 7, TINY, progress=False)
    message = str(err.value)
    assert "\n" not in message and "--overwrite" in message
    assert "loss ('pwiser' -> 'bce')" in message and "seed (3 -> 7)" in message
    with pytest.raises(InputError, match=r"model_config.num_experts \(2 -> 3\)"):
        training.train_run(data, out, "mmoe", "pwiser", 3, config_lib.merge(
            TINY, {"model_options": {"mmoe": {"num_experts": 3}}}), progress=False)
    for bad in ({"train": {"batch_size": 0}}, {"train": {"epochs": 0}},
                {"train": {"learning_rate": "fast"}}, {"train": {"epoch": 3}}):
        with pytest.raises(InputError, match="train.(batch_size|epochs?|learning_rate)"):
            training.train_run(data, out, "mmoe", "pwiser", 3, config_lib.merge(TINY, bad),
                               progress=False, overwrite=True)
    for name, content in files.items():
        assert open(os.path.join(out, name), "rb").read() == content, name
    assert not os.path.exists(os.path.join(out, training.STAGING_DIR))

    replaced = training.train_run(data, out, "mmoe", "bce", 7, TINY, progress=False,
                                  overwrite=True)
    recorded = fileio.read_json(os.path.join(out, "run.json"))
    assert recorded["settings"]["loss"] == "bce" and recorded["settings"]["seed"] == 7
    assert fileio.read_json(os.path.join(out, "metrics.json")) == replaced
    assert "loss: bce" in open(os.path.join(out, "config.yaml")).read()


def test_killed_overwrite_keeps_the_finished_run(data, tmp_path):
    """Case 4: an --overwrite run killed in training leaves the finished run whole, and
    the old settings still read it back."""
    out = tmp_path / "run"
    finished = training.train_run(data, str(out), "mmoe", "pwiser", 0, TINY, progress=False)
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    kill_when(train_command(data, out, "--epochs", 3, "--seed", 1, "--overwrite"), out,
              lambda s: s["epoch"] >= 1)
    for path, content in files.items():
        assert path.read_bytes() == content, path
    assert read_state(out)["epoch"] >= 1  # the new run, staged, resumes when rerun
    assert training.train_run(data, str(out), "mmoe", "pwiser", 0, TINY,
                              progress=False) == finished


def test_second_writer_is_refused_with_the_holders_pid(data, tmp_path):
    out = tmp_path / "run"
    with fileio.exclusive_lock(str(out)):
        proc = subprocess.run(train_command(data, out, "--epochs", 1), capture_output=True,
                              text=True, env=ENV, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {os.getpid()}" in lines[0], lines


def test_empty_or_uncounted_splits_are_refused_in_one_line(data, tmp_path):
    """Case 7: a 0-row validation or evaluation split, not StopIteration or NaN; a train
    split whose metadata lists no rows."""
    import shutil

    for split in ("validation", "test"):
        copy = tmp_path / split
        shutil.copytree(data, copy)
        meta = json.loads((copy / "metadata.json").read_text())
        meta["splits"][split]["counts"]["rows"] = 0
        (copy / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(InputError, match=f"'{split}' split has 0 rows"):
            training.train_run(str(copy), str(tmp_path / f"out_{split}"), "mmoe", "bce", 0,
                               TINY, progress=False)
        assert not (tmp_path / f"out_{split}").exists()  # checked before writing
    # An epoch is a fixed number of steps, from the train split's row count.
    copy = tmp_path / "uncounted"
    shutil.copytree(data, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    del meta["splits"]["train"]["counts"]["rows"]
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="gives no row count for the 'train' split"):
        training.train_run(str(copy), str(tmp_path / "out_uncounted"), "mmoe", "bce", 0,
                           TINY, progress=False)
    assert not (tmp_path / "out_uncounted").exists()


def test_experiment_recomputes_cells_whose_settings_changed(tmp_path):
    """Case 3: rows, epochs, learning rate or PWiseR weight changed: the cell runs again,
    and config.yaml, results.csv and report.md describe the same grid."""
    out = str(tmp_path / "grid")
    base = config_lib.merge(TINY, {
        "title": "t", "models": ["mmoe"], "losses": ["pwiser"], "seeds": [0],
        "datasets": {"s": {"synth": {"dataset": "aliexpress", "rows": 3000, "seed": 0},
                           "validation_fraction": 0.25}}})
    cell = os.path.join(out, "runs", "s", "mmoe", "pwiser", "seed0")

    def run(config):
        rows = experiment.run_experiment(config, out, progress=False, overwrite=True)
        recorded = fileio.read_json(os.path.join(cell, "run.json"))
        assert config_lib.load(os.path.join(out, "config.yaml")) == \
            config_lib.validate(config).to_dict()  # every setting, resolved
        return rows, recorded["fingerprint"], os.stat(os.path.join(cell, "metrics.json"))

    rows, key, stat = run(base)
    again, same_key, same_stat = run(base)
    assert (again, same_key, same_stat.st_mtime_ns) == (rows, key, stat.st_mtime_ns)
    seen = {key}
    for change in ({"train": {"learning_rate": 0.02}}, {"pwiser": {"pwiser_weight": 0.5}},
                   {"train": {"epochs": 2}},
                   {"datasets": {"s": {"synth": {"rows": 2500}}}}):
        base = config_lib.merge(base, change)
        rows, key, _ = run(base)
        assert key not in seen, change  # recomputed under a new fingerprint
        seen.add(key)
    assert rows[0]["examples"] < 2500 and rows[0]["epochs_trained"] >= 1
