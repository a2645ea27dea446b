"""Run configuration: the defaults, a YAML/JSON file, then command-line overrides.

A configuration is a nested dict. `resolve(base, path, overrides)` merges a file
over the packaged defaults and applies `key.sub=value` overrides (values parsed
as YAML, so `train.epochs=3` gives an int and `models=[mmoe,ple]` a list). Every
run writes the resolved configuration beside its results.

`validate(config)` checks a configuration against its schema (`Config`, pydantic
models): an unknown key is refused with the nearest valid key suggested, and a
value of the wrong type or range is refused with the key that holds it.

Example:

>>> cfg = resolve({"train": {"epochs": 10}}, overrides=["train.epochs=2"])
>>> cfg["train"]["epochs"]
2
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
from typing import Any, Dict, Iterable, List, Literal, Optional

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from pwiser_tf.errors import InputError


class _Section(BaseModel):
    """A configuration section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class TrainSettings(_Section):
    """`train:`, the optimization of every run (defaults: the reference settings)."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(2048, ge=1)
    patience: int = Field(2, ge=0, description="epochs without a validation gain")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    mixed_precision: Literal["off", "bf16", "fp16"] = Field(
        "off", description="float32, or the mixed_bfloat16 / mixed_float16 Keras policy")
    jit_compile: Optional[bool] = Field(None, description="XLA; default: on a TPU only")
    multi_valued_length: int = Field(
        64, ge=1, description="multi-valued fields are padded or cut to this length when "
                              "shapes are static (under a strategy or XLA)")


class PwiserSettings(_Section):
    """`pwiser:`, the PWiseR term's constructor arguments (unset: the models' defaults)."""

    pwiser_weight: Optional[float] = Field(None, ge=0)
    margin_click: Optional[float] = Field(None, ge=0)
    margin_nonclick: Optional[float] = Field(None, ge=0)
    pwiser_head: Optional[str] = None
    pwiser_scores: Optional[str] = None
    squared: Optional[bool] = None
    normalization: Optional[str] = None
    pairs: Optional[Literal["global", "replica"]] = Field(
        None, description="under a strategy: pairs over all replicas or per replica")


class SynthSettings(_Section):
    """`synth:` of a dataset: arguments of `pwiser_tf.pipelines.synthesize`."""

    dataset: Literal["aliexpress", "ali-ccp"] = "aliexpress"
    rows: int = Field(200_000, ge=2)
    seed: int = 0
    test_fraction: Optional[float] = Field(None, gt=0, lt=1)
    country: str = "nl"


class DatasetSettings(_Section):
    """One entry of `datasets:`: a converted directory, or synthetic data."""

    data: Optional[str] = None
    eval_data: Optional[str] = None
    synth: Optional[SynthSettings] = None
    validation_fraction: float = Field(0.1, ge=0, lt=1)

    @pydantic.model_validator(mode="after")
    def _one_source(self):
        if (self.data is None) == (self.synth is None):
            raise ValueError("needs 'data: DIR' or 'synth: {...}' (one of them)")
        return self


class SweepCentre(_Section):
    """`sweep.centre:`, where the axis-by-axis sweep starts."""

    pwiser_weight: float = Field(1.0, ge=0)
    margin: float = Field(0.1, ge=0)
    pwiser_head: Literal["ctr", "ctcvr", "cvr"] = "ctr"
    pwiser_scores: Literal["probability", "logit"] = "probability"
    normalization: Literal["anchor", "pair"] = "anchor"


class SweepAxes(_Section):
    """`sweep.axes:`, the values of each axis, swept in the order given."""

    margin: Optional[List[float]] = None
    pwiser_head: Optional[List[Literal["ctr", "ctcvr", "cvr"]]] = None
    pwiser_scores: Optional[List[Literal["probability", "logit"]]] = None
    normalization: Optional[List[Literal["anchor", "pair"]]] = None
    pwiser_weight: Optional[List[float]] = None


class SweepSettings(_Section):
    """`sweep:`, the design of `pwiser-tf sweep` (`pwiser_tf.sweep`)."""

    model: str = "mmoe"
    select: str = "ctcvr_auc"
    centre: SweepCentre = SweepCentre()
    axes: SweepAxes = SweepAxes()


class Config(_Section):
    """A whole configuration (`pwiser_tf/configs/*.yaml`)."""

    title: str = "BCE vs PWiseR"
    datasets: Dict[str, DatasetSettings] = {}
    models: List[str] = []
    losses: List[Literal["bce", "pwiser"]] = []
    seeds: List[int] = []
    train: TrainSettings = TrainSettings()
    model: Dict[str, Any] = Field({}, description="every model's constructor arguments")
    model_options: Dict[str, Dict[str, Any]] = {}
    pwiser: PwiserSettings = PwiserSettings()
    sweep: Optional[SweepSettings] = None
    variants: Optional[Dict[str, Optional[Dict[str, Any]]]] = Field(
        None, description="name -> a partial configuration: one arm per (loss, variant)")
    baseline: Optional[str] = Field(None, description="the arm the others are compared "
                                                      "with (default bce)")

    @pydantic.field_validator("models", "losses", "seeds")
    @classmethod
    def _each_once(cls, values):
        # A repeated entry would train and report the same runs twice.
        for i, value in enumerate(values):
            if value in values[:i]:
                raise ValueError(f"{value!r} appears twice; list each once")
        return values


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


def validate(config: dict) -> dict:
    """Checks `config` against `Config`; returns it with its values coerced to their
    types (`"1e-3"` to a float). Raises one `InputError` naming the first bad key;
    a NaN or infinite number is refused wherever it is."""
    found = _non_finite(config)
    if found:
        raise InputError(f"configuration key '{found[0]}': must be a finite number "
                         f"(got {found[1]!r})")
    try:
        checked = Config.model_validate(config)
    except pydantic.ValidationError as err:
        errors = err.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise InputError(_message(errors[0]) + more) from None
    coerced = checked.model_dump(exclude_unset=True)
    result = copy.deepcopy(config)
    for section in ("train", "pwiser", "seeds", "sweep"):
        if section in coerced and section in result:
            result[section] = merge(result[section], coerced[section]) \
                if isinstance(result[section], dict) else coerced[section]
    return result


def train_settings(config: dict) -> dict:
    """The `train:` section with every setting, defaults filled in."""
    return TrainSettings.model_validate(config.get("train") or {}).model_dump()


def save(config: dict, path: str) -> None:
    """Writes a configuration as YAML, atomically (any `tf.io.gfile` filesystem)."""
    from pwiser_tf import fileio

    fileio.atomic_write(path, yaml.safe_dump(config, sort_keys=False))
