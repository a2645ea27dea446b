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

The classes here are Keras 3 losses, written in `keras.ops`: they run on the
TensorFlow, JAX and PyTorch backends and are registered with
`keras.saving.register_keras_serializable`. Their computation lives in the mixins
`BinaryCrossentropyTerms`, `PWiseRTerms` and `PackedLabel`; `pwiser_tf.tf_keras_losses`
binds the same mixins to tf-keras' `Loss` and `AUC` for tf-keras `compile` and
`tfrs.tasks.Ranking` (`TF_USE_LEGACY_KERAS=1`), where the backend of `keras.ops`
is TensorFlow. `pwiser_tf.PWiseRLoss` is the one of the Keras that `tf.keras` is.

A loss given to `compile` sees one output and one target at a time, so the
target of `PWiseRLoss` packs both labels: `y_true[:, 0]` is the click and
`y_true[:, 1]` the conversion (and, with `grouped=True`, `y_true[:, 2]` the group
ids whose rows alone pair: a search, a session, a user). For a two-headed model, either give PWiseR its own
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

Why `__call__` and not only `call`: PWiseR weighs a pair by `w_i * w_j` and
normalises by sums of weights, which Keras' row-wise `sample_weight` cannot express,
and under `tf.distribute` its rows come from every replica. So `call` gives the
per-row part (Keras' contract: BCE per row) and `__call__` composes it, reduced as
Keras reduces it (`pwiser_tf.replicas.reduce_rows`), with the batch-level term.

Under JAX's `keras.distribution.DataParallel` the loss is traced over the
global batch, so every term is the global batch's as it is. Under a
`tf.distribute` strategy every term is taken over the global batch (the
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

import keras
import numpy as np
from keras import ops

from pwiser_tf import backend, kernel
from pwiser_tf import replicas as replicas_lib
from pwiser_tf.errors import InputError
from pwiser_tf.options import (MARGIN_CLICK, MARGIN_NONCLICK, NORMALIZATION, PAIRS_DEFAULT,
                               PWISER_SCORES, PWISER_WEIGHT, SCORES, SQUARED)

LABELS = ("click", "conversion")  # the packed target's columns
PACKED = {2: "[B, 2] = (click, conversion)", 3: "[B, 3] = (click, conversion, group)"}
_EPSILON = 1e-7


def logit(probability):
    """log(p / (1 - p)), with p clipped to [1e-7, 1 - 1e-7]."""
    p = ops.clip(ops.cast(probability, "float32"), _EPSILON, 1.0 - _EPSILON)
    return ops.log(p) - ops.log1p(-p)


def binary_crossentropy(labels, probabilities):
    """Per-example BCE of probabilities clipped to [1e-7, 1 - 1e-7]."""
    p = ops.clip(probabilities, _EPSILON, 1.0 - _EPSILON)
    return -(labels * ops.log(p) + (1.0 - labels) * ops.log1p(-p))


def binary_crossentropy_from_logits(labels, logits):
    """Per-example BCE of logits, in the overflow-free form."""
    return ops.relu(logits) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))


def compose(bce_terms: Sequence[Tuple[float, object]], pwiser_weight: float = 0.0,
            pwiser_term=None, extra_terms: Sequence[Tuple[float, object]] = (), valid=None,
            rows=None):
    """sum_h w_h * BCE_h + pwiser_weight * PWiseR + sum_e w_e * extra_e: the loss of
    every path (`BinaryCrossentropy`, `PWiseRLoss`, `CtrCvrTask`).

    Args:
      bce_terms, extra_terms: `(weight, term)` pairs.
      pwiser_weight, pwiser_term: lambda and the PWiseR term (skipped at 0).
      valid: whether every label is 0, 1 or missing (`kernel.check_labels`): the
        loss is NaN otherwise, as compiled steps drop the labels' assertion.
      rows: for `reduction="none"`, a `[B]` tensor of the batch: the loss is then
        per row (a scalar term goes to every row) and returned as it is.

    Returns:
      Reduced (`rows=None`), the terms are values of the global batch and the
      loss is this replica's share of their sum (`replicas.share`, the identity on
      one device); a model's own terms (`extra_terms`) may be the replica's means,
      whose shares then average them.
    """
    terms = list(bce_terms) + ([(pwiser_weight, pwiser_term)] if pwiser_weight else [])
    total = ops.zeros((), "float32") if rows is None else ops.zeros_like(rows, "float32")
    for weight, term in terms + list(extra_terms):
        total = total + weight * ops.cast(term, "float32")
    if rows is None:
        total = replicas_lib.share(total)
    return total if valid is None else ops.where(valid, total, np.nan)


def _rows_of(value, argument: str, owner: str):
    """A tensor of the backend, with a clear error for another backend's tensor."""
    backend.check_framework(argument, value, owner)
    return ops.convert_to_tensor(value)


def _floats(value, argument: str, owner: str):
    """`value` as float32; integer predictions (labels passed by mistake) are refused."""
    dtype = keras.backend.standardize_dtype(value.dtype)
    if dtype not in kernel.FLOATS:
        raise InputError(f"{owner}: {argument} must be floating point, got {dtype}")
    return ops.cast(value, "float32")


def split_packed(y_true, y_pred, owner: str = "PWiseRLoss", columns=(2,)):
    """`(click, conversion, scores, group)` from a packed `[B, 2]` target, or
    `[B, 3]` with the group ids third, and `[B]` or `[B, 1]` predictions, all
    float32 `[B]` (group None for two columns); `columns`: the widths `owner`
    takes; bad shapes name `owner`."""
    y_true = _rows_of(y_true, "y_true", owner)
    y_pred = _floats(_rows_of(y_pred, "y_pred", owner), "y_pred", owner)
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(true_shape) != 2 or (true_shape[1] is not None and true_shape[1] not in columns):
        hint = ("; a third column of group ids needs grouped=True"
                if owner == "PWiseRLoss" and len(true_shape) == 2 and true_shape[1] == 3
                else "")
        raise InputError(f"{owner}: y_true must be "
                         + " or ".join(PACKED[c] for c in columns)
                         + f", got shape {true_shape}{hint}")
    if len(pred_shape) == 2 and pred_shape[1] == 1:
        y_pred = y_pred[:, 0]
    elif len(pred_shape) != 1:
        raise InputError(f"{owner}: y_pred must be [B] or [B, 1], got {pred_shape}")
    rows = (true_shape[0], pred_shape[0])
    message = (f"{owner}: y_true and y_pred must have the same rows (y_true [B, 2], "
               f"y_pred [B] or [B, 1])")
    if None not in rows and rows[0] != rows[1]:
        raise InputError(f"{message}; got y_true {true_shape} and y_pred "
                         f"{pred_shape[0]} rows")
    if None in rows:  # a TensorFlow graph: checked before any op that would mix them
        y_true, y_pred = backend.graph_assert(
            ops.equal(ops.shape(y_true)[0], ops.shape(y_pred)[0]), message, y_true, y_pred)
    y_true = ops.cast(y_true, "float32")
    group = y_true[:, 2] if true_shape[1] == 3 else None
    return y_true[:, 0], y_true[:, 1], y_pred, group


def row_weights(sample_weight, rows, owner: str = "PWiseRLoss"):
    """`sample_weight` as `[B]` float32 (a scalar or `[B, 1]` too, as in Keras)."""
    if sample_weight is None:
        return None
    weight = ops.cast(_rows_of(sample_weight, "sample_weight", owner), "float32")
    if len(weight.shape) == 0:
        return ops.ones_like(rows, "float32") * weight
    weight = ops.reshape(weight, (-1,))
    if weight.shape[0] is not None and rows.shape[0] is not None \
            and weight.shape[0] != rows.shape[0]:
        raise InputError(f"{owner}: sample_weight must be a scalar or have one value "
                         f"per row ({rows.shape[0]}), got shape {tuple(sample_weight.shape)}")
    return weight


def _rows(value):
    """A `[B]` or `[B, 1]` tensor as float32 `[B]`."""
    value = ops.cast(ops.convert_to_tensor(value), "float32")
    return ops.reshape(value, (-1,)) if len(value.shape) == 2 else value


def _config(loss, base: dict, **options) -> dict:
    base.update(options)
    base.pop("dtype", None)  # Keras 3 adds it; the loss always computes in float32
    return base


class BinaryCrossentropyTerms:
    """The computation of `BinaryCrossentropy`, for either Keras' `Loss` (see its
    docstring); `_TF_KERAS` says which Keras the class is bound to."""

    _TF_KERAS = False

    def __init__(self, from_logits: bool = False, reduction: str = "sum_over_batch_size",
                 name: str = "binary_crossentropy"):
        self.batch_reduction = replicas_lib.check_reduction(reduction, type(self).__name__)
        super().__init__(reduction=replicas_lib.declared_reduction(
            self.batch_reduction, tf_keras=self._TF_KERAS), name=name)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        """Per-row BCE, 0 where the label is missing."""
        labels, scores = _rows(y_true), _rows(y_pred)
        target = ops.maximum(labels, 0.0)
        bce = (binary_crossentropy_from_logits(target, scores) if self.from_logits
               else binary_crossentropy(target, scores))
        return ops.where(labels >= 0, bce, 0.0)

    def term(self, y_true, y_pred, sample_weight=None):
        """The BCE of the global batch, reduced by `batch_reduction` (with `"none"`,
        this replica's weighted rows); `sample_weight` as `[B]` or None."""
        labelled = ops.cast(_rows(y_true) >= 0, "float32")
        return replicas_lib.reduce_rows(self.call(y_true, y_pred), labelled,
                                        self.batch_reduction, sample_weight)

    def __call__(self, y_true, y_pred, sample_weight=None):
        owner = type(self).__name__
        labels = _rows(_rows_of(y_true, "y_true", owner))
        y_pred = _floats(_rows_of(y_pred, "y_pred", owner), "y_pred", owner)
        valid = kernel.check_labels(labels, ops.zeros_like(labels), where=self.name)
        weight = row_weights(sample_weight, labels, owner=owner)
        return compose([(1.0, self.term(labels, y_pred, weight))], valid=valid,
                       rows=labels if self.batch_reduction == "none" else None)

    def get_config(self):
        return _config(self, super().get_config(), reduction=self.batch_reduction,
                       from_logits=self.from_logits)


class PWiseRTerms:
    """The computation of `PWiseRLoss`, for either Keras' `Loss` (see its docstring)."""

    _TF_KERAS = False
    _BCE = None  # the BinaryCrossentropy class of the same Keras

    def __init__(self, pwiser_weight: float = PWISER_WEIGHT,
                 margin_click: float = MARGIN_CLICK,
                 margin_nonclick: float = MARGIN_NONCLICK, squared: bool = SQUARED,
                 normalization: str = NORMALIZATION, from_logits: bool = False,
                 pwiser_scores: str = PWISER_SCORES, bce: bool = True,
                 conversion_without_click: str = "error", pairs: str = PAIRS_DEFAULT,
                 grouped: bool = False, reduction: str = "sum_over_batch_size",
                 name: str = "pwiser_loss"):
        self.batch_reduction = replicas_lib.check_reduction(reduction, "PWiseRLoss")
        super().__init__(reduction=replicas_lib.declared_reduction(
            self.batch_reduction, tf_keras=self._TF_KERAS), name=name)
        if pwiser_scores not in SCORES:
            raise InputError(f"pwiser_scores must be one of {SCORES}, got {pwiser_scores!r}")
        kernel.check_settings(pwiser_weight=pwiser_weight, margin_click=margin_click,
                              margin_nonclick=margin_nonclick)
        kernel.check_options(normalization, conversion_without_click)
        self.pwiser_weight = float(pwiser_weight)
        self.margin_click, self.margin_nonclick = float(margin_click), float(margin_nonclick)
        self.squared, self.normalization = bool(squared), normalization
        self.from_logits, self.pwiser_scores = bool(from_logits), pwiser_scores
        self.bce = bool(bce)
        self.conversion_without_click = conversion_without_click
        self.pairs = replicas_lib.check_pairs(pairs)
        self.grouped = bool(grouped)
        self.click_bce = self._BCE(from_logits, self.batch_reduction, f"{name}_bce")

    def _split(self, y_true, y_pred):
        return split_packed(y_true, y_pred, columns=(3,) if self.grouped else (2,))

    def call(self, y_true, y_pred):
        """Per-example BCE on the click label (0 where the click is missing;
        NaN everywhere if a label is not 0, 1 or missing, see `kernel.check_labels`)."""
        click, conversion, y_pred, _ = self._split(y_true, y_pred)
        valid = kernel.check_labels(click, conversion, where=self.name)
        return ops.where(valid, self.click_bce.call(click, y_pred), np.nan)

    def __call__(self, y_true, y_pred, sample_weight=None):
        click, conversion, scores, group = self._split(y_true, y_pred)
        weight = row_weights(sample_weight, click)
        valid = kernel.check_labels(click, conversion, where=self.name)
        bce = [(1.0, self.click_bce.term(click, scores, weight))] if self.bce else []
        term = (self._pwiser(click, conversion, scores, weight, group) if self.pwiser_weight
                else None)
        return compose(bce, self.pwiser_weight, term, valid=valid,
                       rows=click if self.batch_reduction == "none" else None)

    def pwiser_term(self, y_true, y_pred, sample_weight=None):
        """The PWiseR term alone, unweighted by `pwiser_weight`, on the scores
        `pwiser_scores` names (`CtrCvrTask` adds it to its BCE terms), over the
        rows that `pairs` names: all replicas' or this replica's."""
        click, conversion, scores, group = self._split(y_true, y_pred)
        return self._pwiser(click, conversion, scores, row_weights(sample_weight, click),
                            group)

    def _pwiser(self, click, conversion, y_pred, sample_weight, group=None):
        scores = y_pred
        if self.from_logits and self.pwiser_scores == "probability":
            scores = ops.sigmoid(y_pred)
        elif not self.from_logits and self.pwiser_scores == "logit":
            scores = logit(y_pred)
        rows = {"scores": scores, "click": click, "conversion": conversion,
                "sample_weight": sample_weight, "group": group}
        names = [name for name, value in rows.items() if value is not None]
        rows = dict(zip(names, replicas_lib.gather([rows[n] for n in names], self.pairs)))
        return kernel.pwiser(rows["scores"], rows["click"], rows["conversion"],
                             margin_click=self.margin_click,
                             margin_nonclick=self.margin_nonclick, squared=self.squared,
                             normalization=self.normalization,
                             sample_weight=rows.get("sample_weight"),
                             conversion_without_click=self.conversion_without_click,
                             group=rows.get("group"))

    def get_config(self):
        return _config(self, super().get_config(), **{
            "pwiser_weight": self.pwiser_weight, "margin_click": self.margin_click,
            "margin_nonclick": self.margin_nonclick, "squared": self.squared,
            "normalization": self.normalization, "from_logits": self.from_logits,
            "pwiser_scores": self.pwiser_scores, "bce": self.bce,
            "conversion_without_click": self.conversion_without_click,
            "pairs": self.pairs, "grouped": self.grouped, "reduction": self.batch_reduction,
        })


class PackedLabel:
    """The computation of `PackedAUC`, for either Keras' `AUC` (see its docstring)."""

    def __init__(self, label: str = "click", name=None, **kwargs):
        if label not in LABELS:
            raise InputError(f"label must be one of {LABELS}, got {label!r}")
        super().__init__(name=name or f"{label}_auc", **kwargs)
        self.label = label

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = split_packed(y_true, y_pred, owner="PackedAUC", columns=(2, 3))
        target, scores = labels[LABELS.index(self.label)], labels[2]
        weight = ops.cast(target >= 0, "float32")
        sample_weight = row_weights(sample_weight, target, owner="PackedAUC")
        if sample_weight is not None:
            weight = weight * sample_weight
        return super().update_state(ops.maximum(target, 0.0), scores, sample_weight=weight)

    def get_config(self):
        config = super().get_config()
        config["label"] = self.label
        return config


@keras.saving.register_keras_serializable(package="pwiser_tf")
class BinaryCrossentropy(BinaryCrossentropyTerms, keras.losses.Loss):
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


@keras.saving.register_keras_serializable(package="pwiser_tf")
class PWiseRLoss(PWiseRTerms, keras.losses.Loss):
    """BCE(click, p) + `pwiser_weight` * PWiseR(p; click, conversion), on any backend.

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
        on one device, nor under JAX's `DataParallel`, which traces the loss over
        the global batch. See `pwiser_tf.replicas`.
      grouped: whether `y_true` is `[B, 3]` with group ids third (a search, a
        session, a user; integers below 2^24, as float32 holds them exactly, e.g.
        the batch's `unique` index): PWiseR then pairs rows of one group only
        (`pwiser_tf.pwiser(group=...)`).
      reduction: Keras' reduction of the BCE part (see the module docstring for
        `"none"`); the attribute `reduction` holds what is declared to Keras
        (`pwiser_tf.replicas`), `batch_reduction` this one.
      name: the loss name.
    """

    _BCE = BinaryCrossentropy


@keras.saving.register_keras_serializable(package="pwiser_tf")
class PackedAUC(PackedLabel, keras.metrics.AUC):
    """Keras' `AUC` of one label of the packed `[click, conversion]` target.

    A `tfrs.tasks.Ranking` task gives its labels to the loss and to each metric
    alike; with `PWiseRLoss` they are packed `[B, 2]`, which Keras' `AUC` cannot
    read. This AUC reads the column `label` names; rows where that label is
    missing (below 0) are left out.

    Args:
      label: `"click"` (default) or `"conversion"`.
      name: the metric name (default `"<label>_auc"`).
      **kwargs: the options of Keras' `AUC` (`num_thresholds`, ...).

    Example:

    >>> auc = PackedAUC()
    >>> _ = auc.update_state([[1., 1.], [0., 0.], [1., 0.]], [[0.9], [0.1], [0.4]])
    >>> float(auc.result())
    1.0
    """


__all__ = ["PWiseRLoss", "BinaryCrossentropy", "PackedAUC", "compose", "binary_crossentropy",
           "binary_crossentropy_from_logits", "logit", "split_packed", "row_weights",
           "BinaryCrossentropyTerms", "PWiseRTerms", "PackedLabel"]
