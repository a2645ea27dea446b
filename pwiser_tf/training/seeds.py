"""Each epoch's randomness, drawn from the run's seed and the epoch alone.

A resumed run must train epoch k as the uninterrupted run did: on the same
batches, with the same dropout masks. Neither may depend on what ran before in
the process, so both are drawn afresh at each epoch from (seed, epoch):

- the training data of epoch k is shuffled with `epoch_seed(seed, k, "data")`
  (`Inputs.epochs`);
- `EpochRandomState` resets every random generator of the model to
  `epoch_seed(seed, k, "random/<i>")` at the start of epoch k. tf-keras' `Dropout`
  draws its masks from a `tf.random.Generator` that checkpoints leave out, so a
  restored model would otherwise draw the masks of epoch 0 again.

A random op with a state of its own inside the traced training step
(`tf.random.uniform`, as AdaFTR's `negatives="random"` draws its shifts) restarts
with each process that traces the step; it cannot be reset from here.

>>> epoch_seed(0, 3) == epoch_seed(0, 3) != epoch_seed(0, 4)
True
"""
import hashlib

import tensorflow as tf


def epoch_seed(seed: int, epoch: int, stream: str = "data") -> int:
    """A 31-bit seed for `stream` in epoch `epoch` of a run seeded with `seed`."""
    digest = hashlib.sha256(f"{int(seed)}/{int(epoch)}/{stream}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def random_generators(model) -> list:
    """The `tf.random.Generator`s that the model's layers draw from, in a fixed order
    (`tf.Module.submodules` walks attributes sorted by name). tf-keras keeps a random
    layer's generator in `layer._random_generator._generator`; no public API lists it."""
    found = []
    for layer in (model, *model.submodules):
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if isinstance(generator, tf.random.Generator):
            found.append(generator)
    return found


class EpochRandomState(tf.keras.callbacks.Callback):
    """Resets the model's random generators at the start of each epoch from
    (`seed`, epoch), so that an epoch's dropout masks do not depend on the epochs
    this process trained before it."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)

    def get_config(self):
        return {"seed": self.seed}

    def on_epoch_begin(self, epoch, logs=None):
        for index, generator in enumerate(random_generators(self.model)):
            generator.reset_from_seed(epoch_seed(self.seed, epoch, f"random/{index}"))
