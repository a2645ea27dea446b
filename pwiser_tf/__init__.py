"""pwiser-tf: the PWiseR pairwise ranking loss and multi-task CTR/CVR models.

The top-level names load lazily, so `import pwiser_tf.pipelines` does not import
Keras, and the Keras flavour (Keras 3 or tf-keras, set by `TF_USE_LEGACY_KERAS`)
is the one active when the loss is first used.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "pwiser": "pwiser_tf.kernel",
    "pwiser_dense": "pwiser_tf.kernel",
    "PWiseRLoss": "pwiser_tf.losses",
    "PackedAUC": "pwiser_tf.losses",
    "InputError": "pwiser_tf.errors",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pwiser_tf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["pwiser", "pwiser_dense", "PWiseRLoss", "PackedAUC", "InputError", "__version__"]
