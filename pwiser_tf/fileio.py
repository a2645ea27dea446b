"""File I/O on any filesystem TensorFlow knows: local paths, `gs://`, `ram://`, ...

Every read and write of data, metadata, run directories, predictions and reports goes
through `tf.io.gfile`, so a path may be local or remote. This module holds the few
operations the project composes from it:

- `atomic_write`: write a whole file under a temporary name, then rename it, so a
  reader never sees a truncated file. Local files are fsynced before the rename; a
  symbolic link is written through to its target.
- `write_json` / `read_json`: the same, for JSON.
- `check_writable_file`: refuse, before any work, a path that cannot take a file
  (a directory, a FIFO or device, a missing folder or a file in its place).
- `removed_if_refused`: a folder that a refused command created holds nothing of
  value; it is removed.
- `remove_tree` / `move_tree`: directory trees, also where the filesystem has no
  real directories (object stores, `ram://`).
- `exclusive_lock`: one writer per directory (`fcntl` on a lock file; local paths only,
  since object stores have no locks).
- `compression_of` / `record_suffix`: the TFRecord compression that file names imply,
  and the file suffix that a compression gives.

Example:

>>> import tempfile, os
>>> folder = tempfile.mkdtemp()
>>> write_json(os.path.join(folder, "a.json"), {"x": 1})
>>> read_json(os.path.join(folder, "a.json"))
{'x': 1}
>>> with exclusive_lock(folder):
...     pass
"""
import contextlib
import json
import os
import uuid
from typing import Union

from pwiser_tf.errors import InputError

LOCK_FILE = ".lock"


def _tf():
    import tensorflow as tf  # on first use: a local-only command (`synth`) loads none

    return tf


class _TensorFlowFiles:
    """`tf.io.gfile`, imported when first used."""

    def __getattr__(self, name):
        return getattr(_tf().io.gfile, name)


class LocalFiles:
    """The `tf.io.gfile` calls that writers make, on local paths, through `os`."""

    exists = staticmethod(os.path.exists)
    remove = staticmethod(os.remove)
    GFile = staticmethod(open)

    @staticmethod
    def makedirs(path: str) -> None:
        os.makedirs(path, exist_ok=True)

    @staticmethod
    def rename(source: str, target: str, overwrite: bool = False) -> None:
        os.replace(source, target)


gfile = _TensorFlowFiles()


def is_local(path: str) -> bool:
    """Whether `path` is on the local filesystem (no `scheme://` prefix, or `file://`)."""
    path = os.fspath(path)
    return "://" not in path or path.startswith("file://")


def absolute(path: str) -> str:
    """`path` as an absolute, normalized local path; a URL (`gs://`, `file://`) as it is,
    since it names no working directory."""
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)


def filesystem(path: str):
    """`LocalFiles` for a local path (no TensorFlow needed), else `tf.io.gfile`."""
    return LocalFiles if "://" not in os.fspath(path) else gfile


def join(*parts: str) -> str:
    """`os.path.join` that keeps `scheme://` prefixes intact."""
    return os.path.join(*[os.fspath(p) for p in parts])


def temporary_name(path: str) -> str:
    """A sibling name for writing `path` before it is renamed into place."""
    return f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def atomic_write(path: str, data: Union[str, bytes]) -> None:
    """Writes `data` to `path` atomically: to a temporary sibling, fsync, rename.
    A local symbolic link is written through, to its target (the link stays)."""
    path = os.fspath(path)
    if is_local(path) and os.path.islink(path):
        path = os.path.realpath(path)
    tmp = temporary_name(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        if is_local(path):
            with open(tmp, mode, **({} if mode == "wb" else {"encoding": "utf-8"})) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            with gfile.GFile(tmp, mode) as f:
                f.write(data)
            gfile.rename(tmp, path, overwrite=True)
    finally:
        files = filesystem(tmp)
        if files.exists(tmp):
            files.remove(tmp)


def remove_tree(path: str) -> None:
    """Removes the directory tree `path`. On filesystems without real directories
    (object stores, `ram://`), where `gfile.rmtree` may fail, file by file."""
    path = os.fspath(path)
    if is_local(path):
        gfile.rmtree(path)
        return
    for folder, _, files in list(gfile.walk(path, topdown=False)):
        for name in files + [""]:  # the files, then the folder itself
            try:
                gfile.remove(join(folder, name) if name else folder)
            except _tf().errors.NotFoundError:
                pass  # listed by prefix only (another entry's name starts with it)


def move_tree(source: str, target: str) -> None:
    """Renames the directory `source` to `target` (which must not exist). Local
    directories are renamed atomically; object stores and `ram://` cannot rename a
    directory, so its files are copied and the source removed."""
    source, target = os.fspath(source), os.fspath(target)
    if is_local(source) and is_local(target):
        gfile.rename(source, target)
        return
    for folder, _, files in gfile.walk(source):
        into = join(target, os.path.relpath(folder, source)) if folder != source else target
        gfile.makedirs(into)
        for name in files:
            try:
                gfile.copy(join(folder, name), join(into, name), overwrite=True)
            except _tf().errors.NotFoundError:
                pass  # listed by prefix only (another entry's name starts with it)
    remove_tree(source)


def compression_of(files) -> str:
    """The TFRecord compression that the names of `files` imply: `"GZIP"` when every
    one ends in `.gz` (as the converter and TFX ExampleGen write them), else `""`.

    >>> compression_of(["a.tfrecord.gz", "b.gz"]), compression_of(["a.tfrecord"])
    ('GZIP', '')
    """
    return "GZIP" if all(os.fspath(name).endswith(".gz") for name in files) else ""


def record_suffix(compression: str) -> str:
    """The suffix of a TFRecord file of `compression` (`""` or `"GZIP"`)."""
    return ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"


def write_json(path: str, data) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str):
    with gfile.GFile(os.fspath(path), "r") as f:
        return json.load(f)


def make_dirs(path: str, argument: str = "--output") -> None:
    """Creates the directory `path` for writing, or raises one `InputError` that names
    `argument` and why: a file is in the way, or the place is not writable."""
    path = os.fspath(path)
    if gfile.exists(path) and not gfile.isdir(path):
        raise InputError(f"{argument} {path}: is a file, not a directory")
    try:
        gfile.makedirs(path)
        if is_local(path):  # probe: permissions and read-only filesystems
            probe = temporary_name(os.path.join(path, ".probe"))
            with open(probe, "w", encoding="utf-8"):
                pass
            os.remove(probe)
    except (OSError, _tf().errors.OpError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "message", None) or str(err)
        raise InputError(f"{argument} {path}: cannot create it or write there "
                         f"({reason.splitlines()[0]})") from None


def check_writable_file(path: str, argument: str) -> None:
    """Raises one `InputError` naming `argument` unless a file can be written at
    `path`: it must not be a directory or another file that is not a regular one
    (a FIFO, a device: the atomic write would replace it), and its folder must
    exist and be writable. A symbolic link is checked (and written) at its target."""
    path = os.fspath(path)
    if gfile.isdir(path):
        raise InputError(f"{argument} {path}: is a directory; give a file name")
    target = os.path.realpath(path) if is_local(path) and os.path.islink(path) else path
    if is_local(target) and os.path.exists(target) and not os.path.isfile(target):
        where = "" if target == path else f" (the target of the link, {target})"
        raise InputError(f"{argument} {path}: is not a regular file{where} (a FIFO, a "
                         f"device or a socket); give the name of a regular file")
    parent = os.path.dirname(target) or "."
    if gfile.exists(parent) and not gfile.isdir(parent):
        raise InputError(f"{argument} {path}: {parent} is a file, not a directory")
    if not gfile.isdir(parent):
        raise InputError(f"{argument} {path}: the folder {parent} does not exist")
    make_dirs(parent, argument)


def _holds_only_the_lock(path: str) -> bool:
    """Whether the folder `path` holds no file but the lock (empty folders aside)."""
    return all(name == LOCK_FILE for _, _, files in gfile.walk(path) for name in files)


@contextlib.contextmanager
def removed_if_refused(path: str):
    """Yields whether the folder `path` is new (it does not exist yet). If the block
    raises `InputError` and `path` is new and holds nothing but the lock file, it is
    removed: a refused command leaves no empty folder behind. A folder that existed
    before, or that holds anything else (a run to resume, results), stays."""
    path = os.fspath(path)
    new = not gfile.exists(path)
    try:
        yield new
    except InputError:
        if new and gfile.isdir(path) and _holds_only_the_lock(path):
            remove_tree(path)
        raise


@contextlib.contextmanager
def exclusive_lock(directory: str, what: str = "directory"):
    """Holds an exclusive lock on `directory` (created if missing) while the block runs.

    A second process that asks for the same lock gets an `InputError` naming the
    holder's process id. On remote filesystems there is no lock: the block just runs.
    """
    directory = os.fspath(directory)
    if not is_local(directory):
        yield
        return
    import fcntl

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_FILE)
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise InputError(f"{directory}: another process (pid {holder}) is writing this "
                             f"{what}; wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
