"""A TFX Trainer's data as the training core reads a run's: `FileInputs`.

`pwiser-tf train` reads the splits of a converted directory; a Trainer gets file
patterns (`fn_args.train_files`, `eval_files`) and a schema instead. `FileInputs`
is the core's `training.Inputs` over those files, so a Trainer run gets the same
per-epoch shuffles, static shapes (under a strategy, XLA or a TPU) and
distribution as a `pwiser-tf train` run. The eval files are its `validation`
split: they select the best epoch (early stopping) and are scored.

Import it after the Keras flavour is chosen (`tfx_trainer.tf_keras_ready`): the
training core loads `tf.keras`.
"""
from typing import Dict, List, Optional

from pwiser_tf import fileio
from pwiser_tf.pipelines.schema import Metadata, Split
from pwiser_tf.pipelines.shards import verify_shards
from pwiser_tf.training import Inputs


class FileInputs(Inputs):
    """`Inputs` over lists of files, one list per split (`train`, `validation`).

    Args:
      files: `{split: files}`; each split's rows are counted as its shards are
        verified (one read per shard and process, which `make_dataset` makes anyway).
      schema: the records' `Schema`.
      train: the run's `TrainSettings`.
      strategy: the run's `tf.distribute.Strategy`.
      steps: `{split: global steps}` for splits read for a fixed number of steps
        over their repeated files (`fn_args.train_steps`, `eval_steps`); a split
        without one is read in whole passes.
    """

    def __init__(self, files: Dict[str, List[str]], schema, train, strategy,
                 steps: Optional[Dict[str, Optional[int]]] = None):
        splits = {}
        for split, names in files.items():
            records = verify_shards(names, fileio.compression_of(names))
            splits[split] = Split(files=list(names), counts={"rows": sum(records)},
                                  records=records)
        super().__init__(None, Metadata(schema=schema, splits=splits), train, strategy)
        self.files = {split: list(names) for split, names in files.items()}
        self.schema = schema
        self.fixed_steps = {split: n for split, n in (steps or {}).items() if n}

    def steps(self, split: str) -> Optional[int]:
        return self.fixed_steps.get(split) or super().steps(split)

    def fit_steps(self, split: str) -> Optional[int]:
        # A fixed number of steps repeats the files and cuts them, with or without a
        # strategy; whole passes need it under a strategy only.
        return self.fixed_steps.get(split) or super().fit_steps(split)

    def read(self, split: str, **options):
        from pwiser_tf.pipelines import make_dataset

        return make_dataset(self.files[split], self.batch_size, schema=self.schema,
                            **options)
