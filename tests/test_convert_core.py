"""What both converter runners share (`pipelines/conversion/`), on the local runner: the
policy of conversions without a click (one vocabulary with the loss's, the old spelling
refused by name), the refusals before anything is written, and the `--index-dir` help.
The same refusals on the Beam runner are in `test_beam_convert.py`."""
import os
import re

import pytest

from conftest import SAMPLES
from pwiser_tf import cli, kernel, options
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.convert import convert
from pwiser_tf.pipelines.readers import open_reader
from pwiser_tf.pipelines.readers.base import POLICIES
from pwiser_tf.pipelines.schema import Metadata

AITM_TEST = os.path.join(SAMPLES, "ali_ccp", "paddlerec_aitm", "test", "test.csv")  # 3 orphans
AE_TEST = os.path.join(SAMPLES, "aliexpress", "torch_rechub", "aliexpress_test_sample.csv")


def test_one_vocabulary_for_the_loss_and_the_converter():
    assert set(kernel.CONVERSION_WITHOUT_CLICK) | set(POLICIES) == \
        set(options.CONVERSION_WITHOUT_CLICK)
    assert kernel.CONVERSION_WITHOUT_CLICK is options.CONVERSION_WITHOUT_CLICK_IN_LOSS
    assert POLICIES is options.CONVERSION_WITHOUT_CLICK_IN_CONVERT


@pytest.mark.parametrize("policy,rows,clicks", [("drop", 47, 3), ("as_click", 50, 6)])
def test_drop_and_as_click(tmp_path, policy, rows, clicks):
    metadata = convert("aitm-csv", ["test=" + AITM_TEST], str(tmp_path / policy),
                       conversion_without_click=policy, progress=False)
    counts = metadata.splits["test"].counts
    assert (counts["rows"], counts["clicks"]) == (rows, clicks)
    assert metadata.extra["source_counts"]["test"]["conversions_without_click"] == 3


def test_error_names_the_file_and_line(tmp_path):
    with pytest.raises(InputError, match=re.escape(AITM_TEST) + r":\d+: a conversion without "
                                         r"a click .*--conversion-without-click"):
        convert("aitm-csv", ["test=" + AITM_TEST], str(tmp_path / "out"),
                conversion_without_click="error", progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_the_cli_takes_the_new_flag(tmp_path):
    out = str(tmp_path / "out")
    assert cli.main(["convert", "--format", "aitm-csv", "--no-progress", "--output", out,
                     "--input", "test=" + AITM_TEST,
                     "--conversion-without-click", "as_click"]) == 0
    assert Metadata.load(out).splits["test"].counts["rows"] == 50


def test_a_repeated_input_flag_adds_its_files(tmp_path):
    # argparse keeps the last of a repeated flag, so the train input was dropped unnoticed;
    # both are seen now, and one file given as two splits is refused
    twice = str(tmp_path / "twice")
    assert cli.main(["convert", "--format", "aitm-csv", "--no-progress", "--output", twice,
                     "--input", "train=" + AITM_TEST, "--input", "test=" + AITM_TEST]) == 2
    assert not os.path.exists(twice)


def test_the_old_spelling_is_refused_with_the_new_name(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["convert", "--format", "aitm-csv", "--no-progress", "--output", out,
                     "--input", "test=" + AITM_TEST,
                     "--conversions-without-click", "click"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--conversion-without-click" in err \
        and "as_click" in err, err
    assert not os.path.exists(out)
    with pytest.raises(InputError, match="now conversion_without_click"):
        convert("aitm-csv", ["test=" + AITM_TEST], out, conversions_without_click="click",
                progress=False)
    with pytest.raises(InputError, match="now conversion_without_click"):
        open_reader("aitm-csv", [AITM_TEST], conversions_without_click="click")
    with pytest.raises(InputError, match="conversion_without_click must be one of"):
        convert("aitm-csv", ["test=" + AITM_TEST], out, conversion_without_click="click",
                progress=False)


def test_index_dir_help_says_where_the_index_goes(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["convert", "--help"])
    assert exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    start = text.index("--index-dir INDEX_DIR raw formats")  # its entry, not the usage line
    index_help = text[start:text.index("--remap-ids", start)]
    assert "DIR/.index, inside the output, removed when done" in index_help
    assert "temp dir" not in index_help
    assert "--conversions-without-click" not in text  # the old spelling is not offered


def test_one_file_as_two_splits_and_an_empty_file_are_refused(tmp_path):
    with pytest.raises(InputError, match="given as both train and test"):
        convert("aliexpress-csv", ["train=" + AE_TEST, "test=" + AE_TEST],
                str(tmp_path / "a"), progress=False)
    empty = tmp_path / "empty_train.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        convert("aliexpress-csv", [str(empty), AE_TEST], str(tmp_path / "b"), progress=False)
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
