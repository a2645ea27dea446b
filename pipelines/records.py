"""Serialized `tf.train.Example` records of layout v1, encoded with numpy, and shard files.

Building one `tf.train.Example` per row in Python costs about 250 us; the layout
is fixed, so `ExampleEncoder` writes the protobuf wire format for a whole chunk
at once. Every piece of a record (tags, length prefixes, varint ids, raw float
bytes) is laid out at a fixed column of one padded `uint8` matrix with a mask of
the bytes in use; one boolean compress of that matrix yields all records back
to back. Each record is the message protobuf's own serializer writes, byte for
byte up to the order of the map entries (tests parse them back with
`tf.io.parse_example` and compare them with `tf.train.Example`).

Example:

>>> import numpy as np
>>> from pwiser_tf.pipelines.schema import Field, Schema
>>> schema = Schema("toy", categorical=(Field("a", 5), Field("b", 300)), numerical=("x",))
>>> data, offsets = ExampleEncoder(schema).encode({
...     "categorical": np.array([[1, 200]]), "numerical": np.array([[0.5]], np.float32),
...     "click": np.array([1]), "conversion": np.array([0])})
>>> import tensorflow as tf
>>> tf.train.Example.FromString(data[offsets[0]:offsets[1]]).features.feature[
...     "categorical"].int64_list.value
[1, 200]
"""
import os
from typing import Dict, List, Tuple, Union

import numpy as np
import tensorflow as tf

from pwiser_tf import fileio
from pwiser_tf.pipelines.schema import Schema

PARTIAL_SUFFIX = ".partial"

# wire tags: field 1/2/3, length-delimited
_TAG1, _TAG2, _TAG3 = 0x0A, 0x12, 0x1A
_FLOAT_LIST, _INT64_LIST = _TAG2, _TAG3   # Feature.float_list = 2, Feature.int64_list = 3

Ragged = Tuple[np.ndarray, np.ndarray]   # (flat values, lengths [n])
Column = Union[np.ndarray, Ragged]


class _Pieces:
    """Columns of a padded byte matrix `[n, width]` and the mask of used bytes."""

    def __init__(self, n: int):
        self.n = n
        self.bytes: List[np.ndarray] = []
        self.masks: List[np.ndarray] = []

    def constant(self, data: bytes, rows: np.ndarray = None) -> None:
        """`data` on every row, or only where the boolean `rows` is set."""
        row = np.frombuffer(data, np.uint8)
        self.bytes.append(np.broadcast_to(row, (self.n, len(row))))
        mask = np.True_ if rows is None else rows[:, None]
        self.masks.append(np.broadcast_to(mask, (self.n, len(row))))

    def dense(self, matrix: np.ndarray) -> None:
        self.bytes.append(matrix)
        self.masks.append(np.broadcast_to(np.True_, matrix.shape))

    def varints(self, values: np.ndarray, present: np.ndarray = None) -> np.ndarray:
        """Appends varints of `values` `[n, k]` (where `present`); returns bytes per row."""
        data, mask = varint_matrix(values)
        if present is not None:
            mask &= present[:, :, None]
        self.bytes.append(data.reshape(self.n, -1))
        self.masks.append(mask.reshape(self.n, -1))
        return mask.reshape(self.n, -1).sum(axis=1)

    def join(self) -> Tuple[bytes, np.ndarray]:
        data = np.concatenate(self.bytes, axis=1)
        mask = np.concatenate(self.masks, axis=1)
        offsets = np.zeros(self.n + 1, np.int64)
        np.cumsum(mask.sum(axis=1), out=offsets[1:])
        return data[mask].tobytes(), offsets


def varint_matrix(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Base-128 varints of int64 `values` `[...]`: bytes `[..., W]` and their mask."""
    v = np.asarray(values).astype(np.int64).view(np.uint64)
    top = int(v.max()) if v.size else 0
    width = max(1, (top.bit_length() + 6) // 7)
    shifts = np.arange(0, 7 * width, 7, dtype=np.uint64)
    groups = (v[..., None] >> shifts) & np.uint64(0x7F)
    # a value needs byte j while anything is left at or above bit 7j
    used = np.ones(groups.shape, bool)
    used[..., 1:] = (v[..., None] >> shifts[1:]) != 0
    more = np.zeros(groups.shape, bool)
    more[..., :-1] = used[..., 1:]
    data = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    return data, used


def _varint_len(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.int64)
    out = np.ones(v.shape, np.int64)
    for bits in range(7, 63, 7):
        out += v >= (1 << bits)
    return out


class ExampleEncoder:
    """Chunks of columns -> serialized `tf.train.Example`s in the schema's layout.

    `encode(columns)` takes `{feature key: array}`: `categorical` int64 `[n, C]`,
    `numerical` float32 `[n, N]`, each label int64 `[n]`, and each multi-valued key
    (`mv_<field>`, `mv_<field>_values`) as `(flat values, lengths [n])`. It returns
    the records back to back and their `n + 1` offsets.
    """

    def __init__(self, schema: Schema):
        self.schema = schema
        self.keys = sorted(schema.feature_spec())
        spec = schema.feature_spec()
        self.kinds = {key: ("float" if spec[key].dtype == tf.float32 else "int")
                      for key in self.keys}

    def encode(self, columns: Dict[str, Column]) -> Tuple[bytes, np.ndarray]:
        n = len(columns["click"])
        # payload bytes per row of each feature, then the length prefixes around it
        pieces, plans = [], []  # (kind, fill, payload bytes per row) per key
        for key in self.keys:
            pieces.append(self._payload(key, columns[key], n))
        entry_lengths = []
        for key, (_, _, payload) in zip(self.keys, pieces):
            # protobuf leaves out an empty packed field; so do we
            list_len = np.where(payload > 0, 1 + _varint_len(payload) + payload, 0)
            feature_len = 1 + _varint_len(list_len) + list_len
            entry_len = 2 + len(key.encode()) + 1 + _varint_len(feature_len) + feature_len
            plans.append((payload, list_len, feature_len, entry_len))
            entry_lengths.append(1 + _varint_len(entry_len) + entry_len)
        features_len = np.sum(entry_lengths, axis=0)

        out = _Pieces(n)
        out.constant(bytes([_TAG1]))
        out.varints(features_len[:, None])
        for key, (kind, fill, _), (payload, list_len, feature_len, entry_len) in zip(
                self.keys, pieces, plans):
            out.constant(bytes([_TAG1]))
            out.varints(entry_len[:, None])
            name = key.encode()
            out.constant(bytes([_TAG1, len(name)]) + name + bytes([_TAG2]))
            out.varints(feature_len[:, None])
            out.constant(bytes([_FLOAT_LIST if kind == "float" else _INT64_LIST]))
            out.varints(list_len[:, None])
            nonempty = payload > 0
            out.constant(bytes([_TAG1]), nonempty)
            out.varints(payload[:, None], nonempty[:, None])
            fill(out)
        return out.join()

    def _payload(self, key: str, column: Column, n: int):
        """(kind, a function appending the packed values, packed bytes per row)."""
        float_kind = self.kinds[key] == "float"
        if isinstance(column, tuple):  # ragged: pad to the longest row of the chunk
            values, lengths = column
            lengths = np.asarray(lengths, np.int64)
            width = int(lengths.max()) if n else 0
            present = np.arange(width)[None, :] < lengths[:, None]
            matrix = np.zeros((n, width), np.float32 if float_kind else np.int64)
            matrix[present] = values
        else:
            matrix = np.asarray(column)
            matrix = matrix.reshape(n, -1)
            present = None
        if float_kind:
            raw = np.ascontiguousarray(matrix, dtype="<f4").view(np.uint8)
            if present is None:
                return "float", lambda out: out.dense(raw), np.full(n, raw.shape[1], np.int64)
            mask = np.repeat(present, 4, axis=1)

            def fill(out):
                out.bytes.append(raw)
                out.masks.append(mask)
            return "float", fill, 4 * lengths
        data, used = varint_matrix(matrix)
        if present is not None:
            used &= present[:, :, None]
        sizes = used.reshape(n, -1).sum(axis=1)

        def fill(out):
            out.bytes.append(data.reshape(n, -1))
            out.masks.append(used.reshape(n, -1))
        return "int", fill, sizes


class ShardWriter:
    """Writes one split as shards of at most `records_per_shard` records.

    Shards are written as `{split}-{i:05d}.tfrecord.partial` and renamed to
    `{split}-{i:05d}-of-{n:05d}.tfrecord[.gz]` by `close()` once the split is
    complete, so no file that a crash leaves behind has a shard's name. The
    directory may be on any filesystem `tf.io.gfile` knows. `shard_records` holds
    the records of each shard.
    """

    def __init__(self, directory: str, split: str, *, compression: str = "",
                 records_per_shard: int = 500_000):
        self.directory, self.split = directory, split
        self.compression = compression
        if records_per_shard < 1:  # (convert refuses it first, naming the argument)
            raise ValueError(f"records_per_shard must be at least 1, got {records_per_shard}")
        self.records_per_shard = int(records_per_shard)
        self._partials: List[str] = []
        self._writer = None
        self._in_shard = 0
        self.records = 0
        self.shard_records: List[int] = []

    def _open(self) -> None:
        path = os.path.join(self.directory,
                            f"{self.split}-{len(self._partials):05d}.tfrecord{PARTIAL_SUFFIX}")
        self._partials.append(path)
        self.shard_records.append(0)
        # zlib level 1: about twice as fast as the default level 6, and TFRecords of
        # packed ids compress nearly as well (docs/benchmarks.md).
        options = tf.io.TFRecordOptions(compression_type=self.compression,
                                        compression_level=1) if self.compression else None
        self._writer = tf.io.TFRecordWriter(path, options=options)
        self._in_shard = 0

    def write(self, data: bytes, offsets: np.ndarray) -> None:
        start = 0
        bounds = offsets.tolist()
        n = len(bounds) - 1
        while start < n:
            if self._writer is None or self._in_shard >= self.records_per_shard:
                self._close_current()
                self._open()
            stop = min(n, start + self.records_per_shard - self._in_shard)
            write = self._writer.write
            for a, b in zip(bounds[start:stop], bounds[start + 1:stop + 1]):
                write(data[a:b])
            self._in_shard += stop - start
            self.shard_records[-1] += stop - start
            self.records += stop - start
            start = stop

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> List[str]:
        """Finishes the split; returns the final shard names (relative to the directory)."""
        self._close_current()
        if not self._partials:  # an empty split still gets one (empty) shard
            self._open()
            self._close_current()
        suffix = fileio.record_suffix(self.compression)
        total = len(self._partials)
        names = []
        for i, partial in enumerate(self._partials):
            name = f"{self.split}-{i:05d}-of-{total:05d}{suffix}"
            tf.io.gfile.rename(partial, os.path.join(self.directory, name), overwrite=True)
            names.append(name)
        return names

    def abort(self) -> None:
        self._close_current()
        for partial in self._partials:
            if tf.io.gfile.exists(partial):
                tf.io.gfile.remove(partial)
