"""The typed configuration end to end: one source for each choice and default, checked
before anything is written, the command line's flags made from the same fields, and
every run recording its resolved settings and the package version."""
import inspect
import json
import os
import subprocess
import sys
import typing

import pytest
import yaml

from pwiser_tf import __version__, cli, options
from pwiser_tf import config as config_lib
from pwiser_tf.errors import InputError
from tests.models_data import write_converted

# The PWiseR settings, spelled out at their defaults.
SPELLED_OUT = {"pwiser_weight": options.PWISER_WEIGHT, "margin_click": options.MARGIN_CLICK,
               "margin_nonclick": options.MARGIN_NONCLICK, "pwiser_head": "ctr",
               "pwiser_scores": "probability", "squared": True, "normalization": "anchor",
               "pairs": "global", "group": False}
# The same as the models' arguments (`pwiser.group` is `pwiser_group`), as a run records them.
MODEL_CONFIG = config_lib.PwiserSettings().model_arguments()
TINY = {"model": {"embedding_dim": 4, "tower_units": [8], "bottom_units": [8]},
        "train": {"epochs": 1, "batch_size": 100, "patience": 1}}
TINY_FLAGS = ["--set", "model={embedding_dim: 4, tower_units: [8], bottom_units: [8]}",
              "--set", "train.batch_size=100", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("typed") / "data")
    os.makedirs(folder)
    write_converted(folder, {"train": 600, "validation": 300, "test": 300})
    return folder


def choices(field) -> tuple:
    return typing.get_args(field.annotation)


def test_pwiser_defaults_are_the_loss_and_the_models_defaults():
    """One source of truth: `pwiser:` resolves to what `PWiseRLoss` and every model
    use when the setting is left out, and the sweep starts there too."""
    from pwiser_tf import models
    from pwiser_tf.losses import PWiseRLoss

    defaults = config_lib.PwiserSettings().model_dump()
    assert defaults == SPELLED_OUT
    loss = PWiseRLoss().get_config()
    assert {k: loss[k] for k in defaults if k in loss} == \
        {k: v for k, v in defaults.items() if k not in ("pwiser_head", "group")}
    assert loss["grouped"] == defaults["group"]
    signature = inspect.signature(models.CtrCvrModel.__init__).parameters
    assert {k: signature[k].default for k in MODEL_CONFIG} == MODEL_CONFIG
    for cls in models.MODELS.values():  # every setting is an argument of every model
        assert set(MODEL_CONFIG) <= models.model_arguments(cls)
    centre = config_lib.SweepCentre().model_dump()
    assert centre == {"margin": defaults["margin_click"], "pwiser_head": "ctr",
                      "pwiser_scores": "probability", "normalization": "anchor",
                      "pwiser_weight": defaults["pwiser_weight"]}


def test_the_choices_are_the_ones_the_loss_and_the_models_accept():
    from pwiser_tf import distribute, models
    from pwiser_tf.losses import PWiseRLoss

    fields = config_lib.PwiserSettings.model_fields
    for scores in choices(fields["pwiser_scores"]):
        for normalization in choices(fields["normalization"]):
            for pairs in choices(fields["pairs"]):
                PWiseRLoss(pwiser_scores=scores, normalization=normalization, pairs=pairs)
    for head in choices(fields["pwiser_head"]):
        models.CtrCvrTask(pwiser_head=head)
    task_head = inspect.signature(models.CtrCvrTask.__init__).parameters["pwiser_head"]
    assert task_head.default == fields["pwiser_head"].default
    with pytest.raises(InputError):
        models.CtrCvrTask(pwiser_head="bogus")
    assert typing.get_args(config_lib.Config.model_fields["losses"].annotation)[0] == \
        options.LossName
    assert set(choices(config_lib.TrainSettings.model_fields["mixed_precision"])) == \
        set(distribute.PRECISIONS)


@pytest.mark.slow  # a subprocess
def test_the_configuration_loads_no_tensorflow():
    """`pwiser-tf synth` loads the configuration schema and no TensorFlow."""
    code = ("import sys, pwiser_tf.config, pwiser_tf.options, pwiser_tf.commands; "
            "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


@pytest.mark.parametrize("assignment, message", [
    ("pwiser.pwiser_head=bogus", "'pwiser.pwiser_head': Input should be 'ctr', 'cvr' or "
                                 "'ctcvr' (got 'bogus')"),
    ("pwiser.pwiser_scores=logits", "'pwiser.pwiser_scores': Input should be 'probability' "
                                    "or 'logit'"),
    ("pwiser.normalization=batch", "'pwiser.normalization': Input should be 'anchor' or "
                                   "'pair'"),
    ("pwiser.pairs=all", "'pwiser.pairs': Input should be 'global' or 'replica'"),
    ("pwiser.pwiser_weight=null", "'pwiser.pwiser_weight'"),
    ("model.pwiser_weight=1", "pwiser_weight is not a model argument here: PWiseR's settings "
                              "go under pwiser: (pwiser.pwiser_weight)"),
    ("model_options.mmoe.margin_click=1", "mmoe.margin_click is not a model argument here"),
    ("sweep.axes={margin: [0.1, -1]}", "'sweep.axes': margin.1: Input should be greater "
                                       "than or equal to 0"),
    ("sweep.axes={pwiser_head: [ctr, bogus]}", "'sweep.axes': pwiser_head.1: Input should be"),
    ("sweep.axes={temperature: [1]}", "unknown axis 'temperature'; choose from margin, "
                                      "pwiser_head"),
])
def test_bad_choices_are_refused_by_validate(assignment, message):
    raw = config_lib.resolve(config_lib.packaged("base"), overrides=[assignment])
    with pytest.raises(InputError) as err:
        config_lib.validate(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_validation_returns_the_typed_settings_as_they_are():
    typed = config_lib.validate(config_lib.packaged("sweep"))
    assert isinstance(typed, config_lib.Config) and config_lib.validate(typed) is typed
    assert typed.pwiser == config_lib.PwiserSettings()
    assert list(typed.sweep.axes) == ["margin", "pwiser_head", "pwiser_scores",
                                      "normalization", "pwiser_weight"]  # as written
    variant = typed.merged({"pwiser": {"pwiser_weight": 0.5}})
    assert variant.pwiser.pwiser_weight == 0.5 and typed.pwiser.pwiser_weight == 0.03
    assert variant.sweep == typed.sweep


def test_a_bad_pwiser_head_is_refused_before_anything_is_written(data, tmp_path, capsys):
    from pwiser_tf import training

    out = tmp_path / "run"
    argv = ["train", "--data", data, "--model", "shared-bottom", "--loss", "pwiser",
            "--output", out, "--set", "pwiser.pwiser_head=bogus", *TINY_FLAGS]
    assert cli.main(list(map(str, argv))) == 2
    error = capsys.readouterr().err
    assert "configuration key 'pwiser.pwiser_head'" in error and "'ctcvr'" in error, error
    assert not out.exists()
    with pytest.raises(InputError, match="'pwiser.pwiser_head'"):  # the library's door
        training.resolve_run(data, "shared-bottom", "pwiser", 0,
                             {"pwiser": {"pwiser_head": "bogus"}})
    with pytest.raises(InputError, match="'pwiser.pwiser_head'"):
        training.train_run(data, str(out), "shared-bottom", "pwiser", 0,
                           {"pwiser": {"pwiser_head": "bogus"}}, progress=False)
    assert not out.exists()
    # The flag: argparse refuses it with the choices, before the command runs.
    with pytest.raises(SystemExit):
        cli.main(list(map(str, ["train", "--data", data, "--model", "mmoe", "--loss",
                                "pwiser", "--output", out, "--pwiser-head", "bogus"])))
    assert "choose from 'ctr', 'cvr', 'ctcvr'" in capsys.readouterr().err
    assert not out.exists()


def test_spelled_out_defaults_give_the_same_fingerprint(data):
    from pwiser_tf import training

    def key(config, loss="pwiser"):
        spec = training.resolve_run(data, "shared-bottom", loss, 0, config)
        return training.fingerprint(spec.settings), spec

    default, spec = key({})
    assert {k: spec.settings["model_config"][k] for k in MODEL_CONFIG} == MODEL_CONFIG
    assert key({"pwiser": SPELLED_OUT})[0] == default
    assert key({"pwiser": {"pwiser_weight": options.PWISER_WEIGHT}})[0] == default
    assert key({"pwiser": {"pwiser_weight": 1.0}})[0] != default  # lambda's old default
    # A BCE run has no PWiseR term: its settings do not hold them.
    assert key({}, "bce")[0] == key({"pwiser": {"pwiser_weight": 1.0}}, "bce")[0]
    assert "pwiser_weight" not in key({}, "bce")[1].settings["model_config"]


def test_the_flags_are_made_from_the_fields():
    """Each flag's choices are its field's Literal, its help the field's description."""
    fields = {"train": ("pwiser.pwiser_head", "pwiser.pwiser_scores", "pwiser.normalization",
                        "pwiser.pwiser_weight", "train.epochs", "train.mixed_precision"),
              "experiment": ("losses", "seeds", "train.epochs"),
              "sweep": ("sweep.model", "sweep.axes.pwiser_weight", "sweep.axes.margin")}
    for command, keys in fields.items():
        parser = cli.build_parser([command])
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        actions = {a.dest: a for a in sub._actions}
        for key in keys:
            annotation, info = config_lib.field(key)
            action = actions["setting:" + key]
            assert info.description in action.help, (command, key)
            if typing.get_origin(annotation) is typing.Literal:
                assert tuple(action.choices) == typing.get_args(annotation)
    train = next(a for a in cli.build_parser(["train"])._actions if a.dest == "command")
    loss = next(a for a in train.choices["train"]._actions if a.dest == "loss")
    assert tuple(loss.choices) == options.LOSSES


def test_flags_and_set_give_the_same_settings():
    from pwiser_tf.commands import resolve_config

    def settings(*argv):
        argv = ["train", "--data", "d", "--model", "mmoe", "--loss", "pwiser",
                "--output", "o", *argv]
        return resolve_config(cli.build_parser(argv).parse_args(argv), "base")

    flags = settings("--pwiser-weight", "0.5", "--pwiser-head", "ctcvr", "--epochs", "3")
    spelled = settings("--set", "pwiser.pwiser_weight=0.5", "--set",
                       "pwiser.pwiser_head=ctcvr", "--set", "train.epochs=3")
    assert flags == spelled and flags.pwiser.pwiser_weight == 0.5
    assert settings() == config_lib.validate(config_lib.packaged("base"))
    with pytest.raises(SystemExit):  # a list flag checks each item against the choices
        argv = ["experiment", "--losses", "bce,focal", "--output", "o"]
        cli.build_parser(argv).parse_args(argv)


@pytest.mark.slow
def test_a_run_records_its_resolved_settings_and_version(data, tmp_path, capsys):
    """run.json, config.yaml and metrics.json hold the resolved PWiseR settings and the
    version; spelling the defaults out with --set reuses the finished run."""
    out = tmp_path / "run"
    argv = ["train", "--data", data, "--model", "shared-bottom", "--loss", "pwiser",
            "--output", out, *TINY_FLAGS]
    assert cli.main(list(map(str, argv))) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["version"] == __version__
    model_config = recorded["settings"]["model_config"]
    assert {k: model_config[k] for k in MODEL_CONFIG} == MODEL_CONFIG
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["version"] == __version__
    assert {k: written["model_config"][k] for k in MODEL_CONFIG} == MODEL_CONFIG
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["version"] == __version__ and metrics == printed
    finished = (out / "metrics.json").stat().st_mtime_ns

    spelled = [f"pwiser.{k}={json.dumps(v)}" for k, v in SPELLED_OUT.items()]
    again = argv + [arg for assignment in spelled for arg in ("--set", assignment)]
    assert cli.main(list(map(str, again))) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out) == printed
    assert (out / "metrics.json").stat().st_mtime_ns == finished  # reused, not retrained
