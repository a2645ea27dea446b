"""`pwiser-tf`: the one command-line entry.

Each subcommand lives in `pwiser_tf/commands/<name>.py` and exposes
`add_arguments(parser)` and `run(args) -> int`; the modules load only when their
subcommand runs, so `pwiser-tf --help` stays fast. Errors about the user's input
(`InputError`) print one line and exit with status 2, without a traceback.

TensorFlow's C++ and absl logging (oneDNN notices, CUDA probing: cudart,
cpu_feature_guard, "All log messages before absl::InitializeLog()") is silenced
while TensorFlow loads, unless `--verbose` is given or `TF_CPP_MIN_LOG_LEVEL`
is set to 0 or 1. Those lines are written to file descriptor 2 before TensorFlow's
log level applies, so the level alone cannot hide them: TensorFlow is loaded once,
up front, with that descriptor sent elsewhere (`load_tensorflow_quietly`). A
command that loads TensorFlow only for some arguments says so with
`uses_tensorflow(args)` (`synth`: only for a remote `--output`, through
`tf.io.gfile`); the others always load it.

Progress goes to stderr too: tqdm bars on a terminal, one plain line per epoch,
cell or split otherwise (a batch job's log); `--quiet` (or `--no-progress`) hides it.
"""
import argparse
import contextlib
import importlib
import os
import sys
import tempfile

# The models run on tf-keras (TFRS is a Keras 2 library); the flavour is fixed when
# TensorFlow first loads Keras, so it is chosen here, before anything imports it.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Only a user who asks for more of TensorFlow's log skips the quiet load: level 3 alone
# cannot hide what TensorFlow prints before its log starts.
USER_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1")
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
    command = importlib.import_module(args._module)
    if args.verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    elif not USER_LOG_LEVEL and uses_tensorflow(command, args):
        load_tensorflow_quietly()
    try:
        return int(command.run(args) or 0)
    except InputError as err:
        print(f"pwiser-tf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pwiser-tf {args.command}: interrupted; rerun the same command to resume",
              file=sys.stderr)
        return 130


def uses_tensorflow(command, args) -> bool:
    """Whether the command module `command` loads TensorFlow with these `args`: its
    `uses_tensorflow(args)`, or yes if it has none. A command that loads TensorFlow
    later, outside the quiet load, would print TensorFlow's start-up lines."""
    check = getattr(command, "uses_tensorflow", None)
    return True if check is None else bool(check(args))


@contextlib.contextmanager
def _stderr_captured():
    """Sends file descriptor 2 (where C++ logging writes) to a temporary file; yields
    the file, so the caller can show what was written when something failed."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def load_tensorflow_quietly() -> None:
    """Imports TensorFlow and probes its devices with the C++ log hidden, then turns
    TensorFlow's and absl's Python loggers down to errors."""
    with _stderr_captured() as captured:
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())  # shown only when loading fails
            raise
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")


def _version() -> str:
    from pwiser_tf import __version__
    return f"pwiser-tf {__version__}"


def build_parser(argv) -> argparse.ArgumentParser:
    """The parser, with the arguments of the subcommand that `argv` names."""
    parser = argparse.ArgumentParser(
        prog="pwiser-tf",
        description="PWiseR and multi-task CTR/CVR models for TensorFlow.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own log messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    named = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="show TensorFlow's own log messages")
        command.set_defaults(_module=f"pwiser_tf.commands.{name}")
        if name == named:
            importlib.import_module(f"pwiser_tf.commands.{name}").add_arguments(command)
    return parser


if __name__ == "__main__":
    sys.exit(main())
