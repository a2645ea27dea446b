"""`export_saved_model`: a SavedModel that serves serialized `tf.train.Example`s.

Signatures (each takes a batch of serialized records, `examples`, and returns
`pctr`, `pcvr` and `pctcvr`, float32 `[B]`):

- `serving_default`: records in the schema's layout (`Schema.feature_spec`),
  parsed with the same `Parser` as the training reader: multi-valued fields
  padded like `make_dataset` does (`-1` ids, `0` values);
- `serving_columns`: one feature per column, the layout TFX's `CsvExampleGen`
  writes (`Schema.with_layout("columns")`): a scalar per categorical and
  numerical feature, under the CSV's column names;
- with `id_maps` (a dataset converted with `--remap-ids`): both signatures above
  take the *raw* ids that clients have and map them to the model's ids through
  lookup tables carried in the SavedModel. An id the map does not hold goes to
  its field's out-of-vocabulary bucket; each signature then also returns
  `unseen_ids`, int64 `[B]`, the unseen ids of each record, and the module's
  variable `unseen_ids` counts them all since the model was loaded.
  `serving_remapped` takes the converted records as they are (renumbered ids);
  `pwiser-tf evaluate` scores converted splits through it.

Example:

>>> import tempfile
>>> from pwiser_tf import models
>>> from pwiser_tf.pipelines.schema import Field, Schema
>>> schema = Schema(dataset="toy", categorical=(Field("user", 10), Field("item", 10)),
...                 numerical=("price",))
>>> record = tf.train.Example(features=tf.train.Features(feature={
...     "categorical": tf.train.Feature(int64_list=tf.train.Int64List(value=[3, 7])),
...     "numerical": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5]))}
... )).SerializeToString()
>>> model = models.build_model("shared-bottom", schema, embedding_dim=4,
...                            bottom_units=[8], tower_units=[4])
>>> _ = model(parse_serving_features(tf.constant([record]), schema))  # build it
>>> path = export_saved_model(model, tempfile.mkdtemp() + "/saved_model", schema)
>>> serve = tf.saved_model.load(path).signatures["serving_default"]
>>> out = serve(examples=tf.constant([record]))
>>> sorted((name, value.shape.as_list()) for name, value in out.items())
[('pctcvr', [1]), ('pctr', [1]), ('pcvr', [1])]
"""
import functools
import os
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

from pwiser_tf import fileio
from pwiser_tf.pipelines.dataset import MV_PAD_ID, Parser
from pwiser_tf.pipelines.schema import CATEGORICAL_KEY, Schema

gfile = tf.io.gfile

DEFAULT_SIGNATURE = "serving_default"
COLUMNS_SIGNATURE = "serving_columns"
REMAPPED_SIGNATURE = "serving_remapped"
UNSEEN_IDS = "unseen_ids"
_EXAMPLES = tf.TensorSpec([None], tf.string, name="examples")


def parse_serving_features(examples, schema: Schema):
    """Model features from serialized examples: parsed and padded like `make_dataset`."""
    return Parser(schema, with_labels=False)(examples)[0]


class IdLookup(tf.Module):
    """Raw ids -> the model's ids of one field; unseen ids -> `oov_id`.

    `raw_ids` is the field's table of `--remap-ids` (`readers/idmap.py`): sorted
    raw ids, the model's id of `raw_ids[k]` being `k`.
    """

    def __init__(self, raw_ids: np.ndarray, oov_id: int, name: Optional[str] = None):
        super().__init__(name=name)
        raw_ids = np.asarray(raw_ids, np.int64)
        self.oov_id = int(oov_id)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(raw_ids), tf.range(len(raw_ids), dtype=tf.int64)),
            default_value=-1)

    def __call__(self, ids: tf.Tensor, present: Optional[tf.Tensor] = None):
        """`(model ids, unseen mask)`; entries outside `present` are kept as they are."""
        found = self.table.lookup(ids)
        unseen = found < 0
        mapped = tf.where(unseen, tf.constant(self.oov_id, tf.int64), found)
        if present is None:
            return mapped, unseen
        return tf.where(present, mapped, ids), unseen & present


class _Serving(tf.Module):
    """Holds the model's variables (not its Keras layers), the id tables and the signatures."""

    def __init__(self, model, schema: Schema,
                 id_maps: Optional[Mapping[str, np.ndarray]] = None):
        super().__init__(name="serving")
        self._predict = functools.partial(model, training=False)  # untracked
        self._schema = schema
        # Tracking the variables alone keeps the export free of Keras' own
        # layer serialization: only the serving graph and the weights are saved.
        self.weights = list(model.variables)
        self.id_lookups = None
        if id_maps:
            fields = schema.categorical + schema.multi_valued
            missing = [f.name for f in fields if f.name not in id_maps]
            if missing:
                raise ValueError(f"id_maps lack the fields {missing}")
            self.id_lookups = {f.name: IdLookup(id_maps[f.name], f.vocab_size,
                                                name=f"ids_{i}")
                               for i, f in enumerate(fields)}
            self.unseen_ids = tf.Variable(0, dtype=tf.int64, trainable=False,
                                          name=UNSEEN_IDS)

    def _remap(self, features: Dict[str, tf.Tensor]):
        """Raw ids -> model ids; returns the features and the unseen ids per record."""
        features = dict(features)
        counts = []
        if self._schema.categorical:
            columns, unseen = [], []
            for j, field in enumerate(self._schema.categorical):
                mapped, missing = self.id_lookups[field.name](
                    features[CATEGORICAL_KEY][:, j])
                columns.append(mapped)
                unseen.append(missing)
            features[CATEGORICAL_KEY] = tf.stack(columns, axis=1)
            counts.append(tf.reduce_sum(tf.cast(tf.stack(unseen, axis=1), tf.int64), axis=1))
        for field in self._schema.multi_valued:
            ids = features[field.key]
            mapped, missing = self.id_lookups[field.name](ids, ids != MV_PAD_ID)
            features[field.key] = mapped
            counts.append(tf.reduce_sum(tf.cast(missing, tf.int64), axis=1))
        return features, tf.add_n(counts)

    def _score(self, examples, schema: Schema, raw_ids: bool):
        features = parse_serving_features(examples, schema)
        unseen = None
        if raw_ids and self.id_lookups is not None:
            features, unseen = self._remap(features)
            self.unseen_ids.assign_add(tf.reduce_sum(unseen))
        out = self._predict(features)
        result = {"pctr": out["ctr"], "pcvr": out["cvr"], "pctcvr": out["ctcvr"]}
        if unseen is not None:
            result[UNSEEN_IDS] = unseen
        return result

    @tf.function(input_signature=[_EXAMPLES])
    def serve(self, examples):
        return self._score(examples, self._schema, raw_ids=True)

    @tf.function(input_signature=[_EXAMPLES])
    def serve_columns(self, examples):
        return self._score(examples, self._schema.with_layout("columns"), raw_ids=True)

    @tf.function(input_signature=[_EXAMPLES])
    def serve_remapped(self, examples):
        return self._score(examples, self._schema, raw_ids=False)

    def signatures(self):
        signatures = {DEFAULT_SIGNATURE: self.serve, COLUMNS_SIGNATURE: self.serve_columns}
        if self.id_lookups is not None:
            signatures[REMAPPED_SIGNATURE] = self.serve_remapped
        return signatures


def export_saved_model(model, path: str, schema: Schema,
                       assets_extra: Optional[Dict[str, bytes]] = None,
                       id_maps: Optional[Mapping[str, np.ndarray]] = None) -> str:
    """Writes `model` as a SavedModel at `path` (replaced if it exists); returns `path`.

    Args:
      model: a model of the registry, built (called once).
      path: the SavedModel directory, on any filesystem `tf.io.gfile` knows.
      schema: the schema the model was trained on; its layout is the layout of
        `serving_default`.
      assets_extra: file names -> contents written into `assets.extra/` (for
        example the `metadata.json` the model was trained on).
      id_maps: `{field: sorted raw ids}` of a `--remap-ids` conversion
        (`IdMap.load(data_dir).tables`): serve raw ids.

    The directory appears complete or not at all: it is written under a
    temporary name and renamed.
    """
    module = _Serving(model, schema, id_maps)
    # ".name.partial", not "name.partial": on filesystems that list by prefix
    # (object stores, ram://) the latter would show up inside `path`
    path = path.rstrip("/")
    staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
    if gfile.exists(staging):
        fileio.remove_tree(staging)
    tf.saved_model.save(module, staging, signatures=module.signatures())
    if assets_extra:
        extra = os.path.join(staging, "assets.extra")
        gfile.makedirs(extra)
        for name, content in assets_extra.items():
            fileio.atomic_write(os.path.join(extra, name), content)
    if gfile.isdir(path):
        fileio.remove_tree(path)
    fileio.move_tree(staging, path)
    return path
