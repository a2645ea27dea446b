"""Run configuration: the defaults, a YAML/JSON file, then command-line overrides.

A configuration is written as a nested dict. `resolve(base, path, overrides)`
merges a file over the packaged defaults and applies `key.sub=value` overrides
(values parsed as YAML, so `train.epochs=3` gives an int and `models=[mmoe,ple]`
a list).

`validate(config)` checks it against its schema (`pwiser_tf.settings`) and returns
the typed settings (`Config`), which every command passes on as they are. An
unknown key is refused with the nearest valid key suggested, and a value of the
wrong type, range or choice with the key that holds it, before anything is
written. Every run writes its settings resolved (every default spelled out)
beside its results, so a change of a default shows in its fingerprint.

This module loads no TensorFlow (`pwiser-tf synth` uses it without).

Example:

>>> cfg = resolve({"train": {"epochs": 10}}, overrides=["train.epochs=2"])
>>> validate(cfg).train.epochs
2
>>> validate({}).pwiser.pwiser_weight
0.03
>>> validate({"train": {"epoch": 3}})
Traceback (most recent call last):
...
pwiser_tf.errors.InputError: unknown configuration key 'train.epoch'; did you mean 'train.epochs'?
"""
import copy
import difflib
import json
import math
import typing
from importlib import resources
from typing import Any, Iterable, List, Optional, Tuple, Union

import pydantic
import yaml
from pydantic import BaseModel

from pwiser_tf.errors import InputError
# The schema (re-exported: `config.Config`, `config.TrainSettings`, ...).
from pwiser_tf.settings import (AXES, Config, DatasetSettings, PwiserSettings,  # noqa: F401
                                SweepCentre, SweepSettings, SynthSettings, TrainSettings)


def packaged(name: str) -> dict:
    """A configuration shipped in `pwiser_tf/configs/` (`default`, `paper`, ...)."""
    path = resources.files("pwiser_tf").joinpath("configs", f"{name}.yaml")
    if not path.is_file():
        raise InputError(f"no packaged configuration {name!r}")
    text = path.read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load(path: str) -> dict:
    """Reads a YAML or JSON configuration file, with one clear error on failure."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise InputError(f"config file {path!r} not found")
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            text = f.read()
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}, line {err.lineno}, column {err.colno}: not valid JSON: "
                         f"{err.msg}") from None
    except (ValueError, yaml.YAMLError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{path}{where}: not valid "
                         f"{'JSON' if path.endswith('.json') else 'YAML'}: {problem}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a configuration must be a mapping, got {type(data).__name__}")
    return data


def merge(base: dict, update: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else replaces."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def override(config: dict, assignment: str) -> dict:
    """Applies one `dotted.key=value` override (value parsed as YAML)."""
    if "=" not in assignment:
        raise InputError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.epochs=3")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise InputError(f"--set {assignment!r}: cannot parse the value {raw!r}") from None
    *parents, leaf = key.strip().split(".")
    node = config
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputError(f"--set {assignment!r}: {part!r} is not a section")
        node = child
    node[leaf] = value
    return config


def resolve(base: dict, path: Optional[str] = None,
            overrides: Iterable[str] = ()) -> dict:
    """`base`, then the file at `path`, then each override, in that order."""
    config = merge(base, load(path)) if path else copy.deepcopy(base)
    for assignment in overrides:
        override(config, assignment)
    return config


def _strip_optional(node):
    if typing.get_origin(node) is typing.Union:
        return next(a for a in typing.get_args(node) if a is not type(None))
    return node


def _section_at(loc) -> Optional[type]:
    """The settings class that holds the key at `loc` (a pydantic error location)."""
    node: Any = Config
    for part in loc:
        node = _strip_optional(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part not in node.model_fields:
                return None
            node = node.model_fields[part].annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return None
    node = _strip_optional(node)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _message(error: dict) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        section = _section_at(error["loc"][:-1])
        valid = list(section.model_fields) if section else []
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        prefix = ".".join(loc[:-1] + [""])
        hint = (f"did you mean '{prefix}{close[0]}'?" if close
                else f"valid keys{' of ' + prefix[:-1] if prefix else ''}: {', '.join(valid)}")
        return f"unknown configuration key '{key}'; {hint}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    text = f"configuration key '{key}': {message}"
    if error["type"] not in ("missing", "value_error") and "input" in error:
        text += f" (got {error['input']!r})"
    if error["type"] == "list_type":
        text += f"; write a list, e.g. {key}=[{error['input']}]"
    return text


# Sections whose numbers reach the models and the optimizer; a text such as "nan"
# there becomes a number, so it is refused as one.
NUMERIC_SECTIONS = ("train", "pwiser", "model", "model_options", "variants", "sweep")


def _non_finite(node, key: str = "", text: bool = False):
    """The first dotted key whose value is a NaN or infinite number, and that value;
    with `text`, strings that read as one ("nan", "inf") count too."""
    if isinstance(node, dict):
        for name, value in node.items():
            found = _non_finite(value, f"{key}{name}.", text or name in NUMERIC_SECTIONS
                                and not key)
            if found:
                return found
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found = _non_finite(value, f"{key[:-1]}[{i}].", text)
            if found:
                return found
    elif isinstance(node, float) or (text and isinstance(node, str)):
        try:
            if not math.isfinite(float(node)):
                return key[:-1], node
        except ValueError:
            pass
    return None


def validate(config: Union[dict, Config]) -> Config:
    """Checks `config` against `Config` and returns the typed settings, values coerced
    to their types (`"1e-3"` to a float) and defaults filled in; a `Config` is
    returned as it is. Raises one `InputError` naming the first bad key; a NaN or
    infinite number is refused wherever it is."""
    if isinstance(config, Config):
        return config
    found = _non_finite(config)
    if found:
        raise InputError(f"configuration key '{found[0]}': must be a finite number "
                         f"(got {found[1]!r})")
    try:
        return Config.model_validate(config)
    except pydantic.ValidationError as err:
        errors = err.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise InputError(_message(errors[0]) + more) from None


def train_settings(train: Union[TrainSettings, dict, None]) -> TrainSettings:
    """`train:` settings: a (partial) `train:` section is checked as `validate` checks
    it, defaults filled in; `TrainSettings` are returned as they are."""
    if isinstance(train, TrainSettings):
        return train
    return validate({"train": dict(train or {})}).train


def field(key: str) -> Tuple[Any, pydantic.fields.FieldInfo]:
    """The type and the field (its default, its description) of a dotted configuration
    key, e.g. `train.epochs`; an axis of `sweep.axes` holds a list of its centre's field.

    >>> field("pwiser.pwiser_head")[1].default
    'ctr'
    """
    *parents, leaf = key.split(".")
    node: Any = Config
    for part in parents:
        if node is SweepSettings and part == "axes":
            info = SweepCentre.model_fields[leaf]
            return List[info.annotation], info
        node = _strip_optional(node.model_fields[part].annotation)
    info = node.model_fields[leaf]
    return _strip_optional(info.annotation), info


def save(config: Union[dict, Config], path: str) -> None:
    """Writes a configuration as YAML, atomically (any `tf.io.gfile` filesystem); typed
    settings with every value resolved."""
    from pwiser_tf import fileio

    if isinstance(config, Config):
        config = config.to_dict()
    fileio.atomic_write(path, yaml.safe_dump(config, sort_keys=False))
