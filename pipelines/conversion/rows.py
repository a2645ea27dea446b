"""Rows to records, the same for every runner: the validation split carved from
train by a hash of each row's id, the label counts, the group column and the
encoding of a chunk.

The group column (`group_source`, `group_ids`) is what the group AUC ranks within:
the search id of AliExpress (its readers' row id) and the user id of Ali-CCP (field
101, among the categorical fields of every Ali-CCP format). The records hold it as
the int64 `group`, and the schema names its source column.

The hash (a splitmix64 finaliser salted by the seed) depends on the row id alone,
so the validation split is the same whatever the runner, the sharding or the
chunking; for AliExpress the row id is the search id, so a search never straddles
two splits.
"""
from typing import Dict, List, Tuple

import numpy as np

from pwiser_tf.pipelines import schema as schema_lib
from pwiser_tf.pipelines.records import ExampleEncoder

_HASH_SEED = 0x9E3779B97F4A7C15
# dataset -> the source column of its group: AliExpress's row id is its search id
GROUP_SOURCES = {"aliexpress": "search_id", "ali-ccp": "101"}
_ROW_ID_GROUPS = ("search_id",)


def route_rows(chunk, split: str, fraction: float, seed: int):
    """Yields the non-empty parts of `chunk` as `(output split, rows)`: a `train`
    chunk's rows whose hashed id falls below `fraction` go to `validation`
    (`validation_mask`), the rest stay in `split`."""
    if split != "train" or fraction <= 0:
        parts = [(split, chunk)]
    else:
        held_out = validation_mask(chunk.row_id, fraction, seed)
        parts = [(split, chunk.select(~held_out)), ("validation", chunk.select(held_out))]
    yield from ((name, part) for name, part in parts if len(part))


def validation_mask(row_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows whose hashed id falls below `fraction` (splitmix64 finaliser, salted by seed)."""
    with np.errstate(over="ignore"):
        z = row_id.astype(np.int64).view(np.uint64) + np.uint64(
            (_HASH_SEED * (seed + 1)) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)) < fraction


def label_counts(rows) -> Dict[str, int]:
    """The rows, clicks and conversions of a chunk, as `metadata.json` counts them."""
    return {"rows": len(rows), "clicks": int(rows.labels["click"].sum()),
            "conversions": int(rows.labels["conversion"].sum())}


def vocab_fields(layout) -> List[str]:
    """The fields that get a vocabulary (an embedding table): single- and multi-valued."""
    return list(layout.categorical) + [name for name, _ in layout.multi_valued]


def group_source(layout) -> str:
    """The source column of a layout's group ("" when it has none)."""
    source = GROUP_SOURCES.get(layout.dataset, "")
    if source in _ROW_ID_GROUPS or source in layout.categorical:
        return source
    return ""


def group_ids(layout, chunk) -> np.ndarray:
    """The int64 group of every row of a chunk (`group_source`)."""
    source = group_source(layout)
    if source in _ROW_ID_GROUPS:
        return chunk.row_id.astype(np.int64, copy=False)
    return chunk.categorical[:, layout.categorical.index(source)]


def layout_schema(layout, vocab_sizes: Dict[str, int]) -> schema_lib.Schema:
    """The `Schema` of a layout's records: its fields, and its group column if any."""
    schema = layout.schema(vocab_sizes)
    source = group_source(layout)
    return schema.with_group(source) if source else schema


class RecordEncoder:
    """Chunks of a reader's layout -> serialized `tf.train.Example` records, back to
    back (`ExampleEncoder`; vocabulary sizes do not change the bytes)."""

    def __init__(self, layout):
        self.layout = layout
        self.schema = layout_schema(layout, {n: 1 for n in vocab_fields(layout)})
        self._encoder = ExampleEncoder(self.schema)

    def encode(self, chunk) -> Tuple[bytes, np.ndarray]:
        """`(data, offsets)`: record i is `data[offsets[i]:offsets[i + 1]]`."""
        columns = {schema_lib.CATEGORICAL_KEY: chunk.categorical,
                   schema_lib.NUMERICAL_KEY: chunk.numerical, **chunk.labels}
        if self.schema.group_source:
            columns[schema_lib.GROUP_KEY] = group_ids(self.layout, chunk)
        for name, has_values in self.layout.multi_valued:
            field = chunk.multi_valued[name]
            columns[f"mv_{name}"] = (field.values, field.lengths)
            if has_values:
                columns[f"mv_{name}_values"] = (field.weights, field.lengths)
        return self._encoder.encode(columns)
