"""The sweep: its axis-by-axis design, its selection and its report, and a tiny real run."""
import csv

import pytest

from pwiser_tf import config as config_lib
from pwiser_tf import sweep
from pwiser_tf.errors import InputError
from tests.models_data import write_converted


def point(**changes):
    return dict(config_lib.SweepCentre(pwiser_weight=1.0).model_dump(), **changes)


def test_design_reads_centre_and_ordered_axes():
    centre, axes = sweep.design({"sweep": {"centre": {"margin": 0.2},
                                           "axes": {"pwiser_weight": [0.1, 1],
                                                    "normalization": ["anchor", "pair"]}}})
    assert centre["margin"] == 0.2 and centre["pwiser_head"] == "ctr"
    # The axes in the order given (not the schema's), the weights as floats.
    assert axes == [("pwiser_weight", [0.1, 1.0]), ("normalization", ["anchor", "pair"])]
    with pytest.raises(InputError, match="unknown axis 'temperature'"):
        sweep.design({"sweep": {"axes": {"temperature": [1]}}})
    with pytest.raises(InputError, match="sweep.axes"):
        sweep.design({"sweep": {}})


def test_select_takes_the_best_mean_over_seeds():
    rows = [{"variant": "a", "ctcvr_auc": 0.80}, {"variant": "a", "ctcvr_auc": 0.70},
            {"variant": "b", "ctcvr_auc": 0.76}, {"variant": "b", "ctcvr_auc": 0.76}]
    assert sweep.select(rows, "ctcvr_auc") == ("b", pytest.approx(0.76))


def test_report_flags_a_choice_at_the_edge_and_gives_paired_deltas():
    baseline = [{"variant": "", "seed": s, "ctcvr_auc": 0.80 + 0.01 * s} for s in range(3)]
    rows = []
    for weight, gain in ((0.01, 0.001), (0.1, 0.004), (1.0, -0.01)):
        p = point(pwiser_weight=weight)
        rows += [dict(p, variant=sweep.variant(p), seed=s, ctcvr_auc=0.80 + 0.01 * s + gain)
                 for s in range(3)]
    stage = {"axis": "pwiser_weight", "values": [0.01, 0.1, 1.0], "chosen": 0.1}
    text = sweep.sweep_report(baseline, rows, [stage], point(pwiser_weight=0.1), "ctcvr_auc")
    assert "- pwiser_weight: swept 0.01, 0.1, 1; chosen 0.1\n" in text
    assert "| 0.1 | 0.1 | ctr | probability | anchor | 0.8140 ± 0.0100 | +0.0040 " in text
    assert "3/3 |" in text and "0/3 |" in text
    edge = sweep.sweep_report(baseline, rows, [dict(stage, chosen=0.01)],
                              point(pwiser_weight=0.01), "ctcvr_auc")
    assert "chosen 0.01 (**at the edge of the axis**" in edge


def test_a_small_sweep_runs_axis_by_axis(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_converted(str(data), {"train": 600, "validation": 300})
    config = {
        "datasets": {"toy": {"data": str(data)}}, "seeds": [0],
        "sweep": {"model": "shared-bottom", "select": "ctcvr_auc",
                  "axes": {"margin": [0.1], "pwiser_weight": [0.03, 1.0]}},
        "train": {"epochs": 1, "batch_size": 100, "learning_rate": 3e-3},
        "model": {"embedding_dim": 4, "tower_units": [8], "bottom_units": [8]},
    }
    markdown = sweep.run_sweep(config, str(tmp_path / "out"), progress=False)
    runs = sorted(p.parent.parent.name
                  for p in (tmp_path / "out" / "runs").rglob("metrics.json"))
    # BCE, and the margin point, which is also the lambda axis' point at the centre's
    # lambda (PWiseR's default, 0.03): 3 runs.
    assert runs == ["bce", "w0.03_m0.1_ctr_probability_anchor",
                    "w1_m0.1_ctr_probability_anchor"]
    assert "Chosen: pwiser_weight=" in markdown and "| BCE |" in markdown
    with open(tmp_path / "out" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["loss"] for r in rows) == ["bce", "pwiser", "pwiser"]
    assert all(r["delta_ctcvr_auc"] for r in rows if r["loss"] == "pwiser")
    png = tmp_path / "out" / sweep.FIGURE
    assert png.read_bytes()[:4] == b"\x89PNG"
