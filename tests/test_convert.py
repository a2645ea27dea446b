"""Converter: round trips through make_dataset, layout bytes, splits, vocab, atomicity, CLI."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import SAMPLES
from pwiser_tf import cli
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import make_dataset
from pwiser_tf.pipelines.convert import assign_splits, convert, infer_split, validation_mask
from pwiser_tf.pipelines.records import ExampleEncoder
from pwiser_tf.pipelines.schema import METADATA_FILE, Field, Metadata, Schema

AE = os.path.join(SAMPLES, "aliexpress", "torch_rechub")
AE_TRAIN = os.path.join(AE, "aliexpress_train_sample.csv")
AE_TEST = os.path.join(AE, "aliexpress_test_sample.csv")
ESMM = os.path.join(SAMPLES, "ali_ccp", "paddlerec_esmm", "test", "small.txt")


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def _listing(directory):
    """The files of an output directory, without the lock file of `convert`."""
    return sorted(n for n in os.listdir(directory) if n != ".lock")


def _batches(directory, split):
    features, labels = {}, {}
    for f, l in make_dataset(directory, 64, split=split):
        for k, v in f.items():
            features.setdefault(k, []).append(v.numpy())
        for k, v in l.items():
            labels.setdefault(k, []).append(v.numpy())
    return ({k: np.concatenate(v) for k, v in features.items()},
            {k: np.concatenate(v) for k, v in labels.items()})


@pytest.fixture(scope="module")
def aliexpress(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ae"))
    return out, convert("aliexpress-csv", [AE_TRAIN, AE_TEST], out, progress=False,
                        records_per_shard=30)


def test_round_trip_equals_the_csv_exactly(aliexpress):
    out, metadata = aliexpress
    assert [len(metadata.splits[s].files) for s in ("train", "test")] == [4, 1]
    assert metadata.splits["train"].files[0] == "train-00000-of-00004.tfrecord"
    for split, path in (("train", AE_TRAIN), ("test", AE_TEST)):
        rows = _csv_rows(path)
        features, labels = _batches(out, split)
        np.testing.assert_array_equal(features["categorical"],
                                      [[int(v) for v in r[1:17]] for r in rows])
        np.testing.assert_array_equal(features["numerical"],
                                      np.array([r[17:80] for r in rows], np.float32))
        np.testing.assert_array_equal(labels["click"], [float(r[80]) for r in rows])
        np.testing.assert_array_equal(labels["conversion"], [float(r[81]) for r in rows])
    assert metadata.splits["train"].counts == {"rows": 100, "clicks": 60, "conversions": 2}
    assert metadata.extra["source_counts"]["test"]["rows"] == 20


def test_vocab_sizes_are_max_plus_one_over_all_splits(aliexpress):
    _, metadata = aliexpress
    rows = _csv_rows(AE_TRAIN) + _csv_rows(AE_TEST)
    expect = [max(int(r[1 + i]) for r in rows) + 1 for i in range(16)]
    assert [f.vocab_size for f in metadata.schema.categorical] == expect
    assert Metadata.load(aliexpress[0]).to_dict() == metadata.to_dict()


def test_encoder_matches_protobuf_messages():
    schema = Schema("t", categorical=(Field("a", 5), Field("b", 3)), numerical=("x", "y"),
                    multi_valued=(Field("m", 9, has_values=True), Field("e", 3)))
    rng = np.random.default_rng(0)
    n = 40
    cat = np.concatenate([rng.integers(0, 2 ** 62, (n // 2, 2)),
                          rng.integers(0, 130, (n // 2, 2))])
    num = rng.standard_normal((n, 2)).astype(np.float32)
    lengths = rng.integers(0, 4, n)
    ids = rng.integers(0, 2 ** 40, lengths.sum())
    weights = rng.random(lengths.sum()).astype(np.float32)
    click = rng.integers(0, 2, n)
    data, offsets = ExampleEncoder(schema).encode({
        "categorical": cat, "numerical": num, "click": click, "conversion": click,
        "mv_m": (ids, lengths), "mv_m_values": (weights, lengths),
        "mv_e": (np.zeros(0, np.int64), np.zeros(n, np.int64))})
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(n):
        expected = tf.train.Example()
        feature = expected.features.feature
        feature["categorical"].int64_list.value.extend(cat[i].tolist())
        feature["numerical"].float_list.value.extend(num[i].tolist())
        feature["click"].int64_list.value.append(int(click[i]))
        feature["conversion"].int64_list.value.append(int(click[i]))
        feature["mv_m"].int64_list.value.extend(ids[starts[i]:starts[i + 1]].tolist())
        feature["mv_m_values"].float_list.value.extend(weights[starts[i]:starts[i + 1]].tolist())
        feature["mv_e"].int64_list.SetInParent()
        record = data[offsets[i]:offsets[i + 1]]
        assert tf.train.Example.FromString(record) == expected
        assert len(record) == expected.ByteSize()
    parsed = tf.io.parse_example([data[a:b] for a, b in zip(offsets[:-1], offsets[1:])],
                                 schema.feature_spec())
    np.testing.assert_array_equal(parsed["categorical"], cat)
    np.testing.assert_array_equal(parsed["mv_m"].flat_values, ids)
    np.testing.assert_array_equal(parsed["mv_m"].row_lengths(), lengths)


def test_multi_valued_round_trip_esmm(tmp_path):
    out = str(tmp_path / "esmm")
    metadata = convert("esmm-text", ["test=" + ESMM], out, progress=False, compression="GZIP")
    assert metadata.splits["test"].files == ["test-00000-of-00001.tfrecord.gz"]
    files = metadata.files("test", out)
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    parsed = tf.io.parse_example(records, metadata.schema.feature_spec())
    with open(ESMM) as f:
        lines = [line.rstrip("\n").split(",") for line in f]
    for i, tokens in enumerate(lines):
        ids = [int(t.split(":")[1]) for t in tokens[3:] if t.startswith("110_14:")]
        assert parsed["mv_110_14"][i].numpy().tolist() == ids
    features, _ = _batches(out, "test")
    assert features["mv_210"].shape == (10, 14)  # padded to the longest list


def test_ali_ccp_raw_round_trip_with_values(tmp_path):
    from test_readers import _ccp_files

    sk, cf = _ccp_files(tmp_path)
    out = str(tmp_path / "raw")
    assert cli.main(["convert", "--format", "ali-ccp-raw", "--no-progress", "--output", out,
                     "--input", sk, cf, "--conversion-without-click", "as_click"]) == 0
    metadata = Metadata.load(out)
    assert [f.key for f in metadata.schema.multi_valued] == [
        "mv_210", "mv_109_14", "mv_110_14", "mv_127_14", "mv_150_14"]
    features, labels = _batches(out, "train")
    assert features["mv_109_14"].tolist() == [[31, 32], [31, 32], [-1, -1], [-1, -1]]
    assert features["mv_109_14_values"].tolist() == [[2.5, 0.5], [2.5, 0.5], [0, 0], [0, 0]]
    assert features["mv_210"][0].tolist() == [5, 6, 9]
    assert labels["click"].tolist() == [0, 1, 1, 1]
    assert labels["conversion"].tolist() == [0, 1, 1, 0]
    assert metadata.schema.multi_valued[0].vocab_size == 10  # max id 9 + 1


def test_remapped_ids_are_compact_and_map_back(tmp_path):
    from test_readers import _ccp_files
    from pwiser_tf.pipelines.readers.idmap import IdMap

    sk, cf = _ccp_files(tmp_path)
    out = str(tmp_path / "remap")
    metadata = convert("ali-ccp-raw", [sk, cf], out, remap_ids=True, progress=False)
    assert metadata.extra["id_maps"] == "id_maps.npz"
    schema = metadata.schema
    sizes = {f.name: f.vocab_size for f in schema.categorical + schema.multi_valued}
    assert sizes["101"] == 3 and sizes["205"] == 3 and sizes["210"] == 4  # 0 + distinct ids
    features, _ = _batches(out, "train")
    tables = IdMap.load(out).tables
    col = [f.name for f in metadata.schema.categorical]
    assert tables["101"][features["categorical"][:, col.index("101")]].tolist() == [7, 7, 8]
    assert tables["205"][features["categorical"][:, col.index("205")]].tolist() == [100, 101, 0]
    assert features["mv_210"][0].tolist() == [1, 2, 3]
    assert _listing(out) == ["id_maps.npz", METADATA_FILE,
                                       "train-00000-of-00001.tfrecord"]


def test_validation_split_is_a_deterministic_hash_of_the_row_id(tmp_path):
    ids = np.arange(200_000, dtype=np.int64)
    held = validation_mask(ids, 0.1, seed=3)
    assert abs(held.mean() - 0.1) < 0.005
    np.testing.assert_array_equal(held, validation_mask(ids, 0.1, seed=3))
    assert (held != validation_mask(ids, 0.1, seed=4)).any()
    out = str(tmp_path / "v")
    metadata = convert("aliexpress-csv", [AE_TRAIN], out, validation_fraction=0.3,
                       progress=False)
    counts = {s: metadata.splits[s].counts["rows"] for s in ("train", "validation")}
    assert counts["train"] + counts["validation"] == 100 and counts["validation"] > 0
    search = np.array([int(r[0]) for r in _csv_rows(AE_TRAIN)])
    expected = validation_mask(search, 0.3, seed=0)
    assert counts["validation"] == expected.sum()
    features, _ = _batches(out, "validation")
    rows = _csv_rows(AE_TRAIN)
    np.testing.assert_array_equal(
        features["categorical"], [[int(v) for v in r[1:17]] for r, e in zip(rows, expected) if e])


def _bad_copy(path, directory, line=7):
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    lines[line - 1] = b"garbage"
    out = os.path.join(directory, os.path.basename(path))
    with open(out, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return out


def test_crash_leaves_no_readable_output_and_rerun_resumes(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    train = shutil.copy(AE_TRAIN, source / "train.csv")
    test = _bad_copy(AE_TEST, str(source))
    out = str(tmp_path / "out")
    with pytest.raises(InputError, match=r"aliexpress_test_sample.csv:7"):
        convert("aliexpress-csv", [train, "test=" + test], out, progress=False)
    left = _listing(out)
    assert METADATA_FILE not in left and not any(n.startswith("test") for n in left)
    train_shard = os.path.join(out, "train-00000-of-00001.tfrecord")
    stamp = os.stat(train_shard).st_mtime_ns
    shutil.copy(AE_TEST, test)  # the user fixes the file and reruns
    metadata = convert("aliexpress-csv", [train, "test=" + test], out, progress=False)
    assert os.stat(train_shard).st_mtime_ns == stamp  # the finished split was kept
    assert metadata.splits["test"].counts["rows"] == 20
    assert _listing(out) == [METADATA_FILE, "test-00000-of-00001.tfrecord",
                                       "train-00000-of-00001.tfrecord"]
    again = convert("aliexpress-csv", [train, "test=" + test], out, progress=False)
    assert again.to_dict() == metadata.to_dict()
    with pytest.raises(InputError, match="other inputs"):
        convert("aliexpress-csv", [train], out, progress=False)
    other = convert("aliexpress-csv", [train], out, progress=False, overwrite=True)
    assert sorted(other.splits) == ["train"]


def test_crash_inside_a_split_and_leftovers_of_a_killed_run(tmp_path):
    train = _bad_copy(AE_TRAIN, str(tmp_path), line=80)
    out = str(tmp_path / "out")
    with pytest.raises(InputError, match=r"aliexpress_train_sample.csv:80"):
        convert("aliexpress-csv", ["train=" + train], out, progress=False,
                records_per_shard=5, block_bytes=4096)
    assert not os.path.exists(out)  # the refused run removed the folder it made
    os.makedirs(out)
    for name in ("train-00000.tfrecord.partial", "train-00003-of-00009.tfrecord",
                 ".train.done.json"):  # what a killed run may leave
        with open(os.path.join(out, name), "w") as f:
            f.write("{}")
    shutil.copy(AE_TRAIN, train)
    metadata = convert("aliexpress-csv", ["train=" + train], out, progress=False,
                       records_per_shard=50)
    assert _listing(out) == [METADATA_FILE, "train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]
    assert metadata.splits["train"].counts["rows"] == 100


@pytest.mark.slow  # starts a subprocess
def test_killed_conversion_reruns_cleanly(tmp_path):
    """SIGKILL while shards are being written, then the same command again."""
    source = str(tmp_path / "train.csv")
    with open(AE_TRAIN, "rb") as f:
        header, *rows = f.read().splitlines(keepends=True)
    with open(source, "wb") as f:
        f.write(header + b"".join(rows) * 3000)  # 300,000 rows, about 140 MB
    out = str(tmp_path / "out")
    command = [sys.executable, "-m", "pwiser_tf.cli", "convert", "--format", "aliexpress-csv",
               "--no-progress", "--records-per-shard", "20000", "--input", source,
               "--output", out]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None and not (
            os.path.isdir(out) and any(n.endswith(".partial") for n in os.listdir(out))):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not os.path.exists(os.path.join(out, METADATA_FILE))
    assert not [n for n in os.listdir(out) if n.endswith(".tfrecord")]
    assert subprocess.run(command, stdout=subprocess.DEVNULL).returncode == 0
    metadata = Metadata.load(out)
    assert metadata.splits["train"].counts["rows"] == 300_000
    assert _listing(out) == sorted(metadata.splits["train"].files + [METADATA_FILE])


def test_truncated_shard_is_rejected(aliexpress, tmp_path):
    out = str(tmp_path / "t")
    shutil.copytree(aliexpress[0], out)
    shard = os.path.join(out, "test-00000-of-00001.tfrecord")
    size = os.path.getsize(shard)
    with open(shard, "r+b") as f:
        f.truncate(size - 7)
    with pytest.raises((tf.errors.DataLossError, InputError)):
        _batches(out, "test")


def test_split_names_and_overrides(tmp_path):
    assert infer_split("/d/ali_ccp_val_sample.csv") == "validation"
    assert infer_split("/d/test/small.txt") == "test"
    assert infer_split("/x/nl_item_train.csv") == "train"
    with pytest.raises(InputError, match="SPLIT=PATH"):
        infer_split("/d/data.csv")
    assert assign_splits(["test=/a/train.csv", "/a/train.csv"]) == {
        "test": ["/a/train.csv"], "train": ["/a/train.csv"]}
    with open(AE_TEST) as f:
        header, *rows = f.read().splitlines()
    with_intent = tmp_path / "train.csv"
    with_intent.write_text("\n".join([header + ",intent"] + [r + ",0" for r in rows]) + "\n")
    with pytest.raises(InputError, match="different columns"):
        convert("aliexpress-csv", [str(with_intent), AE_TEST], str(tmp_path / "o"),
                progress=False)
    assert not os.path.exists(tmp_path / "o")  # refused before writing anything
    with pytest.raises(InputError, match="choose one"):
        convert("aliexpress-csv", ["validation=" + AE_TEST, AE_TRAIN], str(tmp_path),
                validation_fraction=0.1, progress=False)


def test_cli_convert(tmp_path, capsys):
    out = str(tmp_path / "cli")
    code = cli.main(["convert", "--format", "aitm-csv", "--no-progress", "--output", out,
                     "--input", os.path.join(SAMPLES, "ali_ccp", "paddlerec_aitm", "train",
                                             "train.csv"),
                     os.path.join(SAMPLES, "ali_ccp", "paddlerec_aitm", "test", "test.csv")])
    assert code == 0
    metadata = Metadata.load(out)
    assert metadata.splits["train"].counts["rows"] == 46
    assert metadata.extra["source_counts"]["test"]["conversions_without_click"] == 3
    assert '"conversions_without_click": 2' in capsys.readouterr().out
    bad = _bad_copy(AE_TEST, str(tmp_path))
    code = cli.main(["convert", "--format", "aliexpress-csv", "--no-progress",
                     "--output", str(tmp_path / "bad"), "--input", "test=" + bad])
    assert code == 2 and "aliexpress_test_sample.csv:7" in capsys.readouterr().err
