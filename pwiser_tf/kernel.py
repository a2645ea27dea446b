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
constant). Everything is static-shaped: it runs under
`tf.function(jit_compile=True)`, on TPU and in a `tf.distribute` replica.

`pwiser_dense` is the O(B^2) definition, kept for tests and benchmarks.

Example:

>>> import tensorflow as tf
>>> scores = tf.constant([0.9, 0.2, 0.6, 0.1])
>>> click = tf.constant([1., 1., 1., 0.])
>>> conversion = tf.constant([1., 0., 0., 0.])
>>> round(float(pwiser(scores, click, conversion, margin_click=0.5,
...                    margin_nonclick=0.5)), 4)
0.02
"""
import math
from typing import Optional

import numpy as np
import tensorflow as tf

from pwiser_tf.errors import InputError
# The defaults of the papers' open constants and the choices, written once (see there).
from pwiser_tf.options import MARGIN_CLICK, MARGIN_NONCLICK, NORMALIZATIONS, PWISER_WEIGHT
from pwiser_tf.options import CONVERSION_WITHOUT_CLICK_IN_LOSS as CONVERSION_WITHOUT_CLICK


def _flat(name: str, value) -> tf.Tensor:
    value = tf.convert_to_tensor(value)
    if value.shape.rank is not None and value.shape.rank == 2 and value.shape[1] == 1:
        value = value[:, 0]
    elif value.shape.rank is not None and value.shape.rank != 1:
        raise InputError(f"{name} must have shape [B] or [B, 1], got {value.shape}")
    return value


def _float32(value: tf.Tensor) -> tf.Tensor:
    # float16 / bfloat16 inputs are computed in float32: the sums need the range.
    return value if value.dtype == tf.float32 else tf.cast(value, tf.float32)


def _check_options(normalization: str, conversion_without_click: str,
                   margin_click=0.0, margin_nonclick=0.0) -> None:
    if not tf.is_tensor(margin_click) and not tf.is_tensor(margin_nonclick):
        check_settings(margin_click=margin_click, margin_nonclick=margin_nonclick)
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


def check_labels(click, conversion, where: str = "pwiser") -> tf.Tensor:
    """Labels must be 0, 1 or below 0 (missing), on every path.

    Eagerly, a bad label raises `InputError` naming it. In a graph (`tf.function`,
    `fit`, a TFRS task) a `tf.debugging.Assert` stops the step. XLA compiles
    assertions away, so the boolean returned (all labels valid) lets the caller
    turn its loss into NaN there, which the trainer reports.
    """
    labels = {"click": _float32(click), "conversion": _float32(conversion)}
    valid = tf.reduce_all([tf.reduce_all((x == 0) | (x == 1) | (x < 0))
                           for x in labels.values()])
    if tf.executing_eagerly():
        for name, x in labels.items():
            x = np.asarray(x, np.float64).reshape(-1)
            bad = ~((x == 0) | (x == 1) | (x < 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputError(f"{where}: {name} labels must be 0, 1 or negative "
                                 f"(missing); {name}[{i}] = {x[i]:g}")
    else:
        tf.debugging.Assert(valid, [f"{where}: click and conversion labels must be 0, 1 "
                                    f"or negative (missing)"])
    return valid


def _check_values(scores, click, conversion, sample_weight, conversion_without_click):
    """Shapes, and in eager mode the values (graph mode leaves them to
    `check_labels`: no host round trip and nothing that breaks XLA)."""
    sizes = {"scores": scores.shape[0], "click": click.shape[0],
             "conversion": conversion.shape[0]}
    if sample_weight is not None:
        sizes["sample_weight"] = sample_weight.shape[0]
    known = {k: v for k, v in sizes.items() if v is not None}
    if len(set(known.values())) > 1:
        raise InputError("pwiser: batch sizes differ: "
                         + ", ".join(f"{k} {v}" for k, v in known.items()))
    if not tf.executing_eagerly():
        return
    c, v = np.asarray(click, np.float64), np.asarray(conversion, np.float64)
    orphan = (v == 1) & (c == 0)
    if conversion_without_click == "error" and orphan.any():
        i = int(np.flatnonzero(orphan)[0])
        raise InputError(
            f"pwiser: conversion without a click at index {i} ({int(orphan.sum())} in the "
            f"batch); pass conversion_without_click='as_click' to count them as clicks")
    if sample_weight is not None and not np.all(np.asarray(sample_weight) >= 0):
        raise InputError("pwiser: sample_weight must be non-negative and not NaN")


def _groups(click, conversion, sample_weight, conversion_without_click):
    """Weights of each exposure in S3, S2 and S1 (0 outside the group)."""
    click, conversion = _float32(click), _float32(conversion)
    weight = (tf.ones_like(click) if sample_weight is None
              else _float32(sample_weight))
    known = tf.logical_and(click >= 0, conversion >= 0)  # below 0 = missing
    converted = conversion > 0.5
    clicked = click > 0.5
    if conversion_without_click == "as_click":
        clicked = tf.logical_or(clicked, converted)
    else:  # graph mode: an orphan conversion belongs to no group
        known = tf.logical_and(known, tf.logical_or(clicked, tf.logical_not(converted)))
    weight = tf.where(known, weight, 0.0)
    zero = tf.zeros_like(weight)
    w3 = tf.where(tf.logical_and(clicked, converted), weight, zero)
    w2 = tf.where(tf.logical_and(clicked, tf.logical_not(converted)), weight, zero)
    w1 = tf.where(tf.logical_not(clicked), weight, zero)
    return w3, w2, w1


def _prepare(scores, click, conversion, sample_weight, normalization,
             conversion_without_click, margin_click, margin_nonclick):
    _check_options(normalization, conversion_without_click, margin_click, margin_nonclick)
    scores, click, conversion = (_flat(n, x) for n, x in
                                 (("scores", scores), ("click", click),
                                  ("conversion", conversion)))
    if sample_weight is not None:
        sample_weight = tf.convert_to_tensor(sample_weight)
        if sample_weight.shape.rank == 0:  # a scalar weighs every row, as in Keras
            sample_weight = tf.fill(tf.shape(scores), sample_weight)
        sample_weight = _flat("sample_weight", sample_weight)
    _check_values(scores, click, conversion, sample_weight, conversion_without_click)
    valid = check_labels(click, conversion)
    return (valid, _float32(scores)) + _groups(click, conversion, sample_weight,
                                               conversion_without_click)


def _normalize(total, anchors_weight, positives_weight, normalization):
    denominator = anchors_weight if normalization == "anchor" else \
        anchors_weight * positives_weight
    return tf.math.divide_no_nan(total, denominator)


def _descending_positives_first(key: tf.Tensor, positive: tf.Tensor) -> tf.Tensor:
    """The descending order of `key`; among equal keys, positives come first.

    An anchor tied with a positive then falls after it and is left out of its
    sums, as the hinge's derivative at 0 says. Positives are moved to the front
    with an O(B) compaction, so one stable sort settles the ties.
    """
    batch = tf.shape(key)[0]
    positive_i = tf.cast(positive, tf.int32)
    num_positive = tf.reduce_sum(positive_i)
    destination = tf.where(positive, tf.cumsum(positive_i, exclusive=True),
                           num_positive + tf.cumsum(1 - positive_i, exclusive=True))
    front = tf.scatter_nd(destination[:, None], tf.range(batch), [batch])
    order = tf.argsort(tf.stop_gradient(tf.gather(key, front)), direction="DESCENDING",
                       stable=True)
    return tf.gather(front, order)


def _shift(state, delta):
    """Move the reference of the sums (n, sum of d, sum of d^2) by `delta` >= 0
    away from the rows they sum over: every d grows by delta. All terms are
    non-negative, so nothing cancels."""
    n, s1, s2 = state
    return n, s1 + n * delta, s2 + 2.0 * delta * s1 + n * tf.square(delta)


def _combine(earlier, later):
    """Compose two runs of the scan, `earlier` then `later` (associative). Each
    element is `[gap, n, S1, S2, n', S1', S2', ...]`: move the reference by `gap`,
    then add the element's own rows, one (n, S1, S2) per group."""
    combined = [earlier[0] + later[0]]
    for g in range(1, len(earlier), 3):
        shifted = _shift(earlier[g:g + 3], later[0])
        combined += [a + b for a, b in zip(shifted, later[g:g + 3])]
    return combined


def _prefix_scan(elements):
    """Inclusive scan of `_combine` over `[B]` tensors (Hillis-Steele): ceil(log2 B)
    rounds of O(B) each. With a static B the rounds are unrolled and each shift is a
    slice (the fastest in graph mode); otherwise a `tf.while_loop` shifts by gathers."""
    size = elements[0].shape[0]
    if size is not None:
        offset = 1
        while offset < size:
            earlier = [tf.concat([tf.zeros([offset]), v[:-offset]], 0) for v in elements]
            elements = _combine(earlier, elements)  # zeros: the identity
            offset *= 2
        return elements
    size = tf.shape(elements[0])[0]
    index = tf.range(size)

    def step(offset, values):
        source = tf.maximum(index - offset, 0)
        has_earlier = index >= offset
        earlier = [tf.where(has_earlier, tf.gather(v, source), tf.zeros_like(v))
                   for v in values]
        return offset * 2, _combine(earlier, values)

    _, result = tf.while_loop(lambda offset, _: offset < size, step,
                              (tf.constant(1), list(elements)), maximum_iterations=32)
    return result


def _hinge_sums(p, margin, w3, w2, w1, squared):
    """Rows sorted by descending key (score + margin; positives before tied anchors).
    Returns, for the S2 and the S1 anchors, sum_j w3_j sum_{a before j} w_a h(d_aj)
    with d_aj = p_a + m_a - p_j and h(d) = d^2 (or d), with its exact gradient
    with respect to `p`: both directions are non-negative scans, so the gradient
    keeps float32's relative accuracy as the value does."""
    size = tf.shape(p)[0]
    index = tf.range(size)
    w3, w2, w1, margin = (tf.stop_gradient(x) for x in (w3, w2, w1, margin))
    zero = tf.zeros_like(w3)

    @tf.custom_gradient
    def sums(p):
        # Gap between each key and the one above it, as a difference of scores
        # first (exact for close scores, as the definition's p_i - p_j + m). The
        # gaps telescope: a sum of them is the distance of its two ends. Where the
        # float32 keys p + m sorted two rows against their exact order, its gap is
        # below 0 by at most the keys' rounding, and the pair gets that tiny d.
        above = tf.maximum(index - 1, 0)
        gap = (tf.gather(p, above) - p) + (tf.gather(margin, above) - margin)
        # Down the ranking: at each row, the anchors ranked before it, measured
        # from its key (n, sum w d, sum w d^2), for S2 and for S1.
        down = _prefix_scan([gap, w2, zero, zero, w1, zero, zero])
        power = 2 if squared else 1
        # A positive pays at least 0 (the tiny d above could make it -ulp).
        totals = [tf.reduce_sum(w3 * tf.maximum(down[g + power], 0.0)) for g in (1, 4)]

        def gradient(d2, d1):
            # Up the ranking: at each row, the positives ranked after it, measured
            # from its key (m, sum w3 d).
            below = tf.minimum(index + 1, size - 1)
            gap_below = tf.where(index < size - 1, tf.gather(gap, below), 0.0)
            up = _prefix_scan([tf.reverse(x, [0]) for x in (gap_below, w3, zero, zero)])
            m, r1 = tf.reverse(up[1], [0]), tf.reverse(up[2], [0])
            anchor_pull = 2.0 * r1 if squared else m
            grad = tf.zeros_like(p)
            for d, w, n, s1 in ((d2, w2, down[1], down[2]), (d1, w1, down[4], down[5])):
                positive_push = 2.0 * s1 if squared else n
                grad += d * (w * anchor_pull - w3 * positive_push)
            return grad

        return totals, gradient

    return sums(p)


def pwiser(scores, click, conversion, *, margin_click: float = MARGIN_CLICK,
           margin_nonclick: float = MARGIN_NONCLICK, squared: bool = True,
           normalization: str = "anchor", sample_weight=None,
           conversion_without_click: str = "error") -> tf.Tensor:
    """The PWiseR term (without BCE), exact, in O(B log B).

    Args:
      scores: `[B]` or `[B, 1]` predictions the term acts on (pCTR by default
        in the models; probabilities or logits).
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
        a click in eager mode (in graph mode such rows join no group);
        `"as_click"` counts it as a converted click.

    Returns:
      A float32 scalar; 0, with finite gradients, when a group is empty.
    """
    valid, p, w3, w2, w1 = _prepare(scores, click, conversion, sample_weight,
                                    normalization, conversion_without_click,
                                    margin_click, margin_nonclick)
    margin = tf.where(w2 > 0, tf.cast(margin_click, tf.float32),
                      tf.where(w1 > 0, tf.cast(margin_nonclick, tf.float32), 0.0))
    order = _descending_positives_first(p + margin, w3 > 0)
    # Sorted by scattering each row to its rank: the scores' gradient stays dense
    # (a gather's would be IndexedSlices).
    size = tf.shape(p)[0]
    rank = tf.scatter_nd(order[:, None], tf.range(size), [size])
    terms = _hinge_sums(tf.scatter_nd(rank[:, None], p, [size]), tf.gather(margin, order),
                        tf.gather(w3, order), tf.gather(w2, order), tf.gather(w1, order),
                        squared)
    positives = tf.reduce_sum(w3)
    total = (_normalize(terms[0], tf.reduce_sum(w2), positives, normalization)
             + _normalize(terms[1], tf.reduce_sum(w1), positives, normalization))
    return tf.where(valid, total, np.nan)  # XLA drops the labels' assertion


def pwiser_dense(scores, click, conversion, *, margin_click: float = MARGIN_CLICK,
                 margin_nonclick: float = MARGIN_NONCLICK, squared: bool = True,
                 normalization: str = "anchor", sample_weight=None,
                 conversion_without_click: str = "error") -> tf.Tensor:
    """The definition, with a dense `[B, B]` pair matrix: for tests and benchmarks."""
    valid, p, w3, w2, w1 = _prepare(scores, click, conversion, sample_weight,
                                    normalization, conversion_without_click,
                                    margin_click, margin_nonclick)
    positives = tf.reduce_sum(w3)
    total = tf.zeros([], tf.float32)
    for anchor_weight, margin in ((w2, margin_click), (w1, margin_nonclick)):
        hinge = tf.nn.relu(p[:, None] - p[None, :] + margin)  # [anchor, positive]
        if squared:
            hinge = tf.square(hinge)
        pairs = tf.reduce_sum(anchor_weight[:, None] * w3[None, :] * hinge)
        total += _normalize(pairs, tf.reduce_sum(anchor_weight), positives, normalization)
    return tf.where(valid, total, np.nan)


__all__ = ["pwiser", "pwiser_dense", "check_labels", "check_settings", "MARGIN_CLICK",
           "MARGIN_NONCLICK", "PWISER_WEIGHT"]
