"""Multi-task CTR/CVR networks on TFRS (tf-keras).

One registry maps a name to a model class; `build_model(name, schema, **config)`
builds it from a dataset's `Schema`. Every model is a `tfrs.Model` whose
`compute_loss` takes the `(features, labels)` batches of `make_dataset`, and
whose call returns `{"ctr", "cvr", "ctcvr"}` probabilities.

TFRS is a Keras 2 library, so the models need tf-keras: set
`TF_USE_LEGACY_KERAS=1` before TensorFlow is first imported.

Example:

>>> from pwiser_tf import models                                   # doctest: +SKIP
>>> model = models.build_model("mmoe", schema, loss="pwiser")       # doctest: +SKIP
>>> model.compile(optimizer=models.reference_optimizer())         # doctest: +SKIP
>>> model.fit(train_ds, validation_data=val_ds)                    # doctest: +SKIP
"""
import inspect
import os

_LEGACY = ("1", "true", "True")


class KerasVersionError(ImportError):
    """The active Keras is Keras 3; the models need tf-keras."""


def _require_tf_keras():
    import tensorflow as tf

    hint = ("pwiser_tf.models runs on tf-keras (TFRS is a Keras 2 library), but Keras 3 is "
            "active. Set TF_USE_LEGACY_KERAS=1 in the environment before TensorFlow is "
            "first imported, e.g. `TF_USE_LEGACY_KERAS=1 python train.py` or "
            "`os.environ['TF_USE_LEGACY_KERAS'] = '1'` at the very top of the program.")
    if os.environ.get("TF_USE_LEGACY_KERAS") not in _LEGACY:
        raise KerasVersionError(hint)
    package = tf.keras.Model.__module__.split(".")[0]
    if package != "tf_keras":  # the variable was set after Keras 3 had loaded
        raise KerasVersionError(f"{hint} (tf.keras resolves to the {package!r} package)")


_require_tf_keras()

import tensorflow as tf  # noqa: E402

from pwiser_tf.errors import InputError  # noqa: E402
from pwiser_tf.models.adaftr import AdaFTR  # noqa: E402
from pwiser_tf.models.base import CtrCvrModel  # noqa: E402
from pwiser_tf.models.embedding import FeatureEmbedding  # noqa: E402
from pwiser_tf.models.export import export_saved_model  # noqa: E402
from pwiser_tf.models.layers import MLP, ExpertBank, Gate, Tower, TransferAttention  # noqa: E402
from pwiser_tf.models.networks import (  # noqa: E402
    AITM, ESCM2, ESMM, MMoE, OMoE, PLE, SharedBottom, SingleTask)
from pwiser_tf.models.task import AUC, CtrCvrTask  # noqa: E402

MODELS = {
    "stl": SingleTask,
    "shared-bottom": SharedBottom,
    "omoe": OMoE,
    "mmoe": MMoE,
    "ple": PLE,
    "esmm": ESMM,
    "aitm": AITM,
    "adaftr": AdaFTR,
    "escm2": ESCM2,
}


def model_arguments(cls) -> set:
    """The keyword arguments `cls` accepts, its base classes' included."""
    names = set()
    for klass in cls.__mro__:
        if klass is CtrCvrModel.__mro__[1]:
            break
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind == p.KEYWORD_ONLY}
    return names - {"extra_weights", "bce_heads"}


def build_model(name: str, schema, **config) -> CtrCvrModel:
    """The model `name` of the registry, built for `schema`.

    `config` holds constructor arguments: sizes (`embedding_dim`,
    `expert_units`, ...), the loss (`loss="bce"|"pwiser"`, `pwiser_weight`,
    `margin_click`, `margin_nonclick`, `pwiser_head`, `squared`,
    `normalization`, `pairs`, `pwiser_group`) and a model's own options. An unknown name or argument
    raises `InputError`.
    """
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    cls = MODELS[name]
    unknown = sorted(set(config) - model_arguments(cls))
    if unknown:
        raise InputError(f"model {name!r} has no argument(s) {', '.join(unknown)}; it "
                         f"accepts: {', '.join(sorted(model_arguments(cls)))}")
    return cls(schema, name=name.replace("-", "_"), **config)


def reference_optimizer(learning_rate: float = 1e-3, weight_decay: float = 1e-6):
    """The reference optimizer: Adam, learning rate 1e-3, weight decay 1e-6.

    Keras applies the weight decay decoupled from the gradient (as AdamW does).
    """
    return tf.keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=weight_decay)


__all__ = ["MODELS", "build_model", "reference_optimizer", "export_saved_model",
           "model_arguments", "KerasVersionError", "CtrCvrModel", "CtrCvrTask", "AUC",
           "FeatureEmbedding", "MLP", "Tower", "ExpertBank", "Gate", "TransferAttention",
           "SingleTask", "SharedBottom", "OMoE", "MMoE", "PLE", "ESMM", "ESCM2", "AITM",
           "AdaFTR"]
