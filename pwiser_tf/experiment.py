"""The comparison grid: datasets x models x losses x seeds, resumable.

Each cell is one `training.train_run` in its own directory
`OUTPUT/runs/<dataset>/<model>/<loss>/seed<k>/`; a cell whose `metrics.json`
exists is finished and is read back, not recomputed, so an interrupted grid
resumes where it stopped. Datasets are named in the configuration:

    datasets:
      aliexpress-nl: {data: data/aliexpress_nl}            # converted directory
      aliexpress-fr: {data: data/fr_train, eval_data: data/fr_test}
      synthetic:     {synth: {dataset: aliexpress, rows: 200000, seed: 0}}

A `synth` dataset is generated and converted under `OUTPUT/data/<name>/` once.
"""
import csv
import itertools
import math
import os
from typing import Dict, Iterable, List, Optional

from pwiser_tf import config as config_lib
from pwiser_tf import training
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import METADATA_FILE

RESULTS_FILE = "results.csv"
KEY_COLUMNS = ("dataset", "model", "loss", "seed", "variant")


def prepare_dataset(name: str, spec: dict, output_dir: str, progress: bool = True) -> dict:
    """Resolves a dataset entry to `{data, eval_data}` directories, generating and
    converting synthetic data when the entry asks for it."""
    if not isinstance(spec, dict):
        raise InputError(f"dataset {name!r}: expected a mapping with 'data' or 'synth'")
    if "data" in spec:
        data = spec["data"]
        if not os.path.isfile(os.path.join(data, METADATA_FILE)):
            raise InputError(f"dataset {name!r}: {data!r} is not a converted directory "
                             f"(no {METADATA_FILE}); run `pwiser-tf convert` first")
        return {"data": data, "eval_data": spec.get("eval_data")}
    if "synth" not in spec:
        raise InputError(f"dataset {name!r}: needs 'data: DIR' or 'synth: {{...}}'")
    from pwiser_tf.pipelines import synthesize
    from pwiser_tf.pipelines.convert import assign_splits, convert

    synth = dict(spec["synth"])
    root = os.path.join(output_dir, "data", name)
    converted = os.path.join(root, "tfrecords")
    if not os.path.isfile(os.path.join(converted, METADATA_FILE)):
        raw = os.path.join(root, "files")
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
    return [{"dataset": d, "model": m, "loss": l, "seed": int(s), "variant": ""}
            for d, m, l, s in itertools.product(config["datasets"], config["models"],
                                                config["losses"], config["seeds"])]


def run_cells(cells: Iterable[dict], datasets: Dict[str, dict], config: dict,
              output_dir: str, progress: bool = True, eval_split: Optional[str] = None
              ) -> List[dict]:
    """Runs (or reads back) every cell; returns one result row per cell.

    A cell may carry `overrides` (a partial configuration merged over `config`)
    and a `variant` label that names them.
    """
    from tqdm.auto import tqdm

    cells = list(cells)
    rows = []
    bar = tqdm(cells, desc="grid", unit="run", disable=not progress)
    for cell in bar:
        parts = [cell["dataset"], cell["model"], cell["loss"]]
        if cell.get("variant"):
            parts.append(cell["variant"])
        run_dir = os.path.join(output_dir, "runs", *parts, f"seed{cell['seed']}")
        bar.set_postfix_str("/".join(parts[1:]) + f"/seed{cell['seed']}")
        result = training.read_metrics(run_dir)
        if result is None:
            source = datasets[cell["dataset"]]
            result = training.train_run(
                source["data"], run_dir, cell["model"], cell["loss"], cell["seed"],
                config_lib.merge(config, cell.get("overrides") or {}),
                eval_data_dir=source.get("eval_data"), eval_split=eval_split,
                progress=progress)
        rows.append({**{k: cell.get(k, "") for k in KEY_COLUMNS}, **result})
    return rows


def write_results(rows: List[dict], path: str) -> None:
    """Writes the result rows as CSV, atomically."""
    columns = list(KEY_COLUMNS) + sorted({k for row in rows for k in row} - set(KEY_COLUMNS))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k, "")) for k in columns})
    os.replace(tmp, path)


def _cell(value):
    return f"{value:.6g}" if isinstance(value, float) and not math.isnan(value) else value


def run_experiment(config: dict, output_dir: str, progress: bool = True) -> List[dict]:
    """Prepares the datasets, runs the grid and writes results.csv, report.md, plots."""
    from pwiser_tf import report

    if not config.get("datasets"):
        raise InputError("the configuration lists no datasets")
    os.makedirs(output_dir, exist_ok=True)
    config_lib.save(config, os.path.join(output_dir, "config.yaml"))
    cells = grid(config)
    datasets = {name: prepare_dataset(name, spec, output_dir, progress)
                for name, spec in config["datasets"].items()}
    rows = run_cells(cells, datasets, config, output_dir, progress)
    write_results(rows, os.path.join(output_dir, RESULTS_FILE))
    report.write_report(rows, output_dir, title=config.get("title", "BCE vs PWiseR"))
    return rows
