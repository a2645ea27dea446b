"""The PWiseR pairwise ranking term, exact in O(B log B) with static shapes.

Groups inside one batch (click c, conversion v; v = 1 implies c = 1):
S3 = converted clicks (reliable positives), S2 = clicks without conversion,
S1 = no click. With p the scores the term acts on,

    PWiseR = (1/N) sum_{i in S2} sum_{j in S3} max(0, p_i - p_j + margin_click)^2
           + (1/K) sum_{k in S1} sum_{j in S3} max(0, p_k - p_j + margin_nonclick)^2

`pwiser` computes it without a B x B matrix. For one term, write q_a = p_a + m
for each anchor a (S2 or S1); a positive j pays sum_{a: q_a > p_j} w_a (q_a - p_j)^2.
One descending sort of the keys (q_a for anchors, p_j for positives) puts the
anchors that a positive pays for before it. A prefix scan along the sorted keys
carries, per group, the anchors' weight n, sum w d and sum w d^2, where d is each
anchor's distance to the current key; stepping down by a gap g >= 0 updates them
as n, S1 + n g, S2 + 2 g S1 + n g^2. Every term is non-negative and every gap a
difference of nearby scores, so nothing cancels: the term keeps float32's relative
accuracy wherever the scores sit (an expanded square centred on one mean loses it
far from that mean). The steps compose associatively, so the scan takes
ceil(log2 B) rounds of O(B) work. Ties contribute 0 at the hinge, so where they
sort does not matter. Gradients flow through the gaps (the sort order is piecewise
constant). Everything is static-shaped and written once in `keras.ops`: it runs
on TensorFlow (graph, `jit_compile=True`, a `tf.distribute` replica, TPU, and under
tf-keras), JAX (`jax.jit`) and PyTorch; `pwiser_tf.backend` holds what `keras.ops`
leaves to the backend (a stable sort).

`pwiser_dense` is the O(B^2) definition, kept for tests and benchmarks.

Example:

>>> import numpy as np
>>> scores = np.array([0.9, 0.2, 0.6, 0.1], "float32")
>>> click = np.array([1., 1., 1., 0.], "float32")
>>> conversion = np.array([1., 0., 0., 0.], "float32")
>>> round(float(pwiser(scores, click, conversion, margin_click=0.5,
...                    margin_nonclick=0.5)), 4)
0.02
"""
import math

import keras
import numpy as np
from keras import ops

from pwiser_tf import backend
from pwiser_tf.errors import InputError
# The defaults of the papers' open constants and the choices, written once (see there).
from pwiser_tf.options import MARGIN_CLICK, MARGIN_NONCLICK, NORMALIZATIONS, PWISER_WEIGHT
from pwiser_tf.options import CONVERSION_WITHOUT_CLICK_IN_LOSS as CONVERSION_WITHOUT_CLICK

FLOATS = ("float16", "bfloat16", "float32", "float64")


def _dtype(value) -> str:
    return keras.backend.standardize_dtype(value.dtype)


def _tensor(name: str, value, owner: str = "pwiser"):
    backend.check_framework(name, value, owner)
    return ops.convert_to_tensor(value)


def _flat(name: str, value, owner: str = "pwiser"):
    value = _tensor(name, value, owner)
    shape = tuple(value.shape)
    if len(shape) == 2 and shape[1] == 1:
        return value[:, 0]
    if len(shape) != 1:
        raise InputError(f"{owner}: {name} must have shape [B] or [B, 1], got "
                         f"{list(shape)}")
    return value


def _float32(value):
    # float16 / bfloat16 inputs are computed in float32: the sums need the range.
    return ops.cast(value, "float32")


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number))


def check_options(normalization: str, conversion_without_click: str,
                  margin_click=0.0, margin_nonclick=0.0) -> None:
    """Refuse a normalization, a conversion_without_click or a margin out of range."""
    margins = {"margin_click": margin_click, "margin_nonclick": margin_nonclick}
    check_settings(**{k: v for k, v in margins.items() if _is_number(v)})
    if normalization not in NORMALIZATIONS:
        raise InputError(f"normalization must be one of {NORMALIZATIONS}, "
                         f"got {normalization!r}")
    if conversion_without_click not in CONVERSION_WITHOUT_CLICK:
        raise InputError(f"conversion_without_click must be one of "
                         f"{CONVERSION_WITHOUT_CLICK}, got {conversion_without_click!r}")


def check_settings(**settings) -> None:
    """Refuse a weight or margin that is not a finite number >= 0 (NaN passes `x < 0`)."""
    for name, value in settings.items():
        if not (math.isfinite(float(value)) and float(value) >= 0):
            raise InputError(f"{name} must be a finite number >= 0, got {value}")


def check_labels(click, conversion, where: str = "pwiser"):
    """Labels must be 0, 1 or below 0 (missing), on every path and backend.

    Eagerly, a bad label raises `InputError` naming it. In a TensorFlow graph
    (`tf.function`, `fit`, a TFRS task) an assertion stops the step. XLA, JAX and
    compiled PyTorch have no assertions, so the boolean returned (all labels
    valid) lets the caller turn its loss into NaN there, which the trainer reports.
    """
    labels = {"click": _float32(click), "conversion": _float32(conversion)}
    valid = None
    for x in labels.values():
        ok = ops.all(ops.logical_or(ops.logical_or(x == 0, x == 1), x < 0))
        valid = ok if valid is None else ops.logical_and(valid, ok)
    for name, x in labels.items():
        values = backend.concrete(x)
        if values is None:
            continue
        values = np.asarray(values, np.float64).reshape(-1)
        bad = ~((values == 0) | (values == 1) | (values < 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{where}: {name} labels must be 0, 1 or negative "
                             f"(missing); {name}[{i}] = {values[i]:g}")
    backend.graph_assert(valid, f"{where}: click and conversion labels must be 0, 1 "
                                f"or negative (missing)")
    return valid


def _check_values(scores, click, conversion, sample_weight, conversion_without_click):
    """Shapes, and where the values are at hand (eager) the values; traced, the
    labels are left to `check_labels` (no host round trip, nothing that breaks XLA)."""
    if _dtype(scores) not in FLOATS:
        raise InputError(f"pwiser: scores must be floating point, got {_dtype(scores)}")
    sizes = {"scores": scores.shape[0], "click": click.shape[0],
             "conversion": conversion.shape[0]}
    if sample_weight is not None:
        sizes["sample_weight"] = sample_weight.shape[0]
    known = {k: v for k, v in sizes.items() if v is not None}
    if len(set(known.values())) > 1:
        raise InputError("pwiser: batch sizes differ: "
                         + ", ".join(f"{k} {v}" for k, v in known.items()))
    c, v = backend.concrete(click), backend.concrete(conversion)
    if c is not None and v is not None:
        c, v = np.asarray(c, np.float64), np.asarray(v, np.float64)
        orphan = (v == 1) & (c == 0)
        if conversion_without_click == "error" and orphan.any():
            i = int(np.flatnonzero(orphan)[0])
            raise InputError(
                f"pwiser: conversion without a click at index {i} ({int(orphan.sum())} in "
                f"the batch); pass conversion_without_click='as_click' to count them as "
                f"clicks")
    w = None if sample_weight is None else backend.concrete(sample_weight)
    if w is not None and not np.all(np.asarray(w) >= 0):
        raise InputError("pwiser: sample_weight must be non-negative and not NaN")


def _groups(click, conversion, sample_weight, conversion_without_click):
    """Weights of each exposure in S3, S2 and S1 (0 outside the group)."""
    click, conversion = _float32(click), _float32(conversion)
    weight = ops.ones_like(click) if sample_weight is None else _float32(sample_weight)
    known = ops.logical_and(click >= 0, conversion >= 0)  # below 0 = missing
    converted = conversion > 0.5
    clicked = click > 0.5
    if conversion_without_click == "as_click":
        clicked = ops.logical_or(clicked, converted)
    else:  # traced: an orphan conversion belongs to no group
        known = ops.logical_and(known, ops.logical_or(clicked, ops.logical_not(converted)))
    zero = ops.zeros_like(weight)
    weight = ops.where(known, weight, zero)
    w3 = ops.where(ops.logical_and(clicked, converted), weight, zero)
    w2 = ops.where(ops.logical_and(clicked, ops.logical_not(converted)), weight, zero)
    w1 = ops.where(ops.logical_not(clicked), weight, zero)
    return w3, w2, w1


def _prepare(scores, click, conversion, sample_weight, normalization,
             conversion_without_click, margin_click, margin_nonclick):
    check_options(normalization, conversion_without_click, margin_click, margin_nonclick)
    scores, click, conversion = (_flat(n, x) for n, x in
                                 (("scores", scores), ("click", click),
                                  ("conversion", conversion)))
    if sample_weight is not None:
        sample_weight = _tensor("sample_weight", sample_weight)
        if len(sample_weight.shape) == 0:  # a scalar weighs every row, as in Keras
            sample_weight = ops.ones_like(_float32(scores)) * _float32(sample_weight)
        sample_weight = _flat("sample_weight", sample_weight)
    _check_values(scores, click, conversion, sample_weight, conversion_without_click)
    valid = check_labels(click, conversion)
    return (valid, _float32(scores)) + _groups(click, conversion, sample_weight,
                                               conversion_without_click)


def _group(group, scores):
    """`group` as `[B]` ids of the scores' rows; floats must hold integers."""
    group = _flat("group", group)
    if tuple(group.shape)[0] is not None and tuple(scores.shape)[0] is not None \
            and group.shape[0] != scores.shape[0]:
        raise InputError(f"pwiser: group must have one id per row ({scores.shape[0]}), "
                         f"got {group.shape[0]}")
    dtype = _dtype(group)
    if dtype == "bool" or not (dtype.startswith("int") or dtype.startswith("uint")
                               or dtype in FLOATS):
        raise InputError(f"pwiser: group must hold integer ids, got {dtype}")
    values = backend.concrete(group)
    if dtype in FLOATS and values is not None:
        values = np.asarray(values, np.float64)
        bad = values != np.round(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"pwiser: group must hold integer ids; group[{i}] = "
                             f"{values[i]:g}")
    return group


def _normalize(total, anchors_weight, positives_weight, normalization):
    denominator = anchors_weight if normalization == "anchor" else \
        anchors_weight * positives_weight
    return ops.divide_no_nan(total, denominator)


def _exclusive_cumsum(x):
    return ops.cumsum(x) - x


def _descending_positives_first(key, positive):
    """The descending order of `key`; among equal keys, positives come first.

    An anchor tied with a positive then falls after it and is left out of its
    sums, as the hinge's derivative at 0 says. Positives are moved to the front
    with an O(B) compaction, so one stable sort settles the ties.
    """
    positive_i = ops.cast(positive, "int32")
    destination = ops.where(positive, _exclusive_cumsum(positive_i),
                            ops.sum(positive_i) + _exclusive_cumsum(1 - positive_i))
    rows = ops.cumsum(ops.ones_like(positive_i)) - 1  # 0..B-1, also for a traced B
    front = backend.scatter(destination, rows, ops.shape(key))
    order = backend.stable_argsort(-ops.stop_gradient(ops.take(key, front)))
    return ops.take(front, order)


def _shift(state, delta):
    """Move the reference of the sums (n, sum of d, sum of d^2) by `delta` >= 0
    away from the rows they sum over: every d grows by delta. All terms are
    non-negative, so nothing cancels."""
    n, s1, s2 = state
    return n, s1 + n * delta, s2 + 2.0 * delta * s1 + n * ops.square(delta)


def _combine(earlier, later, segmented=False):
    """Compose two runs of the scan, `earlier` then `later` (associative). Each
    element is `[gap, n, S1, S2, n', S1', S2', ...]`: move the reference by `gap`,
    then add the element's own rows, one (n, S1, S2) per anchor group.

    `segmented`: the last entry of each element is 1 where a segment (a `group`
    of rows) starts inside the run; a run that holds a start takes nothing from
    before it (the segmented scan)."""
    if segmented:
        *earlier, earlier_start = earlier
        *later, later_start = later
    combined = [earlier[0] + later[0]]
    for g in range(1, len(earlier), 3):
        shifted = _shift(earlier[g:g + 3], later[0])
        combined += [a + b for a, b in zip(shifted, later[g:g + 3])]
    if segmented:
        combined = [ops.where(later_start > 0, own, both)
                    for own, both in zip(later, combined)]
        combined.append(ops.maximum(earlier_start, later_start))
    return combined


def _prefix_scan(elements, segmented=False):
    """Inclusive scan of `_combine` over `[B]` tensors. On JAX, XLA's associative
    scan; elsewhere Hillis-Steele: ceil(log2 B) rounds of O(B) each. With a static B
    (always on PyTorch) the rounds are unrolled and each shift is a slice; a
    TensorFlow graph with an unknown batch size loops, shifting by gathers."""
    size = elements[0].shape[0]
    if backend.name() == "jax":
        # jax.lax.associative_scan: work-efficient, several times faster under XLA
        # than the unrolled rounds (measured in benchmarks/bench_kernel.py).
        return list(ops.associative_scan(
            lambda earlier, later: tuple(_combine(list(earlier), list(later), segmented)),
            tuple(elements)))
    if size is not None:
        offset = 1
        while offset < size:
            earlier = [ops.concatenate([ops.zeros((offset,), "float32"), v[:-offset]], 0)
                       for v in elements]
            elements = _combine(earlier, elements, segmented)  # zeros: the identity
            offset *= 2
        return elements
    size = ops.shape(elements[0])[0]
    index = ops.cumsum(ops.ones_like(elements[0], "int32")) - 1

    def step(offset, *values):
        source = ops.maximum(index - offset, 0)
        has_earlier = index >= offset
        earlier = [ops.where(has_earlier, ops.take(v, source), ops.zeros_like(v))
                   for v in values]
        return (offset * 2, *_combine(earlier, list(values), segmented))

    result = ops.while_loop(lambda offset, *_: offset < size, step,
                            (ops.convert_to_tensor(1, "int32"), *elements),
                            maximum_iterations=32)
    return list(result[1:])


def _hinge_sums(p, margin, w3, w2, w1, squared, start=None):
    """Rows sorted by descending key (score + margin; positives before tied anchors).
    Returns `[2]`: for the S2 and the S1 anchors, sum_j w3_j sum_{a before j} w_a h(d_aj)
    with d_aj = p_a + m_a - p_j and h(d) = d^2 (or d), with its exact gradient
    with respect to `p`: both directions are non-negative scans, so the gradient
    keeps float32's relative accuracy as the value does.

    `start` (1 where a row begins a group, rows sorted by group first): a row then
    pairs only with the rows of its group (segmented scans)."""
    power = 2 if squared else 1
    segmented = start is not None
    if start is None:
        start = ops.zeros_like(w3)

    def above(x):  # each row's predecessor (the first row its own)
        return ops.concatenate([x[:1], x[:-1]], 0)

    def below(x):  # each row's successor (0 after the last)
        return ops.concatenate([x[1:], ops.zeros_like(x[:1])], 0)

    @ops.custom_gradient
    def sums(p, margin, w3, w2, w1, start):
        zero = ops.zeros_like(w3)
        flags = [start] if segmented else []
        # Gap between each key and the one above it, as a difference of scores
        # first (exact for close scores, as the definition's p_i - p_j + m). The
        # gaps telescope: a sum of them is the distance of its two ends. Where the
        # float32 keys p + m sorted two rows against their exact order, its gap is
        # below 0 by at most the keys' rounding, and the pair gets that tiny d.
        gap = (above(p) - p) + (above(margin) - margin)
        # Down the ranking: at each row, the anchors ranked before it, measured
        # from its key (n, sum w d, sum w d^2), for S2 and for S1.
        down = _prefix_scan([gap, w2, zero, zero, w1, zero, zero] + flags, segmented)
        # A positive pays at least 0 (the tiny d above could make it -ulp).
        totals = ops.stack([ops.sum(w3 * ops.maximum(down[g + power], 0.0))
                            for g in (1, 4)])

        def gradient(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            # Up the ranking: at each row, the positives ranked after it, measured
            # from its key (m, sum w3 d).
            # A group's last row starts its segment in this reversed order.
            last = [below(start) + ops.concatenate([zero[:-1], zero[:1] + 1.0], 0)]
            up = _prefix_scan([ops.flip(x, 0) for x in
                               [below(gap), w3, zero, zero] + (last if segmented else [])],
                              segmented)
            m, r1 = ops.flip(up[1], 0), ops.flip(up[2], 0)
            anchor_pull = 2.0 * r1 if squared else m
            grad = ops.zeros_like(p)
            for d, w, n, s1 in ((upstream[0], w2, down[1], down[2]),
                                (upstream[1], w1, down[4], down[5])):
                positive_push = 2.0 * s1 if squared else n
                grad = grad + d * (w * anchor_pull - w3 * positive_push)
            return grad, zero, zero, zero, zero, zero

        return totals, gradient

    return sums(p, ops.stop_gradient(margin), ops.stop_gradient(w3),
                ops.stop_gradient(w2), ops.stop_gradient(w1), ops.stop_gradient(start))


def pwiser(scores, click, conversion, *, margin_click: float = MARGIN_CLICK,
           margin_nonclick: float = MARGIN_NONCLICK, squared: bool = True,
           normalization: str = "anchor", sample_weight=None,
           conversion_without_click: str = "error", group=None):
    """The PWiseR term (without BCE), exact, in O(B log B), on any Keras backend.

    Args:
      scores: `[B]` or `[B, 1]` floating-point predictions the term acts on
        (pCTR by default in the models; probabilities or logits).
      click, conversion: `[B]` or `[B, 1]` labels in {0, 1}; below 0 = missing
        (the exposure joins no group). `conversion` = 1 requires `click` = 1.
      margin_click: margin of the S2 (click, no conversion) vs S3 pairs.
      margin_nonclick: margin of the S1 (no click) vs S3 pairs.
      squared: squared hinge (default, the papers') or plain hinge.
      normalization: `"anchor"` divides each term by the weight of its anchor
        group (1/N, 1/K: the papers'); `"pair"` by the weight of all its pairs.
      sample_weight: optional `[B]` non-negative weights (or a scalar); a pair
        counts `w_i * w_j` and each normaliser becomes a sum of weights.
      conversion_without_click: `"error"` (default) rejects a conversion without
        a click where the labels are at hand (eager; traced, such rows join no
        group); `"as_click"` counts it as a converted click.
      group: optional `[B]` integer ids (a search, a session, a user): only rows
        of the same id pair. The normalisers stay those of the whole batch, so
        one id for every row gives the ungrouped term. Ids are compared as given
        (on JAX without x64, as int32); integer-valued floats work too.

    The arguments are tensors of the backend Keras runs on (or NumPy arrays);
    under tf-keras that is TensorFlow.

    Returns:
      A float32 scalar of the backend; 0, with finite gradients, when a group is
      empty; NaN when a label is not 0, 1 or missing and the step is compiled.
    """
    valid, p, w3, w2, w1 = _prepare(scores, click, conversion, sample_weight,
                                    normalization, conversion_without_click,
                                    margin_click, margin_nonclick)
    zero = ops.zeros_like(p)
    margin = ops.where(w2 > 0, zero + margin_click,
                       ops.where(w1 > 0, zero + margin_nonclick, zero))
    order = _descending_positives_first(p + margin, w3 > 0)
    start = None
    if group is not None:  # then by group: a stable sort keeps the order inside each
        group = _group(group, p)
        order = ops.take(order, backend.stable_argsort(ops.take(group, order)))
        sorted_group = ops.take(group, order)
        start = ops.cast(ops.concatenate([ops.ones_like(sorted_group[:1], "bool"),
                                          sorted_group[1:] != sorted_group[:-1]], 0),
                         "float32")
    # Sorted by scattering each row to its rank: the scores' gradient stays dense
    # (TensorFlow's gradient of a gather is IndexedSlices).
    rows = ops.cumsum(ops.ones_like(order)) - 1
    rank = backend.scatter(order, rows, ops.shape(p))
    terms = _hinge_sums(backend.scatter(rank, p, ops.shape(p)), ops.take(margin, order),
                        ops.take(w3, order), ops.take(w2, order), ops.take(w1, order),
                        squared, start)
    positives = ops.sum(w3)
    total = (_normalize(terms[0], ops.sum(w2), positives, normalization)
             + _normalize(terms[1], ops.sum(w1), positives, normalization))
    return ops.where(valid, total, np.nan)  # compiled steps drop the labels' assertion


def pwiser_dense(scores, click, conversion, *, margin_click: float = MARGIN_CLICK,
                 margin_nonclick: float = MARGIN_NONCLICK, squared: bool = True,
                 normalization: str = "anchor", sample_weight=None,
                 conversion_without_click: str = "error", group=None):
    """The definition, with a dense `[B, B]` pair matrix: for tests and benchmarks."""
    valid, p, w3, w2, w1 = _prepare(scores, click, conversion, sample_weight,
                                    normalization, conversion_without_click,
                                    margin_click, margin_nonclick)
    positives = ops.sum(w3)
    total = ops.zeros((), "float32")
    same = 1.0
    if group is not None:
        group = _group(group, p)
        same = ops.cast(group[:, None] == group[None, :], "float32")
    for anchor_weight, margin in ((w2, margin_click), (w1, margin_nonclick)):
        hinge = ops.relu(p[:, None] - p[None, :] + margin) * same  # [anchor, positive]
        if squared:
            hinge = ops.square(hinge)
        pairs = ops.sum(anchor_weight[:, None] * w3[None, :] * hinge)
        total = total + _normalize(pairs, ops.sum(anchor_weight), positives, normalization)
    return ops.where(valid, total, np.nan)


__all__ = ["pwiser", "pwiser_dense", "check_labels", "check_settings", "check_options",
           "MARGIN_CLICK", "MARGIN_NONCLICK", "PWISER_WEIGHT"]
