"""Rows/s of `synthesize`, every format of each dataset written, against the target.

    python benchmarks/bench_synth.py --rows 1000000

Prints rows/s per dataset and the ratio to the 200,000 rows/s target, best of
`--repeats` runs (the machine is shared; the best run is the least disturbed).
"""
import argparse
import os
import shutil
import tempfile
import time

from pwiser_tf.pipelines.synth import DATASETS, synthesize

TARGET_ROWS_PER_SECOND = 200_000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench_synth_")
    print(f"rows={args.rows} repeats={args.repeats} cpus={os.cpu_count()}")
    try:
        for dataset in DATASETS:
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                manifest = synthesize(dataset, args.rows, os.path.join(root, dataset))
                best = min(best, time.perf_counter() - start)
            size = sum(os.path.getsize(p) for p in manifest["files"].values())
            rate = args.rows / best
            print(f"{dataset:10s} {rate:10,.0f} rows/s  ({size / best / 2**20:6.0f} MiB/s of "
                  f"text, {len(manifest['files'])} files)  /target: {rate / TARGET_ROWS_PER_SECOND:4.2f}x")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
