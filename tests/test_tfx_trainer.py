"""The TFX Trainer module, driven the way TFX's generic executor drives it.

TFX does not install here (its ml-metadata wheels need a newer glibc); the
executor hands `run_fn` an object with the attributes of `tfx.components.FnArgs`,
which is all this module reads, so the test builds that object itself.
"""
import glob
import os
import types

import pytest
import tensorflow as tf

from pwiser_tf import tfx_trainer
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import synthesize
from pwiser_tf.pipelines.convert import convert


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfx")
    written = synthesize("aliexpress", 4000, str(root / "synth"), seed=2, progress=False)
    convert(written["convert_format"], written["convert_inputs"], str(root / "data"),
            validation_fraction=0.2, compression="GZIP", progress=False)
    return root / "data"


def fn_args(data, serving_dir, **custom):
    return types.SimpleNamespace(
        train_files=[str(data / "train-*")], eval_files=[str(data / "validation-*")],
        train_steps=6, eval_steps=2, serving_model_dir=str(serving_dir),
        custom_config={"metadata": str(data / "metadata.json"), "model": "shared-bottom",
                       "loss": "pwiser", "train": {"batch_size": 256},
                       "model_config": {"embedding_dim": 4, "bottom_units": [16],
                                        "tower_units": [8]}, **custom})


def test_run_fn_trains_evaluates_and_exports_a_serving_model(converted, tmp_path):
    serving = tmp_path / "serving"
    result = tfx_trainer.run_fn(fn_args(converted, serving))
    assert {"ctr_auc", "ctcvr_auc", "cvr_auc"} <= set(result)
    serve = tf.saved_model.load(str(serving)).signatures["serving_default"]
    shard = sorted(glob.glob(str(converted / "test-*")))[0]
    records = next(iter(tf.data.TFRecordDataset(shard, compression_type="GZIP").batch(32)))
    out = serve(examples=records)
    assert out["pctr"].shape == [32]
    for name in ("pctr", "pcvr", "pctcvr"):
        assert out[name].shape == [32]
        assert tf.reduce_all((out[name] >= 0) & (out[name] <= 1))


def test_run_fn_requires_the_metadata(converted, tmp_path):
    args = fn_args(converted, tmp_path / "s")
    del args.custom_config["metadata"]
    with pytest.raises(InputError, match="metadata"):
        tfx_trainer.run_fn(args)
    assert not os.path.exists(tmp_path / "s")
