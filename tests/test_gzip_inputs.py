"""Compressed inputs: every format reads a gzip (and bzip2, xz) file as its content,
streamed, and converts it to the very records of the plain file; lines keep their
numbers in messages; a file cut short is refused, naming it and its last complete
line, and leaves no conversion behind; the fingerprint still tells a changed input;
archives of files stay refused."""
import bz2
import glob
import gzip
import lzma
import os
import re
import shutil
import tarfile
import zipfile
import zlib

import numpy as np
import pytest

from conftest import SAMPLES
from pwiser_tf import cli
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import make_dataset, synthesize
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.readers import open_reader
from pwiser_tf.pipelines.schema import Metadata
from tests.text_files import read_lines, with_cell, write_lines

AE = os.path.join(SAMPLES, "aliexpress", "torch_rechub")
CCP = os.path.join(SAMPLES, "ali_ccp")
AE_TRAIN = os.path.join(AE, "aliexpress_train_sample.csv")
AE_TEST = os.path.join(AE, "aliexpress_test_sample.csv")
COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}

# the real samples of every processed format (split=path)
SAMPLE_INPUTS = {
    "aliexpress-csv": [f"train={AE_TRAIN}", f"test={AE_TEST}"],
    "ali-ccp-csv": [f"{split}={CCP}/torch_rechub/ali_ccp_{name}_sample.csv"
                    for split, name in (("train", "train"), ("validation", "val"),
                                        ("test", "test"))],
    "aitm-csv": [f"train={CCP}/paddlerec_aitm/train/train.csv",
                 f"test={CCP}/paddlerec_aitm/test/test.csv"],   # test.csv: no header
    "esmm-text": [f"test={CCP}/paddlerec_esmm/test/small.txt"],
}


@pytest.fixture(scope="module")
def raw_inputs(tmp_path_factory):
    """`{format: [split=path, ...]}` of the raw formats: synthetic files, since no
    real sample of them ships with the tests."""
    root = tmp_path_factory.mktemp("raw")
    ae = synthesize("aliexpress", 400, str(root / "ae"), seed=3)["files"]
    ccp = synthesize("ali-ccp", 400, str(root / "ccp"), seed=4)["files"]
    return {
        "aliexpress-raw": [f"{split}={ae[f'raw/nl_{kind}_{split}.csv']}"
                           for split in ("train", "test") for kind in ("user", "item")],
        "ali-ccp-raw": [f"{split}={ccp[f'raw/{kind}_{split}.csv']}" for split in ("train", "test")
                        for kind in ("sample_skeleton", "common_features")],
    }


def _inputs(fmt, raw_inputs):
    return SAMPLE_INPUTS[fmt] if fmt in SAMPLE_INPUTS else raw_inputs[fmt]


def _compressed(inputs, folder, suffix="gz", data=None):
    """Compressed copies of `split=path` inputs in `folder` (the same names + suffix)."""
    out = []
    for item in inputs:
        split, path = item.split("=", 1)
        target = os.path.join(folder, split, os.path.basename(path) + "." + suffix)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(path, "rb") as f, open(target, "wb") as g:
            g.write(COMPRESS[suffix](f.read() if data is None else data))
        out.append(f"{split}={target}")
    return out


def _all_files(directory):
    """`{relative path: bytes}` of every file under `directory` but the lock."""
    out = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            if name != ".lock":
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, directory)] = f.read()
    return out


def _files(directory):
    """`{name: bytes}` of the shards of a converted folder."""
    out = {}
    for path in glob.glob(os.path.join(directory, "*.tfrecord*")):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = f.read()
    return out


def _chunks(reader):
    """Every column of every chunk, with the reader's counts and rows per file."""
    chunks = list(reader)
    columns = {name: np.concatenate([getattr(c, name) for c in chunks]).tolist()
               for name in ("categorical", "numerical", "row_id", "lines")}
    for label in chunks[0].labels:
        columns[label] = np.concatenate([c.labels[label] for c in chunks]).tolist()
    for field in chunks[0].multi_valued:
        for part in ("values", "lengths", "weights"):
            if getattr(chunks[0].multi_valued[field], part) is not None:
                columns[f"{field}.{part}"] = np.concatenate(
                    [getattr(c.multi_valued[field], part) for c in chunks]).tolist()
    return columns, reader.counts.as_dict(), list(reader.rows_by_path.values())


# --- the same records ------------------------------------------------------------

@pytest.mark.parametrize("fmt", list(SAMPLE_INPUTS) + ["aliexpress-raw", "ali-ccp-raw"])
def test_gzip_inputs_convert_to_the_same_records(tmp_path, raw_inputs, fmt):
    plain = _inputs(fmt, raw_inputs)
    packed = _compressed(plain, str(tmp_path / "in"))
    splits = [item.split("=", 1)[0] for item in plain]
    carve = "train" in splits and "validation" not in splits
    options = dict(validation_fraction=0.25 if carve else 0.0, compression="GZIP", progress=False,
                   records_per_shard=40, block_bytes=3000)  # several blocks per file
    want = convert(fmt, plain, str(tmp_path / "plain"), **options)
    got = convert(fmt, packed, str(tmp_path / "packed"), **options)
    assert got.schema == want.schema
    assert got.extra["source_counts"] == want.extra["source_counts"]
    assert {s: v.counts for s, v in got.splits.items()} == \
        {s: v.counts for s, v in want.splits.items()}
    shards = _files(str(tmp_path / "plain"))
    assert shards and _files(str(tmp_path / "packed")) == shards  # the same bytes


@pytest.mark.parametrize("suffix", ["gz", "bz2", "xz"])
@pytest.mark.parametrize("fmt", list(SAMPLE_INPUTS) + ["aliexpress-raw", "ali-ccp-raw"])
def test_every_compression_reads_the_same_chunks(tmp_path, raw_inputs, fmt, suffix):
    plain = [i.split("=", 1)[1] for i in _inputs(fmt, raw_inputs)]
    packed = [i.split("=", 1)[1] for i in _compressed(_inputs(fmt, raw_inputs),
                                                      str(tmp_path), suffix)]
    for paths in [plain[:2]] if fmt.endswith("-raw") else [[path] for path in plain]:
        want = _chunks(open_reader(fmt, paths, block_bytes=2000))
        compressed = [packed[plain.index(p)] for p in paths]
        reader = open_reader(fmt, compressed, block_bytes=2000)
        assert _chunks(reader) == want
        # progress counts the files as stored: it ends at their (compressed) size
        assert reader.size == sum(os.path.getsize(p) for p in compressed)
        assert reader.position == reader.size


@pytest.mark.parametrize("fmt", ["aliexpress-raw", "ali-ccp-raw"])
def test_a_compressed_side_file_in_another_order_is_joined_through_the_index(
        tmp_path, raw_inputs, fmt):
    """The side file reversed: the join falls back to its on-disk index, which holds
    a compressed file's rows (it cannot be read by seeking)."""
    main, side = sorted((i.split("=", 1)[1] for i in raw_inputs[fmt][:2]),
                        key=lambda p: ("_user_" in p or "common_features" in p))
    lines = read_lines(side)[::-1]
    reversed_side = write_lines(tmp_path / os.path.basename(side), lines)
    packed_side = str(tmp_path / (os.path.basename(side) + ".gz"))
    with gzip.open(packed_side, "wb") as g:
        g.write(b"\n".join(lines) + b"\n")
    packed_main = str(tmp_path / (os.path.basename(main) + ".gz"))
    with open(main, "rb") as f, gzip.open(packed_main, "wb") as g:
        shutil.copyfileobj(f, g)
    want = _chunks(open_reader(fmt, [main, reversed_side], cache_entries=2,
                               index_dir=str(tmp_path / "index_plain")))
    index_dir = str(tmp_path / "index")
    reader = open_reader(fmt, [packed_main, packed_side], cache_entries=2, index_dir=index_dir)
    assert _chunks(reader) == want
    assert os.listdir(index_dir) == [os.path.basename(packed_side) + ".index.sqlite"]


def test_a_gzip_file_on_another_filesystem(tmp_path):
    """Read through `tf.io.gfile` (here `ram://`), as a `gs://` file would be."""
    import tensorflow as tf

    path = "ram://gzip_inputs/aliexpress_train_sample.csv.gz"
    with tf.io.gfile.GFile(path, "wb") as f, open(AE_TRAIN, "rb") as g:
        f.write(gzip.compress(g.read()))
    try:
        assert _chunks(open_reader("aliexpress-csv", [path], block_bytes=3000)) == \
            _chunks(open_reader("aliexpress-csv", [AE_TRAIN], block_bytes=3000))
    finally:
        tf.io.gfile.remove(path)


def test_multi_member_gzip_and_a_byte_order_mark(tmp_path):
    """A gzip file of several members (pigz, bgzip, `cat a.gz b.gz`) is their content
    end to end; a byte order mark at the start of the content is dropped."""
    lines = read_lines(AE_TEST)
    half = len(lines) // 2
    path = str(tmp_path / "members_test.csv.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(b"\xef\xbb\xbf" + b"\n".join(lines[:half]) + b"\n"))
        f.write(gzip.compress(b"\n".join(lines[half:]) + b"\n"))
    assert _chunks(open_reader("aliexpress-csv", [path], block_bytes=1000)) == \
        _chunks(open_reader("aliexpress-csv", [AE_TEST], block_bytes=1000))


# --- line numbers ------------------------------------------------------------------

def _gzip(path):
    with open(path, "rb") as f, gzip.open(path + ".gz", "wb") as g:
        g.write(f.read())
    os.remove(path)
    return path + ".gz"


def test_a_bad_row_inside_a_gzip_file_names_its_line(tmp_path, capsys):
    bad = _gzip(with_cell(AE_TRAIN, tmp_path / "bad_train.csv", 77, 3, b"x7"))
    with pytest.raises(InputError, match=re.escape(bad) + r":77: malformed line: column "
                                                          r"'categorical_3'"):
        convert("aliexpress-csv", [bad], str(tmp_path / "out"), progress=False,
                block_bytes=2000)  # line 77 is some blocks in
    reader = open_reader("aliexpress-csv", [bad], skip_malformed=True, block_bytes=2000)
    columns, counts, _ = _chunks(reader)
    assert counts["malformed"] == 1 and 77 not in columns["lines"]
    assert columns["lines"] == [n for n in range(2, 102) if n != 77]


def test_a_bad_raw_line_inside_a_gzip_file_names_its_line(tmp_path, raw_inputs):
    skeleton, common = (i.split("=", 1)[1] for i in raw_inputs["ali-ccp-raw"][:2])
    lines = read_lines(skeleton)
    lines[40] = b"41,1,0"  # line 41: three columns
    bad = _gzip(write_lines(tmp_path / "sample_skeleton_train.csv", lines))
    with pytest.raises(InputError, match=re.escape(bad) + r":41: malformed line: 3 columns"):
        list(open_reader("ali-ccp-raw", [bad, common], block_bytes=2000))


# --- a file cut short ------------------------------------------------------------

def _cut_gzip(source, target, keep=0.6):
    """A gzip copy of `source` (repeated, so it spans many blocks) cut at `keep` of
    its length; returns it with its last complete line."""
    lines = read_lines(source)
    data = b"\n".join(lines + lines[1:] * 5) + b"\n"
    packed = gzip.compress(data)
    cut = packed[:int(len(packed) * keep)]
    with open(target, "wb") as f:
        f.write(cut)
    last = zlib.decompressobj(31).decompress(cut).count(b"\n")
    assert 0 < last < data.count(b"\n")
    return str(target), last


def test_a_gzip_file_cut_short_is_refused_and_leaves_no_conversion(tmp_path, capsys):
    cut, last = _cut_gzip(AE_TRAIN, tmp_path / "cut_train.csv.gz")
    message = (f"{cut}: is cut short: its gzip data ends after line {last}, the last "
               f"complete one; download or copy it again")
    reader = open_reader("aliexpress-csv", [cut], block_bytes=4000)
    chunks = []
    with pytest.raises(InputError) as raised:
        for chunk in reader:
            chunks.append(chunk)
    assert str(raised.value) == message
    assert len(chunks) > 3  # the blocks before the cut were read and parsed
    out = tmp_path / "out"
    with pytest.raises(InputError, match=re.escape(message)):
        convert("aliexpress-csv", [cut, AE_TEST], str(out), progress=False,
                block_bytes=4000, records_per_shard=50)  # shards were being written
    # no shard, no metadata: the folder is gone
    assert not out.exists()
    with pytest.raises(Exception):
        make_dataset(str(out), 8, split="train")
    assert cli.main(["convert", "--no-progress", "--format", "aliexpress-csv", "--input", cut,
                     AE_TEST, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pwiser-tf convert: error: {message}"  # one line, no traceback
    assert not out.exists()


def test_a_cut_file_does_not_replace_a_finished_conversion(tmp_path):
    out = str(tmp_path / "out")
    convert("aliexpress-csv", [AE_TRAIN, AE_TEST], out, progress=False)
    before = _all_files(out)
    cut, last = _cut_gzip(AE_TRAIN, tmp_path / "aliexpress_train_sample.csv.gz")
    with pytest.raises(InputError, match=re.escape(f"{cut}: is cut short: its gzip data "
                                                   f"ends after line {last},")):
        convert("aliexpress-csv", [cut, AE_TEST], out, progress=False, overwrite=True,
                block_bytes=4000)
    assert {n: b for n, b in _all_files(out).items() if not n.startswith(".staging")} == before
    assert Metadata.load(out).splits["train"].counts["rows"] == 100


@pytest.mark.parametrize("suffix", ["bz2", "xz"])
def test_other_compressions_cut_short_are_refused(tmp_path, suffix):
    data = b"\n".join(read_lines(AE_TRAIN)) + b"\n"
    packed = COMPRESS[suffix](data)
    path = str(tmp_path / f"cut_train.csv.{suffix}")
    with open(path, "wb") as f:
        f.write(packed[:len(packed) // 2])
    name = {"bz2": "bzip2", "xz": "xz"}[suffix]
    with pytest.raises(InputError, match=re.escape(f"{path}: is cut short: its {name} data "
                                                   f"ends ")):
        list(open_reader("aliexpress-csv", [path]))


def test_a_damaged_gzip_file_is_refused(tmp_path):
    data = bytearray(gzip.compress(b"\n".join(read_lines(AE_TRAIN)) + b"\n"))
    data[-6] ^= 0xFF  # the stored checksum
    path = str(tmp_path / "damaged_train.csv.gz")
    with open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(InputError, match=re.escape(path) + r": is damaged: reading its gzip "
                                                           r"data failed after line 101 \(CRC"):
        list(open_reader("aliexpress-csv", [path]))


# --- fingerprint, archives, empty content ------------------------------------------

def test_the_fingerprint_of_a_gzip_input_tells_a_changed_file(tmp_path):
    packed = _compressed([f"test={AE_TEST}"], str(tmp_path))[0].split("=", 1)[1]
    out = str(tmp_path / "out")
    first = convert("aliexpress-csv", [packed], out, progress=False)
    shard = glob.glob(os.path.join(out, "test-*"))[0]
    stamp = os.stat(shard).st_mtime_ns
    assert convert("aliexpress-csv", [packed], out, progress=False).to_dict() == \
        first.to_dict()
    assert os.stat(shard).st_mtime_ns == stamp  # reused, not converted again
    lines = read_lines(AE_TEST)
    with gzip.open(packed, "wb") as g:  # the user adds rows to the file
        g.write(b"\n".join(lines + lines[1:8]) + b"\n")
    with pytest.raises(InputError, match="holds a finished conversion of other inputs"):
        convert("aliexpress-csv", [packed], out, progress=False)
    second = convert("aliexpress-csv", [packed], out, progress=False, overwrite=True)
    assert second.splits["test"].counts["rows"] == first.splits["test"].counts["rows"] + 7


def test_archives_of_files_are_refused(tmp_path):
    zipped = str(tmp_path / "zipped_test.csv")
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(AE_TEST, "test.csv")
    with pytest.raises(InputError, match=re.escape(zipped) + r": is a zip archive; extract"):
        open_reader("aliexpress-csv", [zipped])
    for mode, what in (("w:gz", "a gzip-compressed tar archive"), ("w", "a tar archive"),
                       ("w:bz2", "a bzip2-compressed tar archive")):
        packed = str(tmp_path / f"sample_test.tar.{mode[2:] or 'plain'}")
        with tarfile.open(packed, mode) as tar:
            tar.add(AE_TEST, "aliexpress_test_sample.csv")
        with pytest.raises(InputError, match=re.escape(f"{packed}: is {what} of files; "
                                                       f"extract the one to convert")):
            open_reader("aliexpress-csv", [packed])
    for magic, what in ((b"\x28\xb5\x2f\xfd", "zstd-compressed"), (b"7z\xbc\xaf\x27\x1c",
                                                                  "a 7z archive")):
        path = write_lines(tmp_path / "other_test.csv", [magic + b"\x00" * 20])
        with pytest.raises(InputError, match=re.escape(f"{path}: is {what};")):
            open_reader("aliexpress-csv", [path])


def test_a_gzip_file_of_nothing_is_an_input_without_rows(tmp_path):
    empty = str(tmp_path / "more_train.csv.gz")
    with open(empty, "wb") as f:
        f.write(gzip.compress(b""))
    with pytest.raises(InputError, match=re.escape(empty) + ": no data rows"):
        convert("aliexpress-csv", [f"train={AE_TRAIN}", f"train={empty}"],
                str(tmp_path / "out"), progress=False)


# --- the Beam runner -----------------------------------------------------------------

@pytest.mark.slow  # runs Beam pipelines
def test_the_beam_runner_reads_gzip_inputs(tmp_path, raw_inputs):
    from pwiser_tf.pipelines.beam_convert import convert_beam
    from tests.test_beam_convert import OPTIONS, assert_same

    plain = raw_inputs["aliexpress-raw"]
    packed = _compressed(plain, str(tmp_path / "in"))
    convert("aliexpress-raw", plain, str(tmp_path / "local"), validation_fraction=0.2,
            progress=False)
    convert_beam("aliexpress-raw", packed, str(tmp_path / "beam"), validation_fraction=0.2,
                 block_bytes=5000, beam_options=OPTIONS)
    assert_same(tmp_path / "local", tmp_path / "beam")
    cut, last = _cut_gzip(AE_TRAIN, tmp_path / "cut_train.csv.gz")
    with pytest.raises(InputError) as raised:
        convert_beam("aliexpress-csv", [cut], str(tmp_path / "cut"), block_bytes=4000,
                     beam_options=OPTIONS)
    assert str(raised.value) == (f"{cut}: is cut short: its gzip data ends after line "
                                 f"{last}, the last complete one; download or copy it again")
    assert not os.path.exists(tmp_path / "cut")  # no shards, no metadata, no folder
