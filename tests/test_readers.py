"""Readers of every public format: real samples, synthetic raw lines, malformed input."""
import csv
import os

import numpy as np
import pytest

from conftest import SAMPLES
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.readers import FORMATS, open_reader
from pwiser_tf.pipelines.readers.aliexpress import ITEM_CATEGORICAL, USER_CATEGORICAL

AE = os.path.join(SAMPLES, "aliexpress", "torch_rechub")
CCP = os.path.join(SAMPLES, "ali_ccp")

# (format, file, rows, clicks, conversions, conversions without a click) as in the
# samples' README; the ESMM file holds 1 click and no conversion (the README's
# 2 and 1 are those of PaddleRec's train/small.txt, whose row 1 was edited to 1,1)
SAMPLE_COUNTS = [
    ("aliexpress-csv", f"{AE}/aliexpress_train_sample.csv", 100, 60, 2, 0),
    ("aliexpress-csv", f"{AE}/aliexpress_test_sample.csv", 20, 10, 0, 0),
    ("ali-ccp-csv", f"{CCP}/torch_rechub/ali_ccp_train_sample.csv", 100, 7, 1, 0),
    ("ali-ccp-csv", f"{CCP}/torch_rechub/ali_ccp_val_sample.csv", 50, 3, 1, 0),
    ("ali-ccp-csv", f"{CCP}/torch_rechub/ali_ccp_test_sample.csv", 50, 2, 1, 0),
    ("aitm-csv", f"{CCP}/paddlerec_aitm/train/train.csv", 48, 3, 3, 2),
    ("aitm-csv", f"{CCP}/paddlerec_aitm/test/test.csv", 50, 3, 3, 3),   # no header line
    ("esmm-text", f"{CCP}/paddlerec_esmm/test/small.txt", 10, 1, 0, 0),
]


def _read(reader):
    chunks = list(reader)
    cat = np.concatenate([c.categorical for c in chunks])
    num = np.concatenate([c.numerical for c in chunks])
    labels = {k: np.concatenate([c.labels[k] for c in chunks]) for k in chunks[0].labels}
    multi = {k: [c.multi_valued[k] for c in chunks] for k in chunks[0].multi_valued}
    return cat, num, labels, multi, np.concatenate([c.row_id for c in chunks])


def _csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[1:] if rows[0][0] in ("click", "search_id") else rows


@pytest.mark.parametrize("fmt,path,rows,clicks,conversions,orphans", SAMPLE_COUNTS)
def test_real_samples_counts_as_documented(fmt, path, rows, clicks, conversions, orphans):
    reader = open_reader(fmt, [path])
    _read(reader)
    counts = reader.counts
    assert counts.rows + counts.dropped == rows
    assert counts.conversions_without_click == counts.dropped == orphans
    assert counts.clicks == clicks and counts.conversions + orphans == conversions
    assert counts.malformed == 0
    _read(reader)  # a second pass counts the same
    assert reader.counts == counts
    kept = open_reader(fmt, [path], conversion_without_click="as_click")
    _read(kept)
    assert kept.counts.rows == rows and kept.counts.clicks == clicks + orphans
    assert kept.counts.conversions == conversions


@pytest.mark.parametrize("fmt,path", [(f, p) for f, p, *_ in SAMPLE_COUNTS if f != "esmm-text"])
def test_csv_samples_values_and_label_order_exact(fmt, path):
    """Every kept row, in file order: ids, float32 numbers and labels as written."""
    cat, num, labels, _, _ = _read(open_reader(fmt, [path]))
    rows = [r for r in _csv(path) if not (r[-2 if fmt == "aliexpress-csv" else 0] == "0" and
                                          r[-1 if fmt == "aliexpress-csv" else 1] == "1")]
    if fmt == "aliexpress-csv":
        expect_cat = [[int(v) for v in r[1:17]] for r in rows]
        expect_num = [r[17:80] for r in rows]
        click, conversion = [int(r[80]) for r in rows], [int(r[81]) for r in rows]
    else:
        ids = 23 if fmt == "ali-ccp-csv" else 18
        expect_cat = [[int(v) for v in r[2:2 + ids]] for r in rows]
        expect_num = [r[2 + ids:] for r in rows]
        click, conversion = [int(r[0]) for r in rows], [int(r[1]) for r in rows]
    np.testing.assert_array_equal(cat, np.array(expect_cat, np.int64))
    np.testing.assert_array_equal(num, np.array(expect_num, dtype=np.float64).astype(np.float32)
                                  .reshape(num.shape))
    np.testing.assert_array_equal(labels["click"], click)
    np.testing.assert_array_equal(labels["conversion"], conversion)


def test_esmm_sample_keeps_every_token():
    path = f"{CCP}/paddlerec_esmm/test/small.txt"
    reader = open_reader("esmm-text", [path])
    cat, _, labels, multi, row_id = _read(reader)
    layout = reader.layout
    with open(path) as f:
        lines = [line.rstrip("\n").split(",") for line in f]
    np.testing.assert_array_equal(row_id % (1 << 40), [int(t[0]) for t in lines])
    np.testing.assert_array_equal(labels["click"], [int(t[1]) for t in lines])
    for i, tokens in enumerate(lines):
        pairs = [tok.split(":") for tok in tokens[3:]]
        for j, field in enumerate(layout.categorical):
            ids = [int(v) for f, v in pairs if f == field]
            assert cat[i, j] == (ids[-1] if ids else 0)
        for field, _ in layout.multi_valued:
            ragged = multi[field][0]
            start = ragged.lengths[:i].sum()
            got = ragged.values[start:start + ragged.lengths[i]]
            assert got.tolist() == [int(v) for f, v in pairs if f == field]
    assert sum(multi["110_14"][0].lengths) == 3420  # multi-valued fields whole


# --- synthetic raw lines --------------------------------------------------

def _write(path, text: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text)
    return path


def _user_line(search, seed):
    cells = [str(search)]
    for column in range(2, 34):
        cells.append(str(seed + column) if column in USER_CATEGORICAL
                     else f"0.{seed:02d}{column:02d}")
    return ",".join(cells)


def _item_line(search, seed, label):
    cells = [str(search)]
    for column in range(2, 49):
        cells.append(str(seed * 100 + column) if column in ITEM_CATEGORICAL
                     else f"0.5{column:02d}")
    return ",".join(cells + [str(label)])


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_aliexpress_raw_join(tmp_path, order):
    users = [_user_line(s, s) for s in (10, 11, 12)]
    if order == "shuffled":  # the on-disk index takes over
        users = users[::-1]
    items = [_item_line(10, 1, 0), _item_line(10, 2, 2), _item_line(11, 3, 1),
             _item_line(12, 4, 0)]
    user = _write(str(tmp_path / "nl_user_train.csv"), ("\n".join(users) + "\n").encode())
    item = _write(str(tmp_path / "nl_item_train.csv"), ("\n".join(items) + "\n").encode())
    reader = open_reader("aliexpress-raw", [user, item], cache_entries=1,
                         index_dir=str(tmp_path / "index"))
    cat, num, labels, _, row_id = _read(reader)
    assert row_id.tolist() == [10, 10, 11, 12]
    assert labels["click"].tolist() == [0, 1, 1, 0]
    assert labels["conversion"].tolist() == [0, 1, 0, 0]
    assert cat[2, :9].tolist() == [11 + c for c in USER_CATEGORICAL]
    assert cat[2, 9:].tolist() == [300 + c for c in ITEM_CATEGORICAL]
    assert num[1, 0] == np.float32("0.1009") and num[1, 23] == np.float32("0.502")
    assert reader.counts.rows == 4 and reader.counts.conversions == 1


def test_aliexpress_raw_unknown_search_names_the_item_line(tmp_path):
    user = _write(str(tmp_path / "nl_user_test.csv"), (_user_line(1, 1) + "\n").encode())
    item = _write(str(tmp_path / "nl_item_test.csv"),
                  (_item_line(1, 1, 0) + "\n" + _item_line(7, 1, 0) + "\n").encode())
    with pytest.raises(InputError, match=r"nl_item_test.csv:2: .*search id"):
        _read(open_reader("aliexpress-raw", [user, item]))


def _token(field, fid, value):
    return f"{field}\x02{fid}\x03{value}".encode()


def _ccp_files(tmp_path, common_order=(0, 1)):
    commons = [
        b"\x01".join([_token("101", 7, 1), _token("109_14", 31, 2.5), _token("109_14", 32, 0.5),
                      _token("124", 2, 1)]),
        b"\x01".join([_token("101", 8, 1), _token("150_14", 41, 1.25)]),
    ]
    common_lines = [b"ua,4," + commons[0], b"ub,2," + commons[1]]
    common_lines = [common_lines[i] for i in common_order]
    skeleton = [
        (b"1,0,0,ua,5,", [_token("205", 100, 1), _token("210", 5, 1), _token("210", 6, 1),
                          _token("210", 9, 1), _token("508", 55, 0.75)]),
        (b"2,1,1,ua,2,", [_token("205", 101, 1), _token("301", 2, 1)]),
        (b"3,0,1,ub,1,", [_token("205", 102, 1)]),   # a conversion without a click
        (b"4,1,0,ub,0,", []),
    ]
    sk = _write(str(tmp_path / "sample_skeleton_train.csv"),
                b"".join(head + b"\x01".join(tokens) + b"\n" for head, tokens in skeleton))
    cf = _write(str(tmp_path / "common_features_train.csv"), b"\n".join(common_lines) + b"\n")
    return sk, cf


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_ali_ccp_raw_join_keeps_multi_valued_fields_whole(tmp_path, order):
    sk, cf = _ccp_files(tmp_path, order)
    reader = open_reader("ali-ccp-raw", [sk, cf], cache_entries=1,
                         index_dir=str(tmp_path / "index"))
    cat, num, labels, multi, row_id = _read(reader)
    layout = reader.layout
    col = {name: i for i, name in enumerate(layout.categorical)}
    assert row_id.tolist() == [1, 2, 4]           # sample 3 dropped: conversion, no click
    assert reader.counts.conversions_without_click == 1 and reader.counts.dropped == 1
    assert cat[:, col["101"]].tolist() == [7, 7, 8]
    assert cat[:, col["205"]].tolist() == [100, 101, 0]   # absent field: 0
    assert cat[:, col["124"]].tolist() == [2, 2, 0]
    assert cat[:, col["301"]].tolist() == [0, 2, 0]
    assert cat[0, col["508"]] == 55 and num[0, layout.numerical.index("D508")] == 0.75
    (m210,) = multi["210"]
    assert m210.values.tolist() == [5, 6, 9] and m210.lengths.tolist() == [3, 0, 0]
    (m109,) = multi["109_14"]
    assert m109.values.tolist() == [31, 32, 31, 32] and m109.lengths.tolist() == [2, 2, 0]
    assert m109.weights.tolist() == [2.5, 0.5, 2.5, 0.5]
    (m150,) = multi["150_14"]
    assert m150.values.tolist() == [41] and m150.lengths.tolist() == [0, 0, 1]
    assert labels["click"].tolist() == [0, 1, 1] and labels["conversion"].tolist() == [0, 1, 0]


def test_ali_ccp_raw_malformed_feature_count(tmp_path):
    sk, cf = _ccp_files(tmp_path)
    with open(sk, "ab") as f:
        f.write(b"5,0,0,ua,3," + _token("205", 1, 1) + b"\n")
    with pytest.raises(InputError, match=r"sample_skeleton_train.csv:5: .*feature_num is 3"):
        _read(open_reader("ali-ccp-raw", [sk, cf]))
    reader = open_reader("ali-ccp-raw", [sk, cf], skip_malformed=True)
    _read(reader)
    assert reader.counts.malformed == 1 and reader.counts.rows == 3


# --- malformed input ---------------------------------------------------------

def _ae_csv(tmp_path, bad_line: bytes = b"", name="train.csv"):
    with open(f"{AE}/aliexpress_test_sample.csv", "rb") as f:
        lines = f.read().splitlines()
    lines.insert(5, bad_line) if bad_line else None
    return _write(str(tmp_path / name), b"\n".join(lines) + b"\n")


@pytest.mark.parametrize("bad,reason", [
    (b"1,2,3", "3 columns"),
    (b"\xff\xfe\x00garbage\x80" * 3, "not ASCII"),
    (b"1," + b"2," * 16 + b"x," * 63 + b"0,0", "is not a number"),
    (b"1," + b"-2," * 16 + b"0.5," * 63 + b"0,0", "negative id"),
    (b"1," + b"2," * 16 + b"0.5," * 63 + b"2,0", "label outside"),
    (b"1," + b"2," * 16 + b"nan," * 63 + b"0,0", "non-finite"),
    (b"1,0x10," + b"2," * 15 + b"0.5," * 63 + b"0,0", "'0x10' is not an integer"),
])
def test_malformed_line_named_or_skipped(tmp_path, bad, reason):
    path = _ae_csv(tmp_path, bad)
    with pytest.raises(InputError, match=rf"train.csv:6: malformed line: .*{reason}"):
        _read(open_reader("aliexpress-csv", [path]))
    reader = open_reader("aliexpress-csv", [path], skip_malformed=True)
    _read(reader)
    assert reader.counts.malformed == 1 and reader.counts.rows == 20


def test_empty_files_and_bad_headers(tmp_path):
    empty = _write(str(tmp_path / "empty.csv"), b"")
    header_only = _write(str(tmp_path / "header.csv"),
                         open(f"{AE}/aliexpress_test_sample.csv", "rb").readline())
    for fmt in FORMATS:
        if not fmt.endswith("-raw"):
            reader = open_reader(fmt, [empty])
            assert list(reader) == [] and reader.counts.rows == 0
    reader = open_reader("aliexpress-csv", [header_only, empty])
    assert list(reader) == [] and reader.layout.labels == ("click", "conversion")
    wrong = _write(str(tmp_path / "wrong.csv"), b"a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="wrong.csv:1: header"):
        open_reader("ali-ccp-csv", [wrong])
    with pytest.raises(InputError, match="no such file"):
        open_reader("aitm-csv", [str(tmp_path / "missing.csv")])
    with pytest.raises(InputError, match="unknown format"):
        open_reader("criteo", [empty])
    with pytest.raises(InputError, match="common_features"):
        open_reader("ali-ccp-raw", [empty])


def test_intent_column_passes_through(tmp_path):
    with open(f"{CCP}/paddlerec_aitm/train/train.csv") as f:
        lines = f.read().splitlines()
    text = "\n".join([lines[0] + ",intent"] + [line + f",{i % 2}" for i, line in
                                               enumerate(lines[1:])]) + "\n"
    path = _write(str(tmp_path / "train.csv"), text.encode())
    reader = open_reader("aitm-csv", [path], conversion_without_click="as_click")
    _, _, labels, _, _ = _read(reader)
    assert reader.layout.labels == ("click", "conversion", "intent")
    assert labels["intent"].tolist() == [i % 2 for i in range(48)]


@pytest.mark.parametrize("fmt,path,rows", [
    ("ali-ccp-csv", f"{CCP}/torch_rechub/ali_ccp_val_sample.csv", 50),
    ("aitm-csv", f"{CCP}/paddlerec_aitm/test/test.csv", 47),
    ("esmm-text", f"{CCP}/paddlerec_esmm/test/small.txt", 10),
])
@pytest.mark.parametrize("bad", [b"\x00\xff\xfe\x80garbage,\x01\x02", b"3,1,0,210:x,205:1"])
def test_garbage_line_in_every_processed_format(tmp_path, fmt, path, rows, bad):
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    lines.insert(3, bad)
    broken = _write(str(tmp_path / os.path.basename(path)), b"\n".join(lines) + b"\n")
    with pytest.raises(InputError, match=rf"{os.path.basename(path)}:4: malformed line"):
        _read(open_reader(fmt, [broken]))
    reader = open_reader(fmt, [broken], skip_malformed=True)
    _read(reader)
    assert reader.counts.malformed == 1 and reader.counts.rows == rows


def _by_blocks(reader, block_bytes):
    """The reader's rows through its public block API (as a distributed runner reads
    them): `blocks` of each main file, `parse_block` on each, the joining formats with
    the side rows from `side_rows`; returns the chunks, the rows per file and the counts."""
    from pwiser_tf.pipelines.readers import Counts

    side = dict(reversed(list(reader.side_rows()))) if reader.joins else None  # first rows
    chunks, rows, counts = [], {}, Counts()
    for index, path in enumerate(reader.main_paths()):
        rows[path] = 0
        for block, first_line, _ in reader.blocks(path, block_bytes):
            parsed = reader.parse_block(block, first_line, path, index, side_rows=side)
            rows[path] += parsed.rows
            counts.add(parsed.counts)
            if parsed.chunk is not None and len(parsed.chunk):
                chunks.append(parsed.chunk)
    return chunks, rows, counts


@pytest.mark.parametrize("fmt", ["aitm-csv", "ali-ccp-raw", "aliexpress-raw"])
def test_the_block_api_reads_what_the_reader_reads(tmp_path, fmt):
    if fmt == "aitm-csv":
        paths = [f"{CCP}/paddlerec_aitm/train/train.csv", f"{CCP}/paddlerec_aitm/test/test.csv"]
    elif fmt == "ali-ccp-raw":
        paths = list(_ccp_files(tmp_path))
    else:
        users = [_user_line(s, s) for s in (10, 11, 12)]
        items = [_item_line(10, 1, 0), _item_line(10, 2, 2), _item_line(11, 3, 1),
                 _item_line(12, 4, 0)]
        paths = [_write(str(tmp_path / "nl_user_train.csv"), ("\n".join(users) + "\n").encode()),
                 _write(str(tmp_path / "nl_item_train.csv"), ("\n".join(items) + "\n").encode())]
    reader = open_reader(fmt, paths)
    whole = list(reader)
    chunks, rows, counts = _by_blocks(open_reader(fmt, paths), block_bytes=64)
    assert len(chunks) > len(whole)  # small blocks: the rows arrive in more pieces
    assert counts == reader.counts and rows == reader.rows_by_path
    for name in ("categorical", "numerical", "row_id", "lines"):
        assert np.concatenate([getattr(c, name) for c in chunks]).tolist() == \
            np.concatenate([getattr(c, name) for c in whole]).tolist()
    for label in whole[0].labels:
        assert np.concatenate([c.labels[label] for c in chunks]).tolist() == \
            np.concatenate([c.labels[label] for c in whole]).tolist()


def test_the_block_api_needs_side_rows_exactly_for_a_join(tmp_path):
    sk, cf = _ccp_files(tmp_path)
    joined = open_reader("ali-ccp-raw", [sk, cf])
    block, first_line, _ = next(joined.blocks(sk))
    with pytest.raises(TypeError, match="needs side_rows"):
        joined.parse_block(block, first_line, sk)
    path = f"{CCP}/paddlerec_aitm/test/test.csv"
    alone = open_reader("aitm-csv", [path])
    block, first_line, _ = next(alone.blocks(path))
    with pytest.raises(TypeError, match="joins no side file"):
        alone.parse_block(block, first_line, path, side_rows={})
    with pytest.raises(InputError, match=r"skeleton_train.csv:1: .* not in the common-features"):
        joined.parse_block(*next(joined.blocks(sk))[:2], sk, side_rows={})
