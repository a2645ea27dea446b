"""The converter on Apache Beam (DirectRunner, 2 workers) writes the local converter's records.

Same multiset of serialized records per split (shards may be cut differently),
same counts and vocabulary sizes, for the processed 82-column AliExpress CSV,
the AliExpress raw user/item join and the Ali-CCP raw skeleton/common-features
join with `--remap-ids`. And it refuses what the local runner refuses (one core,
`pipelines/conversion/`): a rerun after an input changed converts again, one file
given as two splits, an empty file, a needlessly large vocabulary and a conversion
without a click under the `error` policy are refused.
"""
import collections
import glob
import os
import re
import shutil

import pytest
import tensorflow as tf

from pwiser_tf import cli
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines import synthesize
from pwiser_tf.pipelines.beam_convert import convert_beam
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.readers import idmap
from pwiser_tf.pipelines.readers.idmap import IdMap
from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata

pytestmark = pytest.mark.slow  # each test runs Beam pipelines

BEAM_OPTIONS = ["direct_num_workers=2", "direct_running_mode=multi_threading"]
OPTIONS = dict(option.split("=") for option in BEAM_OPTIONS)


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


def _processed(aliexpress):
    _, written = aliexpress
    return written["files"]["processed/train.csv"], written["files"]["processed/test.csv"]


def test_a_rerun_after_an_input_changed_converts_again(aliexpress, tmp_path):
    source, _ = _processed(aliexpress)
    train, out = tmp_path / "train.csv", str(tmp_path / "out")
    shutil.copy(source, train)
    first = convert_beam("aliexpress-csv", [str(train)], out, beam_options=OPTIONS)
    assert convert_beam("aliexpress-csv", [str(train)], out,
                        beam_options=OPTIONS).to_dict() == first.to_dict()  # reused
    with open(source) as f:
        data = f.read().splitlines()[1:]
    with open(train, "a") as f:  # the user adds rows to the file
        f.write("\n".join(data[:7]) + "\n")
    with pytest.raises(InputError, match="holds a finished conversion of other inputs"):
        convert_beam("aliexpress-csv", [str(train)], out, beam_options=OPTIONS)
    second = convert_beam("aliexpress-csv", [str(train)], out, beam_options=OPTIONS,
                          overwrite=True)
    rows = first.splits["train"].counts["rows"]
    assert second.splits["train"].counts["rows"] == rows + 7
    assert sum(records(out, "train").values()) == rows + 7
    assert Metadata.load(out).to_dict() == second.to_dict()


def test_one_file_as_two_splits_is_refused(aliexpress, tmp_path):
    train, _ = _processed(aliexpress)
    with pytest.raises(InputError, match="given as both train and test"):
        convert_beam("aliexpress-csv", ["train=" + train, "test=" + train],
                     str(tmp_path / "out"), beam_options=OPTIONS)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("content,message", [("", "empty file"),
                                             ("header", "no data rows")])
def test_an_empty_file_is_refused(aliexpress, tmp_path, content, message):
    train, test = _processed(aliexpress)
    empty = tmp_path / "more_train.csv"
    with open(train) as f:
        empty.write_text(f.readline() if content == "header" else "")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=re.escape(str(empty)) + ": " + message):
        convert_beam("aliexpress-csv", ["train=" + train, "train=" + str(empty),
                                        "test=" + test], str(out), beam_options=OPTIONS)
    assert not os.path.exists(out / METADATA_FILE)


def test_the_metadata_names_the_id_map_it_wrote(aliexpress, tmp_path, monkeypatch):
    monkeypatch.setattr(idmap, "FILE", "ids_by_field.npz")
    train, test = _processed(aliexpress)
    out = str(tmp_path / "out")
    metadata = convert_beam("aliexpress-csv", [train, test], out, remap_ids=True,
                            beam_options=OPTIONS)
    assert metadata.extra["id_maps"] == "ids_by_field.npz"
    assert sorted(n for n in os.listdir(out) if n.endswith(".npz")) == ["ids_by_field.npz"]
    assert IdMap.load(out).vocab_sizes() == {
        f.name: f.vocab_size for f in Metadata.load(out).schema.categorical}


def test_the_vocabulary_checks_apply(aliexpress, tmp_path):
    train, test = _processed(aliexpress)
    with pytest.raises(InputError, match=r"over the limit of 10; renumber the ids with "
                                         r"--remap-ids"):
        convert_beam("aliexpress-csv", [train, test], str(tmp_path / "out"), max_vocab=10,
                     beam_options=OPTIONS)
    # a table larger than its distinct ids: the sample leaves it open, a pass counts them
    with pytest.raises(InputError, match=r"over 1 times its \d+ distinct ids; renumber"):
        convert_beam("aliexpress-csv", [train, test], str(tmp_path / "out"),
                     max_vocab_ratio=1, sparse_vocab_floor=0, beam_options=OPTIONS)
    assert not os.path.exists(tmp_path / "out" / METADATA_FILE)


def test_a_conversion_without_click_is_refused_under_error(tmp_path):
    from conftest import SAMPLES

    path = os.path.join(SAMPLES, "ali_ccp", "paddlerec_aitm", "test", "test.csv")
    with pytest.raises(InputError, match=re.escape(path) + r":\d+: a conversion without a "
                                                           r"click"):
        convert_beam("aitm-csv", ["test=" + path], str(tmp_path / "out"),
                     conversion_without_click="error", beam_options=OPTIONS)
    kept = convert_beam("aitm-csv", ["test=" + path], str(tmp_path / "kept"),
                        conversion_without_click="as_click", beam_options=OPTIONS)
    assert kept.splits["test"].counts["rows"] == 50
