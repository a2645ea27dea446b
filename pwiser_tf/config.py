"""Run configuration: the defaults, a YAML/JSON file, then command-line overrides.

A configuration is a nested dict. `resolve(base, path, overrides)` merges a file
over the packaged defaults and applies `key.sub=value` overrides (values parsed
as YAML, so `train.epochs=3` gives an int and `models=[mmoe,ple]` a list). Every
run writes the resolved configuration beside its results.

Example:

>>> cfg = resolve({"train": {"epochs": 10}}, overrides=["train.epochs=2"])
>>> cfg["train"]["epochs"]
2
"""
import copy
import json
import os
from importlib import resources
from typing import Iterable, Optional

import yaml

from pwiser_tf.errors import InputError


def packaged(name: str) -> dict:
    """A configuration shipped in `pwiser_tf/configs/` (`default`, `paper`, ...)."""
    path = resources.files("pwiser_tf").joinpath("configs", f"{name}.yaml")
    if not path.is_file():
        raise InputError(f"no packaged configuration {name!r}")
    text = path.read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load(path: str) -> dict:
    """Reads a YAML or JSON configuration file, with one clear error on failure."""
    if not os.path.isfile(path):
        raise InputError(f"config file {path!r} not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    except (ValueError, yaml.YAMLError) as err:
        raise InputError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                         f"{str(err).splitlines()[0]}") from None
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


def save(config: dict, path: str) -> None:
    """Writes a configuration as YAML, atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    os.replace(tmp, path)
