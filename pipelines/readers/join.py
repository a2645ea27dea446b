"""Joining a main file with a keyed side table that does not fit in memory.

The raw releases split rows in two: AliExpress items reference a user row by
search id, Ali-CCP skeleton rows reference a common-features row by
`common_feature_index`. Both main files are written in key order, and so are
their side files, so `SideTable` streams the side file forward in step with the
main one and keeps only a bounded cache of recent rows (`cache_entries`).

Fallback when the orders differ: the first key that the forward stream cannot
find (it reached the end of the side file, or the row was evicted from the cache)
switches the table to an on-disk index, an sqlite file of `key -> (offset,
length)` built in one pass over the side file (in `index_dir`, which `convert`
puts inside its output directory and removes when done, or else a temporary
directory), and rows are then read by seeking. A compressed side file cannot be
read by seeking: its index holds the rows themselves (`key -> rest`), so it takes
about the side file's decompressed size on disk. Memory stays bounded either way;
an unsorted pair is slower, not wrong.
"""
import collections
import contextlib
import os
import sqlite3
import tempfile
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from pwiser_tf.pipelines.readers.base import BOM, Decompressed, open_binary, text_blocks

_INDEX_BATCH = 100_000


def keyed_rows(path: str, malformed: Callable[[str, int, str], None],
               separator: bytes = b",", block_bytes: int = 4 << 20
               ) -> Iterator[Tuple[bytes, bytes]]:
    """`(key, rest)` of every row of a headerless side file, in file order: the key is
    the line's first cell, the rest what follows its separator (without the newline).
    A non-blank line without a key goes to `malformed(path, line, reason)`."""
    def long(line):
        malformed(path, line, "line too long")

    for block, first_line, _ in text_blocks(path, block_bytes, long):
        for offset, line in enumerate(block.split(b"\n")[:-1]):
            key, rest = _split(line.rstrip(b"\r"), separator)
            if key is not None:
                yield key, rest
            elif line.strip():
                malformed(path, first_line + offset, "no key before the first separator")


def _split(line: bytes, separator: bytes):
    cut = line.find(separator)
    return (line[:cut], line[cut + 1:]) if cut > 0 else (None, None)


class SideTable:
    """Rows of a headerless side file by their first cell, `lookup(keys) -> rests`.

    A row's "rest" is the line after the key and its separator (without the newline);
    `None` stands for a key the side file does not hold.
    """

    def __init__(self, path: str, *, cache_entries: int = 1 << 16, index_dir: str = "",
                 malformed: Callable[[str, int, str], None], separator: bytes = b",",
                 block_bytes: int = 4 << 20):
        self.path, self.separator = path, separator
        self.cache_entries = max(1, int(cache_entries))
        self.index_dir, self.malformed = index_dir, malformed
        self._cache = collections.OrderedDict()
        self._stream = keyed_rows(path, malformed, separator, block_bytes)
        self._exhausted = False
        self._db = None
        self._file = None
        self._tmp = None
        self._rows_inside = False

    def lookup(self, keys: Sequence[bytes]) -> List[Optional[bytes]]:
        if self._db is not None:
            return self._indexed(keys)
        out = []
        for position, key in enumerate(keys):
            rest = self._cache.get(key)
            if rest is None and not self._advance_to(key):
                self._build_index()
                return out + self._indexed(keys[position:])
            out.append(rest if rest is not None else self._cache[key])
        return out

    def _advance_to(self, key: bytes) -> bool:
        if self._exhausted:
            return False
        for found, rest in self._stream:
            self._cache[found] = rest
            if len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
            if found == key:
                return True
        self._exhausted = True
        return False

    # the fallback: an on-disk index of byte offsets (or of rows) -----------
    def _build_index(self) -> None:
        directory = self.index_dir
        if not directory:
            self._tmp = tempfile.TemporaryDirectory(prefix="pwiser-index-")
            directory = self._tmp.name
        os.makedirs(directory, exist_ok=True)
        db_path = os.path.join(directory, os.path.basename(self.path) + ".index.sqlite")
        if os.path.exists(db_path):
            os.remove(db_path)  # never trust an index a crash may have left half-built
        db = sqlite3.connect(db_path)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        with open_binary(self.path) as f:
            # a compressed file is not read by seeking: its rows go into the index
            self._rows_inside = isinstance(f, Decompressed)
            db.execute("CREATE TABLE rows (key BLOB PRIMARY KEY, " +
                       ("rest BLOB)" if self._rows_inside else "offset INTEGER, length INTEGER)"))
            insert = "INSERT OR IGNORE INTO rows VALUES (?, ?" + \
                (")" if self._rows_inside else ", ?)")
            rows, offset, number = [], 0, 0
            for line in f:
                number += 1
                if number == 1 and line.startswith(BOM):
                    offset, line = len(BOM), line[len(BOM):]
                found, rest = _split(line.rstrip(b"\r\n"), self.separator)
                if found is not None:
                    rows.append((found, rest) if self._rows_inside
                                else (found, offset, len(line)))
                elif line.strip():
                    self.malformed(self.path, number, "no key before the first separator")
                offset += len(line)
                if len(rows) >= _INDEX_BATCH:
                    db.executemany(insert, rows)
                    rows = []
        db.executemany(insert, rows)
        db.commit()
        self._db = db
        if not self._rows_inside:
            self._file = open_binary(self.path)
        self._cache.clear()

    def _indexed(self, keys: Sequence[bytes]) -> List[Optional[bytes]]:
        if self._rows_inside:
            return [row and row[0] for row in (
                self._db.execute("SELECT rest FROM rows WHERE key = ?", (key,)).fetchone()
                for key in keys)]
        out = []
        for key in keys:
            row = self._db.execute("SELECT offset, length FROM rows WHERE key = ?",
                                   (key,)).fetchone()
            if row is None:
                out.append(None)
                continue
            self._file.seek(row[0])
            line = self._file.read(row[1]).rstrip(b"\r\n")
            out.append(line[line.find(self.separator) + 1:])
        return out

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        if self._file is not None:
            self._file.close()
        if self._tmp is not None:
            self._tmp.cleanup()


class SideRows:
    """Side rows handed over whole (`{key: rest}`), with `SideTable.lookup`'s interface:
    what a distributed runner, which joins the files itself, gives a block."""

    def __init__(self, rows: Dict[bytes, bytes]):
        self.rows = rows

    def lookup(self, keys: Sequence[bytes]) -> List[Optional[bytes]]:
        return [self.rows.get(key) for key in keys]


class SideFileJoin:
    """Mixin of the raw readers: the rows of `main_paths()` joined with one side file
    (`side_path()`), read through a `SideTable` (`self.side`) during each pass.

    Takes `cache_entries` (side rows kept in memory) and `index_dir` (where the
    on-disk index goes if the files are not in the same key order). A distributed
    runner joins the files itself: `side_key` names the side row a main-file line
    refers to, `side_rows` streams the side file's rows, and `parse_block` takes a
    block's side rows.
    """

    joins = True

    def __init__(self, paths, *, cache_entries: int = 1 << 16, index_dir: str = "", **kwargs):
        self.cache_entries, self.index_dir = cache_entries, index_dir
        super().__init__(paths, **kwargs)

    def side_path(self) -> str:
        raise NotImplementedError

    def side_key(self, line: bytes) -> Optional[bytes]:
        """The side-file key a main-file line refers to (None for a line without one)."""
        raise NotImplementedError

    def side_rows(self, block_bytes: Optional[int] = None) -> Iterator[Tuple[bytes, bytes]]:
        """`(key, rest)` of every row of the side file (`keyed_rows`)."""
        return keyed_rows(self.side_path(), self.malformed,
                          block_bytes=block_bytes or self.block_bytes)

    def parse_block(self, block: bytes, first_line: int, path: str, index: int = 0,
                    side_rows: Optional[Dict[bytes, bytes]] = None):
        """`Reader.parse_block`, the block's lines joined with `side_rows`: `{key:
        rest}` of (at least) every key they refer to (`side_key`); a key it lacks is
        one the side file lacks."""
        if side_rows is None:
            raise TypeError(f"{self.format} joins a side file: parse_block needs side_rows")
        self.side = SideRows(side_rows)
        return super().parse_block(block, first_line, path, index)

    @contextlib.contextmanager
    def _session(self):
        self.side = SideTable(self.side_path(), cache_entries=self.cache_entries,
                              index_dir=self.index_dir, malformed=self.malformed)
        try:
            yield
        finally:
            self.side.close()
