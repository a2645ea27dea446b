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
from typing import Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from pwiser_tf import fileio
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import (CATEGORICAL_KEY, GROUP_KEY, METADATA_FILE,
                                        NUMERICAL_KEY, Metadata, MetadataError, Schema)
# the shard checks, at their old import path too
from pwiser_tf.pipelines.shards import (READ_BUFFER_BYTES, ShardError, clear_verified,
                                        expected_records, verify_shards, verify_split,
                                        verify_values)

MV_PAD_ID = -1       # padding of `mv_<field>` ids
MV_PAD_VALUE = 0.0   # padding of `mv_<field>_values`
DEFAULT_SHUFFLE_BUFFER = 100_000
DEFAULT_SHUFFLE_GROUP = 16   # records shuffled together; 1 shuffles single records
DEFAULT_CYCLE_LENGTH = 8
READ_AHEAD_RECORDS = 65_536
INTERLEAVE_BLOCK = DEFAULT_SHUFFLE_GROUP  # consecutive records taken from one shard


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

    `labels` holds float32 `click`, `conversion` (and `intent` where the data has it)
    and, for data converted with its group column, int64 `group` (the search id of
    AliExpress, the user id of Ali-CCP): the key of the group AUC. Models read the
    labels they know by name; the features are the same with or without a group.

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
            compression = fileio.compression_of(files)
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
            compression = fileio.compression_of(files)
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
    (ids) and `MV_PAD_VALUE` (values); labels become float32 `[B]`. Where the
    schema has a group column (`Schema.group_source`), `labels["group"]` holds it,
    int64 `[B]`: a key for the group AUC, never a model feature. With
    `with_labels=False` (serving) the records need no labels (nor group) and
    `labels` is empty.

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
        if self.with_labels and self.schema.group_column:  # a key, not a feature
            labels[GROUP_KEY] = parsed.pop(self.schema.group_column)
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


__all__ = ["make_dataset", "record_batches", "match_patterns", "Parser", "ShardError",
           "verify_shards", "verify_split", "verify_values", "expected_records",
           "clear_verified", "MV_PAD_ID", "MV_PAD_VALUE"]
