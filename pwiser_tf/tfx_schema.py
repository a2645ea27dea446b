"""The `Schema` of the records a TFX Trainer reads (`pwiser_tf.tfx_trainer`).

Two layouts reach the Trainer:

- the packed records of `pwiser-tf convert` (through `ImportExampleGen`): their
  `metadata.json`, named by `custom_config["metadata"]` or found beside the
  train files, gives the schema;
- `CsvExampleGen`'s one feature per column of a processed CSV:
  `custom_config["dataset"]` names the CSV format (`aliexpress` =
  `aliexpress-csv`, 82 columns; `ali-ccp` = `ali-ccp-csv`, torch-rechub's 33
  columns; `aitm-csv`), which says which columns are categorical, numerical and
  labels. Vocabulary sizes come from the int domains (`max + 1`) of SchemaGen's
  `schema.pbtxt` (`fn_args.schema_path`), and where a column has none, from one
  pass over the train files; a numerical column that SchemaGen (or the records)
  type as INT is read as int64 and cast.

Every file is found and read through `tf.io.gfile`, so the records and their
metadata may be on `gs://` or any filesystem TensorFlow knows.
"""
import os
from typing import Dict, List, Optional

from pwiser_tf import fileio
from pwiser_tf.errors import InputError

DATASET_FORMATS = {"aliexpress": "aliexpress-csv", "ali-ccp": "ali-ccp-csv"}
_SAMPLE_RECORDS = 256  # records read to tell the layout and column types


def resolve_schema(train_files: List[str], metadata: Optional[str] = None,
                   dataset: Optional[str] = None, schema_path: Optional[str] = None):
    """The `Schema` of the train records (see the module docstring).

    Args:
      train_files: the matched train files.
      metadata: `custom_config["metadata"]`, a converted directory's `metadata.json`.
      dataset: `custom_config["dataset"]`, the processed CSV format of per-column records.
      schema_path: SchemaGen's `schema.pbtxt` (`fn_args.schema_path`), or None.
    """
    import tensorflow as tf

    from pwiser_tf.pipelines.schema import METADATA_FILE, Metadata

    if metadata:
        return Metadata.load(os.path.dirname(metadata) or ".").schema
    kinds = record_kinds(train_files)
    directory = os.path.dirname(train_files[0])
    if tf.io.gfile.exists(fileio.join(directory, METADATA_FILE)):
        return Metadata.load(directory).schema
    if "categorical" in kinds or "numerical" in kinds:
        raise InputError("the train records hold the packed layout of `pwiser-tf convert`; "
                         "name its metadata.json in custom_config['metadata']")
    if not dataset:
        raise InputError("custom_config['dataset']: name the format of the per-column "
                         f"records ({', '.join(sorted(DATASET_FORMATS))} or a processed "
                         "CSV format), or custom_config['metadata'] for converted records")
    return columns_schema(dataset, train_files, kinds,
                          read_schema_pbtxt(schema_path) if schema_path else None,
                          schema_path or "")


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

    compression = fileio.compression_of(files)
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

    compression = fileio.compression_of(files)
    spec = {name: schema.feature_spec(with_labels=False)[name] for name in names}

    def batch_max(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        return tf.stack([tf.reduce_max(parsed[name]) for name in names])

    records = tf.data.TFRecordDataset(files, compression_type=compression).batch(8192)
    tops = records.map(batch_max, num_parallel_calls=tf.data.AUTOTUNE).reduce(
        tf.zeros([len(names)], tf.int64), tf.maximum)
    return dict(zip(names, tops.numpy().tolist()))
