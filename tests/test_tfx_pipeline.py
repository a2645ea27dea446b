"""What `examples/tfx_pipeline.py` hands TFX, checked without TFX: the Evaluator's
configuration and the Trainer's custom_config (which run_fn reads)."""
import os

import pytest

from tests.example_module import load_example


@pytest.fixture(scope="module")
def example():
    return load_example("tfx_pipeline")


def test_eval_config_reports_ctr_and_ctcvr_auc_per_slice(example):
    config = example.eval_config("purchase", slice_columns=["301"], min_ctcvr_auc=0.6)
    spec, = config["model_specs"]
    assert spec["signature_name"] == "serving_default"
    assert spec["label_keys"] == {"pctr": "click", "pctcvr": "purchase"}
    assert config["slicing_specs"] == [{}, {"feature_keys": ["301"]}]
    by_output = {m["output_names"][0]: m["metrics"] for m in config["metrics_specs"]}
    assert sorted(by_output) == ["pctcvr", "pctr"]
    assert [m["class_name"] for m in by_output["pctr"]] == ["AUC", "ExampleCount"]
    assert "threshold" not in by_output["pctr"][0]
    threshold = by_output["pctcvr"][0]["threshold"]
    assert threshold["value_threshold"]["lower_bound"]["value"] == 0.6


def test_trainer_config_names_the_schema_source(example, tmp_path):
    assert example.trainer_config("aliexpress", None)["dataset"] == "aliexpress"
    config = example.trainer_config(None, str(tmp_path), model="esmm")
    assert config["metadata"] == os.path.join(str(tmp_path), "metadata.json")
    assert config["model"] == "esmm" and "dataset" not in config
    with pytest.raises(ValueError):
        example.trainer_config("aliexpress", str(tmp_path))
