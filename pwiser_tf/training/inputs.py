"""A run's training and validation data, per input pipeline of its strategy."""
from typing import List, Optional

import tensorflow as tf

from pwiser_tf import config as config_lib
from pwiser_tf import distribute
from pwiser_tf.pipelines.schema import Metadata
from pwiser_tf.training.seeds import epoch_seed


def split_rows(metadata: Metadata, split: str) -> Optional[int]:
    """The rows of `split` as its metadata lists them, or None."""
    return (metadata.splits[split].counts or {}).get("rows")


class Inputs:
    """A run's training and validation data, per input pipeline of its strategy.

    Without distribution each split is read once per epoch, as converted. Under a
    strategy or XLA (`train.jit_compile`) shapes are static: whole batches, and
    multi-valued fields padded or cut to `train.multi_valued_length`. Under a
    strategy the data goes through `distribute_datasets_from_function` (each
    input pipeline reads its own part, in batches of global // replicas), and
    every split is repeated and cut to `rows // batch_size` global steps, so every
    worker and replica runs the same steps (the workers' shards differ in size).

    The training data of each epoch is shuffled with a seed of its own, drawn
    from the run's seed and the epoch (`epochs`), so a resumed run reads the
    batches that the uninterrupted run read.
    """

    def __init__(self, data_dir: str, metadata: Metadata, train: config_lib.TrainSettings,
                 strategy):
        train = config_lib.train_settings(train)  # or a partial `train:` section
        self.data_dir, self.metadata, self.strategy = data_dir, metadata, strategy
        self.batch_size = train.batch_size
        self.distributed_mode = distribute.is_distributed(strategy)
        static = self.distributed_mode or bool(train.jit_compile) \
            or distribute.is_tpu(strategy)
        self.shapes = ({"drop_remainder": True,
                        "multi_valued_length": train.multi_valued_length}
                       if static else {})

    def steps(self, split: str) -> Optional[int]:
        """Global steps in one pass over `split`."""
        rows = split_rows(self.metadata, split)
        if rows is None:
            return None
        if self.shapes:
            return max(1, rows // self.batch_size)
        return -(-rows // self.batch_size)

    def fit_steps(self, split: str) -> Optional[int]:
        """`validation_steps` for `fit`: set under a strategy."""
        return self.steps(split) if self.distributed_mode else None

    def dataset(self, split: str, input_context=None, seed: Optional[int] = None):
        """One input pipeline's batches of one pass over `split` (training: shuffled
        with `seed`); under a strategy, `steps(split)` global steps of it."""
        training = split == "train"
        steps = self.fit_steps(split)
        ds = self.read(split, shuffle=training, seed=seed if training else None,
                       input_context=input_context, repeat=steps is not None, **self.shapes)
        if steps is not None:  # every worker and replica runs the same steps
            per_step = (input_context.num_replicas_in_sync // input_context.num_input_pipelines
                        if input_context else 1)
            ds = ds.take(steps * per_step)
        return ds

    def read(self, split: str, **options) -> tf.data.Dataset:
        """`make_dataset` of `split` with `options`: where the records come from (a
        subclass reads other files, e.g. `pwiser_tf.tfx_inputs.FileInputs`)."""
        from pwiser_tf.pipelines import make_dataset

        return make_dataset(self.data_dir, self.batch_size, split=split, **options)

    def distributed(self, split: str, seed: Optional[int] = None):
        """`split` for `fit`: through `distribute_datasets_from_function` under a strategy."""
        return distribute.distribute_datasets(
            self.strategy, lambda context: self.dataset(split, context, seed))

    def epochs(self, seed: int, first: int, last: int):
        """The training batches of epochs [`first`, `last`) for one `fit` with
        `steps_per_epoch=steps("train")`: epoch k is one pass shuffled with
        `epoch_seed(seed, k)`, whatever epoch the fit starts at."""
        if not 0 <= first < last:
            raise ValueError(f"no epochs in [{first}, {last})")

        def epochs_fn(context):
            passes = [self.dataset("train", context, epoch_seed(seed, epoch))
                      for epoch in range(first, last)]
            # Prepares the next epoch's first batches while this one ends and validates.
            return _concatenate(passes).prefetch(tf.data.AUTOTUNE)

        return distribute.distribute_datasets(self.strategy, epochs_fn)


def _concatenate(datasets: List[tf.data.Dataset]) -> tf.data.Dataset:
    """`datasets` one after another, as a balanced tree of `concatenate` (so that
    many epochs nest log2(epochs) deep, not epochs deep)."""
    if len(datasets) == 1:
        return datasets[0]
    middle = len(datasets) // 2
    return _concatenate(datasets[:middle]).concatenate(_concatenate(datasets[middle:]))
