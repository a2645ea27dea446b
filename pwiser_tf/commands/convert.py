"""`pwiser-tf convert`: AliExpress / Ali-CCP files to sharded TFRecords.

    pwiser-tf convert --format aliexpress-csv --input nl/train.csv nl/test.csv \\
        --output data/aliexpress_nl --validation-fraction 0.1

Each `--input` is `PATH` or `SPLIT=PATH`; without `SPLIT=` the split comes from
the file or folder name (`train`, `test`, `val`/`valid`/`validation`/`dev`).
The raw formats take both files of each split (`nl_user_train.csv
nl_item_train.csv`, `sample_skeleton_train.csv common_features_train.csv`).
Rerunning the same command resumes an interrupted conversion.
"""
import argparse
import json

from pwiser_tf import options as choices
from pwiser_tf.commands import add_progress_argument, progress_enabled
from pwiser_tf.pipelines.readers import FORMATS  # light: no TensorFlow until run()


def add_arguments(parser):
    parser.add_argument("--format", required=True, choices=FORMATS)
    # "extend": a repeated --input adds its files (argparse would keep the last one only)
    parser.add_argument("--input", required=True, nargs="+", action="extend",
                        metavar="[SPLIT=]PATH",
                        help="input files, repeatable; SPLIT is train, validation or test "
                             "(default: from the file or folder name)")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--validation-fraction", type=float, default=0.0,
                        help="share of train rows moved to a validation split by a hash of "
                             "the row id (default 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="salt of the validation hash")
    parser.add_argument("--compression", choices=("none", "gzip"), default="none")
    parser.add_argument("--records-per-shard", type=int, default=500_000)
    parser.add_argument("--skip-malformed", action="store_true",
                        help="skip and count malformed lines instead of stopping")
    parser.add_argument("--conversion-without-click",
                        choices=choices.CONVERSION_WITHOUT_CLICK_IN_CONVERT,
                        default=choices.DROP,
                        help="rows with click 0 and conversion 1: drop them (default, as the "
                             "public pipelines do), keep them as_click (a click and a "
                             "conversion) or stop with an error naming the file and line")
    # the policy's earlier spelling: refused with the new one's name (`run`)
    parser.add_argument("--conversions-without-click", dest="renamed_policy",
                        help=argparse.SUPPRESS)
    parser.add_argument("--cache-entries", type=int,
                        help="raw formats: user / common-features rows kept in memory while "
                             "joining (default 65536)")
    parser.add_argument("--index-dir", default="",
                        help="raw formats: where to build the on-disk join index if the two "
                             "files are not in the same key order (default: DIR/.index, "
                             "inside the output, removed when done; a temporary folder when "
                             "DIR is remote)")
    parser.add_argument("--remap-ids", action="store_true",
                        help="renumber each field's ids 1..k over all splits (one extra pass) "
                             "and save the map as DIR/id_maps.npz; for ali-ccp-raw, whose ids "
                             "share one global space")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished conversion of other inputs in DIR (it "
                             "stays until the new one has finished)")
    parser.add_argument("--runner", default="local",
                        help="local (default: this process), direct (Beam's DirectRunner) or "
                             "any Beam runner's name, e.g. DataflowRunner, FlinkRunner, "
                             "SparkRunner (needs the beam extra; docs/beam.md)")
    parser.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a Beam pipeline option, repeatable (e.g. direct_num_workers=2, "
                             "project=..., temp_location=gs://...)")
    add_progress_argument(parser)


def run(args):
    from pwiser_tf.errors import InputError
    from pwiser_tf.pipelines.readers import RENAMED_MESSAGE

    if args.renamed_policy is not None:
        raise InputError(RENAMED_MESSAGE)
    if args.records_per_shard < 1:  # not one file per record
        raise InputError(f"--records-per-shard must be at least 1, got {args.records_per_shard}")
    from pwiser_tf.pipelines.convert import convert

    options = {}
    if args.format.endswith("-raw"):
        options = {"index_dir": args.index_dir}
        if args.cache_entries:
            options["cache_entries"] = args.cache_entries
    common = dict(validation_fraction=args.validation_fraction, seed=args.seed,
                  compression="GZIP" if args.compression == "gzip" else "",
                  skip_malformed=args.skip_malformed,
                  conversion_without_click=args.conversion_without_click,
                  remap_ids=args.remap_ids, overwrite=args.overwrite, **options)
    if args.runner == "local":
        if args.beam_option:
            raise InputError("--beam-option needs a Beam --runner (direct, DataflowRunner, ...)")
        metadata = convert(args.format, args.input, args.output,
                           records_per_shard=args.records_per_shard,
                           progress=progress_enabled(args), **common)
    else:
        from pwiser_tf.pipelines.beam_convert import beam_options_from, convert_beam

        metadata = convert_beam(args.format, args.input, args.output, runner=args.runner,
                                beam_options=beam_options_from(args.beam_option), **common)
    print(json.dumps({"output": args.output,
                      "splits": {name: split.counts for name, split in metadata.splits.items()},
                      "source_counts": metadata.extra["source_counts"]}, indent=2))
    return 0
