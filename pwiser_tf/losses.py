"""`PWiseRLoss`: BCE on the click label plus lambda times the PWiseR term, as a Keras loss.

The convention, the same in every path of the project: lambda (`pwiser_weight`)
multiplies the PWiseR term, and every BCE term has weight 1. A two-headed model
compiled with `loss={"ctr": PWiseRLoss(pwiser_weight=lam), "ctcvr": "binary_crossentropy"}`
trains on BCE(ctr) + BCE(ctcvr) + lam * PWiseR (Keras sums the outputs' losses),
and so does every model of `pwiser_tf.models` (its task, `CtrCvrTask`, uses this
class for the PWiseR term): the same lambda means the same strength.

The class derives from the *active* Keras' `Loss` (`tf.keras.losses.Loss`: Keras 3,
or tf-keras under `TF_USE_LEGACY_KERAS=1`), so the same code works in Keras 3
`model.compile`, in tf-keras `model.compile` and in `tfrs.tasks.Ranking`.

A loss given to `compile` sees one output and one target at a time, so the
target packs both labels: `y_true[:, 0]` is the click and `y_true[:, 1]` the
conversion. For a two-headed model, either give PWiseR its own packed target on
the CTR output (`loss={"ctr": PWiseRLoss(), "ctcvr": "binary_crossentropy"}` with
`y={"ctr": np.stack([click, conversion], 1), "ctcvr": conversion}`), or call the
loss in the model's `compute_loss` (as `pwiser_tf.models` does). `PackedAUC` is
Keras' AUC of one column of the packed target, for a `tfrs.tasks.Ranking` task,
which gives the same labels to its loss and its metrics.

Reductions: the BCE part is reduced by Keras as usual (`sample_weight` weights
each example). PWiseR is a batch-level term: it is computed once per call, with
`sample_weight` weighting each pair by `w_i * w_j`, and added to the reduced BCE
(with `reduction="none"`, to every element).

Under a `tf.distribute` strategy the value returned on each replica follows the
Keras convention of the framework it runs in (Keras 3 returns a replica's share,
the loss / N; tf-keras' `compile` divides by N itself; `tfrs.Model` sums the
replicas' gradients as they come), so that one optimizer step and the reported
loss equal one device on the same global batch. PWiseR's pairs span all
replicas by default (`pairs="global"`); `tfrs.tasks.Ranking` works under a
strategy with the default reduction (tf-keras' `Loss` refuses
`sum_over_batch_size` outside `compile`; this class takes the replica's share
of the mean instead).

Example:

>>> import numpy as np
>>> loss = PWiseRLoss(pwiser_weight=1.0, margin_click=0.5, margin_nonclick=0.5)
>>> y_true = np.array([[1, 1], [1, 0], [1, 0], [0, 0]], "float32")
>>> y_pred = np.array([0.9, 0.2, 0.6, 0.1], "float32")
>>> bce = -np.mean(np.log([0.9, 0.2, 0.6, 0.9]))
>>> bool(abs(float(loss(y_true, y_pred)) - (bce + 0.02)) < 1e-5)
True
"""
import tensorflow as tf

from pwiser_tf import kernel
from pwiser_tf import replicas as replicas_lib
from pwiser_tf.errors import InputError

SCORES = ("probability", "logit")
LABELS = ("click", "conversion")  # the packed target's columns
_EPSILON = 1e-7


def logit(probability):
    """log(p / (1 - p)), with p clipped to [1e-7, 1 - 1e-7]."""
    p = tf.clip_by_value(tf.cast(probability, tf.float32), _EPSILON, 1.0 - _EPSILON)
    return tf.math.log(p) - tf.math.log1p(-p)


def binary_crossentropy(labels, probabilities):
    """Per-example BCE of probabilities clipped to [1e-7, 1 - 1e-7]."""
    p = tf.clip_by_value(probabilities, _EPSILON, 1.0 - _EPSILON)
    return -(labels * tf.math.log(p) + (1.0 - labels) * tf.math.log1p(-p))


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class PWiseRLoss(tf.keras.losses.Loss):
    """BCE(click, p) + `pwiser_weight` * PWiseR(p; click, conversion).

    Args:
      pwiser_weight: lambda, the weight of the PWiseR term relative to a BCE term
        of weight 1 (see the module docstring). The defaults of the weight and
        the margins were tuned by validation CTCVR AUC on the built-in synthetic
        data at batch 512 (docs/sweep.md); tune them on your data.
      margin_click: margin of converted clicks over clicks without conversion.
      margin_nonclick: margin of converted clicks over non-clicks.
      squared: squared hinge (default) or plain hinge.
      normalization: `"anchor"` (the papers') or `"pair"`; see `pwiser_tf.pwiser`.
      from_logits: whether `y_pred` holds logits instead of probabilities.
      pwiser_scores: what PWiseR compares: `"probability"` (default) or `"logit"`.
      bce: include the BCE term (default); `False` gives PWiseR alone.
      conversion_without_click: `"error"` or `"as_click"`; see `pwiser_tf.pwiser`.
      pairs: under a `tf.distribute` strategy, which rows PWiseR pairs:
        `"global"` (default) all-gathers every replica's rows, so the value and
        the step equal one device on the global batch; `"replica"` pairs each
        replica's rows only, and the step follows the mean of the replicas'
        terms: with `normalization="anchor"`, N replicas then act like
        `pwiser_weight / N`; with `"pair"`, like about `pwiser_weight`. No effect
        on one device. See `pwiser_tf.replicas`.
      reduction: Keras reduction of the BCE part.
      name: the loss name.
    """

    def __init__(self, pwiser_weight: float = kernel.PWISER_WEIGHT,
                 margin_click: float = kernel.MARGIN_CLICK,
                 margin_nonclick: float = kernel.MARGIN_NONCLICK, squared: bool = True,
                 normalization: str = "anchor", from_logits: bool = False,
                 pwiser_scores: str = "probability", bce: bool = True,
                 conversion_without_click: str = "error", pairs: str = "global",
                 reduction: str = "sum_over_batch_size", name: str = "pwiser_loss"):
        super().__init__(reduction=reduction, name=name)
        if pwiser_scores not in SCORES:
            raise InputError(f"pwiser_scores must be one of {SCORES}, got {pwiser_scores!r}")
        if pwiser_weight < 0 or margin_click < 0 or margin_nonclick < 0:
            raise InputError("pwiser_weight, margin_click and margin_nonclick must be >= 0")
        kernel._check_options(normalization, conversion_without_click)
        self.pwiser_weight = float(pwiser_weight)
        self.margin_click, self.margin_nonclick = float(margin_click), float(margin_nonclick)
        self.squared, self.normalization = bool(squared), normalization
        self.from_logits, self.pwiser_scores = bool(from_logits), pwiser_scores
        self.bce = bool(bce)
        self.conversion_without_click = conversion_without_click
        self.pairs = replicas_lib.check_pairs(pairs)

    @staticmethod
    def _split(y_true, y_pred):
        y_true = tf.convert_to_tensor(y_true)
        y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
        if y_true.shape.rank != 2 or (y_true.shape[1] is not None and y_true.shape[1] != 2):
            raise InputError(f"PWiseRLoss: y_true must be [B, 2] = (click, conversion), "
                             f"got shape {y_true.shape}")
        if y_pred.shape.rank == 2 and y_pred.shape[1] == 1:
            y_pred = y_pred[:, 0]
        elif y_pred.shape.rank != 1:
            raise InputError(f"PWiseRLoss: y_pred must be [B] or [B, 1], got {y_pred.shape}")
        y_true = tf.cast(y_true, tf.float32)
        return y_true[:, 0], y_true[:, 1], y_pred

    def call(self, y_true, y_pred):
        """Per-example BCE on the click label (0 where the click is missing)."""
        click, _, y_pred = self._split(y_true, y_pred)
        target = tf.maximum(click, 0.0)
        if self.from_logits:
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=y_pred)
        else:
            bce = binary_crossentropy(target, y_pred)
        return tf.where(click >= 0, bce, 0.0)

    def __call__(self, y_true, y_pred, sample_weight=None):
        replicas = replicas_lib.num_replicas()
        if not self.bce:
            total = tf.zeros([], tf.float32)
        elif replicas > 1 and self._keras_refuses_mean():
            # tf-keras refuses `sum_over_batch_size` outside `compile` under a strategy
            # (e.g. in `tfrs.tasks.Ranking`); this replica's share of the global mean.
            values = self.call(y_true, y_pred)
            if sample_weight is not None:
                values *= tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
            total = replicas_lib.share(tf.math.divide_no_nan(
                tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32)))
        else:
            total = super().__call__(y_true, y_pred, sample_weight=sample_weight)
        if not self.pwiser_weight:
            return total
        term = self.pwiser_term(y_true, y_pred, sample_weight=sample_weight)
        if replicas > 1 and not self._framework_scales():
            term = replicas_lib.share(term)
        return tf.cast(total, tf.float32) + self.pwiser_weight * term

    def pwiser_term(self, y_true, y_pred, sample_weight=None):
        """The PWiseR term alone, unweighted by `pwiser_weight`, on the scores
        `pwiser_scores` names (`CtrCvrTask` adds it to its BCE terms), over the
        rows that `pairs` names: all replicas' or this replica's."""
        click, conversion, y_pred = self._split(y_true, y_pred)
        scores = y_pred
        if self.from_logits and self.pwiser_scores == "probability":
            scores = tf.sigmoid(y_pred)
        elif not self.from_logits and self.pwiser_scores == "logit":
            scores = logit(y_pred)
        rows = [scores, click, conversion]
        if sample_weight is not None:
            rows.append(tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
        rows = replicas_lib.gather(rows, self.pairs)
        return kernel.pwiser(rows[0], rows[1], rows[2], margin_click=self.margin_click,
                             margin_nonclick=self.margin_nonclick, squared=self.squared,
                             normalization=self.normalization,
                             sample_weight=rows[3] if len(rows) > 3 else None,
                             conversion_without_click=self.conversion_without_click)

    def _reduces_to_mean(self) -> bool:
        return self.reduction in ("auto", "sum_over_batch_size", "mean",
                                  "mean_with_sample_weight")

    def _keras_refuses_mean(self) -> bool:
        # tf-keras' `Loss` has `_allow_sum_over_batch_size`, set by `compile`.
        return (self._reduces_to_mean()
                and getattr(self, "_allow_sum_over_batch_size", True) is False)

    def _framework_scales(self) -> bool:
        """Whether whoever reduces this value divides it by the replicas afterwards:
        tf-keras' `compile` does for a mean reduction; with `reduction="none"` the
        term is added to every element, and a reduction over the global batch
        (`tf.nn.compute_average_loss`) takes this replica's share."""
        if self.reduction in (None, "none"):
            return True
        return (self._reduces_to_mean()
                and getattr(self, "_allow_sum_over_batch_size", False) is True)

    def get_config(self):
        config = super().get_config()
        config.update({
            "pwiser_weight": self.pwiser_weight, "margin_click": self.margin_click,
            "margin_nonclick": self.margin_nonclick, "squared": self.squared,
            "normalization": self.normalization, "from_logits": self.from_logits,
            "pwiser_scores": self.pwiser_scores, "bce": self.bce,
            "conversion_without_click": self.conversion_without_click,
            "pairs": self.pairs,
        })
        config.pop("dtype", None)  # Keras 3 adds it; the loss always computes in float32
        return config


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class PackedAUC(tf.keras.metrics.AUC):
    """Keras' `AUC` of one label of the packed `[click, conversion]` target.

    A `tfrs.tasks.Ranking` task gives its labels to the loss and to each metric
    alike; with `PWiseRLoss` they are packed `[B, 2]`, which `tf.keras.metrics.AUC`
    cannot read. This AUC reads the column `label` names; rows where that label
    is missing (below 0) are left out.

    Args:
      label: `"click"` (default) or `"conversion"`.
      name: the metric name (default `"<label>_auc"`).
      **kwargs: the options of `tf.keras.metrics.AUC` (`num_thresholds`, ...).

    Example:

    >>> auc = PackedAUC()
    >>> _ = auc.update_state([[1., 1.], [0., 0.], [1., 0.]], [[0.9], [0.1], [0.4]])
    >>> float(auc.result())
    1.0
    """

    def __init__(self, label: str = "click", name=None, **kwargs):
        if label not in LABELS:
            raise InputError(f"label must be one of {LABELS}, got {label!r}")
        super().__init__(name=name or f"{label}_auc", **kwargs)
        self.label = label

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = PWiseRLoss._split(y_true, y_pred)
        target, scores = labels[LABELS.index(self.label)], labels[2]
        weight = tf.cast(target >= 0, tf.float32)
        if sample_weight is not None:
            weight *= tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        return super().update_state(tf.maximum(target, 0.0), scores, sample_weight=weight)

    def get_config(self):
        config = super().get_config()
        config["label"] = self.label
        return config


__all__ = ["PWiseRLoss", "PackedAUC", "binary_crossentropy", "logit"]
