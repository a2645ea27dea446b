"""A run's directory: its lock, its finished result and its staging area.

A run is built in `staging/` and moved into place by `RunDirectory.publish`
when it has finished, `metrics.json` last, so that a directory with
`metrics.json` always holds a whole, finished run.
"""
import os
from typing import Optional

import tensorflow as tf

from pwiser_tf import config as config_lib
from pwiser_tf import evaluation, fileio
from pwiser_tf.errors import InputError
from pwiser_tf.training.spec import RunSpec, differences, fingerprint

gfile = tf.io.gfile

METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
STATE_FILE = "state.json"
HISTORY_FILE = "history.json"
CONFIG_FILE = "config.yaml"
STAGING_DIR = "staging"
LOGS_DIR = "logs"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
# Moved from staging/ into the run directory when a run finishes; metrics.json last.
PUBLISHED = (CONFIG_FILE, HISTORY_FILE, "checkpoints", evaluation.SAVED_MODEL_DIR, LOGS_DIR)


def read_metrics(output_dir: str) -> Optional[dict]:
    """The metrics of a finished run, or None when it has not finished."""
    path = fileio.join(output_dir, METRICS_FILE)
    if not gfile.exists(path):
        return None
    return fileio.read_json(path)


def published(output_dir: str, key: str) -> Optional[dict]:
    """The metrics of the finished run in `output_dir` if its fingerprint is `key`."""
    recorded = fileio.join(output_dir, RUN_FILE)
    metrics_path = fileio.join(output_dir, METRICS_FILE)
    if gfile.exists(metrics_path) and gfile.exists(recorded) \
            and fileio.read_json(recorded)["fingerprint"] == key:
        return fileio.read_json(metrics_path)
    return None


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
            fileio.write_json(fileio.join(self.staging, RUN_FILE), spec.record)
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
