"""`export_saved_model`: a SavedModel that serves serialized `tf.train.Example`s.

The `serving_default` signature takes a batch of serialized records in the
pipelines' layout (`Schema.feature_spec(with_labels=False)`), parses them with
the same spec the training reader uses, pads multi-valued fields like
`make_dataset` does (`-1` ids, `0` values) and returns `pctr`, `pcvr` and
`pctcvr`, float32 `[B]`.

Example:

>>> export_saved_model(model, "out/saved_model", schema)        # doctest: +SKIP
>>> serve = tf.saved_model.load("out/saved_model").signatures["serving_default"]
>>> serve(examples=tf.constant([record]))["pctr"]               # doctest: +SKIP
"""
import functools
import os
from typing import Dict, Optional

import tensorflow as tf

from pwiser_tf import fileio
from pwiser_tf.pipelines.dataset import Parser
from pwiser_tf.pipelines.schema import Schema

gfile = tf.io.gfile


def parse_serving_features(examples, schema: Schema):
    """Model features from serialized examples: parsed and padded like `make_dataset`."""
    return Parser(schema, with_labels=False)(examples)[0]


class _Serving(tf.Module):
    """Holds the model's variables (not its Keras layers) and the signature."""

    def __init__(self, model, schema: Schema):
        super().__init__(name="serving")
        self._predict = functools.partial(model, training=False)  # untracked
        self._schema = schema
        # Tracking the variables alone keeps the export free of Keras' own
        # layer serialization: only the serving graph and the weights are saved.
        self.weights = list(model.variables)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        out = self._predict(parse_serving_features(examples, self._schema))
        return {"pctr": out["ctr"], "pcvr": out["cvr"], "pctcvr": out["ctcvr"]}


def export_saved_model(model, path: str, schema: Schema,
                       assets_extra: Optional[Dict[str, bytes]] = None) -> str:
    """Writes `model` as a SavedModel at `path` (replaced if it exists); returns `path`.

    `assets_extra` maps file names to contents written into `assets.extra/`
    (for example the `metadata.json` the model was trained on). The directory
    appears complete or not at all: it is written under a temporary name and
    renamed. `path` may be on any filesystem `tf.io.gfile` knows.
    """
    module = _Serving(model, schema)
    staging = path.rstrip("/") + ".partial"
    if gfile.exists(staging):
        gfile.rmtree(staging)
    tf.saved_model.save(module, staging, signatures={"serving_default": module.serve})
    if assets_extra:
        extra = os.path.join(staging, "assets.extra")
        gfile.makedirs(extra)
        for name, content in assets_extra.items():
            fileio.atomic_write(os.path.join(extra, name), content)
    if gfile.isdir(path):
        gfile.rmtree(path)
    gfile.rename(staging, path)
    return path
