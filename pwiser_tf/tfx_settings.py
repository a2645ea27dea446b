"""What a TFX Trainer run was asked: `fn_args` turned into the core's typed settings.

`run_settings(fn_args)` reads `custom_config`, `hyperparameters` and the steps,
checks every value as `pwiser-tf train` checks its configuration
(`pwiser_tf.config`: the `train:` and `pwiser:` sections and the model's
arguments), and returns a `TfxRun`, before any file is read or written. A bad
value is one `InputError` naming its key, e.g. `custom_config['train']:
configuration key 'train.batch_size': ...`.

`custom_config` (every key optional but the schema's, see `pwiser_tf.tfx_schema`):

    model         a model of the registry (default mmoe)
    loss          bce or pwiser (default pwiser)
    strategy      a name of pwiser_tf.distribute.STRATEGIES (default auto)
    seed          the seed of the weights and of each epoch's data order (default 0)
    train         `train:` settings (pwiser_tf.settings.TrainSettings): epochs,
                  batch_size, patience, learning_rate, weight_decay,
                  mixed_precision, jit_compile, multi_valued_length
    model_config  the model's constructor arguments (a configuration's `model:`)
    pwiser        PWiseR's settings (`pwiser:`): pwiser_weight, the margins, ...
    metadata      a converted directory's metadata.json (packed records)
    dataset       the processed CSV format of CsvExampleGen's records

`fn_args.hyperparameters` (KerasTuner's `HyperParameters`, its config or a
plain dict of values) overrides them, each name where it belongs: `seed`, a
field of `train:`, a field of `pwiser:`, else a model argument.
"""
import dataclasses
import difflib
import json
from typing import Optional

from pwiser_tf import config as config_lib
from pwiser_tf.errors import InputError
from pwiser_tf.options import LOSSES
from pwiser_tf.settings import PwiserSettings, TrainSettings

CUSTOM_CONFIG = ("model", "loss", "strategy", "seed", "train", "model_config", "pwiser",
                 "metadata", "dataset")
# custom_config key -> the configuration section it holds
SECTIONS = {"train": "train", "model_config": "model", "pwiser": "pwiser"}


@dataclasses.dataclass
class TfxRun:
    """The typed settings of one `run_fn` call."""

    model: str
    loss: str
    seed: int
    strategy: str
    train: TrainSettings
    model_config: dict  # the model's arguments, the loss and PWiseR's, resolved
    train_steps: Optional[int] = None
    eval_steps: Optional[int] = None
    metadata: Optional[str] = None
    dataset: Optional[str] = None

    @property
    def epochs(self) -> int:
        """`train.epochs` passes with early stopping; one epoch of `train_steps` steps."""
        return self.train.epochs if self.train_steps is None else 1

    @property
    def settings(self) -> dict:
        """Everything that changes the result, resolved (written to `run.json`)."""
        return {"model": self.model, "loss": self.loss, "seed": self.seed,
                "train": self.train.model_dump(mode="json"),
                "model_config": self.model_config, "train_steps": self.train_steps,
                "eval_steps": self.eval_steps}


def run_settings(fn_args) -> TfxRun:
    """The checked, typed settings of `fn_args` (see the module docstring)."""
    from pwiser_tf import distribute, models

    custom = _mapping(getattr(fn_args, "custom_config", None), "fn_args.custom_config")
    for key in custom:
        if key not in CUSTOM_CONFIG:
            close = difflib.get_close_matches(key, CUSTOM_CONFIG, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else \
                f"valid keys: {', '.join(CUSTOM_CONFIG)}"
            raise InputError(f"custom_config: unknown key {key!r}; {hint}")
    model = _choice(custom, "model", "mmoe", sorted(models.MODELS))
    loss = _choice(custom, "loss", "pwiser", LOSSES)
    strategy = _choice(custom, "strategy", "auto", distribute.STRATEGIES)
    seed = _seed(custom.get("seed", 0), "custom_config['seed']")
    sections = {section: _section(custom.get(key), section, f"custom_config['{key}']")
                for key, section in SECTIONS.items()}
    _check_arguments(model, sections["model"], "custom_config['model_config']")
    tuned = hyperparameter_values(getattr(fn_args, "hyperparameters", None))
    if "seed" in tuned:
        seed = _seed(tuned.pop("seed"), "fn_args.hyperparameters['seed']")
    routed = {"train": {}, "pwiser": {}, "model": {}}
    for name, value in tuned.items():
        section = "train" if name in TrainSettings.model_fields else \
            "pwiser" if name in PwiserSettings.model_fields else "model"
        routed[section][name] = value
    for section, values in routed.items():
        _section(values, section, "fn_args.hyperparameters")
        sections[section].update(values)
    _check_arguments(model, routed["model"], "fn_args.hyperparameters")
    config = config_lib.validate(sections)  # each part was checked above

    from pwiser_tf.training import model_kwargs

    return TfxRun(model=model, loss=loss, seed=seed, strategy=strategy, train=config.train,
                  model_config=model_kwargs(config, model, loss),
                  train_steps=steps(getattr(fn_args, "train_steps", None), "train_steps"),
                  eval_steps=steps(getattr(fn_args, "eval_steps", None), "eval_steps"),
                  metadata=_optional_text(custom, "metadata"),
                  dataset=_optional_text(custom, "dataset"))


def hyperparameter_values(hyperparameters) -> dict:
    """`{name: value}` of KerasTuner's `HyperParameters`, its config (`{"space": ...,
    "values": {...}}`, as TFX passes it), its JSON, or a plain dict of values."""
    values = hyperparameters
    if values is None:
        return {}
    if isinstance(values, str):
        try:
            values = json.loads(values)
        except ValueError as err:
            raise InputError(f"fn_args.hyperparameters: not JSON ({err})") from None
    if not isinstance(values, dict) and isinstance(getattr(values, "values", None), dict):
        values = values.values  # keras_tuner.HyperParameters
    if isinstance(values, dict) and isinstance(values.get("values"), dict):
        values = values["values"]
    return dict(_mapping(values, "fn_args.hyperparameters"))


def steps(value, name: str) -> Optional[int]:
    """TFX passes None (and older TFX 0) for "no number of steps"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"fn_args.{name}: a number of steps (0 or more), got {value!r}")
    return value or None


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: a mapping of settings, got {type(value).__name__}")
    return value


def _choice(custom: dict, key: str, default: str, choices) -> str:
    value = custom.get(key, default)
    if value not in choices:
        raise InputError(f"custom_config['{key}']: unknown {key} {value!r}; choose one of: "
                         f"{', '.join(choices)}")
    return value


def _optional_text(custom: dict, key: str) -> Optional[str]:
    value = custom.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"custom_config['{key}']: a text, got {value!r}")
    return value or None


def _seed(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{where}: a seed is an integer of 0 or more, got {value!r}")
    return value


def _section(values, section: str, where: str) -> dict:
    """`values` checked as the configuration section `section`; a copy."""
    values = dict(_mapping(values, where))
    try:
        config_lib.validate({section: values})
    except InputError as err:
        raise InputError(f"{where}: {err}") from None
    return values


def _check_arguments(model: str, arguments: dict, where: str) -> None:
    from pwiser_tf.training import check_model_arguments

    try:
        check_model_arguments(model, arguments)
    except InputError as err:
        raise InputError(f"{where}: {err}") from None
