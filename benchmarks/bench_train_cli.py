"""`pwiser-tf train` end to end, one source tree beside another (e.g. before and after a change).

    mkdir -p /tmp/before && git archive HEAD | tar -x -C /tmp/before
    python benchmarks/bench_train_cli.py --rows 20000 --epochs 2 --repeats 3 \\
        --tree before=/tmp/before --tree after=.

Synthesizes `--rows` AliExpress-like exposures once (`pwiser-tf synth`, seed 0) and
converts them once (`pwiser-tf convert`, 10% of the train rows to validation), both
with the last tree's command line, so that every tree trains on the same records. Then
times `python -m pwiser_tf train --model mmoe --loss pwiser` (`--epochs` epochs with
patience as long, `--batch-size`, seed 0, the reference sizes, a fresh `--output` each
time) of every tree in turn, the order reversed every other round, `--repeats` rounds.

Prints per tree the best and the median wall time (Python and TensorFlow start, the
validation and the final scoring included), the median CPU time of the command (user +
system: less disturbed than the wall time when other jobs share the cores), the median
training examples/s that the run records (`train_examples_per_sec` in its
`metrics.json`: the training steps only), and each tree's medians against the first
tree's. The machine may be shared: the best run is the least disturbed, the median the
typical one.

A tree is a checkout of this repository, run with its own `pwiser_tf` whatever is
installed (`package_root` of bench_convert_cli.py). The flags passed to `train` are
common to the trees before and after the training package (4a1ecce, ae5ccf5).
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_convert_cli import package_roots  # noqa: E402


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
    """Wall seconds, CPU seconds (user + system) of one training run and the examples/s
    it records. The CPU seconds vary less than the wall time when other jobs share the
    cores."""
    start, cpu = time.perf_counter(), children_cpu_seconds()
    cli(site, "train", "--data", data, "--model", "mmoe", "--loss", "pwiser",
        "--epochs", str(args.epochs), "--patience", str(args.epochs),
        "--batch-size", str(args.batch_size), "--seed", "0", "--output", output,
        "--no-progress")
    seconds, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu
    with open(os.path.join(output, "metrics.json")) as file:
        return seconds, cpu, json.load(file)["train_examples_per_sec"]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000,
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
        trees = package_roots(args.tree, root)
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
                seconds, cpu, rate = runs[name][-1]
                print(f"  round {repeat + 1} {name:10s} {seconds:7.1f} s wall {cpu:7.1f} s cpu "
                      f"{rate:8,.0f} ex/s", flush=True)
        baseline = None
        print(f"{'tree':10s} {'best s':>7s} {'median s':>9s} {'median cpu s':>13s} "
              f"{'median ex/s':>12s}   ratios of the medians: wall, cpu, ex/s")
        for name, timings in runs.items():
            best = min(seconds for seconds, _, _ in timings)
            medians = [statistics.median(column) for column in zip(*timings)]
            baseline = baseline or medians
            ratios = ", ".join(f"{value / base:.3f}x" for value, base in zip(medians, baseline))
            print(f"{name:10s} {best:7.1f} {medians[0]:9.1f} {medians[1]:13.1f} "
                  f"{medians[2]:12,.0f}   {ratios}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
