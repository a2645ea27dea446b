"""Turning result rows into the paired comparison (`report.md`) and plots.

Every seed trains each arm (BCE and PWiseR, or the variants of an ablation) from
the same initial weights and the same data order, so the runs of one seed form a
pair and the report compares them pairwise: per dataset, model and task it gives
each arm's mean ± std over seeds, the mean paired difference Δ = treatment −
baseline with its 95% confidence interval (Student t over the seeds' differences),
and the number of seeds where the treatment wins. A confidence interval that
excludes 0 is shown in bold.

An arm is a row's `loss`, followed by `/<variant>` when the row has a variant.
A row whose `status` is `failed` (a run that diverged) has no metrics: the
report lists it under "Failed runs" and no statistic counts it. The group AUCs
(`ctr_gauc`, `cvr_gauc`, `ctcvr_gauc`) get a table of their own where the runs
report them (data converted with its group column).
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
# group AUCs (`pwiser_tf.metrics.gauc`), where the data has a group column
GAUC_TASKS = (("ctr_gauc", "CTR GAUC"), ("cvr_gauc", "CVR GAUC"),
              ("ctcvr_gauc", "CTCVR GAUC"))
BASELINE, TREATMENT = "bce", "pwiser"
CONFIDENCE = 0.95
_NAMES = {"bce": "BCE", "pwiser": "PWiseR"}


def arm(row: dict) -> str:
    """The arm a result row belongs to: its loss, and its variant if it has one."""
    return row["loss"] + (f"/{row['variant']}" if row.get("variant") else "")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def summarize(values: Sequence[float]) -> Tuple[float, float, int]:
    """Mean, sample standard deviation and count of the finite values."""
    finite = [v for v in values if _finite(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return float(np.mean(finite)), std, len(finite)


def t_quantile(probability: float, df: int) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom.

    Bisection on the CDF, whose density is integrated numerically (Simpson's rule
    after the substitution x = tan(u), which maps the real line onto (-pi/2, pi/2)).
    Accurate to about 1e-6 for every df >= 1.
    """
    if df < 1:
        return float("nan")
    log_norm = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2)
                - 0.5 * math.log(df * math.pi))

    def cdf(x: float) -> float:
        u = np.linspace(0.0, math.atan(abs(x)), 4001)
        t = np.tan(u)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(t * t / df)) / np.cos(u) ** 2
        h = u[1] - u[0]
        area = h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum()
                        + 2 * density[2:-1:2].sum())
        return 0.5 + math.copysign(area, x)

    low, high = -1.0, 1.0
    while cdf(low) > probability:
        low *= 2
    while cdf(high) < probability:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < probability else (low, mid)
    return (low + high) / 2


def paired(baseline: Dict[int, float], treatment: Dict[int, float],
           confidence: float = CONFIDENCE) -> dict:
    """Paired statistics of `treatment - baseline` over the seeds both have.

    Returns `n` (pairs), `mean`, `low` and `high` (the two-sided t interval;
    NaN with fewer than 2 pairs), `wins` (seeds where the treatment is higher)
    and `deltas` (seed -> difference).
    """
    seeds = sorted(s for s in set(baseline) & set(treatment)
                   if _finite(baseline[s]) and _finite(treatment[s]))
    deltas = {s: treatment[s] - baseline[s] for s in seeds}
    values = np.array(list(deltas.values()), dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    if n > 1:
        half = (t_quantile(0.5 + confidence / 2, n - 1)
                * float(values.std(ddof=1)) / math.sqrt(n))
        low, high = mean - half, mean + half
    else:
        low = high = float("nan")
    return {"n": n, "mean": mean, "low": low, "high": high,
            "wins": int((values > 0).sum()), "deltas": deltas}


def comparison(rows: List[dict], tasks=TASKS, baseline: str = BASELINE) -> List[dict]:
    """One record per (dataset, model, treatment arm, task): each arm's statistics
    and the paired difference to the `baseline` arm of the same dataset and model."""
    groups: Dict[tuple, Dict[str, Dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        groups[(row["dataset"], row["model"])][arm(row)][int(row["seed"])] = row
    out = []
    for (dataset, model), arms in sorted(groups.items()):
        base_runs = arms.get(baseline, {})
        treatments = sorted(a for a in arms if a != baseline) or [None]
        for treatment in treatments:
            treat_runs = arms.get(treatment, {}) if treatment else {}
            for key, label in tasks:
                base = {s: r.get(key) for s, r in base_runs.items()}
                treat = {s: r.get(key) for s, r in treat_runs.items()}
                base_stat, treat_stat = summarize(base.values()), summarize(treat.values())
                if base_stat[2] == 0 and treat_stat[2] == 0 and not any(
                        map(_failed, list(base_runs.values()) + list(treat_runs.values()))):
                    continue
                stats = paired(base, treat)
                out.append({"dataset": dataset, "model": model, "task": label,
                            "metric": key, "baseline_arm": baseline,
                            "arm": treatment or TREATMENT, "baseline": base_stat,
                            "treatment": treat_stat, "paired": stats,
                            "delta": stats["mean"],
                            "failed": (sum(map(_failed, base_runs.values())),
                                       sum(map(_failed, treat_runs.values())))})
    return out


def paired_columns(rows: List[dict], tasks=TASKS + INTENT_TASKS + GAUC_TASKS,
                   baseline: str = BASELINE) -> List[dict]:
    """The result rows with the paired statistics added to each treatment run:
    `delta_<metric>` (this seed's difference to the baseline run of the same seed)
    and, for its dataset, model and arm, `delta_<metric>_mean`, `_ci_low`,
    `_ci_high` (95% t interval) and `<metric>_wins` (seeds the treatment won) with
    `pairs` (seeds compared)."""
    index = {(r["dataset"], r["model"], r["arm"], r["metric"]): r
             for r in comparison(rows, tasks, baseline)}
    out = []
    for row in rows:
        row = dict(row)
        if arm(row) != baseline and not _failed(row):
            for key, _ in tasks:
                record = index.get((row["dataset"], row["model"], arm(row), key))
                if record is None or not record["paired"]["n"]:
                    continue
                stats = record["paired"]
                row[f"delta_{key}"] = stats["deltas"].get(int(row["seed"]), float("nan"))
                row[f"delta_{key}_mean"] = stats["mean"]
                row[f"delta_{key}_ci_low"], row[f"delta_{key}_ci_high"] = \
                    stats["low"], stats["high"]
                row[f"{key}_wins"], row["pairs"] = stats["wins"], stats["n"]
        out.append(row)
    return out


def _failed(row: dict) -> bool:
    return row.get("status") == "failed"


def failed_section(rows: List[dict]) -> List[str]:
    """Markdown lines listing the failed runs (none when every run finished)."""
    failed = [r for r in rows if _failed(r)]
    if not failed:
        return []
    lines = ["## Failed runs", "",
             f"{len(failed)} of {len(rows)} runs failed; they have no metrics and no "
             "statistic below counts them (n is smaller, pairs are missing).", ""]
    for r in failed:
        lines.append(f"- {r['dataset']} / {r['model']} / {_name(arm(r))} / seed {r['seed']}: "
                     f"failed: {r.get('error', '')}")
    return lines + [""]


def _fmt(stat: Tuple[float, float, int], failed: int = 0) -> str:
    mean, std, n = stat
    text = "n/a" if n == 0 else f"{mean:.4f} ± {std:.4f}"
    return text + (f" ({failed} failed)" if failed else "")


def _ci(stats: dict) -> str:
    if not math.isfinite(stats["low"]):
        return "n/a"
    text = f"[{stats['low']:+.4f}, {stats['high']:+.4f}]"
    return f"**{text}**" if stats["low"] > 0 or stats["high"] < 0 else text


def _name(arm_name: str) -> str:
    return _NAMES.get(arm_name, arm_name)


def markdown_table(records: List[dict]) -> str:
    """The comparison as a markdown table: one row per record."""
    arms = sorted({r["arm"] for r in records})
    bases = sorted({r["baseline_arm"] for r in records})
    single = len(arms) == 1 and len(bases) == 1
    base_label, treat_label = (_name(bases[0]), _name(arms[0])) if single else \
        ("baseline", "variant")
    lines = [f"| dataset | model | task | {base_label} | {treat_label} | Δ (paired mean) | "
             f"95% CI of Δ | {treat_label} wins |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        stats = r["paired"]
        delta = "n/a" if not math.isfinite(stats["mean"]) else f"{stats['mean']:+.4f}"
        model = r["model"] if single else \
            f"{r['model']}: {_name(r['arm'])} vs {_name(r['baseline_arm'])}"
        failed = r.get("failed", (0, 0))
        lines.append(f"| {r['dataset']} | {model} | {r['task']} | "
                     f"{_fmt(r['baseline'], failed[0])} | "
                     f"{_fmt(r['treatment'], failed[1])} | {delta} | {_ci(stats)} | "
                     f"{stats['wins']}/{stats['n']} |")
    return "\n".join(lines)


def write_report(rows: List[dict], output_dir: str, title: str = "BCE vs PWiseR",
                 baseline: str = BASELINE) -> str:
    """Writes `report.md` and one PNG per dataset; returns the markdown text."""
    seeds = sorted({r["seed"] for r in rows})
    failed = sum(map(_failed, rows))
    text = [f"# {title}", "",
            f"{len(rows)} runs{f' ({failed} failed, listed below)' if failed else ''}; "
            f"seeds {seeds}. Each seed trains every arm from the same "
            "initial weights and data order. Per arm: mean ± std over seeds on the "
            f"evaluation split. Δ: mean over seeds of (arm − {_name(baseline)}) of the same "
            "seed; 95% CI: Student t over those differences (bold: it excludes 0); "
            "wins: seeds where the arm is higher.", "", *failed_section(rows),
            "## AUC", "", markdown_table(comparison(rows, baseline=baseline)), ""]
    if any("ctr_gauc" in r for r in rows):
        text += ["## GAUC", "",
                 "AUC within each group (a search of AliExpress, a user of Ali-CCP), "
                 "weighted by the group's exposures (CVR: its clicks), over the groups "
                 "that hold both classes (Zhou et al., 2018).", "",
                 markdown_table(comparison(rows, GAUC_TASKS, baseline)), ""]
    elif any("gauc_note" in r for r in rows):
        text += [f"No GAUC: {next(r['gauc_note'] for r in rows if 'gauc_note' in r)}.", ""]
    if any("intent_auc" in r for r in rows):
        text += ["## Against the clean intent label (synthetic data)", "",
                 "Where many clicks are noise, PWiseR should rank true intent and "
                 "converted clicks (S3) above non-converted clicks (S2) better in pCTR.", "",
                 markdown_table(comparison(rows, INTENT_TASKS, baseline)), ""]
    speed = summarize([r.get("train_examples_per_sec") for r in rows])
    if speed[2]:
        text += [f"Training throughput: {speed[0]:,.0f} ± {speed[1]:,.0f} examples/s.", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        name = f"auc_{dataset}.png"
        plot(rows, dataset, fileio.join(output_dir, name), baseline)
        text += [f"![{dataset}]({name})", ""]
        tempered = [r for r in rows if r["dataset"] == dataset
                    and isinstance(r.get("temperature_histogram"), dict)]
        if tempered:
            name = f"temperatures_{dataset}.png"
            means = plot_temperatures(tempered, fileio.join(output_dir, name))
            text += ["## AdaFTR's temperatures (validation split)", "",
                     "Mean temperature per arm and model: " + "; ".join(
                         f"{label} {mean:.3f}" for label, mean in means.items()) + ".", "",
                     f"![temperatures]({name})", ""]
    markdown = "\n".join(text)
    fileio.atomic_write(fileio.join(output_dir, "report.md"), markdown)
    return markdown


def plot(rows: List[dict], dataset: str, path: str, baseline: str = BASELINE) -> None:
    """Grouped bars: AUC per model, one bar per arm (std over seeds), one panel per task."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(TASKS) + [t for t in INTENT_TASKS if any(t[0] in r for r in rows)]
    rows = [r for r in rows if r["dataset"] == dataset]
    model_names = sorted({r["model"] for r in rows})
    arms = sorted({arm(r) for r in rows}, key=lambda a: (a != baseline, a))
    width = 0.8 / len(arms)
    colors = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    x = np.arange(len(model_names))
    for ax, (key, label) in zip(axes[0], tasks):
        finite = []
        for i, arm_name in enumerate(arms):
            stats = [summarize([r.get(key) for r in rows if r["model"] == m
                                and arm(r) == arm_name]) for m in model_names]
            means = [s[0] for s in stats]
            finite += [v for v in means if math.isfinite(v)]
            ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=[s[1] for s in stats],
                   label=_name(arm_name), color=colors[i % len(colors)], capsize=3)
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.03))
        ax.set_xticks(x, model_names, rotation=30, ha="right")
        ax.set_title(label)
    axes[0][0].set_ylabel("AUC")
    axes[0][0].legend(loc="lower left")
    fig.suptitle(dataset)
    fig.tight_layout()
    save_figure(fig, path)


def plot_temperatures(rows: List[dict], path: str) -> Dict[str, float]:
    """Histogram of AdaFTR's per-instance temperatures, counts summed over seeds, one
    line per model and arm; returns the mean temperature of each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: Dict[str, List[dict]] = defaultdict(list)
    for row in rows:
        groups[f"{row['model']} {_name(arm(row))}"].append(row["temperature_histogram"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    means = {}
    for label, hists in sorted(groups.items()):
        edges = np.asarray(hists[0]["edges"])
        counts = np.sum([h["counts"] for h in hists], axis=0)
        fractions = counts / max(counts.sum(), 1)
        ax.stairs(fractions, edges, label=label, linewidth=1.5)
        means[label] = float(np.mean([h["mean"] for h in hists]))
    ax.set_xlabel("temperature τ")
    ax.set_ylabel("fraction of instances")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return means


def save_figure(fig, path: str) -> None:
    """Writes a matplotlib figure as PNG, atomically, to any filesystem; closes it."""
    import matplotlib.pyplot as plt

    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=90)
    plt.close(fig)
    fileio.atomic_write(path, image.getvalue())
