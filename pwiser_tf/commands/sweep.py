"""`pwiser-tf sweep`: PWiseR's settings on one dataset, axis by axis (`pwiser_tf.sweep`)."""
from pwiser_tf.commands import (add_grid_arguments, add_setting, progress_enabled,
                                resolve_config, set_synthetic_rows)


def add_arguments(parser):
    parser.add_argument("--data", metavar="DIR",
                        help="converted directory (default: the built-in synthetic data, "
                             "with the small networks of the packaged sweep configuration)")
    add_setting(parser, "sweep.model", show_default=True)
    add_setting(parser, "sweep.axes.pwiser_weight", flag="--weights")
    add_setting(parser, "sweep.axes.margin", flag="--margins")
    add_grid_arguments(parser)


def run(args):
    import os

    from pwiser_tf import experiment, sweep

    def own_data(config):
        if args.data:
            config["datasets"] = {os.path.basename(os.path.normpath(args.data)):
                                  {"data": args.data}}
        set_synthetic_rows(config, args.rows)

    config = resolve_config(args, "sweep", own_data)
    try:
        print(sweep.run_sweep(config, args.output, progress=progress_enabled(args),
                              strategy=args.strategy, virtual_devices=args.virtual_devices,
                              overwrite=args.overwrite))
    except experiment.RunsFailed as err:  # the report first, then the one-line error
        print(err.result)
        raise
    return 0
