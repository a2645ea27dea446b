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

Reductions: the BCE part is reduced by Keras as usual (`sample_weight`, a scalar
or one value per row, weights each example). A row whose click is missing (below 0)
leaves the BCE term, and a mean reduction averages over the labelled rows only: the
rule of every path (`CtrCvrTask` too), and Keras' own for masked rows. PWiseR is a
batch-level term: it is computed once per call, with `sample_weight` weighting each
pair by `w_i * w_j`, and added to the reduced BCE (with `reduction="none"`, to
every element). Labels other than 0, 1 or missing are refused on every path
(`pwiser_tf.kernel.check_labels`).

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
import numpy as np
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
        kernel.check_settings(pwiser_weight=pwiser_weight, margin_click=margin_click,
                              margin_nonclick=margin_nonclick)
        kernel._check_options(normalization, conversion_without_click)
        self.pwiser_weight = float(pwiser_weight)
        self.margin_click, self.margin_nonclick = float(margin_click), float(margin_nonclick)
        self.squared, self.normalization = bool(squared), normalization
        self.from_logits, self.pwiser_scores = bool(from_logits), pwiser_scores
        self.bce = bool(bce)
        self.conversion_without_click = conversion_without_click
        self.pairs = replicas_lib.check_pairs(pairs)

    @staticmethod
    def _split(y_true, y_pred, owner: str = "PWiseRLoss"):
        y_true = tf.convert_to_tensor(y_true)
        y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
        if y_true.shape.rank != 2 or (y_true.shape[1] is not None and y_true.shape[1] != 2):
            raise InputError(f"{owner}: y_true must be [B, 2] = (click, conversion), "
                             f"got shape {y_true.shape}")
        if y_pred.shape.rank == 2 and y_pred.shape[1] == 1:
            y_pred = y_pred[:, 0]
        elif y_pred.shape.rank != 1:
            raise InputError(f"{owner}: y_pred must be [B] or [B, 1], got {y_pred.shape}")
        rows = (y_true.shape[0], y_pred.shape[0])
        message = (f"{owner}: y_true and y_pred must have the same rows (y_true [B, 2], "
                   f"y_pred [B] or [B, 1])")
        if None not in rows and rows[0] != rows[1]:
            raise InputError(f"{message}; got y_true {y_true.shape} and y_pred "
                             f"{y_pred.shape[0]} rows")
        if None in rows:
            same = tf.debugging.assert_equal(tf.shape(y_true)[0], tf.shape(y_pred)[0],
                                             message=message)
            with tf.control_dependencies([same]):  # before any op that would mix them
                y_true, y_pred = tf.identity(y_true), tf.identity(y_pred)
        y_true = tf.cast(y_true, tf.float32)
        return y_true[:, 0], y_true[:, 1], y_pred

    @staticmethod
    def _row_weights(sample_weight, rows, owner: str = "PWiseRLoss"):
        """`sample_weight` as `[B]` float32 (a scalar or `[B, 1]` too, as in Keras)."""
        if sample_weight is None:
            return None
        weight = tf.cast(tf.convert_to_tensor(sample_weight), tf.float32)
        if weight.shape.rank == 0:
            return tf.fill(tf.shape(rows), weight)
        weight = tf.reshape(weight, [-1])
        if weight.shape[0] is not None and rows.shape[0] is not None \
                and weight.shape[0] != rows.shape[0]:
            raise InputError(f"{owner}: sample_weight must be a scalar or have one value "
                             f"per row ({rows.shape[0]}), got shape {sample_weight.shape}")
        return weight

    def call(self, y_true, y_pred):
        """Per-example BCE on the click label (0 where the click is missing;
        NaN everywhere if a label is not 0, 1 or missing, see `kernel.check_labels`)."""
        click, conversion, y_pred = self._split(y_true, y_pred)
        valid = kernel.check_labels(click, conversion, where=self.name)
        target = tf.maximum(click, 0.0)
        if self.from_logits:
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=y_pred)
        else:
            bce = binary_crossentropy(target, y_pred)
        return tf.where(valid, tf.where(click >= 0, bce, 0.0), np.nan)

    def _bce_weights(self, click, sample_weight):
        """The weights that make Keras' reduction a mean over the labelled rows, the
        rule of every path (as Keras' own masking): missing rows weigh 0, and a
        mean reduction is rescaled from all rows to the labelled ones, over the
        global batch under a strategy."""
        labelled = tf.cast(click >= 0, tf.float32)
        weight = labelled if sample_weight is None else labelled * sample_weight
        if not self._reduces_to_mean():
            return weight
        counts = replicas_lib.global_sum(tf.stack([tf.cast(tf.size(click), tf.float32),
                                                   tf.reduce_sum(labelled)]))
        return weight * tf.math.divide_no_nan(counts[0], counts[1])

    def __call__(self, y_true, y_pred, sample_weight=None):
        replicas = replicas_lib.num_replicas()
        click, _, _ = self._split(y_true, y_pred)
        sample_weight = self._row_weights(sample_weight, click)
        if not self.bce:
            total = tf.zeros([], tf.float32)
        else:
            weight = self._bce_weights(click, sample_weight)
            if replicas > 1 and self._keras_refuses_mean():
                # tf-keras refuses `sum_over_batch_size` outside `compile` under a
                # strategy (e.g. in `tfrs.tasks.Ranking`): this replica's share.
                values = self.call(y_true, y_pred) * weight
                total = replicas_lib.share(tf.math.divide_no_nan(
                    tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32)))
            else:
                total = super().__call__(y_true, y_pred, sample_weight=weight)
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
        sample_weight = self._row_weights(sample_weight, click)
        if sample_weight is not None:
            rows.append(sample_weight)
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
        labels = PWiseRLoss._split(y_true, y_pred, owner="PackedAUC")
        target, scores = labels[LABELS.index(self.label)], labels[2]
        weight = tf.cast(target >= 0, tf.float32)
        sample_weight = PWiseRLoss._row_weights(sample_weight, target, owner="PackedAUC")
        if sample_weight is not None:
            weight *= sample_weight
        return super().update_state(tf.maximum(target, 0.0), scores, sample_weight=weight)

    def get_config(self):
        config = super().get_config()
        config["label"] = self.label
        return config


__all__ = ["PWiseRLoss", "PackedAUC", "binary_crossentropy", "logit"]
