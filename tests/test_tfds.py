"""TFDS builders end to end: synthetic raw files in a manual_dir, download_and_prepare,
as_dataset, values equal to what the readers give."""
import os
import shutil
import tarfile
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.readers import open_reader
from pwiser_tf.pipelines.synth import synthesize
from pwiser_tf.pipelines.tfds_builders import AliCcp, Aliexpress

ROWS = 1500


def _config(manual_dir):
    return tfds.download.DownloadConfig(manual_dir=str(manual_dir))


def _read_all(builder, split):
    rows = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    return sorted(rows, key=lambda r: (int(r["row_id"]), r["categorical"].tolist(),
                                       r["numerical"].tolist()))


def _reader_rows(format, paths):
    chunks = list(open_reader(format, paths))
    keys = ("categorical", "numerical")
    rows = [{"row_id": c.row_id[i], **{k: getattr(c, k)[i] for k in keys},
             **{k: v[i] for k, v in c.labels.items()}} for c in chunks for i in range(len(c))]
    return sorted(rows, key=lambda r: (int(r["row_id"]), r["categorical"].tolist(),
                                       r["numerical"].tolist()))


@pytest.fixture(scope="module")
def aliexpress_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("ae")
    synthesize("aliexpress", ROWS, str(root / "synth"), seed=1, country="fr")
    return root


def test_aliexpress_builder_from_csv_files(aliexpress_raw, tmp_path):
    manual = tmp_path / "manual" / "unzipped"  # files may sit at any depth
    shutil.copytree(aliexpress_raw / "synth" / "raw", manual)
    builder = Aliexpress(config="fr", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=_config(tmp_path / "manual"))
    assert builder.info.splits["train"].num_examples + builder.info.splits["test"].num_examples \
        == ROWS
    assert builder.info.features["categorical"].shape == (16,)
    assert builder.info.features["numerical"].shape == (63,)
    for split in ("train", "test"):
        got = _read_all(builder, split)
        want = _reader_rows("aliexpress-raw", [str(manual / f"fr_user_{split}.csv"),
                                               str(manual / f"fr_item_{split}.csv")])
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g["row_id"] == w["row_id"]
            np.testing.assert_array_equal(g["categorical"], w["categorical"])
            np.testing.assert_array_equal(g["numerical"], w["numerical"])
            assert (g["click"], g["conversion"]) == (w["click"], w["conversion"])
    # reads back through tfds.builder by its registered name and config
    again = tfds.builder("aliexpress/fr", data_dir=str(tmp_path / "tfds"))
    assert again.info.splits["test"].num_examples == builder.info.splits["test"].num_examples


def test_aliexpress_builder_from_the_zip(aliexpress_raw, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    with zipfile.ZipFile(manual / "aliexpress_FR_datasets.zip", "w") as archive:
        for name in os.listdir(aliexpress_raw / "synth" / "raw"):
            archive.write(aliexpress_raw / "synth" / "raw" / name, f"FR/{name}")
    builder = Aliexpress(config="fr", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=_config(manual))
    clicks = sum(int(r["click"]) for r in tfds.as_numpy(builder.as_dataset(split="train")))
    want = sum(int(c.labels["click"].sum()) for c in open_reader(
        "aliexpress-raw", [str(aliexpress_raw / "synth" / "raw" / f"fr_{k}_train.csv")
                           for k in ("user", "item")]))
    assert clicks == want


def test_missing_files_explain_the_manual_download(tmp_path):
    builder = Aliexpress(config="nl", data_dir=str(tmp_path / "tfds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssertionError, match="tianchi"):  # TFDS's own check
        builder.download_and_prepare(download_config=_config(tmp_path / "empty"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "nl_user_train.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="cannot find nl_item_train.csv, nl_user_test.csv, nl_item_test.csv"):
        builder.download_and_prepare(download_config=_config(tmp_path / "other"))


def test_ali_ccp_builder_keeps_multi_valued_fields_whole(tmp_path):
    synthesize("ali-ccp", ROWS, str(tmp_path / "synth"), seed=2)
    raw = tmp_path / "synth" / "raw"
    manual = tmp_path / "manual"
    manual.mkdir()
    with tarfile.open(manual / "sample_train.tar.gz", "w:gz") as archive:  # train: archive
        for name in ("sample_skeleton_train.csv", "common_features_train.csv"):
            archive.add(raw / name, name)
    for name in ("sample_skeleton_test.csv", "common_features_test.csv"):  # test: files
        shutil.copy(raw / name, manual / name)
    builder = AliCcp(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=_config(manual))
    for split in ("train", "test"):
        got = sorted(tfds.as_numpy(builder.as_dataset(split=split)),
                     key=lambda r: int(r["row_id"]))
        chunks = list(open_reader("ali-ccp-raw", [str(raw / f"sample_skeleton_{split}.csv"),
                                                  str(raw / f"common_features_{split}.csv")]))
        assert len(got) == sum(len(c) for c in chunks)
        rows = iter(got)
        for chunk in chunks:
            ends = {name: np.cumsum(chunk.multi_valued[name].lengths)
                    for name in chunk.multi_valued}
            for i in range(len(chunk)):
                row = next(rows)
                assert row["row_id"] == chunk.row_id[i]
                np.testing.assert_array_equal(row["categorical"], chunk.categorical[i])
                np.testing.assert_array_equal(row["numerical"], chunk.numerical[i])
                assert row["click"] == chunk.labels["click"][i]
                for name, ragged in chunk.multi_valued.items():
                    part = slice(ends[name][i] - ragged.lengths[i], ends[name][i])
                    np.testing.assert_array_equal(row[f"mv_{name}"], ragged.values[part])
                    np.testing.assert_array_equal(row[f"mv_{name}_values"],
                                                  ragged.weights[part])
        assert max(len(r["mv_150_14"]) for r in got) > 1
