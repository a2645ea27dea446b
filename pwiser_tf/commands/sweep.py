"""`pwiser-tf sweep`: PWiseR's settings on one dataset, axis by axis (`pwiser_tf.sweep`)."""
from pwiser_tf.commands import (add_grid_arguments, csv_list, progress_enabled,
                                resolve_config, set_synthetic_rows)


def add_arguments(parser):
    parser.add_argument("--data", metavar="DIR",
                        help="converted directory (default: the built-in synthetic data, with the small networks of the packaged sweep configuration)")
    parser.add_argument("--model", help="model to sweep on (default mmoe)")
    parser.add_argument("--weights", type=csv_list(float),
                        help="pwiser_weight values (the sweep.axes.pwiser_weight axis)")
    parser.add_argument("--margins", type=csv_list(float),
                        help="margin values, margin_click = margin_nonclick "
                             "(the sweep.axes.margin axis)")
    add_grid_arguments(parser)


def run(args):
    import os

    from pwiser_tf import experiment, sweep

    config = resolve_config(args, "sweep", {
        "sweep.model": args.model, "sweep.axes.pwiser_weight": args.weights,
        "sweep.axes.margin": args.margins, "seeds": args.seeds, "train.epochs": args.epochs,
        "train.mixed_precision": args.mixed_precision})
    if args.data:
        config["datasets"] = {os.path.basename(os.path.normpath(args.data)): {"data": args.data}}
    set_synthetic_rows(config, args.rows)
    try:
        print(sweep.run_sweep(config, args.output, progress=progress_enabled(args),
                              strategy=args.strategy, virtual_devices=args.virtual_devices,
                              overwrite=args.overwrite))
    except experiment.RunsFailed as err:  # the report first, then the one-line error
        print(err.result)
        raise
    return 0
