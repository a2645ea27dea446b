"""`examples/tfx_pipeline.py` builds a TFX pipeline. Without TFX this module is a
skip that says so (TFX's ml-metadata wheels need glibc >= 2.39); everything that
pipeline runs of pwiser-tf (run_fn, the serving signatures, its Evaluator
configuration) is tested without TFX."""
import pytest

from tests.example_module import load_example

pytest.importorskip(
    "tfx", reason="needs TFX: pip install 'pwiser-tf[tfx]' (its ml-metadata wheels "
                  "need glibc >= 2.39)")


def test_csv_and_converted_pipelines_have_every_component(tmp_path):
    example = load_example("tfx_pipeline")
    for kwargs in ({"data": str(tmp_path), "dataset": "ali-ccp"},
                   {"converted": str(tmp_path)}):
        pipeline = example.create_pipeline(str(tmp_path / "root"), str(tmp_path / "serving"),
                                           str(tmp_path / "m.db"), **kwargs)
        ids = [component.id for component in pipeline.components]
        assert ids[0] in ("CsvExampleGen", "ImportExampleGen")
        for name in ("StatisticsGen", "SchemaGen", "Trainer", "Evaluator", "Pusher"):
            assert name in ids
