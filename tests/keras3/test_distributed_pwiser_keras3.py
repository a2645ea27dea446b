"""`PWiseRLoss` in Keras 3 `compile` under `MirroredStrategy` on 2 and 4 virtual
CPUs: the reported loss and one SGD step equal one device on the global batch
(`pairs="global"`), or the mean of the replicas' own losses (`pairs="replica"`)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import distributed_cases as cases  # noqa: E402


@pytest.mark.parametrize("replicas", [2, 4])
def test_global_pairs_step_equals_one_device(replicas):
    cases.check_compile_matches_one_device(replicas)


def test_global_pairs_with_sample_weights_and_pair_normalization():
    cases.check_compile_matches_one_device(4, weighted=True, normalization="pair")


def test_replica_pairs_step_is_the_mean_of_the_replicas():
    cases.check_compile_replica_pairs(4)


@pytest.mark.parametrize("reduction", ["mean_with_sample_weight", "sum"])
def test_weighted_reductions_step_equals_one_device(reduction):
    # The replicas' weights differ: the mean is over the global batch's weight.
    cases.check_compile_matches_one_device(2, weighted=True, reduction=reduction)


def test_bce_alone_with_mean_with_sample_weight_equals_one_device():
    cases.check_compile_matches_one_device(2, weighted=True, pwiser_weight=0.0,
                                           reduction="mean_with_sample_weight")
