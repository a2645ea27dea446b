"""Numeric CSV blocks to numpy columns: pyarrow in the common case, a line-by-line
pass only for a block that holds a malformed line, to name it."""
import io
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import pyarrow as pa
from pyarrow import csv as pa_csv

from pwiser_tf.pipelines.readers.base import line_numbers, parse_int

INT, FLOAT = "int", "float"
_ARROW = {INT: pa.int64(), FLOAT: pa.float32()}
_NUMPY = {INT: np.int64, FLOAT: np.float32}
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError)


class CsvColumns:
    """Parses blocks of a CSV whose cells are all integers or floats.

    `parse(block, first_line, path, malformed)` returns `({name: array}, lines)`,
    where `lines` holds the 1-based line number of each row; bad lines go to
    `malformed(path, line, reason)` (which raises or counts) and are left out.
    """

    def __init__(self, names: Sequence[str], kinds: Sequence[str]):
        self.names, self.kinds = list(names), list(kinds)
        self._read = pa_csv.ReadOptions(column_names=self.names, use_threads=True,
                                        block_size=1 << 26)
        self._parse = pa_csv.ParseOptions(quote_char=False, ignore_empty_lines=False)
        # no null spellings: an empty cell is an error, not a silent null
        self._convert = pa_csv.ConvertOptions(
            column_types={n: _ARROW[k] for n, k in zip(self.names, self.kinds)},
            null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False)

    def _arrow(self, block: bytes) -> Dict[str, np.ndarray]:
        table = pa_csv.read_csv(io.BytesIO(block), read_options=self._read,
                                parse_options=self._parse, convert_options=self._convert)
        return {name: table.column(name).to_numpy() for name in self.names}

    def parse(self, block: bytes, first_line: int, path: str,
              malformed: Callable[[str, int, str], None]) -> Tuple[Dict[str, np.ndarray],
                                                                   np.ndarray]:
        # pyarrow reads a hex integer (`0x10`) as 16; a block with an `x` goes through
        # the checks below, which name the line.
        if b"x" not in block and b"X" not in block:
            try:
                columns = self._arrow(block)
                return columns, line_numbers(first_line, len(columns[self.names[0]]))
            except _ARROW_ERRORS:
                pass
        good: List[bytes] = []
        lines: List[int] = []
        for offset, line in enumerate(block.split(b"\n")[:-1]):
            number = first_line + offset
            reason = self._check(line)
            if reason is None:
                good.append(line)
                lines.append(number)
            elif reason:
                malformed(path, number, reason)
        try:
            return self._good(good, lines)
        except _ARROW_ERRORS:  # a line that passed `_check` and not pyarrow: find it
            kept = []
            for line, number in zip(good, lines):
                try:
                    self._arrow(line + b"\n")
                    kept.append((line, number))
                except _ARROW_ERRORS as err:
                    malformed(path, number, f"not parseable ({str(err).splitlines()[0][:80]})")
            return self._good([k[0] for k in kept], [k[1] for k in kept])

    def _good(self, good: List[bytes], lines: List[int]):
        if not good:
            return {n: np.zeros([0], _NUMPY[k])
                    for n, k in zip(self.names, self.kinds)}, np.zeros([0], np.int64)
        return self._arrow(b"\n".join(good) + b"\n"), np.asarray(lines, np.int64)

    def _check(self, line: bytes):
        """None if the line parses, "" if it is blank (skipped silently), else why not."""
        line = line.rstrip(b"\r")
        if not line.strip():
            return ""
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return "not ASCII text"
        cells = text.split(",")
        if len(cells) != len(self.names):
            return f"{len(cells)} columns, expected {len(self.names)}"
        for name, kind, cell in zip(self.names, self.kinds, cells):
            if kind == INT:
                if parse_int(cell.encode()) is None:
                    beyond = cell.strip().lstrip("-").isdigit()
                    return f"column {name!r}: {cell[:40]!r} is " + (
                        "beyond int64" if beyond else "not an integer")
            elif not _is_number(cell):
                return f"column {name!r}: {cell[:40]!r} is not a number"
        return None


def _is_number(cell: str) -> bool:
    """Whether pyarrow reads `cell` as a float (Python's `float`, without `_`)."""
    if "_" in cell:
        return False
    try:
        float(cell)
    except ValueError:
        return False
    return True


def drop_bad_rows(bad: np.ndarray, lines: np.ndarray, path: str, reason: str,
                  malformed: Callable[[str, int, str], None]) -> np.ndarray:
    """Reports rows where `bad` is set; returns the mask of rows to keep."""
    for line in lines[bad]:
        malformed(path, int(line), reason)
    return ~bad


# (names of k cells, their values [n, k], which are bad [n, k], what a bad one is)
CellCheck = Tuple[Sequence[str], np.ndarray, np.ndarray, str]


def cell_checks(categorical: Sequence[str], ids: np.ndarray, numerical: Sequence[str],
                numbers: np.ndarray, labels: Sequence[str],
                label_values: np.ndarray) -> List[CellCheck]:
    """The checks every reader makes: ids >= 0, finite numbers, labels in {0, 1}."""
    return [(categorical, ids, ids < 0, "a negative id"),
            (numerical, numbers, ~np.isfinite(numbers), "non-finite"),
            (labels, label_values, (label_values < 0) | (label_values > 1),
             "a label outside {0, 1}")]


def drop_bad_cells(checks: Sequence[CellCheck], lines: np.ndarray, path: str,
                   malformed: Callable[[str, int, str], None]) -> np.ndarray:
    """Reports each row with a bad cell, naming the first one's column and value;
    returns the mask of rows to keep."""
    bad = np.zeros(len(lines), bool)
    for _, _, cells, _ in checks:
        bad |= cells.any(axis=1)
    for row in np.flatnonzero(bad):
        for names, values, cells, what in checks:
            found = np.flatnonzero(cells[row])
            if len(found):
                value = values[row, found[0]].item()
                malformed(path, int(lines[row]), f"{names[found[0]]}: {value!r} is {what}")
                break
    return ~bad
