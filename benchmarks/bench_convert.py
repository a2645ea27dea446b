"""Conversion rows/s of the 82-column AliExpress CSV, side by side with a naive loop.

    python benchmarks/bench_convert.py --rows 300000 --naive-rows 20000

Writes a CSV of `--rows` random rows (16 ids, 63 numbers with 6 decimals, two
labels) in a temporary directory, converts it with `pipelines.convert.convert`
and, on its first `--naive-rows` rows, with a plain Python loop that parses each
line and builds one `tf.train.Example` per row in the same record layout. Prints
both rates, their ratio and the ratio to the 100,000 rows/s target (best of
`--repeats`: the machine is shared and the best run is the least disturbed).

`--other-formats` also converts the train split of `pwiser-tf synth` data of
`--rows` exposures in every other format (raw joins, ESMM text, Ali-CCP CSVs).

`--beam MODE` also converts the CSV, and the two raw joins of `pwiser-tf synth`
data of `--rows` exposures, with the Beam converter on the DirectRunner
(`--beam-workers` workers, `direct_running_mode=MODE`: `multi_threading` or
`multi_processing`), each right after the local converter on the same input,
and prints both rates and their ratio.
"""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.fastcsv import csv_rows, int_cells, unit_cells
from pwiser_tf.pipelines.readers.aliexpress import HEADER

TARGET_ROWS_PER_SECOND = 100_000
OTHER_FORMATS = {  # format: (synthetic dataset, train files under its output)
    "aliexpress-raw": ("aliexpress", ["raw/nl_user_train.csv", "raw/nl_item_train.csv"]),
    "ali-ccp-raw": ("ali-ccp", ["raw/sample_skeleton_train.csv",
                                "raw/common_features_train.csv"]),
    "ali-ccp-csv": ("ali-ccp", ["processed/torch_rechub/ali_ccp_train.csv"]),
    "aitm-csv": ("ali-ccp", ["processed/aitm/train.csv"]),
    "esmm-text": ("ali-ccp", ["processed/esmm/train.txt"]),
}


def write_csv(path: str, rows: int, seed: int = 0, chunk: int = 100_000) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write((",".join(HEADER) + "\n").encode())
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            click = (rng.random(n) < 0.04).astype(np.int64)
            f.write(csv_rows([
                int_cells(np.arange(start, start + n) // 20),
                int_cells(rng.integers(0, 5000, (n, 16))),
                unit_cells(rng.random((n, 63)), 6),
                int_cells(np.stack([click, click * (rng.random(n) < 0.1)], axis=1))]))


def naive(path: str, rows: int, output: str) -> float:
    """Seconds for the per-row loop: split, cast, one `tf.train.Example`, write."""
    start = time.perf_counter()
    with open(path) as f, tf.io.TFRecordWriter(output) as writer:
        next(f)
        for _, line in zip(range(rows), f):
            cells = line.rstrip("\n").split(",")
            feature = {
                "categorical": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(c) for c in cells[1:17]])),
                "numerical": tf.train.Feature(float_list=tf.train.FloatList(
                    value=[float(c) for c in cells[17:80]])),
                "click": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(cells[80])])),
                "conversion": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(cells[81])]))}
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())
    return time.perf_counter() - start


def other_formats(root: str, rows: int) -> None:
    from pwiser_tf.pipelines.synth import synthesize

    sources = {}
    for fmt, (dataset, files) in OTHER_FORMATS.items():
        if dataset not in sources:
            sources[dataset] = os.path.join(root, dataset)
            synthesize(dataset, rows, sources[dataset], progress=False)
        output = os.path.join(root, f"out-{fmt}")
        start = time.perf_counter()
        metadata = convert(fmt, ["train=" + os.path.join(sources[dataset], f) for f in files],
                           output, progress=False)
        seconds = time.perf_counter() - start
        converted = metadata.splits["train"].counts["rows"]
        print(f"{fmt:15s} {converted / seconds:10,.0f} rows/s  ({converted:,} train rows)")
        shutil.rmtree(output)


BEAM_FORMATS = {"aliexpress-raw": OTHER_FORMATS["aliexpress-raw"],
                "ali-ccp-raw": OTHER_FORMATS["ali-ccp-raw"]}


def beam_side_by_side(root: str, csv_path: str, rows: int, mode: str, workers: int) -> None:
    from pwiser_tf.pipelines.beam_convert import convert_beam
    from pwiser_tf.pipelines.synth import synthesize

    jobs = [("aliexpress-csv", ["train=" + csv_path])]
    for fmt, (dataset, files) in BEAM_FORMATS.items():
        source = os.path.join(root, f"beam-{dataset}")
        if not os.path.isdir(source):
            synthesize(dataset, rows, source, progress=False)
        jobs.append((fmt, ["train=" + os.path.join(source, f) for f in files]))
    options = {"direct_num_workers": str(workers), "direct_running_mode": mode}
    for fmt, inputs in jobs:
        rates = {}
        for name, run in (("local", lambda out: convert(fmt, inputs, out, progress=False)),
                          ("beam", lambda out: convert_beam(fmt, inputs, out, runner="direct",
                                                            beam_options=options))):
            output = os.path.join(root, f"out-{name}-{fmt}")
            start = time.perf_counter()
            converted = run(output).splits["train"].counts["rows"]
            rates[name] = converted / (time.perf_counter() - start)
            shutil.rmtree(output)
        print(f"{fmt:15s} local {rates['local']:10,.0f} rows/s   beam ({mode}, {workers} "
              f"workers) {rates['beam']:10,.0f} rows/s   beam/local "
              f"{rates['beam'] / rates['local']:5.2f}x  ({converted:,} rows)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--naive-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compression", default="", choices=("", "GZIP"))
    parser.add_argument("--other-formats", action="store_true")
    parser.add_argument("--beam", choices=("multi_threading", "multi_processing"),
                        help="also run the Beam converter (DirectRunner) side by side")
    parser.add_argument("--beam-workers", type=int, default=2)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="bench_convert_")
    try:
        source = os.path.join(root, "train.csv")
        write_csv(source, args.rows)
        size = os.path.getsize(source)
        print(f"rows={args.rows} ({size / 2**20:.0f} MiB) naive_rows={args.naive_rows} "
              f"repeats={args.repeats} cpus={os.cpu_count()} compression={args.compression!r}")
        fast = slow = float("inf")
        for repeat in range(args.repeats):
            output = os.path.join(root, f"out{repeat}")
            start = time.perf_counter()
            metadata = convert("aliexpress-csv", [source], output, progress=False,
                               compression=args.compression)
            fast = min(fast, time.perf_counter() - start)
            assert metadata.splits["train"].counts["rows"] == args.rows
            shutil.rmtree(output)
            slow = min(slow, naive(source, args.naive_rows, os.path.join(root, "naive.tfrecord")))
        fast_rate, slow_rate = args.rows / fast, args.naive_rows / slow
        print(f"convert        {fast_rate:10,.0f} rows/s  ({size / fast / 2**20:5.1f} MiB/s)")
        print(f"naive loop     {slow_rate:10,.0f} rows/s")
        target = fast_rate / TARGET_ROWS_PER_SECOND
        print(f"ratio convert/naive: {fast_rate / slow_rate:5.1f}x   "
              f"convert/target({TARGET_ROWS_PER_SECOND:,}): {target:4.2f}x")
        if args.other_formats:
            other_formats(root, args.rows)
        if args.beam:
            beam_side_by_side(root, source, args.rows, args.beam, args.beam_workers)
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
