"""Sweeping the PWiseR weight and margins on one dataset.

Every (pwiser_weight, margin_click, margin_nonclick) setting trains one model per
seed and is scored on the validation split, never on test, so choosing a
setting does not peek at the evaluation data. The BCE runs of the same seeds are
the baseline. `sweep.md` ranks the settings by the selection metric and shows
the observed-click AUC beside it: a strong PWiseR term may lower click AUC while
it raises CTCVR / intent AUC.
"""
import itertools
from typing import List

from pwiser_tf import config as config_lib
from pwiser_tf import experiment, fileio
from pwiser_tf.errors import InputError
from pwiser_tf.report import summarize

SHOWN = ("ctcvr_auc", "ctr_auc", "cvr_auc", "intent_auc", "s3_s2_auc")


def sweep_cells(config: dict) -> List[dict]:
    sweep = config.get("sweep") or {}
    weights = sweep.get("pwiser_weight") or []
    margins_click = sweep.get("margin_click") or []
    margins_nonclick = sweep.get("margin_nonclick") or margins_click
    if not weights or not margins_click:
        raise InputError("sweep needs sweep.pwiser_weight and sweep.margin_click lists")
    dataset = next(iter(config["datasets"]))
    model = sweep.get("model", "mmoe")
    seeds = [int(s) for s in config.get("seeds", [0])]
    cells = [{"dataset": dataset, "model": model, "loss": "bce", "seed": s, "variant": ""}
             for s in seeds]
    tied = sweep.get("tie_margins", True)
    pairs = (zip(margins_click, margins_nonclick) if tied
             else itertools.product(margins_click, margins_nonclick))
    for weight, (m1, m2), seed in itertools.product(weights, list(pairs), seeds):
        cells.append({"dataset": dataset, "model": model, "loss": "pwiser", "seed": seed,
                      "variant": f"w{weight:g}_m{m1:g}_{m2:g}",
                      "overrides": {"pwiser": {"pwiser_weight": float(weight),
                                               "margin_click": float(m1),
                                               "margin_nonclick": float(m2)}},
                      "pwiser_weight": weight, "margin_click": m1, "margin_nonclick": m2})
    return cells


def run_sweep(config: dict, output_dir: str, progress: bool = True) -> str:
    """Runs the sweep; writes sweep.csv and sweep.md and returns the markdown."""
    config = config_lib.validate(config)
    if not config.get("datasets"):
        raise InputError("the configuration lists no datasets")
    cells = sweep_cells(config)
    fileio.make_dirs(output_dir)
    with fileio.exclusive_lock(output_dir, "sweep directory"):
        name, spec = next(iter(config["datasets"].items()))
        datasets = {name: experiment.prepare_dataset(name, spec, output_dir, progress)}
        rows = experiment.run_cells(cells, datasets, config, output_dir, progress,
                                    eval_split="validation")
        for row, cell in zip(rows, cells):
            for key in ("pwiser_weight", "margin_click", "margin_nonclick"):
                row[key] = cell.get(key, 0.0)
        experiment.write_results(rows, fileio.join(output_dir, "sweep.csv"))
        markdown = sweep_table(rows, (config.get("sweep") or {}).get("select", "ctcvr_auc"))
        fileio.atomic_write(fileio.join(output_dir, "sweep.md"), markdown)
        config_lib.save(config, fileio.join(output_dir, "config.yaml"))
    return markdown


def sweep_table(rows: List[dict], select: str) -> str:
    groups = {}
    for row in rows:
        groups.setdefault((row["loss"], row["variant"]), []).append(row)
    shown = [k for k in SHOWN if any(k in r for r in rows)]
    stats = []
    for (loss, variant), members in groups.items():
        first = members[0]
        stats.append((loss, first.get("pwiser_weight", 0.0), first.get("margin_click", 0.0),
                      first.get("margin_nonclick", 0.0),
                      {k: summarize([m.get(k) for m in members]) for k in shown}))
    stats.sort(key=lambda s: -s[4][select][0] if s[4][select][2] else 0.0)
    lines = [f"# PWiseR sweep (validation split, ranked by {select})", "",
             "| loss | pwiser_weight | margin_click | margin_nonclick | "
             + " | ".join(shown) + " |",
             "|---|---|---|---|" + "---|" * len(shown)]
    for loss, weight, m1, m2, s in stats:
        cells = " | ".join(f"{s[k][0]:.4f} ± {s[k][1]:.4f}" for k in shown)
        lines.append(f"| {loss} | {weight:g} | {m1:g} | {m2:g} | {cells} |")
    return "\n".join(lines) + "\n"
