"""The project's one schema type: what a converted dataset holds and how it is laid out.

A converted directory holds sharded TFRecord files of `tf.train.Example` and one
`metadata.json` (see `docs/architecture.md`, "Converted dataset"). `Metadata` reads and writes that file;
`Schema` describes the features and owns the parsing spec that the reader
(`make_dataset`) and the models' serving signature both use.

Record layout, version 1 (chosen by measurement, see docs/benchmarks.md): the
single-valued categorical ids of one example are packed into one int64 list
`categorical`, the numerical block into one float list `numerical`. Packed lists
parse several times faster than one feature per field and stay plain
`tf.train.Example`, so TFX reads them. Multi-valued fields keep every value, each
in its own variable-length int64 list `mv_<field>` (plus a float list
`mv_<field>_values` when the source carries a value per id). Labels are int64
scalars `click`, `conversion` (click AND conversion over all exposures, i.e. the
CTCVR label) and, for synthetic data, `intent`. The int64 scalar `group` (`GROUP_KEY`)
holds the group that the group AUC (GAUC) ranks within: the search id of AliExpress,
the user id (field 101) of Ali-CCP; `Schema.group_source` names the source column it
was copied from. It is a key, read with the labels, never a model feature; data
converted before it was kept has no `group_source`, and no GAUC.

Layout `columns`: one feature per column, as TFX's `CsvExampleGen` writes a
processed CSV: an int64 scalar per categorical field, a float (or int64, where
every value of the column was an integer: `int_columns`) scalar per numerical
feature, the labels under their CSV names (`label_columns`, e.g. Ali-CCP's
`purchase`) and the group under its source column's name (`group_source`). The
parser packs such records into the same `categorical` and `numerical` tensors, so a
model sees the same features from either layout.
"""
import dataclasses
import os
from typing import Dict, List, Tuple

import tensorflow as tf

from pwiser_tf import fileio
from pwiser_tf.errors import InputError

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"
LABELS = ("click", "conversion")
OPTIONAL_LABELS = ("intent",)
CATEGORICAL_KEY = "categorical"
NUMERICAL_KEY = "numerical"
GROUP_KEY = "group"   # the group column: in the records (packed layout) and the labels
LAYOUTS = ("packed", "columns")


class MetadataError(InputError):
    """A metadata file is missing, malformed or does not match the data."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One categorical field.

    Ids lie in `[0, vocab_size)`; models add one out-of-vocabulary bucket for ids
    outside that range, so an unseen test id never indexes out of range.
    """

    name: str
    vocab_size: int
    has_values: bool = False  # multi-valued only: a float value per id

    @property
    def key(self) -> str:
        """Feature key of a multi-valued field."""
        return f"mv_{self.name}"

    @property
    def values_key(self) -> str:
        return f"mv_{self.name}_values"


@dataclasses.dataclass(frozen=True)
class Schema:
    """Features and labels of a converted dataset.

    Example:

    >>> schema = Schema(dataset="aliexpress",
    ...                 categorical=(Field("categorical_1", 10),),
    ...                 numerical=("numerical_1", "numerical_2"))
    >>> sorted(schema.feature_spec())
    ['categorical', 'click', 'conversion', 'numerical']
    >>> sorted(schema.with_layout("columns").feature_spec())
    ['categorical_1', 'click', 'conversion', 'numerical_1', 'numerical_2']
    >>> sorted(schema.with_group("search_id").feature_spec(with_labels=True))
    ['categorical', 'click', 'conversion', 'group', 'numerical']
    """

    dataset: str
    categorical: Tuple[Field, ...] = ()
    numerical: Tuple[str, ...] = ()
    multi_valued: Tuple[Field, ...] = ()
    labels: Tuple[str, ...] = LABELS
    layout: str = "packed"   # or "columns": one feature per column (CsvExampleGen)
    label_columns: Tuple[Tuple[str, str], ...] = ()   # columns: (label, column) renamed
    int_columns: Tuple[str, ...] = ()   # columns: numerical features stored as int64
    group_source: str = ""   # the source column of the int64 `group` key ("": none)

    def __post_init__(self):
        object.__setattr__(self, "categorical", tuple(self.categorical))
        object.__setattr__(self, "numerical", tuple(self.numerical))
        object.__setattr__(self, "multi_valued", tuple(self.multi_valued))
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "label_columns",
                           tuple(tuple(pair) for pair in self.label_columns))
        object.__setattr__(self, "int_columns", tuple(self.int_columns))
        if self.layout not in LAYOUTS:
            raise MetadataError(f"schema layout {self.layout!r} is not one of {LAYOUTS}")
        missing = [name for name in LABELS if name not in self.labels]
        if missing:
            raise MetadataError(f"schema labels {self.labels} lack {missing}")

    def with_layout(self, layout: str) -> "Schema":
        """The same features in another record layout (`packed` or `columns`)."""
        return dataclasses.replace(self, layout=layout)

    def with_group(self, source: str) -> "Schema":
        """The same schema with the int64 `group` key, copied from column `source`."""
        return dataclasses.replace(self, group_source=source)

    @property
    def group_column(self) -> str:
        """The feature key of the group in the records ("" when they hold none)."""
        if not self.group_source:
            return ""
        return GROUP_KEY if self.layout == "packed" else self.group_source

    def label_column(self, label: str) -> str:
        """The feature key of a label in the records."""
        if self.layout == "packed":
            return label
        return dict(self.label_columns).get(label, label)

    def feature_spec(self, with_labels: bool = True) -> Dict[str, object]:
        """The `tf.io.parse_example` spec of the record layout."""
        if self.layout == "columns":
            return self._columns_spec(with_labels)
        spec = {}
        if self.categorical:
            spec[CATEGORICAL_KEY] = tf.io.FixedLenFeature([len(self.categorical)], tf.int64)
        if self.numerical:
            spec[NUMERICAL_KEY] = tf.io.FixedLenFeature([len(self.numerical)], tf.float32)
        spec.update(self._multi_valued_spec())
        if with_labels:
            for name in self.labels:
                spec[name] = tf.io.FixedLenFeature([], tf.int64)
            spec.update(self._group_spec())
        return spec

    def _group_spec(self) -> Dict[str, object]:
        column = self.group_column
        return {column: tf.io.FixedLenFeature([], tf.int64)} if column else {}

    def _multi_valued_spec(self) -> Dict[str, object]:
        spec = {}
        for field in self.multi_valued:
            spec[field.key] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)
            if field.has_values:
                spec[field.values_key] = tf.io.RaggedFeature(
                    tf.float32, row_splits_dtype=tf.int64)
        return spec

    def _columns_spec(self, with_labels: bool) -> Dict[str, object]:
        # An empty CSV cell leaves the feature out: 0, as the readers' absent id.
        spec = {f.name: tf.io.FixedLenFeature([], tf.int64, default_value=0)
                for f in self.categorical}
        for name in self.numerical:
            dtype = tf.int64 if name in self.int_columns else tf.float32
            spec[name] = tf.io.FixedLenFeature([], dtype, default_value=0)
        spec.update(self._multi_valued_spec())
        if with_labels:
            for name in self.labels:
                spec[self.label_column(name)] = tf.io.FixedLenFeature([], tf.int64)
            spec.update(self._group_spec())
        return spec

    def to_dict(self) -> dict:
        data = {
            "dataset": self.dataset,
            "categorical": [dataclasses.asdict(f) for f in self.categorical],
            "numerical": list(self.numerical),
            "multi_valued": [dataclasses.asdict(f) for f in self.multi_valued],
            "labels": list(self.labels),
        }
        if self.group_source:  # (absent from metadata written before groups were kept)
            data["group_source"] = self.group_source
        if self.layout != "packed":
            data.update(layout=self.layout, label_columns=[list(p) for p in self.label_columns],
                        int_columns=list(self.int_columns))
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Schema":
        return cls(
            dataset=data["dataset"],
            categorical=tuple(Field(**f) for f in data.get("categorical", ())),
            numerical=tuple(data.get("numerical", ())),
            multi_valued=tuple(Field(**f) for f in data.get("multi_valued", ())),
            labels=tuple(data.get("labels", LABELS)),
            layout=data.get("layout", "packed"),
            label_columns=tuple(tuple(p) for p in data.get("label_columns", ())),
            int_columns=tuple(data.get("int_columns", ())),
            group_source=data.get("group_source", ""),
        )


@dataclasses.dataclass
class Split:
    """One split of a converted dataset: its shard files, its counts and the records
    of each shard (`records[i]` in `files[i]`; empty in metadata of older versions),
    which `make_dataset` and evaluation check before they read the split."""

    files: List[str]
    counts: Dict[str, int] = dataclasses.field(default_factory=dict)
    records: List[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Metadata:
    """The versioned `metadata.json` of a converted directory."""

    schema: Schema
    splits: Dict[str, Split]
    source_format: str = ""
    compression: str = ""  # "" or "GZIP"
    schema_version: int = SCHEMA_VERSION
    extra: Dict[str, object] = dataclasses.field(default_factory=dict)

    def files(self, split: str, directory: str) -> List[str]:
        if split not in self.splits:
            raise MetadataError(
                f"{os.path.join(directory, METADATA_FILE)}: no split {split!r} "
                f"(has {sorted(self.splits)})")
        return [os.path.join(directory, name) for name in self.splits[split].files]

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "source_format": self.source_format,
            "compression": self.compression,
            "schema": self.schema.to_dict(),
            "splits": {name: dataclasses.asdict(s) for name, s in self.splits.items()},
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Metadata":
        return cls(
            schema=Schema.from_dict(data["schema"]),
            splits={name: Split(**s) for name, s in data["splits"].items()},
            source_format=data.get("source_format", ""),
            compression=data.get("compression", ""),
            schema_version=data["schema_version"],
            extra=data.get("extra", {}),
        )

    def save(self, directory: str) -> str:
        """Writes `metadata.json` atomically (`fileio.write_json`)."""
        path = os.path.join(directory, METADATA_FILE)
        fileio.write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str) -> "Metadata":
        """Reads `DIR/metadata.json`; one clear error names the file on any problem."""
        path = os.path.join(directory, METADATA_FILE)
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise MetadataError(
                f"{path}: not found; is {directory!r} a directory written by "
                f"`pwiser-tf convert`?")
        try:
            data = fileio.read_json(path)
        except (OSError, ValueError, tf.errors.OpError) as err:
            reason = getattr(err, "message", None) or str(err)
            raise MetadataError(f"{path}: unreadable metadata ({reason})") from None
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise MetadataError(
                f"{path}: schema_version {version!r}, this pwiser-tf reads "
                f"{SCHEMA_VERSION}; convert the data again")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise MetadataError(f"{path}: malformed metadata ({err!r})") from None


def load_schema(directory: str) -> Schema:
    """Shortcut: the `Schema` of a converted directory."""
    return Metadata.load(directory).schema


__all__ = ["Field", "Schema", "Split", "Metadata", "MetadataError", "load_schema",
           "SCHEMA_VERSION", "METADATA_FILE", "LABELS", "CATEGORICAL_KEY",
           "NUMERICAL_KEY", "GROUP_KEY", "LAYOUTS"]
