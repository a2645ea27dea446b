"""Readers of processed numeric CSVs (one row per line, a fixed list of columns)."""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.readers.base import (BOM, Chunk, Layout, Reader, check_header,
                                              open_binary)
from pwiser_tf.pipelines.readers.table import (FLOAT, INT, CsvColumns, cell_checks,
                                               drop_bad_cells)

FILE_SHIFT = 40  # row id of a file without an id column: file index << 40 | line number


class ColumnsReader(Reader):
    """Shared: named columns of a parsed block to a checked `Chunk`."""

    def _chunk(self, columns: Dict[str, np.ndarray], lines: np.ndarray, path: str,
               categorical: Sequence[str], numerical: Sequence[str],
               labels: Dict[str, str], row_id: np.ndarray) -> Chunk:
        n = len(lines)
        cat = np.stack([columns[c] for c in categorical], axis=1) if categorical \
            else np.zeros([n, 0], np.int64)
        num = np.stack([columns[c] for c in numerical], axis=1) if numerical \
            else np.zeros([n, 0], np.float32)
        lab = {name: columns[column] for name, column in labels.items()}
        checks = cell_checks(
            [f"column {c!r}" for c in categorical], cat,
            [f"column {c!r}" for c in numerical], num,
            [f"column {c!r}" for c in labels.values()],
            np.stack(list(lab.values()), axis=1) if lab else np.zeros([n, 0], np.int64))
        keep = drop_bad_cells(checks, lines, path, self.malformed)
        chunk = Chunk(cat, num, {}, lab, row_id, lines, path)
        return chunk if keep.all() else chunk.select(keep)


class ProcessedCsvReader(ColumnsReader):
    """A CSV of `HEADER` (+ any of `OPTIONAL` label columns at the end), header first.

    Subclasses set the class constants: `HEADER`, `OPTIONAL`, `CATEGORICAL`,
    `NUMERICAL`, `LABELS` (`{label: column}`), `ID_COLUMN` (or `None`: the row id is
    the file index and line number), `DATASET` and `HEADER_REQUIRED`.
    """

    HEADER: Tuple[str, ...] = ()
    OPTIONAL: Tuple[str, ...] = ("intent",)
    CATEGORICAL: Tuple[str, ...] = ()
    NUMERICAL: Tuple[str, ...] = ()
    LABELS = {"click": "click", "conversion": "conversion"}
    ID_COLUMN: Optional[str] = None
    DATASET = ""
    HEADER_REQUIRED = True

    def _open(self) -> Layout:
        headers = [self._header(path) for path in self.paths]
        found = {tuple(h) for h in headers if h}
        if len(found) > 1:
            raise InputError(f"{', '.join(self.paths)}: the files have different headers")
        self._names = list(found.pop()) if found else list(self.HEADER)
        self._has_header = [bool(h) for h in headers]
        kinds = [FLOAT if name in self.NUMERICAL else INT for name in self._names]
        self._parser = CsvColumns(self._names, kinds)
        self._labels = dict(self.LABELS)
        self._labels.update({name: name for name in self._names if name in self.OPTIONAL})
        return Layout(self.DATASET, self.CATEGORICAL, self.NUMERICAL, (), tuple(self._labels))

    def _header(self, path: str):
        """The header's names, `[]` for an empty file or a headerless one (if allowed)."""
        with open_binary(path) as f:
            first = f.readline()
        if first.startswith(BOM):
            first = first[len(BOM):]
        if not first.strip():
            return []
        try:
            names = first.decode("ascii").strip().split(",")
        except UnicodeDecodeError:
            raise InputError(f"{path}:1: the header is not ASCII text") from None
        if not self.HEADER_REQUIRED and names[0].strip() != self.HEADER[0]:
            return []  # data on the first line
        return check_header(path, names, self.HEADER, self.OPTIONAL)

    def _block(self, block: bytes, first_line: int, path: str, index: int):
        if first_line == 1 and self._has_header[index]:
            block, first_line = block[block.find(b"\n") + 1:], 2
            if not block:
                return None
        columns, lines = self._parser.parse(block, first_line, path, self.malformed)
        row_id = columns[self.ID_COLUMN] if self.ID_COLUMN else \
            (np.int64(index) << FILE_SHIFT) + lines
        return self._chunk(columns, lines, path, self.CATEGORICAL, self.NUMERICAL,
                           self._labels, row_id)
