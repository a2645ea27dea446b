"""The group column through the data (converter, records, `make_dataset`), the group
AUC (GAUC) against a per-group loop, and keyed predictions (`evaluate --predictions`)."""
import csv
import json
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import SAMPLES
from pwiser_tf import cli, config, evaluation, metrics, report, sweep
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import make_dataset, synthesize
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.schema import GROUP_KEY, METADATA_FILE, Field, Metadata, Schema

AE = os.path.join(SAMPLES, "aliexpress", "torch_rechub")
AE_TRAIN = os.path.join(AE, "aliexpress_train_sample.csv")
AE_TEST = os.path.join(AE, "aliexpress_test_sample.csv")
RECHUB = os.path.join(SAMPLES, "ali_ccp", "torch_rechub", "ali_ccp_{}_sample.csv")
AITM = os.path.join(SAMPLES, "ali_ccp", "paddlerec_aitm", "train", "train.csv")
ESMM = os.path.join(SAMPLES, "ali_ccp", "paddlerec_esmm", "test", "small.txt")


def _column(path, name):
    with open(path, newline="") as f:
        return [int(row[name]) for row in csv.DictReader(f)]


def _read(directory, split):
    """Features (but the padded multi-valued ones) and labels of a converted split,
    in file order."""
    features, labels = {}, {}
    for f, l in make_dataset(directory, 64, split=split):
        for k, v in f.items():
            if not k.startswith("mv_"):
                features.setdefault(k, []).append(v.numpy())
        for k, v in l.items():
            labels.setdefault(k, []).append(v.numpy())
    return ({k: np.concatenate(v) for k, v in features.items()},
            {k: np.concatenate(v) for k, v in labels.items()})


# --- the converter keeps the group column ------------------------------------------

def test_aliexpress_group_is_the_search_id(tmp_path):
    out = str(tmp_path / "ae")
    metadata = convert("aliexpress-csv", [AE_TRAIN, AE_TEST], out, progress=False,
                       records_per_shard=30)
    assert metadata.schema.group_source == "search_id"
    assert Metadata.load(out).schema.group_source == "search_id"
    assert metadata.extra["fingerprint"]["group"] == "search_id"
    for split, path in (("train", AE_TRAIN), ("test", AE_TEST)):
        features, labels = _read(out, split)
        assert labels[GROUP_KEY].dtype == np.int64
        assert labels[GROUP_KEY].tolist() == _column(path, "search_id")
        # the models' features are what they were: the group is no feature
        assert sorted(features) == ["categorical", "numerical"]
        assert features["categorical"].shape[1] == 16


@pytest.mark.parametrize("fmt, inputs, split", [
    ("ali-ccp-csv", ["train=" + RECHUB.format("train"), "validation=" + RECHUB.format("val"),
                     "test=" + RECHUB.format("test")], "validation"),
    ("aitm-csv", ["train=" + AITM], "train"),
    ("esmm-text", ["test=" + ESMM], "test"),
])
def test_ali_ccp_group_is_the_user_id(tmp_path, fmt, inputs, split):
    out = str(tmp_path / fmt)
    metadata = convert(fmt, inputs, out, progress=False,
                       conversion_without_click="as_click")
    assert metadata.schema.group_source == "101"
    user = [f.name for f in metadata.schema.categorical].index("101")
    features, labels = _read(out, split)
    np.testing.assert_array_equal(labels[GROUP_KEY], features["categorical"][:, user])
    if fmt == "ali-ccp-csv":
        assert labels[GROUP_KEY].tolist() == _column(RECHUB.format("val"), "101")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return {name: synthesize(name, 3000, str(root / name), seed=4)
            for name in ("aliexpress", "ali-ccp")}


def test_raw_formats_keep_the_group(synthetic, tmp_path):
    ae = synthetic["aliexpress"]["files"]
    raw = str(tmp_path / "ae_raw")
    convert("aliexpress-raw", [ae[f"raw/nl_{kind}_{split}.csv"] for kind in ("user", "item")
                               for split in ("train", "test")], raw, progress=False)
    processed = str(tmp_path / "ae_csv")
    convert("aliexpress-csv", synthetic["aliexpress"]["convert_inputs"], processed,
            progress=False)
    assert Metadata.load(raw).schema.group_source == "search_id"
    for split in ("train", "test"):
        groups = _read(raw, split)[1][GROUP_KEY]
        assert groups.tolist() == _column(ae[f"processed/{split}.csv"], "search_id")
        np.testing.assert_array_equal(groups, _read(processed, split)[1][GROUP_KEY])

    ccp = synthetic["ali-ccp"]["files"]
    raw = str(tmp_path / "ccp_raw")
    convert("ali-ccp-raw", [ccp["raw/sample_skeleton_train.csv"],
                            ccp["raw/common_features_train.csv"]], raw, progress=False)
    metadata = Metadata.load(raw)
    assert metadata.schema.group_source == "101"
    features, labels = _read(raw, "train")
    user = [f.name for f in metadata.schema.categorical].index("101")
    np.testing.assert_array_equal(labels[GROUP_KEY], features["categorical"][:, user])
    # field 101 is the first of the raw files' global id space: the same ids as the
    # torch-rechub CSV's (its label encoding is id + 1)
    assert labels[GROUP_KEY].tolist() == _column(
        ccp["processed/torch_rechub/ali_ccp_train.csv"], "101")


def test_synthetic_groups_make_gauc_meaningful(synthetic, tmp_path):
    """Searches of several exposures share a search id, users several searches; many
    groups hold both classes."""
    out = str(tmp_path / "ae")
    convert("aliexpress-csv", synthetic["aliexpress"]["convert_inputs"], out, progress=False)
    _, labels = _read(out, "train")
    groups, sizes = np.unique(labels[GROUP_KEY], return_counts=True)
    assert np.median(sizes) >= 5 and len(groups) >= 50
    clicks = np.bincount(np.unique(labels[GROUP_KEY], return_inverse=True)[1],
                         weights=labels["click"])
    assert ((clicks > 0) & (clicks < sizes)).sum() >= 10
    users = _column(synthetic["ali-ccp"]["convert_inputs"][0], "101")
    assert len(users) / len(set(users)) > 5  # several exposures per user


def test_a_conversion_without_the_group_column_is_refused_not_reused(tmp_path):
    """The group is part of the fingerprint: a conversion written before it was kept
    (simulated by its metadata) is not taken for this one; --overwrite replaces it."""
    out = str(tmp_path / "ae")
    convert("aliexpress-csv", [AE_TRAIN], out, progress=False)
    path = os.path.join(out, METADATA_FILE)
    with open(path) as f:
        data = json.load(f)
    del data["schema"]["group_source"]
    del data["extra"]["fingerprint"]["group"]
    with open(path, "w") as f:
        json.dump(data, f)
    assert Metadata.load(out).schema.group_source == ""  # the old one still loads
    with pytest.raises(InputError, match="finished conversion of other inputs or options"):
        convert("aliexpress-csv", [AE_TRAIN], out, progress=False)
    again = convert("aliexpress-csv", [AE_TRAIN], out, progress=False, overwrite=True)
    assert again.schema.group_source == "search_id"


def test_data_without_a_group_column_still_loads(tmp_path):
    from test_dataset import SCHEMA, _rows, write_converted

    rows = _rows(20)
    directory = str(tmp_path / "old")
    write_converted(directory, rows, 2)
    metadata = Metadata.load(directory)
    assert metadata.schema.group_source == "" and "group_source" not in \
        metadata.schema.to_dict()
    features, labels = _read(directory, "train")
    assert GROUP_KEY not in labels and sorted(labels) == sorted(SCHEMA.labels)
    result = metrics.ctr_cvr_metrics(
        labels, {k: np.linspace(0, 1, 20) for k in evaluation.OUTPUTS})
    assert not any(k in result for k in metrics.GAUC_METRICS)
    assert "no group column" in result["gauc_note"] and "convert the data again" in \
        result["gauc_note"]


def test_schema_group_round_trip_and_columns_layout():
    schema = Schema("aliexpress", categorical=(Field("c", 3),)).with_group("search_id")
    assert Schema.from_dict(schema.to_dict()) == schema
    assert schema.to_dict()["group_source"] == "search_id"
    assert GROUP_KEY in schema.feature_spec() and \
        GROUP_KEY not in schema.feature_spec(with_labels=False)  # serving needs no group
    columns = schema.with_layout("columns")
    assert columns.group_column == "search_id" and "search_id" in columns.feature_spec()
    assert Schema("x").group_column == ""


# --- GAUC against a per-group loop ---------------------------------------------------

def brute_auc(labels, scores):
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def brute_gauc(labels, scores, groups):
    """Zhou et al.'s definition, group by group."""
    total, weight = 0.0, 0
    for g in np.unique(groups):
        y, s = labels[groups == g], scores[groups == g]
        if 0 < y.sum() < y.size:
            total += y.size * brute_auc(y, s)
            weight += y.size
    return total / weight if weight else float("nan")


@pytest.mark.parametrize("seed", range(6))
def test_gauc_matches_a_loop_over_groups_with_ties_and_one_class_groups(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    groups = rng.integers(-50, 250, n) * 7919  # sparse ids, negatives too
    labels = (rng.random(n) < rng.choice([0.0, 0.05, 0.3, 1.0], 300)[
        np.unique(groups, return_inverse=True)[1] % 300]).astype(np.int64)
    scores = rng.integers(0, 12, n) / 12.0  # many ties, within and across groups
    assert 0 < labels.sum() < n
    one_class = [g for g in np.unique(groups) if labels[groups == g].min()
                 == labels[groups == g].max()]
    assert one_class  # some groups must be left out
    expected = brute_gauc(labels, scores, groups)
    assert metrics.gauc(labels, scores, groups) == pytest.approx(expected, abs=1e-12)
    # the row order does not matter
    order = rng.permutation(n)
    assert metrics.gauc(labels[order], scores[order], groups[order]) == \
        pytest.approx(expected, abs=1e-12)
    # a mask selects rows, as in cvr_gauc (clicked exposures)
    mask = rng.random(n) < 0.5
    assert metrics.gauc(labels, scores, groups, mask=mask) == pytest.approx(
        brute_gauc(labels[mask], scores[mask], groups[mask]), abs=1e-12)


def test_gauc_degenerate_cases():
    labels = np.array([1, 0, 1, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.5])
    # one group: the AUC
    assert metrics.gauc(labels, scores, np.zeros(6)) == metrics.auc(labels, scores)
    assert np.isnan(metrics.gauc(labels, scores, np.arange(6)))  # every group one class
    assert np.isnan(metrics.gauc(labels[:0], scores[:0], labels[:0]))
    with pytest.raises(ValueError, match="groups"):
        metrics.gauc(labels, scores, np.zeros(5))


def test_gauc_is_vectorised():
    """A million rows in 200,000 groups: one sort, no Python loop over groups."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    groups = rng.integers(0, 200_000, n)
    labels = (rng.random(n) < 0.1).astype(np.int64)
    scores = rng.random(n).astype(np.float32)
    start = time.perf_counter()
    value = metrics.gauc(labels, scores, groups)
    assert time.perf_counter() - start < 10.0
    assert 0.45 < value < 0.55  # random scores


def test_task_metrics_with_groups():
    labels = {"click": np.array([1, 0, 1, 0, 1, 0]), "conversion": np.array([1, 0, 0, 0, 1, 0]),
              GROUP_KEY: np.array([5, 5, 5, 9, 9, 9])}
    preds = {"pctr": np.array([0.9, 0.2, 0.1, 0.3, 0.6, 0.6]),
             "pcvr": np.array([0.5, 0.5, 0.4, 0.1, 0.2, 0.3]),
             "pctcvr": np.array([0.4, 0.1, 0.2, 0.1, 0.3, 0.3])}
    result = metrics.ctr_cvr_metrics(labels, preds)
    groups = labels[GROUP_KEY]
    assert result["ctr_gauc"] == pytest.approx(brute_gauc(labels["click"], preds["pctr"],
                                                          groups))
    assert result["ctcvr_gauc"] == pytest.approx(brute_gauc(
        labels["conversion"], preds["pctcvr"], groups))
    clicked = labels["click"] == 1
    # cvr: clicked exposures only; group 9 has one click, so only group 5 counts
    assert result["cvr_gauc"] == brute_auc(labels["conversion"][:3][clicked[:3]],
                                           preds["pcvr"][:3][clicked[:3]]) == 1.0
    assert "gauc_note" not in result


# --- keyed predictions --------------------------------------------------------------

def test_keyed_predictions_file(tmp_path):
    rng = np.random.default_rng(1)
    n = 500
    labels = {"click": rng.integers(0, 2, n), "conversion": np.zeros(n, np.int64),
              GROUP_KEY: rng.integers(0, 2 ** 62, n)}
    labels["conversion"] = labels["click"] * rng.integers(0, 2, n)
    predictions = {k: rng.random(n).astype(np.float32) for k in evaluation.OUTPUTS}
    path = str(tmp_path / "p.csv")
    evaluation.write_predictions(predictions, path, labels=labels)
    with open(path) as f:
        assert f.readline().strip() == "row,group,click,conversion,pctr,pcvr,pctcvr"
    keys, scores = evaluation.read_predictions(path)
    assert keys["row"].tolist() == list(range(n))
    for name in ("click", "conversion", GROUP_KEY):
        np.testing.assert_array_equal(keys[name], labels[name])  # int64 ids kept exactly
    for name in evaluation.OUTPUTS:  # 9 digits give every float32 back
        np.testing.assert_array_equal(scores[name].astype(np.float32), predictions[name])
    # without a group column: row and labels only
    del labels[GROUP_KEY]
    evaluation.write_predictions(predictions, path, labels=labels)
    with open(path) as f:
        assert f.readline().strip() == "row,click,conversion,pctr,pcvr,pctcvr"


# --- reports and the sweep's selection -----------------------------------------------

def test_report_and_sweep_show_and_select_gauc(tmp_path):
    rows = []
    for seed in range(3):
        for loss, shift in (("bce", 0.0), ("pwiser", 0.01 * (seed + 1) ** 2)):
            rows.append({"dataset": "d", "model": "mmoe", "loss": loss, "seed": seed,
                         "ctr_auc": 0.7, "cvr_auc": 0.6, "ctcvr_auc": 0.8,
                         "ctr_gauc": 0.6 + shift, "cvr_gauc": 0.55, "ctcvr_gauc": 0.7})
    markdown = report.write_report(rows, str(tmp_path))
    assert "## GAUC" in markdown and "| CTCVR GAUC |" in markdown
    assert "+0.0467" in markdown  # the paired mean of ctr_gauc
    paired = report.paired_columns(rows)
    assert paired[1]["delta_ctr_gauc"] == pytest.approx(0.01)
    old = [{k: v for k, v in r.items() if "gauc" not in k} | {"gauc_note": "no group"}
           for r in rows]
    assert "No GAUC: no group." in report.write_report(old, str(tmp_path))

    point = {"pwiser_weight": 0.1, "margin": 0.1, "pwiser_head": "ctr",
             "pwiser_scores": "probability", "normalization": "anchor"}
    points = [dict(r, **point, variant=f"v{r['seed'] % 2}")
              for r in rows if r["loss"] == "pwiser"]
    assert sweep.select(points, "ctr_gauc") == ("v0", pytest.approx(0.65))
    with pytest.raises(InputError, match="no run reported 'ctcvr_gauc'.*no group"):
        sweep.select([dict(r, variant="v") for r in old], "ctcvr_gauc")
    assert "| ctcvr_gauc | ctr_gauc | cvr_gauc |" in sweep.sweep_report(
        rows[::2], points, [], point, "ctr_gauc")
    for metric in ("ctr_gauc", "cvr_gauc", "ctcvr_gauc"):
        assert config.validate({"sweep": {"select": metric}}).sweep.select == metric
    with pytest.raises(InputError, match="select"):
        config.validate({"sweep": {"select": "ctcvr_logloss"}})  # lower is better


# --- end to end: metrics.json's GAUC from the keyed predictions ----------------------

TINY = ["--set", "model.embedding_dim=4", "--set", "train.batch_size=256",
        "--set", "train.patience=1"]


def _records_labels(directory, split):
    """The labels and groups of a split, parsed from its records directly."""
    metadata = Metadata.load(directory)
    spec = {name: tf.io.FixedLenFeature([], tf.int64)
            for name in ("click", "conversion", GROUP_KEY)}
    records = tf.data.TFRecordDataset(metadata.files(split, directory),
                                      compression_type=metadata.compression or None)
    parsed = [tf.io.parse_example(b, spec) for b in records.batch(4096)]
    return {name: np.concatenate([p[name].numpy() for p in parsed]) for name in spec}


@pytest.mark.slow
def test_metrics_gauc_equals_gauc_of_the_keyed_predictions(tmp_path, capsys):
    def run(*args):
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        assert code == 0, captured.err[-3000:]
        return captured.out

    written = synthesize("aliexpress", 6000, str(tmp_path / "synth"), seed=3)
    data = tmp_path / "data"
    run("convert", "--format", "aliexpress-csv", "--no-progress", "--input",
        *written["convert_inputs"], "--validation-fraction", "0.2",
        "--records-per-shard", "700", "--output", data)
    out = tmp_path / "run"
    run("train", "--data", data, "--model", "mmoe", "--loss", "bce", "--epochs", "1",
        "--seed", "0", "--output", out, "--no-progress", *TINY)
    trained = json.loads((out / "metrics.json").read_text())
    predictions = tmp_path / "pred.csv"
    evaluated = json.loads(run("evaluate", "--model-dir", out, "--data", data,
                               "--predictions", predictions))
    keys, scores = evaluation.read_predictions(str(predictions))

    # one row per record, in input order, with the records' labels and groups
    truth = _records_labels(str(data), "test")
    assert keys["row"].tolist() == list(range(len(truth["click"])))
    for name in ("click", "conversion", GROUP_KEY):
        np.testing.assert_array_equal(keys[name], truth[name])
    assert keys[GROUP_KEY].tolist() == _column(written["convert_inputs"][1], "search_id")

    clicked = keys["click"] == 1
    group = keys[GROUP_KEY]
    tasks = {"ctr_gauc": (keys["click"], scores["pctr"], None),
             "ctcvr_gauc": (keys["conversion"], scores["pctcvr"], None),
             "cvr_gauc": (keys["conversion"], scores["pcvr"], clicked)}
    for key, (labels, score, mask) in tasks.items():
        value = metrics.gauc(labels, score, group, mask=mask)
        keep = np.ones(len(group), bool) if mask is None else mask
        assert value == pytest.approx(brute_gauc(labels[keep], score[keep], group[keep]),
                                      abs=1e-12, nan_ok=True), key
        if key != "cvr_gauc":  # (the validation conversions may leave cvr_gauc NaN)
            assert np.isfinite(value), key
        for result in (trained, evaluated):
            assert result[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key

    # the same data as an older conversion without the group column: no GAUC, a note
    path = data / METADATA_FILE
    old = json.loads(path.read_text())
    del old["schema"]["group_source"]
    path.write_text(json.dumps(old))
    evaluated = json.loads(run("evaluate", "--model-dir", out, "--data", data,
                               "--predictions", predictions))
    assert "ctr_gauc" not in evaluated and "no group column" in evaluated["gauc_note"]
    assert evaluated["ctr_auc"] == pytest.approx(trained["ctr_auc"], abs=1e-12)
    with open(predictions) as f:
        assert f.readline().strip() == "row,click,conversion,pctr,pcvr,pctcvr"
