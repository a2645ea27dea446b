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
"""
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from typing import Dict, Optional

import tensorflow as tf

from pwiser_tf import config as config_lib
from pwiser_tf import evaluation, fileio, metrics
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata

gfile = tf.io.gfile

METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
STATE_FILE = "state.json"
HISTORY_FILE = "history.json"
CONFIG_FILE = "config.yaml"
STAGING_DIR = "staging"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
# Moved from staging/ into the run directory when a run finishes; metrics.json last.
PUBLISHED = (CONFIG_FILE, HISTORY_FILE, "checkpoints", evaluation.SAVED_MODEL_DIR)
LOSSES = ("bce", "pwiser")
MONITOR = "val_ctcvr_auc"


def model_names():
    from pwiser_tf import models
    return sorted(models.MODELS)


def check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise InputError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


class EpochProgress(tf.keras.callbacks.Callback):
    """A tqdm bar over epochs, with the monitored validation metric, and the
    training throughput (examples/s, validation excluded)."""

    def __init__(self, total_epochs: int, batch_size: int, description: str = "",
                 enabled: bool = True):
        super().__init__()
        self.total_epochs, self.batch_size = total_epochs, batch_size
        self.description, self.enabled = description, enabled
        self.examples, self.seconds, self._bar = 0, 0.0, None

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm
        self._bar = tqdm(total=self.total_epochs, desc=self.description or "epochs",
                         unit="epoch", disable=not self.enabled, leave=False)

    def on_epoch_begin(self, epoch, logs=None):
        self._steps, self._start = 0, time.perf_counter()
        if self._bar is not None and self._bar.n < epoch:
            self._bar.update(epoch - self._bar.n)  # resumed

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

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
        self._bar.close()

    @property
    def examples_per_sec(self) -> float:
        return self.examples / self.seconds if self.seconds else float("nan")


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
    """

    def __init__(self, directory: str, patience: int, monitor: str = MONITOR,
                 progress: Optional[EpochProgress] = None):
        super().__init__()
        self.directory, self.patience, self.monitor = directory, patience, monitor
        self.progress = progress
        path = fileio.join(directory, STATE_FILE)
        self.state = fileio.read_json(path) if gfile.exists(path) else {
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

    def restore(self, model) -> None:
        if self.state["checkpoint"]:
            model.optimizer.build(model.trainable_variables)
            self._checkpoint(model).read(
                fileio.join(self.directory, self.state["checkpoint"])).expect_partial()

    def restore_best(self, model) -> None:
        best = self.state.get("best_checkpoint")
        if best:
            tf.train.Checkpoint(model=model).read(
                fileio.join(self.directory, best)).expect_partial()

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


def build_compiled(model_name: str, schema, model_config: dict, train_config: dict):
    """The registry's model, compiled with the reference optimizer."""
    from pwiser_tf import models

    model = models.build_model(model_name, schema, **model_config)
    model.compile(optimizer=models.reference_optimizer(
        learning_rate=float(train_config.get("learning_rate", 1e-3)),
        weight_decay=float(train_config.get("weight_decay", 1e-6))))
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
              overwrite: bool = False) -> Dict[str, float]:
    """Trains, exports and evaluates one run; returns (and writes) its metrics.

    A finished run with the same settings is returned as is; an unfinished one
    resumes; a run with other settings in `output_dir` raises `InputError`
    unless `overwrite` (then the new run replaces it once it has finished).
    """
    spec = resolve_run(data_dir, model_name, loss, seed, config, eval_data_dir, eval_split)
    run = RunDirectory(output_dir)
    with run.lock():
        finished = run.check(spec.settings, overwrite)
        if finished is not None:
            return finished
        staging = run.start(spec)
        result = _run_in(staging, spec, progress)
        run.publish()
    return result


def _run_in(staging: str, spec: RunSpec, progress: bool) -> Dict[str, float]:
    """Trains (or resumes), exports and scores in `staging`; writes its metrics.json."""
    from pwiser_tf import models  # the networks need tf-keras; load them only to train

    train_cfg = spec.train
    batch_size, epochs = int(train_cfg["batch_size"]), int(train_cfg["epochs"])
    progress_cb = EpochProgress(epochs, batch_size,
                                f"{spec.model}/{spec.loss}/seed{spec.seed}", enabled=progress)
    state = TrainingState(staging, int(train_cfg["patience"]), progress=progress_cb)
    saved = fileio.join(staging, evaluation.SAVED_MODEL_DIR)
    model = None
    if state.state["phase"] == "train":
        model = fit(spec, state, progress_cb)
        extra = {}
        if hasattr(model, "temperatures"):  # AdaFTR: where its temperatures sit
            from pwiser_tf.pipelines import make_dataset
            extra["temperature_histogram"] = temperature_histogram(
                model, make_dataset(spec.data_dir, batch_size, split="validation"))
        state.commit(phase="export", extra=extra)
    if state.state["phase"] == "export":
        if model is None:  # killed while exporting: the trained weights, no training
            model = build_model(spec)
            state.restore_best(model)
        with gfile.GFile(fileio.join(spec.data_dir, METADATA_FILE), "rb") as f:
            trained_on = f.read()
        models.export_saved_model(model, saved, spec.metadata.schema,
                                  assets_extra={METADATA_FILE: trained_on},
                                  id_maps=id_maps(spec.data_dir, spec.metadata))
        state.commit(phase="score")
    labels, predictions = evaluation.predict_split(staging, spec.eval_dir, spec.eval_split)
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
    })
    result.update(state.state.get("extra") or {})
    fileio.write_json(fileio.join(staging, HISTORY_FILE), history)
    fileio.write_json(fileio.join(staging, METRICS_FILE), result)
    return result


def build_model(spec: RunSpec):
    """The run's compiled model, its variables built, so a checkpoint can be restored."""
    model, _, _ = seeded_start(spec.data_dir, spec.model, spec.model_config, spec.train,
                               spec.seed, spec.metadata.schema)
    return model


def fit(spec: RunSpec, state: TrainingState, progress_cb: EpochProgress):
    """Builds the model, restores the last committed epoch, trains the remaining
    epochs with early stopping, and returns the model at its best epoch (also
    saved as checkpoints/best.weights.h5)."""
    train_cfg = spec.train
    epochs = int(train_cfg["epochs"])
    model, train_ds, val_ds = seeded_start(spec.data_dir, spec.model, spec.model_config,
                                           train_cfg, spec.seed + state.initial_epoch,
                                           spec.metadata.schema)
    state.restore(model)
    if not state.training_done(epochs):
        model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                  initial_epoch=state.initial_epoch, callbacks=[progress_cb, state],
                  verbose=0)
    state.restore_best(model)
    save_weights(model, fileio.join(state.directory, BEST_WEIGHTS))
    return model


def seeded_start(data_dir: str, model_name: str, model_config: dict, train_config: dict,
                 seed: int, schema=None):
    """The built, compiled model and the train and validation datasets of a run.

    The seed alone sets the initial weights and the order of the training data,
    whatever the loss: a BCE and a PWiseR run of one seed (or two variants that
    add no variables before the shared ones) start from the same weights and see
    the same batches, so their results form a pair.
    """
    from pwiser_tf.pipelines import make_dataset

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(seed)
    batch_size = int(train_config.get("batch_size", 2048))
    train_ds = make_dataset(data_dir, batch_size, split="train", shuffle=True, seed=seed)
    val_ds = make_dataset(data_dir, batch_size, split="validation", shuffle=False)
    schema = schema if schema is not None else Metadata.load(data_dir).schema
    model = build_compiled(model_name, schema, model_config, train_config)
    model(next(iter(val_ds))[0])  # build the variables, so a checkpoint can be restored
    return model, train_ds, val_ds


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
