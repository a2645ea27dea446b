"""What a batch job's log holds (stderr a file, not a terminal): one plain line per
epoch, cell or split, no tqdm bars, none of TensorFlow's start-up lines; `--quiet`
(also `--no-progress`) leaves only errors. On a terminal the bars stay."""
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

from conftest import converted_synthetic
from pwiser_tf import cli, config as config_lib, experiment, training

TINY = ["--set", "model.embedding_dim=4", "--set", "model.tower_units=[8]",
        "--set", "model_options={mmoe: {expert_units: [8], num_experts: 2}}",
        "--set", "train.batch_size=256"]
# What TensorFlow prints on its own while it starts: absl's first line, CUDA probing,
# the CPU notice, and any glog-style line (I0000 00:00:...).
NOISE = re.compile(r"absl|cudart|cpu_feature_guard|cuInit|oneDNN|^[IWEF]\d{4} ", re.M)
# tqdm's marks: carriage returns, bar blocks, its rate units.
BAR_MARKS = ("\r", "█", "it/s", "B/s", "%|")
EPOCH = re.compile(r"^mmoe/bce/seed0 epoch (\d+)/2: loss=(\S+) val_ctr_auc=(\S+) "
                   r"val_cvr_auc=(\S+) val_ctcvr_auc=(\S+) examples/s=(\d+) \(\d+\.\d s\)$")
SPLIT = re.compile(r"^convert (\w+): rows=(\d+)(?: \((.*)\))? rows/s=(\d+) \(\d+\.\d s\)$")


def command(*args, stderr_path, env_extra=None, timeout=600):
    """`python -m pwiser_tf ARGS` with stderr into a file (as a batch job's log) and
    TensorFlow's log level left unset (the CLI's own quiet load must hide the noise)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_extra or {})
    with open(stderr_path, "w") as log:
        proc = subprocess.run([sys.executable, "-m", "pwiser_tf", *map(str, args)],
                              stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                              timeout=timeout)
    err = open(stderr_path).read()
    assert proc.returncode == 0, err[-3000:]
    return proc.stdout, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return converted_synthetic(tmp_path_factory.mktemp("batch_logs"), 2000)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from pwiser_tf.pipelines import synthesize

    return synthesize("aliexpress", 2000, str(tmp_path_factory.mktemp("synth") / "s"), seed=2)


def test_quiet_and_no_progress_are_one_flag():
    for command_name in ("train", "experiment", "sweep", "convert", "synth"):
        parser = cli.build_parser([command_name])
        required = {"train": ["--data", "d", "--model", "m", "--loss", "bce", "--output", "o"],
                    "convert": ["--format", "aliexpress-csv", "--input", "i", "--output", "o"],
                    "synth": ["--dataset", "aliexpress", "--rows", "9", "--output", "o"]
                    }.get(command_name, ["--output", "o"])
        for flags, quiet in (([], False), (["--quiet"], True), (["--no-progress"], True)):
            args = parser.parse_args([command_name, *required, *flags])
            assert args.quiet is quiet, (command_name, flags)


def test_synth_loads_tensorflow_only_for_a_url():
    from pwiser_tf.commands import synth

    parser = cli.build_parser(["synth"])
    for output, loads in (("data/s", False), ("/tmp/s", False), ("ram://s", True),
                          ("gs://bucket/s", True)):
        args = parser.parse_args(["synth", "--dataset", "aliexpress", "--rows", "9",
                                  "--output", output])
        assert cli.uses_tensorflow(synth, args) is loads, output


@pytest.mark.slow  # two training runs in subprocesses
def test_train_log_has_one_line_per_epoch_and_quiet_has_none(data, tmp_path):
    out = tmp_path / "run"
    stdout, err = command("train", "--data", data, "--model", "mmoe", "--loss", "bce",
                          "--epochs", 2, "--set", "train.patience=5", "--output", out, *TINY,
                          stderr_path=tmp_path / "train.log")
    assert not NOISE.search(err) and not any(mark in err for mark in BAR_MARKS), err
    lines = err.splitlines()
    matches = [EPOCH.match(line) for line in lines]
    assert len(lines) == 2 and all(matches), err
    # The printed values are the run's own history, rounded.
    history = json.loads((out / training.HISTORY_FILE).read_text())
    for epoch, match in enumerate(matches):
        assert int(match.group(1)) == epoch + 1
        for group, key in ((2, "loss"), (3, "val_ctr_auc"), (4, "val_cvr_auc"),
                           (5, "val_ctcvr_auc")):
            assert float(match.group(group)) == pytest.approx(history[key][epoch], abs=1e-4)
        assert int(match.group(6)) > 0
    assert json.loads(stdout)["epochs_trained"] == 2

    _, quiet = command("train", "--data", data, "--model", "mmoe", "--loss", "bce",
                       "--epochs", 1, "--output", tmp_path / "quiet", "--quiet", *TINY,
                       stderr_path=tmp_path / "quiet.log")
    assert quiet == ""


@pytest.mark.slow  # conversions in subprocesses
def test_convert_log_has_one_line_per_split_and_no_bar(synth, tmp_path):
    inputs = synth["convert_inputs"]
    args = ["convert", "--format", synth["convert_format"], "--input", *inputs,
            "--validation-fraction", 0.25, "--records-per-shard", 300]
    _, err = command(*args, "--output", tmp_path / "out", stderr_path=tmp_path / "c.log")
    assert not NOISE.search(err) and not any(mark in err for mark in BAR_MARKS), err
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    rows = {name: split["counts"]["rows"] for name, split in metadata["splits"].items()}
    lines = err.splitlines()
    matches = {m.group(1): m for m in map(SPLIT.match, lines) if m}
    assert len(lines) == 2 and set(matches) == {"train", "test"}, err
    assert int(matches["train"].group(2)) == rows["train"] + rows["validation"]
    assert matches["train"].group(3) == (f"train {rows['train']}, "
                                         f"validation {rows['validation']}")
    assert int(matches["test"].group(2)) == rows["test"] and matches["test"].group(3) is None
    assert all(int(m.group(4)) > 0 for m in matches.values())

    _, quiet = command(*args, "--output", tmp_path / "quiet", "--quiet",
                       stderr_path=tmp_path / "quiet.log")
    assert quiet == ""

    # On a terminal: the tqdm bar, and no lines.
    terminal = _on_a_terminal([sys.executable, "-m", "pwiser_tf", *map(str, args),
                               "--output", str(tmp_path / "tty")])
    assert "\r" in terminal and "convert train:" not in terminal, terminal


def _on_a_terminal(argv, timeout=600) -> str:
    """Runs `argv` with stderr on a pseudo-terminal; returns what it wrote there."""
    leader, follower = pty.openpty()
    # A terminal 100 columns wide: tqdm draws nothing on one of width 0.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=follower,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, b"".join(chunks)[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow  # a subprocess that loads TensorFlow
def test_synth_log_has_no_tensorflow_noise(tmp_path):
    # A URL output is written through tf.io.gfile: TensorFlow loads, quietly.
    _, err = command("synth", "--dataset", "aliexpress", "--rows", 200, "--output",
                     "ram://batch_logs/synth", stderr_path=tmp_path / "ram.log")
    assert err.splitlines() == ["synth aliexpress: train 140/140 rows",
                                "synth aliexpress: test 60/60 rows"], err
    _, err = command("synth", "--dataset", "aliexpress", "--rows", 200, "--output",
                     tmp_path / "local", "--quiet", stderr_path=tmp_path / "local.log")
    assert err == ""


@pytest.mark.slow  # trains two cells
def test_grid_log_has_one_line_per_cell(data, tmp_path, capsys):
    config = config_lib.validate({
        "models": ["mmoe"], "losses": ["bce", "pwiser"], "seeds": [0],
        "model": {"embedding_dim": 4, "tower_units": [8]},
        "model_options": {"mmoe": {"expert_units": [8], "num_experts": 2}},
        "train": {"epochs": 1, "batch_size": 256, "patience": 1}})
    cells = [{"dataset": "tiny", "model": "mmoe", "loss": loss, "seed": 0, "variant": ""}
             for loss in ("bce", "pwiser")]
    datasets = {"tiny": {"data": data, "eval_data": None}}
    rows = experiment.run_cells(cells, datasets, config, str(tmp_path), progress=True)
    err = capsys.readouterr().err  # captured: not a terminal
    assert not any(mark in err for mark in BAR_MARKS), err
    cell_lines = [line for line in err.splitlines() if line.startswith("cell ")]
    epoch_lines = [line for line in err.splitlines() if " epoch 1/1: " in line]
    assert len(cell_lines) == 2 and len(epoch_lines) == 2, err
    for index, (line, row) in enumerate(zip(cell_lines, rows), 1):
        match = re.match(rf"^cell {index}/2 tiny/mmoe/{row['loss']}/seed0: test "
                         r"ctr_auc=(\S+) cvr_auc=(\S+) ctcvr_auc=(\S+) \(\d+\.\d s\)$", line)
        assert match, line
        assert float(match.group(1)) == pytest.approx(row["ctr_auc"], abs=1e-4)
        assert float(match.group(3)) == pytest.approx(row["ctcvr_auc"], abs=1e-4)

    # The cells again, finished, with progress off (`--quiet`): nothing on stderr.
    experiment.run_cells(cells, datasets, config, str(tmp_path), progress=False)
    assert capsys.readouterr().err == ""
