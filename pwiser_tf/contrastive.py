"""AdaFTR's contrastive alignment term, written once in `keras.ops`.

The CTR and CVR representations of the same exposure form a positive pair, the
other exposures' CVR representations are its negatives, and each exposure has
its own InfoNCE temperature tau_i:

    L_CL = -(1/B) sum_i log( exp(s(z_c(i), z_v(i)) / tau_i) / sum_j exp(s(z_c(i), z_v(j)) / tau_i) )

with s the dot product of L2-normalised representations. `info_nce` gives the
per-row terms; `ContrastiveAlignmentLoss` is the Keras 3 loss around it (Keras'
`Loss.__call__` reduces the rows and applies `sample_weight`), registered like the
project's other losses. `pwiser_tf.models.AdaFTR` uses the same `info_nce`.

Under JAX's `keras.distribution.DataParallel` the loss is traced over the global
batch, so the negatives are every device's rows. Under a `tf.distribute`
strategy `pairs="global"` all-gathers the other replicas' CVR representations
(`pwiser_tf.replicas.gather`), so the negatives are the global batch's there too.

Example:

>>> import numpy as np
>>> z = np.eye(2, dtype="float32")  # two exposures, towers already aligned
>>> loss = ContrastiveAlignmentLoss()
>>> value = loss(0.0, {"ctr": z, "cvr": z, "temperature": np.full(2, 0.1, "float32")})
>>> round(float(value), 5)  # log(1 + e^-10): the positive dominates
5e-05
"""
import keras
from keras import ops

from pwiser_tf import replicas
from pwiser_tf.errors import InputError

PARTS = ("ctr", "cvr", "temperature")


def info_nce(z_ctr, z_cvr, temperature, candidates=None):
    """Per-row InfoNCE of each row's CTR representation against its CVR one.

    Args:
      z_ctr, z_cvr: `[B, D]` L2-normalised representations of the two towers.
      temperature: `[B]` positive temperatures, one per row.
      candidates: `[B', D]` CVR representations to contrast with (default
        `z_cvr`: in-batch negatives); row i's own must be among them.

    Returns:
      `[B]` float32: -log softmax of the positive over the candidates.
    """
    z_ctr, z_cvr = ops.cast(z_ctr, "float32"), ops.cast(z_cvr, "float32")
    candidates = z_cvr if candidates is None else ops.cast(candidates, "float32")
    tau = ops.cast(temperature, "float32")[:, None]
    logits = ops.matmul(z_ctr, ops.transpose(candidates)) / tau
    positive = ops.sum(z_ctr * z_cvr, axis=-1, keepdims=True) / tau
    return ops.logsumexp(logits, axis=1) - positive[:, 0]


def normalize(z):
    """L2-normalise each row (float32, as the similarities need)."""
    return ops.normalize(ops.cast(z, "float32"), axis=-1, order=2)


@keras.saving.register_keras_serializable(package="pwiser_tf")
class ContrastiveAlignmentLoss(keras.losses.Loss):
    """AdaFTR's InfoNCE alignment of the CTR and CVR towers, with a temperature
    per instance, as a Keras 3 loss on any backend.

    `y_pred` is a dict: `"ctr"` and `"cvr"` the towers' `[B, D]` representations,
    `"temperature"` the `[B]` (or `[B, 1]`) temperatures. `y_true` is unused (the
    term has no label: pass the batch's labels, or 0).
    The representations are L2-normalised here unless `normalized=True`.

    Args:
      normalized: whether the representations are L2-normalised already.
      pairs: under a `tf.distribute` strategy, `"global"` (default) contrasts with
        every replica's rows, `"replica"` with this replica's only.
      reduction, name, dtype: as Keras' `Loss`.
    """

    def __init__(self, normalized: bool = False, pairs: str = "global",
                 reduction: str = "sum_over_batch_size", name: str = "contrastive_alignment",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.normalized = bool(normalized)
        self.pairs = replicas.check_pairs(pairs)

    def call(self, y_true, y_pred):
        if not isinstance(y_pred, dict) or set(y_pred) != set(PARTS):
            raise InputError(f"ContrastiveAlignmentLoss: y_pred must be a dict with the "
                             f"keys {PARTS}, got {type(y_pred).__name__}"
                             + (f" with {sorted(y_pred)}" if isinstance(y_pred, dict) else ""))
        z_ctr, z_cvr = y_pred["ctr"], y_pred["cvr"]
        if len(z_ctr.shape) != 2 or tuple(z_ctr.shape) != tuple(z_cvr.shape):
            raise InputError(f"ContrastiveAlignmentLoss: y_pred['ctr'] and y_pred['cvr'] "
                             f"must both be [B, D], got {tuple(z_ctr.shape)} and "
                             f"{tuple(z_cvr.shape)}")
        if not self.normalized:
            z_ctr, z_cvr = normalize(z_ctr), normalize(z_cvr)
        temperature = ops.reshape(y_pred["temperature"], (-1,))
        candidates = replicas.gather([z_cvr], self.pairs)[0]
        return info_nce(z_ctr, z_cvr, temperature, candidates)

    def get_config(self):
        config = super().get_config()
        config.update(normalized=self.normalized, pairs=self.pairs)
        return config


__all__ = ["info_nce", "normalize", "ContrastiveAlignmentLoss"]
