"""`pwiser-tf` end to end, in subprocesses, at tiny sizes: the user's view."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # every test runs the command line in subprocesses

TINY = ["--set", "model.embedding_dim=4", "--set", "train.batch_size=256",
        "--set", "train.patience=1"]


def cli(*args, check=True, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "pwiser_tf.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("pwiser-tf")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Synthetic AliExpress data, generated and converted by the CLI."""
    root = tmp_path_factory.mktemp("cli")
    cli("synth", "--dataset", "aliexpress", "--rows", 20000, "--seed", 1,
        "--output", root / "synth")
    cli("convert", "--format", "aliexpress-csv",
        "--input", root / "synth" / "processed" / "train.csv",
        root / "synth" / "processed" / "test.csv",
        "--validation-fraction", 0.2, "--output", root / "data", "--no-progress")
    return root


@pytest.fixture(scope="module")
def trained(converted):
    out = converted / "run"
    proc = cli("train", "--data", converted / "data", "--model", "mmoe", "--loss", "pwiser",
               "--epochs", 2, "--seed", 3, "--output", out, "--no-progress", *TINY)
    return out, json.loads(proc.stdout)


def test_train_writes_model_metrics_and_config(trained):
    out, printed = trained
    written = json.loads((out / "metrics.json").read_text())
    assert written == printed
    for key in ("ctr_auc", "ctcvr_auc", "cvr_auc", "ctr_logloss", "ctcvr_logloss",
                "cvr_logloss", "train_examples_per_sec", "intent_auc"):
        assert key in written, key
    # Learning itself is tested in test_models.py; the AUCs are checked against the
    # model's predictions in test_evaluate_writes_predictions_in_input_order.
    assert written["examples"] == json.loads(
        (out.parent / "data" / "metadata.json").read_text())["splits"]["test"]["counts"]["rows"]
    assert written["train_examples_per_sec"] > 0
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "config.yaml").is_file()
    assert any((out / "checkpoints").iterdir())


def pairwise_auc(labels, scores):
    """AUC by counting every (positive, negative) pair, a tie counting one half; and
    the share of the pairs that are tied."""
    positive, negative = scores[labels > 0.5], scores[labels <= 0.5]
    above = (positive[:, None] > negative[None, :]).sum()
    tied = (positive[:, None] == negative[None, :]).sum()
    pairs = positive.size * negative.size
    return (above + 0.5 * tied) / pairs, tied / pairs


def split_labels(data, split):
    """The labels of a converted split, read from its records in file order."""
    import tensorflow as tf

    meta = json.loads((data / "metadata.json").read_text())
    names = meta["schema"]["labels"]
    spec = {name: tf.io.FixedLenFeature([], tf.int64) for name in names}
    records = tf.data.TFRecordDataset([str(data / f) for f in meta["splits"][split]["files"]],
                                      compression_type=meta.get("compression") or None)
    parsed = [tf.io.parse_example(batch, spec) for batch in records.batch(4096)]
    return {name: np.concatenate([batch[name].numpy() for batch in parsed]) for name in names}


def test_evaluate_writes_predictions_in_input_order(trained, converted, tmp_path):
    out, train_metrics = trained
    predictions = tmp_path / "pred.csv"
    proc = cli("evaluate", "--model-dir", out, "--data", converted / "data",
               "--predictions", predictions)
    result = json.loads(proc.stdout)
    assert result["ctr_auc"] == pytest.approx(train_metrics["ctr_auc"], abs=1e-6)
    with open(predictions) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["row", "group", "click", "conversion", "pctr", "pcvr", "pctcvr"]
    meta = json.loads((converted / "data" / "metadata.json").read_text())
    assert len(rows) - 1 == meta["splits"]["test"]["counts"]["rows"] == result["examples"]
    for pctr, pcvr, pctcvr in (map(float, row[4:]) for row in rows[1:200]):
        assert 0.0 <= min(pctr, pcvr, pctcvr) and max(pctr, pcvr, pctcvr) <= 1.0
        # MMoE has CTR and CTCVR heads; its pCVR is their ratio, clipped to 1.
        assert pcvr == pytest.approx(min(1.0, pctcvr / pctr), rel=1e-4, abs=1e-6)
    # The AUCs that train wrote to metrics.json are those of these predictions (rows
    # in the records' order), counted pair by pair. The CSV's 7 digits keep the order
    # of the scores but can tie two that differ in float32, which moves an AUC by at
    # most half the share of tied pairs.
    pctr, pcvr, pctcvr = np.array([r[4:] for r in rows[1:]], dtype=np.float64).T
    labels = split_labels(converted / "data", "test")
    clicked = labels["click"] > 0
    recomputed = {
        "ctr_auc": pairwise_auc(labels["click"], pctr),
        "ctcvr_auc": pairwise_auc(labels["conversion"], pctcvr),
        "cvr_auc": pairwise_auc(labels["conversion"][clicked], pcvr[clicked]),
        "intent_auc": pairwise_auc(labels["intent"], pctr),
    }
    for key, (value, tied) in recomputed.items():
        assert abs(train_metrics[key] - value) <= 0.5 * tied + 1e-9, (key, value, tied)


def test_same_seed_same_result(trained, converted, tmp_path):
    out, first = trained
    proc = cli("train", "--data", converted / "data", "--model", "mmoe", "--loss", "pwiser",
               "--epochs", 2, "--seed", 3, "--output", tmp_path / "again", "--no-progress",
               *TINY)
    second = json.loads(proc.stdout)
    for key in ("ctr_auc", "ctcvr_auc", "cvr_auc"):
        assert second[key] == pytest.approx(first[key], abs=1e-6), key


def test_experiment_grid_resumes_after_interrupt(converted, tmp_path):
    # Six cells, interrupted when the first has finished: five cells are left, so the
    # signal lands before the grid is done even on a loaded machine.
    out = tmp_path / "grid"
    args = [sys.executable, "-m", "pwiser_tf.cli", "experiment", "--data",
            str(converted / "data"), "--models", "shared-bottom", "--losses", "bce,pwiser",
            "--seeds", "0,1,2", "--epochs", "1", "--output", str(out), "--no-progress", *TINY]
    cells = {(loss, seed): out / "runs" / "data" / "shared-bottom" / loss / f"seed{seed}" /
             "metrics.json" for loss in ("bce", "pwiser") for seed in (0, 1, 2)}
    # A job started in the background (`cmd &`, as CI may run pytest) inherits SIGINT
    # ignored, and Python then never raises KeyboardInterrupt: restore the default.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not any(c.exists() for c in cells.values()) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.2)
    assert any(c.exists() for c in cells.values()), \
        proc.communicate()[1][-3000:] if proc.poll() is not None else "no cell within 240 s"
    proc.send_signal(signal.SIGINT)  # interrupt during a later cell
    _, err = proc.communicate(timeout=120)
    # Interrupted, not finished: a signal that came after the grid was done fails here.
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "interrupted; rerun the same command to resume" in err.decode()
    finished = {key: c.stat().st_mtime_ns for key, c in cells.items() if c.exists()}
    assert 1 <= len(finished) < len(cells) and not (out / "results.csv").exists()

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for key, mtime in finished.items():
        assert cells[key].stat().st_mtime_ns == mtime, key  # kept, not recomputed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["loss"], r["seed"]) for r in rows) == sorted(
        (loss, str(seed)) for loss, seed in cells)
    bce = {r["seed"]: float(r["ctr_auc"]) for r in rows if r["loss"] == "bce"}
    for treated in (r for r in rows if r["loss"] == "pwiser"):  # paired with BCE's seed
        assert float(treated["delta_ctr_auc"]) == pytest.approx(
            float(treated["ctr_auc"]) - bce[treated["seed"]], abs=1e-5)
        assert treated["pairs"] == "3" and treated["ctr_auc_wins"] in ("0", "1", "2", "3")
    report = (out / "report.md").read_text()
    assert "| data | shared-bottom | CTR AUC |" in report
    assert (out / "auc_data.png").is_file() and (out / "config.yaml").is_file()
    assert "| data | shared-bottom | CTR AUC |" in rerun.stdout


def test_errors_are_one_line_without_traceback(converted, tmp_path):
    data = converted / "data"
    assert_one_line_error(
        cli("train", "--data", data, "--model", "nosuchnet", "--loss", "bce",
            "--output", tmp_path / "x", check=False), "unknown model 'nosuchnet'", "mmoe")
    assert_one_line_error(
        cli("train", "--data", tmp_path / "missing", "--model", "mmoe", "--loss", "bce",
            "--output", tmp_path / "x", check=False), "metadata.json", "not found")
    assert_one_line_error(
        cli("experiment", "--output", tmp_path / "y", "--set",
            "datasets={d: {synth: {dataset: nosuchdata, rows: 10}}}", check=False),
        "nosuchdata")
    assert_one_line_error(
        cli("evaluate", "--model-dir", tmp_path / "nomodel", "--data", data, check=False),
        "no SavedModel")
    assert_one_line_error(
        cli("experiment", "--output", tmp_path / "z", "--config", tmp_path / "none.yaml",
            check=False), "none.yaml", "not found")


def test_data_that_does_not_match_its_metadata(converted, trained, tmp_path):
    """A shard that the metadata lists but that holds other features."""
    import shutil

    out, _ = trained
    broken = tmp_path / "broken"
    shutil.copytree(converted / "data", broken)
    meta = json.loads((broken / "metadata.json").read_text())
    meta["schema"]["numerical"] = meta["schema"]["numerical"][:-1]
    (broken / "metadata.json").write_text(json.dumps(meta))
    assert_one_line_error(
        cli("evaluate", "--model-dir", out, "--data", broken, check=False),
        "does not match")


def test_adaftr_run_reports_its_temperature_histogram(converted, tmp_path):
    proc = cli("train", "--data", converted / "data", "--model", "adaftr", "--loss", "bce",
               "--epochs", 1, "--output", tmp_path / "adaftr", "--no-progress", *TINY,
               "--set", "model_options={adaftr: {expert_units: [8], num_experts: 2}}")
    histogram = json.loads(proc.stdout)["temperature_histogram"]
    meta = json.loads((converted / "data" / "metadata.json").read_text())
    assert sum(histogram["counts"]) == meta["splits"]["validation"]["counts"]["rows"]
    assert histogram["edges"][0] == 0.05 and histogram["edges"][-1] == 1.0
    assert 0.05 <= histogram["mean"] <= 1.0
