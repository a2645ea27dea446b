"""TFX Trainer module: `run_fn(fn_args)`, as TFX's generic Trainer executor calls it.

TFX is an optional extra (`pip install "pwiser-tf[tfx]"`) and this module does
not import it: only the attributes of `fn_args` (`tfx.components.FnArgs`) are read.

    trainer = tfx.components.Trainer(
        run_fn="pwiser_tf.tfx_trainer.run_fn",
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=5000),    # or TrainArgs(): whole epochs
        eval_args=tfx.proto.EvalArgs(num_steps=200),       # or EvalArgs(): all eval records
        custom_config={"dataset": "aliexpress", "model": "mmoe", "loss": "pwiser",
                       "model_config": {"pwiser_weight": 1.0},
                       "train": {"batch_size": 2048}, "strategy": "auto"})

What it reads:

- the records of `fn_args.train_files` / `eval_files` (any number of file
  patterns, on any filesystem `tf.io.gfile` knows; GZIP when the files end in
  `.gz`, as ExampleGen writes them), either layout: `CsvExampleGen`'s one feature
  per column of a processed CSV, or the packed layout `pwiser-tf convert` writes
  (fed through `ImportExampleGen`). They are read with the project's reader and
  `Parser` (batch before parse), the parsing the serving signature uses too;
  `fn_args.data_accessor`'s TFXIO datasets would be a second parsing path, so
  they are not used.
- the schema: `custom_config["metadata"]` (a converted directory's
  `metadata.json`), else a `metadata.json` beside the train files (packed
  records). For `CsvExampleGen` records, `custom_config["dataset"]` names the
  processed CSV format (`aliexpress` = `aliexpress-csv`, 82 columns; `ali-ccp`
  = `ali-ccp-csv`, torch-rechub's 33 columns; `aitm-csv`): it says which
  columns are categorical, numerical and labels. Vocabulary sizes come from
  the int domains (`max + 1`) of SchemaGen's `schema.pbtxt`
  (`fn_args.schema_path`), and where a column has none, from one pass over the
  train files; a numerical column that SchemaGen (or the records) type as INT is
  read as int64 and cast.
- options: `custom_config` `strategy` (a name of `pwiser_tf.distribute.STRATEGIES`,
  default `auto`: the model is built and compiled in its scope), `model`
  (default `mmoe`), `loss` (`pwiser`),
  `model_config` (constructor arguments), `train` (`batch_size` 2048,
  `learning_rate` 1e-3, `weight_decay` 1e-6, `epochs` 1 when `train_steps` is
  None, `seed` 0); `fn_args.hyperparameters` (a KerasTuner `HyperParameters`
  config or a plain dict) overrides them: `batch_size`, `learning_rate`,
  `weight_decay`, `epochs` go to training, everything else to the model.
- `train_steps`: that many steps over the repeated train data; None: `epochs`
  passes. `eval_steps`: that many batches; None: the eval files once.
- `base_model` (a previous Trainer's model): its weights start the training
  (matched by variable name and shape).

What it writes: TensorBoard logs and `metrics.json` (the evaluation) to
`fn_args.model_run_dir`; the SavedModel to `fn_args.serving_model_dir`, whose
`serving_default` parses the training records' layout (so TFX's Evaluator can
feed it ExampleGen's records) and whose `serving_columns` takes per-column
records (`models/export.py`).

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

from pwiser_tf.errors import InputError

DATASET_FORMATS = {"aliexpress": "aliexpress-csv", "ali-ccp": "ali-ccp-csv"}
TRAIN_OPTIONS = ("batch_size", "learning_rate", "weight_decay", "epochs", "seed")
FN_ARGS = ("working_dir", "train_files", "eval_files", "train_steps", "eval_steps",
           "schema_path", "serving_model_dir", "model_run_dir", "base_model",
           "hyperparameters", "custom_config")
_SAMPLE_RECORDS = 256  # records read to tell the layout and column types


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
    with tempfile.TemporaryDirectory(prefix="pwiser-tfx-") as tmp:
        args_path = os.path.join(tmp, "fn_args.json")
        result_path = os.path.join(tmp, "result.json")
        with open(args_path, "w", encoding="utf-8") as f:
            json.dump({name: getattr(fn_args, name, None) for name in FN_ARGS}, f)
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
    """`run_fn`'s work, on tf-keras."""
    import tensorflow as tf

    from pwiser_tf import distribute, guards, models, training
    from pwiser_tf.fileio import write_json
    from pwiser_tf.pipelines import make_dataset

    config = dict(fn_args.custom_config or {})
    strategy = distribute.resolve_strategy(config.get("strategy", "auto"))  # before any op
    train_config, model_config = _options(config, getattr(fn_args, "hyperparameters", None))
    train_files = match_files(fn_args.train_files, "train_files")
    eval_files = match_files(fn_args.eval_files, "eval_files")
    schema = resolve_schema(config, train_files, getattr(fn_args, "schema_path", None))
    batch_size = int(train_config.get("batch_size", 2048))
    seed = int(train_config.get("seed", config.get("seed", 0)))
    train_steps, eval_steps = _steps(fn_args.train_steps), _steps(fn_args.eval_steps)

    tf.keras.backend.clear_session()  # layer names as in a fresh process (warm starts)
    tf.keras.utils.set_random_seed(seed)
    train_ds = make_dataset(train_files, batch_size, schema=schema, shuffle=True,
                            repeat=train_steps is not None, seed=seed)
    eval_ds = make_dataset(eval_files, batch_size, schema=schema,
                           repeat=eval_steps is not None)
    with strategy.scope():
        model = training.build_compiled(config.get("model", "mmoe"), schema, model_config,
                                        train_config)
        model(next(iter(eval_ds))[0])  # build the variables
    if getattr(fn_args, "base_model", None):
        warm_start(model, fn_args.base_model)
    callbacks = [guards.StopOnNonFinite()]  # a diverged model is never exported
    if getattr(fn_args, "model_run_dir", None):
        callbacks.append(ScalarLogs(os.path.join(fn_args.model_run_dir, "train"),
                                    every=int(train_config.get("log_every_steps", 100))))
    if train_steps is None:
        model.fit(train_ds, epochs=int(train_config.get("epochs", 1)), callbacks=callbacks,
                  verbose=2)
    else:
        model.fit(train_ds, steps_per_epoch=train_steps, epochs=1, callbacks=callbacks,
                  verbose=2)
    result = model.evaluate(eval_ds, steps=eval_steps, return_dict=True, verbose=0)
    result = {k: float(v) for k, v in result.items()}
    models.export_saved_model(model, fn_args.serving_model_dir, schema)
    if getattr(fn_args, "model_run_dir", None):
        tf.io.gfile.makedirs(fn_args.model_run_dir)
        write_json(os.path.join(fn_args.model_run_dir, "metrics.json"), result)
    return result


def ScalarLogs(log_dir: str, every: int = 100):
    """A Keras callback writing the training metrics as TensorBoard scalars.

    Keras' `TensorBoard` callback needs the `tensorboard` package, which
    TensorFlow no longer installs; these are the same event files (the
    `scalars` plugin's format) written with TensorFlow alone. Every `every`
    steps and at the end of each epoch.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))

    class _ScalarLogs(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.writer = tf.summary.create_file_writer(log_dir)
            self.step = 0

        def _write(self, logs, prefix=""):
            with self.writer.as_default():
                for name, value in (logs or {}).items():
                    tf.summary.write(prefix + name, tf.cast(value, tf.float32), step=self.step,
                                     metadata=metadata)

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if every > 0 and self.step % every == 0:
                self._write(logs, "batch_")

        def on_epoch_end(self, epoch, logs=None):
            self._write(logs, "epoch_")
            self.writer.flush()

        def on_train_end(self, logs=None):
            self.writer.close()

    return _ScalarLogs()


def _steps(value) -> Optional[int]:
    """TFX passes None (and older TFX 0) for "no number of steps"."""
    if value is None or int(value) == 0:
        return None
    if int(value) < 0:
        raise InputError(f"fn_args: steps must be positive, got {value}")
    return int(value)


def _options(config: dict, hyperparameters):
    """`(train options, model constructor arguments)` of custom_config + hyperparameters."""
    train_config = dict(config.get("train") or {})
    model_config = dict(config.get("model_config") or {})
    model_config["loss"] = config.get("loss", "pwiser")
    values = hyperparameters or {}
    if isinstance(values, str):
        values = json.loads(values)
    values = values.get("values", values) if isinstance(values, dict) else {}
    for name, value in values.items():
        (train_config if name in TRAIN_OPTIONS else model_config)[name] = value
    return train_config, model_config


def match_files(patterns, role: str) -> List[str]:
    """The files of one or more patterns (`fn_args.train_files` is a list of them)."""
    from pwiser_tf.pipelines.dataset import match_patterns

    patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
    try:
        return match_patterns(patterns)
    except InputError as err:
        raise InputError(f"fn_args.{role}: {err}") from None


# ---------------------------------------------------------------------------
# the schema


def resolve_schema(config: dict, train_files: List[str], schema_path: Optional[str]):
    """The `Schema` of the records (see the module docstring)."""
    from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata

    if config.get("metadata"):
        return Metadata.load(os.path.dirname(config["metadata"]) or ".").schema
    keys = record_kinds(train_files)
    for directory in {os.path.dirname(name) for name in train_files[:1]}:
        if os.path.isfile(os.path.join(directory, METADATA_FILE)):
            return Metadata.load(directory).schema
    if "categorical" in keys or "numerical" in keys:
        raise InputError("the train records hold the packed layout of `pwiser-tf convert`; "
                         "name its metadata.json in custom_config['metadata']")
    if not config.get("dataset"):
        raise InputError("custom_config['dataset']: name the format of the per-column "
                         f"records ({', '.join(sorted(DATASET_FORMATS))} or a processed "
                         "CSV format), or custom_config['metadata'] for converted records")
    return columns_schema(config["dataset"], train_files, keys,
                          read_schema_pbtxt(schema_path) if schema_path else None,
                          schema_path)


def columns_schema(dataset: str, train_files: List[str], kinds: Dict[str, str],
                   tfmd_schema=None, schema_path: str = ""):
    """The `columns`-layout `Schema` of CsvExampleGen's records of a processed CSV.

    Args:
      dataset: `aliexpress`, `ali-ccp` or a processed CSV format name.
      train_files: the records (for vocabulary sizes SchemaGen did not give).
      kinds: `{feature: "int" | "float" | "bytes"}` of the records (`record_kinds`).
      tfmd_schema: SchemaGen's `schema_pb2.Schema`, or None.
      schema_path: its file, for messages.
    """
    from pwiser_tf.pipelines.readers import reader_class
    from pwiser_tf.pipelines.readers.processed import ProcessedCsvReader
    from pwiser_tf.pipelines.schema import Field, Schema

    cls = reader_class(DATASET_FORMATS.get(dataset, dataset))
    if not issubclass(cls, ProcessedCsvReader):
        raise InputError(f"custom_config['dataset'] {dataset!r}: per-column records come from "
                         f"a processed CSV; choose aliexpress, ali-ccp, aitm-csv")
    labels = dict(cls.LABELS)
    needed = list(cls.CATEGORICAL) + list(cls.NUMERICAL) + list(labels.values())
    types = {}
    if tfmd_schema is not None:
        types = {f.name: {2: "int", 3: "float"}.get(f.type, "bytes")
                 for f in tfmd_schema.feature}
    source = schema_path if tfmd_schema is not None else "the train records"
    available = types or kinds
    missing = [name for name in needed if name not in available]
    if missing:
        raise InputError(f"{source}: no column(s) {', '.join(missing[:8])} of the "
                         f"{dataset} CSV; is custom_config['dataset'] right?")
    not_int = [n for n in list(cls.CATEGORICAL) + list(labels.values())
               if available[n] != "int"]
    if not_int:
        raise InputError(f"{source}: column(s) {', '.join(not_int[:8])} are not integers")
    vocab = {}
    if tfmd_schema is not None:
        for feature in tfmd_schema.feature:
            if feature.name in cls.CATEGORICAL and feature.HasField("int_domain") and \
                    feature.int_domain.HasField("max"):
                vocab[feature.name] = int(feature.int_domain.max) + 1
    int_columns = tuple(n for n in cls.NUMERICAL if available[n] == "int")
    schema = Schema(dataset=cls.DATASET,
                    categorical=tuple(Field(n, vocab.get(n, 1)) for n in cls.CATEGORICAL),
                    numerical=cls.NUMERICAL, labels=tuple(labels), layout="columns",
                    label_columns=tuple((k, v) for k, v in labels.items() if k != v),
                    int_columns=int_columns)
    unknown = [n for n in cls.CATEGORICAL if n not in vocab]
    if unknown:  # one pass over the train files
        tops = max_ids(train_files, schema, unknown)
        schema = Schema.from_dict(dict(schema.to_dict(), categorical=[
            {"name": f.name, "vocab_size": vocab.get(f.name, tops.get(f.name, 0) + 1)}
            for f in schema.categorical]))
    return schema


def read_schema_pbtxt(path: str):
    """SchemaGen's `schema.pbtxt` as a `tensorflow_metadata` `Schema` proto."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    if not tf.io.gfile.exists(path):
        raise InputError(f"{path}: fn_args.schema_path does not exist")
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    try:
        return text_format.Parse(text, schema_pb2.Schema())
    except text_format.ParseError as err:
        raise InputError(f"{path}: not a tensorflow_metadata Schema ({err})") from None


def record_kinds(files: List[str]) -> Dict[str, str]:
    """`{feature: "int" | "float" | "bytes"}` over the first records of `files`."""
    import tensorflow as tf

    compression = "GZIP" if all(name.endswith(".gz") for name in files) else ""
    records = tf.data.TFRecordDataset(files, compression_type=compression)
    kinds: Dict[str, str] = {}
    try:
        for record in records.take(_SAMPLE_RECORDS):
            example = tf.train.Example.FromString(record.numpy())
            for name, feature in example.features.feature.items():
                kind = {"int64_list": "int", "float_list": "float",
                        "bytes_list": "bytes"}.get(feature.WhichOneof("kind"))
                if kind and kinds.get(name) != "float":  # a float anywhere makes it float
                    kinds[name] = kind
    except (tf.errors.OpError, ValueError) as err:
        raise InputError(f"{files[0]}...: cannot read the records ({err})") from None
    if not kinds:
        raise InputError(f"{files[0]}: the train files hold no records")
    return kinds


def max_ids(files: List[str], schema, names: List[str]) -> Dict[str, int]:
    """The largest id of each categorical column `names`, in one pass over `files`."""
    import tensorflow as tf

    compression = "GZIP" if all(name.endswith(".gz") for name in files) else ""
    spec = {name: schema.feature_spec(with_labels=False)[name] for name in names}

    def batch_max(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        return tf.stack([tf.reduce_max(parsed[name]) for name in names])

    records = tf.data.TFRecordDataset(files, compression_type=compression).batch(8192)
    tops = records.map(batch_max, num_parallel_calls=tf.data.AUTOTUNE).reduce(
        tf.zeros([len(names)], tf.int64), tf.maximum)
    return dict(zip(names, tops.numpy().tolist()))


def warm_start(model, base_model: str) -> None:
    """Copies a previous export's weights into `model`, matched by name and shape."""
    import tensorflow as tf

    if not tf.io.gfile.exists(os.path.join(base_model, "saved_model.pb")):
        raise InputError(f"fn_args.base_model {base_model!r}: no SavedModel there")
    saved = {v.name: v for v in getattr(tf.saved_model.load(base_model), "weights", [])}
    mismatched = [v.name for v in model.trainable_variables
                  if v.name not in saved or saved[v.name].shape != v.shape]
    if mismatched:
        raise InputError(f"fn_args.base_model {base_model!r}: a different model "
                         f"(no matching {', '.join(mismatched[:4])})")
    for variable in model.trainable_variables:
        variable.assign(saved[variable.name])


def main(argv=None) -> int:
    """`python -m pwiser_tf.tfx_trainer FN_ARGS.json RESULT.json` (see `run_in_child`)."""
    import types

    from pwiser_tf.fileio import write_json

    args_path, result_path = (argv or sys.argv[1:])[:2]
    with open(args_path, encoding="utf-8") as f:
        fn_args = types.SimpleNamespace(**json.load(f))
    try:
        if not tf_keras_ready():
            raise RuntimeError("the child process did not start on tf-keras")
        write_json(result_path, {"metrics": train(fn_args)})
    except InputError as err:
        write_json(result_path, {"error": str(err)})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
