"""Shards checked before they are read: none missing, truncated, corrupt, cut or emptied,
and the values of valued multi-valued fields present.

`make_dataset` (and `pwiser-tf evaluate`, through `verify_split`) reads every shard
once per process before using it: the record counts of a converted directory, or of
files that the `metadata.json` beside them lists, are checked against it, and the
first records of each shard must hold a value per id of every multi-valued field
that the schema gives values. A shard that passed stays trusted for this process
until its size or modification time changes.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from pwiser_tf import fileio
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata, Schema

READ_BUFFER_BYTES = 8 << 20
VALUES_SAMPLE = 64  # records of each shard whose multi-valued values are checked


class ShardError(InputError):
    """A shard is missing, truncated or corrupt."""


def expected_records(path, split: str,
                     files: Optional[Sequence[str]] = None) -> Optional[List[Optional[int]]]:
    """The records of each shard as metadata.json lists them. For a converted directory,
    of its split's shards (`[n]`, the split's total, for metadata that predates per-shard
    counts). For a file pattern or a list of them, of each of the matched `files` that the
    metadata.json in its folder lists (None for one it does not); None when it lists none."""
    if not isinstance(path, (str, os.PathLike)) or not tf.io.gfile.isdir(path):
        return _listed_records(files) if files else None
    entry = Metadata.load(path).splits.get(split)
    if entry is None:
        return None
    if entry.records and len(entry.records) == len(entry.files):
        return list(entry.records)
    return [int(entry.counts["rows"])] if "rows" in entry.counts else None


def _listed_records(files: Sequence[str]) -> Optional[List[Optional[int]]]:
    """Per file: its records as the metadata.json in its folder lists them, else None
    (a pattern inside a converted directory is checked as the directory would be)."""
    listed: Dict[str, Dict[str, int]] = {}
    out = []
    for name in files:
        folder = os.path.dirname(name) or "."
        if folder not in listed:
            listed[folder] = {}
            if tf.io.gfile.exists(os.path.join(folder, METADATA_FILE)):
                for entry in Metadata.load(folder).splits.values():
                    if entry.records and len(entry.records) == len(entry.files):
                        listed[folder].update(zip(entry.files, entry.records))
        out.append(listed[folder].get(os.path.basename(name)))
    return out if any(n is not None for n in out) else None


def verify_split(path: str, split: str) -> List[str]:
    """`verify_shards` and `verify_values` of a converted directory's split; returns
    its shard files."""
    metadata = Metadata.load(path)
    files = metadata.files(split, path)
    for name in files:
        if not tf.io.gfile.exists(name):
            raise ShardError(f"{name}: shard listed in {path}/{METADATA_FILE} is missing")
    verify_shards(files, metadata.compression, expected_records(path, split))
    verify_values(files, metadata.compression, metadata.schema)
    return files


_VERIFIED: Dict[tuple, int] = {}  # (shard, compression, size, mtime) -> records
_VERIFIED_LOCK = threading.Lock()
_VALUES_VERIFIED = set()  # (shard, compression, size, mtime, valued fields)


def verify_shards(files: Sequence[str], compression: str,
                  expected: Optional[Sequence[int]] = None) -> List[int]:
    """Reads each shard once (C++, in parallel); a bad one raises `ShardError`.

    Returns the records of each shard. `expected` holds what each shard should
    hold (one entry per shard), or one total for all of them; a shard cut at a
    record boundary or emptied then fails with its name. A shard that passed stays
    trusted (and its count remembered) for this process until its size or
    modification time changes, so the check costs one read per shard and process.
    """
    keys = [_shard_key(name, compression) for name in files]
    pending = [(name, k) for name, k in zip(files, keys) if k not in _VERIFIED]
    with ThreadPoolExecutor(max_workers=min(4, max(1, len(pending)))) as pool:
        results = list(pool.map(lambda item: _check_shard(item[0], compression), pending))
    for (name, _), (problem, _) in zip(pending, results):
        if problem:
            raise ShardError(f"{name}: truncated or corrupt shard ({problem}); "
                             f"convert the data again")
    with _VERIFIED_LOCK:
        _VERIFIED.update((k, count) for (_, k), (_, count) in zip(pending, results))
        counts = [_VERIFIED[k] for k in keys]
    _compare_counts(files, counts, expected)
    return counts


def _shard_key(name: str, compression: str) -> tuple:
    stat = tf.io.gfile.stat(name)
    return (fileio.absolute(name), compression, stat.length, stat.mtime_nsec)


def verify_values(files: Sequence[str], compression: str, schema: Schema) -> None:
    """Refuses shards whose first records lack the values of a multi-valued field that
    the schema gives values (`mv_<field>_values`): read without them, its ids would be
    weighed wrongly and silently. Each shard is checked once per process (until it
    changes)."""
    fields = tuple(field for field in schema.multi_valued if field.has_values)
    if not fields:
        return
    for name in files:
        key = _shard_key(name, compression) + (fields,)
        if key in _VALUES_VERIFIED:
            continue
        problem = _values_problem(name, compression, fields)
        if problem:
            raise ShardError(f"{name}: {problem}; the schema gives the field a value per id: "
                             f"convert the data again")
        _VALUES_VERIFIED.add(key)


def _values_problem(name: str, compression: str, fields) -> str:
    """'' when the first records hold as many values as ids of each field, else why not."""
    spec = {}
    for field in fields:
        spec[field.key] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)
        spec[field.values_key] = tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64)
    records = tf.data.TFRecordDataset(name, compression_type=compression)
    try:
        for batch in records.take(VALUES_SAMPLE).batch(VALUES_SAMPLE):
            parsed = tf.io.parse_example(batch, spec)
            for field in fields:
                ids = parsed[field.key].row_lengths().numpy()
                values = parsed[field.values_key].row_lengths().numpy()
                for k in np.flatnonzero(ids != values)[:1]:
                    have = f"{values[k]} values" if values[k] else "no values"
                    return (f"record {k + 1} has {ids[k]} ids in {field.key!r} but {have} "
                            f"in {field.values_key!r}")
    except tf.errors.OpError as err:
        return f"records do not parse as the schema says ({err.message.splitlines()[0]})"
    return ""


def _compare_counts(files: Sequence[str], counts: List[int],
                    expected: Optional[Sequence[Optional[int]]]) -> None:
    if not expected:
        return
    if len(expected) == len(files):
        for name, count, want in zip(files, counts, expected):
            if want is not None and count != want:
                raise ShardError(f"{name}: holds {count:,} records, {METADATA_FILE} lists "
                                 f"{want:,}; the shard was cut or replaced: convert the "
                                 f"data again")
    elif sum(counts) != sum(expected):
        raise ShardError(f"{', '.join(files)}: hold {sum(counts):,} records, "
                         f"{METADATA_FILE} counts {sum(expected):,}; a shard was cut or "
                         f"replaced: convert the data again")


@tf.autograph.experimental.do_not_convert
def _count(count, _):
    return count + 1


def _check_shard(name: str, compression: str) -> Tuple[str, int]:
    """`('', records)` when the shard reads to its end, else `(TensorFlow's reason, 0)`."""
    records = tf.data.TFRecordDataset(name, compression_type=compression,
                                      buffer_size=READ_BUFFER_BYTES)
    try:
        return "", int(records.reduce(tf.constant(0, tf.int64), _count))
    except tf.errors.OpError as err:
        message = err.message.splitlines()[0]
        return message.split("}}")[-1].split("[Op:")[0].strip(), 0


def clear_verified() -> None:
    """Forgets the shards verified so far (as a new process would)."""
    with _VERIFIED_LOCK:
        _VERIFIED.clear()
        _VALUES_VERIFIED.clear()


__all__ = ["ShardError", "verify_shards", "verify_split", "verify_values", "expected_records",
           "clear_verified", "READ_BUFFER_BYTES"]
