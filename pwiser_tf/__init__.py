"""pwiser-tf: the PWiseR pairwise ranking loss and multi-task CTR/CVR models.

The top-level names load lazily: importing the package does not import TensorFlow,
so the program that imports TensorFlow first still chooses the Keras flavour
(Keras 3, or tf-keras with `TF_USE_LEGACY_KERAS=1`). As soon as TensorFlow is
loaded, `PWiseRLoss` is registered with that Keras, so `load_model` finds it
without `custom_objects`.
"""
import importlib
import importlib.abc
import importlib.util
import sys

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


def _register_loss() -> None:
    importlib.import_module("pwiser_tf.losses")  # defining the class registers it


def _register_when_keras_loads() -> None:
    """Registers `PWiseRLoss` with the Keras `tf.keras` resolves to, once it resolves.

    TensorFlow picks the Keras flavour the first time `tf.keras` is used (from
    `TF_USE_LEGACY_KERAS` at that moment). Registering right away would make that
    choice at import time; waiting for TensorFlow's own first use of `tf.keras`
    leaves it to the program (the TFX Trainer's `run_fn` selects tf-keras itself
    after the executor has imported TensorFlow and this package).
    """
    loader = sys.modules["tensorflow"].__dict__.get("keras")
    state = getattr(loader, "__dict__", {})
    if state.get("_tfll_initialized", True) or not hasattr(type(loader), "_initialize"):
        _register_loss()  # Keras is already chosen (or TensorFlow works differently)
        return
    initialize = loader._initialize

    def initialize_then_register():
        initialize()
        _register_loss()

    loader.__dict__["_initialize"] = initialize_then_register  # (its __setattr__ loads)


class _RegisterAfterTensorFlow(importlib.abc.MetaPathFinder):
    """Registers `PWiseRLoss` right after TensorFlow's own import finishes."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                _register_when_keras_loads()

            spec.loader.exec_module = exec_then_register
        return spec


if "tensorflow" in sys.modules:
    _register_when_keras_loads()
elif not any(isinstance(f, _RegisterAfterTensorFlow) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTensorFlow())


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["pwiser", "pwiser_dense", "PWiseRLoss", "PackedAUC", "InputError", "__version__"]
