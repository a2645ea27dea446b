"""Exact AUC and log loss, checked against brute-force pair counting."""
import numpy as np
import pytest

from pwiser_tf import metrics


def brute_auc(labels, scores):
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pair_counting_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300) / 20.0  # many ties
    assert metrics.auc(labels, scores) == pytest.approx(brute_auc(labels, scores), abs=1e-12)


def test_auc_mask_and_degenerate_cases():
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.1, 0.2, 0.8])
    assert metrics.auc(labels, scores, mask=[1, 1, 0, 0]) == 1.0
    assert np.isnan(metrics.auc(np.ones(3), np.arange(3)))


def test_log_loss_and_task_metrics():
    labels = {"click": np.array([1, 1, 0, 0]), "conversion": np.array([1, 0, 0, 0]),
              "intent": np.array([1, 0, 0, 1])}
    preds = {"pctr": np.array([0.9, 0.6, 0.3, 0.2]), "pcvr": np.array([0.8, 0.1, 0.5, 0.5]),
             "pctcvr": np.array([0.72, 0.06, 0.15, 0.1])}
    result = metrics.ctr_cvr_metrics(labels, preds)
    assert result["ctr_auc"] == 1.0
    assert result["cvr_auc"] == 1.0  # only the two clicked rows count
    assert result["s3_s2_auc"] == 1.0
    assert result["intent_auc"] == 0.5
    expected = -np.mean(np.log([0.9, 0.6, 0.7, 0.8]))
    assert result["ctr_logloss"] == pytest.approx(expected)
