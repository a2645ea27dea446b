"""`pwiser-tf synth`: synthetic data in the public raw and processed formats.

    pwiser-tf synth --dataset aliexpress --rows 200000 --output data/synth --seed 0
"""
import json

from pwiser_tf.commands import add_progress_argument, progress_enabled
from pwiser_tf.errors import InputError


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise InputError(f"--rows must be an integer >= 2, got {text!r}")
    return value


def add_arguments(parser):
    parser.add_argument("--dataset", required=True, choices=("aliexpress", "ali-ccp"))
    parser.add_argument("--rows", required=True, help="exposures in all splits together")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="receives raw/, processed/ and synth.json (docs/synthetic.md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float,
                        help="share of exposures in test (default 0.3 AliExpress, "
                             "0.5 Ali-CCP)")
    parser.add_argument("--country", default="nl",
                        help="AliExpress file prefix: nl, es, fr, us or ru (default nl)")
    add_progress_argument(parser, "print no line per written chunk (--no-progress is the "
                                  "same flag); errors still print")


def uses_tensorflow(args) -> bool:
    """A plain local --output is written through `os`; a URL (`gs://`, `ram://`,
    `file://`) through `tf.io.gfile`, which loads TensorFlow (`pwiser_tf.cli` then
    loads it first, quietly)."""
    from pwiser_tf import fileio

    return fileio.filesystem(args.output) is not fileio.LocalFiles


def run(args):
    from pwiser_tf.pipelines.synth import synthesize

    manifest = synthesize(args.dataset, _positive_int(args.rows), args.output, seed=args.seed,
                          test_fraction=args.test_fraction, country=args.country,
                          progress=progress_enabled(args))
    print(json.dumps({"output": args.output, "counts": manifest["counts"],
                      "convert_format": manifest["convert_format"],
                      "convert_inputs": manifest["convert_inputs"]}, indent=2))
    return 0
