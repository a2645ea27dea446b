"""Exact evaluation metrics on whole prediction arrays.

Training reports Keras' streaming AUC (bucketed); the numbers a run publishes in
`metrics.json` and the experiment tables are computed here, exactly, on the full
evaluation split: AUC with ties counted as one half, the group AUC (GAUC) and log
loss.

GAUC (Zhou et al., "Deep Interest Network", KDD 2018) is the AUC within each group
(a search, a user), averaged with each group's exposures as its weight:
`sum_g n_g AUC_g / sum_g n_g`, over the groups that hold both classes (a group of one
class has no AUC and is left out). It is computed at once for all groups: one sort
by group, then score, with ties counted as one half as in `auc`.

Example:

>>> import numpy as np
>>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
0.75
>>> gauc(np.array([0, 1, 0, 1, 1, 0, 0]), np.array([.1, .2, .3, .3, .5, .6, .6]),
...      np.array([7, 7, 8, 8, 8, 9, 9]))   # (2 * 1 + 3 * 0.75) / 5; group 9 has no click
0.85
"""
from typing import Dict, Optional

import numpy as np

_EPS = 1e-7
GROUP = "group"  # the labels' group key (`pipelines.schema.GROUP_KEY`)
GAUC_METRICS = ("ctr_gauc", "cvr_gauc", "ctcvr_gauc")
NO_GROUP_NOTE = ("GAUC not computed: the evaluated records hold no group column (data "
                 "converted before pwiser-tf kept it); convert the data again to get "
                 + ", ".join(GAUC_METRICS))


def auc(labels: np.ndarray, scores: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """ROC AUC of `scores` for binary `labels` (NaN when one class is absent)."""
    labels = np.asarray(labels).reshape(-1) > 0.5
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if mask is not None:
        keep = np.asarray(mask).reshape(-1).astype(bool)
        labels, scores = labels[keep], scores[keep]
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    # Mann-Whitney U from tie-averaged ranks.
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], scores.size]
    average_rank = (starts + ends + 1) / 2.0  # 1-based mean rank of each tie run
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat(average_rank, ends - starts)
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray,
         mask: Optional[np.ndarray] = None) -> float:
    """Group AUC: the AUC of `scores` within each of `groups`, weighted by the group's
    rows (its exposures, or those `mask` keeps), over the groups holding both classes
    (NaN when none does). Exact, ties counted as one half as in `auc`; one sort, no
    loop over groups."""
    labels = np.asarray(labels).reshape(-1) > 0.5
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    if not labels.size == scores.size == groups.size:
        raise ValueError(f"gauc: {labels.size} labels, {scores.size} scores and "
                         f"{groups.size} groups")
    if mask is not None:
        keep = np.asarray(mask).reshape(-1).astype(bool)
        labels, scores, groups = labels[keep], scores[keep], groups[keep]
    n = labels.size
    if n == 0:
        return float("nan")
    order = np.lexsort((scores, groups))  # by group, then by score
    groups, scores, labels = groups[order], scores[order], labels[order]
    new_group = np.r_[True, groups[1:] != groups[:-1]]
    group_start = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1  # each row's group, 0..k-1
    # runs of tied scores within a group share their mean rank
    run_start = np.flatnonzero(new_group | np.r_[True, scores[1:] != scores[:-1]])
    run_end = np.r_[run_start[1:], n]
    mean_rank = np.repeat((run_start + run_end + 1) / 2.0, run_end - run_start) \
        - group_start[group]  # 1-based, within the group
    k = group_start.size
    rows = np.bincount(group, minlength=k).astype(np.float64)
    positives = np.bincount(group, weights=labels, minlength=k)
    negatives = rows - positives
    both = (positives > 0) & (negatives > 0)
    if not both.any():
        return float("nan")
    rank_sum = np.bincount(group, weights=np.where(labels, mean_rank, 0.0), minlength=k)
    p, q = positives[both], negatives[both]
    per_group = (rank_sum[both] - p * (p + 1) / 2.0) / (p * q)  # Mann-Whitney U / pairs
    return float(np.sum(rows[both] * per_group) / np.sum(rows[both]))


def log_loss(labels: np.ndarray, probabilities: np.ndarray,
             mask: Optional[np.ndarray] = None) -> float:
    """Mean binary cross-entropy (NaN on an empty selection)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(-1), _EPS, 1 - _EPS)
    if mask is not None:
        keep = np.asarray(mask).reshape(-1).astype(bool)
        labels, p = labels[keep], p[keep]
    if labels.size == 0:
        return float("nan")
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def ctr_cvr_metrics(labels: Dict[str, np.ndarray],
                    predictions: Dict[str, np.ndarray]) -> Dict[str, float]:
    """The evaluation of a CTR/CVR model, as in the papers and public baselines.

    `labels` holds `click` and `conversion` (click AND conversion, over all
    exposures) and optionally `intent`; `predictions` holds `pctr`, `pcvr` and
    `pctcvr`. CTR and CTCVR are scored over all exposures, CVR over clicked ones.
    With an `intent` label (synthetic data) the pCTR is also scored against true
    intent, and `s3_s2_auc` says how well converted clicks rank above the
    clicks that did not convert.

    With `labels["group"]` (the data's group column: the search id of AliExpress,
    the user id of Ali-CCP) the group AUCs `ctr_gauc`, `cvr_gauc` (clicked exposures
    only, weighted by the group's clicks) and `ctcvr_gauc` come too; without it,
    `gauc_note` says why they are missing.
    """
    click, conversion = labels["click"], labels["conversion"]
    clicked = np.asarray(click) > 0.5
    pctr, pcvr, pctcvr = (predictions[k] for k in ("pctr", "pcvr", "pctcvr"))
    result = {
        "ctr_auc": auc(click, pctr),
        "ctcvr_auc": auc(conversion, pctcvr),
        "cvr_auc": auc(conversion, pcvr, mask=clicked),
        "ctr_logloss": log_loss(click, pctr),
        "ctcvr_logloss": log_loss(conversion, pctcvr),
        "cvr_logloss": log_loss(conversion, pcvr, mask=clicked),
        "s3_s2_auc": auc(conversion, pctr, mask=clicked),
        "examples": int(clicked.size),
    }
    if "intent" in labels:
        result["intent_auc"] = auc(labels["intent"], pctr)
        result["intent_ctcvr_auc"] = auc(labels["intent"], pctcvr)
    if GROUP in labels:
        groups = labels[GROUP]
        result.update({
            "ctr_gauc": gauc(click, pctr, groups),
            "ctcvr_gauc": gauc(conversion, pctcvr, groups),
            "cvr_gauc": gauc(conversion, pcvr, groups, mask=clicked),
        })
    else:
        result["gauc_note"] = NO_GROUP_NOTE
    return result
