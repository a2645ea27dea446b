"""`pwiser-tf`: the one command-line entry.

Each subcommand lives in `pwiser_tf/commands/<name>.py` and exposes
`add_arguments(parser)` and `run(args) -> int`; the modules load only when their
subcommand runs, so `pwiser-tf --help` stays fast. Errors about the user's input
(`InputError`) print one line and exit with status 2, without a traceback.
"""
import argparse
import importlib
import os
import sys

# The models run on tf-keras (TFRS is a Keras 2 library); the flavour is fixed when
# TensorFlow first loads Keras, so it is chosen here, before anything imports it.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COMMANDS = {
    "synth": "write a synthetic dataset in the raw and processed public formats",
    "convert": "convert AliExpress / Ali-CCP files to sharded TFRecords",
    "train": "train one model with BCE or BCE + PWiseR",
    "evaluate": "evaluate a trained model, optionally writing predictions",
    "experiment": "run the models x losses x datasets x seeds grid and report it",
    "sweep": "sweep the PWiseR weight and margins on one dataset",
}


def main(argv=None) -> int:
    from pwiser_tf.errors import InputError

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except InputError as err:
        print(f"pwiser-tf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pwiser-tf {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130


def build_parser(argv) -> argparse.ArgumentParser:
    """The parser, with the arguments of the subcommand that `argv` names."""
    parser = argparse.ArgumentParser(
        prog="pwiser-tf",
        description="PWiseR and multi-task CTR/CVR models for TensorFlow.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    named = argv[0] if argv else None
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=f"pwiser_tf.commands.{name}")
        if name == named:
            importlib.import_module(f"pwiser_tf.commands.{name}").add_arguments(command)
    return parser


if __name__ == "__main__":
    sys.exit(main())
