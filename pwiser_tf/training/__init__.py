"""One training run: a model, a loss and a seed on a converted dataset.

`train_run` trains with early stopping on the validation split, exports the
SavedModel, scores the evaluation split through its serving signature and
writes `metrics.json`. A run is keyed by its fingerprint: the resolved settings
(model, loss, seed, training and model configuration, evaluation split) and a
hash of each dataset's `metadata.json`. The run directory holds:

    run.json           the fingerprint and the settings it was computed from
    config.yaml        the resolved configuration of the run
    checkpoints/       the best weights (by validation CTCVR AUC)
    saved_model/       the exported model, with the training metadata in assets.extra/
    history.json       per-epoch training and validation metrics, all epochs
    logs/              TensorBoard logs: the loss, its parts and the AUCs, per epoch
    metrics.json       written last: its presence marks a finished run
    staging/           a run in progress (the same layout, plus state.json and backup/)
    .lock              one writer at a time (its holder's process id)

A run is written into `staging/` and moved into place only when it has
finished, so a run that fails leaves an earlier finished result untouched.
Rerunning with the same fingerprint reuses a finished run, or resumes a
staged one where it stopped: after the last finished epoch (with its history,
early-stopping state and best checkpoint), after training (export), or after
the export (scoring). Rerunning with another fingerprint is refused unless
`overwrite=True` (`pwiser-tf train --overwrite`); the two are never mixed.

Each epoch's data order and random state (dropout) are drawn from the seed and
the epoch alone (`seeds`), so a run killed and resumed at epoch k trains on the
batches, with the dropout masks, that the uninterrupted run had at epoch k, and
ends with the same metrics.

A run whose loss or predictions become NaN or infinite stops with
`guards.Diverged` (exit status 2, naming the epoch) and is discarded: nothing
is published, and an earlier finished result stays. A refused run leaves no
new folder behind.

Under a `tf.distribute` strategy (`strategy=`, see `pwiser_tf.distribute`) the
model is built, compiled and its variables created inside the strategy's scope,
the data reaches the replicas through `distribute_datasets_from_function`, and
shapes are static (whole batches, multi-valued fields padded to
`train.multi_valued_length`). With several workers only the chief writes the run
directory; the others train in step with it in temporary folders they remove,
and resume from the chief's staged state.

The modules, one job each:

    spec.py        RunSpec, resolve_run, fingerprint: what a run was asked, checked
    rundir.py      RunDirectory: the lock, staging, refusal and publishing of results
    callbacks.py   EpochProgress, TrainingState, ReplicaStatistics: progress, early
                   stopping that survives a kill, replicas that resume alike
    seeds.py       each epoch's data seed and random state from (seed, epoch)
    inputs.py      Inputs: the data of a run, per input pipeline of its strategy
    build.py       the model of a run: seeded, compiled, in its strategy's scope
    artifacts.py   what a run writes besides its state: weights, id maps, histograms
    run.py         train_run: the phases (train, export, score), chief and workers
"""
from pwiser_tf.training.artifacts import id_maps, save_weights, temperature_histogram
from pwiser_tf.training.build import build_compiled, model_kwargs, seeded_model, seeded_start
from pwiser_tf.training.callbacks import (MONITOR, EpochProgress, ReplicaStatistics,
                                           TrainingState)
from pwiser_tf.training.inputs import Inputs, split_rows
from pwiser_tf.training.rundir import (BEST_WEIGHTS, CONFIG_FILE, HISTORY_FILE, LOGS_DIR,
                                       METRICS_FILE, PUBLISHED, RUN_FILE, STAGING_DIR,
                                       STATE_FILE, RunDirectory, published, read_metrics)
from pwiser_tf.training.run import WORKER_WAIT_SECONDS, build_model, fit, fit_epochs, train_run
from pwiser_tf.training.seeds import EpochRandomState, epoch_seed
from pwiser_tf.training.spec import (LOSSES, RunSpec, check_choice, check_model_arguments,
                                     differences, fingerprint, model_names, resolve_run)

__all__ = [
    "BEST_WEIGHTS", "CONFIG_FILE", "HISTORY_FILE", "LOGS_DIR", "LOSSES", "METRICS_FILE",
    "MONITOR", "PUBLISHED", "RUN_FILE", "STAGING_DIR", "STATE_FILE", "WORKER_WAIT_SECONDS",
    "EpochProgress", "EpochRandomState", "Inputs", "ReplicaStatistics", "RunDirectory",
    "RunSpec", "TrainingState", "build_compiled", "build_model", "check_choice",
    "check_model_arguments", "differences", "epoch_seed", "fingerprint", "fit", "fit_epochs",
    "id_maps", "model_kwargs", "model_names",
    "published", "read_metrics", "resolve_run", "save_weights", "seeded_model",
    "seeded_start", "split_rows", "temperature_histogram", "train_run",
]
