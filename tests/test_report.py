"""The comparison table and plots from result rows."""
import os

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


def test_comparison_flags_only_gains_beyond_the_seed_spread():
    records = {r["metric"]: r for r in report.comparison(rows())}
    assert abs(records["ctr_auc"]["delta"] - 0.05) < 1e-9
    assert records["ctr_auc"]["beyond_spread"]
    assert not records["ctcvr_auc"]["beyond_spread"]  # +0.001 with a 0.001 spread


def test_write_report_makes_table_and_plot(tmp_path):
    text = report.write_report(rows(), str(tmp_path))
    assert "| d | mmoe | CTR AUC | 0.7000 ± 0.0100 | 0.7500 ± 0.0100 | +0.0500 | **yes** |" in text
    assert "pCTR vs intent AUC" in text
    png = tmp_path / "auc_d.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert os.path.isfile(tmp_path / "report.md")
