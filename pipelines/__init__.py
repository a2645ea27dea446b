"""Data pipelines: readers, converter, synthetic data, tf.data streaming, TFDS builders.

Installed as `pwiser_tf.pipelines`. Names load lazily so that reading the schema
does not pull in the converter or TFDS. The converter is
`pwiser_tf.pipelines.convert.convert` (the module's name would shadow it here).
"""
import importlib

_LAZY = {
    "make_dataset": "pwiser_tf.pipelines.dataset",
    "synthesize": "pwiser_tf.pipelines.synth",
    "Schema": "pwiser_tf.pipelines.schema",
    "Field": "pwiser_tf.pipelines.schema",
    "Metadata": "pwiser_tf.pipelines.schema",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pwiser_tf.pipelines' has no attribute {name!r}")


__all__ = sorted(_LAZY)
