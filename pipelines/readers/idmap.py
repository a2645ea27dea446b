"""Compact ids: each field's distinct ids renumbered 1..k, 0 kept for "absent".

Raw Ali-CCP writes every feature id in one global id space (millions of ids), so
max id + 1 would give every field an embedding table of the global size.
`IdMap.collect` runs once over all splits and keeps, per field, the sorted
distinct ids (with 0 always first); `apply` renumbers a chunk by binary search;
`save`/`load` keep the map beside the converted data (`id_maps.npz`: field ->
sorted raw ids, so `raw = table[compact]`), which serving needs to map raw ids.

Example:

>>> import numpy as np
>>> from pwiser_tf.pipelines.readers import Chunk, Layout
>>> layout = Layout("toy", categorical=("a",))
>>> chunk = Chunk(np.array([[70], [0], [9]]), np.zeros([3, 0], np.float32), {},
...               {}, np.arange(3))
>>> ids = IdMap.collect(layout, [[chunk]])
>>> ids.apply(layout, chunk).categorical[:, 0].tolist(), ids.vocab_sizes()
([2, 0, 1], {'a': 3})
"""
import io
import os
from typing import Dict, Iterable

import numpy as np

from pwiser_tf.pipelines.readers.base import Chunk, Layout, Ragged

FILE = "id_maps.npz"
_MERGE_AT = 1 << 22  # pending distinct ids per field before merging them


class IdMap:
    def __init__(self, tables: Dict[str, np.ndarray]):
        self.tables = tables

    @classmethod
    def collect(cls, layout: Layout, readers: Iterable[Iterable[Chunk]]) -> "IdMap":
        names = list(layout.categorical) + [name for name, _ in layout.multi_valued]
        merged = {name: np.zeros([1], np.int64) for name in names}
        pending = {name: [] for name in names}

        def merge(name):
            merged[name] = np.unique(np.concatenate([merged[name]] + pending[name]))
            pending[name] = []

        for reader in readers:
            for chunk in reader:
                columns = {name: chunk.categorical[:, j]
                           for j, name in enumerate(layout.categorical)}
                columns.update({name: chunk.multi_valued[name].values
                                for name, _ in layout.multi_valued})
                for name, values in columns.items():
                    pending[name].append(np.unique(values))
                    if sum(len(p) for p in pending[name]) > _MERGE_AT:
                        merge(name)
        for name in names:
            merge(name)
        return cls(merged)

    def apply(self, layout: Layout, chunk: Chunk) -> Chunk:
        """The chunk with every id replaced by its position in its field's table."""
        categorical = np.empty_like(chunk.categorical)
        for j, name in enumerate(layout.categorical):
            categorical[:, j] = np.searchsorted(self.tables[name], chunk.categorical[:, j])
        multi = {name: Ragged(np.searchsorted(self.tables[name], field.values), field.lengths,
                              field.weights)
                 for name, field in chunk.multi_valued.items()}
        return Chunk(categorical, chunk.numerical, multi, chunk.labels, chunk.row_id)

    def vocab_sizes(self) -> Dict[str, int]:
        return {name: len(table) for name, table in self.tables.items()}

    def save(self, directory: str) -> str:
        """Writes `id_maps.npz` atomically, on any filesystem `tf.io.gfile` knows."""
        from pwiser_tf import fileio

        buffer = io.BytesIO()
        np.savez(buffer, **self.tables)
        path = os.path.join(directory, FILE)
        fileio.atomic_write(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, directory: str) -> "IdMap":
        from pwiser_tf.pipelines.readers.base import open_binary

        with open_binary(os.path.join(directory, FILE)) as f:
            raw = f.read()
        with np.load(io.BytesIO(raw)) as data:
            return cls({name: data[name] for name in data.files})
