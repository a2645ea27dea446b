"""Turning result rows into the comparison table (`report.md`) and plots.

The table has the papers' layout: AUC per dataset, model and task, BCE and
PWiseR side by side as mean ± std over seeds, their difference, and whether
the difference is larger than the seed spread (|Δ| > std_BCE + std_PWiseR,
a deliberately strict test: a gain below the spread is not a gain).
"""
import io
import math
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

from pwiser_tf import fileio

TASKS = (("ctr_auc", "CTR AUC"), ("cvr_auc", "CVR AUC"), ("ctcvr_auc", "CTCVR AUC"))
INTENT_TASKS = (("intent_auc", "pCTR vs intent AUC"),
                ("s3_s2_auc", "pCTR S3 vs S2 AUC"))
BASELINE, TREATMENT = "bce", "pwiser"


def summarize(values: Sequence[float]) -> Tuple[float, float, int]:
    """Mean, sample standard deviation and count of the finite values."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return float(np.mean(finite)), std, len(finite)


def comparison(rows: List[dict], tasks=TASKS) -> List[dict]:
    """One record per (dataset, model, task): BCE and PWiseR statistics and Δ."""
    groups: Dict[tuple, List[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["dataset"], row["model"], row["loss"])].append(row)
    out = []
    for dataset, model in sorted({(d, m) for d, m, _ in groups}):
        for key, label in tasks:
            base = summarize([r.get(key) for r in groups.get((dataset, model, BASELINE), [])])
            treat = summarize([r.get(key) for r in groups.get((dataset, model, TREATMENT), [])])
            if base[2] == 0 and treat[2] == 0:
                continue
            delta = treat[0] - base[0]
            out.append({"dataset": dataset, "model": model, "task": label, "metric": key,
                        "bce": base, "pwiser": treat, "delta": delta,
                        "beyond_spread": bool(math.isfinite(delta)
                                              and abs(delta) > base[1] + treat[1])})
    return out


def _fmt(stat: Tuple[float, float, int]) -> str:
    mean, std, n = stat
    return "n/a" if n == 0 else f"{mean:.4f} ± {std:.4f}"


def markdown_table(records: List[dict]) -> str:
    lines = ["| dataset | model | task | BCE | PWiseR | Δ | beyond spread |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        delta = "n/a" if not math.isfinite(r["delta"]) else f"{r['delta']:+.4f}"
        verdict = ("**yes**" if r["delta"] > 0 else "yes (worse)") if r["beyond_spread"] else "no"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['task']} | {_fmt(r['bce'])} | "
                     f"{_fmt(r['pwiser'])} | {delta} | {verdict} |")
    return "\n".join(lines)


def write_report(rows: List[dict], output_dir: str, title: str = "BCE vs PWiseR") -> str:
    """Writes `report.md` and one PNG per dataset; returns the markdown text."""
    seeds = sorted({r["seed"] for r in rows})
    text = [f"# {title}", "",
            f"{len(rows)} runs; seeds {seeds}. Mean ± std over seeds, evaluation split. "
            "Δ = PWiseR − BCE; beyond spread: |Δ| > std(BCE) + std(PWiseR).", "",
            "## AUC", "", markdown_table(comparison(rows)), ""]
    if any("intent_auc" in r for r in rows):
        text += ["## Against the clean intent label (synthetic data)", "",
                 "Where many clicks are noise, PWiseR should rank true intent and "
                 "converted clicks (S3) above non-converted clicks (S2) better in pCTR.", "",
                 markdown_table(comparison(rows, INTENT_TASKS)), ""]
    speed = summarize([r.get("train_examples_per_sec") for r in rows])
    if speed[2]:
        text += [f"Training throughput: {speed[0]:,.0f} ± {speed[1]:,.0f} examples/s.", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        name = f"auc_{dataset}.png"
        plot(rows, dataset, fileio.join(output_dir, name))
        text += [f"![{dataset}]({name})", ""]
    markdown = "\n".join(text)
    fileio.atomic_write(fileio.join(output_dir, "report.md"), markdown)
    return markdown


def plot(rows: List[dict], dataset: str, path: str) -> None:
    """Grouped bars: AUC per model, BCE vs PWiseR, one panel per task."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(TASKS) + [t for t in INTENT_TASKS if any(t[0] in r for r in rows)]
    records = [r for r in comparison(rows, tasks) if r["dataset"] == dataset]
    model_names = sorted({r["model"] for r in records})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    x = np.arange(len(model_names))
    for ax, (key, label) in zip(axes[0], tasks):
        by_model = {r["model"]: r for r in records if r["metric"] == key}
        for offset, loss, color in ((-0.2, "bce", "#7f7f7f"), (0.2, "pwiser", "#1f77b4")):
            means = [by_model[m][loss][0] if m in by_model else np.nan for m in model_names]
            stds = [by_model[m][loss][1] if m in by_model else np.nan for m in model_names]
            ax.bar(x + offset, means, 0.4, yerr=stds, label=loss.upper() if loss == "bce"
                   else "PWiseR", color=color, capsize=3)
        finite = [v for r in by_model.values() for v in (r["bce"][0], r["pwiser"][0])
                  if math.isfinite(v)]
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.03))
        ax.set_xticks(x, model_names, rotation=30, ha="right")
        ax.set_title(label)
    axes[0][0].set_ylabel("AUC")
    axes[0][0].legend(loc="lower left")
    fig.suptitle(dataset)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=90)
    plt.close(fig)
    fileio.atomic_write(path, image.getvalue())
