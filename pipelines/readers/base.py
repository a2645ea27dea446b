"""What every reader shares: the chunk and layout types, counts, label policy, the
reading loop over text blocks, and file access through `tf.io.gfile` (so inputs may
be local or on any filesystem TensorFlow knows: `gs://`, `ram://`, ...)."""
import contextlib
import dataclasses
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pwiser_tf import options as choices
from pwiser_tf.errors import InputError

DEFAULT_BLOCK_BYTES = 8 << 20     # text parsed per chunk
BOM = b"\xef\xbb\xbf"              # a UTF-8 byte order mark, dropped at the start of a file
# magic bytes of archives a reader cannot parse as text
_ARCHIVES = {b"\x1f\x8b": ("gzip-compressed", "decompress it first, e.g. `gunzip -k {path}`"),
             b"PK\x03\x04": ("a zip archive", "extract it first, e.g. `unzip {path}`")}
MAX_LINE_BYTES = 64 << 20         # a longer "line" is garbage, not data
POLICIES = choices.CONVERSION_WITHOUT_CLICK_IN_CONVERT  # a conversion without a click


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
    lines: Optional[np.ndarray] = None  # 1-based line of each row in `path`, for messages
    path: str = ""                      # the file the rows come from

    def __len__(self) -> int:
        return len(self.row_id)

    def select(self, keep: np.ndarray) -> "Chunk":
        """The rows where the boolean mask `keep` is set."""
        return Chunk(self.categorical[keep], self.numerical[keep],
                     {k: v.select(keep) for k, v in self.multi_valued.items()},
                     {k: v[keep] for k, v in self.labels.items()}, self.row_id[keep],
                     None if self.lines is None else self.lines[keep], self.path)

    def where(self, row: int) -> str:
        """`path:line` of a row (or the path alone when lines are unknown)."""
        if self.lines is None:
            return self.path
        return f"{self.path}:{int(self.lines[row])}"


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

    The one reading loop lives here: `__iter__` reads each of `main_paths()` in
    blocks of whole lines (`blocks`) and parses every block (`parse_block`): the
    subclass's `_block(block, first_line, path, index)` returns a `Chunk` with raw
    labels (or None), then the label policy applies and the rows are counted. A
    subclass sets `format`, builds `self.layout` in `_open()`, and may hold
    resources for one pass in `_session()` (the raw formats' side tables). `size`
    is the bytes to read and `position` the bytes read so far (for progress);
    `rows_by_path` counts the well-formed rows of each file in the last pass
    (before the label policy drops any).

    A distributed runner (`pipelines/beam_convert.py`) uses the same two public
    steps without the loop: it cuts each of `main_paths()` into `blocks`, spreads
    them over its workers and calls `parse_block` on each; the joining formats
    then take the side rows a block refers to as `side_rows` (see `SideFileJoin`).
    """

    format = ""
    joins = False  # whether it joins a side file (and takes `cache_entries`, `index_dir`)

    def __init__(self, paths: Sequence[str], *, skip_malformed: bool = False,
                 conversion_without_click: str = choices.DROP,
                 block_bytes: int = DEFAULT_BLOCK_BYTES):
        if not paths:
            raise InputError(f"{self.format}: no input files given")
        for path in paths:
            check_input_file(path)
        if conversion_without_click not in POLICIES:
            raise InputError(f"conversion_without_click must be one of {POLICIES}, "
                             f"got {conversion_without_click!r}")
        self.paths = list(paths)
        self.skip_malformed = skip_malformed
        self.policy = conversion_without_click
        self.block_bytes = int(block_bytes)
        self.counts = Counts()
        self.rows_by_path: Dict[str, int] = {}
        self.size = sum(file_size(p) for p in self.paths)
        self.position = 0
        self.layout = self._open()

    def _open(self) -> Layout:
        raise NotImplementedError

    def main_paths(self) -> List[str]:
        """The files whose lines become rows (the raw formats join the others in)."""
        return self.paths

    @contextlib.contextmanager
    def _session(self):
        """Resources held during one pass over the files."""
        yield

    def _block(self, block: bytes, first_line: int, path: str, index: int) -> Optional[Chunk]:
        """The rows of a block of whole lines (`first_line` is the first one's number)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Chunk]:
        self.counts = Counts()  # each pass counts afresh
        paths = self.main_paths()
        self.rows_by_path = {path: 0 for path in paths}
        done = 0
        with self._session():
            for index, path in enumerate(paths):
                for block, first_line, read in self.blocks(path):
                    self.position = done + read
                    chunk, rows = self._parse(block, first_line, path, index)
                    self.rows_by_path[path] += rows
                    if chunk is not None and len(chunk):
                        yield chunk
                done += file_size(path)
        self.position = self.size

    def blocks(self, path: str, block_bytes: Optional[int] = None
               ) -> Iterator[Tuple[bytes, int, int]]:
        """`text_blocks` of one of `main_paths()`, about `block_bytes` each (default: the
        reader's): `(block, first_line, bytes_read)`; an over-long line is malformed."""
        def long_line(line: int) -> None:
            self.malformed(path, line, f"longer than {MAX_LINE_BYTES} bytes")

        return text_blocks(path, block_bytes or self.block_bytes, long_line)

    def parse_block(self, block: bytes, first_line: int, path: str, index: int = 0,
                    side_rows: Optional[Dict[bytes, bytes]] = None) -> "ParsedBlock":
        """The rows of one block of `blocks(path)` (`path` is `main_paths()[index]`),
        the label policy applied, with the block's own `Counts` and its well-formed
        rows before the policy dropped any. `side_rows` is for the joining formats
        only (`SideFileJoin.parse_block`)."""
        if side_rows is not None:
            raise TypeError(f"{self.format} joins no side file: side_rows is not taken")
        self.counts, before = Counts(), self.counts
        try:
            chunk, rows = self._parse(block, first_line, path, index)
            return ParsedBlock(chunk, rows, self.counts)
        finally:
            self.counts = before

    def _parse(self, block, first_line, path, index) -> Tuple[Optional[Chunk], int]:
        chunk = self._block(block, first_line, path, index)
        if chunk is None:
            return None, 0
        chunk.path = path
        rows = len(chunk)
        return self._label_policy(chunk), rows

    def malformed(self, path: str, line: int, reason: str) -> None:
        """Raises `InputError` naming file and line, or counts the line when skipping."""
        if not self.skip_malformed:
            raise InputError(f"{path}:{line}: malformed line: {reason} "
                             f"(skip such lines with --skip-malformed)")
        self.counts.malformed += 1

    def _label_policy(self, chunk: Chunk) -> Chunk:
        click, conversion = chunk.labels["click"], chunk.labels["conversion"]
        orphan = (click == 0) & (conversion != 0)
        orphans = int(orphan.sum())
        self.counts.conversions_without_click += orphans
        if orphans and self.policy == choices.ERROR:
            raise InputError(
                f"{chunk.where(int(np.flatnonzero(orphan)[0]))}: a conversion without a "
                f"click (click 0, conversion 1); choose what to do with such rows: "
                f"--conversion-without-click drop or as_click")
        if orphans and self.policy == choices.DROP:
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


class ParsedBlock(NamedTuple):
    """What `Reader.parse_block` returns: the rows (None when the block held none),
    the well-formed rows before the label policy, and the block's counts."""

    chunk: Optional[Chunk]
    rows: int
    counts: Counts


def _gfile():
    import tensorflow as tf  # loaded on first file access: `--help` stays fast

    return tf.io.gfile


def open_binary(path: str):
    """`path` opened for reading bytes, on any filesystem TensorFlow knows.

    A local path is opened by Python directly: reading 8 MiB blocks that way is
    about 4x faster than through `GFile` (benchmarks/bench_convert.py, docs/benchmarks.md).
    """
    if "://" not in path or path.startswith("file://"):
        return open(path[len("file://"):] if path.startswith("file://") else path, "rb")
    return _gfile().GFile(path, "rb")


def file_size(path: str) -> int:
    return _gfile().stat(path).length


def check_input_file(path: str) -> None:
    """Raises `InputError` unless `path` is a readable text file (not a folder, not an
    archive)."""
    gfile = _gfile()
    if gfile.isdir(path):
        raise InputError(f"{path}: is a directory, not a file")
    if not gfile.exists(path):
        raise InputError(f"{path}: no such file")
    try:
        with open_binary(path) as f:
            head = f.read(4)
    except Exception as err:  # tf.errors.OpError: permissions, ...
        raise InputError(f"{path}: cannot read ({getattr(err, 'message', err)})") from None
    for magic, (what, advice) in _ARCHIVES.items():
        if head.startswith(magic):
            raise InputError(f"{path}: is {what}; {advice.format(path=path)}")


def text_blocks(path: str, block_bytes: int, on_long_line) -> Iterator[Tuple[bytes, int, int]]:
    """`(block, first_line, bytes_read)`: whole lines of about `block_bytes`, 1-based numbering.

    The last line gets a newline if it lacks one; a UTF-8 byte order mark at the
    start of the file is dropped. A line longer than `MAX_LINE_BYTES` is passed to
    `on_long_line(line_number)` and skipped.
    """
    line, rest, skipping, first = 1, b"", False, True
    with open_binary(path) as f:
        while True:
            data = f.read(block_bytes)
            if not data:
                break
            if first:
                first = False
                if data.startswith(BOM):
                    data = data[len(BOM):]
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


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def parse_int(text: bytes) -> Optional[int]:
    """The int64 that `text` spells (digits, an optional minus, spaces around), else None;
    as strict as the CSV parser: no `+`, no `_`, nothing beyond int64."""
    text = text.strip()
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit() or not digits.isascii():
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def parse_ints(cells: Sequence[bytes]) -> Optional[List[int]]:
    """`parse_int` of every cell, or None if any fails."""
    values = [parse_int(cell) for cell in cells]
    return None if any(v is None for v in values) else values


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
