"""`pwiser-tf experiment`: the models x losses x datasets x seeds comparison.

When runs failed (diverged), the tables are printed and the command exits with
status 2 after writing results.csv and report.md, which mark them failed."""
import os

from pwiser_tf.commands import (add_grid_arguments, add_setting, progress_enabled,
                                resolve_config, set_synthetic_rows)


def add_arguments(parser):
    parser.add_argument("--data", nargs="+", action="extend", metavar="DIR",
                        help="converted directories to compare on, each a dataset named "
                             "after its folder (default: the configuration's datasets; "
                             "built in: generated synthetic data)")
    add_setting(parser, "models")
    add_setting(parser, "losses")
    add_grid_arguments(parser)


def run(args):
    from pwiser_tf import experiment, report

    def own_data(config):
        if args.data:
            config["datasets"] = {os.path.basename(os.path.normpath(d)): {"data": d}
                                  for d in args.data}
        set_synthetic_rows(config, args.rows)

    config = resolve_config(args, "default", own_data)
    failure = None
    try:
        rows = experiment.run_experiment(config, args.output, progress=progress_enabled(args),
                                         strategy=args.strategy,
                                         virtual_devices=args.virtual_devices,
                                         overwrite=args.overwrite)
    except experiment.RunsFailed as err:  # the tables first, then the one-line error
        rows, failure = err.result, err
    baseline = experiment.baseline(config)
    print(report.markdown_table(report.comparison(rows, baseline=baseline)))
    if any("intent_auc" in r for r in rows):
        print()
        print(report.markdown_table(report.comparison(rows, report.INTENT_TASKS, baseline)))
    print(f"\nresults: {os.path.join(args.output, experiment.RESULTS_FILE)}, "
          f"report: {os.path.join(args.output, 'report.md')}")
    if failure is not None:
        raise failure
    return 0
