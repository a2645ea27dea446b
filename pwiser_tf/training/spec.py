"""What a run was asked: its resolved, checked settings and their fingerprint.

`resolve_run` checks the arguments, the configuration (`pwiser_tf.config.validate`:
a bad choice such as `pwiser.pwiser_head=bogus` is refused here) and the data, and
writes nothing; the `RunSpec` it returns holds everything that changes the result
(`settings`, whose `fingerprint` keys the run directory) and the configuration
written as `config.yaml`.

The settings are resolved: the `train:` settings and, for a `pwiser` run, every
PWiseR setting (lambda, the margins, the head, the scores, the normalization,
the hinge, the pairs) spelled out at its value, defaults included. So a run
that spells the defaults out (`--set pwiser.pwiser_weight=0.03`) has the same
fingerprint and is reused, and a release that changes a default (lambda went
from 1 to 0.03) changes the fingerprint of the runs it affects. A `bce` run
has no PWiseR term, so PWiseR's settings are not among its settings.

The package version is recorded beside the settings (`run.json`, `config.yaml`,
`metrics.json`) but is not fingerprinted: a new version whose resolved settings
are the same reuses a finished run and resumes a staged one, instead of
refusing (or, with `--overwrite`, retraining) every run of an experiment at
each release. What a release changes in the settings, the settings show; the
recorded version tells which code trained the run.
"""
import dataclasses
import hashlib
import json
from typing import Optional, Union

import tensorflow as tf

from pwiser_tf import __version__
from pwiser_tf import config as config_lib
from pwiser_tf import evaluation, fileio
from pwiser_tf.errors import InputError
from pwiser_tf.options import LOSSES
from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata
from pwiser_tf.training.build import model_kwargs
from pwiser_tf.training.inputs import split_rows


def model_names():
    from pwiser_tf import models
    return sorted(models.MODELS)


def check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise InputError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


def check_model_arguments(model_name: str, arguments) -> None:
    """Raises `InputError` if model `model_name` takes not every one of `arguments`."""
    from pwiser_tf import models

    accepted = models.model_arguments(models.MODELS[model_name])
    unknown = sorted(set(arguments) - accepted)
    if unknown:
        raise InputError(f"model {model_name!r} has no argument(s) {', '.join(unknown)}; it "
                         f"accepts: {', '.join(sorted(accepted))}")


def _metadata_hash(data_dir: str) -> str:
    with tf.io.gfile.GFile(fileio.join(data_dir, METADATA_FILE), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


@dataclasses.dataclass
class RunSpec:
    """What a run was asked: resolved and checked before anything is written."""

    data_dir: str
    eval_dir: str
    eval_split: str
    model: str
    loss: str
    seed: int
    train: config_lib.TrainSettings
    model_config: dict
    metadata: Metadata

    @property
    def settings(self) -> dict:
        """The fingerprinted settings: everything that changes the result, resolved."""
        return {"model": self.model, "loss": self.loss, "seed": self.seed,
                "train": self.train.model_dump(mode="json"),
                "model_config": self.model_config, "eval_split": self.eval_split,
                "data": _metadata_hash(self.data_dir),
                "eval_data": _metadata_hash(self.eval_dir)}

    @property
    def record(self) -> dict:
        """What run.json holds: the fingerprint, the settings and the version."""
        settings = self.settings
        return {"fingerprint": fingerprint(settings), "settings": settings,
                "version": __version__}

    @property
    def config(self) -> dict:
        """The resolved configuration written as config.yaml, with the version."""
        return {"data": fileio.absolute(self.data_dir),
                "eval_data": fileio.absolute(self.eval_dir),
                "eval_split": self.eval_split, "model": self.model, "loss": self.loss,
                "seed": self.seed, "train": self.train.model_dump(mode="json"),
                "model_config": self.model_config, "version": __version__}


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


def _eval_source(data_dir: str, eval_data_dir: Optional[str], split: Optional[str]):
    if eval_data_dir:
        meta = Metadata.load(eval_data_dir)
        return eval_data_dir, split or ("test" if "test" in meta.splits else "train")
    meta = Metadata.load(data_dir)
    if split:
        return data_dir, split
    return data_dir, "test" if "test" in meta.splits else "validation"


def _check_split_rows(data_dir: str, metadata: Metadata, split: str, hint: str = "") -> None:
    """A split to train or evaluate on must list its rows (the steps of an epoch are
    fixed by them) and hold at least one."""
    rows = split_rows(metadata, split)
    if rows is None:
        raise InputError(f"{data_dir}: its {METADATA_FILE} gives no row count for the "
                         f"{split!r} split; convert the data again")
    if rows == 0:
        raise InputError(f"{data_dir}: the {split!r} split has 0 rows; {hint}")


def resolve_run(data_dir: str, model_name: str, loss: str, seed: int,
                config: Union[config_lib.Config, dict], eval_data_dir: Optional[str] = None,
                eval_split: Optional[str] = None) -> RunSpec:
    """Checks the arguments, the configuration (typed `Config`, or a dict to
    validate) and the data; writes nothing."""
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
        _check_split_rows(data_dir, metadata, split, "convert with more data" + (
            " or a larger --validation-fraction" if split == "validation" else ""))
    eval_dir, eval_split = _eval_source(data_dir, eval_data_dir, eval_split)
    eval_meta = Metadata.load(eval_dir)
    if eval_split not in eval_meta.splits:
        raise InputError(f"{eval_dir}: no {eval_split!r} split to evaluate on "
                         f"(has {', '.join(sorted(eval_meta.splits))})")
    if split_rows(eval_meta, eval_split) == 0:
        raise InputError(f"{eval_dir}: the {eval_split!r} split has 0 rows; nothing to "
                         f"evaluate on")
    evaluation.check_compatible(metadata.schema, eval_meta.schema, eval_dir)
    model_config = model_kwargs(config, model_name, loss)
    check_model_arguments(model_name, model_config)
    return RunSpec(data_dir=data_dir, eval_dir=eval_dir, eval_split=eval_split,
                   model=model_name, loss=loss, seed=int(seed), train=config.train,
                   model_config=model_config, metadata=metadata)
