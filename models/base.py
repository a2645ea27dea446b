"""`CtrCvrModel`: the `tfrs.Model` every network of the registry derives from.

A subclass builds its layers and implements `forward(features, training)`,
returning the predictions `{"ctr", "cvr", "ctcvr"}` (float32 `[B]`
probabilities) and, if it has any, its extra loss terms. The base class owns
the task (`CtrCvrTask`: loss composition and metrics), which it builds from its
own arguments (`loss`, `pwiser_weight`, the margins, ...) as loss objects, and
wires `compute_loss` to the `(features, labels)` batches of `make_dataset`.
"""
from typing import Dict, Mapping, Sequence, Tuple, Union

import tensorflow as tf
import tensorflow_recommenders as tfrs

from pwiser_tf.errors import InputError
from pwiser_tf.tf_keras_losses import BinaryCrossentropy, PWiseRLoss
from pwiser_tf.models.embedding import FeatureEmbedding, as_schema
from pwiser_tf.models.layers import Tower
from pwiser_tf.models.task import PWISER_DEFAULTS, CtrCvrTask
from pwiser_tf.options import (LOSSES, NORMALIZATION, PAIRS_DEFAULT, PWISER_HEAD,
                               PWISER_SCORES, SQUARED)
from pwiser_tf.pipelines.schema import Schema


def ratio_cvr(pctr, pctcvr):
    """pCVR of a model whose heads are CTR and CTCVR: pCTCVR / pCTR, in [0, 1]."""
    return tf.clip_by_value(tf.math.divide_no_nan(pctcvr, pctr), 0.0, 1.0)


class CtrCvrModel(tfrs.Model):
    """Base of the CTR/CVR models.

    Args:
      schema: the dataset's `pipelines.schema.Schema` (or its `to_dict()`).
      embedding_dim: width of each field's embedding.
      tower_units: hidden widths of each task tower.
      dropout: dropout rate of every MLP block.
      batch_norm: batch norm in every MLP block.
      multi_valued_pooling: `mean` or `sum` of a multi-valued field's ids.
      loss: `bce` (the sum of the heads' BCE terms), or `pwiser` for that sum
        + `pwiser_weight` * PWiseR: BCE(ctr) + BCE(ctcvr) + lambda * PWiseR, the
        loss of a two-headed Keras model compiled with `PWiseRLoss(pwiser_weight=
        lambda)` on its CTR output and `binary_crossentropy` on its CTCVR output.
      pwiser_weight, pwiser_head, pwiser_scores, margin_click, margin_nonclick,
      squared, normalization: PWiseR's options (`CtrCvrTask`; the defaults were
        tuned on the built-in synthetic data, docs/sweep.md); used with
        `loss="pwiser"`, and a `pwiser_weight` of 0 turns the term off.
      pairs: under a `tf.distribute` strategy, the rows that PWiseR pairs (and
        AdaFTR contrasts): `global` (default, all replicas: one step equals one
        device on the global batch) or `replica`; see `pwiser_tf.PWiseRLoss`.
      pwiser_group: PWiseR pairs only the rows of one group, `labels["group"]`
        (the data's group column: the AliExpress search id, the Ali-CCP user
        id; `pwiser_tf.PWiseRLoss(grouped=True)`); data without one is refused.
        Rows of one group pair only where they share a batch.
      task_weights: weights of the BCE terms (default: 1 each).
      auc_num_thresholds, auc_logit_scale: buckets of the streaming AUCs.
      extra_weights: set by subclasses: their own loss terms, name -> weight.
      bce_heads: set by subclasses: the heads with a BCE term (default CTR and
        CTCVR, over all exposures, also for ESMM-style models).
    """

    def __init__(self, schema: Union[Schema, dict], *, embedding_dim: int = 128,
                 tower_units: Sequence[int] = (128, 64), dropout: float = 0.2,
                 batch_norm: bool = True, multi_valued_pooling: str = "mean",
                 loss: str = "bce",
                 pwiser_weight: float = PWISER_DEFAULTS["pwiser_weight"],
                 pwiser_head: str = PWISER_HEAD, pwiser_scores: str = PWISER_SCORES,
                 margin_click: float = PWISER_DEFAULTS["margin_click"],
                 margin_nonclick: float = PWISER_DEFAULTS["margin_nonclick"],
                 squared: bool = SQUARED, normalization: str = NORMALIZATION,
                 pairs: str = PAIRS_DEFAULT, pwiser_group: bool = False,
                 task_weights=None, auc_num_thresholds: int = 2000,
                 auc_logit_scale: float = 8.0, extra_weights=None, bce_heads=None,
                 name=None):
        super().__init__(name=name)
        self._init_config = options(locals())
        if loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.schema = as_schema(schema)
        self.embedding_dim, self.multi_valued_pooling = embedding_dim, multi_valued_pooling
        self.tower_units, self.dropout, self.batch_norm = tuple(tower_units), dropout, batch_norm
        # PWiseR's options are checked whatever the loss; the task gets the term
        # only with `loss="pwiser"` and a weight above 0.
        pwiser = PWiseRLoss(
            pwiser_weight=pwiser_weight if loss == "pwiser" else 0.0,
            margin_click=margin_click, margin_nonclick=margin_nonclick, squared=squared,
            normalization=normalization, pwiser_scores=pwiser_scores, pairs=pairs,
            grouped=pwiser_group, bce=False, name="pwiser")
        self.pairs = pairs  # also the rows of AdaFTR's in-batch negatives
        self.task = CtrCvrTask(
            bce=BinaryCrossentropy(), pwiser=pwiser if pwiser.pwiser_weight else None,
            bce_heads=bce_heads or ("ctr", "ctcvr"), task_weights=task_weights,
            pwiser_head=pwiser_head, extra_weights=extra_weights,
            auc_num_thresholds=auc_num_thresholds, auc_logit_scale=auc_logit_scale,
            dtype="float32")  # the loss and metrics stay float32 under mixed precision

    # --- what subclasses provide ---------------------------------------------------

    def forward(self, features, training=None) -> Tuple[Dict[str, tf.Tensor],
                                                        Dict[str, tf.Tensor]]:
        """Returns `(predictions, extras)`: the three heads and the extra terms."""
        raise NotImplementedError

    # --- shared helpers -----------------------------------------------------------

    def make_embedding(self, name="embedding") -> FeatureEmbedding:
        return FeatureEmbedding(self.schema, self.embedding_dim,
                                multi_valued_pooling=self.multi_valued_pooling, name=name)

    def make_tower(self, name: str):
        return Tower(self.tower_units, self.dropout, self.batch_norm, name=name)

    # --- Keras / TFRS -------------------------------------------------------------

    def call(self, features, training=None):
        return self.forward(features, training=training)[0]

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features, labels = inputs
        predictions, extras = self.forward(features, training=training)
        return self.task(labels, predictions, extras, training=training)

    def train_step(self, inputs):
        """TFRS's train step, with loss scaling when the optimizer is a
        `LossScaleOptimizer` (tf-keras wraps it so under `mixed_float16`)."""
        optimizer = self.optimizer
        scaling = isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.reduce_sum([tf.reduce_sum(l) for l in self.losses])
            total_loss = loss + regularization_loss
            scaled = optimizer.get_scaled_loss(total_loss) if scaling else total_loss
        gradients = tape.gradient(scaled, self.trainable_variables)
        if scaling:
            gradients = optimizer.get_unscaled_gradients(gradients)
        optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        logs = {metric.name: metric.result() for metric in self.metrics}
        logs.update(loss=loss, regularization_loss=regularization_loss, total_loss=total_loss)
        return logs

    def get_config(self):
        # Sequences as tuples: a model read back from a file got lists, which Keras
        # then wraps (`ListWrapper`); its config is the same as the original's.
        config = {k: tuple(v) if isinstance(v, (list, tuple)) else v
                  for k, v in self._init_config.items()}
        return {"schema": self.schema.to_dict(), **config, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def predictions(pctr, pcvr=None, pctcvr=None) -> Dict[str, tf.Tensor]:
    """The output dict from two of the three probabilities."""
    if pctcvr is None:
        pctcvr = pctr * pcvr
    if pcvr is None:
        pcvr = ratio_cvr(pctr, pctcvr)
    return {"ctr": pctr, "cvr": pcvr, "ctcvr": pctcvr}


def check_units(value, name: str) -> Tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(f"{name} must be a non-empty list of layer widths, got {value!r}")
    return tuple(int(v) for v in value)


def options(local_vars: Mapping[str, object]) -> Dict[str, object]:
    """A constructor's arguments, for `get_config`."""
    return {k: v for k, v in local_vars.items()
            if k not in ("self", "schema", "__class__", "kwargs", "extra_weights", "bce_heads",
                         "name")}
