"""The paired comparison table and plots from result rows."""
import math
import os

import numpy as np
import pytest

from pwiser_tf import report


def rows():
    out = []
    for seed, (b, p) in enumerate([(0.70, 0.75), (0.71, 0.76), (0.69, 0.74)]):
        out.append({"dataset": "d", "model": "mmoe", "loss": "bce", "seed": seed,
                    "ctr_auc": b, "ctcvr_auc": 0.8, "cvr_auc": 0.6, "intent_auc": 0.6})
        out.append({"dataset": "d", "model": "mmoe", "loss": "pwiser", "seed": seed,
                    "ctr_auc": p, "ctcvr_auc": 0.8 + 0.001 * seed, "cvr_auc": 0.6,
                    "intent_auc": 0.7})
    return out


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764),
                                          (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_the_tables(df, expected):
    assert report.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_paired_statistics_pair_runs_by_seed():
    # Seed-to-seed spread is large, but every seed's treatment is 0.01 higher:
    # the paired interval is tight and excludes 0; unpaired spread would not.
    base = {0: 0.60, 1: 0.70, 2: 0.80, 3: 0.65}
    treat = {0: 0.611, 1: 0.709, 2: 0.810, 3: 0.660, 4: 0.9}  # seed 4 has no pair
    stats = report.paired(base, treat)
    deltas = np.array([0.011, 0.009, 0.010, 0.010])
    half = 3.1824 * deltas.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert stats["n"] == 4 and stats["wins"] == 4
    assert stats["mean"] == pytest.approx(0.010)
    assert stats["low"] == pytest.approx(0.010 - half, abs=1e-6)
    assert stats["high"] == pytest.approx(0.010 + half, abs=1e-6)
    assert 0 < stats["low"] < stats["high"]
    one = report.paired({0: 0.5}, {0: 0.4})
    assert one["wins"] == 0 and one["mean"] == pytest.approx(-0.1) and math.isnan(one["low"])


def test_comparison_gives_paired_delta_ci_and_wins():
    records = {r["metric"]: r for r in report.comparison(rows())}
    ctr = records["ctr_auc"]["paired"]
    assert abs(records["ctr_auc"]["delta"] - 0.05) < 1e-9
    assert ctr["wins"] == 3 and ctr["n"] == 3 and ctr["low"] == pytest.approx(0.05)
    ctcvr = records["ctcvr_auc"]["paired"]
    assert ctcvr["wins"] == 2  # seed 0 ties
    assert ctcvr["low"] < 0 < ctcvr["high"]  # +0.001 ± a spread of 0.001 over 3 seeds


def test_write_report_makes_table_and_plot(tmp_path):
    text = report.write_report(rows(), str(tmp_path))
    assert ("| d | mmoe | CTR AUC | 0.7000 ± 0.0100 | 0.7500 ± 0.0100 | +0.0500 | "
            "**[+0.0500, +0.0500]** | 3/3 |") in text
    assert "| BCE | PWiseR | Δ (paired mean) | 95% CI of Δ | PWiseR wins |" in text
    assert "pCTR vs intent AUC" in text
    png = tmp_path / "auc_d.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert os.path.isfile(tmp_path / "report.md")


def test_paired_columns_for_results_csv():
    out = report.paired_columns(rows())
    treated = [r for r in out if r["loss"] == "pwiser"]
    assert all("delta_ctr_auc" not in r for r in out if r["loss"] == "bce")
    assert [r["delta_ctcvr_auc"] for r in treated] == pytest.approx([0.0, 0.001, 0.002])
    assert all(r["ctr_auc_wins"] == 3 and r["pairs"] == 3 for r in treated)
    assert treated[0]["delta_ctcvr_auc_mean"] == pytest.approx(0.001)
    assert treated[0]["delta_ctcvr_auc_ci_low"] < 0 < treated[0]["delta_ctcvr_auc_ci_high"]


def test_variants_compare_with_a_named_baseline_arm():
    variants = []
    for seed in range(3):
        for variant, auc in (("base", 0.70), ("adaptive", 0.71 + 0.01 * seed),
                             ("fixed", 0.69)):
            variants.append({"dataset": "d", "model": "adaftr", "loss": "bce",
                             "variant": variant, "seed": seed, "ctcvr_auc": auc})
    records = [r for r in report.comparison(variants, baseline="bce/base")
               if r["metric"] == "ctcvr_auc"]
    assert {r["arm"]: r["paired"]["wins"] for r in records} == \
        {"bce/adaptive": 3, "bce/fixed": 0}
    table = report.markdown_table(records)
    assert "| d | adaftr: bce/adaptive vs bce/base | CTCVR AUC |" in table


def test_adaftr_temperature_histograms_are_plotted(tmp_path):
    variants = []
    for seed in range(2):
        for variant, counts in (("adaptive", [0, 5, 90, 5]), ("fixed", [0, 0, 100, 0])):
            variants.append({"dataset": "d", "model": "adaftr", "loss": "bce",
                             "variant": variant, "seed": seed, "ctcvr_auc": 0.7,
                             "temperature_histogram": {"edges": [0.05, 0.3, 0.5, 0.8, 1.0],
                                                       "counts": counts, "mean": 0.52}})
    text = report.write_report(variants, str(tmp_path), baseline="bce/fixed")
    assert "Mean temperature per arm and model: adaftr bce/adaptive 0.520;" in text
    assert (tmp_path / "temperatures_d.png").read_bytes()[:4] == b"\x89PNG"
