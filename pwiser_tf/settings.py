"""The typed settings of a configuration: its schema, as pydantic models.

`pwiser_tf.config.validate` checks a configuration against `Config` and returns
it typed; every command passes these objects on as they are, so no caller fills
in a default of its own. The choices are `Literal`s and PWiseR's defaults those
of the loss and the models, both from `pwiser_tf.options`; the command line
makes its flags from these fields (`pwiser_tf.commands.add_setting`). Each
field's `description` is its help. No TensorFlow is loaded here.

Example:

>>> Config().pwiser.pwiser_weight
0.03
>>> list(AXES)
['margin', 'pwiser_head', 'pwiser_scores', 'normalization', 'pwiser_weight']
"""
from typing import Annotated, Any, Dict, List, Literal, Optional

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from pwiser_tf import options


class _Section(BaseModel):
    """A configuration section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


NonNegative = Annotated[float, Field(ge=0)]


class TrainSettings(_Section):
    """`train:`, the optimization of every run (defaults: the reference settings)."""

    epochs: int = Field(50, ge=1, description="maximum epochs of each run")
    batch_size: int = Field(2048, ge=1, description="examples per step (the global batch)")
    patience: int = Field(2, ge=0, description="early stopping: epochs without a "
                                                "validation gain")
    learning_rate: float = Field(1e-3, gt=0, description="Adam's learning rate")
    weight_decay: float = Field(1e-6, ge=0, description="Adam's decoupled weight decay")
    mixed_precision: Literal["off", "bf16", "fp16"] = Field(
        "off", description="off (float32), bf16 or fp16: the mixed_bfloat16 / "
                           "mixed_float16 Keras policy (the heads and the loss stay float32)")
    jit_compile: Optional[bool] = Field(None, description="XLA; default: on a TPU only")
    multi_valued_length: int = Field(
        64, ge=1, description="multi-valued fields are padded or cut to this length when "
                              "shapes are static (under a strategy or XLA)")


class PwiserSettings(_Section):
    """`pwiser:`, the PWiseR term of a `pwiser` run: the models' (and `PWiseRLoss`')
    arguments, with their defaults (`pwiser_tf.options`). A run records them resolved,
    so its fingerprint changes when a default does."""

    pwiser_weight: NonNegative = Field(options.PWISER_WEIGHT,
                                       description="lambda of BCE + lambda * PWiseR")
    margin_click: NonNegative = Field(
        options.MARGIN_CLICK, description="margin of converted clicks over clicks without "
                                          "conversion")
    margin_nonclick: NonNegative = Field(
        options.MARGIN_NONCLICK, description="margin of converted clicks over non-clicks")
    pwiser_head: options.PwiserHead = Field(options.PWISER_HEAD,
                                            description="the head PWiseR acts on")
    pwiser_scores: options.PwiserScores = Field(
        options.PWISER_SCORES, description="what PWiseR compares: the head's probabilities "
                                           "or its logits")
    squared: bool = Field(options.SQUARED, description="squared hinge (else plain)")
    normalization: options.Normalization = Field(
        options.NORMALIZATION, description="anchor: each term over its anchor group (the "
                                           "papers'); pair: over all its pairs")
    pairs: options.Pairs = Field(
        options.PAIRS_DEFAULT, description="under a strategy: pairs over all replicas "
                                           "(global) or per replica")
    group: bool = Field(False, description="pair only rows of one group (the data's group "
                                           "column: AliExpress search_id, Ali-CCP user "
                                           "101); needs data converted with it")

    def model_arguments(self) -> Dict[str, Any]:
        """The models' arguments these settings are (`group` is `pwiser_group`)."""
        return {MODEL_ARGUMENTS.get(name, name): value
                for name, value in self.model_dump().items()}


# The settings whose model argument has another name.
MODEL_ARGUMENTS = {"group": "pwiser_group"}


class SynthSettings(_Section):
    """`synth:` of a dataset: arguments of `pwiser_tf.pipelines.synthesize`."""

    dataset: Literal["aliexpress", "ali-ccp"] = "aliexpress"
    rows: int = Field(200_000, ge=2, description="rows of the generated (synthetic) data")
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
    """`sweep.centre:`, where the axis-by-axis sweep starts (default: the defaults of
    `pwiser:`); each field is an axis of `sweep.axes`."""

    margin: NonNegative = Field(options.MARGIN_CLICK,
                                description="margin values, margin_click = margin_nonclick")
    pwiser_head: options.PwiserHead = options.PWISER_HEAD
    pwiser_scores: options.PwiserScores = options.PWISER_SCORES
    normalization: options.Normalization = options.NORMALIZATION
    pwiser_weight: NonNegative = Field(options.PWISER_WEIGHT,
                                       description="pwiser_weight values (lambda)")


def _axis_values(name: str) -> pydantic.TypeAdapter:
    """The values of one axis: a list of what its centre's field holds."""
    info = SweepCentre.model_fields[name]
    value = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return pydantic.TypeAdapter(List[value])


AXES = {name: _axis_values(name) for name in SweepCentre.model_fields}


class SweepSettings(_Section):
    """`sweep:`, the design of `pwiser-tf sweep` (`pwiser_tf.sweep`)."""

    model: str = Field("mmoe", description="the model to sweep on")
    select: options.SelectMetric = Field(
        options.SELECT_METRICS[0], description="the validation metric that chooses (the "
                                               "group AUCs *_gauc need data converted "
                                               "with its group column)")
    centre: SweepCentre = SweepCentre()
    axes: Dict[str, List[Any]] = Field(
        {}, description="axis -> values, swept in the order given; the axes are the "
                        "fields of sweep.centre")

    @pydantic.field_validator("axes")
    @classmethod
    def _typed_axes(cls, axes):
        # A mapping, not a model: the order of the axes is the order of the sweep.
        checked = {}
        for axis, values in axes.items():
            if axis not in AXES:
                raise ValueError(f"unknown axis {axis!r}; choose from {', '.join(AXES)}")
            if not values:
                raise ValueError(f"{axis}: expected a non-empty list of values")
            try:
                checked[axis] = AXES[axis].validate_python(values)
            except pydantic.ValidationError as err:
                error = err.errors()[0]
                where = ".".join(str(p) for p in (axis, *error["loc"]))
                raise ValueError(f"{where}: {error['msg']} (got {error['input']!r})") from None
        return checked


# Where PWiseR's settings go: refused in `model:` and `model_options:`, so that each
# has one place (and a `bce` run is not handed PWiseR's arguments).
_NOT_MODEL_ARGUMENTS = {"loss": "the loss is chosen by `losses:` (or train --loss)",
                        **{MODEL_ARGUMENTS.get(name, name):
                           f"PWiseR's settings go under pwiser: (pwiser.{name})"
                           for name in PwiserSettings.model_fields}}


def _check_model_arguments(arguments: Dict[str, Any], where: str = "") -> None:
    for name in arguments:
        if name in _NOT_MODEL_ARGUMENTS:
            raise ValueError(f"{where}{name} is not a model argument here: "
                             f"{_NOT_MODEL_ARGUMENTS[name]}")


class Config(_Section):
    """A whole configuration (`pwiser_tf/configs/*.yaml`), validated and typed.

    `validate` returns one and every command passes it on as it is; `merged`
    gives a variant's (or a sweep point's) configuration.
    """

    title: str = "BCE vs PWiseR"
    datasets: Dict[str, DatasetSettings] = {}
    models: List[str] = Field([], description="models of the grid, e.g. mmoe,ple,esmm")
    losses: List[options.LossName] = Field([], description="losses of the grid")
    seeds: List[int] = Field([], description="seeds of the grid, e.g. 0,1,2")
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

    @pydantic.field_validator("model")
    @classmethod
    def _model_arguments(cls, arguments):
        _check_model_arguments(arguments)
        return arguments

    @pydantic.field_validator("model_options")
    @classmethod
    def _options_arguments(cls, per_model):
        for model, arguments in per_model.items():
            _check_model_arguments(arguments, f"{model}.")
        return per_model

    def merged(self, partial: Optional[dict]) -> "Config":
        """This configuration with `partial` (a variant, a sweep point) merged over it,
        checked as `pwiser_tf.config.validate` checks a configuration."""
        from pwiser_tf import config  # which validates with this schema

        if not partial:
            return self
        return config.validate(config.merge(self.to_dict(), partial))

    def to_dict(self) -> dict:
        """Every setting, defaults included, as plain YAML/JSON values."""
        return self.model_dump(mode="json")


__all__ = ["TrainSettings", "PwiserSettings", "SynthSettings", "DatasetSettings",
           "SweepCentre", "SweepSettings", "Config", "AXES"]
