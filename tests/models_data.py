"""Small in-memory CTR/CVR data for the model tests.

A latent linear rule over the features sets each row's click and conversion
probabilities, so AUC is learnable in a few hundred steps. `write_converted`
writes them as a converted directory for `make_dataset`; `toy_dataset` gives
in-memory batches with the structure `make_dataset` yields: `(features, labels)` with `categorical`
int64 `[B, C]`, `numerical` float32 `[B, N]`, `mv_<field>` int64 `[B, L]`
padded with -1 (and its `_values`), and float32 labels.
"""
import os

import numpy as np
import tensorflow as tf

from pwiser_tf.pipelines.schema import Field, Metadata, Schema, Split

VOCAB = 20
MV_LENGTH = 4


def toy_schema() -> Schema:
    return Schema(
        dataset="toy",
        categorical=tuple(Field(f"c{i}", VOCAB) for i in range(4)),
        numerical=tuple(f"n{i}" for i in range(5)),
        multi_valued=(Field("tags", VOCAB, has_values=True),),
        labels=("click", "conversion", "intent"))


def toy_arrays(rows: int, seed: int = 0):
    """Features and labels as numpy arrays (unseen ids >= VOCAB occur too)."""
    rng = np.random.default_rng(seed)
    weights = np.random.default_rng(1234).normal(size=(VOCAB + 8,))
    categorical = rng.integers(0, VOCAB + 2, size=(rows, 4))          # a few OOV ids
    numerical = rng.normal(size=(rows, 5)).astype(np.float32)
    lengths = rng.integers(0, MV_LENGTH + 1, size=rows)
    tags = rng.integers(0, VOCAB, size=(rows, MV_LENGTH))
    present = np.arange(MV_LENGTH)[None, :] < lengths[:, None]
    tags = np.where(present, tags, -1)
    values = np.where(present, rng.uniform(0.5, 1.5, size=tags.shape), 0.0)
    tag_score = np.where(present, weights[np.maximum(tags, 0)] * values, 0).sum(1)
    score = (weights[categorical[:, 0]] + weights[categorical[:, 1]] + numerical[:, 0]
             + 0.5 * tag_score)
    click = rng.uniform(size=rows) < 1 / (1 + np.exp(-(score - 1.0)))
    intent = rng.uniform(size=rows) < 1 / (1 + np.exp(-(2 * numerical[:, 1] + score - 2)))
    conversion = click & intent
    features = {"categorical": categorical.astype(np.int64), "numerical": numerical,
                "mv_tags": tags.astype(np.int64), "mv_tags_values": values.astype(np.float32)}
    labels = {"click": click.astype(np.float32), "conversion": conversion.astype(np.float32),
              "intent": intent.astype(np.float32)}
    return features, labels


def toy_dataset(rows: int, batch_size: int, seed: int = 0, shuffle: bool = False):
    features, labels = toy_arrays(rows, seed)
    ds = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        ds = ds.shuffle(rows, seed=seed)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def serialize(features, row: int, labels=None) -> bytes:
    """Row `row` as a serialized `tf.train.Example` in the pipelines' layout."""
    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

    def floats(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(v)))

    present = features["mv_tags"][row] >= 0
    feature = {
        "categorical": ints(features["categorical"][row]),
        "numerical": floats(features["numerical"][row]),
        "mv_tags": ints(features["mv_tags"][row][present]),
        "mv_tags_values": floats(features["mv_tags_values"][row][present]),
    }
    for name, value in (labels or {}).items():
        feature[name] = ints([int(value[row])])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_converted(directory: str, splits, shards: int = 2) -> Metadata:
    """A converted directory (shards + metadata.json) of `{split: rows}` toy rows."""
    schema = toy_schema()
    metadata = Metadata(schema=schema, splits={})
    for seed, (split, rows) in enumerate(splits.items()):
        features, labels = toy_arrays(rows, seed)
        names = []
        for shard in range(shards):
            name = f"{split}-{shard:05d}-of-{shards:05d}.tfrecord"
            with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
                for row in range(shard, rows, shards):
                    writer.write(serialize(features, row, labels))
            names.append(name)
        metadata.splits[split] = Split(files=names, counts={"rows": rows})
    metadata.save(directory)
    return metadata
