"""Scoring a trained model: its SavedModel's serving signature on a converted split.

Evaluation goes through the same door as production traffic: serialized
`tf.train.Example` records, read in file order, into the `serving_default`
signature. The labels (and the group column, where the data has one) are parsed
from the same records, so predictions and labels stay aligned row by row;
`write_predictions` writes them keyed, one row per record.
"""
import csv
import io
import os
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from pwiser_tf import fileio
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import GROUP_KEY, Metadata, Schema

SAVED_MODEL_DIR = "saved_model"
OUTPUTS = ("pctr", "pcvr", "pctcvr")
KEYED_LABELS = ("click", "conversion")  # the labels a keyed predictions file holds
ROW_KEY = "row"  # a keyed predictions file's row index: the record's place in the split
REMAPPED_SIGNATURE = "serving_remapped"  # models.export: converted (renumbered) records


def saved_model_path(model_dir: str) -> str:
    """Accepts a `train` output directory or the SavedModel directory itself."""
    for candidate in (fileio.join(model_dir, SAVED_MODEL_DIR), model_dir):
        if tf.io.gfile.exists(fileio.join(candidate, "saved_model.pb")):
            return candidate
    raise InputError(f"--model-dir {model_dir!r}: no SavedModel there "
                     f"(expected {os.path.join(model_dir, SAVED_MODEL_DIR, 'saved_model.pb')})")


def load_saved_model(model_dir: str):
    """`tf.saved_model.load`, with one `InputError` naming the directory when the
    SavedModel cannot be read (a truncated `saved_model.pb` or variables file)."""
    path = saved_model_path(model_dir)
    try:
        return tf.saved_model.load(path)
    except Exception as err:  # noqa: BLE001 - protobuf, OS, TensorFlow and Keras errors
        reason = getattr(err, "message", None) or str(err) or type(err).__name__
        raise InputError(f"--model-dir {model_dir}: cannot load the SavedModel in {path}; "
                         f"it is truncated or corrupted ({type(err).__name__}: "
                         f"{reason.strip().splitlines()[0][:300]}); export or copy it "
                         f"again") from None


def check_compatible(trained: Schema, data: Schema, data_dir: str) -> None:
    """Raises if `data` lacks features the model was trained on."""
    problems = []
    for kind in ("categorical", "multi_valued"):
        want = [f.name for f in getattr(trained, kind)]
        have = [f.name for f in getattr(data, kind)]
        if want != have:
            problems.append(f"{kind} fields {have} but the model expects {want}")
    if list(trained.numerical) != list(data.numerical):
        problems.append(f"{len(data.numerical)} numerical features but the model expects "
                        f"{len(trained.numerical)}")
    if problems:
        raise InputError(f"{data_dir}: data does not match the model's schema: "
                         + "; ".join(problems))


def predict_split(model_dir: str, data_dir: str, split: str = "test",
                  batch_size: int = 8192) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Labels and predictions of every example of a split, in input order."""
    from pwiser_tf.pipelines.dataset import verify_split

    metadata = Metadata.load(data_dir)
    if split in metadata.splits and (metadata.splits[split].counts or {}).get("rows") == 0:
        raise InputError(f"{data_dir}: the {split!r} split has 0 rows; nothing to evaluate")
    files = verify_split(data_dir, split)  # every record metadata.json counts is there
    trained = fileio.join(saved_model_path(model_dir), "assets.extra", "metadata.json")
    if tf.io.gfile.exists(trained):
        check_compatible(Metadata.load(os.path.dirname(trained)).schema, metadata.schema,
                         data_dir)
    return predict_files(model_dir, files, metadata.schema, metadata.compression,
                         f"{data_dir} ({split})", batch_size)


def predict_files(model_dir: str, files, schema: Schema, compression: str = "",
                  where: str = "", batch_size: int = 8192, limit: Optional[int] = None
                  ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """Labels and predictions of the records of `files` (the first `limit` of them,
    if given), in file order, through the SavedModel's serving signature; `where`
    names the records in errors. The labels are read from the columns `schema`
    names (its layout's); where it has a group column, `labels["group"]` holds it
    (int64)."""
    signatures = load_saved_model(model_dir).signatures
    # a model of `--remap-ids` data serves raw ids by default; the converted
    # records hold the renumbered ones
    serve = signatures[REMAPPED_SIGNATURE if REMAPPED_SIGNATURE in signatures
                       else "serving_default"]
    columns = {name: schema.label_column(name) for name in schema.labels}
    if schema.group_column:
        columns[GROUP_KEY] = schema.group_column
    label_spec = {column: tf.io.FixedLenFeature([], tf.int64) for column in columns.values()}
    records = tf.data.TFRecordDataset(files, compression_type=compression or None)
    if limit is not None:
        records = records.take(limit)
    records = records.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    labels = {name: [] for name in columns}
    predictions = {name: [] for name in OUTPUTS}
    try:
        for batch in records:
            parsed = tf.io.parse_example(batch, label_spec)
            for name, column in columns.items():
                labels[name].append(parsed[column].numpy())
            for name, value in serve(examples=batch).items():
                if name in predictions:
                    predictions[name].append(np.reshape(value.numpy(), [-1]))
    except tf.errors.OpError as err:
        raise InputError(f"{where or files[0]}: cannot score the records: "
                         f"{err.message.splitlines()[0]}") from None
    return ({k: np.concatenate(v) if v else np.zeros([0]) for k, v in labels.items()},
            {k: np.concatenate(v) if v else np.zeros([0]) for k, v in predictions.items()})


def write_predictions(predictions: Dict[str, np.ndarray], path: str,
                      argument: str = "--predictions",
                      labels: Optional[Dict[str, np.ndarray]] = None) -> None:
    """One CSV row per example, in input order (atomic write).

    Without `labels`: `pctr,pcvr,pctcvr`. With them (`predict_files`' labels), each
    row is keyed: `row` (the record's index in the split, from 0), `group` where the
    data has a group column (the search id of AliExpress, the user id of Ali-CCP;
    the records hold no other id), the labels `click`, `conversion`, then
    `pctr,pcvr,pctcvr`. Scores are written with 9 significant digits, which give
    back every float32 exactly, so metrics computed from the file (the GAUC
    included) equal those computed from the model's outputs.

    A path that cannot be written (a directory, a missing or read-only folder)
    raises one `InputError` naming `argument`; call `fileio.check_writable_file`
    first to find out before scoring.
    """
    fileio.check_writable_file(path, argument)
    header, columns = [], []
    if labels is not None:
        rows = len(labels[KEYED_LABELS[0]])
        keys = [(ROW_KEY, np.arange(rows))]
        if GROUP_KEY in labels:
            keys.append((GROUP_KEY, labels[GROUP_KEY]))
        keys += [(name, labels[name]) for name in KEYED_LABELS]
        for name, values in keys:
            header.append(name)
            columns.append(np.char.mod("%d", np.asarray(values, np.int64)))
    for name in OUTPUTS:
        header.append(name)
        columns.append(np.char.mod("%.9g", np.asarray(predictions[name], np.float32)))
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*(column.tolist() for column in columns)))
    try:
        fileio.atomic_write(path, text.getvalue())
    except (OSError, tf.errors.OpError) as err:
        raise InputError(f"{argument} {path}: cannot write there "
                         f"({getattr(err, 'strerror', None) or err})") from None


def read_predictions(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """`(keys and labels, predictions)` of a file `write_predictions` wrote: int64
    columns (`row`, `group`, `click`, `conversion`) and float64 scores."""
    with tf.io.gfile.GFile(path, "r") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    values = {name: [row[i] for row in body] for i, name in enumerate(header)}
    keys = {name: np.asarray(v, np.int64).reshape(-1) for name, v in values.items()
            if name not in OUTPUTS}
    scores = {name: np.asarray(v, np.float64).reshape(-1) for name, v in values.items()
              if name in OUTPUTS}
    return keys, scores
