"""What every reader shares: the chunk and layout types, counts, label policy, text blocks."""
import dataclasses
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from pwiser_tf.errors import InputError

DEFAULT_BLOCK_BYTES = 8 << 20     # text parsed per chunk
MAX_LINE_BYTES = 64 << 20         # a longer "line" is garbage, not data
POLICIES = ("drop", "click")      # what to do with a conversion without a click


@dataclasses.dataclass
class Ragged:
    """A multi-valued field of n rows: flat `values`, `lengths` [n], optional flat `weights`."""

    values: np.ndarray
    lengths: np.ndarray
    weights: Optional[np.ndarray] = None

    def select(self, keep: np.ndarray) -> "Ragged":
        flat = np.repeat(keep, self.lengths)
        return Ragged(self.values[flat], self.lengths[keep],
                      None if self.weights is None else self.weights[flat])


@dataclasses.dataclass
class Chunk:
    """n consecutive rows as column arrays (see the package docstring)."""

    categorical: np.ndarray
    numerical: np.ndarray
    multi_valued: Dict[str, Ragged]
    labels: Dict[str, np.ndarray]
    row_id: np.ndarray

    def __len__(self) -> int:
        return len(self.row_id)

    def select(self, keep: np.ndarray) -> "Chunk":
        """The rows where the boolean mask `keep` is set."""
        return Chunk(self.categorical[keep], self.numerical[keep],
                     {k: v.select(keep) for k, v in self.multi_valued.items()},
                     {k: v[keep] for k, v in self.labels.items()}, self.row_id[keep])


@dataclasses.dataclass(frozen=True)
class Layout:
    """The fields a reader yields, in order; with vocabulary sizes, a `Schema`."""

    dataset: str
    categorical: Tuple[str, ...] = ()
    numerical: Tuple[str, ...] = ()
    multi_valued: Tuple[Tuple[str, bool], ...] = ()   # (field, has_values)
    labels: Tuple[str, ...] = ("click", "conversion")

    def schema(self, vocab_sizes: Dict[str, int]):
        """The `Schema` with `vocab_sizes[field]` for every categorical/multi-valued field."""
        from pwiser_tf.pipelines import schema as schema_lib  # TensorFlow loads only here

        return schema_lib.Schema(
            dataset=self.dataset,
            categorical=tuple(schema_lib.Field(n, int(vocab_sizes[n])) for n in self.categorical),
            numerical=self.numerical,
            multi_valued=tuple(schema_lib.Field(n, int(vocab_sizes[n]), has_values)
                               for n, has_values in self.multi_valued),
            labels=self.labels)


@dataclasses.dataclass
class Counts:
    """Rows yielded and what the source held; `dropped` rows are not in `rows`."""

    rows: int = 0
    clicks: int = 0
    conversions: int = 0
    conversions_without_click: int = 0
    dropped: int = 0
    malformed: int = 0

    def as_dict(self) -> Dict[str, int]:
        return dataclasses.asdict(self)

    def add(self, other: "Counts") -> None:
        for key, value in other.as_dict().items():
            setattr(self, key, getattr(self, key) + value)


class Reader:
    """Streams the files of one split as `Chunk`s; subclasses parse one format.

    A subclass sets `format`, builds `self.layout` in `_open()` and yields chunks
    from `_chunks()` with raw labels; `__iter__` applies the label policy and counts.
    `size` is the bytes to read and `position` the bytes read so far (for progress).
    """

    format = ""
    _path = ""  # the file being read, for messages

    def __init__(self, paths: Sequence[str], *, skip_malformed: bool = False,
                 conversions_without_click: str = "drop",
                 block_bytes: int = DEFAULT_BLOCK_BYTES):
        if not paths:
            raise InputError(f"{self.format}: no input files given")
        for path in paths:
            if not os.path.isfile(path):
                raise InputError(f"{path}: no such file")
        if conversions_without_click not in POLICIES:
            raise InputError(f"conversions_without_click must be one of {POLICIES}, "
                             f"got {conversions_without_click!r}")
        self.paths = list(paths)
        self.skip_malformed = skip_malformed
        self.policy = conversions_without_click
        self.block_bytes = int(block_bytes)
        self.counts = Counts()
        self.size = sum(os.path.getsize(p) for p in self.paths)
        self.position = 0
        self.layout = self._open()

    def _open(self) -> Layout:
        raise NotImplementedError

    def _chunks(self) -> Iterator[Chunk]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Chunk]:
        self.counts = Counts()  # each pass counts afresh
        for chunk in self._chunks():
            chunk = self._label_policy(chunk)
            if len(chunk):
                yield chunk

    def malformed(self, path: str, line: int, reason: str) -> None:
        """Raises `InputError` naming file and line, or counts the line when skipping."""
        if not self.skip_malformed:
            raise InputError(f"{path}:{line}: malformed line: {reason} "
                             f"(skip such lines with --skip-malformed)")
        self.counts.malformed += 1

    def long_line(self, line: int) -> None:
        self.malformed(self._path, line, f"longer than {MAX_LINE_BYTES} bytes")

    def _label_policy(self, chunk: Chunk) -> Chunk:
        click, conversion = chunk.labels["click"], chunk.labels["conversion"]
        orphan = (click == 0) & (conversion != 0)
        orphans = int(orphan.sum())
        self.counts.conversions_without_click += orphans
        if orphans and self.policy == "drop":
            self.counts.dropped += orphans
            chunk = chunk.select(~orphan)
            click, conversion = chunk.labels["click"], chunk.labels["conversion"]
        elif orphans:
            click = click.copy()
            click[orphan] = 1
        chunk.labels["click"] = click.astype(np.int64, copy=False)
        chunk.labels["conversion"] = (click * (conversion != 0)).astype(np.int64)
        self.counts.rows += len(chunk)
        self.counts.clicks += int(chunk.labels["click"].sum())
        self.counts.conversions += int(chunk.labels["conversion"].sum())
        return chunk


def text_blocks(path: str, block_bytes: int, on_long_line) -> Iterator[Tuple[bytes, int, int]]:
    """`(block, first_line, bytes_read)`: whole lines of about `block_bytes`, 1-based numbering.

    The last line gets a newline if it lacks one. A line longer than
    `MAX_LINE_BYTES` is passed to `on_long_line(line_number)` and skipped.
    """
    line, rest, skipping = 1, b"", False
    with open(path, "rb") as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                break
            if skipping:  # inside an over-long line: drop up to its end
                cut = data.find(b"\n")
                if cut < 0:
                    continue
                data, skipping, line = data[cut + 1:], False, line + 1
            data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                if len(rest) > MAX_LINE_BYTES:
                    on_long_line(line)
                    rest, skipping = b"", True
                continue
            block, rest = data[:cut + 1], data[cut + 1:]
            yield block, line, f.tell() - len(rest)
            line += block.count(b"\n")
        if rest and not skipping:
            yield rest + b"\n", line, f.tell()


def line_numbers(first_line: int, n: int) -> np.ndarray:
    return np.arange(first_line, first_line + n, dtype=np.int64)


def check_header(path: str, found: Sequence[str], expected: Sequence[str],
                 optional: Sequence[str] = ()) -> List[str]:
    """The header's column names if it is `expected` plus a tail of `optional` ones."""
    found = [name.strip() for name in found]
    head, tail = found[:len(expected)], found[len(expected):]
    if head != list(expected) or any(name not in optional for name in tail):
        raise InputError(f"{path}:1: header {','.join(found)[:200]!r} is not the expected "
                         f"{','.join(expected)[:200]}... (+ optional {list(optional)})")
    return found
