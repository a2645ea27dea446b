"""Subcommands of `pwiser-tf`: each module has `add_arguments(parser)` and `run(args)`.

The arguments that several subcommands share are defined here once.
"""
import json
import sys

from pwiser_tf import config as config_lib


def add_grid_arguments(parser) -> None:
    """Arguments of the commands that run a grid of training runs."""
    parser.add_argument("--seeds", type=csv_list(int), help="e.g. 0,1,2")
    parser.add_argument("--epochs", type=int, help="maximum epochs of each run")
    parser.add_argument("--rows", type=int, help="rows of the built-in synthetic data")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute the runs in DIR that have other settings (each "
                             "replaces the old one once it has finished); without it they "
                             "are refused")
    add_config_arguments(parser)
    add_device_arguments(parser)


def add_device_arguments(parser) -> None:
    """Where and how the runs train: strategy, virtual devices, precision."""
    from pwiser_tf.distribute import PRECISIONS, STRATEGIES

    parser.add_argument("--strategy", choices=STRATEGIES, default="auto",
                        help="tf.distribute strategy (default auto: a TPU when attached, "
                             "mirrored over several GPUs, else one device); multi-worker "
                             "reads the cluster from TF_CONFIG")
    parser.add_argument("--virtual-devices", type=int, metavar="N",
                        help="split the first GPU (or the CPU) into N logical devices, to "
                             "try a strategy on one device")
    parser.add_argument("--mixed-precision", choices=tuple(PRECISIONS),
                        help="train.mixed_precision: off (float32), bf16 or fp16 "
                             "(the heads' outputs and the loss stay float32)")


def add_config_arguments(parser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="YAML or JSON configuration, merged over the reference "
                             "settings (pwiser_tf/configs/base.yaml)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="override one configuration entry, e.g. train.epochs=3 "
                             "(repeatable; the value is parsed as YAML)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def resolve_config(args, builtin: str, flags: dict) -> dict:
    """The base configuration, then --config, then the dedicated flags, then --set.

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
    for key, value in flags.items():
        if value is not None:
            config_lib.override(config, f"{key}={json.dumps(value)}")
    for assignment in args.set:
        config_lib.override(config, assignment)
    return config_lib.validate(config)


def csv_list(kind):
    """argparse type: a comma-separated list, e.g. `--models mmoe,ple`."""
    def parse(text):
        return [kind(item) for item in text.split(",") if item.strip()]
    return parse


def progress_enabled(args) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def set_synthetic_rows(config: dict, rows) -> None:
    """`--rows`: the size of every generated (synthetic) dataset of the configuration."""
    if rows is None:
        return
    for spec in config["datasets"].values():
        if isinstance(spec, dict) and "synth" in spec:
            spec["synth"]["rows"] = rows
