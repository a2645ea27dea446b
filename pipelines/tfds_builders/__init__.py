"""TFDS builders of the raw public datasets, which users download by hand.

`Aliexpress` (configs `nl`, `es`, `fr`, `us`) and `AliCcp` are
`tfds.core.GeneratorBasedBuilder`s with `MANUAL_DOWNLOAD_INSTRUCTIONS`: they read
the raw files (or their archives) from `manual_dir` through
`pwiser_tf.pipelines.readers` and store the project's record layout
(`categorical`, `numerical`, `mv_<field>`, labels) plus `row_id`. Importing a
builder registers its name with TFDS (`tfds.builder("aliexpress/nl", ...)`).
"""
import importlib

_LAZY = {"Aliexpress": "pwiser_tf.pipelines.tfds_builders.aliexpress",
         "AliCcp": "pwiser_tf.pipelines.tfds_builders.ali_ccp"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
