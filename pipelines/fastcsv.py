"""Vectorised text formatting: numpy arrays to CSV-like lines without a Python loop per row.

Every cell is rendered at a fixed width into a `uint8` matrix, with NUL bytes
where a shorter value leaves room (leading zeros of an integer, an absent
optional cell). The rows are concatenated and the NULs deleted in one
step, which leaves ordinary variable-width text. A cell that must
vanish together with its separator (an absent entry of a multi-valued list) is
masked to all NULs. Digits come from lookup tables, so formatting costs a few
gathers per cell.

Example:

>>> import numpy as np
>>> csv_rows([int_cells(np.array([7, 42])), float_cells(np.array([[0.5, 1], [0, 2.25]]), 2)])
b'7,0.50,1.00\\n42,0.00,2.25\\n'
"""
import functools
from typing import Sequence, Union

import numpy as np

NUL = 0
_ZERO = ord("0")
_TABLE_LIMIT = 100_000  # integers below this are formatted by one table lookup
_BLOCK_ROWS = 4096

Part = Union[np.ndarray, bytes]


@functools.lru_cache(maxsize=None)
def _digits(count: int, width: int, strip: bool) -> np.ndarray:
    """`[count, width]` ASCII digits of 0..count-1, zero-padded (NUL-padded if strip)."""
    numbers = np.arange(count, dtype=np.int64)
    table = np.empty([count, width], dtype=np.uint8)
    for position in range(width - 1, -1, -1):
        table[:, position] = _ZERO + numbers % 10
        numbers //= 10
    if strip and width > 1:
        leading = np.cumprod(table[:, :-1] == _ZERO, axis=1).astype(bool)
        table[:, :-1][leading] = NUL
    table.setflags(write=False)
    return table


def int_cells(values: np.ndarray) -> np.ndarray:
    """Non-negative integers `[n]` or `[n, k]` as decimal text `[..., width]`."""
    values = np.asarray(values, dtype=np.int64)
    if values.size and values.min() < 0:
        raise ValueError("int_cells formats non-negative integers only")
    top = int(values.max()) if values.size else 0
    width = len(str(top))
    if top < _TABLE_LIMIT:
        return _digits(10 ** width, width, True)[values]
    out = np.empty(values.shape + (width,), dtype=np.uint8)
    rest = values.copy()
    for position in range(width - 1, -1, -1):
        out[..., position] = _ZERO + rest % 10
        rest //= 10
    leading = np.cumprod(out[..., :-1] == _ZERO, axis=-1).astype(bool)
    out[..., :-1][leading] = NUL
    return out


def float_cells(values: np.ndarray, decimals: int = 4) -> np.ndarray:
    """Non-negative numbers `[n]` or `[n, k]` as fixed-point text with `decimals` digits."""
    values = np.asarray(values, dtype=np.float64)
    scale = 10 ** decimals
    whole = int_cells(np.floor(np.rint(values * scale) / scale).astype(np.int64))
    width = whole.shape[-1]
    out = np.empty(values.shape + (width + 1 + decimals,), dtype=np.uint8)
    out[..., :width] = whole
    out[..., width] = ord(".")
    for begin in range(0, len(values), _BLOCK_ROWS):  # blocks: temporaries stay in cache
        block = slice(begin, begin + _BLOCK_ROWS)
        scaled = np.rint(values[block] * scale)
        fraction = scaled - np.floor(scaled / scale) * scale  # exact: float integers
        # the fraction's digits in groups of three: small tables stay in cache
        for start in range(decimals, 0, -3):
            size = min(3, start)
            rest = np.floor(fraction / 10 ** size)
            group = (fraction - rest * 10 ** size).astype(np.int32)
            fraction = rest
            out[block, ..., width + 1 + start - size:width + 1 + start] = _digits(
                10 ** size, size, False)[group]
    return out


@functools.lru_cache(maxsize=None)
def _unit_table(levels: int, decimals: int) -> np.ndarray:
    text = [f"{q / levels:.{decimals}f}".encode() for q in range(levels + 1)]
    table = np.frombuffer(b"".join(text), np.uint8).reshape(levels + 1, decimals + 2)
    table.setflags(write=False)
    return table


def unit_cells(values: np.ndarray, decimals: int = 6, levels: int = 8192) -> np.ndarray:
    """Numbers in [0, 1] rounded to the grid `q / levels`, written with `decimals`
    digits: one table lookup per cell, several times faster than `float_cells`."""
    index = np.rint(np.clip(values, 0.0, 1.0) * levels).astype(np.int32)
    return _unit_table(levels, decimals)[index]


def masked(cells: np.ndarray, present: np.ndarray) -> np.ndarray:
    """`cells` where `present` (same leading shape), nothing (all NULs) elsewhere."""
    present = np.asarray(present, bool)[..., None]
    return np.where(present, cells, np.uint8(NUL)).astype(np.uint8)


def text_rows(parts: Sequence[Part], end: bytes = b"\n") -> bytes:
    """Concatenates the parts of every row: arrays `[n, w]` or `[n, k, w]` (k cells
    side by side), or bytes repeated on every row; then `end`, then drops NULs."""
    return _squeeze(_matrix(list(parts) + [end]))


def csv_rows(columns: Sequence[Part], sep: bytes = b",") -> bytes:
    """One line per row: the columns (`[n, w]`, `[n, k, w]` for k columns, or bytes)
    separated by `sep`."""
    parts = []
    for column in columns:
        if isinstance(column, bytes):
            parts.append(column + sep)
        else:
            cells = column if column.ndim == 3 else column[:, None, :]
            mark = np.broadcast_to(np.frombuffer(sep, np.uint8),
                                   cells.shape[:-1] + (len(sep),))
            parts.append(np.concatenate([cells, mark], axis=-1))
    matrix = _matrix(parts + [b"\n"])
    matrix[:, -1 - len(sep):-1] = NUL  # no separator after the last column
    return _squeeze(matrix)


def _squeeze(matrix: np.ndarray) -> bytes:
    """The bytes of `matrix` without its NULs (`np.compress` beats `bytes.replace`)."""
    flat = matrix.reshape(-1)
    return np.compress(flat != NUL, flat).tobytes()


def _matrix(parts: Sequence[Part]) -> np.ndarray:
    rows = next(p.shape[0] for p in parts if isinstance(p, np.ndarray))
    if not rows:
        return np.zeros([0, 1 + sum(len(p) for p in parts if isinstance(p, bytes))], np.uint8)
    return np.concatenate([_literal(p, rows) if isinstance(p, bytes) else p.reshape(rows, -1)
                           for p in parts], axis=1)


def _literal(text: bytes, rows: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text, dtype=np.uint8), (rows, len(text)))
