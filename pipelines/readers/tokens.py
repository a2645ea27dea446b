"""Ali-CCP feature tokens (`field:id` or `field\\x02id\\x03value`) of many rows at once.

The tokens of a chunk are rewritten into one CSV text, one token per line
(`field,id[,value]`), and parsed by pyarrow in one call; numpy then scatters
them into the single-valued columns, the value columns and the multi-valued
fields. A chunk that fails to parse is re-checked row by row, to name the line.
"""
import io
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
from pyarrow import csv as pa_csv

from pwiser_tf.pipelines.readers.base import Ragged
from pwiser_tf.pipelines.readers.table import CellCheck, cell_checks

SINGLE = ("101", "121", "122", "124", "125", "126", "127", "128", "129",
          "205", "206", "207", "216", "508", "509", "702", "853", "301")
VALUED = ("508", "509", "702", "853")          # crosses that carry a value
MULTI = ("210", "109_14", "110_14", "127_14", "150_14")


class FeatureTokens:
    """Parses rows of tokens into `(categorical [n, C], numerical [n, V], {field: Ragged})`.

    Single-valued fields absent from a row get id 0 (and value 0); ids of fields not
    in the layout are ignored. `separators` are (between tokens, field|id, id|value);
    `with_values` says whether tokens carry the value.
    """

    def __init__(self, separators: Tuple[bytes, bytes, Optional[bytes]], with_values: bool):
        self.between, self.field_sep, self.value_sep = separators
        self.with_values = with_values
        names = ["field", "id"] + (["value"] if with_values else [])
        types = {"field": pa.dictionary(pa.int32(), pa.string()), "id": pa.int64(),
                 "value": pa.float32()}
        self._read = pa_csv.ReadOptions(column_names=names, use_threads=True,
                                        block_size=1 << 26)
        self._parse = pa_csv.ParseOptions(quote_char=False, ignore_empty_lines=False)
        self._convert = pa_csv.ConvertOptions(
            column_types={n: types[n] for n in names}, null_values=[],
            strings_can_be_null=False)
        self.slots = {name: i for i, name in enumerate(SINGLE)}
        self.value_slots = {name: i for i, name in enumerate(VALUED)}
        self.multi = {name: i for i, name in enumerate(MULTI)}

    def _csv(self, texts: Sequence[bytes]) -> bytes:
        text = self.between.join(texts)
        if self.between != b",":
            text = text.replace(b",", b";")  # a stray comma must not pass as a separator
        text = text.replace(self.between, b"\n").replace(self.field_sep, b",")
        if self.value_sep:
            text = text.replace(self.value_sep, b",")
        return text + b"\n"

    def _table(self, texts: Sequence[bytes]) -> pa.Table:
        return pa_csv.read_csv(io.BytesIO(self._csv(texts)), read_options=self._read,
                               parse_options=self._parse, convert_options=self._convert)

    def parse(self, texts: List[bytes], lines: np.ndarray, path: str,
              malformed: Callable[[str, int, str], None]):
        """Returns `(keep [n] bool, categorical, numerical, multi_valued)` for the rows kept."""
        n = len(texts)
        keep = np.ones(n, bool)
        counts = np.fromiter((t.count(self.between) + 1 if t else 0 for t in texts),
                             np.int64, n)
        try:
            table = self._table([t for t in texts if t])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            for i, text in enumerate(texts):
                if text:
                    try:
                        self._table([text])
                    except (pa.ArrowInvalid, pa.ArrowTypeError):
                        malformed(path, int(lines[i]), "a feature token is not "
                                  "field<sep>id" + ("<sep>value" if self.with_values else ""))
                        keep[i] = False
            counts = counts[keep]
            texts = [t for t, k in zip(texts, keep) if k]
            table = self._table([t for t in texts if t]) if any(texts) else None
        return (keep,) + self._scatter(table, counts)

    def _scatter(self, table, counts: np.ndarray):
        n = len(counts)
        categorical = np.zeros([n, len(SINGLE)], np.int64)
        numerical = np.zeros([n, len(VALUED) if self.with_values else 0], np.float32)
        multi: Dict[str, Ragged] = {}
        if table is None or table.num_rows == 0:
            for name in MULTI:
                multi[name] = Ragged(np.zeros([0], np.int64), np.zeros([n], np.int64),
                                     np.zeros([0], np.float32) if self.with_values else None)
            return categorical, numerical, multi
        row = np.repeat(np.arange(n), counts)
        field = table.column("field").combine_chunks()
        names = field.dictionary.to_pylist()
        codes = field.indices.to_numpy(zero_copy_only=False)
        ids = table.column("id").to_numpy()
        values = table.column("value").to_numpy() if self.with_values else None

        def lookup(slots):
            return np.array([slots.get(name, -1) for name in names] + [-1], np.int64)[codes]

        slot = lookup(self.slots)
        hit = slot >= 0
        categorical[row[hit], slot[hit]] = ids[hit]
        if self.with_values:
            value_slot = lookup(self.value_slots)
            hit = value_slot >= 0
            numerical[row[hit], value_slot[hit]] = values[hit]
        multi_slot = lookup(self.multi)
        for name, index in self.multi.items():
            hit = multi_slot == index
            multi[name] = Ragged(ids[hit], np.bincount(row[hit], minlength=n).astype(np.int64),
                                 values[hit] if self.with_values else None)
        return categorical, numerical, multi


def token_checks(categorical: np.ndarray, numerical: np.ndarray, labels: np.ndarray,
                 multi: Dict[str, Ragged]) -> List[CellCheck]:
    """`cell_checks` of rows of tokens (`labels`: their click and conversion columns),
    and of the multi-valued fields: a negative id would pass for padding, a non-finite
    value would spoil the embedding of the whole field."""
    checks = cell_checks([f"field {name!r}" for name in SINGLE], categorical,
                         [f"the value of field {name!r}" for name in VALUED[:numerical.shape[1]]],
                         numerical, ["column 'click'", "column 'conversion'"], labels)
    n = len(categorical)
    for name, field in multi.items():
        row = np.repeat(np.arange(n), field.lengths)
        checks.append(_ragged_check(f"field {name!r}", field.values, field.values < 0, row, n,
                                    "a negative id"))
        if field.weights is not None:
            checks.append(_ragged_check(f"the value of field {name!r}", field.weights,
                                        ~np.isfinite(field.weights), row, n, "non-finite"))
    return checks


def _ragged_check(label: str, values: np.ndarray, bad: np.ndarray, row: np.ndarray,
                  n: int, what: str) -> CellCheck:
    """A ragged field's check as one cell per row: the row's first bad entry, if any."""
    first = np.full(n, len(values))
    np.minimum.at(first, row[bad], np.flatnonzero(bad))
    return [label], np.append(values, 0)[first][:, None], (first < len(values))[:, None], what
