"""`pwiser-tf evaluate`: score a trained model on a converted split."""
import json

from pwiser_tf.errors import InputError


def add_arguments(parser):
    parser.add_argument("--model-dir", required=True, metavar="DIR",
                        help="output directory of `pwiser-tf train` (or its saved_model/)")
    parser.add_argument("--data", required=True, metavar="DIR", help="converted directory")
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--predictions", metavar="FILE",
                        help="write one CSV row per example, in input order: "
                             "row,group,click,conversion,pctr,pcvr,pctcvr (row: its index "
                             "in the split; group: the search id of AliExpress, the user "
                             "id of Ali-CCP, absent from data converted without it)")


def run(args):
    from pwiser_tf import evaluation, fileio, guards, metrics

    if args.batch_size <= 0:
        raise InputError(f"--batch-size {args.batch_size}: must be positive")
    if args.predictions:  # before the scoring, not after it
        fileio.check_writable_file(args.predictions, "--predictions")
    labels, predictions = evaluation.predict_split(args.model_dir, args.data, args.split,
                                                   args.batch_size)
    guards.check_predictions(predictions, f"--model-dir {args.model_dir}")  # no AUC of NaNs
    if args.predictions:
        evaluation.write_predictions(predictions, args.predictions, labels=labels)
    print(json.dumps(metrics.ctr_cvr_metrics(labels, predictions), indent=2, sort_keys=True))
    return 0
