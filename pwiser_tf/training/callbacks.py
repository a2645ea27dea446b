"""The callbacks of a run's `fit`: progress (bars on a terminal, a line per epoch in a
log) and early stopping that survives a kill."""
import math
import os
import sys
import time
from typing import Optional

import tensorflow as tf

from pwiser_tf import fileio
from pwiser_tf.errors import InputError
from pwiser_tf.training.rundir import STATE_FILE

gfile = tf.io.gfile

MONITOR = "val_ctcvr_auc"
# The validation AUCs of an epoch's line, those that the run computes.
EPOCH_AUCS = ("val_ctr_auc", "val_cvr_auc", "val_ctcvr_auc")


def stderr_is_terminal() -> bool:
    """Whether progress may draw bars: stderr is a terminal, not a batch job's log."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class EpochProgress(tf.keras.callbacks.Callback):
    """A run's progress on stderr, and its training throughput (examples/s,
    validation excluded).

    On a terminal: tqdm bars over the epochs, with the monitored validation metric,
    and over the training steps of each epoch (`steps` per epoch, when known).
    Otherwise (a batch job's log): one plain line per epoch, from `on_epoch_end`,
    with the epoch, the training loss, the validation AUCs and the examples/s:

        mmoe/pwiser/seed0 epoch 2/5: loss=0.4123 val_ctr_auc=0.6012 \
            val_cvr_auc=0.5523 val_ctcvr_auc=0.6234 examples/s=48213 (12.3 s)

    `enabled=False` shows nothing and still measures. `lines` forces the lines
    (True) or the bars (False); by default, lines when stderr is not a terminal.
    """

    def __init__(self, total_epochs: int, batch_size: int, description: str = "",
                 enabled: bool = True, steps: Optional[int] = None,
                 lines: Optional[bool] = None):
        super().__init__()
        self.total_epochs, self.batch_size = total_epochs, batch_size
        self.description, self.enabled, self.steps = description, enabled, steps
        self.lines = lines
        self.examples, self.seconds, self._bar, self._steps_bar = 0, 0.0, None, None
        self._epoch_examples, self._epoch_seconds = 0, 0.0

    def on_train_begin(self, logs=None):
        from tqdm.auto import tqdm

        if self.lines is None:
            self.lines = not stderr_is_terminal()
        bars = self.enabled and not self.lines
        self._bar = tqdm(total=self.total_epochs, desc=self.description or "epochs",
                         unit="epoch", disable=not bars, leave=False)
        self._steps_bar = tqdm(total=self.steps, desc="steps", unit="step", position=1,
                               disable=not bars, leave=False)

    def on_epoch_begin(self, epoch, logs=None):
        self._steps, self._start = 0, time.perf_counter()
        self._epoch_examples, self._epoch_seconds = 0, 0.0
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
            self._epoch_seconds = time.perf_counter() - self._start
            self._epoch_examples = self._steps * self.batch_size
            self.seconds += self._epoch_seconds
            self.examples += self._epoch_examples
            self._start = None

    def on_epoch_end(self, epoch, logs=None):
        if self._start is not None:  # no validation this epoch
            self.on_test_begin()
        logs = logs or {}
        self._bar.set_postfix({MONITOR: f"{logs.get(MONITOR, float('nan')):.4f}"})
        self._bar.update(1)
        if self.enabled and self.lines:
            print(self.epoch_line(epoch, logs), file=sys.stderr, flush=True)

    def epoch_line(self, epoch: int, logs: dict) -> str:
        """The plain line of an epoch (0-based `epoch`, `fit`'s `logs`)."""
        fields = [f"loss={logs['loss']:.4f}"] if "loss" in logs else []
        fields += [f"{key}={logs[key]:.4f}" for key in EPOCH_AUCS if key in logs]
        rate = (self._epoch_examples / self._epoch_seconds if self._epoch_seconds
                else float("nan"))
        fields.append(f"examples/s={rate:.0f}")
        name = f"{self.description} " if self.description else ""
        return (f"{name}epoch {epoch + 1}/{self.total_epochs}: {' '.join(fields)} "
                f"({self._epoch_seconds:.1f} s)")

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
            # The optimizer's slots are created in the model's strategy scope, as `fit`
            # creates them: slots created outside it would be updated once per replica.
            with model.distribute_strategy.scope():
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

    def summary(self) -> dict:
        """The training in a run's metrics: its throughput, the epochs trained, the
        best epoch and its value of the monitored metric (`best_val_ctcvr_auc`)."""
        best = self.state["best"]
        return {"train_examples_per_sec": self.examples_per_sec,
                "epochs_trained": len(self.state["history"].get(self.monitor, [])),
                "best_epoch": int(self.state["best_epoch"]),
                f"best_{self.monitor}": float(best) if best is not None else float("nan")}


class ReplicaStatistics(tf.keras.callbacks.Callback):
    """Under a strategy, sets every replica's copy of the model's per-replica
    statistics (batch norm's moving mean and variance) to their mean at the start of
    each epoch.

    Each replica updates its own copy from its own batches, and a checkpoint holds
    only their mean, which a resumed run restores into every replica. Starting each
    epoch from that mean, the uninterrupted run validates on the statistics that
    the resumed one has. The exported model reads the mean as before.
    """

    def on_epoch_begin(self, epoch, logs=None):
        for variable in self.model.non_trainable_weights:
            if variable.synchronization == tf.VariableSynchronization.ON_READ \
                    and variable.aggregation == tf.VariableAggregation.MEAN:
                variable.assign(variable.read_value())
