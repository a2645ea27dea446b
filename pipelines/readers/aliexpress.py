"""AliExpress: the processed 82-column CSV (MTReclib) and the raw user/item files."""
import os
from typing import List

import numpy as np

from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.readers.base import Layout
from pwiser_tf.pipelines.readers.join import SideFileJoin
from pwiser_tf.pipelines.readers.processed import ColumnsReader, ProcessedCsvReader
from pwiser_tf.pipelines.readers.table import FLOAT, INT, CsvColumns, drop_bad_rows

CATEGORICAL = tuple(f"categorical_{i}" for i in range(1, 17))
NUMERICAL = tuple(f"numerical_{i}" for i in range(1, 64))
HEADER = ("search_id",) + CATEGORICAL + NUMERICAL + ("click", "conversion")

# raw columns behind the processed ones (the public preprocessing's mapping)
USER_CATEGORICAL = (2, 3, 4, 5, 6, 7, 8, 32, 33)
ITEM_CATEGORICAL = (19, 34, 35, 36, 40, 41, 42)
USER_NUMERICAL = tuple(range(9, 32))
ITEM_NUMERICAL = tuple(i for i in range(2, 49) if i not in ITEM_CATEGORICAL)
_RAW_CATEGORICAL = [f"user_{i}" for i in USER_CATEGORICAL] + [f"item_{i}" for i in ITEM_CATEGORICAL]
_RAW_NUMERICAL = [f"user_{i}" for i in USER_NUMERICAL] + [f"item_{i}" for i in ITEM_NUMERICAL]


class AliExpressCsvReader(ProcessedCsvReader):
    """The processed CSV: `search_id, categorical_1..16, numerical_1..63, click,
    conversion[, intent]`, header first; rows keep their `search_id` as row id."""

    format = "aliexpress-csv"
    HEADER, CATEGORICAL, NUMERICAL = HEADER, CATEGORICAL, NUMERICAL
    ID_COLUMN = "search_id"
    DATASET = "aliexpress"


class AliExpressRawReader(SideFileJoin, ColumnsReader):
    """The raw release: `<cc>_user_<split>.csv` (33 columns, `user_1` = search id)
    joined with `<cc>_item_<split>.csv` (49 columns, `item_1` = search id, `item_49`
    = 0 exposure, 1 click, 2 click and purchase) on the search id, into the
    processed CSV's layout. Paths: the user file and the item file(s), told
    apart by `_user_` / `_item_` in their names. The user file is read through a
    `SideTable` (in step with the item file when both are ordered by search id)."""

    format = "aliexpress-raw"

    def _open(self) -> Layout:
        base = [os.path.basename(p) for p in self.paths]
        self.user_paths = [p for p, b in zip(self.paths, base) if "_user_" in b]
        self.item_paths = [p for p, b in zip(self.paths, base) if "_item_" in b]
        if len(self.user_paths) != 1 or not self.item_paths or \
                len(self.user_paths) + len(self.item_paths) != len(self.paths):
            raise InputError(f"aliexpress-raw takes one <cc>_user_<split>.csv and its "
                             f"<cc>_item_<split>.csv file(s), got {base}")
        names = [f"user_{i}" for i in range(2, 34)] + [f"item_{i}" for i in range(1, 50)]
        kinds = [INT if (i in USER_CATEGORICAL) else FLOAT for i in range(2, 34)]
        kinds += [INT] + [INT if i in ITEM_CATEGORICAL else FLOAT for i in range(2, 49)] + [INT]
        self._parser = CsvColumns(names, kinds)
        return Layout("aliexpress", CATEGORICAL, NUMERICAL)

    def main_paths(self):
        return self.item_paths

    def side_path(self):
        return self.user_paths[0]

    def side_key(self, line):
        cut = line.find(b",")
        return line[:cut] if cut > 0 else None

    def _block(self, block: bytes, first_line: int, path: str, index: int):
        items, lines = [], []
        for offset, line in enumerate(block.split(b"\n")[:-1]):
            line = line.rstrip(b"\r")
            if line.find(b",") > 0:
                items.append(line)
                lines.append(first_line + offset)
            elif line.strip():
                self.malformed(path, first_line + offset, "no search id before a comma")
        found = self.side.lookup([line[:line.find(b",")] for line in items])
        joined, joined_lines = [], []
        for line, number, user in zip(items, lines, found):
            if user is None:
                self.malformed(path, number, "search id not in the user file")
                continue
            joined.append(user + b"," + line)
            joined_lines.append(number)
        if not joined:
            return None
        columns, rows = self._parser.parse(b"\n".join(joined) + b"\n", 0, path,
                                           self._raw_malformed(joined_lines))
        rows = np.asarray(joined_lines, np.int64)[rows]
        label = columns["item_49"]
        bad = (label < 0) | (label > 2)
        if bad.any():
            keep = drop_bad_rows(bad, rows, path, "item_49 is not 0, 1 or 2", self.malformed)
            columns = {name: values[keep] for name, values in columns.items()}
            rows, label = rows[keep], label[keep]
        columns["click"] = (label >= 1).astype(np.int64)
        columns["conversion"] = (label == 2).astype(np.int64)
        return self._chunk(columns, rows, path, _RAW_CATEGORICAL, _RAW_NUMERICAL,
                           {"click": "click", "conversion": "conversion"}, columns["item_1"])

    def _raw_malformed(self, lines: List[int]):
        """Joined rows are numbered from 0: report the item file's line instead."""
        def report(path, row, reason):
            self.malformed(path, lines[row], reason)
        return report

