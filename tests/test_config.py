"""Configuration files, packaged defaults and overrides."""
import json

import pytest

from pwiser_tf import config
from pwiser_tf.errors import InputError


def test_packaged_configs_load():
    default = config.packaged("default")
    assert set(default["losses"]) == {"bce", "pwiser"}
    assert len(default["seeds"]) >= 3
    assert config.packaged("paper")["models"][0] == "stl"


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"epochs": 4}, "models": ["ple"]}))
    cfg = config.resolve({"train": {"epochs": 10, "batch_size": 8}}, str(path),
                         ["train.batch_size=16", "models=[mmoe, esmm]", "pwiser.margin_click=0.05"])
    assert cfg == {"train": {"epochs": 4, "batch_size": 16}, "models": ["mmoe", "esmm"],
                   "pwiser": {"margin_click": 0.05}}


@pytest.mark.parametrize("content, message", [
    ("train: [unclosed", "not valid YAML"),
    ("- a list", "must be a mapping"),
])
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        config.load(str(path))
    assert str(path) in str(err.value)


def test_bad_override_and_missing_file():
    with pytest.raises(InputError, match="KEY=VALUE"):
        config.override({}, "train.epochs")
    with pytest.raises(InputError, match="not found"):
        config.load("/nonexistent/config.yaml")
