"""Subcommands of `pwiser-tf`: each module has `add_arguments(parser)` and `run(args)`.

The arguments that several subcommands share are defined here once. A flag that
sets a configuration key is made by `add_setting` from the key's field in
`pwiser_tf.config`: its type, its choices (a `Literal`'s values) and its help
come from there, and its value goes into the configuration like `--set KEY=VALUE`.
"""
import argparse
import json
import typing
from typing import Callable, Optional

from pwiser_tf import config as config_lib

# The `dest` prefix of the flags that set a configuration key (`add_setting`).
SETTING = "setting:"


def add_setting(parser, key: str, flag: Optional[str] = None,
                show_default: bool = False) -> None:
    """A flag for the configuration key `key` (e.g. `train.epochs` -> `--epochs`).

    Its type, choices and help come from the key's field; a list field takes a
    comma-separated list. Unset, the flag leaves the configuration as it is;
    `show_default` adds the field's default to the help (where the command's
    base configuration does not set the key)."""
    annotation, info = config_lib.field(key)
    item = annotation
    if typing.get_origin(annotation) is list:
        item = typing.get_args(annotation)[0]
    choices = typing.get_args(item) if typing.get_origin(item) is typing.Literal else None
    kind = type(choices[0]) if choices else item
    help_text = info.description or key
    if show_default:
        help_text += f" (default {info.default})"
    argument = {"help": f"{help_text} [{key}]", "default": None, "dest": SETTING + key}
    if item is not annotation:
        if choices:
            argument["help"] = f"{help_text}, of {', '.join(choices)} [{key}]"
        argument.update(type=csv_list(kind, choices), metavar="A,B,...")
    else:
        argument.update(type=kind, choices=choices,
                        metavar=None if choices else key.rsplit(".", 1)[-1].upper())
    parser.add_argument(flag or "--" + key.rsplit(".", 1)[-1].replace("_", "-"), **argument)


def settings_given(args) -> dict:
    """`{configuration key: value}` of the `add_setting` flags given."""
    return {name[len(SETTING):]: value for name, value in vars(args).items()
            if name.startswith(SETTING) and value is not None}


def add_grid_arguments(parser) -> None:
    """Arguments of the commands that run a grid of training runs."""
    add_setting(parser, "seeds")
    add_setting(parser, "train.epochs")
    parser.add_argument("--rows", type=int, help=config_lib.SynthSettings.model_fields[
        "rows"].description + ", in every synth: dataset")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute the runs in DIR that have other settings (each "
                             "replaces the old one once it has finished); without it they "
                             "are refused")
    add_config_arguments(parser)
    add_device_arguments(parser)


def add_device_arguments(parser) -> None:
    """Where and how the runs train: strategy, virtual devices, precision."""
    from pwiser_tf.distribute import STRATEGIES

    parser.add_argument("--strategy", choices=STRATEGIES, default="auto",
                        help="tf.distribute strategy (default auto: a TPU when attached, "
                             "mirrored over several GPUs, else one device); multi-worker "
                             "reads the cluster from TF_CONFIG")
    parser.add_argument("--virtual-devices", type=int, metavar="N",
                        help="split the first GPU (or the CPU) into N logical devices, to "
                             "try a strategy on one device")
    add_setting(parser, "train.mixed_precision")


PROGRESS_HELP = ("print no progress: no bars on a terminal, no line per epoch, cell or "
                 "split in a log (when stderr is not a terminal); errors still print. "
                 "--no-progress is the same flag")


def add_progress_argument(parser, help_text: str = PROGRESS_HELP) -> None:
    """`--quiet`, also spelled `--no-progress` (its earlier name, kept for scripts);
    `progress_enabled(args)` reads it. Progress goes to stderr: tqdm bars on a terminal,
    plain lines otherwise, so a batch job's log holds no bar characters."""
    parser.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                        help=help_text)


def add_config_arguments(parser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="YAML or JSON configuration, merged over the reference "
                             "settings (pwiser_tf/configs/base.yaml)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="override one configuration entry, e.g. train.epochs=3 "
                             "(repeatable; the value is parsed as YAML)")
    add_progress_argument(parser)


def resolve_config(args, builtin: str,
                   adjust: Optional[Callable[[dict], None]] = None) -> config_lib.Config:
    """The base configuration, then --config, then the setting flags, then --set,
    then `adjust(config)` (a command's own flags, e.g. --data); validated and typed.

    The packaged `builtin` configuration (`default`, `sweep`) describes the
    built-in runs on synthetic data. With your own data (`--data`) or a
    configuration file, runs start from the reference settings (`base`); a sweep
    keeps its grid.
    """
    if args.config or getattr(args, "data", None):
        base = config_lib.packaged("base")
        if builtin == "sweep":
            base["sweep"] = config_lib.packaged("sweep")["sweep"]
    else:
        base = config_lib.packaged(builtin)
    config = config_lib.resolve(base, args.config)
    for key, value in settings_given(args).items():
        config_lib.override(config, f"{key}={json.dumps(value)}")
    for assignment in args.set:
        config_lib.override(config, assignment)
    if adjust is not None:
        adjust(config)
    return config_lib.validate(config)


def csv_list(kind, choices=None):
    """argparse type: a comma-separated list, e.g. `--models mmoe,ple`; with `choices`,
    each item must be one of them."""
    def parse(text):
        items = [kind(item.strip()) for item in text.split(",") if item.strip()]
        for item in items:
            if choices is not None and item not in choices:
                raise argparse.ArgumentTypeError(
                    f"invalid choice: {item!r} (choose from {', '.join(map(str, choices))})")
        return items
    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names it in errors
    return parse


def progress_enabled(args) -> bool:
    """Whether to show progress (`--quiet` not given); bars or lines, the callee picks
    from stderr."""
    return not args.quiet


def set_synthetic_rows(config: dict, rows) -> None:
    """`--rows`: the size of every generated (synthetic) dataset of the configuration."""
    if rows is None:
        return
    for spec in (config.get("datasets") or {}).values():
        if isinstance(spec, dict) and isinstance(spec.get("synth"), dict):
            spec["synth"]["rows"] = rows
