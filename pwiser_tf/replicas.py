"""Losses under `tf.distribute`: batch-level terms, reductions over the global
batch, and the one rule for what a replica returns.

Under a strategy with N replicas in sync, each replica holds 1/N of the global
batch. A per-example loss only needs its mean, but PWiseR's pairs (and AdaFTR's
in-batch negatives) join rows of one batch, so where the rows come from matters:

- `pairs="global"` (the default): the rows of every replica are all-gathered
  (`ReplicaContext.all_gather`, whose gradient is exact: each replica receives
  the summed gradient of its own rows), and the term is computed over the
  global batch, the same value on every replica. It equals one device on the
  global batch.
- `pairs="replica"`: each replica computes the term on its own rows, and the
  step follows the mean of the N replicas' terms. With the `anchor`
  normalization each anchor group shrinks with the batch, so N replicas act
  like lambda / N on one device; with `pair` the strength stays about lambda.

What a replica returns. Every framework the project runs in sums the replicas'
gradients (the optimizers of Keras 3 and tf-keras all-reduce them with SUM, under
`compile` as under `tfrs.Model` with its `tfrs.tasks.Ranking`), and reports the
replicas' losses summed (tf-keras' `fit`) or scaled back by N and averaged
(Keras 3's `fit`). So a loss computes its value over the global batch (`reduce_rows`,
`gather`) and returns its replica's *share*, `value / N` (`share`): the shares
sum to the value and their gradients to its gradient. Keras 3's own `Loss` does
the same for its mean reductions (it multiplies by 1/N itself), and its
`compile` adds nothing. One consumer rescales a loss's value afterwards:
tf-keras' `compile` divides it by N when the loss's public `reduction` is `auto`
or `sum_over_batch_size` (and tf-keras' `Loss` refuses those two under a
strategy anywhere else, e.g. in `tfrs.tasks.Ranking`); a loss declaring `sum`
it takes as it comes. So the project's losses declare `sum` to tf-keras for
every reduced value (`declared_reduction`) and keep the reduction they were
given for their own use. With `reduction="none"` a loss returns per-row values
unscaled: whoever reduces them over the global batch (for example
`tf.nn.compute_average_loss` with the global batch size) takes the share.
Outside a replica of such a strategy (one device, the default strategy,
cross-replica context), and on the JAX and PyTorch backends, everything here is
the identity: JAX's `keras.distribution.DataParallel` traces the loss over the
global batch, so its terms are the global batch's already.

Example:

>>> from keras import ops
>>> num_replicas()  # one device: the rows stay as they are
1
>>> scores, labels = gather([ops.array([0.3, 0.7]), ops.array([1., 0.])])
>>> ops.convert_to_numpy(scores).tolist()
[0.30000001192092896, 0.699999988079071]
>>> float(reduce_rows(ops.array([1., 3., 5.]), ops.array([1., 1., 0.]), "mean"))
2.0
"""
from typing import List, Sequence

import numpy as np
from keras import ops

from pwiser_tf import backend
from pwiser_tf.errors import InputError
from pwiser_tf.options import PAIRS  # the choices, written once without TensorFlow

# Keras' reductions, of both flavours ("auto" is tf-keras' name for the mean).
REDUCTIONS = ("sum_over_batch_size", "auto", "mean", "mean_with_sample_weight", "sum",
              "none", None)


def check_pairs(pairs: str) -> str:
    if pairs not in PAIRS:
        raise InputError(f"pairs must be one of {PAIRS}, got {pairs!r}")
    return pairs


def check_reduction(reduction, owner: str) -> str:
    """`reduction` as the project names it (None is "none"), or `InputError`."""
    if reduction not in REDUCTIONS:
        raise InputError(f"{owner}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return "none" if reduction is None else reduction


def replica_context():
    """The `tf.distribute.ReplicaContext` of a strategy with more than one replica
    in sync, else None (always None off the TensorFlow backend)."""
    if backend.name() != "tensorflow":
        return None
    import tensorflow as tf
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def num_replicas() -> int:
    """Replicas in sync around this call (1 outside a distributed replica)."""
    context = replica_context()
    return context.num_replicas_in_sync if context else 1


def gather(tensors: Sequence, pairs: str = "global") -> List:
    """Each `[B, ...]` tensor's rows from every replica, in replica order.

    One all-gather for all the tensors (they are cast to float32 and stacked);
    gradients flow back to each replica's own rows. With `pairs="replica"` or
    outside a distributed replica, the tensors come back as they are.
    """
    context = replica_context()
    if context is None or check_pairs(pairs) == "replica":
        return list(tensors)
    import tensorflow as tf
    tensors = [tf.convert_to_tensor(t) for t in tensors]
    widths = [int(np.prod(t.shape[1:])) for t in tensors]  # static: the rows' sizes
    columns = [tf.reshape(tf.cast(t, tf.float32), [-1, width])
               for t, width in zip(tensors, widths)]
    gathered = context.all_gather(tf.concat(columns, axis=1), axis=0)
    parts = tf.split(gathered, widths, axis=1)
    return [tf.reshape(part, [-1] + t.shape[1:].as_list())
            for part, t in zip(parts, tensors)]


def global_sum(value):
    """`value` summed over the replicas (differentiable); as is on one replica."""
    context = replica_context()
    if context is None:
        return value
    import tensorflow as tf
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def share(value):
    """A replica's share of a global value: value / N (value on one replica)."""
    replicas = num_replicas()
    return value if replicas == 1 else value * (1.0 / replicas)


def reduce_rows(values, labelled, reduction: str, sample_weight=None):
    """Keras' `reduction` of the per-row `values` over the global batch.

    `labelled` (1 or 0 per row) says which rows the term has: the others (a
    missing label) leave it, and the means count the labelled rows only, the
    rule of Keras' own masking. `sample_weight` (`[B]`) weighs each row:
    `sum_over_batch_size` (`auto`, `mean`) divides the weighted sum by the
    number of labelled rows, as Keras by the number of rows, and
    `mean_with_sample_weight` by their weight. A reduced value is the same on
    every replica (its gradient reaches every replica's rows); `"none"` gives
    this replica's weighted rows.
    """
    weights = labelled if sample_weight is None else labelled * sample_weight
    weighted = values * weights
    if reduction in (None, "none"):
        return weighted
    if reduction == "sum":
        return global_sum(ops.sum(weighted))
    divisor = weights if reduction == "mean_with_sample_weight" else labelled
    sums = global_sum(ops.stack([ops.sum(weighted), ops.sum(divisor)]))
    return ops.divide_no_nan(sums[0], sums[1])


def declared_reduction(reduction: str, tf_keras: bool) -> str:
    """The `reduction` a loss that returns its share declares to Keras (see
    above): `sum` to tf-keras for any reduced value, so that its `compile` does
    not divide the share by N again; Keras 3 reads a loss's reduction only in
    its own `Loss.__call__`, so the loss keeps its own (`auto` under the Keras 3
    name). `tf_keras`: whether the loss is a tf-keras `Loss`."""
    if reduction in (None, "none"):
        return "none"
    if tf_keras:
        return "sum"
    return "sum_over_batch_size" if reduction == "auto" else reduction


__all__ = ["PAIRS", "REDUCTIONS", "check_pairs", "check_reduction", "replica_context",
           "num_replicas", "gather", "global_sum", "share", "reduce_rows",
           "declared_reduction"]
