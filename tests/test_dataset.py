"""`make_dataset` on small converted directories written record by record."""
import os

import numpy as np
import pytest
import tensorflow as tf

from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import make_dataset
from pwiser_tf.pipelines.dataset import ShardError
from pwiser_tf.pipelines.schema import Field, Metadata, Schema, Split

SCHEMA = Schema(dataset="tiny",
                categorical=(Field("c1", 50), Field("c2", 7), Field("c3", 3)),
                numerical=("n1", "n2"),
                multi_valued=(Field("hist", 100, has_values=True), Field("tags", 20)),
                labels=("click", "conversion", "intent"))
ROWS = 103


def _rows(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        click = int(rng.random() < 0.4)
        hist_len, tags_len = int(rng.integers(0, 6)), int(rng.integers(0, 3))
        rows.append({
            "categorical": [i % 50, int(rng.integers(7)), int(rng.integers(3))],
            "numerical": [i / 128.0, float(np.float32(rng.random()))],
            "mv_hist": [int(v) for v in rng.integers(0, 100, hist_len)],
            "mv_hist_values": [float(np.float32(v)) for v in rng.random(hist_len)],
            "mv_tags": [int(v) for v in rng.integers(0, 20, tags_len)],
            "click": click, "conversion": click * int(rng.random() < 0.3),
            "intent": click * int(rng.random() < 0.5),
        })
    return rows


def _example(row):
    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    feature = {"categorical": ints(row["categorical"]), "numerical": floats(row["numerical"]),
               "mv_hist": ints(row["mv_hist"]), "mv_hist_values": floats(row["mv_hist_values"]),
               "mv_tags": ints(row["mv_tags"])}
    feature.update({name: ints([row[name]]) for name in SCHEMA.labels})
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_converted(directory, rows, shards, compression=""):
    """A converted directory: `shards` train shards in row order, plus metadata."""
    os.makedirs(directory, exist_ok=True)
    suffix = ".tfrecord.gz" if compression else ".tfrecord"
    options = tf.io.TFRecordOptions(compression_type=compression)
    names = []
    for i, part in enumerate(np.array_split(np.arange(len(rows)), shards)):
        name = f"train-{i:05d}-of-{shards:05d}{suffix}"
        with tf.io.TFRecordWriter(os.path.join(directory, name), options) as writer:
            for j in part:
                writer.write(_example(rows[j]))
        names.append(name)
    Metadata(schema=SCHEMA, splits={"train": Split(names, {"rows": len(rows)})},
             compression=compression).save(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def rows():
    return _rows(ROWS)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, rows):
    return write_converted(tmp_path_factory.mktemp("plain"), rows, shards=4)


@pytest.fixture(scope="module")
def gzipped(tmp_path_factory, rows):
    return write_converted(tmp_path_factory.mktemp("gzip"), rows, shards=2,
                           compression="GZIP")


def _collect(dataset):
    features, labels = {}, {}
    for batch_features, batch_labels in dataset:
        for out, batch in ((features, batch_features), (labels, batch_labels)):
            for key, value in batch.items():
                out.setdefault(key, []).append(value.numpy())
    return features, labels


def _padded(values, pad, width):
    out = np.full([width], pad, dtype=np.asarray(values or [0]).dtype)
    out[:len(values)] = values
    return out


def _assert_rows(features, labels, rows):
    categorical = np.concatenate(features["categorical"])
    np.testing.assert_array_equal(categorical, [r["categorical"] for r in rows])
    np.testing.assert_array_equal(np.concatenate(features["numerical"]),
                                  np.array([r["numerical"] for r in rows], np.float32))
    for name in SCHEMA.labels:
        got = np.concatenate(labels[name])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, [r[name] for r in rows])
    i = 0
    for hist, values, tags in zip(features["mv_hist"], features["mv_hist_values"],
                                  features["mv_tags"]):
        for k in range(len(hist)):
            row = rows[i + k]
            np.testing.assert_array_equal(hist[k], _padded(row["mv_hist"], -1, hist.shape[1]))
            np.testing.assert_array_equal(
                values[k], _padded(row["mv_hist_values"], 0.0, values.shape[1]).astype(np.float32))
            np.testing.assert_array_equal(tags[k], _padded(row["mv_tags"], -1, tags.shape[1]))
        i += len(hist)
    assert i == len(rows)


def test_values_exact_in_file_order(plain, rows):
    features, labels = _collect(make_dataset(plain, 16))
    _assert_rows(features, labels, rows)
    # padding to the longest list of each batch
    longest = max(len(r["mv_hist"]) for r in rows[:16])
    assert features["mv_hist"][0].shape == (16, longest)


def test_gzip(gzipped, rows):
    features, labels = _collect(make_dataset(gzipped, 32))
    _assert_rows(features, labels, rows)


def test_file_pattern_reads_schema_beside_the_files(plain, rows):
    features, labels = _collect(make_dataset(os.path.join(plain, "train-*.tfrecord"), 50))
    _assert_rows(features, labels, rows)


def test_drop_remainder_and_fixed_length_give_static_shapes(plain, rows):
    ds = make_dataset(plain, 16, drop_remainder=True, multi_valued_length=3)
    features, labels = ds.element_spec
    assert features["categorical"].shape == (16, 3)
    assert features["numerical"].shape == (16, 2)
    assert features["mv_hist"].shape == (16, 3)
    assert features["mv_hist_values"].shape == (16, 3)
    assert features["mv_tags"].shape == (16, 3)
    assert labels["click"].shape == (16,)
    got, _ = _collect(ds)
    assert len(got["categorical"]) == ROWS // 16
    hist = np.concatenate(got["mv_hist"])
    expected = [_padded(r["mv_hist"][:3], -1, 3) for r in rows[:len(hist)]]
    np.testing.assert_array_equal(hist, expected)


@pytest.mark.parametrize("group", [1, 4])
def test_shuffle_is_deterministic_for_a_seed_and_covers_every_row(plain, group):
    def order(seed):
        features, _ = _collect(make_dataset(plain, 10, shuffle=True, seed=seed,
                                            shuffle_buffer=40, shuffle_group=group))
        assert [len(b) for b in features["numerical"]] == [10] * 10 + [3]
        return np.concatenate(features["numerical"])[:, 0]

    first, again, other = order(1), order(1), order(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, np.sort(first))
    np.testing.assert_array_equal(np.sort(first), np.arange(ROWS) / np.float32(128.0))


def test_shuffled_batches_have_static_shapes_with_drop_remainder(plain):
    ds = make_dataset(plain, 16, shuffle=True, seed=0, drop_remainder=True,
                      multi_valued_length=2)
    features, labels = ds.element_spec
    assert features["categorical"].shape == (16, 3) and labels["intent"].shape == (16,)
    assert features["mv_tags"].shape == (16, 2)
    got, _ = _collect(ds)
    assert [len(b) for b in got["categorical"]] == [16] * (ROWS // 16)


@pytest.mark.parametrize("shuffle", [False, True])
def test_repeat(plain, shuffle):
    features, _ = _collect(make_dataset(plain, 100, repeat=2, shuffle=shuffle, seed=0))
    values = np.concatenate(features["numerical"])[:, 0]
    np.testing.assert_array_equal(np.sort(values),
                                  np.repeat(np.arange(ROWS) / np.float32(128.0), 2))


@pytest.mark.parametrize("pipelines", [2, 3, 5])
def test_input_context_shards_cover_every_row_once(plain, pipelines):
    # 4 shards: 2 and 3 pipelines split by file (3 unevenly), 5 split by record.
    seen = []
    for index in range(pipelines):
        context = tf.distribute.InputContext(num_input_pipelines=pipelines,
                                             input_pipeline_id=index,
                                             num_replicas_in_sync=pipelines)
        # no seed: each pipeline shuffles its own way, yet the parts stay disjoint
        ds = make_dataset(plain, 8 * pipelines, input_context=context, shuffle=True,
                          seed=None, deterministic=False)
        features, _ = _collect(ds)
        assert max(len(b) for b in features["numerical"]) <= 8  # per-replica batch
        seen.append(np.concatenate(features["numerical"])[:, 0])
    assert all(len(part) for part in seen)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)),
                                  np.arange(ROWS) / np.float32(128.0))


def _copy_with(source, target, edit):
    """A copy of a converted directory whose first shard is edited."""
    metadata = Metadata.load(source)
    os.makedirs(target)
    for i, name in enumerate(metadata.splits["train"].files):
        data = open(os.path.join(source, name), "rb").read()
        with open(os.path.join(target, name), "wb") as f:
            f.write(edit(data) if i == 0 else data)
    metadata.save(str(target))
    return os.path.join(target, metadata.splits["train"].files[0])


@pytest.mark.parametrize("kind,edit", [
    ("truncated", lambda data: data[:-9]),
    ("corrupt", lambda data: data[:40] + bytes(16) + data[56:]),
])
def test_bad_shard_names_the_file(plain, tmp_path, kind, edit):
    bad = _copy_with(plain, tmp_path / kind, edit)
    with pytest.raises(ShardError, match="truncated or corrupt") as err:
        make_dataset(str(tmp_path / kind), 16)
    assert bad in str(err.value)
    assert isinstance(err.value, InputError)


def test_truncated_gzip_shard_names_the_file(gzipped, tmp_path):
    bad = _copy_with(gzipped, tmp_path / "gz", lambda data: data[:len(data) // 2])
    with pytest.raises(ShardError, match=os.path.basename(bad)):
        make_dataset(str(tmp_path / "gz"), 16)


def test_missing_shard_and_bad_arguments(plain, tmp_path):
    metadata = Metadata.load(plain)
    metadata.splits["train"].files.append("train-00009-of-00009.tfrecord")
    os.makedirs(tmp_path / "m")
    for name in metadata.splits["train"].files[:-1]:
        os.link(os.path.join(plain, name), tmp_path / "m" / name)
    metadata.save(str(tmp_path / "m"))
    with pytest.raises(ShardError, match="train-00009-of-00009.tfrecord: shard is missing"):
        make_dataset(str(tmp_path / "m"), 16)
    with pytest.raises(InputError, match="no split 'test'"):
        make_dataset(plain, 16, split="test")
    with pytest.raises(InputError, match="batch_size"):
        make_dataset(plain, 0)
    with pytest.raises(InputError, match="no file matches"):
        make_dataset(str(tmp_path / "nothing-*.tfrecord"), 16)


# --- directories written by the converter -------------------------------------

@pytest.fixture(scope="module")
def converted_ccp(tmp_path_factory):
    from pwiser_tf.pipelines.convert import convert
    from pwiser_tf.pipelines.synth import synthesize

    root = tmp_path_factory.mktemp("ccp")
    synthesize("ali-ccp", 1200, str(root / "synth"), seed=4)
    raw = root / "synth" / "raw"
    inputs = {split: [str(raw / f"sample_skeleton_{split}.csv"),
                      str(raw / f"common_features_{split}.csv")] for split in ("train", "test")}
    convert("ali-ccp-raw", inputs, str(root / "data"), compression="GZIP",
            records_per_shard=250, progress=False)
    return root, inputs


def test_converted_raw_ali_ccp_streams_the_readers_values(converted_ccp):
    from pwiser_tf.pipelines.readers import open_reader

    root, inputs = converted_ccp
    metadata = Metadata.load(str(root / "data"))
    assert metadata.compression == "GZIP" and len(metadata.splits["test"].files) > 1
    chunks = list(open_reader("ali-ccp-raw", inputs["test"]))
    features, labels = _collect(make_dataset(str(root / "data"), 64, split="test"))
    np.testing.assert_array_equal(np.concatenate(features["categorical"]),
                                  np.concatenate([c.categorical for c in chunks]))
    np.testing.assert_array_equal(np.concatenate(labels["click"]),
                                  np.concatenate([c.labels["click"] for c in chunks]))
    for field in metadata.schema.multi_valued:
        want = [list(v) for c in chunks for v in np.split(
            c.multi_valued[field.name].values, np.cumsum(c.multi_valued[field.name].lengths)[:-1])]
        got = [list(row[row >= 0]) for batch in features[field.key] for row in batch]
        assert got == want, field.name
        for batch, values in zip(features[field.key], features[field.values_key]):
            assert np.all(values[batch < 0] == 0.0)  # values padded with 0 where ids are -1
