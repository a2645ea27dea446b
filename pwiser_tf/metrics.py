"""Exact evaluation metrics on whole prediction arrays.

Training reports Keras' streaming AUC (bucketed); the numbers a run publishes in
`metrics.json` and the experiment tables are computed here, exactly, on the full
evaluation split: AUC with ties counted as one half, and log loss.

Example:

>>> import numpy as np
>>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
0.75
"""
from typing import Dict, Optional

import numpy as np

_EPS = 1e-7


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
    return result
