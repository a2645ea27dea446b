"""Stopping a run that diverged, instead of scoring it.

A loss or predictions that become NaN or infinite make every later number
meaningless: AUCs of all-NaN predictions still look like AUCs. `StopOnNonFinite`
(like Keras' `TerminateOnNaN`, but raising) stops training at the first
non-finite batch or epoch loss, and `check_predictions` refuses to score
non-finite predictions. Both raise `Diverged`, an `InputError` (exit status 2)
that names the epoch and the usual causes.
"""
import math
from typing import Dict

import numpy as np
import tensorflow as tf

from pwiser_tf.errors import InputError

CAUSES = ("lower the learning rate (train.learning_rate, --learning-rate), and check that "
          "the labels are 0 or 1 (a loss can return NaN on other labels where it cannot "
          "raise)")


class Diverged(InputError):
    """A run whose loss or predictions became NaN or infinite."""


# The total losses; their parts add up to them, and metrics such as a log loss on a
# split without clicks may be undefined without anything having diverged.
CHECKED = ("loss", "val_loss")


def _non_finite(logs) -> Dict[str, float]:
    return {key: float(value) for key, value in (logs or {}).items()
            if key in CHECKED and not math.isfinite(float(value))}


class StopOnNonFinite(tf.keras.callbacks.Callback):
    """Raises `Diverged` as soon as a batch's loss, or an epoch's (training or
    validation) loss, is not finite. Put it before the callbacks that save state,
    so the diverged epoch is never committed."""

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = _non_finite({"loss": (logs or {}).get("loss", 0.0)})
        if bad:
            raise Diverged(f"training diverged at epoch {self._epoch + 1}, batch {batch + 1}: "
                           f"the loss is {bad['loss']}; {CAUSES}")

    def on_epoch_end(self, epoch, logs=None):
        bad = _non_finite(logs)
        if bad:
            parts = ", ".join(f"{key} {value}" for key, value in sorted(bad.items()))
            raise Diverged(f"training diverged at epoch {epoch + 1}: {parts}; {CAUSES}")


def check_predictions(predictions: Dict[str, np.ndarray], where: str) -> None:
    """Raises `Diverged` if any prediction is NaN or infinite (`where`: the run)."""
    for name, values in sorted(predictions.items()):
        values = np.asarray(values, dtype=float)
        bad = int(np.size(values) - np.isfinite(values).sum())
        if bad:
            raise Diverged(f"{where}: the trained model predicts non-finite {name} for {bad} "
                           f"of {np.size(values)} examples; not scoring it; {CAUSES}")
