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


def test_own_data_or_config_start_from_the_reference_settings(tmp_path):
    from pwiser_tf import cli
    from pwiser_tf.commands import resolve_config

    def args(command, *argv):
        argv = [command, *argv, "--output", "o"]
        return cli.build_parser(argv).parse_args(argv)

    builtin = resolve_config(args("experiment"), "default")
    assert builtin.datasets["synthetic"].synth.dataset == "aliexpress"
    assert builtin.model["embedding_dim"] == 8  # the small built-in networks
    path = tmp_path / "paper.yaml"
    path.write_text("models: [mmoe]\nmodel: {}\n")
    for own in (["--config", str(path)], ["--data", "d"]):
        config = resolve_config(args("experiment", *own, "--epochs", "3"), "default")
        assert config.model == {} and config.model_options == {}
        assert config.train.learning_rate == 1e-3 and config.train.epochs == 3
    sweep = resolve_config(args("sweep", "--data", "d"), "sweep")
    assert sweep.sweep.model == "mmoe" and sweep.model == {}


@pytest.mark.parametrize("assignment, message", [
    ("train.learnin_rate=0.5", "unknown configuration key 'train.learnin_rate'; did you mean "
                               "'train.learning_rate'?"),
    ("train.patiense=3", "did you mean 'train.patience'?"),
    ("train.epoch=3", "did you mean 'train.epochs'?"),
    ("trian={epochs: 3}", "unknown configuration key 'trian'; did you mean 'train'?"),
    ("pwiser.pwiser_wieght=1", "did you mean 'pwiser.pwiser_weight'?"),
    ("train.batch_size=abc", "'train.batch_size': Input should be a valid integer"),
    ("train.epochs=0", "'train.epochs': Input should be greater than or equal to 1"),
    ("models=mmoe", "'models': Input should be a valid list (got 'mmoe'); write a list, "
                    "e.g. models=[mmoe]"),
    ("losses=[bce, focal]", "'losses.1': Input should be 'bce' or 'pwiser'"),
    ("datasets={d: {}}", "'datasets.d': needs 'data: DIR' or 'synth: {...}'"),
])
def test_configs_are_validated(assignment, message):
    """Unknown keys name the nearest valid key; types and ranges are checked."""
    cfg = config.resolve(config.packaged("default"), overrides=[assignment])
    with pytest.raises(InputError) as err:
        config.validate(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_every_packaged_config_is_valid_and_values_are_coerced():
    for name in ("base", "default", "paper", "sweep", "adaftr_ablation"):
        typed = config.validate(config.packaged(name))
        # Every value given is kept, and the written form reads back as the same settings.
        assert config.merge(typed.to_dict(), config.packaged(name)) == typed.to_dict()
        assert config.validate(typed.to_dict()) == typed
    cfg = config.resolve(config.packaged("base"), overrides=["train.learning_rate=1e-3"])
    assert cfg["train"]["learning_rate"] == "1e-3"  # YAML 1.1 reads this as a string
    assert config.validate(cfg).train.learning_rate == 0.001
    assert config.validate({"train": {"epochs": 3}}).train.model_dump() == {
        "epochs": 3, "batch_size": 2048, "patience": 2, "learning_rate": 1e-3,
        "weight_decay": 1e-6, "mixed_precision": "off", "jit_compile": None,
        "multi_valued_length": 64}
