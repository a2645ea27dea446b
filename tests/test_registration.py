"""`import pwiser_tf` is enough for `load_model` to find `PWiseRLoss`: in both Keras
flavours, and under Keras 3 on each backend (TensorFlow, JAX, PyTorch)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # saves and loads in subprocesses

SAVE = """
import tensorflow as tf
from pwiser_tf import PWiseRLoss
model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="sgd", loss=PWiseRLoss(pwiser_weight=0.5, margin_click=0.2))
model.save({path!r})
"""

# A fresh process that never names the class: the package import alone registers it,
# also when it comes before TensorFlow's.
LOAD = """
import pwiser_tf
import tensorflow as tf
model = tf.keras.models.load_model({path!r})
print(type(model.loss).__module__, type(model.loss).__name__, model.loss.pwiser_weight)
"""


@pytest.mark.parametrize("legacy", ["0", "1"], ids=["keras3", "tf-keras"])
def test_load_model_finds_the_loss_without_custom_objects(tmp_path, legacy):
    env = dict(os.environ, TF_USE_LEGACY_KERAS=legacy, TF_CPP_MIN_LOG_LEVEL="3")
    path = str(tmp_path / "model.keras")
    for script in (SAVE, LOAD):
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(script.format(path=path))],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    module = "pwiser_tf.tf_keras_losses" if legacy == "1" else "pwiser_tf.losses"
    assert result.stdout.split()[-3:] == [module, "PWiseRLoss", "0.5"]


# Keras 3 on each backend: fit, save, then load in fresh processes that import
# `keras` and `pwiser_tf` in either order and never name the loss.
SAVE_KERAS3 = """
import json
import keras
import numpy as np
from pwiser_tf import PWiseRLoss

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 2)).astype("float32")
click = (rng.random(256) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype("float32")
y = np.stack([click, click * (x[:, 1] > 0)], 1).astype("float32")  # x1: the conversion
np.savez({data!r}, x=x, y=y)
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    1, activation="sigmoid", kernel_initializer="zeros")])
model.compile(optimizer=keras.optimizers.Adam(0.05), loss=PWiseRLoss(
    pwiser_weight=1.5, margin_click=0.2, margin_nonclick=0.05, normalization="pair"))
history = model.fit(x, y, batch_size=64, epochs=4, shuffle=False, verbose=0).history["loss"]
model.save({path!r})
print(json.dumps({{"history": history, "config": model.loss.get_config(),
                  "evaluate": model.evaluate(x, y, verbose=0),
                  "predictions": model.predict(x[:8], verbose=0).tolist()}}))
"""

LOAD_KERAS3 = """
{imports}
import json, sys
import numpy as np

data = np.load({data!r})
model = keras.models.load_model({path!r})
print(json.dumps({{"class": [type(model.loss).__module__, type(model.loss).__name__],
                  "config": model.loss.get_config(),
                  "evaluate": model.evaluate(data["x"], data["y"], verbose=0),
                  "predictions": model.predict(data["x"][:8], verbose=0).tolist(),
                  "tensorflow": "tensorflow" in sys.modules}}))
"""

IMPORT_ORDERS = {"keras-first": "import keras\nimport pwiser_tf",
                 "pwiser-first": "import pwiser_tf\nimport keras"}
_SAVED = {}  # backend -> (folder, what the saving process printed)


def _run_keras3(backend, script):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_USE_LEGACY_KERAS="0",
               TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _saved(backend, tmp_path_factory):
    if backend not in _SAVED:
        folder = tmp_path_factory.mktemp(f"keras3_{backend}")
        files = dict(path=str(folder / "model.keras"), data=str(folder / "data.npz"))
        _SAVED[backend] = files, _run_keras3(backend, SAVE_KERAS3.format(**files))
    return _SAVED[backend]


@pytest.mark.parametrize("order", sorted(IMPORT_ORDERS))
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_keras3_model_loads_in_a_fresh_process(backend, order, tmp_path_factory):
    files, saved = _saved(backend, tmp_path_factory)
    history = saved["history"]
    assert history[-1] < history[0], history  # PWiseRLoss trained the model
    loaded = _run_keras3(backend, LOAD_KERAS3.format(imports=IMPORT_ORDERS[order], **files))
    assert loaded["class"] == ["pwiser_tf.losses", "PWiseRLoss"]
    assert loaded["config"] == saved["config"]
    assert (loaded["config"]["pwiser_weight"], loaded["config"]["margin_click"],
            loaded["config"]["margin_nonclick"], loaded["config"]["normalization"]) == \
        (1.5, 0.2, 0.05, "pair")
    np.testing.assert_allclose(loaded["predictions"], saved["predictions"], rtol=1e-6)
    np.testing.assert_allclose(loaded["evaluate"], saved["evaluate"], rtol=1e-5)
    # Loading and evaluating on JAX or PyTorch import no TensorFlow. (Saving does
    # where it is installed: Keras' serializer checks for `tf.TensorShape`.)
    assert loaded["tensorflow"] == (backend == "tensorflow")


@pytest.mark.parametrize("module, legacy", [
    ("pwiser_tf.kernel", "0"), ("pwiser_tf.losses", "0"), ("pwiser_tf.contrastive", "0"),
    ("pwiser_tf.replicas", "0"), ("pwiser_tf.backend", "0"),
    ("pwiser_tf.tf_keras_losses", "1")])
def test_each_module_imports_first_in_a_fresh_process(module, legacy):
    """Importing a module that imports Keras makes `import pwiser_tf` register the
    losses in the middle of that import: nothing may need the half-loaded module."""
    code = (f"import {module}, keras\n"
            "assert keras.saving.get_registered_object('pwiser_tf>PWiseRLoss')\n"
            "assert keras.saving.get_registered_object('pwiser_tf>ContrastiveAlignmentLoss')\n")
    env = dict(os.environ, TF_USE_LEGACY_KERAS=legacy, TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND="jax" if legacy == "0" else "tensorflow")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
