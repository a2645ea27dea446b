"""TFX Trainer module: `run_fn(fn_args)`, as TFX's generic Trainer executor calls it.

TFX is an optional extra (`pip install "pwiser-tf[tfx]"`) and this module does
not import it: only the attributes of `fn_args` (`tfx.components.FnArgs`) are read.

    trainer = tfx.components.Trainer(
        run_fn="pwiser_tf.tfx_trainer.run_fn",
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(),                  # whole epochs, early stopping
        eval_args=tfx.proto.EvalArgs(),                    # all eval records
        custom_config={"dataset": "aliexpress", "model": "mmoe", "loss": "pwiser",
                       "pwiser": {"pwiser_weight": 0.03},
                       "train": {"batch_size": 2048, "epochs": 10}, "strategy": "auto"})

`run_fn` is a thin adapter over the training core of `pwiser-tf train`
(`pwiser_tf.training`): it turns `fn_args` into typed settings
(`pwiser_tf.tfx_settings`, which lists the `custom_config` keys and checks them
as `pwiser-tf train` checks its configuration, before anything is read or
written), and trains with the same model build (seeded, compiled in the
strategy's scope; XLA and static shapes on a TPU), inputs (per-epoch shuffles
from the seed), early stopping, TensorBoard logs, export and scoring
(`pwiser_tf.metrics`' exact AUC, as `pwiser-tf evaluate`) as `pwiser-tf train`.

What it reads:

- the records of `fn_args.train_files` / `eval_files` (any number of file
  patterns, on any filesystem `tf.io.gfile` knows; GZIP when the files end in
  `.gz`, as ExampleGen writes them), either layout: `CsvExampleGen`'s one feature
  per column of a processed CSV, or the packed layout `pwiser-tf convert` writes
  (fed through `ImportExampleGen`). They are read with the project's reader and
  `Parser` (batch before parse), the parsing the serving signature uses too;
  `fn_args.data_accessor`'s TFXIO datasets would be a second parsing path, so
  they are not used. The schema: `pwiser_tf.tfx_schema`.
- `train_steps` None: up to `train.epochs` passes over the train files, each
  followed by a validation pass over the eval files; training stops after
  `train.patience` epochs without a gain in validation CTCVR AUC, and the best
  epoch's weights are exported (`pwiser-tf train`'s early stopping, with the
  eval files as the validation split). `train_steps` N: one epoch of N steps
  over the repeated train files. `eval_steps` N: N batches of eval records
  validate each epoch, and the first N x batch_size records are scored; None:
  every eval record, once. The eval files both select
  the best epoch and are scored, so their scores are optimistic: keep a split
  the Trainer never sees for TFX's Evaluator.
- `base_model` (a previous Trainer's model): every variable of it, trainable or
  not (batch norm's moving statistics too), starts the training, matched by
  name and shape.

What it writes: the SavedModel to `fn_args.serving_model_dir` (nothing when the
run diverges), whose `serving_default` parses the training records' layout (so
TFX's Evaluator can feed it ExampleGen's records) and whose `serving_columns`
takes per-column records (`models/export.py`); to `fn_args.model_run_dir`:
TensorBoard logs (`train/`, `validation/`, as `pwiser-tf train` writes them),
`history.json` (per epoch), `run.json` (the resolved settings and the version)
and `metrics.json` (the scores of the eval records). Under a multi-worker
strategy only the chief writes them; the other workers train in step and write
into temporary folders.

Keras: the models run on tf-keras (TFRS is a Keras 2 library), and TensorFlow
fixes the Keras flavour the first time `tf.keras` is used in a process. `run_fn`
sets `TF_USE_LEGACY_KERAS=1` itself, which is enough whenever nothing in the
executor's process has used `tf.keras` yet (importing TensorFlow is fine). If
Keras 3 was already loaded there, `run_fn` trains in a child process of the same
Python with `TF_USE_LEGACY_KERAS=1`, passing `fn_args` as JSON (all but
`data_accessor`, which is not used) and returning its metrics.
"""
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from pwiser_tf import fileio
from pwiser_tf.errors import InputError
from pwiser_tf.tfx_settings import TfxRun, hyperparameter_values, run_settings

FN_ARGS = ("working_dir", "train_files", "eval_files", "train_steps", "eval_steps",
           "schema_path", "serving_model_dir", "model_run_dir", "base_model",
           "hyperparameters", "custom_config")
RUN_FILE, HISTORY_FILE, METRICS_FILE = "run.json", "history.json", "metrics.json"


def run_fn(fn_args) -> Dict[str, float]:
    """Trains on `fn_args.train_files`, evaluates on `eval_files`, exports to
    `serving_model_dir`. Returns the evaluation metrics (TFX ignores the value)."""
    if tf_keras_ready():
        return train(fn_args)
    return run_in_child(fn_args)


def tf_keras_ready() -> bool:
    """Selects tf-keras for this process; False if Keras 3 was loaded already."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    return tf.keras.Model.__module__.split(".")[0] == "tf_keras"


def run_in_child(fn_args) -> Dict[str, float]:
    """`train(fn_args)` in a child process that starts on tf-keras."""
    args = {name: getattr(fn_args, name, None) for name in FN_ARGS}
    args["hyperparameters"] = hyperparameter_values(args["hyperparameters"])  # JSON
    with tempfile.TemporaryDirectory(prefix="pwiser-tfx-") as tmp:
        args_path = os.path.join(tmp, "fn_args.json")
        result_path = os.path.join(tmp, "result.json")
        with open(args_path, "w", encoding="utf-8") as f:
            json.dump(args, f)
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
        status = subprocess.run([sys.executable, "-m", "pwiser_tf.tfx_trainer", args_path,
                                 result_path], env=env).returncode
        result = {}
        if os.path.isfile(result_path):
            with open(result_path, encoding="utf-8") as f:
                result = json.load(f)
        if "error" in result:
            raise InputError(result["error"])
        if status != 0 or "metrics" not in result:
            raise RuntimeError(f"the tf-keras training process failed (exit status {status})")
        return result["metrics"]


def train(fn_args) -> Dict[str, float]:
    """`run_fn`'s work, on tf-keras: the settings, the model and its data
    (`prepare`), training with early stopping, the export and the scores."""
    from pwiser_tf import __version__, distribute, models, training

    run = run_settings(fn_args)  # checked before anything is read or written
    strategy = distribute.resolve_strategy(run.strategy)  # before any op
    inputs, model = prepare(fn_args, run, strategy)
    # Another worker than the chief trains in step, writing into temporary folders.
    with distribute.worker_directory(fn_args.serving_model_dir, strategy) as serving_dir, \
            distribute.worker_directory(getattr(fn_args, "model_run_dir", None),
                                        strategy) as run_dir, \
            tempfile.TemporaryDirectory(prefix="pwiser-tfx-state-") as state_dir:
        progress = training.EpochProgress(run.epochs, run.train.batch_size, enabled=False,
                                          steps=inputs.steps("train"))
        state = training.TrainingState(state_dir, run.train.patience, progress=progress)
        training.fit_epochs(model, inputs, run.seed, run.epochs, state, progress,
                            log_dir=run_dir)
        state.restore_best(model)
        models.export_saved_model(model, serving_dir, inputs.schema)
        if not distribute.is_chief(strategy):
            return {"task": distribute.task_name(strategy)}
        result = score(serving_dir, inputs, run)
        result.update(state.summary(), replicas=int(strategy.num_replicas_in_sync),
                      version=__version__)
        if run_dir:
            fileio.write_json(fileio.join(run_dir, RUN_FILE),
                              {"settings": run.settings, "version": __version__})
            fileio.write_json(fileio.join(run_dir, HISTORY_FILE), state.state["history"])
            fileio.write_json(fileio.join(run_dir, METRICS_FILE), result)
    return result


def prepare(fn_args, run: Optional[TfxRun] = None, strategy=None):
    """`(inputs, model)` of a run: the train and eval files as the core's `Inputs`
    (`tfx_inputs.FileInputs`) and the seeded, compiled model built in `strategy`'s
    scope (default: `run.strategy`), warm-started from `fn_args.base_model`."""
    from pwiser_tf import distribute, training
    from pwiser_tf.tfx_inputs import FileInputs
    from pwiser_tf.tfx_schema import resolve_schema

    run = run or run_settings(fn_args)
    strategy = strategy or distribute.resolve_strategy(run.strategy)
    train_files = match_files(fn_args.train_files, "train_files")
    eval_files = match_files(fn_args.eval_files, "eval_files")
    schema = resolve_schema(train_files, run.metadata, run.dataset,
                            getattr(fn_args, "schema_path", None))
    inputs = FileInputs({"train": train_files, "validation": eval_files}, schema, run.train,
                        strategy, steps={"train": run.train_steps,
                                         "validation": run.eval_steps})
    model = training.seeded_model(inputs, run.model, run.model_config, run.train, run.seed,
                                  schema)
    if getattr(fn_args, "base_model", None):
        warm_start(model, fn_args.base_model)
    return inputs, model


def score(serving_dir: str, inputs, run: TfxRun) -> Dict[str, float]:
    """The exact metrics (`pwiser_tf.metrics`) of the exported model on the eval
    records, through its serving signature, as `pwiser-tf evaluate` scores. A model
    that predicts NaN or infinity is removed and raises `guards.Diverged`."""
    from pwiser_tf import evaluation, guards, metrics

    files = inputs.files["validation"]
    limit = run.eval_steps * run.train.batch_size if run.eval_steps else None
    labels, predictions = evaluation.predict_files(
        serving_dir, files, inputs.schema, fileio.compression_of(files),
        "fn_args.eval_files", limit=limit)
    try:
        guards.check_predictions(predictions, f"{run.model}/{run.loss}/seed{run.seed}")
    except guards.Diverged:
        fileio.remove_tree(serving_dir)  # a diverged model is never published
        raise
    return metrics.ctr_cvr_metrics(labels, predictions)


def match_files(patterns, role: str) -> List[str]:
    """The files of one or more patterns (`fn_args.train_files` is a list of them)."""
    from pwiser_tf.pipelines.dataset import match_patterns

    patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
    try:
        return match_patterns(patterns)
    except InputError as err:
        raise InputError(f"fn_args.{role}: {err}") from None


def warm_start(model, base_model: str) -> None:
    """Copies every variable of a previous export into `model`, trainable or not
    (batch norm's moving mean and variance too), matched by name and shape; where
    names repeat, in the order of the model's variables."""
    import tensorflow as tf

    if not tf.io.gfile.exists(fileio.join(base_model, "saved_model.pb")):
        raise InputError(f"fn_args.base_model {base_model!r}: no SavedModel there")
    saved = _by_name(getattr(tf.saved_model.load(base_model), "weights", []))
    ours = _by_name(model.variables)
    mismatched = [name for name, variables in ours.items()
                  if [v.shape for v in variables] != [v.shape for v in saved.get(name, [])]]
    if mismatched:
        raise InputError(f"fn_args.base_model {base_model!r}: a different model "
                         f"(no matching {', '.join(mismatched[:4])})")
    for name, variables in ours.items():
        for variable, value in zip(variables, saved[name]):
            variable.assign(value)


def _by_name(variables) -> Dict[str, list]:
    grouped: Dict[str, list] = {}
    for variable in variables:
        grouped.setdefault(variable.name, []).append(variable)
    return grouped


def main(argv=None) -> int:
    """`python -m pwiser_tf.tfx_trainer FN_ARGS.json RESULT.json` (see `run_in_child`)."""
    import types

    args_path, result_path = (argv or sys.argv[1:])[:2]
    with open(args_path, encoding="utf-8") as f:
        fn_args = types.SimpleNamespace(**json.load(f))
    try:
        if not tf_keras_ready():
            raise RuntimeError("the child process did not start on tf-keras")
        fileio.write_json(result_path, {"metrics": train(fn_args)})
    except InputError as err:
        fileio.write_json(result_path, {"error": str(err)})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
