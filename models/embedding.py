"""`FeatureEmbedding`: one embedding per field of a `Schema`, concatenated.

Every categorical field, single- or multi-valued, looks up one shared table at
its own row offset (one gather for all fields instead of one per field). Each
field reserves one extra row, its out-of-vocabulary bucket, for ids outside
`[0, vocab_size)`. The numerical block is one more field: `Dense(N -> dim)`.
Multi-valued fields arrive padded with `-1`; the padding is masked out and the
remaining ids (weighted by their values when the field has them) are pooled.
"""
from typing import Union

import tensorflow as tf

from pwiser_tf.errors import InputError
from pwiser_tf.models.layers import dense
from pwiser_tf.pipelines.schema import CATEGORICAL_KEY, NUMERICAL_KEY, Schema

POOLINGS = ("mean", "sum")


def as_schema(schema: Union[Schema, dict]) -> Schema:
    return schema if isinstance(schema, Schema) else Schema.from_dict(schema)


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class FeatureEmbedding(tf.keras.layers.Layer):
    """Embeds the features of a `Schema` into `[B, num_fields * embedding_dim]`.

    Args:
      schema: the dataset's `Schema` (or its `to_dict()`).
      embedding_dim: width of every field's embedding.
      multi_valued_pooling: `"mean"` (over the non-padded ids) or `"sum"`.
      embeddings_initializer: initializer of the shared table (default Glorot
        uniform over the whole table, as the reference implementation's Xavier).

    Example:

    >>> from pwiser_tf.pipelines.schema import Field, Schema
    >>> schema = Schema("toy", categorical=(Field("a", 5), Field("b", 3)),
    ...                 numerical=("x",), multi_valued=(Field("tags", 4),))
    >>> layer = FeatureEmbedding(schema, embedding_dim=2)
    >>> layer.num_fields
    4
    >>> layer({"categorical": tf.constant([[1, 9]], tf.int64),
    ...        "numerical": tf.constant([[0.5]]),
    ...        "mv_tags": tf.constant([[2, -1]], tf.int64)}).shape
    TensorShape([1, 8])
    """

    def __init__(self, schema: Union[Schema, dict], embedding_dim: int = 128,
                 multi_valued_pooling: str = "mean",
                 embeddings_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.schema = as_schema(schema)
        if embedding_dim <= 0:
            raise InputError(f"embedding_dim must be positive, got {embedding_dim}")
        if multi_valued_pooling not in POOLINGS:
            raise InputError(f"multi_valued_pooling must be one of {POOLINGS}, "
                             f"got {multi_valued_pooling!r}")
        if not (self.schema.categorical or self.schema.numerical
                or self.schema.multi_valued):
            raise InputError(f"schema {self.schema.dataset!r} has no features")
        self.embedding_dim = int(embedding_dim)
        self.multi_valued_pooling = multi_valued_pooling
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)
        fields = self.schema.categorical + self.schema.multi_valued
        sizes = [f.vocab_size + 1 for f in fields]  # + the OOV bucket
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self._rows = sum(sizes)
        num_cat = len(self.schema.categorical)
        self._cat_vocab = [f.vocab_size for f in self.schema.categorical]
        self._cat_offsets = offsets[:num_cat]
        self._mv = list(zip(self.schema.multi_valued, offsets[num_cat:]))
        self.numerical_dense = (dense(self.embedding_dim, name="numerical")
                                if self.schema.numerical else None)

    @property
    def num_fields(self) -> int:
        return (len(self.schema.categorical) + bool(self.schema.numerical)
                + len(self.schema.multi_valued))

    @property
    def output_dim(self) -> int:
        return self.num_fields * self.embedding_dim

    def build(self, input_shape=None):
        self.table = self.add_weight(
            name="table", shape=[self._rows, self.embedding_dim],
            initializer=self.embeddings_initializer)
        if self.numerical_dense is not None:
            self.numerical_dense.build([None, len(self.schema.numerical)])
        super().build(input_shape)

    @staticmethod
    def _rows_of(ids, vocab, offset):
        """Table rows of `ids`; ids outside `[0, vocab)` go to the OOV row."""
        inside = (ids >= 0) & (ids < vocab)
        return tf.where(inside, ids, tf.cast(vocab, ids.dtype)) + offset

    def _checked(self, features, key: str, columns: int):
        """`features[key]`, refused with one clear error unless it has `columns`."""
        value = features[key]
        width = value.shape[-1] if value.shape.rank else None
        if width is not None and width != columns:
            raise InputError(f"features[{key!r}] must have {columns} columns (one per "
                             f"field of the schema), got shape {value.shape}")
        return value

    def call(self, features):
        fields = []
        if self.schema.categorical:
            ids = tf.cast(self._checked(features, CATEGORICAL_KEY,
                                        len(self.schema.categorical)), tf.int64)
            rows = self._rows_of(ids, tf.constant(self._cat_vocab, tf.int64),
                                 tf.constant(self._cat_offsets, tf.int64))
            fields.append(tf.gather(self.table, rows))                      # [B, C, D]
        if self.schema.numerical:
            numerical = tf.cast(self._checked(features, NUMERICAL_KEY,
                                              len(self.schema.numerical)), self.compute_dtype)
            fields.append(self.numerical_dense(numerical)[:, None, :])        # [B, 1, D]
        for field, offset in self._mv:
            fields.append(self._pool(features, field, offset)[:, None, :])
        embedded = tf.concat(fields, axis=1) if len(fields) > 1 else fields[0]
        return tf.reshape(embedded, [-1, self.output_dim])

    def _pool(self, features, field, offset):
        ids = tf.cast(features[field.key], tf.int64)                         # [B, L]
        present = tf.cast(ids >= 0, self.compute_dtype)  # -1 pads the batch
        rows = self._rows_of(ids, field.vocab_size, offset)
        weights = present
        if field.has_values:  # never silently 1: the predictions would change
            if field.values_key not in features:
                raise InputError(f"features lack {field.values_key!r}: the schema gives "
                                 f"the field {field.name!r} a value per id")
            weights = weights * tf.cast(features[field.values_key], self.compute_dtype)
        pooled = tf.einsum("bl,bld->bd", weights, tf.gather(self.table, rows))
        if self.multi_valued_pooling == "mean":
            pooled /= tf.maximum(tf.reduce_sum(present, axis=1, keepdims=True), 1.0)
        return pooled

    def get_config(self):
        config = super().get_config()
        config.update({
            "schema": self.schema.to_dict(),
            "embedding_dim": self.embedding_dim,
            "multi_valued_pooling": self.multi_valued_pooling,
            "embeddings_initializer": tf.keras.initializers.serialize(
                self.embeddings_initializer),
        })
        return config
