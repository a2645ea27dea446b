"""The comparison grid: datasets x models x losses x seeds, resumable.

Each cell is one `training.train_run` in its own directory
`OUTPUT/runs/<dataset>/<model>/<loss>/seed<k>/`, keyed by its fingerprint (the
cell's resolved settings and its data's `metadata.json`): a finished cell with
the same fingerprint is read back, not recomputed, so an interrupted grid
resumes where it stopped; a cell whose settings or data changed is refused
(below) unless `overwrite`.
`config.yaml`, `results.csv` and `report.md` are written together at the end,
so they always describe the same grid.

Other settings into the same output are refused before anything runs, as `train`
refuses them: one error names the settings that differ from the cells already
there (finished or interrupted), or from a generated dataset; with
`overwrite=True` (`--overwrite`) each such cell is recomputed and replaces the
old one once it has finished.

A cell whose loss or predictions become NaN or infinite (`guards.Diverged`) is
recorded as failed: its row in `results.csv` has `status` `failed` and the
`error`, and no metrics; `report.md` lists it and leaves it out of every
statistic. The rest of the grid still runs and every output is written; then
`RunsFailed` is raised (`pwiser-tf experiment` prints the tables and exits with
status 2). Rerunning retries the failed cells.

Datasets are named in the configuration:

    datasets:
      aliexpress-nl: {data: data/aliexpress_nl}            # converted directory
      aliexpress-fr: {data: data/fr_train, eval_data: data/fr_test}
      synthetic:     {synth: {dataset: aliexpress, rows: 200000, seed: 0}}

A `synth` dataset is generated and converted under `OUTPUT/data/<name>/` once
for its settings (`spec.json` records them; other settings generate it again,
with `overwrite`).

Named variants make an ablation grid: each variant is a partial configuration
merged over the rest, and each (loss, variant) is an arm, named `loss/variant`.
`baseline` names the arm the others are compared with (default `bce`):

    models: [adaftr]
    losses: [bce]
    variants:
      base: {model_options: {adaftr: {contrastive_weight: 0.0}}}
      adaptive: {}
    baseline: bce/base

Every arm of one seed starts from the same initial weights and data order (the
seed sets both), so `report.md` and `results.csv` compare the arms pairwise.
"""
import contextlib
import csv
import io
import itertools
import math
import os
import sys
import time
from typing import Dict, Iterable, List, Optional, Union

import tensorflow as tf

from pwiser_tf import config as config_lib
from pwiser_tf import fileio, guards, training
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import METADATA_FILE
from pwiser_tf.training.callbacks import stderr_is_terminal

RESULTS_FILE = "results.csv"
KEY_COLUMNS = ("dataset", "model", "loss", "seed", "variant")
STATUS_COLUMNS = ("status", "error")  # "ok" or "failed", and why it failed
# How many distinct differences a refusal names before it says "and N more".
SHOWN_DIFFERENCES = 3
# The metrics of a cell's line in a log.
CELL_AUCS = ("ctr_auc", "cvr_auc", "ctcvr_auc")


class RunsFailed(InputError):
    """Some runs failed (diverged); the others finished and every output was written.
    `result`: what the command would have returned (rows, or a sweep's markdown)."""

    def __init__(self, message: str, result):
        super().__init__(message)
        self.result = result


def failed(rows: List[dict]) -> List[dict]:
    return [row for row in rows if row.get("status") == "failed"]


def raise_if_failed(rows: List[dict], results_path: str, result) -> None:
    """Raises `RunsFailed` naming the failed rows, if any."""
    bad = failed(rows)
    if bad:
        first = bad[0]
        raise RunsFailed(f"{len(bad)} of {len(rows)} runs failed ({cell_name(first)}: "
                         f"{first['error']}); {results_path} marks them failed (status "
                         f"column) and the report leaves them out", result)


def cell_name(cell: dict) -> str:
    """`dataset/model/loss[/variant]/seed<k>`: where a cell's run directory is."""
    parts = [cell["dataset"], cell["model"], cell["loss"]]
    if cell.get("variant"):
        parts.append(cell["variant"])
    return "/".join(parts + [f"seed{cell['seed']}"])


def cell_dir(output_dir: str, cell: dict) -> str:
    return fileio.join(output_dir, "runs", *cell_name(cell).split("/"))


def prepare_dataset(name: str, spec: Union[config_lib.DatasetSettings, dict],
                    output_dir: str, progress: bool = True, overwrite: bool = False) -> dict:
    """Resolves a dataset entry to `{data, eval_data}` directories, generating and
    converting synthetic data when the entry asks for it. Data generated with other
    settings (`spec.json` records them, resolved) is generated again with
    `overwrite`, else refused."""
    if not isinstance(spec, config_lib.DatasetSettings):
        spec = config_lib.validate({"datasets": {name: spec}}).datasets[name]
    if spec.data is not None:
        if not tf.io.gfile.exists(fileio.join(spec.data, METADATA_FILE)):
            raise InputError(f"dataset {name!r}: {spec.data!r} is not a converted directory "
                             f"(no {METADATA_FILE}); run `pwiser-tf convert` first")
        return {"data": spec.data, "eval_data": spec.eval_data}
    from pwiser_tf.pipelines import synthesize
    from pwiser_tf.pipelines.convert import assign_splits, convert

    root = fileio.join(output_dir, "data", name)
    converted = fileio.join(root, "tfrecords")
    recorded = fileio.join(root, "spec.json")
    wanted = {"synth": spec.synth.model_dump(),
              "validation_fraction": spec.validation_fraction}
    if tf.io.gfile.exists(recorded) and fileio.read_json(recorded) != wanted:
        if tf.io.gfile.exists(fileio.join(converted, METADATA_FILE)) and not overwrite:
            diff = training.differences(fileio.read_json(recorded), wanted)
            raise InputError(f"{output_dir}: dataset {name!r} was generated with other "
                             f"settings ({diff}); pass --overwrite to generate it again "
                             f"(and recompute its runs), or choose another --output")
        tf.io.gfile.rmtree(root)  # generated with other settings: generate again
    if not tf.io.gfile.exists(fileio.join(converted, METADATA_FILE)):
        if tf.io.gfile.exists(root):
            tf.io.gfile.rmtree(root)
        tf.io.gfile.makedirs(root)
        fileio.write_json(recorded, wanted)
        raw = fileio.join(root, "files")
        synth = spec.synth
        written = synthesize(synth.dataset, synth.rows, raw, seed=synth.seed,
                             test_fraction=synth.test_fraction, country=synth.country)
        inputs = written["convert_inputs"]
        # Carve a validation split from train unless the format ships one.
        fraction = 0.0 if "validation" in assign_splits(inputs) else spec.validation_fraction
        convert(written["convert_format"], inputs, converted,
                validation_fraction=fraction, progress=progress)
    return {"data": converted, "eval_data": None}


def grid(config: Union[config_lib.Config, dict]) -> List[dict]:
    """The cells of the configured grid, in a stable order."""
    config = config_lib.validate(config)
    for key in ("models", "losses", "seeds"):
        if not getattr(config, key):
            raise InputError(f"the configuration lists no {key}")
    names = training.model_names()
    for model in config.models:
        training.check_choice("model", model, names)
    variants = config.variants or {"": {}}
    cells = [{"dataset": d, "model": m, "loss": l, "seed": s, "variant": v,
              "overrides": variants[v] or {}}
             for d, m, l, v, s in itertools.product(config.datasets, config.models,
                                                    config.losses, variants, config.seeds)]
    arms = sorted({l + (f"/{v}" if v else "") for l in config.losses for v in variants})
    # One arm needs no baseline (nothing to compare); several need theirs in the grid.
    if baseline(config) not in arms and (len(arms) > 1 or config.baseline):
        raise InputError(f"baseline {baseline(config)!r} is not an arm of the grid; "
                         f"choose one of: {', '.join(arms)}")
    return cells


def baseline(config: config_lib.Config) -> str:
    """The arm the others are compared with: `baseline`, by default `bce`."""
    return config.baseline or "bce"


def _recorded(directory: str) -> Optional[dict]:
    path = fileio.join(directory, training.RUN_FILE)
    return fileio.read_json(path) if tf.io.gfile.exists(path) else None


def _conflict(run_dir: str, settings: dict) -> Optional[str]:
    """What differs between `settings` and the run (finished, or staged) in `run_dir`;
    None when nothing there would be replaced (as `RunDirectory.check` decides)."""
    key = training.fingerprint(settings)
    if training.read_metrics(run_dir) is not None:
        recorded = _recorded(run_dir)
        if recorded is None:
            return "a run written by an earlier version of pwiser-tf"
        if recorded["fingerprint"] == key:
            return None
        return training.differences(recorded["settings"], settings)
    staged = _recorded(fileio.join(run_dir, training.STAGING_DIR))
    if staged is not None and staged["fingerprint"] != key:
        return training.differences(staged["settings"], settings)
    return None


def check_cells(cells: Iterable[dict], datasets: Dict[str, dict], config: config_lib.Config,
                output_dir: str, eval_split: Optional[str] = None,
                overwrite: bool = False) -> None:
    """Resolves every cell (its arguments and data are checked before any runs) and,
    unless `overwrite`, raises one `InputError` if cells in `output_dir` hold runs
    with other settings, naming what differs."""
    conflicts = {}
    for cell in cells:
        source = datasets[cell["dataset"]]
        spec = training.resolve_run(
            source["data"], cell["model"], cell["loss"], cell["seed"],
            config.merged(cell.get("overrides")),
            eval_data_dir=source.get("eval_data"), eval_split=eval_split)
        diff = None if overwrite else _conflict(cell_dir(output_dir, cell), spec.settings)
        if diff:
            conflicts.setdefault(diff, []).append(cell_name(cell))
    if conflicts:
        count = sum(map(len, conflicts.values()))
        shown = "; ".join(list(conflicts)[:SHOWN_DIFFERENCES])
        more = len(conflicts) - SHOWN_DIFFERENCES
        shown += f"; and {more} more difference(s)" if more > 0 else ""
        raise InputError(f"{output_dir}: holds {count} run(s) with other settings (e.g. "
                         f"{next(iter(conflicts.values()))[0]}; {shown}); pass --overwrite "
                         f"to replace them (each once its new run has finished), or choose "
                         f"another --output")


def run_cells(cells: Iterable[dict], datasets: Dict[str, dict], config: config_lib.Config,
              output_dir: str, progress: bool = True, eval_split: Optional[str] = None,
              strategy=None, overwrite: bool = False) -> List[dict]:
    """Runs (or reads back) every cell; returns one result row per cell.

    A cell may carry `overrides` (a partial configuration merged over `config`)
    and a `variant` label that names them. `strategy`: `training.train_run`'s.
    A cell with other settings is refused unless `overwrite` (`check_cells` finds
    them all first). A cell that diverges gives a row with `status` `failed`, its
    `error` and no metrics; the others have `status` `ok`.
    `progress`: a bar over the cells on a terminal; otherwise (a log) one line per
    cell (`cell_line`), after its runs' lines per epoch.
    """
    from tqdm.auto import tqdm

    cells = list(cells)
    rows = []
    lines = progress and not stderr_is_terminal()  # a log: one line per cell, no bar
    bar = tqdm(cells, desc="grid", unit="run", disable=not progress or lines)
    for index, cell in enumerate(bar, 1):
        bar.set_postfix_str(cell_name(cell).split("/", 1)[1])
        source = datasets[cell["dataset"]]
        keys = {k: cell.get(k, "") for k in KEY_COLUMNS}
        start = time.perf_counter()
        try:
            result = training.train_run(
                source["data"], cell_dir(output_dir, cell), cell["model"], cell["loss"],
                cell["seed"], config.merged(cell.get("overrides")),
                eval_data_dir=source.get("eval_data"), eval_split=eval_split,
                progress=progress, overwrite=overwrite, strategy=strategy)
        except guards.Diverged as err:  # the rest of the grid still runs
            rows.append({**keys, "status": "failed", "error": str(err)})
        else:
            rows.append({**keys, "status": "ok", **result})
        if lines:
            print(cell_line(rows[-1], index, len(cells), time.perf_counter() - start),
                  file=sys.stderr, flush=True)
    return rows


def cell_line(row: dict, index: int, total: int, seconds: float) -> str:
    """A finished cell's line in a log: its name, its AUCs (on the split it was scored
    on) or why it failed, and how long it took (a cell read back takes no time)."""
    if row["status"] == "failed":
        outcome = f"failed: {row['error']}"
    else:
        aucs = " ".join(f"{k}={row[k]:.4f}" for k in CELL_AUCS if k in row)
        outcome = f"{row.get('eval_split', 'test')} {aucs}"
    return f"cell {index}/{total} {cell_name(row)}: {outcome} ({seconds:.1f} s)"


def write_results(rows: List[dict], path: str) -> None:
    """Writes the result rows as CSV, atomically: one row per run; the experiment
    adds the paired statistics (`report.paired_columns`) to each treatment run."""
    rows = [{k: v for k, v in row.items() if not isinstance(v, (dict, list))}
            for row in rows]  # histograms stay in each run's metrics.json
    present = {k for row in rows for k in row}
    first = list(KEY_COLUMNS) + [k for k in STATUS_COLUMNS if k in present]
    columns = first + sorted(present - set(first))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k, "")) for k in columns})
    fileio.atomic_write(path, text.getvalue())


def _cell(value):
    return f"{value:.6g}" if isinstance(value, float) and not math.isnan(value) else value


@contextlib.contextmanager
def refused_setup(write_dir: str, new: bool):
    """A grid's setup (datasets, checks): if it refuses and `write_dir` is new, the
    folder is removed with the data the setup generated in it, so a refused command
    leaves no new folder behind."""
    try:
        yield
    except InputError:
        if new and tf.io.gfile.exists(write_dir):
            fileio.remove_tree(write_dir)
        raise


def run_experiment(config: Union[config_lib.Config, dict], output_dir: str,
                   progress: bool = True, strategy=None,
                   virtual_devices: Optional[int] = None,
                   overwrite: bool = False) -> List[dict]:
    """Prepares the datasets, runs the grid and writes results.csv, report.md, plots.

    `strategy`, `virtual_devices`: where every run trains (`training.train_run`).
    With several workers only the chief writes under `output_dir`. Cells (or
    generated data) with other settings are refused unless `overwrite`. Raises
    `RunsFailed` (with the rows) after writing everything if some cells failed.
    """
    from pwiser_tf import distribute, report

    config = config_lib.validate(config)
    if not config.datasets:
        raise InputError("the configuration lists no datasets")
    strategy = distribute.resolve_strategy(strategy, virtual_devices)  # before any op
    cells = grid(config)
    with distribute.worker_directory(output_dir, strategy) as write_dir, \
            fileio.removed_if_refused(write_dir) as new:
        fileio.make_dirs(write_dir)
        with fileio.exclusive_lock(write_dir, "experiment directory"):
            with refused_setup(write_dir, new):
                datasets = {name: prepare_dataset(name, spec, write_dir, progress, overwrite)
                            for name, spec in config.datasets.items()}
                check_cells(cells, datasets, config, output_dir, overwrite=overwrite)
            rows = run_cells(cells, datasets, config, output_dir, progress, strategy=strategy,
                             overwrite=overwrite)
            results = fileio.join(write_dir, RESULTS_FILE)
            write_results(report.paired_columns(rows, baseline=baseline(config)), results)
            report.write_report(rows, write_dir, title=config.title,
                                baseline=baseline(config))
            config_lib.save(config, fileio.join(write_dir, "config.yaml"))
    raise_if_failed(rows, results, rows)
    return rows
