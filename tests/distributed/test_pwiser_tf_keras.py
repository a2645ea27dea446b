"""`PWiseRLoss` under `MirroredStrategy` on 2 and 4 virtual CPUs with tf-keras:
`compile`, `tfrs.tasks.Ranking` (with `PackedAUC`) and the README's TFRS snippet.
The reported loss and one SGD step equal one device on the same global batch."""
import numpy as np
import pytest

import distributed_cases as cases
import tensorflow as tf
from pwiser_tf import PackedAUC


def test_compile_global_pairs_step_equals_one_device():
    cases.check_compile_matches_one_device(2)


def test_compile_with_sample_weights_and_pair_normalization():
    cases.check_compile_matches_one_device(4, weighted=True, normalization="pair")


def test_compile_sum_reduction_equals_one_device():
    cases.check_compile_matches_one_device(2, reduction="sum")


def test_compile_replica_pairs_step_is_the_mean_of_the_replicas():
    cases.check_compile_replica_pairs(2)


def test_tfrs_ranking_with_packed_auc_equals_one_device():
    x, y, w = cases.data()
    y[5] = [-1.0, -1.0]  # a missing label: out of the BCE, the pairs and the AUC
    loss, weights, history = cases.tfrs_step(cases.strategy(2), cases.pwiser_loss(), x, y,
                                             w, metrics=[PackedAUC])
    cases.assert_same_step((loss, weights), cases.reference_step(cases.pwiser_loss(), x, y))
    one_device = PackedAUC()
    one_device.update_state(y, cases.dense_model()(x))  # the step's AUC: before the update
    assert history["click_auc"][0] == pytest.approx(float(one_device.result()), abs=1e-6)


def test_tfrs_ranking_with_sample_weights_on_4_replicas_equals_one_device():
    cases.check_tfrs_ranking_matches_one_device(4, weighted=True)


def test_readme_tfrs_snippet_runs_under_a_strategy():
    import test_readme

    with cases.strategy(2).scope():
        scope = {}
        exec(compile(test_readme.snippet("tfrs"), "README.md:tfrs", "exec"), scope)
    model = scope["model"]
    assert model.distribute_strategy.num_replicas_in_sync == 2
    assert np.isfinite(model.history.history["loss"][-1])


@pytest.mark.parametrize("replicas", [2, 4])
def test_mmoe_step_equals_one_device(replicas):
    cases.check_model_matches_one_device("mmoe", replicas)


def test_adaftr_global_negatives_step_equals_one_device():
    cases.check_model_matches_one_device("adaftr", 2, contrastive_weight=0.5)


def test_mmoe_replica_pairs_differ_from_one_device():
    got, initial = cases.model_step(cases.strategy(2), "mmoe", pairs="replica")
    expected, _ = cases.model_step(tf.distribute.get_strategy(), "mmoe", pairs="replica")
    with pytest.raises(AssertionError):
        cases.assert_same_model_step(got, expected, initial)
