"""The few things `keras.ops` leaves to the backend, in one place.

The kernel and the losses are written once in `keras.ops` and run on whatever
backend Keras runs on (TensorFlow, also under tf-keras, JAX and PyTorch). Four
things need the backend by name:

- a *stable* argsort (`keras.ops.argsort` is stable on JAX and NumPy only);
- whether a tensor holds its values now (eager) or is being traced, so that bad
  labels get an error naming them where that is possible, and NaN where not;
- which framework a tensor belongs to, so that a tensor of another backend gets
  one clear error instead of a conversion deep inside;
- TensorFlow's graph assertion (a `tf.function` step stops on bad labels).

Example:

>>> import numpy as np
>>> framework_of(np.zeros(2)) is None  # NumPy arrays suit every backend
True
"""
from typing import Optional

import keras
import numpy as np
from keras import ops

from pwiser_tf.errors import InputError

# Each backend's tensors live in these top-level packages.
FRAMEWORKS = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


def name() -> str:
    """The backend Keras runs on: `"tensorflow"`, `"jax"`, `"torch"` (or `"numpy"`)."""
    return keras.backend.backend()


def framework_of(value) -> Optional[str]:
    """The framework whose tensor `value` is, or None (NumPy, Python, a Keras variable)."""
    package = type(value).__module__.split(".")[0]
    for framework, packages in FRAMEWORKS.items():
        if package in packages:
            return framework
    return None


def check_framework(argument: str, value, owner: str) -> None:
    """Refuse a tensor of a framework other than the backend's, naming `argument`."""
    framework = framework_of(value)
    if framework is not None and framework != name():
        raise InputError(
            f"{owner}: {argument} is a {framework} tensor, but Keras runs on the "
            f"{name()} backend; give {name()} tensors or NumPy arrays (or set "
            f"KERAS_BACKEND={framework} before Keras is imported)")


def stable_argsort(values):
    """Ascending argsort of a `[B]` tensor; equal values keep their order."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.argsort(values, stable=True)
    if backend == "torch":
        import torch
        return torch.argsort(values, stable=True)
    return ops.argsort(values)  # jnp.argsort and np.argsort are stable


def scatter(indices, values, shape):
    """Zeros of `shape` (`[B]`) with `values[i]` at row `indices[i]`, for `[B]` indices
    that are all distinct; the gradient with respect to `values` is dense.

    `keras.ops.scatter` on PyTorch adds one row at a time in a Python loop (B
    indexing ops and B autograd nodes), so PyTorch gets one `index_put`.
    """
    if name() == "torch":
        import torch
        zeros = torch.zeros(tuple(shape), dtype=values.dtype, device=values.device)
        return zeros.index_put((indices,), values)
    return ops.scatter(indices[:, None], values, shape)


def concrete(value) -> Optional[np.ndarray]:
    """`value`'s numbers if it holds them now (eager), None while it is traced."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf
        if not tf.executing_eagerly() or not hasattr(value, "numpy"):
            return None
        return value.numpy()
    if backend == "jax":
        import jax
        return None if isinstance(value, jax.core.Tracer) else np.asarray(value)
    if backend == "torch":
        import torch
        if torch.compiler.is_compiling():
            return None
        return value.detach().cpu().numpy()
    return np.asarray(value)


def graph_assert(condition, message: str, *tensors):
    """In a TensorFlow graph, stop the step when `condition` is false, before any
    op that uses `tensors` (returned). XLA drops assertions and the other backends
    have none: there the caller's result is NaN or a shape error."""
    if name() == "tensorflow":
        import tensorflow as tf
        if not tf.executing_eagerly():
            check = tf.debugging.Assert(condition, [message])
            with tf.control_dependencies([check]):
                tensors = tuple(tf.identity(t) for t in tensors)
    return tensors


__all__ = ["FRAMEWORKS", "name", "framework_of", "check_framework", "stable_argsort",
           "scatter", "concrete", "graph_assert"]
