"""Serving what clients have: raw ids through the exported id maps of `--remap-ids`."""
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pwiser_tf import training
from pwiser_tf.pipelines import synthesize
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.dataset import Parser
from pwiser_tf.pipelines.readers.idmap import IdMap
from pwiser_tf.pipelines.schema import Metadata

pytestmark = pytest.mark.slow  # trains a model on remapped ids


def _records(directory, split="train"):
    files = sorted(glob.glob(os.path.join(directory, f"{split}-*")))
    return next(iter(tf.data.TFRecordDataset(files).batch(100_000)))


@pytest.fixture(scope="module")
def ali_ccp(tmp_path_factory):
    """The same raw Ali-CCP rows converted with and without --remap-ids, and a model
    `train_run` trained on the remapped data (its export carries the id maps; its
    evaluation scores the converted records through `serving_remapped`)."""
    root = tmp_path_factory.mktemp("serving")
    written = synthesize("ali-ccp", 600, str(root / "synth"), seed=3, progress=False)
    raw = [written["files"][f"raw/{name}_train.csv"]
           for name in ("sample_skeleton", "common_features")]
    convert("ali-ccp-raw", raw, str(root / "remapped"), remap_ids=True,
            validation_fraction=0.3, progress=False)
    convert("ali-ccp-raw", raw, str(root / "raw"), validation_fraction=0.3, progress=False)
    result = training.train_run(
        str(root / "remapped"), str(root / "run"), "shared-bottom", "pwiser", 0,
        {"model": {"embedding_dim": 4, "tower_units": [4]},
         "model_options": {"shared-bottom": {"bottom_units": [8]}},
         "train": {"epochs": 1, "batch_size": 128, "patience": 1}}, progress=False)
    assert 0 < result["ctr_auc"] < 1  # scored through serving_remapped
    schema = Metadata.load(str(root / "remapped")).schema
    tables = IdMap.load(str(root / "remapped")).tables
    shutil.copytree(root / "run" / "saved_model", root / "model")
    return root, schema, tables


def test_raw_ids_score_like_the_remapped_records(ali_ccp):
    root, _, _ = ali_ccp
    loaded = tf.saved_model.load(str(root / "model"))
    raw_records, remapped_records = _records(str(root / "raw")), _records(str(root / "remapped"))
    assert (raw_records != remapped_records).numpy().all()  # the ids differ in every row
    raw = loaded.signatures["serving_default"](examples=raw_records)
    remapped = loaded.signatures["serving_remapped"](examples=remapped_records)
    rows = Metadata.load(str(root / "raw")).splits["train"].counts["rows"]
    assert raw["pctr"].shape == [rows] and rows > 100
    for name in ("pctr", "pcvr", "pctcvr"):
        np.testing.assert_array_equal(raw[name].numpy(), remapped[name].numpy())
    assert int(tf.reduce_sum(raw["unseen_ids"])) == 0
    assert int(loaded.unseen_ids.numpy()) == 0


def test_unseen_raw_ids_go_to_the_oov_bucket_and_are_counted(ali_ccp):
    root, schema, tables = ali_ccp
    loaded = tf.saved_model.load(str(root / "model"))
    raw = tf.train.Example.FromString(_records(str(root / "raw"))[0].numpy())
    remapped = tf.train.Example.FromString(_records(str(root / "remapped"))[0].numpy())
    unseen = int(max(t.max() for t in tables.values())) + 12345
    raw.features.feature["categorical"].int64_list.value[0] = unseen
    field = schema.categorical[0]
    remapped.features.feature["categorical"].int64_list.value[0] = field.vocab_size  # OOV
    name = schema.multi_valued[0].key
    raw.features.feature[name].int64_list.value.append(unseen)
    remapped.features.feature[name].int64_list.value.append(schema.multi_valued[0].vocab_size)
    values = schema.multi_valued[0].values_key
    if schema.multi_valued[0].has_values:
        raw.features.feature[values].float_list.value.append(1.0)
        remapped.features.feature[values].float_list.value.append(1.0)
    out = loaded.signatures["serving_default"](examples=tf.constant([raw.SerializeToString()]))
    want = loaded.signatures["serving_remapped"](
        examples=tf.constant([remapped.SerializeToString()]))
    assert out["unseen_ids"].numpy().tolist() == [2]
    assert int(loaded.unseen_ids.numpy()) == 2
    for key in ("pctr", "pcvr", "pctcvr"):
        np.testing.assert_array_equal(out[key].numpy(), want[key].numpy())


def test_the_rest_request_of_docs_serving_holds_records_both_signatures_parse():
    """docs/serving.md builds TensorFlow Serving bodies; their b64 records parse as the
    packed and the per-column AliExpress layouts (what the two signatures parse)."""
    import base64
    import re

    from pwiser_tf.pipelines.readers.aliexpress import CATEGORICAL, NUMERICAL
    from pwiser_tf.pipelines.schema import Field, Schema

    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "docs", "serving.md"), encoding="utf-8").read()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, "docs/serving.md", "exec"), scope)
    schema = Schema("aliexpress", categorical=tuple(Field(n, 10) for n in CATEGORICAL),
                    numerical=NUMERICAL)
    for body, layout, rows in ((scope["body"], "packed", 2),
                               (scope["body_columns"], "columns", 1)):
        records = [base64.b64decode(item["examples"]["b64"]) for item in body["instances"]]
        features = Parser(schema.with_layout(layout), with_labels=False)(
            tf.constant(records))[0]
        assert features["categorical"].shape == [rows, 16]
        assert features["numerical"].shape == [rows, 63]
        assert int(features["categorical"][0, 0]) == 3
