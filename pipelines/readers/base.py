"""What every reader shares: the chunk and layout types, counts, label policy, the
reading loop over text blocks, and file access through `tf.io.gfile` (so inputs may
be local or on any filesystem TensorFlow knows: `gs://`, `ram://`, ...).

Compressed inputs: a file compressed with gzip, bzip2 or xz (told by its first
bytes, whatever its name) is read as its decompressed content, streamed: nothing
is decompressed to disk and memory stays bounded. Lines are numbered in that
content, and a file cut short or damaged stops the reading with one `InputError`
naming it and its last complete line. Archives of several files (zip, tar, 7z)
and zstd are refused with what to do instead.
"""
import bz2
import concurrent.futures
import contextlib
import dataclasses
import gzip
import io
import lzma
import zlib
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pwiser_tf import options as choices
from pwiser_tf.errors import InputError

DEFAULT_BLOCK_BYTES = 8 << 20     # text parsed per chunk
BOM = b"\xef\xbb\xbf"              # a UTF-8 byte order mark, dropped at the start of a file
# magic bytes of the compressions read as a stream: (name, opener of a file object)
_COMPRESSIONS = (
    ((b"\x1f\x8b\x08",), "gzip", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    # "BZh", the block size, then a block's magic or the end-of-stream one
    (tuple(b"BZh" + bytes([d]) + m for d in b"123456789"
           for m in (b"1AY&SY", b"\x17rE8P\x90")), "bzip2", bz2.BZ2File),
    ((b"\xfd7zXZ\x00",), "xz", lzma.LZMAFile),
)
# what a damaged stream raises (a truncated one: EOFError)
_STREAM_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError)
# magic bytes of archives and compressions a reader cannot parse as text
_ARCHIVES = {b"PK\x03\x04": ("a zip archive", "extract it first, e.g. `unzip {path}`"),
             b"7z\xbc\xaf\x27\x1c": ("a 7z archive", "extract it first, e.g. `7z x {path}`"),
             b"\x28\xb5\x2f\xfd": ("zstd-compressed", "decompress it first, e.g. "
                                    "`zstd -dk {path}`, or compress it with gzip instead")}
_TAR_MAGIC, _TAR_AT = b"ustar", 257  # a tar header's magic and its offset
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


def _open_stored(path: str):
    """`path` opened for reading its bytes as stored, on any filesystem TensorFlow knows.

    A local path is opened by Python directly: reading 8 MiB blocks that way is
    about 4x faster than through `GFile` (benchmarks/bench_convert.py, docs/benchmarks.md).
    """
    if "://" not in path or path.startswith("file://"):
        return open(path[len("file://"):] if path.startswith("file://") else path, "rb")
    return _gfile().GFile(path, "rb")


def _head(f, size: int) -> bytes:
    """The first `size` bytes of the just-opened `f`, which is left at its start."""
    if hasattr(f, "peek"):  # a local file: no seek needed
        return f.peek(size)[:size]
    head = f.read(size)
    f.seek(0)
    return head


def compression(head: bytes) -> Optional[str]:
    """The compression (`gzip`, `bzip2`, `xz`) whose magic bytes start `head`, else None."""
    for magics, name, _ in _COMPRESSIONS:
        if head.startswith(magics):
            return name
    return None


def open_binary(path: str):
    """`path` opened for reading bytes, on any filesystem TensorFlow knows; a gzip,
    bzip2 or xz file is decompressed as it is read (`Decompressed`)."""
    f = _open_stored(path)
    try:
        name = compression(_head(f, 10))
    except BaseException:
        f.close()
        raise
    return f if name is None else Decompressed(f, path, name)


class Decompressed(io.RawIOBase):
    """The decompressed content of a compressed file, as a stream of bytes.

    `read(size)` returns `size` bytes unless the content ends first, so a reader
    cuts a compressed file into the same blocks as the plain one. A stream that is
    cut short or damaged raises `InputError` naming the file and its last complete
    line (the lines are counted as they are read). `tell()` is the position in
    the compressed file (what progress counts), not in the content.
    """

    def __init__(self, stored, path: str, name: str):
        super().__init__()
        self.stored, self.path, self.compression = stored, path, name
        opener = next(opener for _, n, opener in _COMPRESSIONS if n == name)
        self._stream = opener(stored)
        self._lines = 0  # newlines handed out so far

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        parts, got = [], 0
        while size < 0 or got < size:
            # read1, not read: what a damaged stream gave before its error is kept;
            # it returns one input buffer's output at most, so ask no more than 1 MiB
            data = self._read(lambda: self._stream.read1(min(size - got, 1 << 20)
                                                         if size >= 0 else 1 << 20), parts)
            if not data:
                break
            parts.append(data)
            got += len(data)
        data = b"".join(parts)
        self._lines += data.count(b"\n")
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        line = self._read(lambda: self._stream.readline(size), [])
        self._lines += line.endswith(b"\n")
        return line

    def _read(self, read, parts) -> bytes:
        try:
            return read()
        except _STREAM_ERRORS as err:
            last = self._lines + sum(part.count(b"\n") for part in parts)
            where = f"after line {last}" if last else "before the end of its first line"
            if isinstance(err, EOFError):
                what = f"is cut short: its {self.compression} data ends {where}" + \
                    (", the last complete one" if last else "")
            else:
                what = f"is damaged: reading its {self.compression} data failed {where} ({err})"
            raise InputError(f"{self.path}: {what}; download or copy it again") from None

    def tell(self) -> int:
        return self.stored.tell()

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
            self.stored.close()
        super().close()


def _pieces(f, size: int) -> Iterator[Tuple[bytes, int]]:
    """`(data, position)`: `f` read in pieces of `size` bytes, each with the position
    in the file as stored after it. A compressed file is read one piece ahead, in a
    thread: decompressing (which releases the GIL) overlaps parsing the piece before."""
    def read():
        data = f.read(size)
        return data, f.tell()

    if not isinstance(f, Decompressed):
        while True:
            data, position = read()
            if not data:
                return
            yield data, position
    with concurrent.futures.ThreadPoolExecutor(1, "pwiser-decompress") as pool:
        ahead = pool.submit(read)
        while True:
            data, position = ahead.result()
            if not data:
                return
            ahead = pool.submit(read)
            yield data, position


def file_size(path: str) -> int:
    return _gfile().stat(path).length


def check_input_file(path: str) -> None:
    """Raises `InputError` unless `path` is a readable text file, plain or compressed
    with gzip, bzip2 or xz (not a folder, not an archive of files)."""
    gfile = _gfile()
    if gfile.isdir(path):
        raise InputError(f"{path}: is a directory, not a file")
    if not gfile.exists(path):
        raise InputError(f"{path}: no such file")
    try:
        with _open_stored(path) as f:
            head = f.read(_TAR_AT + len(_TAR_MAGIC))
    except Exception as err:  # tf.errors.OpError: permissions, ...
        raise InputError(f"{path}: cannot read ({getattr(err, 'message', err)})") from None
    for magic, (what, advice) in _ARCHIVES.items():
        if head.startswith(magic):
            raise InputError(f"{path}: is {what}; {advice.format(path=path)}")
    name = compression(head)
    if name is not None:
        with open_binary(path) as f:
            head = f.read(_TAR_AT + len(_TAR_MAGIC))
    if head[_TAR_AT:].startswith(_TAR_MAGIC):
        packed = f"a {name}-compressed tar archive" if name else "a tar archive"
        raise InputError(f"{path}: is {packed} of files; extract the one to convert, e.g. "
                         f"`tar -xf {path} FILE` (or, to keep it compressed, "
                         f"`tar -xOf {path} FILE | gzip > FILE.gz`)")


def text_blocks(path: str, block_bytes: int, on_long_line) -> Iterator[Tuple[bytes, int, int]]:
    """`(block, first_line, bytes_read)`: whole lines of about `block_bytes`, 1-based numbering.

    The last line gets a newline if it lacks one; a UTF-8 byte order mark at the
    start of the file is dropped. A line longer than `MAX_LINE_BYTES` is passed to
    `on_long_line(line_number)` and skipped. A compressed file is read decompressed,
    in the same blocks as its plain content (`bytes_read` counts the file as stored).
    """
    line, rest, skipping, first, position = 1, b"", False, True, 0
    with open_binary(path) as f:
        # the position of a block's end: a compressed file's is that of its stream
        exact = not isinstance(f, Decompressed)
        for data, position in _pieces(f, block_bytes):
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
            yield block, line, position - len(rest) * exact
            line += block.count(b"\n")
        if rest and not skipping:
            yield rest + b"\n", line, position


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
