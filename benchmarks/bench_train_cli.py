"""`pwiser-tf train` end to end, one source tree beside another (e.g. before and after a change).

    mkdir -p /tmp/before && git archive HEAD | tar -x -C /tmp/before
    python benchmarks/bench_train_cli.py --rows 100000 --epochs 2 \\
        --tree before=/tmp/before --tree after=.

Synthesizes `--rows` AliExpress-like exposures once (`pwiser-tf synth`, seed 0) and
converts them once (`pwiser-tf convert`, 10% of the train rows to validation), both
with the last tree's command line, so that every tree trains on the same records. Then
times `python -m pwiser_tf train --model mmoe --loss pwiser` (`--epochs` epochs with
patience as long, `--batch-size`, seed 0, the reference sizes, a fresh `--output` each
time) of every tree in turn, the order reversed every other round, `--repeats` rounds.

Prints per tree the best and the median wall time (Python and TensorFlow start, the
validation and the final scoring included) and the median training examples/s that the
run records (`train_examples_per_sec` in its `metrics.json`: the training steps only),
and each tree's medians against the first tree's. The machine may be shared: the best
run is the least disturbed, the median the typical one.

A tree is a checkout of this repository, run with its own `pwiser_tf` whatever is
installed (`package_root` of bench_convert_cli.py); the flags used are the ones that
every tree since the `--set` overrides has.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_convert_cli import package_root  # noqa: E402


def cli(site: str, *arguments: str) -> None:
    """Runs `python -m pwiser_tf ARGUMENTS` with the tree in `site`; its stderr on failure."""
    command = [sys.executable, "-m", "pwiser_tf", *arguments]
    done = subprocess.run(command, env=dict(os.environ, PYTHONPATH=site),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} (PYTHONPATH={site}) failed:\n{done.stderr[-4000:]}")


def make_data(site: str, rows: int, root: str) -> str:
    """Synthetic AliExpress-like rows, converted to TFRecords with a validation split."""
    synth = os.path.join(root, "synth")
    cli(site, "synth", "--dataset", "aliexpress", "--rows", str(rows), "--seed", "0",
        "--output", synth, "--no-progress")
    data = os.path.join(root, "data")
    processed = os.path.join(synth, "processed")
    cli(site, "convert", "--format", "aliexpress-csv",
        "--input", "train=" + os.path.join(processed, "train.csv"),
        "test=" + os.path.join(processed, "test.csv"),
        "--output", data, "--validation-fraction", "0.1", "--no-progress")
    return data


def train(site: str, data: str, output: str, args) -> tuple:
    """Wall seconds of one training run and the examples/s it records."""
    start = time.perf_counter()
    cli(site, "train", "--data", data, "--model", "mmoe", "--loss", "pwiser",
        "--epochs", str(args.epochs), "--patience", str(args.epochs),
        "--batch-size", str(args.batch_size), "--seed", "0", "--output", output,
        "--no-progress")
    seconds = time.perf_counter() - start
    with open(os.path.join(output, "metrics.json")) as file:
        return seconds, json.load(file)["train_examples_per_sec"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000,
                        help="synthetic exposures in all splits (30%% go to test)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=PATH",
                        help="a source tree to time, repeatable; the first is the "
                             "baseline, the last writes the data")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench_train_cli_")
    try:
        trees = {}
        for entry in args.tree:
            name, _, path = entry.partition("=")
            trees[name] = package_root(path, os.path.join(root, name))
        data = make_data(list(trees.values())[-1], args.rows, root)
        print(f"rows={args.rows} epochs={args.epochs} batch={args.batch_size} "
              f"repeats={args.repeats} cpus={os.cpu_count()} model=mmoe loss=pwiser")
        runs = {name: [] for name in trees}
        for repeat in range(args.repeats):
            order = list(trees.items())
            for name, site in order[::-1] if repeat % 2 else order:  # in turn, both orders
                output = os.path.join(root, f"out-{name}-{repeat}")
                runs[name].append(train(site, data, output, args))
                shutil.rmtree(output)
                print(f"  round {repeat + 1} {name:10s} {runs[name][-1][0]:7.1f} s "
                      f"{runs[name][-1][1]:8,.0f} ex/s", flush=True)
        baseline = None
        print(f"{'tree':10s} {'best s':>8s} {'median s':>9s} {'median ex/s':>12s} "
              f"{'wall ratio':>11s} {'ex/s ratio':>11s}")
        for name, timings in runs.items():
            wall = statistics.median(seconds for seconds, _ in timings)
            speed = statistics.median(rate for _, rate in timings)
            baseline = baseline or (wall, speed)
            print(f"{name:10s} {min(s for s, _ in timings):8.1f} {wall:9.1f} {speed:12,.0f} "
                  f"{wall / baseline[0]:10.3f}x {speed / baseline[1]:10.3f}x")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
