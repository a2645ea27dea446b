"""Nothing lost, nothing silently wrong, on the data side: `convert --overwrite` keeps
the finished conversion until its replacement has finished, missing values of a valued
multi-valued field and emptied shards read through a file pattern are refused, bad
`--records-per-shard` values are refused, bad cells name their column, `synth` is
quiet, and a refused conversion leaves no folder behind that it created."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import SAMPLES
import pwiser_tf.pipelines.conversion.output as output_lib
from pwiser_tf import cli
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import make_dataset
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.dataset import ShardError, verify_split
from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata
from tests.text_files import read_lines, with_cell, write_lines

AE = os.path.join(SAMPLES, "aliexpress", "torch_rechub")
AE_TRAIN = os.path.join(AE, "aliexpress_train_sample.csv")
AE_TEST = os.path.join(AE, "aliexpress_test_sample.csv")
CCP_CSV = os.path.join(SAMPLES, "ali_ccp", "torch_rechub", "ali_ccp_val_sample.csv")
ESMM = os.path.join(SAMPLES, "ali_ccp", "paddlerec_esmm", "test", "small.txt")


def _files(directory):
    """Every file under `directory` (but the lock) with its bytes."""
    out = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            if name != ".lock":
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, directory)] = f.read()
    return out


def _rows(directory, split):
    return sum(int(labels["click"].shape[0])
               for _, labels in make_dataset(directory, 64, split=split))


def _error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# 1. `convert --overwrite` replaces the finished conversion only when the new one has finished.

def test_a_failed_overwrite_keeps_the_finished_conversion(tmp_path):
    out = str(tmp_path / "out")
    old = convert("aliexpress-csv", [AE_TRAIN, AE_TEST], out, progress=False)
    before = _files(out)
    bad = with_cell(AE_TEST, tmp_path / "bad_test.csv", 7, 0, b"garbage")
    with pytest.raises(InputError, match=r"bad_test.csv:7"):
        convert("aliexpress-csv", [AE_TRAIN, bad], out, progress=False, overwrite=True,
                records_per_shard=30)
    after = _files(out)
    assert {n: b for n, b in after.items() if not n.startswith(".staging")} == before
    assert Metadata.load(out).to_dict() == old.to_dict()
    assert _rows(out, "train") == 100 and _rows(out, "test") == 20  # still usable
    staged = os.stat(os.path.join(out, ".staging", "train-00000-of-00004.tfrecord"))
    shutil.copy(AE_TEST, bad)  # the user fixes the file and reruns
    new = convert("aliexpress-csv", [AE_TRAIN, bad], out, progress=False, overwrite=True,
                  records_per_shard=30)
    assert new.splits["train"].files == [f"train-0000{i}-of-00004.tfrecord" for i in range(4)]
    published = os.stat(os.path.join(out, "train-00000-of-00004.tfrecord"))
    assert published.st_mtime_ns == staged.st_mtime_ns  # the finished split was reused
    assert sorted(os.listdir(out)) == sorted(
        [".lock", METADATA_FILE] + new.splits["train"].files + new.splits["test"].files)
    assert Metadata.load(out).to_dict() == new.to_dict()
    assert _rows(out, "train") == 100 and _rows(out, "test") == 20


def test_a_publish_cut_short_is_finished_by_the_rerun(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    convert("aliexpress-csv", [AE_TRAIN, AE_TEST], out, progress=False)

    def killed(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(output_lib, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        convert("aliexpress-csv", [AE_TRAIN], out, progress=False, overwrite=True)
    assert sorted(Metadata.load(out).splits) == ["test", "train"]  # the old one, intact
    staged = os.stat(os.path.join(out, ".staging", "train-00000-of-00001.tfrecord"))
    monkeypatch.undo()
    new = convert("aliexpress-csv", [AE_TRAIN], out, progress=False, overwrite=True)
    assert sorted(new.splits) == ["train"]
    published = os.stat(os.path.join(out, "train-00000-of-00001.tfrecord"))
    assert published.st_mtime_ns == staged.st_mtime_ns  # published, not converted again
    assert sorted(os.listdir(out)) == [".lock", METADATA_FILE, "train-00000-of-00001.tfrecord"]


@pytest.mark.slow
def test_a_failed_overwrite_on_beam_keeps_the_finished_conversion(tmp_path):
    from pwiser_tf.pipelines.beam_convert import convert_beam

    out = str(tmp_path / "out")
    old = convert_beam("aliexpress-csv", [AE_TRAIN, AE_TEST], out)
    before = _files(out)
    bad = with_cell(AE_TEST, tmp_path / "bad_test.csv", 7, 0, b"garbage")
    with pytest.raises(InputError, match=r"bad_test.csv:7"):
        convert_beam("aliexpress-csv", [AE_TRAIN, bad], out, overwrite=True)
    assert {n: b for n, b in _files(out).items() if not n.startswith(".staging")} == before
    assert Metadata.load(out).to_dict() == old.to_dict()
    shutil.copy(AE_TEST, bad)
    new = convert_beam("aliexpress-csv", [AE_TRAIN, bad], out, overwrite=True)
    assert Metadata.load(out).to_dict() == new.to_dict() != old.to_dict()
    assert sorted(os.listdir(out)) == sorted(
        [".lock", METADATA_FILE] + new.splits["train"].files + new.splits["test"].files)
    assert _rows(out, "train") == 100 and _rows(out, "test") == 20


# 2. A valued multi-valued field whose values are missing from the records is refused.

def _without_values(shard):
    """Rewrites `shard` with every `mv_*_values` feature removed (same record count)."""
    records = []
    for data in tf.data.TFRecordDataset(shard).as_numpy_iterator():
        example = tf.train.Example.FromString(data)
        for key in [k for k in example.features.feature if k.endswith("_values")]:
            del example.features.feature[key]
        records.append(example.SerializeToString())
    with tf.io.TFRecordWriter(shard) as writer:
        for record in records:
            writer.write(record)


def test_missing_values_of_a_valued_field_are_refused(tmp_path):
    from test_readers import _ccp_files

    sk, cf = _ccp_files(tmp_path)
    out = str(tmp_path / "out")
    metadata = convert("ali-ccp-raw", [sk, cf], out, progress=False)
    assert metadata.schema.multi_valued[1].has_values  # 109_14
    shard = metadata.files("train", out)[0]
    _without_values(shard)
    message = rf"{shard}: record 1 has 3 ids in 'mv_210' but no values in 'mv_210_values'"
    with pytest.raises(ShardError, match=message):
        make_dataset(out, 16, split="train")
    with pytest.raises(ShardError, match=message):
        make_dataset(shard, 16)  # a file pattern
    with pytest.raises(ShardError, match=message):
        verify_split(out, "train")  # as evaluation checks the split


# 3. A file pattern (or list) inside a converted folder gets the record-count check.

def test_a_pattern_inside_a_converted_folder_checks_the_counts(tmp_path):
    out = str(tmp_path / "out")
    metadata = convert("aliexpress-csv", [AE_TRAIN, AE_TEST], out, progress=False,
                       records_per_shard=40)
    assert metadata.splits["train"].records == [40, 40, 20]
    emptied = os.path.join(out, metadata.splits["train"].files[1])
    open(emptied, "wb").close()
    message = rf"{emptied}: holds 0 records, metadata.json lists 40"
    with pytest.raises(ShardError, match=message):
        make_dataset(os.path.join(out, "train-*.tfrecord"), 16)
    with pytest.raises(ShardError, match=message):
        make_dataset([os.path.join(out, "test-*"), os.path.join(out, "train-*")], 16,
                     schema=metadata.schema)
    # the intact split reads; so do copies of the shards away from their metadata
    assert sum(1 for _ in make_dataset(os.path.join(out, "test-*.tfrecord"), 16)) == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(emptied, elsewhere)
    assert list(make_dataset(str(elsewhere / "*"), 16, schema=metadata.schema)) == []


# 4. --records-per-shard below 1 is refused, not turned into one file per row.

@pytest.mark.parametrize("value", [0, -3])
def test_records_per_shard_below_one_is_refused(tmp_path, capsys, value):
    out = tmp_path / "out"
    with pytest.raises(InputError, match=rf"records_per_shard must be at least 1, got {value}"):
        convert("aliexpress-csv", [AE_TEST], str(out), records_per_shard=value, progress=False)
    assert cli.main(["convert", "--format", "aliexpress-csv", "--input", AE_TEST, "--output",
                     str(out), "--no-progress", "--records-per-shard", str(value)]) == 2
    assert f"--records-per-shard must be at least 1, got {value}" in _error(capsys)
    assert not out.exists()


# 5. A negative id, a non-finite number or a bad label names its column.

@pytest.mark.parametrize("fmt,source,column,value,reason", [
    ("aliexpress-csv", AE_TEST, 3, b"-5", "column 'categorical_3': -5 is a negative id"),
    ("aliexpress-csv", AE_TEST, 19, b"inf", "column 'numerical_3': inf is non-finite"),
    ("aliexpress-csv", AE_TEST, 81, b"2", "column 'conversion': 2 is a label outside {0, 1}"),
    ("ali-ccp-csv", CCP_CSV, 1, b"3", "column 'purchase': 3 is a label outside {0, 1}"),
    ("ali-ccp-csv", CCP_CSV, 4, b"-1", "column '122': -1 is a negative id"),
    ("esmm-text", ESMM, 1, b"-1", "column 'click': -1 is a label outside {0, 1}"),
])
def test_bad_cells_name_their_column(tmp_path, fmt, source, column, value, reason):
    from pwiser_tf.pipelines.readers import open_reader

    name = "test.txt" if fmt == "esmm-text" else "test.csv"
    bad = with_cell(source, tmp_path / name, 5, column, value)
    with pytest.raises(InputError, match=rf"{name}:5: malformed line: " + re.escape(reason)):
        for _ in open_reader(fmt, [bad]):
            pass


def test_bad_feature_ids_and_values_of_ali_ccp_name_their_field(tmp_path):
    from pwiser_tf.pipelines.readers import open_reader
    from test_readers import _ccp_files

    cases = {b"205\x02-4\x031": "field '205': -4 is a negative id",
             b"508\x029\x03nan": "the value of field '508': nan is non-finite",
             b"210\x02-3\x031": "field '210': -3 is a negative id",  # would pass for padding
             b"210\x023\x03inf": "the value of field '210': inf is non-finite"}
    for token, reason in cases.items():
        sk, cf = _ccp_files(tmp_path)
        lines = read_lines(sk)
        lines[1] = lines[1].replace(b"205\x02101\x031", token)
        write_lines(sk, lines)
        with pytest.raises(InputError, match=r"sample_skeleton_train.csv:2: malformed line: "
                                             + re.escape(reason)):
            for _ in open_reader("ali-ccp-raw", [sk, cf]):
                pass
    lines = read_lines(ESMM)
    lines[3] = re.sub(rb"(^|,)205:\d+", rb"\g<1>205:-8", lines[3])
    esmm = write_lines(tmp_path / "test.txt", lines)
    with pytest.raises(InputError, match=r"test.txt:4: malformed line: "
                                         + re.escape("field '205': -8 is a negative id")):
        for _ in open_reader("esmm-text", [esmm]):
            pass


# 6. `synth` is quiet without --verbose; so is a refused `convert`.

def _command(*args, level=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run([sys.executable, "-m", "pwiser_tf", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow  # starts a subprocess
def test_synth_prints_nothing_on_stderr(tmp_path):
    for level in (None, "3"):
        out = tmp_path / f"synth{level}"
        proc = _command("synth", "--dataset", "ali-ccp", "--rows", 200, "--output", out,
                        "--no-progress", level=level)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert (out / "synth.json").exists()
    refused = _command("synth", "--dataset", "aliexpress", "--rows", 0, "--output", out)
    assert refused.returncode == 2 and refused.stderr.startswith("pwiser-tf synth: error:")


@pytest.mark.slow  # starts a subprocess
def test_synth_does_not_load_tensorflow(tmp_path):
    code = ("import sys; from pwiser_tf.pipelines.synth import synthesize; "
            f"synthesize('aliexpress', 100, {str(tmp_path)!r}, progress=False); "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=300).returncode == 0


@pytest.mark.slow
def test_a_refused_convert_prints_one_line_with_a_log_level_set(tmp_path):
    proc = _command("convert", "--format", "aliexpress-csv", "--input", f"tset={AE_TEST}",
                    "--output", tmp_path / "out", level="3")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"pwiser-tf convert: error: tset={AE_TEST}: unknown split 'tset'; use one of "
        f"train, validation, test"], proc.stderr


def test_an_unknown_split_prefix_is_named(tmp_path):
    with pytest.raises(InputError, match=r"unknown split 'tset'; use one of train, "
                                         r"validation, test"):
        convert("aliexpress-csv", [AE_TRAIN, f"tset={AE_TEST}"], str(tmp_path / "o"),
                progress=False)
    assert not (tmp_path / "o").exists()


# 7. A refused conversion leaves no folder it created; a folder that existed stays.

def test_a_refused_conversion_removes_only_the_folder_it_created(tmp_path):
    bad = with_cell(AE_TEST, tmp_path / "bad_test.csv", 7, 0, b"garbage")
    new = tmp_path / "a" / "new"
    with pytest.raises(InputError, match=r"bad_test.csv:7"):
        convert("aliexpress-csv", [bad], str(new), progress=False)
    assert not new.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(InputError, match=r"bad_test.csv:7"):
        convert("aliexpress-csv", [bad], str(existing), progress=False)
    assert existing.is_dir()
    with pytest.raises(InputError, match=r"bad_test.csv:7"):  # finished splits stay, to resume
        convert("aliexpress-csv", [AE_TRAIN, bad], str(new), progress=False)
    assert "train-00000-of-00001.tfrecord" in os.listdir(new)
