"""Streaming throughput of `make_dataset` for the AliExpress schema, by record layout.

Writes the same rows twice, in layout v1 (packed `categorical` int64 list and
`numerical` float list per example) and one feature per field (16 int64 + 63
float scalars), then streams both side by side through the same tf.data
pipeline (read, shuffle, batch, parse, prefetch) and prints examples/s and their
ratio; then, for layout v1, the defaults against parallel reader threads and
against shuffling single records instead of groups of 16. The per-field pipeline stacks its scalars into the same `[B, 16]` and
`[B, 63]` tensors, so both yield what the models consume. Last, the one-time shard
check of `make_dataset(verify=True)` (read every shard, count its records against
`metadata.json`), as a share of one streamed epoch.

    python benchmarks/bench_stream.py --rows 400000 --batch-size 4096 --epochs 3
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pwiser_tf.pipelines import dataset as dataset_lib  # noqa: E402
from pwiser_tf.pipelines.schema import Field, Metadata, Schema, Split  # noqa: E402

SCHEMA = Schema(dataset="aliexpress",
                categorical=tuple(Field(f"categorical_{i}", 1000) for i in range(1, 17)),
                numerical=tuple(f"numerical_{i}" for i in range(1, 64)))
DISTINCT = 4096  # distinct rows, written over and over: realistic value sizes, quick to write


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def serialized_rows(layout: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    categorical = rng.integers(0, 1000, [DISTINCT, 16])
    numerical = rng.random([DISTINCT, 63]).astype(np.float32)
    click = (rng.random(DISTINCT) < 0.03).astype(np.int64)
    out = []
    for c, n, y in zip(categorical.tolist(), numerical.tolist(), click.tolist()):
        if layout == "packed":
            feature = {"categorical": _ints(c), "numerical": _floats(n)}
        else:
            feature = {f"categorical_{i + 1}": _ints([v]) for i, v in enumerate(c)}
            feature.update({f"numerical_{i + 1}": _floats([v]) for i, v in enumerate(n)})
        feature.update(click=_ints([y]), conversion=_ints([0]))
        out.append(tf.train.Example(features=tf.train.Features(feature=feature))
                   .SerializeToString())
    return out


def write(directory: str, layout: str, rows: int, shards: int, compression: str) -> str:
    os.makedirs(directory, exist_ok=True)
    records = serialized_rows(layout)
    options = tf.io.TFRecordOptions(compression_type=compression)
    names, records_per_shard = [], []
    for shard, part in enumerate(np.array_split(np.arange(rows), shards)):
        name = f"train-{shard:05d}-of-{shards:05d}.tfrecord" + (".gz" if compression else "")
        with tf.io.TFRecordWriter(os.path.join(directory, name), options) as writer:
            for i in part:
                writer.write(records[i % DISTINCT])
        names.append(name)
        records_per_shard.append(len(part))
    Metadata(schema=SCHEMA, splits={"train": Split(names, {"rows": rows}, records_per_shard)},
             compression=compression, source_format=f"bench-{layout}").save(directory)
    return directory


class PerFieldParser:
    """Layout 'one feature per field', parsed into the same tensors as layout v1."""

    def __init__(self):
        self.spec = {f"categorical_{i}": tf.io.FixedLenFeature([], tf.int64)
                     for i in range(1, 17)}
        self.spec.update({f"numerical_{i}": tf.io.FixedLenFeature([], tf.float32)
                          for i in range(1, 64)})
        self.spec.update(click=tf.io.FixedLenFeature([], tf.int64),
                         conversion=tf.io.FixedLenFeature([], tf.int64))

    def __call__(self, serialized):
        parsed = tf.io.parse_example(serialized, self.spec)
        features = {
            "categorical": tf.stack([parsed[f"categorical_{i}"] for i in range(1, 17)], 1),
            "numerical": tf.stack([parsed[f"numerical_{i}"] for i in range(1, 64)], 1)}
        labels = {k: tf.cast(parsed[k], tf.float32) for k in ("click", "conversion")}
        return features, labels


def per_field_dataset(directory, batch_size, shuffle, seed=0):
    """`make_dataset`'s pipeline with the per-field parser swapped in."""
    metadata = Metadata.load(directory)
    batches = dataset_lib.record_batches(metadata.files("train", directory),
                                         metadata.compression, batch_size, shuffle=shuffle,
                                         seed=seed)
    return batches.map(PerFieldParser(), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def examples_per_second(dataset, rows, epochs):
    """The best epoch's examples/s (the machine is shared: the best epoch is the
    least disturbed one)."""
    for _ in dataset.take(2):  # warm up: builds functions, fills buffers
        pass
    best = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        seen = 0
        for features, _ in dataset:
            seen += int(features["categorical"].shape[0])
        assert seen == rows, (seen, rows)
        best = max(best, seen / (time.perf_counter() - start))
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs; the best counts")
    parser.add_argument("--workdir", help="where to write the shards (default: a temp dir)")
    args = parser.parse_args(argv)

    root = args.workdir or tempfile.mkdtemp(prefix="bench_stream_")
    print(f"rows={args.rows} shards={args.shards} batch_size={args.batch_size} "
          f"epochs={args.epochs} cpus={os.cpu_count()} tf={tf.__version__}")
    results = {}
    for compression in ("", "GZIP"):
        tag = compression or "none"
        packed = write(os.path.join(root, f"packed-{tag}"), "packed", args.rows,
                       args.shards, compression)
        fields = write(os.path.join(root, f"fields-{tag}"), "fields", args.rows,
                       args.shards, compression)
        for shuffle in (False, True):
            v1 = examples_per_second(
                dataset_lib.make_dataset(packed, args.batch_size, shuffle=shuffle, seed=0),
                args.rows, args.epochs)
            per_field = examples_per_second(
                per_field_dataset(fields, args.batch_size, shuffle), args.rows, args.epochs)
            results[(tag, shuffle)] = (v1, per_field)
            print(f"compression={tag:5s} shuffle={str(shuffle):5s} "
                  f"packed (v1): {v1:10,.0f} ex/s   per-field: {per_field:10,.0f} ex/s   "
                  f"packed/per-field: {v1 / per_field:5.2f}x")
            if shuffle:
                for name, option in (("parallel_reads=AUTOTUNE", {"parallel_reads":
                                                                   tf.data.AUTOTUNE}),
                                     ("shuffle_group=1", {"shuffle_group": 1})):
                    other = examples_per_second(dataset_lib.make_dataset(
                        packed, args.batch_size, shuffle=True, seed=0, **option),
                        args.rows, args.epochs)
                    print(f"compression={tag:5s} shuffle=True  packed, {name}: "
                          f"{other:10,.0f} ex/s   default/this: {v1 / other:5.2f}x")
        check = verify_seconds(packed)
        epoch = args.rows / results[(tag, False)][0]
        print(f"compression={tag:5s} shard check (once per process): {check:6.2f} s = "
              f"{check / epoch:4.2f} of one epoch in input order ({epoch:6.2f} s)")
    return results


def verify_seconds(directory: str) -> float:
    """Seconds of the shard check of a fresh process: read and count every shard."""
    metadata = Metadata.load(directory)
    dataset_lib.clear_verified()  # as in a new process
    start = time.perf_counter()
    dataset_lib.verify_shards(metadata.files("train", directory), metadata.compression,
                              dataset_lib.expected_records(directory, "train"))
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
