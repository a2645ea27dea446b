"""What TFX's CsvExampleGen and SchemaGen write, for the tests (TFX does not install here).

`csv_example_gen` reads a processed CSV and writes one `tf.train.Example` per
row with one feature per column, typed per column over the whole file as
CsvExampleGen infers it (int64 when every value is an integer, else float,
else bytes), GZIP-compressed into `Split-<name>/data_tfrecord-00000-of-00001.gz`.
`schema_gen` writes `schema.pbtxt` (a `tensorflow_metadata` Schema) the way
SchemaGen would for those records: every column required, one value each,
int domains with min and max for the categorical columns.
"""
import csv
import os
from typing import Dict, List, Sequence

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2


def _kind(values: Sequence[str]) -> str:
    for kind, cast in (("int", int), ("float", float)):
        try:
            for value in values:
                if value != "":
                    cast(value)
            return kind
        except ValueError:
            continue
    return "bytes"


def read_csv(path: str):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    kinds = {name: _kind([row[j] for row in rows]) for j, name in enumerate(header)}
    return header, rows, kinds


def example(header: List[str], row: List[str], kinds: Dict[str, str]) -> bytes:
    features = {}
    for name, value in zip(header, row):
        if value == "":
            continue  # an empty cell: no value
        kind = kinds[name]
        if kind == "int":
            features[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
        elif kind == "float":
            features[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        else:
            features[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def csv_example_gen(splits: Dict[str, List[List[str]]], header: List[str],
                    kinds: Dict[str, str], output: str) -> Dict[str, str]:
    """Writes `{split: rows}`; returns `{split: the split's file pattern}`."""
    patterns = {}
    for split, rows in splits.items():
        folder = os.path.join(output, f"Split-{split}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for row in rows:
                writer.write(example(header, row, kinds))
        patterns[split] = os.path.join(folder, "*")
    return patterns


def schema_gen(header: List[str], rows: List[List[str]], kinds: Dict[str, str],
               categorical: Sequence[str], path: str) -> str:
    schema = schema_pb2.Schema()
    for j, name in enumerate(header):
        feature = schema.feature.add(name=name)
        feature.type = {"int": schema_pb2.INT, "float": schema_pb2.FLOAT}.get(
            kinds[name], schema_pb2.BYTES)
        feature.presence.min_fraction = 1.0
        feature.presence.min_count = 1
        feature.shape.dim.add(size=1)
        if name in categorical:
            values = [int(row[j]) for row in rows]
            feature.int_domain.min = min(values)
            feature.int_domain.max = max(values)
            feature.int_domain.is_categorical = True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(schema))
    return path
