"""PWiseR from its definition, in NumPy float64, with its gradient by hand.

Independent of `pwiser_tf`: groups S3 (converted clicks), S2 (clicks without a
conversion) and S1 (no click); a label below 0 leaves the row out. For anchors a
in S2 paired with positives j in S3 (margin_click), and anchors in S1 with S3
(margin_nonclick):

    term = sum_{a, j} w_a w_j h(p_a - p_j + m) / norm

with h(d) = max(d, 0)^2 (squared) or max(d, 0), and norm the anchors' weight
(`"anchor"`) or the anchors' times the positives' weight (`"pair"`); an empty
group gives 0. The plain hinge's derivative at d = 0 is taken as 0 (ReLU's).
"""
import numpy as np


def groups(click, conversion):
    """Boolean masks of S3, S2 and S1."""
    click, conversion = np.asarray(click, np.float64), np.asarray(conversion, np.float64)
    known = (click >= 0) & (conversion >= 0)
    s3 = known & (click == 1) & (conversion == 1)
    s2 = known & (click == 1) & (conversion == 0)
    s1 = known & (click == 0) & (conversion == 0)
    return s3, s2, s1


def pwiser(scores, click, conversion, margin_click, margin_nonclick, squared=True,
           normalization="anchor", sample_weight=None, group=None):
    """(value, gradient with respect to `scores`), float64; with `group`, only rows
    of the same id pair (the normalisers stay the whole batch's)."""
    p = np.asarray(scores, np.float64)
    w = np.ones_like(p) if sample_weight is None else np.asarray(sample_weight, np.float64)
    s3, s2, s1 = groups(click, conversion)
    value, grad = 0.0, np.zeros_like(p)
    for anchors, margin in ((s2, margin_click), (s1, margin_nonclick)):
        norm = w[anchors].sum()
        if normalization == "pair":
            norm *= w[s3].sum()
        if norm == 0:
            continue
        d = p[anchors][:, None] - p[s3][None, :] + np.float64(margin)
        pair_weight = w[anchors][:, None] * w[s3][None, :] / norm
        if group is not None:
            ids = np.asarray(group)
            pair_weight = pair_weight * (ids[anchors][:, None] == ids[s3][None, :])
        hinge = np.maximum(d, 0.0)
        value += np.sum(pair_weight * (hinge ** 2 if squared else hinge))
        slope = pair_weight * (2.0 * hinge if squared else (d > 0).astype(np.float64))
        grad[anchors] += slope.sum(axis=1)
        grad[s3] -= slope.sum(axis=0)
    return value, grad


def bce(labels, probabilities, sample_weight=None, from_logits=False):
    """Mean BCE over the labelled rows (label >= 0), weighted as Keras weighs rows:
    sum of w * BCE over the number of labelled rows."""
    y = np.asarray(labels, np.float64)
    x = np.asarray(probabilities, np.float64)
    if from_logits:
        x = 1.0 / (1.0 + np.exp(-x))
    x = np.clip(x, 1e-7, 1 - 1e-7)
    rows = -(y * np.log(x) + (1 - y) * np.log1p(-x))
    labelled = y >= 0
    w = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64)
    return np.sum(np.where(labelled, w * rows, 0.0)) / max(labelled.sum(), 1)


def auc(labels, scores, sample_weight=None):
    """ROC AUC by pairs (Mann-Whitney; a tie counts one half), weighted."""
    y, s = np.asarray(labels, np.float64), np.asarray(scores, np.float64)
    w = np.ones_like(s) if sample_weight is None else np.asarray(sample_weight, np.float64)
    pos, neg = (y == 1), (y == 0)
    diff = s[pos][:, None] - s[neg][None, :]
    pairs = w[pos][:, None] * w[neg][None, :]
    return np.sum(pairs * ((diff > 0) + 0.5 * (diff == 0))) / np.sum(pairs)
