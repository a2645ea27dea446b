"""The file writer that the synthetic formats share (`synth_formats.py`).

`Writer` opens every file lazily under a temporary name and renames them all only
when the whole dataset is written, so an interrupted run leaves no complete-looking
file behind. Remote outputs (`gs://`, `ram://`) go through `tf.io.gfile`; local
ones through `os` (`fileio.filesystem`), so that `synth` loads no TensorFlow for
them. The helpers draw the distractor columns of both datasets.
"""
import os
from typing import Dict, List

import numpy as np

from pwiser_tf import fileio
from pwiser_tf.errors import InputError


class Writer:
    """Opens files lazily under temporary names; renames them all on success."""

    convert_format = ""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.files_api = fileio.filesystem(output_dir)
        self._handles: Dict[str, object] = {}
        self._paths: Dict[str, str] = {}   # final path -> temporary path
        self._names: Dict[str, str] = {}   # relative name -> final path

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        for handle in self._handles.values():
            handle.close()
        files = self.files_api
        for path, tmp in self._paths.items():
            if kind is None:
                files.rename(tmp, path, overwrite=True)
            elif files.exists(tmp):
                files.remove(tmp)
        return False

    def append(self, relative: str, text: bytes, header: bytes = b"") -> None:
        files = self.files_api
        if relative not in self._handles:
            path = os.path.join(self.output_dir, relative)
            try:
                files.makedirs(os.path.dirname(path))
            except Exception as err:  # OSError, tf.errors.OpError: a file in the way, ...
                raise InputError(f"{os.path.dirname(path)}: cannot create the folder "
                                 f"({getattr(err, 'message', None) or err})") from None
            if files.exists(path):
                files.remove(path)  # a rerun never leaves an old file beside the new
            tmp = fileio.temporary_name(path)
            self._paths[path] = tmp
            self._names[relative] = path
            self._handles[relative] = files.GFile(tmp, "wb")
            self._handles[relative].write(header)
        self._handles[relative].write(text)

    def files(self) -> Dict[str, str]:
        return dict(self._names)

    def convert_inputs(self) -> List[str]:
        raise NotImplementedError


def header_line(names) -> bytes:
    return (",".join(names) + "\n").encode()


def bucket_ids(draw: np.ndarray, size: int) -> np.ndarray:
    """A uniform draw in [0, 1) as an id in [0, size)."""
    return np.minimum((draw * size).astype(np.int64), size - 1)


def sparse_numbers(draw: np.ndarray) -> np.ndarray:
    """Distractor numericals in [0, 1]: skewed, zero for a third of the rows."""
    return np.where(draw < 1 / 3, 0.0, ((draw - 1 / 3) * 1.5) ** 2)
