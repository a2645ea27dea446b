"""`make_dataset`: a converted dataset streamed with tf.data, ready for the models.

When training, the pipeline interleaves several shards and shuffles groups of
records; it batches *before* parsing (one vectorised `tf.io.parse_example` per
batch), pads the multi-valued fields to dense tensors and prefetches. No Python
runs per example. `docs/benchmarks.md` has the measurements behind each choice.

Example:

>>> from pwiser_tf.pipelines import make_dataset
>>> ds = make_dataset("data/aliexpress_nl", 2048, split="train", shuffle=True,
...                   seed=0)                                  # doctest: +SKIP
>>> features, labels = next(iter(ds))                          # doctest: +SKIP
>>> features["categorical"].shape, labels["click"].dtype       # doctest: +SKIP
(TensorShape([2048, 16]), tf.float32)
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import (CATEGORICAL_KEY, METADATA_FILE, NUMERICAL_KEY,
                                        Metadata, MetadataError, Schema)

MV_PAD_ID = -1       # padding of `mv_<field>` ids
MV_PAD_VALUE = 0.0   # padding of `mv_<field>_values`
DEFAULT_SHUFFLE_BUFFER = 100_000
DEFAULT_SHUFFLE_GROUP = 16   # records shuffled together; 1 shuffles single records
DEFAULT_CYCLE_LENGTH = 8
READ_BUFFER_BYTES = 8 << 20
READ_AHEAD_RECORDS = 65_536
INTERLEAVE_BLOCK = DEFAULT_SHUFFLE_GROUP  # consecutive records taken from one shard
VALUES_SAMPLE = 64  # records of each shard whose multi-valued values are checked


class ShardError(InputError):
    """A shard is missing, truncated or corrupt."""


def make_dataset(path: Union[str, Sequence[str]], batch_size: int, *, split: str = "train",
                 schema: Optional[Schema] = None, compression: Optional[str] = None,
                 shuffle: bool = False, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                 shuffle_group: int = DEFAULT_SHUFFLE_GROUP,
                 repeat: Union[bool, int] = False, deterministic: bool = True,
                 drop_remainder: bool = False,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 multi_valued_length: Optional[int] = None, seed: Optional[int] = None,
                 cycle_length: int = DEFAULT_CYCLE_LENGTH,
                 parallel_reads: Optional[int] = None, prefetch: int = tf.data.AUTOTUNE,
                 verify: bool = True) -> tf.data.Dataset:
    """A `tf.data.Dataset` of `(features, labels)` batches (see docs/architecture.md).

    Args:
      path: a converted directory (its `metadata.json` names the shards of each
        split) or a file pattern such as `"data/train-*.tfrecord.gz"`; a pattern
        takes `schema` from the argument or from `metadata.json` beside the files.
        A list of patterns reads the files of all of them (as TFX passes them).
      batch_size: the global batch size; with `input_context` each pipeline yields
        `input_context.get_per_replica_batch_size(batch_size)` examples per batch.
      split: `train`, `validation` or `test` (directories only).
      schema: the schema of pattern input; defaults to the directory's.
      compression: `"GZIP"` or `""`; defaults to the metadata's (a pattern: GZIP
        when the files end in `.gz`).
      shuffle: shuffle the file order and the records (`shuffle_buffer` records
        in groups of `shuffle_group` consecutive records of one shard), reading
        `cycle_length` shards at a time; without it records come in input order
        (shards one after another, read ahead), so outputs line up with it.
      repeat: `True` repeats forever, an int that many epochs, `False` once.
      deterministic: keep the seed's order when shuffling; `False` lets
        parallel reads and parsing overtake each other.
      drop_remainder: drop the last partial batch, so every shape is static.
      input_context: a `tf.distribute.InputContext`; each input pipeline reads a
        disjoint part (whole shards when there are enough, else every n-th record).
      multi_valued_length: pad (or cut) multi-valued fields to this length, for
        static shapes; `None` pads to the longest list of each batch.
      seed: seed of the shuffles.
      cycle_length: shards read at the same time when shuffling.
      parallel_reads: threads reading those shards; `None` reads them in turn
        in one thread, which is fastest from a local disk (docs/benchmarks.md),
        `tf.data.AUTOTUNE` or a number helps on remote storage.
      prefetch: batches prepared ahead (`tf.data.AUTOTUNE` by default).
      verify: read every shard once, when first used in this process, so that a
        truncated, corrupt, cut or emptied shard fails here with its name instead of
        training or scoring on fewer records: the record counts of a directory, or of
        files that the `metadata.json` beside them lists, are checked against it; and
        the first records of each shard must hold a value per id of every multi-valued
        field that the schema gives values.
    """
    if batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    if shuffle_group <= 0:
        raise InputError(f"shuffle_group must be positive, got {shuffle_group}")
    if multi_valued_length is not None and multi_valued_length <= 0:
        raise InputError(f"multi_valued_length must be positive, got {multi_valued_length}")
    files, schema, compression = resolve(path, split, schema, compression)
    if verify:
        verify_shards(files, compression, expected_records(path, split, files))
        verify_values(files, compression, schema)
    batches = record_batches(
        files, compression, batch_size, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
        shuffle_group=shuffle_group, repeat=repeat, deterministic=deterministic,
        drop_remainder=drop_remainder, input_context=input_context, seed=seed,
        cycle_length=cycle_length, parallel_reads=parallel_reads)
    parse = Parser(schema, multi_valued_length)
    batches = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=deterministic)
    return batches.prefetch(prefetch)


def record_batches(files: Sequence[str], compression: str, batch_size: int, *,
                   shuffle: bool = False, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                   shuffle_group: int = DEFAULT_SHUFFLE_GROUP,
                   repeat: Union[bool, int] = False, deterministic: bool = True,
                   drop_remainder: bool = False,
                   input_context: Optional[tf.distribute.InputContext] = None,
                   seed: Optional[int] = None, cycle_length: int = DEFAULT_CYCLE_LENGTH,
                   parallel_reads: Optional[int] = None) -> tf.data.Dataset:
    """Batches of serialized records, before parsing (`make_dataset`'s arguments)."""
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    records = read_records(files, compression, shuffle=shuffle, seed=seed,
                           deterministic=deterministic, input_context=input_context,
                           cycle_length=cycle_length, parallel_reads=parallel_reads)
    if not shuffle:
        return _repeat(records, repeat).batch(batch_size, drop_remainder=drop_remainder)
    # Shuffling groups of consecutive records costs one step per group, not per
    # record (docs/benchmarks.md); `rebatch` then cuts exact batches from them.
    groups = records.batch(shuffle_group)
    groups = groups.shuffle(max(1, shuffle_buffer // shuffle_group), seed=seed,
                            reshuffle_each_iteration=True)
    return _repeat(groups, repeat).rebatch(batch_size, drop_remainder=drop_remainder)


def _repeat(dataset: tf.data.Dataset, repeat: Union[bool, int]) -> tf.data.Dataset:
    if repeat is True:
        return dataset.repeat()
    return dataset.repeat(int(repeat)) if repeat else dataset


def resolve(path: Union[str, Sequence[str]], split: str, schema: Optional[Schema],
            compression: Optional[str]) -> Tuple[List[str], Schema, str]:
    """The shard files, schema and compression that `path` names (local or remote)."""
    gfile = tf.io.gfile
    if not isinstance(path, (str, os.PathLike)):  # several patterns
        files = match_patterns(path)
        if schema is None:
            raise MetadataError(f"{list(path)}: give schema=... for a list of patterns")
        if compression is None:
            compression = "GZIP" if all(f.endswith(".gz") for f in files) else ""
    elif gfile.isdir(path):
        metadata = Metadata.load(path)
        files = metadata.files(split, path)
        schema = schema or metadata.schema
        compression = metadata.compression if compression is None else compression
    else:
        files = sorted(tf.io.gfile.glob(path))
        if not files:
            raise InputError(f"{path}: no such directory and no file matches the pattern")
        if schema is None:
            directory = os.path.dirname(path) or "."
            if not gfile.exists(os.path.join(directory, METADATA_FILE)):
                raise MetadataError(f"{path}: give schema=... or put the dataset's "
                                    f"{METADATA_FILE} in {directory}")
            schema = Metadata.load(directory).schema
        if compression is None:
            compression = "GZIP" if all(f.endswith(".gz") for f in files) else ""
    if compression not in ("", "GZIP"):
        raise InputError(f"compression must be 'GZIP' or '', got {compression!r}")
    if not files:
        raise InputError(f"{path}: split {split!r} has no shards")
    for name in files:
        if not gfile.exists(name) or gfile.isdir(name):
            raise ShardError(f"{name}: shard is missing")
    return files, schema, compression


def match_patterns(patterns: Sequence[str]) -> List[str]:
    """The files of every pattern, each pattern's sorted, without repeats."""
    files, seen = [], set()
    for pattern in patterns:
        found = sorted(tf.io.gfile.glob(os.fspath(pattern)))
        if not found:
            raise InputError(f"{pattern}: no file matches the pattern")
        files += [name for name in found if name not in seen]
        seen.update(found)
    if not files:
        raise InputError("no file pattern given")
    return files


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


def read_records(files: Sequence[str], compression: str, *, shuffle: bool,
                 seed: Optional[int], deterministic: bool,
                 input_context: Optional[tf.distribute.InputContext],
                 cycle_length: int, parallel_reads: Optional[int] = None
                 ) -> tf.data.Dataset:
    """Serialized records of `files`, interleaved, this input pipeline's part only."""
    pipelines = input_context.num_input_pipelines if input_context else 1
    index = input_context.input_pipeline_id if input_context else 0
    by_file = pipelines > 1 and len(files) >= pipelines
    by_record = pipelines > 1 and not by_file
    if by_file:  # whole shards per pipeline: no pipeline reads another's bytes
        files = list(files)[index::pipelines]
    if by_record:  # every pipeline must see the same record order before `shard`
        deterministic = True

    def read(name):
        return tf.data.TFRecordDataset(name, compression_type=compression,
                                       buffer_size=READ_BUFFER_BYTES)

    names = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle:
        if not by_record:  # (the records are shuffled after sharding anyway)
            names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        records = names.interleave(read, cycle_length=max(1, min(cycle_length, len(files))),
                                   block_length=INTERLEAVE_BLOCK,
                                   num_parallel_calls=parallel_reads,
                                   deterministic=deterministic if parallel_reads else None)
    else:  # input order: one shard after another, read ahead
        records = names.flat_map(read).prefetch(READ_AHEAD_RECORDS)
    if by_record:
        records = records.shard(pipelines, index)
    return records


class Parser:
    """Parses a batch of serialized examples into `(features, labels)`.

    Multi-valued fields become dense `[B, L]` tensors padded with `MV_PAD_ID`
    (ids) and `MV_PAD_VALUE` (values); labels become float32 `[B]`. With
    `with_labels=False` (serving) the records need no labels and `labels` is empty.

    Records in the `columns` layout (one feature per column, as `CsvExampleGen`
    writes them) are packed into the same `categorical` `[B, C]` and `numerical`
    `[B, N]` tensors, and their `conversion` label becomes click AND conversion
    (the CTCVR label the converter writes), so the model sees the same batch.
    """

    def __init__(self, schema: Schema, multi_valued_length: Optional[int] = None,
                 with_labels: bool = True):
        self.schema = schema
        self.multi_valued_length = multi_valued_length
        self.with_labels = with_labels
        self.spec = schema.feature_spec(with_labels=with_labels)

    def __call__(self, serialized: tf.Tensor) -> Tuple[Dict[str, tf.Tensor],
                                                       Dict[str, tf.Tensor]]:
        parsed = tf.io.parse_example(serialized, self.spec)
        labels = {name: tf.cast(parsed.pop(self.schema.label_column(name)), tf.float32)
                  for name in (self.schema.labels if self.with_labels else ())}
        if self.schema.layout == "columns":
            parsed = self._pack(parsed)
            if "conversion" in labels:
                labels["conversion"] = labels["conversion"] * labels["click"]
        batch = serialized.shape[0]
        for field in self.schema.multi_valued:
            parsed[field.key] = self._dense(parsed[field.key], MV_PAD_ID, batch)
            if field.has_values:
                parsed[field.values_key] = self._dense(parsed[field.values_key],
                                                       MV_PAD_VALUE, batch)
        return parsed, labels

    def _pack(self, columns: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """One-feature-per-column tensors -> the packed `categorical` / `numerical`."""
        schema = self.schema
        packed = {}
        if schema.categorical:
            packed[CATEGORICAL_KEY] = tf.stack(
                [columns.pop(f.name) for f in schema.categorical], axis=1)
        if schema.numerical:
            packed[NUMERICAL_KEY] = tf.stack(
                [tf.cast(columns.pop(name), tf.float32) for name in schema.numerical], axis=1)
        packed.update(columns)  # the multi-valued fields keep their keys
        return packed

    def _dense(self, ragged: tf.RaggedTensor, pad, batch) -> tf.Tensor:
        length = self.multi_valued_length
        dense = ragged.to_tensor(default_value=tf.cast(pad, ragged.dtype),
                                 shape=None if length is None else [batch, length])
        dense.set_shape([batch, length])
        return dense


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
    return (_absolute(name), compression, stat.length, stat.mtime_nsec)


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


def _absolute(name: str) -> str:
    return os.path.abspath(name) if "://" not in name else name


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


__all__ = ["make_dataset", "record_batches", "match_patterns", "Parser", "ShardError", "verify_shards",
           "verify_split", "verify_values", "expected_records", "MV_PAD_ID", "MV_PAD_VALUE"]
