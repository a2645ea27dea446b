"""What the backend tests need of the framework Keras runs on, by its name.

Each test process runs one backend (`KERAS_BACKEND`), so this module imports that
backend's framework, and for the bad-input tests the other frameworks but
TensorFlow: under JAX or PyTorch, TensorFlow is never imported.
Gradients come from the framework's own autodiff (`tf.GradientTape`, `jax.grad`,
`torch.autograd`), compiled by the framework's own compiler where one is checked.
"""
import importlib

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()
# The backends' frameworks, by the name Python imports them with.
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
lib = importlib.import_module(MODULES[BACKEND])


def tensor(value, dtype=None):
    """A tensor of the backend holding `value` (a NumPy array)."""
    return ops.convert_to_tensor(np.asarray(value), dtype=dtype)


def numpy(value) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(value))


def value_and_grad(fn, scores):
    """`fn(scores)` and its gradient with respect to `scores` (NumPy in, NumPy out),
    by the backend's own autodiff."""
    if BACKEND == "tensorflow":
        s = lib.constant(np.asarray(scores, "float32"))
        with lib.GradientTape() as tape:
            tape.watch(s)
            value = fn(s)
        return numpy(value), numpy(tape.gradient(value, s))
    if BACKEND == "jax":
        value, grad = lib.value_and_grad(fn)(lib.numpy.asarray(scores, "float32"))
        return numpy(value), numpy(grad)
    s = lib.tensor(np.asarray(scores, "float32"), requires_grad=True)
    value = fn(s)
    (grad,) = lib.autograd.grad(value, s)
    return value.detach().numpy(), grad.detach().numpy()


def compiled_value_and_grad(fn, scores, *labels):
    """`fn(scores, *labels)` and its gradient, compiled whole with the labels traced:
    TensorFlow with XLA (`jit_compile=True`), JAX with `jax.jit`."""
    args = [np.asarray(scores, "float32")] + [np.asarray(x, "float32") for x in labels]
    if BACKEND == "tensorflow":
        @lib.function(jit_compile=True)
        def step(s, *rest):
            with lib.GradientTape() as tape:
                tape.watch(s)
                value = fn(s, *rest)
            return value, tape.gradient(value, s)
        value, grad = step(*[lib.constant(a) for a in args])
    elif BACKEND == "jax":
        value, grad = lib.jit(lib.value_and_grad(fn))(*[lib.numpy.asarray(a) for a in args])
    else:
        raise NotImplementedError("the torch backend is checked eagerly")
    return numpy(value), numpy(grad)


def other_frameworks():
    """Tensors of the frameworks other than the backend's (never TensorFlow's
    under another backend, whose process must not import it): name -> maker."""
    makers = {}
    if BACKEND != "torch":
        torch = importlib.import_module("torch")
        makers["torch"] = lambda a: torch.tensor(np.asarray(a))
    if BACKEND != "jax":
        jnp = importlib.import_module("jax.numpy")
        makers["jax"] = lambda a: jnp.asarray(np.asarray(a))
    return makers
