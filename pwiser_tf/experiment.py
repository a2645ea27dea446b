"""The comparison grid: datasets x models x losses x seeds, resumable.

Each cell is one `training.train_run` in its own directory
`OUTPUT/runs/<dataset>/<model>/<loss>/seed<k>/`, keyed by its fingerprint (the
cell's resolved settings and its data's `metadata.json`): a finished cell with
the same fingerprint is read back, not recomputed, so an interrupted grid
resumes where it stopped; a cell whose settings or data changed is recomputed.
`config.yaml`, `results.csv` and `report.md` are written together at the end,
so they always describe the same grid. Datasets are named in the configuration:

    datasets:
      aliexpress-nl: {data: data/aliexpress_nl}            # converted directory
      aliexpress-fr: {data: data/fr_train, eval_data: data/fr_test}
      synthetic:     {synth: {dataset: aliexpress, rows: 200000, seed: 0}}

A `synth` dataset is generated and converted under `OUTPUT/data/<name>/` once
for its settings (`spec.json` records them; other settings generate it again).

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
import csv
import io
import itertools
import math
import os
from typing import Dict, Iterable, List, Optional

import tensorflow as tf

from pwiser_tf import config as config_lib
from pwiser_tf import fileio, training
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import METADATA_FILE

RESULTS_FILE = "results.csv"
KEY_COLUMNS = ("dataset", "model", "loss", "seed", "variant")


def prepare_dataset(name: str, spec: dict, output_dir: str, progress: bool = True) -> dict:
    """Resolves a dataset entry to `{data, eval_data}` directories, generating and
    converting synthetic data when the entry asks for it."""
    if not isinstance(spec, dict):
        raise InputError(f"dataset {name!r}: expected a mapping with 'data' or 'synth'")
    if spec.get("data") is not None:
        data = spec["data"]
        if not tf.io.gfile.exists(fileio.join(data, METADATA_FILE)):
            raise InputError(f"dataset {name!r}: {data!r} is not a converted directory "
                             f"(no {METADATA_FILE}); run `pwiser-tf convert` first")
        return {"data": data, "eval_data": spec.get("eval_data")}
    if "synth" not in spec:
        raise InputError(f"dataset {name!r}: needs 'data: DIR' or 'synth: {{...}}'")
    from pwiser_tf.pipelines import synthesize
    from pwiser_tf.pipelines.convert import assign_splits, convert

    synth = dict(spec["synth"])
    root = fileio.join(output_dir, "data", name)
    converted = fileio.join(root, "tfrecords")
    recorded = fileio.join(root, "spec.json")
    wanted = {"synth": synth, "validation_fraction": spec.get("validation_fraction", 0.1)}
    if tf.io.gfile.exists(recorded) and fileio.read_json(recorded) != wanted:
        tf.io.gfile.rmtree(root)  # generated with other settings: generate again
    if not tf.io.gfile.exists(fileio.join(converted, METADATA_FILE)):
        if tf.io.gfile.exists(root):
            tf.io.gfile.rmtree(root)
        tf.io.gfile.makedirs(root)
        fileio.write_json(recorded, wanted)
        raw = fileio.join(root, "files")
        kind = synth.pop("dataset", "aliexpress")
        written = synthesize(kind, int(synth.pop("rows", 200_000)), raw, **synth)
        inputs = written["convert_inputs"]
        # Carve a validation split from train unless the format ships one.
        fraction = 0.0 if "validation" in assign_splits(inputs) else \
            float(spec.get("validation_fraction", 0.1))
        convert(written["convert_format"], inputs, converted,
                validation_fraction=fraction, progress=progress)
    return {"data": converted, "eval_data": None}


def grid(config: dict) -> List[dict]:
    """The cells of the configured grid, in a stable order."""
    for key in ("models", "losses", "seeds"):
        if not config.get(key):
            raise InputError(f"the configuration lists no {key}")
    names = training.model_names()
    for model in config["models"]:
        training.check_choice("model", model, names)
    for loss in config["losses"]:
        training.check_choice("loss", loss, training.LOSSES)
    variants = config.get("variants") or {"": {}}
    if not isinstance(variants, dict) or not all(
            isinstance(v, dict) or v is None for v in variants.values()):
        raise InputError("variants must map each variant name to a partial configuration")
    cells = [{"dataset": d, "model": m, "loss": l, "seed": int(s), "variant": str(v),
              "overrides": variants[v] or {}}
             for d, m, l, v, s in itertools.product(config["datasets"], config["models"],
                                                    config["losses"], variants,
                                                    config["seeds"])]
    arms = sorted({l + (f"/{v}" if v else "") for l in config["losses"] for v in variants})
    # One arm needs no baseline (nothing to compare); several need theirs in the grid.
    if baseline(config) not in arms and (len(arms) > 1 or config.get("baseline")):
        raise InputError(f"baseline {baseline(config)!r} is not an arm of the grid; "
                         f"choose one of: {', '.join(arms)}")
    return cells


def baseline(config: dict) -> str:
    """The arm the others are compared with: `baseline`, by default `bce`."""
    return str(config.get("baseline") or "bce")


def run_cells(cells: Iterable[dict], datasets: Dict[str, dict], config: dict,
              output_dir: str, progress: bool = True, eval_split: Optional[str] = None,
              strategy=None) -> List[dict]:
    """Runs (or reads back) every cell; returns one result row per cell.

    A cell may carry `overrides` (a partial configuration merged over `config`)
    and a `variant` label that names them. `strategy`: `training.train_run`'s.
    """
    from tqdm.auto import tqdm

    cells = list(cells)
    rows = []
    bar = tqdm(cells, desc="grid", unit="run", disable=not progress)
    for cell in bar:
        parts = [cell["dataset"], cell["model"], cell["loss"]]
        if cell.get("variant"):
            parts.append(cell["variant"])
        run_dir = fileio.join(output_dir, "runs", *parts, f"seed{cell['seed']}")
        bar.set_postfix_str("/".join(parts[1:]) + f"/seed{cell['seed']}")
        source = datasets[cell["dataset"]]
        # A cell with the same fingerprint is read back; one with other settings
        # (or other data) is recomputed.
        result = training.train_run(
            source["data"], run_dir, cell["model"], cell["loss"], cell["seed"],
            config_lib.merge(config, cell.get("overrides") or {}),
            eval_data_dir=source.get("eval_data"), eval_split=eval_split,
            progress=progress, overwrite=True, strategy=strategy)
        rows.append({**{k: cell.get(k, "") for k in KEY_COLUMNS}, **result})
    return rows


def write_results(rows: List[dict], path: str) -> None:
    """Writes the result rows as CSV, atomically: one row per run; the experiment
    adds the paired statistics (`report.paired_columns`) to each treatment run."""
    rows = [{k: v for k, v in row.items() if not isinstance(v, (dict, list))}
            for row in rows]  # histograms stay in each run's metrics.json
    columns = list(KEY_COLUMNS) + sorted({k for row in rows for k in row} - set(KEY_COLUMNS))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k, "")) for k in columns})
    fileio.atomic_write(path, text.getvalue())


def _cell(value):
    return f"{value:.6g}" if isinstance(value, float) and not math.isnan(value) else value


def run_experiment(config: dict, output_dir: str, progress: bool = True, strategy=None,
                   virtual_devices: Optional[int] = None) -> List[dict]:
    """Prepares the datasets, runs the grid and writes results.csv, report.md, plots.

    `strategy`, `virtual_devices`: where every run trains (`training.train_run`).
    With several workers only the chief writes under `output_dir`.
    """
    from pwiser_tf import distribute, report

    config = config_lib.validate(config)
    if not config.get("datasets"):
        raise InputError("the configuration lists no datasets")
    strategy = distribute.resolve_strategy(strategy, virtual_devices)  # before any op
    cells = grid(config)
    with distribute.worker_directory(output_dir, strategy) as write_dir:
        fileio.make_dirs(write_dir)
        with fileio.exclusive_lock(write_dir, "experiment directory"):
            datasets = {name: prepare_dataset(name, spec, write_dir, progress)
                        for name, spec in config["datasets"].items()}
            rows = run_cells(cells, datasets, config, output_dir, progress, strategy=strategy)
            write_results(report.paired_columns(rows, baseline=baseline(config)),
                          fileio.join(write_dir, RESULTS_FILE))
            report.write_report(rows, write_dir, title=config.get("title", "BCE vs PWiseR"),
                                baseline=baseline(config))
            config_lib.save(config, fileio.join(write_dir, "config.yaml"))
    return rows
