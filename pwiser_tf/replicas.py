"""Batch-level terms under `tf.distribute`: over the global batch or per replica.

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

The value a replica returns to an optimizer that sums the replicas' gradients
is its *share*, `term / N`: the shares sum to the term and their gradients to
its gradient (`share`). Outside a replica of such a strategy (one device, the
default strategy, cross-replica context), everything here is the identity.

Example:

>>> import tensorflow as tf
>>> num_replicas()  # one device: the rows stay as they are
1
>>> scores, labels = gather([tf.constant([0.3, 0.7]), tf.constant([1., 0.])])
>>> scores.numpy().tolist()
[0.30000001192092896, 0.699999988079071]
"""
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from pwiser_tf.errors import InputError

PAIRS = ("global", "replica")


def check_pairs(pairs: str) -> str:
    if pairs not in PAIRS:
        raise InputError(f"pairs must be one of {PAIRS}, got {pairs!r}")
    return pairs


def replica_context() -> Optional[tf.distribute.ReplicaContext]:
    """The replica context of a strategy with more than one replica in sync, else None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def num_replicas() -> int:
    """Replicas in sync around this call (1 outside a distributed replica)."""
    context = replica_context()
    return context.num_replicas_in_sync if context else 1


def gather(tensors: Sequence[tf.Tensor], pairs: str = "global") -> List[tf.Tensor]:
    """Each `[B, ...]` tensor's rows from every replica, in replica order.

    One all-gather for all the tensors (they are cast to float32 and stacked);
    gradients flow back to each replica's own rows. With `pairs="replica"` or
    outside a distributed replica, the tensors come back as they are.
    """
    context = replica_context()
    if context is None or check_pairs(pairs) == "replica":
        return list(tensors)
    tensors = [tf.convert_to_tensor(t) for t in tensors]
    widths = [int(np.prod(t.shape[1:])) for t in tensors]  # static: the rows' sizes
    columns = [tf.reshape(tf.cast(t, tf.float32), [-1, width])
               for t, width in zip(tensors, widths)]
    gathered = context.all_gather(tf.concat(columns, axis=1), axis=0)
    parts = tf.split(gathered, widths, axis=1)
    return [tf.reshape(part, [-1] + t.shape[1:].as_list())
            for part, t in zip(parts, tensors)]


def global_sum(value: tf.Tensor) -> tf.Tensor:
    """`value` summed over the replicas (differentiable); as is on one replica."""
    context = replica_context()
    return value if context is None else context.all_reduce(
        tf.distribute.ReduceOp.SUM, value)


def share(value: tf.Tensor) -> tf.Tensor:
    """A replica's share of a global value: value / N (value on one replica)."""
    replicas = num_replicas()
    return value if replicas == 1 else value * (1.0 / replicas)


__all__ = ["PAIRS", "check_pairs", "replica_context", "num_replicas", "gather",
           "global_sum", "share"]
