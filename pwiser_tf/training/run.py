"""`train_run`: one run through its phases (train, export, score), on the chief and
on the other workers (the package docstring describes the run directory)."""
import time
from typing import Dict, Optional

import tensorflow as tf

from pwiser_tf import __version__, distribute, evaluation, fileio, guards, metrics
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import METADATA_FILE
from pwiser_tf.training.artifacts import id_maps, save_weights, temperature_histogram
from pwiser_tf.training.build import outside_strategy_scope, seeded_model, strategy_scope
from pwiser_tf.training.callbacks import (MONITOR, EpochProgress, ReplicaStatistics,
                                           TrainingState)
from pwiser_tf.training.inputs import Inputs
from pwiser_tf.training.rundir import (BEST_WEIGHTS, HISTORY_FILE, LOGS_DIR, METRICS_FILE,
                                       RUN_FILE, STAGING_DIR, RunDirectory, published)
from pwiser_tf.training.seeds import EpochRandomState
from pwiser_tf.training.spec import RunSpec, fingerprint, resolve_run

# How long a worker other than the chief waits for the chief's result after training.
WORKER_WAIT_SECONDS = 3600.0


def train_run(data_dir: str, output_dir: str, model_name: str, loss: str, seed: int,
              config: dict, eval_data_dir: Optional[str] = None,
              eval_split: Optional[str] = None, progress: bool = True,
              overwrite: bool = False, strategy=None,
              virtual_devices: Optional[int] = None) -> Dict[str, float]:
    """Trains, exports and evaluates one run; returns (and writes) its metrics.

    A finished run with the same settings is returned as is; an unfinished one
    resumes; a run with other settings in `output_dir` raises `InputError`
    unless `overwrite` (then the new run replaces it once it has finished).

    `strategy`: a `tf.distribute.Strategy` or a name of `distribute.STRATEGIES`
    (with `virtual_devices`, see `distribute.resolve_strategy`); `None` trains
    under the strategy whose scope is active, if any. A worker that is not the
    chief trains in step with it, writes nothing under `output_dir` and returns
    the chief's metrics once the chief has published them (`output_dir` must be
    shared by the workers, e.g. on `gs://`).
    """
    strategy = distribute.resolve_strategy(strategy, virtual_devices)  # before any op
    strategy_scope(strategy, check_only=True)
    spec = resolve_run(data_dir, model_name, loss, seed, config, eval_data_dir, eval_split)
    if not distribute.is_chief(strategy):
        return _worker_run(output_dir, spec, strategy)
    with fileio.removed_if_refused(output_dir):
        run = RunDirectory(output_dir)
        with run.lock():
            finished = run.check(spec.settings, overwrite)
            if finished is not None:
                return finished
            staging = run.start(spec)
            try:
                result = _run_in(staging, spec, progress, strategy)
            except InputError as err:
                run.discard_failed(isinstance(err, guards.Diverged))
                raise
            run.publish()
    return result


def _worker_run(output_dir: str, spec: RunSpec, strategy,
                wait_seconds: float = WORKER_WAIT_SECONDS) -> Dict[str, float]:
    """A worker other than the chief: the same steps in a temporary folder, resuming
    from the chief's staged state (whose checks the chief makes); then the chief's
    published metrics."""
    key = fingerprint(spec.settings)
    finished = published(output_dir, key)
    if finished is not None:
        return finished
    staged = fileio.join(output_dir, STAGING_DIR)
    staged_run = fileio.join(staged, RUN_FILE)
    resume = tf.io.gfile.exists(staged_run) \
        and fileio.read_json(staged_run)["fingerprint"] == key
    with distribute.worker_directory(output_dir, strategy) as folder:
        _run_in(folder, spec, False, strategy, resume_from=staged if resume else None)
    deadline = time.monotonic() + wait_seconds
    while (finished := published(output_dir, key)) is None:
        if time.monotonic() > deadline:
            raise InputError(f"{output_dir}: {distribute.task_name(strategy)} finished "
                             f"training, but the chief published no result within "
                             f"{wait_seconds:g} s")
        time.sleep(0.5)
    return finished


def _run_in(staging: str, spec: RunSpec, progress: bool, strategy=None,
            resume_from: Optional[str] = None) -> Dict[str, float]:
    """Trains (or resumes), exports and scores in `staging`; writes its metrics.json.

    A worker other than the chief stops after the export (which, like training,
    every worker runs) and returns its task and epochs.
    """
    from pwiser_tf import models  # the networks need tf-keras; load them only to train

    strategy = strategy or tf.distribute.get_strategy()
    inputs = Inputs(spec.data_dir, spec.metadata, spec.train, strategy)
    progress_cb = EpochProgress(spec.train.epochs, spec.train.batch_size,
                                f"{spec.model}/{spec.loss}/seed{spec.seed}", enabled=progress,
                                steps=inputs.steps("train"))
    state = TrainingState(staging, spec.train.patience, progress=progress_cb,
                          resume_from=resume_from)
    saved = fileio.join(staging, evaluation.SAVED_MODEL_DIR)
    model = None
    if state.state["phase"] == "train":
        model = fit(spec, state, progress_cb, strategy)
        extra = {}
        if hasattr(model, "temperatures"):  # AdaFTR: where its temperatures sit
            extra["temperature_histogram"] = temperature_histogram(
                model, inputs.dataset("validation"))
        state.commit(phase="export", extra=extra)
    if state.state["phase"] == "export":
        if model is None:  # killed while exporting: the trained weights, no training
            model = build_model(spec, strategy)
            state.restore_best(model)
        with tf.io.gfile.GFile(fileio.join(spec.data_dir, METADATA_FILE), "rb") as f:
            trained_on = f.read()
        models.export_saved_model(model, saved, spec.metadata.schema,
                                  assets_extra={METADATA_FILE: trained_on},
                                  id_maps=id_maps(spec.data_dir, spec.metadata))
        state.commit(phase="score")
    if not distribute.is_chief(strategy):
        return {"task": distribute.task_name(strategy),
                "epochs_trained": len(state.state["history"].get(MONITOR, []))}
    labels, predictions = outside_strategy_scope(
        evaluation.predict_split, staging, spec.eval_dir, spec.eval_split)
    guards.check_predictions(predictions, f"{spec.model}/{spec.loss}/seed{spec.seed} "
                             f"(best epoch {state.state['best_epoch']})")
    result = metrics.ctr_cvr_metrics(labels, predictions)
    history = state.state["history"]
    result.update(state.summary())
    result.update({
        "eval_split": spec.eval_split,
        "replicas": int(strategy.num_replicas_in_sync),  # the devices it trained on
        "version": __version__,  # the pwiser-tf that trained it
    })
    result.update(state.state.get("extra") or {})
    fileio.write_json(fileio.join(staging, HISTORY_FILE), history)
    fileio.write_json(fileio.join(staging, METRICS_FILE), result)
    return result


def build_model(spec: RunSpec, strategy=None, inputs: Optional[Inputs] = None):
    """The run's compiled model, its variables built, so a checkpoint can be restored.

    Its initial weights come from the run's seed alone, also when it resumes (the
    restored checkpoint then replaces them)."""
    inputs = inputs or Inputs(spec.data_dir, spec.metadata, spec.train,
                              strategy or tf.distribute.get_strategy())
    return seeded_model(inputs, spec.model, spec.model_config, spec.train, spec.seed,
                        spec.metadata.schema)


def fit(spec: RunSpec, state: TrainingState, progress_cb: EpochProgress, strategy=None):
    """Builds the model, restores the last committed epoch, trains the remaining
    epochs with early stopping (`fit_epochs`), and returns the model at its best
    epoch (also saved as checkpoints/best.weights.h5). TensorBoard logs go to `logs/`."""
    epochs = spec.train.epochs
    inputs = Inputs(spec.data_dir, spec.metadata, spec.train,
                    strategy or tf.distribute.get_strategy())
    model = build_model(spec, inputs=inputs)
    state.restore(model)
    fit_epochs(model, inputs, spec.seed, epochs, state, progress_cb,
               fileio.join(state.directory, LOGS_DIR))
    state.restore_best(model)
    save_weights(model, fileio.join(state.directory, BEST_WEIGHTS))
    return model


def fit_epochs(model, inputs: Inputs, seed: int, epochs: int, state: TrainingState,
               progress_cb: EpochProgress, log_dir: Optional[str] = None) -> None:
    """Trains `model` from `state`'s epoch up to `epochs`, validating after each
    epoch, with early stopping (`state`); TensorBoard logs go to `log_dir` (if given).
    `pwiser-tf train` and the TFX Trainer (`pwiser_tf.tfx_trainer`) train through it.

    Epoch k trains on the batches and with the random state that (seed, k) sets
    (`seeds`), from the state that a checkpoint holds (`ReplicaStatistics`), so a
    resumed run continues exactly as the uninterrupted run did."""
    if state.training_done(epochs):
        return
    callbacks = [EpochRandomState(seed), ReplicaStatistics(), guards.StopOnNonFinite(),
                 progress_cb, state]
    if log_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir, write_graph=False,
                                                        profile_batch=0))
    model.fit(inputs.epochs(seed, state.initial_epoch, epochs),
              validation_data=inputs.distributed("validation"), epochs=epochs,
              initial_epoch=state.initial_epoch, callbacks=callbacks,
              steps_per_epoch=inputs.steps("train"),
              validation_steps=inputs.fit_steps("validation"), verbose=0)
