"""Nothing lost, nothing silently wrong: diverged runs, refused overwrites of finished
experiment cells, special files as --predictions, duplicate seeds, non-finite
settings, corrupted models, and the messages and folders a refused command leaves."""
import csv
import os
import pathlib
import shutil

import numpy as np
import pytest

from pwiser_tf import cli, config as config_lib, distribute, evaluation, fileio, training
from pwiser_tf.errors import InputError
from conftest import converted_synthetic

TINY = {"model": {"embedding_dim": 4, "tower_units": [8]},
        "model_options": {"mmoe": {"expert_units": [8], "num_experts": 2}},
        "train": {"epochs": 1, "batch_size": 256, "patience": 1}}
TINY_FLAGS = ["--set", "model.embedding_dim=4", "--set", "model.tower_units=[8]",
              "--set", "model_options={mmoe: {expert_units: [8], num_experts: 2}}",
              "--set", "train.batch_size=256", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny synthetic AliExpress data with train, validation and test splits."""
    return converted_synthetic(tmp_path_factory.mktemp("nothing_lost"), 2000)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trained") / "run")
    training.train_run(data, out, "mmoe", "bce", 0, TINY, progress=False)
    return out


def main(capsys, *argv):
    """Runs the command line in this process: (exit status, its one error line)."""
    status = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err[-3000:]
    assert status == 0 or len(lines) == 1, err[-3000:]
    return status, (lines[0] if lines else "")


def snapshot(folder):
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in pathlib.Path(folder).rglob("*")
            if p.is_file() and p.name != fileio.LOCK_FILE}


# 1. A diverged run stops, publishes nothing, and an experiment records it as failed.

def test_loss_guard_names_the_epoch_and_the_causes():
    from pwiser_tf import guards

    guard = guards.StopOnNonFinite()
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 0.5})
    with pytest.raises(InputError) as err:
        guard.on_train_batch_end(1, {"loss": float("nan")})
    message = str(err.value)
    assert "epoch 3" in message and "learning rate" in message and "label" in message
    with pytest.raises(InputError, match="epoch 4"):
        guard.on_epoch_end(3, {"loss": 0.1, "val_loss": float("inf")})


def test_non_finite_predictions_are_not_scored():
    from pwiser_tf import guards

    fine = {name: np.full(4, 0.5) for name in evaluation.OUTPUTS}
    guards.check_predictions(fine, "run")
    broken = dict(fine, pcvr=np.array([0.5, np.nan, 0.5, 0.5]))
    with pytest.raises(InputError, match="run: .*pcvr.*1 of 4"):
        guards.check_predictions(broken, "run")


@pytest.mark.slow
def test_diverged_train_exits_2_and_publishes_nothing(data, trained, tmp_path, capsys):
    train = ["train", "--data", data, "--model", "mmoe", "--loss", "bce", *TINY_FLAGS,
             "--learning-rate", "1e9"]
    new = tmp_path / "new"
    status, line = main(capsys, *train, "--output", new)
    assert status == 2, line
    for needle in ("epoch 1", "learning rate", "label"):
        assert needle in line, line
    assert not new.exists()  # no metrics.json, no staging, no empty folder

    kept = tmp_path / "kept"
    shutil.copytree(trained, kept)
    before = snapshot(kept)
    status, line = main(capsys, *train, "--output", kept, "--overwrite")
    assert status == 2 and "epoch 1" in line, line
    assert snapshot(kept) == before  # the finished run is untouched
    assert not (kept / training.STAGING_DIR).exists()


def nan_predictions(*args, **kwargs):
    labels = {"click": np.array([0, 1, 0, 1]), "conversion": np.array([0, 1, 0, 0])}
    return labels, {name: np.full(4, np.nan) for name in evaluation.OUTPUTS}


def test_evaluate_does_not_score_non_finite_predictions(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluation, "predict_split", nan_predictions)
    predictions = tmp_path / "p.csv"
    status, line = main(capsys, "evaluate", "--model-dir", tmp_path / "m", "--data", data,
                        "--predictions", predictions)
    assert status == 2 and "non-finite" in line and "--model-dir" in line, line
    assert not predictions.exists() and "auc" not in capsys.readouterr().out


@pytest.mark.slow
def test_run_with_non_finite_predictions_publishes_nothing(data, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "predict_split", nan_predictions)
    out = tmp_path / "run"
    with pytest.raises(InputError, match=r"seed0 \(best epoch 1\): .* non-finite"):
        training.train_run(data, str(out), "mmoe", "bce", 0, TINY, progress=False)
    assert not out.exists()  # trained, but nothing scored, published or left staged


@pytest.mark.slow
def test_diverged_cell_is_failed_and_other_settings_are_refused(data, tmp_path, capsys):
    out = tmp_path / "grid"
    grid = ["experiment", "--data", data, "--models", "mmoe", "--losses", "bce",
            "--seeds", "0", "--output", out, *TINY_FLAGS,
            "--set", "variants={ok: {}, hot: {train: {learning_rate: 1.0e+9}}}",
            "--set", "baseline=bce/ok"]
    status, line = main(capsys, *grid)
    assert status == 2 and "1 of 2 runs failed" in line, line
    with open(out / "results.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert rows["ok"]["status"] == "ok" and 0 <= float(rows["ok"]["ctr_auc"]) <= 1
    assert rows["hot"]["status"] == "failed" and "epoch 1" in rows["hot"]["error"]
    assert rows["hot"]["ctr_auc"] == "" and rows["hot"].get("ctr_logloss", "") == ""
    report = (out / "report.md").read_text()
    assert "failed" in report and "hot" in report
    cell = out / "runs" / os.path.basename(data) / "mmoe" / "bce"
    assert not (cell / "hot" / "seed0" / "metrics.json").exists()

    # 2. Other settings into the same --output: refused in one line, nothing replaced.
    before = snapshot(out)
    status, line = main(capsys, *grid, "--set", "train.learning_rate=0.01")
    assert status == 2, line
    assert "train.learning_rate (0.001 -> 0.01)" in line and "--overwrite" in line, line
    assert snapshot(out) == before


# 3. --predictions: through a symlink to its target; a FIFO or a device is refused.

def test_predictions_follow_symlinks_and_refuse_special_files(data, tmp_path, capsys):
    predictions = {name: np.array([0.25, 0.5]) for name in evaluation.OUTPUTS}
    target = tmp_path / "target.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    evaluation.write_predictions(predictions, str(link))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().splitlines()[0] == "pctr,pcvr,pctcvr"
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "made.csv")
    evaluation.write_predictions(predictions, str(dangling))
    assert dangling.is_symlink() and (tmp_path / "made.csv").is_file()

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    evaluate = ["evaluate", "--model-dir", tmp_path / "nomodel", "--data", data]
    for special in (fifo, "/dev/null"):
        status, line = main(capsys, *evaluate, "--predictions", special)
        assert status == 2 and "not a regular file" in line, line
        with pytest.raises(InputError, match="not a regular file"):
            evaluation.write_predictions(predictions, str(special))
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    assert fifo.exists() and not fifo.is_file()


# 8. A file where the folder should be is named as such.

def test_predictions_under_a_file_say_it_is_not_a_directory(data, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    status, line = main(capsys, "evaluate", "--model-dir", tmp_path / "nomodel", "--data",
                        data, "--predictions", afile / "p.csv")
    assert status == 2 and f"{afile} is a file, not a directory" in line, line
    assert "does not exist" not in line


# 4. Duplicate seeds (models, losses) are refused.

def test_duplicates_in_the_grid_are_refused(data, tmp_path, capsys):
    for flag, value in (("--seeds", "0,1,0"), ("--models", "mmoe,mmoe"),
                        ("--losses", "bce,bce")):
        out = tmp_path / "grid"
        status, line = main(capsys, "experiment", "--data", data, flag, value,
                            "--output", out)
        assert status == 2 and "appears twice" in line and flag[2:] in line, line
        assert not out.exists()
    with pytest.raises(InputError, match="seeds.*0 appears twice"):
        config_lib.validate({"seeds": [0, 0]})


# 5. --virtual-devices 0 is refused, as negative counts are.

def test_zero_virtual_devices_are_refused():
    for count in (0, -3):
        with pytest.raises(InputError, match="--virtual-devices must be at least 1"):
            distribute.resolve_strategy("auto", count)


# 6. NaN or infinite settings are refused, naming the setting.

@pytest.mark.parametrize("assignment, key", [
    ("pwiser.pwiser_weight=nan", "pwiser.pwiser_weight"),
    ("pwiser.margin_click=.inf", "pwiser.margin_click"),
    ("pwiser.margin_nonclick=-.inf", "pwiser.margin_nonclick"),
    ("train.learning_rate=.nan", "train.learning_rate"),
    ("train.weight_decay=inf", "train.weight_decay"),
    ("model.dropout=.nan", "model.dropout"),
    ("sweep.axes.pwiser_weight=[0.1, .nan]", "sweep.axes.pwiser_weight"),
])
def test_non_finite_settings_are_refused(assignment, key):
    config = config_lib.override({}, assignment)
    with pytest.raises(InputError) as err:
        config_lib.validate(config)
    assert key in str(err.value) and "finite" in str(err.value), str(err.value)


# 7. A corrupted model directory is one line naming it.

@pytest.mark.slow
def test_corrupted_model_directory_is_one_line(data, trained, tmp_path, capsys):
    saved = os.path.join(trained, evaluation.SAVED_MODEL_DIR)
    variables = os.path.join("variables", "variables.data-00000-of-00001")
    for name in ("saved_model.pb", variables):
        broken = tmp_path / name.replace(os.sep, "_")
        shutil.copytree(saved, broken)
        size = os.path.getsize(broken / name)
        with open(broken / name, "r+b") as f:
            f.truncate(size // 2)
        status, line = main(capsys, "evaluate", "--model-dir", broken, "--data", data)
        assert status == 2 and str(broken) in line, (name, line)


# 9. A YAML error names the file and the line.

def test_yaml_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  batch_size: [1, 2\nmodels: [mmoe]\n")
    with pytest.raises(InputError) as err:
        config_lib.load(str(path))
    message = str(err.value)
    assert str(path) in message and "line 4" in message and "\n" not in message, message
    path = tmp_path / "bad.json"
    path.write_text('{\n  "train": {"epochs": 3,}\n}\n')
    with pytest.raises(InputError, match=r"bad.json.*line 2"):
        config_lib.load(str(path))


# 10. A refused command leaves no new folder; a folder that existed stays.

def test_refused_commands_leave_no_new_folder(data, tmp_path, capsys):
    missing = tmp_path / "not_converted"
    missing.mkdir()
    for command in ("experiment", "sweep"):
        out = tmp_path / command
        status, line = main(capsys, command, "--data", missing, "--output", out)
        assert status == 2 and "not a converted directory" in line, line
        assert not out.exists(), sorted(os.listdir(out))
    existing = tmp_path / "existing"
    (existing / "keep").mkdir(parents=True)
    status, _ = main(capsys, "experiment", "--data", missing, "--output", existing)
    assert status == 2 and (existing / "keep").is_dir()

    out = tmp_path / "run"
    status, line = main(capsys, "train", "--data", data, "--model", "mmoe", "--loss", "pwiser",
                        "--output", out, *TINY_FLAGS, "--set", "pwiser.pwiser_scores=bogus")
    assert status == 2 and "bogus" in line, line  # refused by the model, once it is built
    assert not out.exists(), sorted(os.listdir(out))
