"""pwiser-tf: the PWiseR pairwise ranking loss and multi-task CTR/CVR models.

Importing the package imports no framework: the commands that need none (`synth`,
the configuration) start in a fraction of a second, and the program still picks
Keras' backend and flavour. The losses are registered the ordinary way
(`keras.saving.register_keras_serializable`, and tf-keras' own for
`pwiser_tf.tf_keras_losses`) by importing their module, which happens as soon as
the Keras they belong to is imported, before or after this package: so
`load_model` finds them after `import keras; import pwiser_tf` in either order.

`PWiseRLoss` and `PackedAUC` at the top level are those of the Keras that
`tf.keras` is: Keras 3 (`pwiser_tf.losses`), or tf-keras under
`TF_USE_LEGACY_KERAS=1` (`pwiser_tf.tf_keras_losses`).
"""
import importlib
import importlib.abc
import importlib.util
import os
import sys

__version__ = "0.1.0"

_LAZY = {
    "pwiser": "pwiser_tf.kernel",
    "pwiser_dense": "pwiser_tf.kernel",
    "InputError": "pwiser_tf.errors",
    "ContrastiveAlignmentLoss": "pwiser_tf.contrastive",  # Keras 3 only
}
_LOSSES = ("PWiseRLoss", "PackedAUC")
# Each Keras, and the modules whose import registers the project's objects with it.
_REGISTRATIONS = {"keras": ("pwiser_tf.losses", "pwiser_tf.contrastive"),
                  "tf_keras": ("pwiser_tf.tf_keras_losses",)}


def _tf_keras_is_active() -> bool:
    """Whether `tf.keras` is tf-keras: TensorFlow's own rule."""
    return os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true")


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _LOSSES:
        module = _REGISTRATIONS["tf_keras" if _tf_keras_is_active() else "keras"][0]
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'pwiser_tf' has no attribute {name!r}")


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Imports the modules `_REGISTRATIONS[name]` right after the Keras `name` is imported.

    It only watches the import statement: it finds nothing itself (the module's
    own finder does) and patches nothing of Keras or TensorFlow.
    """

    def find_spec(self, name, path=None, target=None):
        if name not in _REGISTRATIONS or name in sys.modules:
            return None
        for finder in sys.meta_path:  # the spec as the other finders give it
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenRegister(spec.loader, _REGISTRATIONS[name])
        return spec


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader, registrations):
        self.loader, self.registrations = loader, registrations

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _import(self.registrations)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


def _import(modules) -> None:
    # A module already being imported (it imported Keras itself) registers its
    # objects when it finishes: import_module returns it as it stands.
    for name in modules:
        importlib.import_module(name)


def _register() -> None:
    for keras_name, registrations in _REGISTRATIONS.items():
        if keras_name in sys.modules:
            _import(registrations)
    if not any(isinstance(f, _RegisterOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterOnImport())


_register()


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_LOSSES))


__all__ = ["pwiser", "pwiser_dense", "PWiseRLoss", "PackedAUC", "ContrastiveAlignmentLoss",
           "InputError", "__version__"]
