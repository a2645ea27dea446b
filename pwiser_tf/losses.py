"""The project's losses as Keras losses: `PWiseRLoss` (BCE on the click label plus
lambda times the PWiseR term) and `BinaryCrossentropy`, and `compose`, the one
composition of BCE and PWiseR that every path uses.

The convention, the same in every path of the project: lambda (`pwiser_weight`)
multiplies the PWiseR term, and every BCE term has weight 1. A two-headed model
compiled with `loss={"ctr": PWiseRLoss(pwiser_weight=lam), "ctcvr": "binary_crossentropy"}`
trains on BCE(ctr) + BCE(ctcvr) + lam * PWiseR (Keras sums the outputs' losses),
and so does every model of `pwiser_tf.models`: its task, `CtrCvrTask`, takes a
`BinaryCrossentropy` and a `PWiseRLoss` and composes their terms with the same
`compose`, so the same lambda means the same strength.

The classes derive from the *active* Keras' `Loss` (`tf.keras.losses.Loss`: Keras 3,
or tf-keras under `TF_USE_LEGACY_KERAS=1`), so the same code works in Keras 3
`model.compile`, in tf-keras `model.compile` and in `tfrs.tasks.Ranking`.

A loss given to `compile` sees one output and one target at a time, so the
target of `PWiseRLoss` packs both labels: `y_true[:, 0]` is the click and
`y_true[:, 1]` the conversion. For a two-headed model, either give PWiseR its own
packed target on the CTR output (`loss={"ctr": PWiseRLoss(), "ctcvr":
"binary_crossentropy"}` with `y={"ctr": np.stack([click, conversion], 1), "ctcvr":
conversion}`), or call the loss in the model's `compute_loss` (as
`pwiser_tf.models` does). `PackedAUC` is Keras' AUC of one column of the packed
target, for a `tfrs.tasks.Ranking` task, which gives the same labels to its loss
and its metrics.

Reductions (Keras' names, of both flavours): the BCE part is reduced as Keras
does (`sample_weight`, a scalar or one value per row, weights each example). A
row whose label is missing (below 0) leaves the BCE term, and a mean reduction
averages over the labelled rows only: the rule of every path (`CtrCvrTask` too),
and Keras' own for masked rows. PWiseR is a batch-level term: it is computed once
per call, with `sample_weight` weighting each pair by `w_i * w_j`. It has no
per-row split, so with `reduction="none"` every row carries it whole: the loss
returns `[B]` values, `w_i * BCE_i + lambda * PWiseR` (`lambda * PWiseR` alone with
`bce=False`), whose mean is the loss of the default reduction when every row is
labelled. Labels other than 0, 1 or missing are refused on every path
(`pwiser_tf.kernel.check_labels`).

Under a `tf.distribute` strategy every term is taken over the global batch (the
BCE sums all-reduced, PWiseR's pairs all-gathered by default, `pairs="global"`)
and each replica returns its share, the rule of `pwiser_tf.replicas`, so that one
optimizer step and the reported loss equal one device on the same global batch,
in Keras 3 and tf-keras `compile` and in `tfrs.tasks.Ranking` alike.

Example:

>>> import numpy as np
>>> loss = PWiseRLoss(pwiser_weight=1.0, margin_click=0.5, margin_nonclick=0.5)
>>> y_true = np.array([[1, 1], [1, 0], [1, 0], [0, 0]], "float32")
>>> y_pred = np.array([0.9, 0.2, 0.6, 0.1], "float32")
>>> bce = -np.mean(np.log([0.9, 0.2, 0.6, 0.9]))
>>> bool(abs(float(loss(y_true, y_pred)) - (bce + 0.02)) < 1e-5)
True
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from pwiser_tf import kernel
from pwiser_tf import replicas as replicas_lib
from pwiser_tf.errors import InputError
from pwiser_tf.options import NORMALIZATION, PAIRS_DEFAULT, PWISER_SCORES, SCORES, SQUARED

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


def compose(bce_terms: Sequence[Tuple[float, tf.Tensor]], pwiser_weight: float = 0.0,
            pwiser_term: Optional[tf.Tensor] = None,
            extra_terms: Sequence[Tuple[float, tf.Tensor]] = (), valid=None,
            rows: Optional[tf.Tensor] = None) -> tf.Tensor:
    """sum_h w_h * BCE_h + pwiser_weight * PWiseR + sum_e w_e * extra_e: the loss of
    every path (`BinaryCrossentropy`, `PWiseRLoss`, `CtrCvrTask`).

    Args:
      bce_terms, extra_terms: `(weight, term)` pairs.
      pwiser_weight, pwiser_term: lambda and the PWiseR term (skipped at 0).
      valid: whether every label is 0, 1 or missing (`kernel.check_labels`): the
        loss is NaN otherwise, as XLA drops the labels' assertion.
      rows: for `reduction="none"`, a `[B]` tensor of the batch: the loss is then
        per row (a scalar term goes to every row) and returned as it is.

    Returns:
      Reduced (`rows=None`), the terms are values of the global batch and the
      loss is this replica's share of their sum (`replicas.share`, the identity on
      one device); a model's own terms (`extra_terms`) may be the replica's means,
      whose shares then average them.
    """
    terms = list(bce_terms) + ([(pwiser_weight, pwiser_term)] if pwiser_weight else [])
    total = tf.zeros([], tf.float32) if rows is None else tf.zeros_like(rows, tf.float32)
    for weight, term in terms + list(extra_terms):
        total += weight * tf.cast(term, tf.float32)
    if rows is None:
        total = replicas_lib.share(total)
    return total if valid is None else tf.where(valid, total, np.nan)


def split_packed(y_true, y_pred, owner: str = "PWiseRLoss"):
    """`(click, conversion, scores)` from a packed `[B, 2]` target and `[B]` or
    `[B, 1]` predictions, all float32 `[B]`; bad shapes name `owner`."""
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


def row_weights(sample_weight, rows, owner: str = "PWiseRLoss"):
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


def _rows(value) -> tf.Tensor:
    """A `[B]` or `[B, 1]` tensor as float32 `[B]`."""
    value = tf.cast(tf.convert_to_tensor(value), tf.float32)
    return tf.reshape(value, [-1]) if value.shape.rank == 2 else value


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class BinaryCrossentropy(tf.keras.losses.Loss):
    """BCE of `[B]` (or `[B, 1]`) predictions on a label in {0, 1}; a label below 0
    is missing: its row leaves the term, and a mean counts the labelled rows only.

    Probabilities are clipped to [1e-7, 1 - 1e-7]. Under a `tf.distribute`
    strategy the reduction is over the global batch and each replica returns its
    share (`pwiser_tf.replicas`). `CtrCvrTask` takes one for its BCE terms.

    Args:
      from_logits: whether `y_pred` holds logits instead of probabilities.
      reduction: Keras' reduction of the rows (see `pwiser_tf.replicas`); the
        attribute `reduction` holds what is declared to Keras, `batch_reduction`
        this one.
      name: the loss name.

    Example:

    >>> loss = BinaryCrossentropy()
    >>> round(float(loss([1., 0., -1.], [0.8, 0.4, 0.9])), 4)  # the 3rd is missing
    0.367
    """

    def __init__(self, from_logits: bool = False, reduction: str = "sum_over_batch_size",
                 name: str = "binary_crossentropy"):
        self.batch_reduction = replicas_lib.check_reduction(reduction, type(self).__name__)
        super().__init__(reduction=replicas_lib.declared_reduction(self.batch_reduction),
                         name=name)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        """Per-row BCE, 0 where the label is missing."""
        labels, scores = _rows(y_true), _rows(y_pred)
        target = tf.maximum(labels, 0.0)
        if self.from_logits:
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=scores)
        else:
            bce = binary_crossentropy(target, scores)
        return tf.where(labels >= 0, bce, 0.0)

    def term(self, y_true, y_pred, sample_weight=None):
        """The BCE of the global batch, reduced by `batch_reduction` (with `"none"`,
        this replica's weighted rows); `sample_weight` as `[B]` or None."""
        labelled = tf.cast(_rows(y_true) >= 0, tf.float32)
        return replicas_lib.reduce_rows(self.call(y_true, y_pred), labelled,
                                        self.batch_reduction, sample_weight)

    def __call__(self, y_true, y_pred, sample_weight=None):
        labels = _rows(y_true)
        valid = kernel.check_labels(labels, tf.zeros_like(labels), where=self.name)
        weight = row_weights(sample_weight, labels, owner=type(self).__name__)
        return compose([(1.0, self.term(labels, y_pred, weight))], valid=valid,
                       rows=labels if self.batch_reduction == "none" else None)

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.batch_reduction, from_logits=self.from_logits)
        config.pop("dtype", None)  # Keras 3 adds it; the loss always computes in float32
        return config


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
      reduction: Keras' reduction of the BCE part (see the module docstring for
        `"none"`); the attribute `reduction` holds what is declared to Keras
        (`pwiser_tf.replicas`), `batch_reduction` this one.
      name: the loss name.
    """

    def __init__(self, pwiser_weight: float = kernel.PWISER_WEIGHT,
                 margin_click: float = kernel.MARGIN_CLICK,
                 margin_nonclick: float = kernel.MARGIN_NONCLICK, squared: bool = SQUARED,
                 normalization: str = NORMALIZATION, from_logits: bool = False,
                 pwiser_scores: str = PWISER_SCORES, bce: bool = True,
                 conversion_without_click: str = "error", pairs: str = PAIRS_DEFAULT,
                 reduction: str = "sum_over_batch_size", name: str = "pwiser_loss"):
        self.batch_reduction = replicas_lib.check_reduction(reduction, "PWiseRLoss")
        super().__init__(reduction=replicas_lib.declared_reduction(self.batch_reduction),
                         name=name)
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
        self.click_bce = BinaryCrossentropy(from_logits, self.batch_reduction, f"{name}_bce")

    def call(self, y_true, y_pred):
        """Per-example BCE on the click label (0 where the click is missing;
        NaN everywhere if a label is not 0, 1 or missing, see `kernel.check_labels`)."""
        click, conversion, y_pred = split_packed(y_true, y_pred)
        valid = kernel.check_labels(click, conversion, where=self.name)
        return tf.where(valid, self.click_bce.call(click, y_pred), np.nan)

    def __call__(self, y_true, y_pred, sample_weight=None):
        click, conversion, scores = split_packed(y_true, y_pred)
        weight = row_weights(sample_weight, click)
        valid = kernel.check_labels(click, conversion, where=self.name)
        bce = [(1.0, self.click_bce.term(click, scores, weight))] if self.bce else []
        term = (self._pwiser(click, conversion, scores, weight) if self.pwiser_weight
                else None)
        return compose(bce, self.pwiser_weight, term, valid=valid,
                       rows=click if self.batch_reduction == "none" else None)

    def pwiser_term(self, y_true, y_pred, sample_weight=None):
        """The PWiseR term alone, unweighted by `pwiser_weight`, on the scores
        `pwiser_scores` names (`CtrCvrTask` adds it to its BCE terms), over the
        rows that `pairs` names: all replicas' or this replica's."""
        click, conversion, scores = split_packed(y_true, y_pred)
        return self._pwiser(click, conversion, scores, row_weights(sample_weight, click))

    def _pwiser(self, click, conversion, y_pred, sample_weight):
        scores = y_pred
        if self.from_logits and self.pwiser_scores == "probability":
            scores = tf.sigmoid(y_pred)
        elif not self.from_logits and self.pwiser_scores == "logit":
            scores = logit(y_pred)
        rows = [scores, click, conversion]
        if sample_weight is not None:
            rows.append(sample_weight)
        rows = replicas_lib.gather(rows, self.pairs)
        return kernel.pwiser(rows[0], rows[1], rows[2], margin_click=self.margin_click,
                             margin_nonclick=self.margin_nonclick, squared=self.squared,
                             normalization=self.normalization,
                             sample_weight=rows[3] if len(rows) > 3 else None,
                             conversion_without_click=self.conversion_without_click)

    def get_config(self):
        config = super().get_config()
        config.update({
            "pwiser_weight": self.pwiser_weight, "margin_click": self.margin_click,
            "margin_nonclick": self.margin_nonclick, "squared": self.squared,
            "normalization": self.normalization, "from_logits": self.from_logits,
            "pwiser_scores": self.pwiser_scores, "bce": self.bce,
            "conversion_without_click": self.conversion_without_click,
            "pairs": self.pairs, "reduction": self.batch_reduction,
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
        labels = split_packed(y_true, y_pred, owner="PackedAUC")
        target, scores = labels[LABELS.index(self.label)], labels[2]
        weight = tf.cast(target >= 0, tf.float32)
        sample_weight = row_weights(sample_weight, target, owner="PackedAUC")
        if sample_weight is not None:
            weight *= sample_weight
        return super().update_state(tf.maximum(target, 0.0), scores, sample_weight=weight)

    def get_config(self):
        config = super().get_config()
        config["label"] = self.label
        return config


__all__ = ["PWiseRLoss", "BinaryCrossentropy", "PackedAUC", "compose", "binary_crossentropy",
           "logit", "split_packed", "row_weights"]
