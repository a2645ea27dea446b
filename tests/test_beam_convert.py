"""The converter on Apache Beam (DirectRunner, 2 workers) writes the local converter's records.

Same multiset of serialized records per split (shards may be cut differently),
same counts and vocabulary sizes, for the processed 82-column AliExpress CSV,
the AliExpress raw user/item join and the Ali-CCP raw skeleton/common-features
join with `--remap-ids`.
"""
import collections
import glob
import os

import pytest
import tensorflow as tf

from pwiser_tf import cli
from pwiser_tf.pipelines import synthesize
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.readers.idmap import IdMap
from pwiser_tf.pipelines.schema import Metadata

BEAM_OPTIONS = ["direct_num_workers=2", "direct_running_mode=multi_threading"]


def records(directory, split):
    files = sorted(glob.glob(os.path.join(directory, f"{split}-*")))
    compression = "GZIP" if files and files[0].endswith(".gz") else ""
    return collections.Counter(
        r.numpy() for r in tf.data.TFRecordDataset(files, compression_type=compression))


def beam_cli(format, inputs, output, *flags):
    argv = ["convert", "--format", format, "--input", *inputs, "--output", str(output),
            "--runner", "direct", "--no-progress", *flags]
    for option in BEAM_OPTIONS:
        argv += ["--beam-option", option]
    assert cli.main(argv) == 0


def assert_same(local_dir, beam_dir):
    local, beam = Metadata.load(str(local_dir)), Metadata.load(str(beam_dir))
    assert sorted(local.splits) == sorted(beam.splits)
    assert local.schema == beam.schema
    for split in local.splits:
        assert local.splits[split].counts == beam.splits[split].counts
        want = records(local_dir, split)
        assert sum(want.values()) == local.splits[split].counts["rows"] > 0
        assert records(beam_dir, split) == want


@pytest.fixture(scope="module")
def aliexpress(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam_ae")
    return root, synthesize("aliexpress", 600, str(root / "synth"), seed=5, progress=False)


def test_processed_aliexpress_csv(aliexpress, tmp_path):
    _, written = aliexpress
    inputs = [written["files"]["processed/train.csv"], written["files"]["processed/test.csv"]]
    convert("aliexpress-csv", inputs, str(tmp_path / "local"), validation_fraction=0.2,
            compression="GZIP", progress=False, block_bytes=20_000)
    beam_cli("aliexpress-csv", inputs, tmp_path / "beam", "--validation-fraction", "0.2",
             "--compression", "gzip")
    assert_same(tmp_path / "local", tmp_path / "beam")


def test_aliexpress_raw_join(aliexpress, tmp_path):
    _, written = aliexpress
    inputs = [written["files"][f"raw/nl_{kind}_{split}.csv"]
              for split in ("train", "test") for kind in ("user", "item")]
    convert("aliexpress-raw", inputs, str(tmp_path / "local"), validation_fraction=0.2,
            progress=False)
    beam_cli("aliexpress-raw", inputs, tmp_path / "beam", "--validation-fraction", "0.2")
    assert_same(tmp_path / "local", tmp_path / "beam")


def test_ali_ccp_raw_join_with_remapped_ids(tmp_path):
    written = synthesize("ali-ccp", 500, str(tmp_path / "synth"), seed=6, progress=False)
    inputs = [written["files"][f"raw/{kind}_{split}.csv"] for split in ("train", "test")
              for kind in ("sample_skeleton", "common_features")]
    convert("ali-ccp-raw", inputs, str(tmp_path / "local"), remap_ids=True, progress=False)
    beam_cli("ali-ccp-raw", inputs, tmp_path / "beam", "--remap-ids")
    assert_same(tmp_path / "local", tmp_path / "beam")
    local, beam = IdMap.load(str(tmp_path / "local")), IdMap.load(str(tmp_path / "beam"))
    assert sorted(local.tables) == sorted(beam.tables)
    for name, table in local.tables.items():
        assert table.tolist() == beam.tables[name].tolist()


def test_beam_option_needs_a_beam_runner(tmp_path, capsys):
    assert cli.main(["convert", "--format", "aliexpress-csv", "--input", "x.csv",
                     "--output", str(tmp_path), "--beam-option", "a=b"]) == 2
    assert "--beam-option" in capsys.readouterr().err


def test_a_malformed_line_fails_the_pipeline_with_one_line(aliexpress, tmp_path, capsys):
    _, written = aliexpress
    bad = tmp_path / "train.csv"
    with open(written["files"]["processed/train.csv"]) as f:
        bad.write_text("".join([next(f), next(f), "1,2,3\n"]))
    assert cli.main(["convert", "--format", "aliexpress-csv", "--input", str(bad),
                     "--output", str(tmp_path / "out"), "--runner", "direct",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # 82 columns + intent (synthetic)
    assert err[-1] == (f"pwiser-tf convert: error: {bad}:3: malformed line: 3 columns, "
                       f"expected 83 (skip such lines with --skip-malformed)")
    assert not os.path.exists(tmp_path / "out")  # no shards, no metadata, no folder
