"""`pwiser-tf convert` end to end, one source tree beside another (e.g. before and after a change).

    mkdir -p /tmp/before && git archive HEAD | tar -x -C /tmp/before
    python benchmarks/bench_convert_cli.py --rows 300000 --tree before=/tmp/before --tree after=.

Writes the CSV of `bench_convert.py` (`--rows` rows of the 82-column AliExpress
layout) once, then times the command line (`python -m pwiser_tf convert --format
aliexpress-csv ... --validation-fraction 0.1 --no-progress`; with `--beam` on the Beam
DirectRunner) of every tree in turn, the order reversed every other round, `--repeats`
rounds, each into a fresh output folder. Prints the best wall time of each tree (the
machine is shared: the best run is the least disturbed) with its rows/s; the times
include the start of the command (Python, TensorFlow).

A tree is a checkout of this repository; it runs with its own `pwiser_tf`,
`pwiser_tf.models` and `pwiser_tf.pipelines` (links to its `models/` and `pipelines/`
folders inside a temporary copy of its `pwiser_tf/`), whatever is installed.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_convert import write_csv  # noqa: E402


def package_root(tree: str, into: str) -> str:
    """A folder whose `pwiser_tf` is the tree's, with its `models/` and `pipelines/` inside."""
    root = os.path.join(into, "site")
    shutil.copytree(os.path.join(tree, "pwiser_tf"), os.path.join(root, "pwiser_tf"),
                    ignore=shutil.ignore_patterns("__pycache__", "models", "pipelines"))
    for name in ("models", "pipelines"):
        os.symlink(os.path.abspath(os.path.join(tree, name)),
                   os.path.join(root, "pwiser_tf", name))
    return root


def package_roots(entries, into: str) -> dict:
    """`NAME=PATH` trees -> {name: the tree's package root}, in the order given."""
    roots = {}
    for entry in entries:
        name, _, path = entry.partition("=")
        roots[name] = package_root(path, os.path.join(into, name))
    return roots


BEAM = ["--runner", "direct", "--beam-option", "direct_num_workers=2",
        "--beam-option", "direct_running_mode=multi_threading"]


def convert_seconds(site: str, source: str, output: str, beam: bool = False) -> float:
    env = dict(os.environ, PYTHONPATH=site)
    command = [sys.executable, "-m", "pwiser_tf", "convert", "--format", "aliexpress-csv",
               "--input", "train=" + source, "--output", output,
               "--validation-fraction", "0.1", "--no-progress"] + (BEAM if beam else [])
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=PATH",
                        help="a source tree to time, repeatable")
    parser.add_argument("--beam", action="store_true",
                        help="the Beam runner instead (DirectRunner, 2 workers, "
                             "multi_threading)")
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench_convert_cli_")
    try:
        trees = package_roots(args.tree, root)
        source = os.path.join(root, "train.csv")
        write_csv(source, args.rows)
        print(f"rows={args.rows} ({os.path.getsize(source) / 2**20:.0f} MiB) "
              f"repeats={args.repeats} cpus={os.cpu_count()} "
              f"runner={'beam direct' if args.beam else 'local'}")
        best = {name: float("inf") for name in trees}
        for repeat in range(args.repeats):
            order = list(trees.items())
            for name, site in order[::-1] if repeat % 2 else order:  # in turn, both orders
                output = os.path.join(root, f"out-{name}-{repeat}")
                best[name] = min(best[name], convert_seconds(site, source, output, args.beam))
                shutil.rmtree(output)
        for name, seconds in best.items():
            print(f"{name:10s} {seconds:6.2f} s  {args.rows / seconds:10,.0f} rows/s")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
