"""`CtrCvrTask`: the loss and the metrics of every model, as a TFRS task.

Like `tfrs.tasks.Ranking`, it takes its loss objects and owns its metrics: a
`pwiser_tf.losses.BinaryCrossentropy` for the BCE terms and, optionally, a
`pwiser_tf.PWiseRLoss` (with `bce=False`) for the PWiseR term. The loss is

    sum_h task_weight_h * BCE_h  +  pwiser_weight * PWiseR(head)  +  sum_e weight_e * extra_e

composed by `pwiser_tf.losses.compose`, the composition `PWiseRLoss` itself
uses, where the BCE heads are the model's (`ctr` and `ctcvr` over all exposures
by default; a `cvr` head counts clicked exposures only), each of weight 1 by
default, PWiseR acts on one head (`ctr` by default) and the extras are a model's
own terms (AITM's calibrator, AdaFTR's contrastive term, ESCM2's counterfactual
risk). So lambda means what it means in Keras: a two-headed model compiled with
`loss={"ctr": PWiseRLoss(pwiser_weight=lam), "ctcvr": "binary_crossentropy"}`
trains on BCE(ctr) + BCE(ctcvr) + lam * PWiseR(pCTR), the same loss as this task
with a `PWiseRLoss(pwiser_weight=lam, bce=False)` (`tests/test_losses.py` checks
that their values and gradients agree). Each part is reported, unweighted, as the
metric `<part>_loss`; `ctr_auc`, `ctcvr_auc` (all exposures), `cvr_auc` (clicked
exposures only) and the three `*_logloss` are reported too. A label below 0
marks a missing label: that exposure leaves every term.

With a `PWiseRLoss(grouped=True)` (a model's `pwiser_group=True`), PWiseR pairs only
the rows of one group, `labels["group"]`: the int64 group column of the data (the
AliExpress search id, the Ali-CCP user id), which `make_dataset` yields where the data
was converted with it. The task turns the ids into the batch's dense ids
(`dense_group_ids`), as the loss takes them in its float32 packed target.
"""
from typing import Dict, Mapping, Optional, Sequence

import tensorflow as tf

from pwiser_tf import kernel, replicas
from pwiser_tf.errors import InputError
from pwiser_tf.losses import binary_crossentropy, compose, logit
from pwiser_tf.pipelines.schema import GROUP_KEY
from pwiser_tf.tf_keras_losses import BinaryCrossentropy, PWiseRLoss
from pwiser_tf.options import HEADS, PWISER_HEAD

# PWiseR's strength and margins: the kernel's defaults, tuned by `pwiser-tf sweep` on the
# built-in synthetic data by validation CTCVR AUC (docs/sweep.md).
PWISER_DEFAULTS = {"pwiser_weight": kernel.PWISER_WEIGHT,
                   "margin_click": kernel.MARGIN_CLICK,
                   "margin_nonclick": kernel.MARGIN_NONCLICK}


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class AUC(tf.keras.metrics.AUC):
    """Streaming ROC AUC, bucketed on `sigmoid(logit(p) / logit_scale)`.

    AUC depends only on the order of the scores. Click and conversion rates are
    a few percent, so evenly spaced thresholds on the probability itself would
    put most predictions into a handful of buckets; the monotone rescaling
    spreads them over all `num_thresholds` buckets.
    """

    def __init__(self, num_thresholds: int = 2000, logit_scale: float = 8.0, **kwargs):
        super().__init__(num_thresholds=num_thresholds, **kwargs)
        self.logit_scale = float(logit_scale)

    def update_state(self, y_true, y_pred, sample_weight=None):
        spread = tf.sigmoid(logit(tf.cast(y_pred, tf.float32)) / self.logit_scale)
        return super().update_state(y_true, spread, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(logit_scale=self.logit_scale)
        return config


def head_labels(labels: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Each head's label, below 0 (missing) where the head has none: `ctr` the
    click, `ctcvr` the conversion of exposures whose click is known, `cvr` the
    conversion of clicked exposures."""
    click, conversion = labels["click"], labels["conversion"]
    return {"ctr": click, "ctcvr": tf.where(click >= 0, conversion, -1.0),
            "cvr": tf.where(click > 0, conversion, -1.0)}


def label_weights(labels: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Per head, which exposures count (1) and which do not (0)."""
    return {head: tf.cast(label >= 0, tf.float32)
            for head, label in head_labels(labels).items()}


def _dense_ids(ids):
    """Each row's group as the rank of its id among the batch's distinct ids (int32),
    by one sort: static shapes, so it runs under XLA too (`tf.unique` does not)."""
    order = tf.argsort(ids, stable=True)
    ordered = tf.gather(ids, order)
    start = tf.concat([tf.ones_like(ordered[:1], tf.int32),
                       tf.cast(ordered[1:] != ordered[:-1], tf.int32)], axis=0)
    return tf.tensor_scatter_nd_update(tf.zeros_like(start), order[:, None],
                                       tf.cumsum(start) - 1)


def dense_group_ids(group, pairs: str = "global") -> tf.Tensor:
    """`[B]` integer group ids (any int64) as int32 ids below the batch's size, one
    per distinct id, which float32 holds exactly (`PWiseRLoss(grouped=True)`).

    Under a `tf.distribute` strategy with `pairs="global"` the loss pairs the rows of
    every replica, so the ids are those of the global batch: a group's rows get the
    same id on every replica, and two groups never share one (ids ranked within each
    replica's rows would collide across replicas). One all-gather of the raw ids (as
    int32 halves, which every collective carries) gives them; each replica keeps its
    own rows'. Exact for global batches below 2^24 rows.
    """
    ids = tf.reshape(tf.cast(group, tf.int64), [-1])
    context = replicas.replica_context()
    if context is None or replicas.check_pairs(pairs) == "replica":
        return _dense_ids(ids)
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    rows = tf.concat([tf.bitcast(ids, tf.int32),
                      tf.fill([tf.size(ids), 1], replica)], axis=1)
    gathered = context.all_gather(rows, axis=0)  # in replica order
    dense = _dense_ids(tf.bitcast(gathered[:, :2], tf.int64))
    start = tf.reduce_sum(tf.cast(gathered[:, 2] < replica, tf.int32))
    return tf.slice(dense, [start], [tf.size(ids)])


def _check_choice(name, value, choices):
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")


def _check_loss(name, loss, cls):
    if not isinstance(loss, cls):
        raise InputError(f"CtrCvrTask: {name} must be a {cls.__module__}.{cls.__name__}, "
                         f"got {type(loss).__name__}")


class CtrCvrTask(tf.keras.layers.Layer):
    """Loss composition and metrics of a CTR/CVR model.

    Args:
      bce: the BCE of each head, a `pwiser_tf.losses.BinaryCrossentropy`
        (default: a mean over each head's labelled exposures); its reduction
        must not be `"none"`.
      pwiser: the PWiseR term, a `pwiser_tf.PWiseRLoss` with `bce=False` (the BCE
        terms are the task's own): its `pwiser_weight` is lambda, next to BCE
        terms of weight 1, and its options (margins, scores, normalization,
        `pairs`) are the term's; with `grouped=True` it pairs only the rows of
        one `labels["group"]` (a search, a user), and labels without a group are
        refused. None (default): no PWiseR term.
      bce_heads: heads with a BCE term, e.g. `("ctr", "ctcvr")`.
      task_weights: weight of each BCE term (default: 1 each, their sum, as
        Keras sums the losses of a model's outputs).
      pwiser_head: the head PWiseR acts on: `ctr`, `ctcvr` or `cvr`.
      extra_weights: a model's own terms, name -> weight.
      auc_num_thresholds, auc_logit_scale: the streaming AUCs' buckets.

    Example:

    >>> task = CtrCvrTask()
    >>> labels = {"click": tf.constant([1., 0.]), "conversion": tf.constant([1., 0.])}
    >>> predictions = {"ctr": tf.constant([.8, .2]), "cvr": tf.constant([.5, .5]),
    ...                "ctcvr": tf.constant([.4, .1])}
    >>> round(float(task(labels, predictions)), 4)
    0.734
    """

    def __init__(self, bce: Optional[BinaryCrossentropy] = None,
                 pwiser: Optional[PWiseRLoss] = None,
                 bce_heads: Sequence[str] = ("ctr", "ctcvr"),
                 task_weights: Optional[Sequence[float]] = None,
                 pwiser_head: str = PWISER_HEAD,
                 extra_weights: Optional[Mapping[str, float]] = None,
                 auc_num_thresholds: int = 2000, auc_logit_scale: float = 8.0,
                 name: str = "task", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce = BinaryCrossentropy() if bce is None else bce
        _check_loss("bce", self.bce, BinaryCrossentropy)
        if self.bce.batch_reduction == "none":
            raise InputError("CtrCvrTask: bce must reduce its rows; got reduction 'none'")
        if pwiser is not None:
            _check_loss("pwiser", pwiser, PWiseRLoss)
            if pwiser.bce:
                raise InputError("CtrCvrTask: pwiser must be a PWiseRLoss with bce=False "
                                 "(the BCE terms are the task's own)")
        self.pwiser = pwiser
        self.bce_heads = tuple(bce_heads)
        for head in self.bce_heads:
            _check_choice("a BCE head", head, HEADS)
        if task_weights is None:
            task_weights = [1.0] * len(self.bce_heads)
        self.task_weights = tuple(float(w) for w in task_weights)
        kernel.check_settings(**{f"task_weights[{i}]": w
                                 for i, w in enumerate(self.task_weights)})
        if len(self.task_weights) != len(self.bce_heads):
            raise InputError(f"task_weights {self.task_weights} must give one weight per "
                             f"head {self.bce_heads}")
        _check_choice("pwiser_head", pwiser_head, HEADS)
        kernel.check_settings(**(extra_weights or {}))
        self.pwiser_head = pwiser_head
        self.extra_weights = {k: float(v) for k, v in (extra_weights or {}).items()}
        self.auc_num_thresholds, self.auc_logit_scale = auc_num_thresholds, auc_logit_scale

        self.aucs = {head: AUC(auc_num_thresholds, auc_logit_scale, name=f"{head}_auc")
                     for head in ("ctr", "ctcvr", "cvr")}
        self.loglosses = {head: tf.keras.metrics.Mean(name=f"{head}_logloss")
                          for head in ("ctr", "ctcvr", "cvr")}
        parts = list(self.bce_heads) + (["pwiser"] if self.pwiser is not None else [])
        parts += list(self.extra_weights)
        self.parts = {part: tf.keras.metrics.Mean(name=f"{part}_loss") for part in parts}

    def __call__(self, labels, *args, **kwargs):
        # Checked before Keras' `Layer.__call__`, which would wrap the error in its
        # own lines.
        if self.pwiser is not None and self.pwiser.grouped and GROUP_KEY not in labels:
            raise InputError(
                f"{self.name}: pwiser_group=True (pwiser.group) pairs the rows of one group "
                f"only, but the labels have no {GROUP_KEY!r}: the data has no group column; "
                f"convert it again to keep it (AliExpress search_id, Ali-CCP user id 101)")
        return super().__call__(labels, *args, **kwargs)

    def _pwiser(self, labels, predictions, group):
        columns = [labels["click"], labels["conversion"]]
        if self.pwiser.grouped:
            columns.append(tf.cast(dense_group_ids(group, self.pwiser.pairs), tf.float32))
        return self.pwiser.pwiser_term(tf.stack(columns, axis=1),
                                       predictions[self.pwiser_head])

    def call(self, labels, predictions, extras: Optional[Mapping[str, tf.Tensor]] = None,
             training=False):
        labels = dict(labels)
        group = labels.pop(GROUP_KEY, None)  # int64 ids: not a float label
        labels = {k: tf.cast(tf.reshape(v, [-1]), tf.float32) for k, v in labels.items()}
        valid = kernel.check_labels(labels["click"], labels["conversion"], where=self.name)
        targets = head_labels(labels)
        for head in ("ctr", "ctcvr", "cvr"):
            counted = tf.cast(targets[head] >= 0, tf.float32)
            target = tf.maximum(targets[head], 0.0)
            self.aucs[head].update_state(target, predictions[head], counted)
            self.loglosses[head].update_state(
                binary_crossentropy(target, predictions[head]), counted)
        # Each term over the global batch; `compose` returns this replica's share.
        terms = {head: self.bce.term(targets[head], predictions[head])
                 for head in self.bce_heads}
        if self.pwiser is not None:
            terms["pwiser"] = self._pwiser(labels, predictions, group)
        terms.update({name: extras[name] for name in self.extra_weights})
        for name, value in terms.items():
            self.parts[name].update_state(value)
        return compose(
            [(weight, terms[head]) for head, weight in zip(self.bce_heads, self.task_weights)],
            self.pwiser.pwiser_weight if self.pwiser is not None else 0.0, terms.get("pwiser"),
            [(weight, terms[name]) for name, weight in self.extra_weights.items()],
            valid=valid)

    def get_config(self):
        config = super().get_config()
        config.update(
            bce=tf.keras.losses.serialize(self.bce),
            pwiser=None if self.pwiser is None else tf.keras.losses.serialize(self.pwiser),
            bce_heads=self.bce_heads, task_weights=self.task_weights,
            pwiser_head=self.pwiser_head, extra_weights=self.extra_weights,
            auc_num_thresholds=self.auc_num_thresholds,
            auc_logit_scale=self.auc_logit_scale)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("bce", "pwiser"):
            if isinstance(config.get(name), dict):
                config[name] = tf.keras.losses.deserialize(config[name])
        return cls(**config)
