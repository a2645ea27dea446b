"""`CtrCvrTask`: the one loss composition of every model, with its metrics.

Like a TFRS task, it owns the loss and the metrics. The loss is

    sum_h task_weight_h * BCE_h  +  pwiser_weight * PWiseR(head)  +  sum_e weight_e * extra_e

where the BCE heads are the model's (`ctr` and `ctcvr` over all exposures by
default; a `cvr` head counts clicked exposures only), each of weight 1 by default,
PWiseR acts on one head (`ctr` by default) and the extras are a model's own terms
(AITM's calibrator, AdaFTR's contrastive term, ESCM2's counterfactual risk).

The PWiseR term is computed by a `pwiser_tf.PWiseRLoss` (`task.pwiser_loss`), and
the BCE terms are summed, so lambda means what it means in Keras: a two-headed
model compiled with `loss={"ctr": PWiseRLoss(pwiser_weight=lam), "ctcvr":
"binary_crossentropy"}` trains on BCE(ctr) + BCE(ctcvr) + lam * PWiseR(pCTR), the
same loss as this task with `pwiser_weight=lam` (`tests/test_losses.py` checks
that their gradients agree). Each part is reported,
unweighted, as the metric `<part>_loss`; `ctr_auc`, `ctcvr_auc` (all exposures),
`cvr_auc` (clicked exposures only) and the three `*_logloss` are reported too.
A label below 0 marks a missing label: that exposure leaves every term.
"""
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from pwiser_tf import kernel, replicas
from pwiser_tf.errors import InputError
from pwiser_tf.losses import SCORES, PWiseRLoss, binary_crossentropy, logit

HEADS = ("ctr", "cvr", "ctcvr")

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


def weighted_mean(values, weights):
    """The weighted mean over the global batch: under a `tf.distribute` strategy,
    over every replica's rows (the same value on each replica)."""
    sums = replicas.global_sum(tf.stack([tf.reduce_sum(values * weights),
                                         tf.reduce_sum(weights)]))
    return tf.math.divide_no_nan(sums[0], sums[1])


def label_weights(labels: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Per head, which exposures count: labelled ones, and for `cvr` clicked ones."""
    click, conversion = labels["click"], labels["conversion"]
    ctr = tf.cast(click >= 0, tf.float32)
    ctcvr = tf.cast((click >= 0) & (conversion >= 0), tf.float32)
    return {"ctr": ctr, "ctcvr": ctcvr, "cvr": ctcvr * tf.cast(click > 0, tf.float32)}


def _check_choice(name, value, choices):
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")


class CtrCvrTask(tf.keras.layers.Layer):
    """Loss composition and metrics of a CTR/CVR model.

    Args:
      bce_heads: heads with a BCE term, e.g. `("ctr", "ctcvr")`.
      task_weights: weight of each BCE term (default: 1 each, their sum, as
        Keras sums the losses of a model's outputs).
      pwiser_weight: lambda, the weight of the PWiseR term next to BCE terms of
        weight 1; 0 turns it off.
      pwiser_head: the head PWiseR acts on: `ctr`, `ctcvr` or `cvr`.
      pwiser_scores: `probability` (the paper's) or `logit`.
      margin_click, margin_nonclick, squared, normalization: PWiseR's options
        (see `pwiser_tf.kernel.pwiser`).
      pairs: under a `tf.distribute` strategy, PWiseR's pairs span `global`
        (default: all replicas, as one device on the global batch) or `replica`
        (each replica's rows); see `PWiseRLoss`.
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

    def __init__(self, bce_heads: Sequence[str] = ("ctr", "ctcvr"),
                 task_weights: Optional[Sequence[float]] = None,
                 pwiser_weight: float = 0.0, pwiser_head: str = "ctr",
                 pwiser_scores: str = "probability",
                 margin_click: float = PWISER_DEFAULTS["margin_click"],
                 margin_nonclick: float = PWISER_DEFAULTS["margin_nonclick"],
                 squared: bool = True, normalization: str = "anchor",
                 pairs: str = "global",
                 extra_weights: Optional[Mapping[str, float]] = None,
                 auc_num_thresholds: int = 2000, auc_logit_scale: float = 8.0,
                 name: str = "task", **kwargs):
        super().__init__(name=name, **kwargs)
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
        _check_choice("pwiser_scores", pwiser_scores, SCORES)
        _check_choice("normalization", normalization, kernel.NORMALIZATIONS)
        kernel.check_settings(pwiser_weight=pwiser_weight, margin_click=margin_click,
                              margin_nonclick=margin_nonclick, **(extra_weights or {}))
        self.pwiser_weight = float(pwiser_weight)
        self.pwiser_head, self.pwiser_scores = pwiser_head, pwiser_scores
        self.margin_click, self.margin_nonclick = float(margin_click), float(margin_nonclick)
        self.squared, self.normalization = bool(squared), normalization
        self.extra_weights = {k: float(v) for k, v in (extra_weights or {}).items()}
        self.auc_num_thresholds, self.auc_logit_scale = auc_num_thresholds, auc_logit_scale
        # The PWiseR term: the same loss class a Keras `compile` uses (`bce=False`:
        # the BCE terms are the task's own, one per head).
        self.pwiser_loss = PWiseRLoss(
            pwiser_weight=self.pwiser_weight, margin_click=self.margin_click,
            margin_nonclick=self.margin_nonclick, squared=self.squared,
            normalization=normalization, pwiser_scores=pwiser_scores, bce=False,
            pairs=pairs, name="pwiser")
        self.pairs = pairs

        self.aucs = {head: AUC(auc_num_thresholds, auc_logit_scale, name=f"{head}_auc")
                     for head in ("ctr", "ctcvr", "cvr")}
        self.loglosses = {head: tf.keras.metrics.Mean(name=f"{head}_logloss")
                          for head in ("ctr", "ctcvr", "cvr")}
        parts = list(self.bce_heads) + (["pwiser"] if self.pwiser_weight else [])
        parts += list(self.extra_weights)
        self.parts = {part: tf.keras.metrics.Mean(name=f"{part}_loss") for part in parts}

    @property
    def label_names(self):
        return {"ctr": "click", "ctcvr": "conversion", "cvr": "conversion"}

    def _pwiser(self, labels, predictions):
        packed = tf.stack([labels["click"], labels["conversion"]], axis=1)
        return self.pwiser_loss.pwiser_term(packed, predictions[self.pwiser_head])

    def call(self, labels, predictions, extras: Optional[Mapping[str, tf.Tensor]] = None,
             training=False):
        labels = {k: tf.cast(tf.reshape(v, [-1]), tf.float32) for k, v in labels.items()}
        valid = kernel.check_labels(labels["click"], labels["conversion"], where=self.name)
        weights = label_weights(labels)
        bce = {}
        for head in ("ctr", "ctcvr", "cvr"):
            target = tf.maximum(labels[self.label_names[head]], 0.0)
            bce[head] = binary_crossentropy(target, predictions[head])
            self.aucs[head].update_state(target, predictions[head], weights[head])
            self.loglosses[head].update_state(bce[head], weights[head])
        terms = {head: weighted_mean(bce[head], weights[head]) for head in self.bce_heads}
        loss = tf.add_n([w * terms[h] for h, w in zip(self.bce_heads, self.task_weights)])
        if self.pwiser_weight:
            terms["pwiser"] = self._pwiser(labels, predictions)
            loss += self.pwiser_loss.pwiser_weight * terms["pwiser"]
        for name, weight in self.extra_weights.items():
            terms[name] = extras[name]
            loss += weight * terms[name]
        for name, value in terms.items():
            self.parts[name].update_state(value)
        # Under a strategy the BCE and PWiseR terms are over the global batch, the
        # extras are this replica's means; `tfrs.Model` sums the replicas' losses
        # and gradients, so each returns its share: the step and the reported loss
        # equal one device on the global batch. NaN for invalid labels under XLA.
        return tf.where(valid, replicas.share(loss), np.nan)

    def get_config(self):
        config = super().get_config()
        config.update(
            bce_heads=self.bce_heads, task_weights=self.task_weights,
            pwiser_weight=self.pwiser_weight, pwiser_head=self.pwiser_head,
            pwiser_scores=self.pwiser_scores, margin_click=self.margin_click,
            margin_nonclick=self.margin_nonclick, squared=self.squared,
            normalization=self.normalization, pairs=self.pairs,
            extra_weights=self.extra_weights,
            auc_num_thresholds=self.auc_num_thresholds,
            auc_logit_scale=self.auc_logit_scale)
        return config
