"""One composition of BCE and PWiseR under `MirroredStrategy` on 2 virtual CPUs
(tf-keras): whichever path calls the loss (`compile`, `tfrs.tasks.Ranking`, a custom
loop reducing `reduction="none"` rows), one step equals one device on the global
batch, and no path depends on how a loss object was used before."""
import pytest
import tensorflow as tf

import distributed_cases as cases
from pwiser_tf import PWiseRLoss


def test_one_loss_object_takes_the_same_step_in_compile_and_in_tfrs_ranking():
    # tf-keras' `compile` marks the loss objects it is given; the value must not
    # depend on that mark when the same object then serves a TFRS task.
    x, y, w = cases.data(weighted=True)
    loss = cases.pwiser_loss()()
    expected = cases.reference_step(cases.pwiser_loss(), x, y, w)
    compiled = cases.compile_step(cases.strategy(2), lambda: loss, x, y, w)
    ranked = cases.tfrs_step(cases.strategy(2), lambda: loss, x, y, w)[:2]
    cases.assert_same_step(compiled, expected)
    cases.assert_same_step(ranked, expected)


@pytest.mark.parametrize("path", ["compile", "tfrs"])
def test_mean_with_sample_weight_equals_one_device(path):
    # The replicas' weights differ: the mean is over the global batch's weight.
    check = {"compile": cases.check_compile_matches_one_device,
             "tfrs": cases.check_tfrs_ranking_matches_one_device}[path]
    check(2, weighted=True, reduction="mean_with_sample_weight")


def custom_loop_step(distribution, loss, x, y):
    """Loss and weights after one SGD step of a custom loop that averages the
    per-row values over the global batch (`tf.nn.compute_average_loss`)."""
    with distribution.scope():
        model = cases.dense_model()
    inputs = next(iter(distribution.experimental_distribute_dataset(
        cases.dataset(x, y, None, len(x)))))

    def replica_step(features, labels):
        with tf.GradientTape() as tape:
            value = tf.nn.compute_average_loss(loss(labels, model(features)),
                                               global_batch_size=len(x))
        return value, tape.gradient(value, model.trainable_variables)

    @tf.function
    def step(batch):
        values, grads = distribution.run(replica_step, args=batch)
        return (distribution.reduce("SUM", values, axis=None),
                [distribution.reduce("SUM", g, axis=None) for g in grads])

    value, grads = step(inputs)
    return float(value), [v.numpy() - cases.LEARNING_RATE * g.numpy()
                          for v, g in zip(model.trainable_variables, grads)]


@pytest.mark.parametrize("bce", [True, False])
def test_reduction_none_rows_average_to_one_device_in_a_custom_loop(bce):
    x, y, _ = cases.data()
    options = dict(pwiser_weight=2.0, margin_click=0.2, margin_nonclick=0.3, bce=bce)
    got = custom_loop_step(cases.strategy(2), PWiseRLoss(reduction="none", **options), x, y)
    cases.assert_same_step(got, cases.reference_step(lambda: PWiseRLoss(**options), x, y))
