"""`pwiser-tf train`: one model, one loss, one seed."""
import json

from pwiser_tf.commands import (add_config_arguments, add_device_arguments, add_setting,
                                progress_enabled, resolve_config)
from pwiser_tf.options import LOSSES

# The configuration keys with a flag of their own; the rest through --set.
FLAGS = ("train.epochs", "train.batch_size", "train.learning_rate", "train.patience",
         "pwiser.pwiser_weight", "pwiser.margin_click", "pwiser.margin_nonclick",
         "pwiser.pwiser_head", "pwiser.pwiser_scores", "pwiser.normalization")


def add_arguments(parser):
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="converted directory with train and validation splits")
    parser.add_argument("--eval-data", metavar="DIR",
                        help="converted directory to evaluate on (its test split); "
                             "default: the test split of --data")
    parser.add_argument("--model", required=True, help="model name, e.g. mmoe")
    parser.add_argument("--loss", required=True, choices=LOSSES,
                        help="bce, or BCE + lambda * PWiseR (the pwiser.* settings)")
    parser.add_argument("--seed", type=int, default=0)
    for key in FLAGS:  # the base configuration leaves them at their defaults
        add_setting(parser, key, show_default=True)
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run with other settings in DIR (only once the new "
                             "run has finished; until then the old result stays)")
    add_config_arguments(parser)
    add_device_arguments(parser)


def check_group(data_dir: str, loss: str, config) -> None:
    """`pwiser.group=true` needs data with a group column (before any training)."""
    if loss != "pwiser" or not config.pwiser.group:
        return
    from pwiser_tf.errors import InputError
    from pwiser_tf.pipelines.schema import Metadata

    if not Metadata.load(data_dir).schema.group_source:
        raise InputError(f"pwiser.group=true pairs rows of one group, but {data_dir} has no "
                         f"group column; convert it again to keep it (AliExpress "
                         f"search_id, Ali-CCP user id 101)")


def run(args):
    from pwiser_tf import training

    config = resolve_config(args, "base")
    check_group(args.data, args.loss, config)
    result = training.train_run(args.data, args.output, args.model, args.loss, args.seed,
                                config, eval_data_dir=args.eval_data,
                                progress=progress_enabled(args), overwrite=args.overwrite,
                                strategy=args.strategy, virtual_devices=args.virtual_devices)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0
