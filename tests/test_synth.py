"""Synthetic data: the latent model's rates, determinism and the exact file formats."""
import csv
import hashlib
import json
import os

import numpy as np
import pytest

from pwiser_tf import cli
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import fastcsv
from pwiser_tf.pipelines.synth import MANIFEST_FILE, RATE_RANGES, synthesize
from pwiser_tf.pipelines.synth_formats import (AE_ITEM_CATEGORICAL, AE_ITEM_NUMERICAL,
                                               AE_USER_CATEGORICAL, AE_USER_NUMERICAL,
                                               CCP_AITM_HEADER, CCP_RECHUB_HEADER)

ROWS = 30_000


@pytest.fixture(scope="module")
def aliexpress(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ae"))
    return out, synthesize("aliexpress", ROWS, out, seed=5)


@pytest.fixture(scope="module")
def ali_ccp(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ccp"))
    return out, synthesize("ali-ccp", ROWS, out, seed=5)


def _digest(directory):
    digest = hashlib.sha256()
    for root, _, names in sorted(os.walk(directory)):
        for name in sorted(names):
            if name != MANIFEST_FILE:
                with open(os.path.join(root, name), "rb") as f:
                    digest.update(name.encode() + f.read())
    return digest.hexdigest()


def _rows(path, header=True):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return (rows[0], rows[1:]) if header else (None, rows)


# --- vectorised formatting --------------------------------------------------

def test_fastcsv_matches_python_formatting():
    rng = np.random.default_rng(0)
    ints = np.concatenate([rng.integers(0, 10 ** 12, 500), rng.integers(0, 100, 500), [0, 9, 10]])
    floats = np.concatenate([rng.random(500) * 30, [0.0, 1.0, 0.9999999, 2.5e-7]])
    unit = rng.random(300)
    text = fastcsv.csv_rows([fastcsv.int_cells(ints[:503])]).decode().split()
    assert text == [str(v) for v in ints[:503]]
    text = fastcsv.csv_rows([fastcsv.float_cells(floats, 6)]).decode().split()
    assert text == [f"{v:.6f}" for v in floats]
    text = fastcsv.csv_rows([fastcsv.unit_cells(unit, 6, levels=8192)]).decode().split()
    assert text == [f"{round(v * 8192) / 8192:.6f}" for v in unit]
    grid = fastcsv.int_cells(np.array([[1, 22], [333, 4]]))
    present = np.array([[True, False], [True, True]])
    assert fastcsv.text_rows([b"#", fastcsv.masked(grid, present)]) == b"#1\n#3334\n"
    assert fastcsv.csv_rows([grid, b"x"], sep=b";") == b"1;22;x\n333;4;x\n"
    assert fastcsv.csv_rows([grid[:0], b"x"]) == b""  # no rows, no text


# --- latent model -----------------------------------------------------------

@pytest.mark.parametrize("which", ["aliexpress", "ali_ccp"])
def test_rates_lie_in_the_documented_ranges(which, request):
    _, manifest = request.getfixturevalue(which)
    totals = {k: sum(split[k] for split in manifest["counts"].values())
              for k in manifest["counts"]["train"]}
    assert totals["rows"] == ROWS
    rates = {"ctr": totals["clicks"] / ROWS, "conversion": totals["conversions"] / ROWS,
             "intent": totals["intent"] / ROWS,
             "noise_click_share": totals["noise_clicks"] / totals["clicks"]}
    for name, (low, high) in RATE_RANGES.items():
        assert low <= rates[name] <= high, (name, rates[name])


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, aliexpress):
    out, manifest = aliexpress
    again = synthesize("aliexpress", ROWS, str(tmp_path / "again"), seed=5)
    assert _digest(out) == _digest(tmp_path / "again")
    assert again["counts"] == manifest["counts"]
    synthesize("aliexpress", ROWS, str(tmp_path / "other"), seed=6)
    assert _digest(out) != _digest(tmp_path / "other")


# --- AliExpress formats -----------------------------------------------------

def test_aliexpress_processed_csv(aliexpress):
    out, manifest = aliexpress
    assert manifest["convert_format"] == "aliexpress-csv"
    assert manifest["convert_inputs"] == [os.path.join(out, "processed", f"{s}.csv")
                                          for s in ("train", "test")]
    header, rows = _rows(os.path.join(out, "processed", "train.csv"))
    assert header == (["search_id"] + [f"categorical_{i}" for i in range(1, 17)]
                      + [f"numerical_{i}" for i in range(1, 64)]
                      + ["click", "conversion", "intent"])
    data = np.array(rows, dtype=np.float64)
    assert len(data) == manifest["counts"]["train"]["rows"]
    click, conversion, intent = data[:, -3], data[:, -2], data[:, -1]
    assert set(np.unique(data[:, -3:])) <= {0.0, 1.0}
    assert np.all(conversion <= intent) and np.all(intent <= click)  # conversion => click
    assert int(intent.sum()) == manifest["counts"]["train"]["intent"]
    numerical = data[:, 17:80]
    assert numerical.min() >= 0.0 and numerical.max() <= 1.0
    assert np.all(data[:, 1:17] == np.round(data[:, 1:17]))
    assert np.all(np.diff(data[:, 0]) >= 0)  # searches in order, rows of a search together


def test_aliexpress_raw_files_join_to_the_processed_rows(aliexpress):
    out, manifest = aliexpress
    for split in ("train", "test"):
        _, users = _rows(os.path.join(out, "raw", f"nl_user_{split}.csv"), header=False)
        _, items = _rows(os.path.join(out, "raw", f"nl_item_{split}.csv"), header=False)
        _, processed = _rows(os.path.join(out, "processed", f"{split}.csv"))
        assert {len(r) for r in users} == {33} and {len(r) for r in items} == {49}
        by_search = {row[0]: row for row in users}
        assert len(by_search) == len(users)  # one user row per search id
        assert len(items) == len(processed) == manifest["counts"][split]["rows"]
        for item, row in zip(items, processed):
            user = by_search[item[0]]  # user_1 = item_1 = search id
            user_col = {i + 1: v for i, v in enumerate(user)}
            item_col = {i + 1: v for i, v in enumerate(item)}
            categorical = ([user_col[c] for c in AE_USER_CATEGORICAL]
                           + [item_col[c] for c in AE_ITEM_CATEGORICAL])
            numerical = ([user_col[c] for c in AE_USER_NUMERICAL]
                         + [item_col[c] for c in AE_ITEM_NUMERICAL])
            assert row[0] == item[0]
            assert row[1:17] == categorical and row[17:80] == numerical
            label = {"0": ("0", "0"), "1": ("1", "0"), "2": ("1", "1")}[item[48]]
            assert tuple(row[80:82]) == label


# --- Ali-CCP formats --------------------------------------------------------

def _features(text):
    entries = [entry.split("\x02") for entry in text.split("\x01")]
    return [(field, *value.split("\x03")) for field, value in entries]


def test_ali_ccp_raw_files(ali_ccp):
    out, manifest = ali_ccp
    for split in ("train", "test"):
        common = {}
        with open(os.path.join(out, "raw", f"common_features_{split}.csv"), newline="") as f:
            for line in f:
                index, num, features = line.rstrip("\n").split(",", 2)
                parsed = _features(features)
                assert int(num) == len(parsed)
                fields = [p[0] for p in parsed]
                assert fields[0] == "101" and "109_14" in fields
                common[index] = parsed
        indexes, clicks, conversions = [], 0, 0
        with open(os.path.join(out, "raw", f"sample_skeleton_{split}.csv"), newline="") as f:
            for number, line in enumerate(f, 1):
                sample_id, click, conversion, index, num, features = line.rstrip("\n").split(",", 5)
                parsed = _features(features)
                assert int(sample_id) == number and int(num) == len(parsed)
                assert index in common and len(index) == 16
                fields = [p[0] for p in parsed]
                assert {"205", "206", "207", "210", "216", "301"} <= set(fields)
                assert all(float(p[2]) >= 0 for p in parsed)
                assert int(conversion) <= int(click)
                clicks += int(click)
                conversions += int(conversion)
                indexes.append(index)
        assert indexes == sorted(indexes)  # sorted by common_feature_index
        assert (len(indexes), clicks, conversions) == tuple(
            manifest["counts"][split][k] for k in ("rows", "clicks", "conversions"))


def test_ali_ccp_processed_files_agree(ali_ccp):
    out, manifest = ali_ccp
    processed = os.path.join(out, "processed")
    assert manifest["convert_format"] == "ali-ccp-csv"
    parts = {}
    for name in ("train", "val", "test"):
        header, rows = _rows(os.path.join(processed, "torch_rechub", f"ali_ccp_{name}.csv"))
        assert header == CCP_RECHUB_HEADER and {len(r) for r in rows} == {34}
        parts[name] = np.array(rows, dtype=np.float64)
    train = parts["train"]
    assert len(train) == manifest["counts"]["train"]["rows"]
    assert len(parts["val"]) + len(parts["test"]) == manifest["counts"]["test"]["rows"]
    assert abs(len(parts["val"]) - len(parts["test"])) < 0.2 * len(parts["test"])  # 2:1:1
    for data in parts.values():
        assert np.all(data[:, 1] <= data[:, -1]) and np.all(data[:, -1] <= data[:, 0])
        assert data[:, 2:25].min() >= 0 and np.all(data[:, 25:33] <= 1.0)

    header, aitm = _rows(os.path.join(processed, "aitm", "train.csv"))
    assert header == CCP_AITM_HEADER
    aitm = np.array(aitm, dtype=np.float64)
    rechub_cols = [CCP_RECHUB_HEADER.index(name) for name in CCP_AITM_HEADER]
    np.testing.assert_array_equal(aitm, train[:, rechub_cols])
    _, aitm_test = _rows(os.path.join(processed, "aitm", "test.csv"), header=False)
    assert aitm_test[0][0] in ("0", "1") and {len(r) for r in aitm_test} == {20}

    with open(os.path.join(processed, "esmm", "train.txt")) as f:
        lines = [line.rstrip("\n").split(",") for line in f]
    assert [int(l[0]) for l in lines] == list(range(1, len(lines) + 1))
    labels = np.array([[int(l[1]), int(l[2])] for l in lines])
    np.testing.assert_array_equal(labels, train[:, :2])
    tokens = [dict() for _ in range(3)]
    for line, token in zip(lines[:3], tokens):
        for item in line[3:]:
            field, feature = item.split(":")
            token.setdefault(field, []).append(int(feature))
    with open(os.path.join(out, "raw", "sample_skeleton_train.csv")) as f:
        skeleton = [_features(next(f).rstrip("\n").split(",", 5)[5]) for _ in range(3)]
    for token, raw in zip(tokens, skeleton):  # every value of the multi-valued fields kept
        assert token["210"] == [int(p[1]) for p in raw if p[0] == "210"]
        assert token["205"] == [int(p[1]) for p in raw if p[0] == "205"]


# --- robustness and the command line ----------------------------------------

def test_a_failed_run_leaves_no_complete_looking_file(tmp_path):
    out = tmp_path / "broken"
    (out / "processed").mkdir(parents=True)
    (out / "processed" / "esmm").write_text("a file where a folder must go")
    with pytest.raises(InputError, match="processed/esmm: cannot create the folder"):
        synthesize("ali-ccp", 5000, str(out), seed=0)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == ["processed/esmm"]


@pytest.mark.parametrize("dataset", ["aliexpress", "ali-ccp"])
def test_tiny_outputs_keep_every_file(tmp_path, dataset):
    # 3 rows: some files get no row (the Ali-CCP val/test halves), yet all exist
    manifest = synthesize(dataset, 3, str(tmp_path), seed=1)
    assert sum(split["rows"] for split in manifest["counts"].values()) == 3
    assert all(os.path.isfile(path) for path in manifest["files"].values())


def test_bad_arguments():
    with pytest.raises(InputError, match="dataset must be one of"):
        synthesize("criteo", 100, "/nonexistent")
    with pytest.raises(InputError, match="rows"):
        synthesize("aliexpress", 1, "/nonexistent")
    with pytest.raises(InputError, match="test_fraction"):
        synthesize("aliexpress", 100, "/nonexistent", test_fraction=1.0)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["synth", "--dataset", "aliexpress", "--rows", "3000", "--seed", "2",
                     "--country", "fr", "--output", str(out), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"]["train"]["rows"] + printed["counts"]["test"]["rows"] == 3000
    assert sorted(os.listdir(out / "raw")) == ["fr_item_test.csv", "fr_item_train.csv",
                                              "fr_user_test.csv", "fr_user_train.csv"]
    assert json.loads((out / MANIFEST_FILE).read_text())["seed"] == 2
    assert cli.main(["synth", "--dataset", "aliexpress", "--rows", "ten",
                     "--output", str(out)]) == 2
    assert "--rows" in capsys.readouterr().err


def _read(format, paths):
    from pwiser_tf.pipelines.readers import open_reader

    reader = open_reader(format, [str(p) for p in paths])
    return reader, list(reader)


def test_every_format_parses_with_the_readers(aliexpress, ali_ccp):
    ae, ae_manifest = aliexpress
    ccp, ccp_manifest = ali_ccp
    for split in ("train", "test"):
        want = {k: ae_manifest["counts"][split][k] for k in ("rows", "clicks", "conversions")}
        raw, raw_chunks = _read("aliexpress-raw", [f"{ae}/raw/nl_user_{split}.csv",
                                                   f"{ae}/raw/nl_item_{split}.csv"])
        csv_reader, csv_chunks = _read("aliexpress-csv", [f"{ae}/processed/{split}.csv"])
        for reader in (raw, csv_reader):
            assert {k: reader.counts.as_dict()[k] for k in want} == want
            assert reader.counts.malformed == 0
        for key in ("categorical", "numerical"):
            np.testing.assert_array_equal(np.concatenate([getattr(c, key) for c in raw_chunks]),
                                          np.concatenate([getattr(c, key) for c in csv_chunks]))
        intent = np.concatenate([c.labels["intent"] for c in csv_chunks])
        assert int(intent.sum()) == ae_manifest["counts"][split]["intent"]

        want = {k: ccp_manifest["counts"][split][k] for k in ("rows", "clicks", "conversions")}
        rechub = ["train"] if split == "train" else ["val", "test"]
        for format, paths in [
                ("ali-ccp-raw", [f"{ccp}/raw/sample_skeleton_{split}.csv",
                                 f"{ccp}/raw/common_features_{split}.csv"]),
                ("ali-ccp-csv", [f"{ccp}/processed/torch_rechub/ali_ccp_{name}.csv"
                                 for name in rechub]),
                ("aitm-csv", [f"{ccp}/processed/aitm/{split}.csv"]),
                ("esmm-text", [f"{ccp}/processed/esmm/{split}.txt"])]:
            reader, chunks = _read(format, paths)
            assert {k: reader.counts.as_dict()[k] for k in want} == want, format
            assert reader.counts.malformed == 0
        assert reader.layout.multi_valued  # ESMM keeps the multi-valued fields
