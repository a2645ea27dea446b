"""Sweeping PWiseR's settings on one dataset, axis by axis around a centre.

The design is coordinate ascent, so the grid can be wide without being a full
product: it starts from `sweep.centre` (by default PWiseR's defaults) and sweeps
one axis at a time, in the order of `sweep.axes`, with the other settings at the
best point found so far; after each axis the best point (highest mean of
`sweep.select` over the seeds) becomes the new centre. The axes are the fields of
`pwiser_tf.config.SweepCentre`, their values checked as the centre's:

    margin          margin_click = margin_nonclick
    pwiser_head     ctr, ctcvr or cvr
    pwiser_scores   probability or logit
    normalization   anchor or pair
    pwiser_weight   lambda

Every point trains one model per seed and is scored on the validation split,
never on test, so choosing a setting does not peek at the evaluation data. The
BCE runs of the same seeds are the baseline: each seed starts every point from
the same weights and data order, so the table gives the paired difference to BCE.
Selection is by `ctcvr_auc` by default (every dataset has it); `intent_auc` is
an extra column on synthetic data only; the group AUCs (`ctcvr_gauc`, `ctr_gauc`,
`cvr_gauc`) need data converted with its group column
(`pwiser_tf.options.SELECT_METRICS` lists the choices). `sweep.md` ranks the
points, flags a chosen value at the edge of its axis, and embeds `sweep_lambda.png`:
lambda against CTR, CTCVR and intent AUC, mean and 95% confidence band over the
seeds, at the chosen other settings.
"""
import math
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from pwiser_tf import config as config_lib
from pwiser_tf import experiment, fileio
from pwiser_tf.errors import InputError
from pwiser_tf.report import paired, save_figure, summarize, t_quantile

SHOWN = ("ctcvr_auc", "ctr_auc", "cvr_auc", "intent_auc", "s3_s2_auc", "ctcvr_gauc",
         "ctr_gauc", "cvr_gauc")
PLOTTED = (("ctr_auc", "CTR AUC"), ("ctcvr_auc", "CTCVR AUC"), ("intent_auc", "intent AUC"))
NUMERIC = ("margin", "pwiser_weight")
FIGURE = "sweep_lambda.png"


def variant(point: dict) -> str:
    """The run-directory name of a point."""
    return (f"w{point['pwiser_weight']:g}_m{point['margin']:g}_{point['pwiser_head']}_"
            f"{point['pwiser_scores']}_{point['normalization']}")


def overrides(point: dict) -> dict:
    """The configuration a point trains with."""
    return {"pwiser": {"pwiser_weight": float(point["pwiser_weight"]),
                       "margin_click": float(point["margin"]),
                       "margin_nonclick": float(point["margin"]),
                       "pwiser_head": point["pwiser_head"],
                       "pwiser_scores": point["pwiser_scores"],
                       "normalization": point["normalization"]}}


def design(config: Union[config_lib.Config, dict]) -> Tuple[dict, List[Tuple[str, list]]]:
    """The centre (a point) and the ordered axes `[(axis, values)]` of the configuration
    (`config_lib.SweepSettings`: its centre's defaults are PWiseR's)."""
    sweep = config_lib.validate(config).sweep or config_lib.SweepSettings()
    if not sweep.axes:
        raise InputError("sweep needs sweep.axes: a mapping of axis -> list of values "
                         f"(axes: {', '.join(config_lib.AXES)})")
    return sweep.centre.model_dump(), list(sweep.axes.items())


def select(rows: List[dict], metric: str) -> Tuple[str, float]:
    """The variant with the highest mean `metric` over its seeds, and that mean."""
    groups: Dict[str, List[float]] = {}
    for row in rows:
        groups.setdefault(row["variant"], []).append(row.get(metric))
    scored = [(summarize(v)[0], k) for k, v in groups.items() if summarize(v)[2]]
    if not scored:
        bad = experiment.failed(rows)
        why = f" ({len(bad)} of {len(rows)} failed: {bad[0]['error']})" if bad else ""
        note = next((r["gauc_note"] for r in rows if r.get("gauc_note")), "")
        if metric.endswith("_gauc") and note:
            why += f" ({note})"
        raise InputError(f"sweep.select: no run reported {metric!r}{why}")
    best, name = max(scored)
    return name, best


def run_sweep(config: Union[config_lib.Config, dict], output_dir: str, progress: bool = True,
              strategy=None, virtual_devices: Optional[int] = None,
              overwrite: bool = False) -> str:
    """Runs the sweep; writes sweep.csv, sweep.md and the figure; returns the markdown.

    `strategy`, `virtual_devices`, `overwrite`: as in `experiment.run_experiment`;
    each stage's runs are checked before they run. Runs that diverged are marked
    failed and left out of the selection; after writing everything, `RunsFailed`
    (with the markdown) is raised.
    """
    from pwiser_tf import distribute

    config = config_lib.validate(config)
    for key in ("datasets", "seeds"):
        if not getattr(config, key):
            raise InputError(f"the configuration lists no {key}")
    centre, axes = design(config)
    sweep = config.sweep  # design() refuses a configuration without axes
    metric, model, seeds = sweep.select, sweep.model, config.seeds
    strategy = distribute.resolve_strategy(strategy, virtual_devices)  # before any op
    with distribute.worker_directory(output_dir, strategy) as write_dir, \
            fileio.removed_if_refused(write_dir) as new:
        markdown, rows = _sweep(config, output_dir, write_dir, new, progress, strategy, metric,
                                centre, axes, model, seeds, overwrite)
    experiment.raise_if_failed(rows, fileio.join(output_dir, "sweep.csv"), markdown)
    return markdown


def _sweep(config, output_dir, write_dir, new, progress, strategy, metric, centre, axes,
           model, seeds, overwrite):
    from pwiser_tf import report

    fileio.make_dirs(write_dir)
    with fileio.exclusive_lock(write_dir, "sweep directory"):
        name, spec = next(iter(config.datasets.items()))

        def run_checked(cells):
            experiment.check_cells(cells, datasets, config, output_dir, "validation",
                                   overwrite)
            return experiment.run_cells(cells, datasets, config, output_dir, progress,
                                        eval_split="validation", strategy=strategy,
                                        overwrite=overwrite)

        def run(points):
            rows = run_checked([{"dataset": name, "model": model, "loss": "pwiser",
                                 "seed": seed, "variant": variant(p), "overrides": overrides(p)}
                                for p in points for seed in seeds])
            by_name = {variant(p): p for p in points}
            for row in rows:
                row.update(by_name[row["variant"]])
            return rows

        bce = [{"dataset": name, "model": model, "loss": "bce", "seed": s, "variant": ""}
               for s in seeds]
        with experiment.refused_setup(write_dir, new):
            datasets = {name: experiment.prepare_dataset(name, spec, write_dir, progress,
                                                         overwrite)}
            experiment.check_cells(bce, datasets, config, output_dir, "validation", overwrite)
        baseline = run_checked(bce)
        current, stages, rows = dict(centre), [], {}
        for axis, values in axes:
            points = [dict(current, **{axis: v}) for v in values]
            stage_rows = run(points)
            rows.update({(r["variant"], r["seed"]): r for r in stage_rows})
            best, _ = select(stage_rows, metric)
            current = next(p for p in points if variant(p) == best)
            stages.append({"axis": axis, "values": values, "chosen": current[axis],
                           "rows": stage_rows})
        all_rows = baseline + list(rows.values())
        experiment.write_results(report.paired_columns(all_rows),
                                 fileio.join(write_dir, "sweep.csv"))
        lam = next((s for s in stages if s["axis"] == "pwiser_weight"), None)
        if lam:
            plot_lambda(lam["rows"], baseline, fileio.join(write_dir, FIGURE))
        markdown = sweep_report(baseline, list(rows.values()), stages, current, metric,
                                FIGURE if lam else None)
        fileio.atomic_write(fileio.join(write_dir, "sweep.md"), markdown)
        config_lib.save(config, fileio.join(write_dir, "config.yaml"))
    return markdown, all_rows


def _by_seed(rows: List[dict], key: str) -> Dict[int, float]:
    return {int(r["seed"]): r.get(key) for r in rows}


def _point_text(point: dict) -> str:
    return (f"pwiser_weight={point['pwiser_weight']:g}, margin={point['margin']:g}, "
            f"pwiser_head={point['pwiser_head']}, pwiser_scores={point['pwiser_scores']}, "
            f"normalization={point['normalization']}")


def sweep_report(baseline: List[dict], rows: List[dict], stages: List[dict], chosen: dict,
                 metric: str, figure=None) -> str:
    """The markdown of a sweep: the chosen point, the path to it, the ranked points."""
    shown = [k for k in SHOWN if any(k in r for r in rows + baseline)]
    lines = [f"# PWiseR sweep (validation split, selected by {metric})", "",
             f"Chosen: {_point_text(chosen)}.", ""]
    failed = experiment.failed(baseline + rows)
    if failed:
        lines += [f"**{len(failed)} runs failed** (status `failed` in sweep.csv, with the "
                  f"error); no statistic or choice counts them: "
                  + ", ".join(experiment.cell_name(r) for r in failed) + ".", ""]
    for stage in stages:
        values = stage["values"]
        lines.append(f"- {stage['axis']}: swept {', '.join(map(_value, values))}; "
                     f"chosen {_value(stage['chosen'])}")
        if (stage["axis"] in NUMERIC and len(values) > 2
                and stage["chosen"] in (min(values), max(values))):
            lines[-1] += " (**at the edge of the axis**: widen it)"
    base_by_seed = {k: _by_seed(baseline, k) for k in shown}
    groups: Dict[str, List[dict]] = {}
    for row in rows:
        groups.setdefault(row["variant"], []).append(row)
    ranked = sorted(groups.values(),
                    key=lambda m: -summarize([r.get(metric) for r in m])[0]
                    if summarize([r.get(metric) for r in m])[2] else math.inf)
    lines += ["", f"Mean ± std over seeds; Δ {metric}: paired mean difference to BCE of the "
              "same seed, with its 95% confidence interval and the seeds where PWiseR wins.",
              "", "| pwiser_weight | margin | head | scores | normalization | "
              + " | ".join(shown) + f" | Δ {metric} (95% CI) | wins |",
              "|---|---|---|---|---|" + "---|" * (len(shown) + 2)]
    bce_cells = " | ".join(_fmt(summarize([r.get(k) for r in baseline])) for k in shown)
    lines.append(f"| BCE | | | | | {bce_cells} | | |")
    for members in ranked:
        p = members[0]
        cells = " | ".join(_fmt(summarize([r.get(k) for r in members])) for k in shown)
        stats = paired(base_by_seed[metric], _by_seed(members, metric))
        ci = ("n/a" if not math.isfinite(stats["low"])
              else f"{stats['mean']:+.4f} [{stats['low']:+.4f}, {stats['high']:+.4f}]")
        lines.append(f"| {p['pwiser_weight']:g} | {p['margin']:g} | {p['pwiser_head']} | "
                     f"{p['pwiser_scores']} | {p['normalization']} | {cells} | {ci} | "
                     f"{stats['wins']}/{stats['n']} |")
    if figure:
        lines += ["", "λ against AUC at the chosen other settings: mean and 95% confidence "
                  "band over the seeds; BCE dashed, with its band.", "",
                  f"![lambda sweep]({figure})"]
    return "\n".join(lines) + "\n"


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fmt(stat) -> str:
    return "n/a" if not stat[2] else f"{stat[0]:.4f} ± {stat[1]:.4f}"


def band(values) -> Tuple[float, float, float]:
    """Mean and 95% t interval of the finite values (the mean twice with one value)."""
    mean, std, n = summarize(values)
    half = t_quantile(0.975, n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    return mean, mean - half, mean + half


def plot_lambda(rows: List[dict], baseline: List[dict], path: str) -> None:
    """λ against CTR, CTCVR and intent AUC: mean and 95% band over the seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, label) for k, label in PLOTTED if any(k in r for r in rows)]
    weights = sorted({float(r["pwiser_weight"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        stats = np.array([band([r.get(key) for r in rows if float(r["pwiser_weight"]) == w])
                          for w in weights])
        ax.plot(weights, stats[:, 0], "o-", color="#1f77b4", label="PWiseR")
        ax.fill_between(weights, stats[:, 1], stats[:, 2], color="#1f77b4", alpha=0.25)
        base = band([r.get(key) for r in baseline])
        if math.isfinite(base[0]):
            ax.axhline(base[0], color="#7f7f7f", linestyle="--", label="BCE")
            ax.axhspan(base[1], base[2], color="#7f7f7f", alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("λ (pwiser_weight)")
        ax.set_title(label)
    axes[0][0].set_ylabel("validation AUC")
    axes[0][0].legend(loc="best")
    fig.tight_layout()
    save_figure(fig, path)
