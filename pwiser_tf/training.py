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
"""
import dataclasses
import hashlib
import json
import contextlib
import math
import os
import tempfile
import time
from typing import Dict, Optional

import tensorflow as tf

from pwiser_tf import config as config_lib
from pwiser_tf import distribute, evaluation, fileio, guards, metrics
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata

gfile = tf.io.gfile

METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
STATE_FILE = "state.json"
HISTORY_FILE = "history.json"
CONFIG_FILE = "config.yaml"
STAGING_DIR = "staging"
LOGS_DIR = "logs"
# How long a worker other than the chief waits for the chief's result after training.
WORKER_WAIT_SECONDS = 3600.0
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
# Moved from staging/ into the run directory when a run finishes; metrics.json last.
PUBLISHED = (CONFIG_FILE, HISTORY_FILE, "checkpoints", evaluation.SAVED_MODEL_DIR, LOGS_DIR)
LOSSES = ("bce", "pwiser")
MONITOR = "val_ctcvr_auc"


def model_names():
    from pwiser_tf import models
    return sorted(models.MODELS)


def check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise InputError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


class EpochProgress(tf.keras.callbacks.Callback):
    """tqdm bars over the epochs, with the monitored validation metric, and over
    the training steps of each epoch (`steps` per epoch, when known); it measures
    the training throughput (examples/s, validation excluded). `enabled=False`
    hides the bars and still measures."""

    def __init__(self, total_epochs: int, batch_size: int, description: str = "",
                 enabled: bool = True, steps: Optional[int] = None):
        super().__init__()
        self.total_epochs, self.batch_size = total_epochs, batch_size
        self.description, self.enabled, self.steps = description, enabled, steps
        self.examples, self.seconds, self._bar, self._steps_bar = 0, 0.0, None, None

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm
        self._bar = tqdm(total=self.total_epochs, desc=self.description or "epochs",
                         unit="epoch", disable=not self.enabled, leave=False)
        self._steps_bar = tqdm(total=self.steps, desc="steps", unit="step", position=1,
                               disable=not self.enabled, leave=False)

    def on_epoch_begin(self, epoch, logs=None):
        self._steps, self._start = 0, time.perf_counter()
        if self._bar is not None and self._bar.n < epoch:
            self._bar.update(epoch - self._bar.n)  # resumed
        if self._steps_bar is not None:
            self._steps_bar.reset(total=self.steps)

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self._steps_bar is not None:
            self._steps_bar.update(1)

    def on_test_begin(self, logs=None):
        # Validation runs inside fit after the epoch's training steps.
        if getattr(self, "_start", None) is not None:
            self.seconds += time.perf_counter() - self._start
            self.examples += self._steps * self.batch_size
            self._start = None

    def on_epoch_end(self, epoch, logs=None):
        if self._start is not None:  # no validation this epoch
            self.on_test_begin()
        self._bar.set_postfix({MONITOR: f"{(logs or {}).get(MONITOR, float('nan')):.4f}"})
        self._bar.update(1)

    def on_train_end(self, logs=None):
        self._steps_bar.close()
        self._bar.close()

    @property
    def examples_per_sec(self) -> float:
        return self.examples / self.seconds if self.seconds else float("nan")


def _check_restored(status, name: str) -> None:
    """Every variable of the model must come back from the checkpoint: one that
    the checkpoint lacks (another layout of the layers) would stay at its random
    start without a word."""
    status.expect_partial()  # the checkpoint may hold more (the optimizer's slots)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise InputError(f"checkpoint {name} does not hold every variable of the model "
                         f"(written by another version?); rerun with --overwrite: "
                         f"{str(error).splitlines()[0]}") from None


class TrainingState(tf.keras.callbacks.Callback):
    """Early stopping that survives a kill: after every epoch, the weights and the
    optimizer (`backup/epoch-K`), the history of all epochs, the best value, its
    epoch and the epochs without improvement are committed in one `state.json`.

    `restore(model)` puts a resumed model back at the last committed epoch;
    `restore_best(model)` loads the best epoch's weights (early stopping's
    `restore_best_weights`).

    Args:
      directory: the staging directory of the run.
      patience: epochs without improvement of `monitor` before training stops.
      monitor: the validation metric to maximize.
      progress: an `EpochProgress` whose throughput counts are kept across resumes.
      resume_from: another staging directory to resume from when `directory` has
        no state (a worker that is not the chief resumes from the chief's).
    """

    def __init__(self, directory: str, patience: int, monitor: str = MONITOR,
                 progress: Optional[EpochProgress] = None,
                 resume_from: Optional[str] = None):
        super().__init__()
        self.directory, self.patience, self.monitor = directory, patience, monitor
        self.progress = progress
        self._sources = [directory] + ([resume_from] if resume_from else [])
        paths = [fileio.join(d, STATE_FILE) for d in self._sources]
        path = next((p for p in paths if gfile.exists(p)), None)
        self.state = fileio.read_json(path) if path else {
            "phase": "train", "epoch": 0, "history": {}, "best": None, "best_epoch": 0,
            "wait": 0, "stopped": False, "checkpoint": None, "examples": 0, "seconds": 0.0}
        self._base = (self.state["examples"], self.state["seconds"])

    def get_config(self):
        return {"directory": self.directory, "patience": self.patience,
                "monitor": self.monitor}

    @property
    def initial_epoch(self) -> int:
        return int(self.state["epoch"])

    def training_done(self, epochs: int) -> bool:
        return self.state["phase"] != "train" or self.state["stopped"] \
            or self.state["epoch"] >= epochs

    def _checkpoint(self, model):
        return tf.train.Checkpoint(model=model, optimizer=model.optimizer)

    def _find(self, name: str) -> str:
        """The checkpoint `name` in this run's directory, or where it resumed from."""
        paths = [fileio.join(d, name) for d in self._sources]
        return next((p for p in paths if gfile.exists(p + ".index")), paths[0])

    def restore(self, model) -> None:
        if self.state["checkpoint"]:
            model.optimizer.build(model.trainable_variables)
            status = self._checkpoint(model).read(self._find(self.state["checkpoint"]))
            _check_restored(status, self.state["checkpoint"])

    def restore_best(self, model) -> None:
        best = self.state.get("best_checkpoint")
        if best:
            _check_restored(tf.train.Checkpoint(model=model).read(self._find(best)), best)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        state = self.state
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(float(value))
        value = logs.get(self.monitor)
        name = f"backup/epoch-{epoch + 1}"
        self._checkpoint(self.model).write(fileio.join(self.directory, name))
        if value is not None and math.isfinite(value) and (
                state["best"] is None or value > state["best"]):
            state.update(best=float(value), best_epoch=epoch + 1, wait=0,
                         best_checkpoint=name)
        else:  # as Keras' EarlyStopping: stop after `patience` epochs without a gain
            state["wait"] += 1
            if state["wait"] >= self.patience and epoch > 0:
                state["stopped"] = True
                self.model.stop_training = True
        state["epoch"], state["checkpoint"] = epoch + 1, name
        if self.progress is not None:
            state["examples"] = self._base[0] + self.progress.examples
            state["seconds"] = self._base[1] + self.progress.seconds
        self.commit()
        keep = {state["checkpoint"], state.get("best_checkpoint")}
        for path in gfile.glob(fileio.join(self.directory, "backup", "epoch-*")):
            stem = "backup/" + os.path.basename(path).split(".")[0]
            if stem not in keep:
                gfile.remove(path)

    def commit(self, **updates) -> None:
        self.state.update(updates)
        fileio.write_json(fileio.join(self.directory, STATE_FILE), self.state)

    @property
    def examples_per_sec(self) -> float:
        seconds = self.state["seconds"]
        return self.state["examples"] / seconds if seconds else float("nan")


def _model_kwargs(config: dict, model_name: str, loss: str) -> dict:
    kwargs = dict(config.get("model") or {})
    kwargs.update((config.get("model_options") or {}).get(model_name) or {})
    kwargs["loss"] = loss
    if loss == "pwiser":
        kwargs.update(config.get("pwiser") or {})
    return kwargs


def build_compiled(model_name: str, schema, model_config: dict, train_config: dict,
                   jit_compile: Optional[bool] = None):
    """The registry's model, compiled with the reference optimizer.

    Call it inside a strategy's scope to create the variables there. Under the
    `mixed_float16` policy tf-keras wraps the optimizer in a `LossScaleOptimizer`.
    """
    from pwiser_tf import models

    model = models.build_model(model_name, schema, **model_config)
    model.compile(optimizer=models.reference_optimizer(
        learning_rate=float(train_config.get("learning_rate", 1e-3)),
        weight_decay=float(train_config.get("weight_decay", 1e-6))),
        jit_compile=jit_compile)
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        # The task's metrics are global already; Keras would sum them over the workers.
        model.distribute_reduction_method = "first"
    return model


def _eval_source(data_dir: str, eval_data_dir: Optional[str], split: Optional[str]):
    if eval_data_dir:
        meta = Metadata.load(eval_data_dir)
        return eval_data_dir, split or ("test" if "test" in meta.splits else "train")
    meta = Metadata.load(data_dir)
    if split:
        return data_dir, split
    return data_dir, "test" if "test" in meta.splits else "validation"


def _metadata_hash(data_dir: str) -> str:
    with gfile.GFile(fileio.join(data_dir, METADATA_FILE), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _rows(metadata: Metadata, split: str) -> Optional[int]:
    return (metadata.splits[split].counts or {}).get("rows")


@dataclasses.dataclass
class RunSpec:
    """What a run was asked: resolved and checked before anything is written."""

    data_dir: str
    eval_dir: str
    eval_split: str
    model: str
    loss: str
    seed: int
    train: dict
    model_config: dict
    metadata: Metadata

    @property
    def settings(self) -> dict:
        """The fingerprinted settings: everything that changes the result."""
        return {"model": self.model, "loss": self.loss, "seed": self.seed,
                "train": self.train, "model_config": self.model_config,
                "eval_split": self.eval_split, "data": _metadata_hash(self.data_dir),
                "eval_data": _metadata_hash(self.eval_dir)}

    @property
    def config(self) -> dict:
        """The resolved configuration written as config.yaml."""
        return {"data": _absolute(self.data_dir), "eval_data": _absolute(self.eval_dir),
                "eval_split": self.eval_split, "model": self.model, "loss": self.loss,
                "seed": self.seed, "train": self.train, "model_config": self.model_config}


def _absolute(path: str) -> str:
    return os.path.abspath(path) if fileio.is_local(path) else path


def fingerprint(settings: dict) -> str:
    """A short hash of the settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _flatten(data, prefix=""):
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def differences(old: dict, new: dict) -> str:
    """The keys whose values differ, as `key (old -> new)`, comma-separated."""
    old, new = _flatten(old), _flatten(new)
    parts = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            if key in ("data", "eval_data"):
                parts.append(f"{key} (its metadata.json changed)")
            else:
                parts.append(f"{key} ({old.get(key, '<unset>')!r} -> "
                             f"{new.get(key, '<unset>')!r})")
    return ", ".join(parts)


def resolve_run(data_dir: str, model_name: str, loss: str, seed: int, config: dict,
                eval_data_dir: Optional[str] = None,
                eval_split: Optional[str] = None) -> RunSpec:
    """Checks the arguments, the configuration and the data; writes nothing."""
    from pwiser_tf import models

    check_choice("model", model_name, sorted(models.MODELS))
    check_choice("loss", loss, LOSSES)
    config = config_lib.validate(config)
    metadata = Metadata.load(data_dir)
    for split in ("train", "validation"):
        if split not in metadata.splits:
            raise InputError(
                f"{data_dir}: no {split!r} split; convert with --validation-fraction "
                f"to carve a validation split for early stopping")
        if _rows(metadata, split) == 0:
            raise InputError(f"{data_dir}: the {split!r} split has 0 rows; convert with "
                             f"more data" + (" or a larger --validation-fraction"
                                             if split == "validation" else ""))
    eval_dir, eval_split = _eval_source(data_dir, eval_data_dir, eval_split)
    eval_meta = Metadata.load(eval_dir)
    if eval_split not in eval_meta.splits:
        raise InputError(f"{eval_dir}: no {eval_split!r} split to evaluate on "
                         f"(has {', '.join(sorted(eval_meta.splits))})")
    if _rows(eval_meta, eval_split) == 0:
        raise InputError(f"{eval_dir}: the {eval_split!r} split has 0 rows; nothing to "
                         f"evaluate on")
    evaluation.check_compatible(metadata.schema, eval_meta.schema, eval_dir)
    model_config = _model_kwargs(config, model_name, loss)
    unknown = sorted(set(model_config) - models.model_arguments(models.MODELS[model_name]))
    if unknown:
        raise InputError(f"model {model_name!r} has no argument(s) {', '.join(unknown)}; it "
                         f"accepts: {', '.join(sorted(models.model_arguments(models.MODELS[model_name])))}")
    train = config_lib.train_settings(config)
    return RunSpec(data_dir=data_dir, eval_dir=eval_dir, eval_split=eval_split,
                   model=model_name, loss=loss, seed=int(seed), train=train,
                   model_config=model_config, metadata=metadata)


class RunDirectory:
    """A run's directory: its lock, its finished result and its staging area."""

    def __init__(self, path: str, argument: str = "--output"):
        self.path = path
        self.staging = fileio.join(path, STAGING_DIR)
        fileio.make_dirs(path, argument)

    def lock(self):
        return fileio.exclusive_lock(self.path, "run directory")

    def _run_file(self, directory: str) -> Optional[dict]:
        path = fileio.join(directory, RUN_FILE)
        return fileio.read_json(path) if gfile.exists(path) else None

    def finished(self) -> Optional[dict]:
        """The metrics of the finished run, or None."""
        return read_metrics(self.path)

    def check(self, settings: dict, overwrite: bool) -> Optional[dict]:
        """The finished result when it has these settings; raises when the
        directory holds a run with other settings, unless `overwrite`."""
        key = fingerprint(settings)
        if self.finished() is not None:
            recorded = self._run_file(self.path)
            if recorded is not None and recorded["fingerprint"] == key:
                staged = self._run_file(self.staging)
                if staged is not None and staged["fingerprint"] == key:
                    self.discard_staging()  # left over by a kill after publishing
                return self.finished()
            if not overwrite:
                self._refuse(recorded, settings, "a finished run")
        staged = self._run_file(self.staging) if gfile.exists(self.staging) else None
        if staged is not None and staged["fingerprint"] != key:
            if not overwrite:
                self._refuse(staged, settings, "an unfinished run")
            self.discard_staging()
        elif staged is None and gfile.exists(self.staging):
            self.discard_staging()  # killed before it recorded its settings
        return None

    def _refuse(self, recorded: Optional[dict], settings: dict, what: str) -> None:
        diff = ("it was written by an earlier version of pwiser-tf" if recorded is None
                else "differs in " + differences(recorded["settings"], settings))
        raise InputError(f"{self.path}: holds {what} with other settings ({diff}); "
                         f"pass --overwrite to replace it, or choose another --output")

    def discard_staging(self) -> None:
        if gfile.exists(self.staging):
            fileio.remove_tree(self.staging)

    def discard_failed(self, diverged: bool) -> None:
        """After a run failed with an `InputError`: a diverged run (it would diverge
        again) and one that committed no epoch (nothing to resume) are discarded, so
        that neither is taken for a run to resume nor refused as other settings."""
        if diverged or not gfile.exists(fileio.join(self.staging, STATE_FILE)):
            self.discard_staging()

    def start(self, spec: RunSpec) -> str:
        """The staging directory, created with the run's settings if new."""
        if self._run_file(self.staging) is None:
            gfile.makedirs(self.staging)
            config_lib.save(spec.config, fileio.join(self.staging, CONFIG_FILE))
            fileio.write_json(fileio.join(self.staging, RUN_FILE),
                              {"fingerprint": fingerprint(spec.settings),
                               "settings": spec.settings})
        return self.staging

    def publish(self) -> None:
        """Moves a finished staging area into place; metrics.json last.

        Each step can be repeated, so a kill while publishing is finished by
        the next run with the same settings.
        """
        target_metrics = fileio.join(self.path, METRICS_FILE)
        if gfile.exists(target_metrics):
            gfile.remove(target_metrics)  # the old result is being replaced
        for name in PUBLISHED + ("backup",):  # backup/: left by older versions
            target = fileio.join(self.path, name)
            if gfile.exists(target) and (name == "backup" or gfile.exists(
                    fileio.join(self.staging, name))):
                (fileio.remove_tree if gfile.isdir(target) else gfile.remove)(target)
        for name in PUBLISHED:
            source = fileio.join(self.staging, name)
            if gfile.isdir(source):
                fileio.move_tree(source, fileio.join(self.path, name))
            elif gfile.exists(source):
                gfile.rename(source, fileio.join(self.path, name), overwrite=True)
        gfile.copy(fileio.join(self.staging, RUN_FILE), fileio.join(self.path, RUN_FILE),
                   overwrite=True)
        gfile.rename(fileio.join(self.staging, METRICS_FILE), target_metrics, overwrite=True)
        self.discard_staging()


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
    _strategy_scope(strategy, check_only=True)
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


def _outside_strategy_scope(function, *args):
    """`function(*args)` outside any strategy scope the caller entered (scopes are
    per thread): the exported model serves on one device, as in production."""
    if not tf.distribute.has_strategy():
        return function(*args)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def _worker_run(output_dir: str, spec: RunSpec, strategy,
                wait_seconds: float = WORKER_WAIT_SECONDS) -> Dict[str, float]:
    """A worker other than the chief: the same steps in a temporary folder, resuming
    from the chief's staged state (whose checks the chief makes); then the chief's
    published metrics."""
    key = fingerprint(spec.settings)
    finished = _published(output_dir, key)
    if finished is not None:
        return finished
    staged = fileio.join(output_dir, STAGING_DIR)
    staged_run = fileio.join(staged, RUN_FILE)
    resume = gfile.exists(staged_run) and fileio.read_json(staged_run)["fingerprint"] == key
    with distribute.worker_directory(output_dir, strategy) as folder:
        _run_in(folder, spec, False, strategy, resume_from=staged if resume else None)
    deadline = time.monotonic() + wait_seconds
    while (finished := _published(output_dir, key)) is None:
        if time.monotonic() > deadline:
            raise InputError(f"{output_dir}: {distribute.task_name(strategy)} finished "
                             f"training, but the chief published no result within "
                             f"{wait_seconds:g} s")
        time.sleep(0.5)
    return finished


def _published(output_dir: str, key: str) -> Optional[dict]:
    """The metrics of the finished run in `output_dir` if its fingerprint is `key`."""
    recorded = fileio.join(output_dir, RUN_FILE)
    metrics_path = fileio.join(output_dir, METRICS_FILE)
    if gfile.exists(metrics_path) and gfile.exists(recorded) \
            and fileio.read_json(recorded)["fingerprint"] == key:
        return fileio.read_json(metrics_path)
    return None


def _run_in(staging: str, spec: RunSpec, progress: bool, strategy=None,
            resume_from: Optional[str] = None) -> Dict[str, float]:
    """Trains (or resumes), exports and scores in `staging`; writes its metrics.json.

    A worker other than the chief stops after the export (which, like training,
    every worker runs) and returns its task and epochs.
    """
    from pwiser_tf import models  # the networks need tf-keras; load them only to train

    strategy = strategy or tf.distribute.get_strategy()
    train_cfg = spec.train
    batch_size, epochs = int(train_cfg["batch_size"]), int(train_cfg["epochs"])
    inputs = Inputs(spec.data_dir, spec.metadata, train_cfg, strategy)
    progress_cb = EpochProgress(epochs, batch_size,
                                f"{spec.model}/{spec.loss}/seed{spec.seed}", enabled=progress,
                                steps=inputs.steps("train"))
    state = TrainingState(staging, int(train_cfg["patience"]), progress=progress_cb,
                          resume_from=resume_from)
    saved = fileio.join(staging, evaluation.SAVED_MODEL_DIR)
    model = None
    if state.state["phase"] == "train":
        model = fit(spec, state, progress_cb, strategy)
        extra = {}
        if hasattr(model, "temperatures"):  # AdaFTR: where its temperatures sit
            extra["temperature_histogram"] = temperature_histogram(
                model, inputs.dataset("validation", seed=spec.seed))
        state.commit(phase="export", extra=extra)
    if state.state["phase"] == "export":
        if model is None:  # killed while exporting: the trained weights, no training
            model = build_model(spec, strategy)
            state.restore_best(model)
        with gfile.GFile(fileio.join(spec.data_dir, METADATA_FILE), "rb") as f:
            trained_on = f.read()
        models.export_saved_model(model, saved, spec.metadata.schema,
                                  assets_extra={METADATA_FILE: trained_on},
                                  id_maps=id_maps(spec.data_dir, spec.metadata))
        state.commit(phase="score")
    if not distribute.is_chief(strategy):
        return {"task": distribute.task_name(strategy),
                "epochs_trained": len(state.state["history"].get(MONITOR, []))}
    labels, predictions = _outside_strategy_scope(
        evaluation.predict_split, staging, spec.eval_dir, spec.eval_split)
    guards.check_predictions(predictions, f"{spec.model}/{spec.loss}/seed{spec.seed} "
                             f"(best epoch {state.state['best_epoch']})")
    result = metrics.ctr_cvr_metrics(labels, predictions)
    history = state.state["history"]
    monitored = history.get(MONITOR, [])
    result.update({
        "train_examples_per_sec": state.examples_per_sec,
        "epochs_trained": len(monitored),
        "best_epoch": int(state.state["best_epoch"]),
        "best_val_ctcvr_auc": float(state.state["best"]) if state.state["best"] is not None
        else float("nan"),
        "eval_split": spec.eval_split,
        "replicas": int(strategy.num_replicas_in_sync),  # the devices it trained on
    })
    result.update(state.state.get("extra") or {})
    fileio.write_json(fileio.join(staging, HISTORY_FILE), history)
    fileio.write_json(fileio.join(staging, METRICS_FILE), result)
    return result


def build_model(spec: RunSpec, strategy=None):
    """The run's compiled model, its variables built, so a checkpoint can be restored."""
    model, _, _ = seeded_start(spec.data_dir, spec.model, spec.model_config, spec.train,
                               spec.seed, spec.metadata.schema, strategy=strategy)
    return model


def fit(spec: RunSpec, state: TrainingState, progress_cb: EpochProgress, strategy=None):
    """Builds the model, restores the last committed epoch, trains the remaining
    epochs with early stopping, and returns the model at its best epoch (also
    saved as checkpoints/best.weights.h5). TensorBoard logs go to `logs/`."""
    train_cfg = spec.train
    epochs = int(train_cfg["epochs"])
    strategy = strategy or tf.distribute.get_strategy()
    model, train_ds, val_ds = seeded_start(spec.data_dir, spec.model, spec.model_config,
                                           train_cfg, spec.seed + state.initial_epoch,
                                           spec.metadata.schema, strategy=strategy)
    state.restore(model)
    if not state.training_done(epochs):
        inputs = Inputs(spec.data_dir, spec.metadata, train_cfg, strategy)
        board = tf.keras.callbacks.TensorBoard(fileio.join(state.directory, LOGS_DIR),
                                               write_graph=False, profile_batch=0)
        model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                  initial_epoch=state.initial_epoch,
                  callbacks=[guards.StopOnNonFinite(), progress_cb, state, board],
                  steps_per_epoch=inputs.fit_steps("train"),
                  validation_steps=inputs.fit_steps("validation"), verbose=0)
    state.restore_best(model)
    save_weights(model, fileio.join(state.directory, BEST_WEIGHTS))
    return model


def seeded_start(data_dir: str, model_name: str, model_config: dict, train_config: dict,
                 seed: int, schema=None, strategy=None):
    """The built, compiled model and the train and validation datasets of a run.

    The seed alone sets the initial weights and the order of the training data,
    whatever the loss: a BCE and a PWiseR run of one seed (or two variants that
    add no variables before the shared ones) start from the same weights and see
    the same batches, so their results form a pair.

    The model is built in `strategy`'s scope (default: the active one), under the
    `train_config["mixed_precision"]` policy, and the datasets are distributed
    over its replicas (see `Inputs`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    scope = _strategy_scope(strategy)
    tf.keras.utils.set_random_seed(seed)
    metadata = Metadata.load(data_dir)
    schema = schema if schema is not None else metadata.schema
    inputs = Inputs(data_dir, metadata, train_config, strategy)
    jit_compile = train_config.get("jit_compile")
    jit_compile = distribute.is_tpu(strategy) if jit_compile is None else bool(jit_compile)
    with scope, distribute.precision_policy(train_config.get("mixed_precision") or "off"):
        model = build_compiled(model_name, schema, model_config, train_config,
                               jit_compile=jit_compile)
        # Build the variables (in the scope), so that a checkpoint can be restored.
        model(next(iter(inputs.dataset("validation")))[0])
    return (model, inputs.distributed("train", seed=seed),
            inputs.distributed("validation"))


def _strategy_scope(strategy, check_only: bool = False):
    """The scope to build a model in. A scope the caller entered stays as it is
    (clearing the Keras session inside it would drop the strategy); otherwise
    the session is cleared and `strategy`'s scope entered."""
    if tf.distribute.has_strategy():
        if tf.distribute.get_strategy() is not strategy:
            raise InputError("strategy= differs from the strategy whose scope is active; "
                             "pass that strategy, or None")
        return contextlib.nullcontext()
    if check_only:
        return None
    tf.keras.backend.clear_session()
    return strategy.scope()


class Inputs:
    """A run's training and validation data, per input pipeline of its strategy.

    Without distribution each split is read once per epoch, as converted. Under a
    strategy or XLA (`train.jit_compile`) shapes are static: whole batches, and
    multi-valued fields padded or cut to `train.multi_valued_length`. Under a
    strategy the data goes through `distribute_datasets_from_function` (each
    input pipeline reads its own part, in batches of global // replicas), and
    every split is repeated and cut to `rows // batch_size` global steps, so every
    worker and replica runs the same steps (the workers' shards differ in size).
    """

    def __init__(self, data_dir: str, metadata: Metadata, train_config: dict, strategy):
        self.data_dir, self.metadata, self.strategy = data_dir, metadata, strategy
        self.batch_size = int(train_config.get("batch_size", 2048))
        self.distributed_mode = distribute.is_distributed(strategy)
        static = self.distributed_mode or bool(train_config.get("jit_compile")) \
            or distribute.is_tpu(strategy)
        length = int(train_config.get("multi_valued_length") or 64)
        self.shapes = ({"drop_remainder": True, "multi_valued_length": length}
                       if static else {})

    def steps(self, split: str) -> Optional[int]:
        """Global steps in one pass over `split`."""
        rows = _rows(self.metadata, split)
        if rows is None:
            return None
        if self.shapes:
            return max(1, rows // self.batch_size)
        return -(-rows // self.batch_size)

    def fit_steps(self, split: str) -> Optional[int]:
        """`steps_per_epoch` / `validation_steps` for `fit`: set under a strategy."""
        return self.steps(split) if self.distributed_mode else None

    def dataset(self, split: str, input_context=None, seed: Optional[int] = None):
        """One input pipeline's batches of `split` (training: shuffled with `seed`)."""
        from pwiser_tf.pipelines import make_dataset

        training = split == "train"
        steps = self.fit_steps(split)
        ds = make_dataset(self.data_dir, self.batch_size, split=split, shuffle=training,
                          seed=seed if training else None, input_context=input_context,
                          repeat=steps is not None, **self.shapes)
        if steps is not None and not training:  # the same batches at every validation
            per_step = (input_context.num_replicas_in_sync // input_context.num_input_pipelines
                        if input_context else 1)
            ds = ds.take(steps * per_step)
        return ds

    def distributed(self, split: str, seed: Optional[int] = None):
        """`split` for `fit`: through `distribute_datasets_from_function` under a strategy."""
        return distribute.distribute_datasets(
            self.strategy, lambda context: self.dataset(split, context, seed))


def save_weights(model, path: str) -> None:
    """`model.save_weights` to any filesystem, atomically (HDF5 needs a local file)."""
    gfile.makedirs(os.path.dirname(path))
    with tempfile.TemporaryDirectory() as local:
        tmp = os.path.join(local, os.path.basename(path))
        model.save_weights(tmp)
        with open(tmp, "rb") as f:
            fileio.atomic_write(path, f.read())


def id_maps(data_dir: str, metadata: Metadata):
    """The `--remap-ids` tables of a converted directory (`{field: raw ids}`), or None:
    the export then serves raw ids."""
    from pwiser_tf.pipelines.readers.idmap import IdMap

    if not metadata.extra.get("id_maps"):
        return None
    return IdMap.load(data_dir).tables


def temperature_histogram(model, dataset, bins: int = 10) -> dict:
    """Histogram of AdaFTR's temperatures over a dataset, on its [tau_min, tau_max] range.

    A temperature trained only through the contrastive term tends to drift to one
    edge of its range; this shows whether it did.
    """
    import numpy as np

    values = np.concatenate([np.reshape(model.temperatures(features).numpy(), [-1])
                             for features, _ in dataset])
    low, high = float(model.tau_min), float(model.tau_max)
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(),
            "mean": float(values.mean())}


def read_metrics(output_dir: str) -> Optional[dict]:
    """The metrics of a finished run, or None when it has not finished."""
    path = fileio.join(output_dir, METRICS_FILE)
    if not gfile.exists(path):
        return None
    return fileio.read_json(path)
