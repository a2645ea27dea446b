"""`pwiser-tf train`: one model, one loss, one seed."""
import json

from pwiser_tf.commands import (add_config_arguments, add_device_arguments, progress_enabled,
                                resolve_config)


def add_arguments(parser):
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="converted directory with train and validation splits")
    parser.add_argument("--eval-data", metavar="DIR",
                        help="converted directory to evaluate on (its test split); "
                             "default: the test split of --data")
    parser.add_argument("--model", required=True, help="model name, e.g. mmoe")
    parser.add_argument("--loss", required=True, choices=("bce", "pwiser"))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pwiser-weight", type=float, help="lambda of BCE + lambda * PWiseR")
    parser.add_argument("--margin-click", type=float)
    parser.add_argument("--margin-nonclick", type=float)
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run with other settings in DIR (only once the new "
                             "run has finished; until then the old result stays)")
    add_config_arguments(parser)
    add_device_arguments(parser)


def run(args):
    from pwiser_tf import training

    config = resolve_config(args, "base", {
        "train.epochs": args.epochs, "train.batch_size": args.batch_size,
        "train.learning_rate": args.learning_rate, "train.patience": args.patience,
        "pwiser.pwiser_weight": args.pwiser_weight, "pwiser.margin_click": args.margin_click,
        "pwiser.margin_nonclick": args.margin_nonclick,
        "train.mixed_precision": args.mixed_precision})
    result = training.train_run(args.data, args.output, args.model, args.loss, args.seed,
                                config, eval_data_dir=args.eval_data,
                                progress=progress_enabled(args), overwrite=args.overwrite,
                                strategy=args.strategy, virtual_devices=args.virtual_devices)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0
