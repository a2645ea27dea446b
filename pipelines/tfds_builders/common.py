"""What both builders share: features from a reader's layout, examples from its chunks,
and finding the manually downloaded files."""
import glob
import inspect
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.readers import Layout, open_reader
from pwiser_tf.pipelines.schema import CATEGORICAL_KEY, NUMERICAL_KEY

VERSION = tfds.core.Version("1.0.0")
ROW_ID = "row_id"


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose files the user downloads by hand."""

    VERSION = VERSION

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS resolves this through importlib resources, which fails for packages
        # mapped from other folders (pwiser_tf.pipelines lives in pipelines/).
        return epath.Path(inspect.getfile(cls))


def features(layout: Layout) -> tfds.features.FeaturesDict:
    """The TFDS features of a layout, under the keys of the project's record layout
    (`categorical`, `numerical`, `mv_<field>`, `mv_<field>_values`, labels) plus
    `row_id`, the source's row id."""
    spec = {}
    if layout.categorical:
        spec[CATEGORICAL_KEY] = tfds.features.Tensor(shape=(len(layout.categorical),),
                                                     dtype=np.int64)
    if layout.numerical:
        spec[NUMERICAL_KEY] = tfds.features.Tensor(shape=(len(layout.numerical),),
                                                   dtype=np.float32)
    for name, has_values in layout.multi_valued:
        spec[f"mv_{name}"] = tfds.features.Tensor(shape=(None,), dtype=np.int64)
        if has_values:
            spec[f"mv_{name}_values"] = tfds.features.Tensor(shape=(None,), dtype=np.float32)
    for label in layout.labels:
        spec[label] = tfds.features.Tensor(shape=(), dtype=np.int64)
    spec[ROW_ID] = tfds.features.Tensor(shape=(), dtype=np.int64)
    return tfds.features.FeaturesDict(spec)


def examples(format: str, paths: Sequence[str], layout: Layout,
             **options) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
    """`(key, example)` for every row the reader yields; keys number the rows."""
    reader = open_reader(format, paths, **options)
    if reader.layout != layout:
        raise InputError(f"{paths[0]}: the files hold {reader.layout}, expected {layout}")
    key = 0
    for chunk in reader:
        starts = {name: np.concatenate([[0], np.cumsum(chunk.multi_valued[name].lengths)])
                  for name, _ in layout.multi_valued}
        for i in range(len(chunk)):
            example = {ROW_ID: chunk.row_id[i]}
            if layout.categorical:
                example[CATEGORICAL_KEY] = chunk.categorical[i]
            if layout.numerical:
                example[NUMERICAL_KEY] = chunk.numerical[i]
            for name, has_values in layout.multi_valued:
                ragged, row = chunk.multi_valued[name], slice(starts[name][i],
                                                              starts[name][i + 1])
                example[f"mv_{name}"] = ragged.values[row].astype(np.int64)
                if has_values:
                    example[f"mv_{name}_values"] = ragged.weights[row].astype(np.float32)
            for label in layout.labels:
                example[label] = chunk.labels[label][i]
            yield key, example
            key += 1


def find(manual_dir: str, names: Sequence[str], archives: Sequence[str], dl_manager,
         instructions: str) -> List[str]:
    """The paths of `names` under `manual_dir` (at any depth), extracting the first of
    `archives` found there when the files are not."""
    def search(root):
        found, missing = [], []
        for name in names:
            hits = sorted(glob.glob(os.path.join(glob.escape(str(root)), "**", name),
                                    recursive=True))
            (found if hits else missing).append(hits[0] if hits else name)
        return found, missing

    found, missing = search(manual_dir)
    if not missing:
        return found
    for archive in archives:
        hits = sorted(glob.glob(os.path.join(glob.escape(str(manual_dir)), "**", archive),
                                recursive=True))
        if hits:
            found, missing = search(dl_manager.extract(hits[0]))
            if not missing:
                return found
    raise InputError(f"{manual_dir}: cannot find {', '.join(missing)} (nor "
                     f"{' or '.join(archives)}). {instructions}")
