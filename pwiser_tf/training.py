"""One training run: a model, a loss and a seed on a converted dataset.

`train_run` trains with early stopping on the validation split, exports the
SavedModel, scores the evaluation split through its serving signature and
writes `metrics.json`. The run directory holds:

    config.yaml        the resolved configuration of the run
    backup/            Keras BackupAndRestore state: an interrupted run resumes here
    checkpoints/       the best weights so far (by validation CTCVR AUC)
    saved_model/       the exported model (written under a temporary name, then renamed)
    history.json       per-epoch training and validation metrics
    metrics.json       written last: its presence marks a finished run
"""
import json
import os
import shutil
import time
from typing import Dict, Optional

import tensorflow as tf

from pwiser_tf import config as config_lib
from pwiser_tf import evaluation, metrics
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata

METRICS_FILE = "metrics.json"
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
            self._bar.update(epoch - self._bar.n)  # resumed from a backup

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


def train_run(data_dir: str, output_dir: str, model_name: str, loss: str, seed: int,
              config: dict, eval_data_dir: Optional[str] = None,
              eval_split: Optional[str] = None, progress: bool = True) -> Dict[str, float]:
    """Trains, exports and evaluates one run; returns (and writes) its metrics."""
    from pwiser_tf import models  # the networks need tf-keras; load them only to train

    check_choice("model", model_name, sorted(models.MODELS))
    check_choice("loss", loss, LOSSES)
    metadata = Metadata.load(data_dir)
    for split in ("train", "validation"):
        if split not in metadata.splits:
            raise InputError(
                f"{data_dir}: no {split!r} split; convert with --validation-fraction "
                f"to carve a validation split for early stopping")
    eval_dir, eval_split = _eval_source(data_dir, eval_data_dir, eval_split)
    evaluation.check_compatible(metadata.schema, Metadata.load(eval_dir).schema, eval_dir)

    os.makedirs(output_dir, exist_ok=True)
    metrics_path = os.path.join(output_dir, METRICS_FILE)
    if os.path.exists(metrics_path):
        os.remove(metrics_path)  # a rerun replaces the result; never leave a stale one
    train_cfg = dict(config.get("train") or {})
    run_config = {"data": os.path.abspath(data_dir), "eval_data": os.path.abspath(eval_dir),
                  "eval_split": eval_split, "model": model_name, "loss": loss, "seed": seed,
                  "train": train_cfg, "model_config": _model_kwargs(config, model_name, loss)}
    config_lib.save(run_config, os.path.join(output_dir, "config.yaml"))

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(seed)
    batch_size = int(train_cfg.get("batch_size", 2048))
    epochs = int(train_cfg.get("epochs", 50))
    from pwiser_tf.pipelines import make_dataset
    train_ds = make_dataset(data_dir, batch_size, split="train", shuffle=True, seed=seed)
    val_ds = make_dataset(data_dir, batch_size, split="validation", shuffle=False)

    model = build_compiled(model_name, metadata.schema, run_config["model_config"], train_cfg)
    model(next(iter(val_ds))[0])  # build the variables, so a backup can be restored
    progress_cb = EpochProgress(epochs, batch_size, f"{model_name}/{loss}/seed{seed}",
                                enabled=progress)
    callbacks = [
        tf.keras.callbacks.BackupAndRestore(os.path.join(output_dir, "backup")),
        tf.keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max",
                                         patience=int(train_cfg.get("patience", 2)),
                                         restore_best_weights=True),
        tf.keras.callbacks.ModelCheckpoint(
            os.path.join(output_dir, "checkpoints", "best.weights.h5"), monitor=MONITOR,
            mode="max", save_best_only=True, save_weights_only=True),
        progress_cb,
    ]
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                        callbacks=callbacks, verbose=0)
    _write_json({k: [float(x) for x in v] for k, v in history.history.items()},
                os.path.join(output_dir, "history.json"))

    saved = os.path.join(output_dir, evaluation.SAVED_MODEL_DIR)
    staging = saved + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    models.export_saved_model(model, staging, metadata.schema)
    extra = os.path.join(staging, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    shutil.copy(os.path.join(data_dir, METADATA_FILE), extra)  # the schema it was trained on
    shutil.rmtree(saved, ignore_errors=True)
    os.replace(staging, saved)

    labels, predictions = evaluation.predict_split(output_dir, eval_dir, eval_split)
    result = metrics.ctr_cvr_metrics(labels, predictions)
    monitored = history.history.get(MONITOR, [])
    result.update({
        "train_examples_per_sec": progress_cb.examples_per_sec,
        "epochs_trained": len(monitored),
        "best_epoch": int(max(range(len(monitored)), key=monitored.__getitem__)) + 1
        if monitored else 0,
        "best_val_ctcvr_auc": float(max(monitored)) if monitored else float("nan"),
        "eval_split": eval_split,
    })
    if hasattr(model, "temperatures"):  # AdaFTR: where its per-instance temperatures sit
        result["temperature_histogram"] = temperature_histogram(model, val_ds)
    _write_json(result, metrics_path)  # last: marks the run finished
    return result


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


def _write_json(data, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_metrics(output_dir: str) -> Optional[dict]:
    """The metrics of a finished run, or None when it has not finished."""
    path = os.path.join(output_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
