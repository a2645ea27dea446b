"""Converter and shard checks under faults: locks, counts, empty input, outlying ids,
bad values and paths. Each refusal is one `InputError` line (exit 2 from the CLI)."""
import gzip
import os
import subprocess
import sys
import tempfile
import zipfile

import pytest
import tensorflow as tf

from conftest import SAMPLES
from pwiser_tf import cli
from pwiser_tf.errors import InputError
from pwiser_tf.evaluation import predict_split
from pwiser_tf.pipelines import make_dataset
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.dataset import ShardError, verify_split
from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata
from tests.text_files import read_lines, with_cell, write_lines

AE = os.path.join(SAMPLES, "aliexpress", "torch_rechub")
AE_TRAIN = os.path.join(AE, "aliexpress_train_sample.csv")
AE_TEST = os.path.join(AE, "aliexpress_test_sample.csv")
CCP = os.path.join(SAMPLES, "ali_ccp")
CSV_FORMATS = {  # format: (a sample, the column of an id in it)
    "aliexpress-csv": (AE_TEST, 1),
    "ali-ccp-csv": (os.path.join(CCP, "torch_rechub", "ali_ccp_val_sample.csv"), 2),
    "aitm-csv": (os.path.join(CCP, "paddlerec_aitm", "train", "train.csv"), 2),
}


def _cli(*args):
    return cli.main(["convert", "--no-progress", *args])


def _error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    return err


def _converted(tmp_path, **kwargs):
    out = str(tmp_path / "out")
    return out, convert("aliexpress-csv", [AE_TRAIN, AE_TEST], out, progress=False, **kwargs)


# --- one writer per output directory -------------------------------------------

@pytest.mark.slow  # starts a subprocess
def test_a_second_conversion_into_a_locked_directory_is_refused(tmp_path, capsys):
    out = str(tmp_path / "out")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pwiser_tf.fileio import exclusive_lock\n"
         f"with exclusive_lock({out!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _cli("--format", "aliexpress-csv", "--output", out, "--input", AE_TEST) == 2
        assert f"pid {holder.pid}" in _error(capsys)
        assert not os.path.exists(os.path.join(out, METADATA_FILE))
    finally:
        holder.kill()
        holder.wait()
    assert _cli("--format", "aliexpress-csv", "--output", out, "--input", AE_TEST) == 0
    assert verify_split(out, "test")  # metadata.json agrees with the shards


# --- record counts against metadata.json ---------------------------------------

def _cut(shard, keep):
    records = list(tf.data.TFRecordDataset(shard).as_numpy_iterator())[:keep]
    with tf.io.TFRecordWriter(shard) as writer:  # cut at a record boundary: still valid
        for record in records:
            writer.write(record)


def test_cut_or_emptied_shards_are_named_before_training_or_scoring(tmp_path):
    out, metadata = _converted(tmp_path, records_per_shard=40)
    assert metadata.splits["train"].records == [40, 40, 20]
    train = os.path.join(out, metadata.splits["train"].files[1])
    _cut(train, 25)
    with pytest.raises(ShardError, match=rf"{train}: holds 25 records, metadata.json lists 40"):
        make_dataset(out, 16, split="train")
    test = os.path.join(out, metadata.splits["test"].files[0])
    open(test, "wb").close()  # emptied
    with pytest.raises(ShardError, match=rf"{test}: holds 0 records"):
        predict_split(str(tmp_path / "no-model"), out, "test")  # checked before scoring


def test_metadata_without_per_shard_counts_checks_the_total(tmp_path):
    out, metadata = _converted(tmp_path, records_per_shard=40)
    data = metadata.to_dict()
    for split in data["splits"].values():
        del split["records"]  # as written by older versions
    Metadata.from_dict(data).save(out)
    _cut(os.path.join(out, metadata.splits["train"].files[0]), 39)
    with pytest.raises(ShardError, match="hold 99 records, metadata.json counts 100"):
        make_dataset(out, 16, split="train")
    assert sum(1 for _ in make_dataset(out, 16, split="test")) == 2  # intact split reads


# --- empty inputs and splits -----------------------------------------------------

def test_empty_inputs_and_empty_splits_are_refused(tmp_path):
    header = read_lines(AE_TEST)[0]
    open(tmp_path / "empty_train.csv", "wb").close()
    cases = {"empty_train.csv: empty file": [str(tmp_path / "empty_train.csv")],
             "header_train.csv: no data rows": [write_lines(tmp_path / "header_train.csv", [header])]}
    for reason, inputs in cases.items():
        with pytest.raises(InputError, match=reason):
            convert("aliexpress-csv", inputs, str(tmp_path / "o1"), progress=False)
    garbage = write_lines(tmp_path / "garbage_train.csv", [header, b"1,2,3", b"x"])
    with pytest.raises(InputError, match=r"garbage_train.csv: no rows left: --skip-malformed "
                                         r"skipped its 2 malformed"):
        convert("aliexpress-csv", [garbage], str(tmp_path / "o2"), skip_malformed=True,
                progress=False)
    with pytest.raises(InputError, match="split 'validation' would be empty: "
                                         "validation_fraction 0.0001"):
        convert("aliexpress-csv", [AE_TEST, AE_TRAIN], str(tmp_path / "o3"),
                validation_fraction=0.0001, progress=False)
    orphans = write_lines(tmp_path / "orphan_test.csv",
                     [header] + [line[:-3] + b"0,1" for line in read_lines(AE_TEST)[1:]])
    with pytest.raises(InputError, match="split 'test' would be empty: all its 20 rows are "
                                         "conversions without a click"):
        convert("aliexpress-csv", [orphans], str(tmp_path / "o4"), progress=False)
    for name in ("o1", "o2", "o3", "o4"):
        assert not os.path.exists(tmp_path / name / METADATA_FILE)


# --- outlying ids ------------------------------------------------------------------

def test_ids_that_would_make_huge_tables_are_refused_with_file_and_line(tmp_path):
    big = with_cell(AE_TEST, tmp_path / "big_test.csv", 7, 3, b"3000000000")
    with pytest.raises(InputError, match=r"big_test.csv:7: field 'categorical_3' has id "
                                         r"3,000,000,000.*over the limit.*--remap-ids"):
        convert("aliexpress-csv", [big], str(tmp_path / "o1"), progress=False)
    sparse = with_cell(AE_TEST, tmp_path / "sparse_test.csv", 9, 2, b"5000000")
    with pytest.raises(InputError, match=r"sparse_test.csv:9: field 'categorical_2' has id "
                                         r"5,000,000.*over 1000 times its \d+ distinct ids"):
        convert("aliexpress-csv", [AE_TRAIN, sparse], str(tmp_path / "o2"), progress=False)
    metadata = convert("aliexpress-csv", [AE_TRAIN, sparse], str(tmp_path / "o3"),
                       remap_ids=True, progress=False)  # the advice works
    assert metadata.schema.categorical[1].vocab_size < 200


# --- one line instead of a traceback ------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(CSV_FORMATS))
@pytest.mark.parametrize("value", [b"9223372036854775808", b"18446744073709551616", b"+7",
                                   b"1_000"])
def test_unparseable_ids_in_every_csv_format(tmp_path, capsys, fmt, value):
    source, column = CSV_FORMATS[fmt]
    bad = with_cell(source, tmp_path / "bad.csv", 5, column, value)
    assert _cli("--format", fmt, "--output", str(tmp_path / "o"), "--input", "test=" + bad) == 2
    assert "bad.csv:5: malformed line" in _error(capsys)
    assert _cli("--format", fmt, "--output", str(tmp_path / "o"), "--input", "test=" + bad,
                "--skip-malformed") == 0
    assert Metadata.load(str(tmp_path / "o")).extra["source_counts"]["test"]["malformed"] == 1


def test_huge_numbers_in_esmm_text_and_raw_ali_ccp(tmp_path, capsys):
    from test_readers import _ccp_files

    esmm = read_lines(os.path.join(CCP, "paddlerec_esmm", "test", "small.txt"))
    for head in (b"99999999999999999999999,0,0", b"1,99999999999999999999,0"):
        bad = write_lines(tmp_path / "test.txt", esmm[:2] + [head + b"," +
                                                        esmm[2].split(b",", 3)[3]] + esmm[3:])
        assert _cli("--format", "esmm-text", "--output", str(tmp_path / "e"), "--input",
                    bad) == 2
        assert "test.txt:3: malformed line" in _error(capsys)
    sk, cf = _ccp_files(tmp_path)
    with open(sk, "ab") as f:
        f.write(b"99999999999999999999,0,0,ua,0,\n")
    assert _cli("--format", "ali-ccp-raw", "--output", str(tmp_path / "r"), "--input",
                sk, cf) == 2
    assert "sample_skeleton_train.csv:5: malformed line" in _error(capsys)


def test_output_that_is_a_file_or_cannot_be_made(tmp_path, capsys):
    afile = write_lines(tmp_path / "afile", [b"x"])
    assert _cli("--format", "aliexpress-csv", "--output", afile, "--input", AE_TEST) == 2
    assert "is a file, not a directory" in _error(capsys)
    assert _cli("--format", "aliexpress-csv", "--output", os.path.join(afile, "sub"),
                "--input", AE_TEST) == 2
    assert "cannot create it" in _error(capsys)


# --- clear messages -----------------------------------------------------------------

def test_bom_gzip_and_directories(tmp_path):
    lines = read_lines(AE_TEST)
    bom = write_lines(tmp_path / "bom_test.csv", [b"\xef\xbb\xbf" + lines[0]] + lines[1:])
    plain = convert("aliexpress-csv", [AE_TEST], str(tmp_path / "o1"), progress=False)
    with_bom = convert("aliexpress-csv", [bom], str(tmp_path / "o2"), progress=False)
    assert with_bom.splits["test"].counts == plain.splits["test"].counts
    packed = str(tmp_path / "packed_test.csv.gz")  # read decompressed (test_gzip_inputs.py)
    with open(AE_TEST, "rb") as f, gzip.open(packed, "wb") as g:
        g.write(f.read())
    unpacked = convert("aliexpress-csv", [packed], str(tmp_path / "o3"), progress=False)
    assert unpacked.splits["test"].counts == plain.splits["test"].counts
    zipped = str(tmp_path / "zipped_test.csv")
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(AE_TEST, "test.csv")
    with pytest.raises(InputError, match=r"zipped_test.csv: is a zip archive; extract"):
        convert("aliexpress-csv", [zipped], str(tmp_path / "o5"), progress=False)
    os.makedirs(tmp_path / "folder_test")
    with pytest.raises(InputError, match=r"folder_test: is a directory, not a file"):
        convert("aliexpress-csv", [str(tmp_path / "folder_test")], str(tmp_path / "o4"),
                progress=False)


def test_the_same_file_in_two_splits_is_refused(tmp_path):
    with pytest.raises(InputError, match="given as both train and test"):
        convert("aliexpress-csv", ["train=" + AE_TEST, "test=" + AE_TEST.replace(AE, AE + "/.")],
                str(tmp_path / "o"), progress=False)
    assert not os.path.exists(tmp_path / "o")


def test_corrupt_metadata_and_overwrite_of_fewer_splits(tmp_path):
    out, metadata = _converted(tmp_path)
    with open(os.path.join(out, METADATA_FILE), "w") as f:
        f.write('{"schema_version": 1, "spl')
    with pytest.raises(InputError, match="metadata.json: unreadable metadata.*corrupt.*"
                                         "--overwrite"):
        convert("aliexpress-csv", [AE_TRAIN, AE_TEST], out, progress=False)
    again = convert("aliexpress-csv", [AE_TRAIN, AE_TEST], out, progress=False, overwrite=True)
    assert again.splits["train"].counts == metadata.splits["train"].counts
    only_train = convert("aliexpress-csv", [AE_TRAIN], out, progress=False, overwrite=True)
    assert sorted(only_train.splits) == ["train"]
    assert not [n for n in os.listdir(out) if n.startswith("test")]  # old test shards gone


def test_raw_join_index_stays_inside_the_output_and_is_removed(tmp_path, monkeypatch):
    from test_readers import _ccp_files
    from pwiser_tf.pipelines.readers.join import SideTable

    built = []
    build = SideTable._build_index
    monkeypatch.setattr(SideTable, "_build_index",
                        lambda self: (built.append(self.index_dir), build(self))[1])
    sk, cf = _ccp_files(tmp_path, common_order=(1, 0))  # unsorted: the index is built
    before = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("pwiser-index-")}
    out = str(tmp_path / "out")
    metadata = convert("ali-ccp-raw", [sk, cf], out, progress=False, cache_entries=1)
    assert metadata.splits["train"].counts["rows"] == 3
    after = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("pwiser-index-")}
    assert built == [os.path.join(out, ".index")]
    assert after == before and not os.path.exists(os.path.join(out, ".index"))
