"""What a run writes besides its state: the best weights, the id maps served by
its export, and AdaFTR's temperature histogram."""
import os
import tempfile

import tensorflow as tf

from pwiser_tf import fileio
from pwiser_tf.pipelines.schema import Metadata


def save_weights(model, path: str) -> None:
    """`model.save_weights` to any filesystem, atomically (HDF5 needs a local file)."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tempfile.TemporaryDirectory() as local:
        tmp = os.path.join(local, os.path.basename(path))
        model.save_weights(tmp)
        with open(tmp, "rb") as f:
            fileio.atomic_write(path, f.read())


def id_maps(data_dir: str, metadata: Metadata):
    """The `--remap-ids` tables of a converted directory (`{field: raw ids}`), or None:
    the export then serves raw ids."""
    from pwiser_tf.pipelines.readers.idmap import IdMap

    if not metadata.extra.get("id_maps"):
        return None
    return IdMap.load(data_dir).tables


def temperature_histogram(model, dataset, bins: int = 10) -> dict:
    """Histogram of AdaFTR's temperatures over a dataset, on its [tau_min, tau_max] range.

    A temperature trained only through the contrastive term tends to drift to one
    edge of its range; this shows whether it did.
    """
    import numpy as np

    values = np.concatenate([np.reshape(model.temperatures(features).numpy(), [-1])
                             for features, _ in dataset])
    low, high = float(model.tau_min), float(model.tau_max)
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(),
            "mean": float(values.mean())}
