"""`import pwiser_tf` is enough for `load_model` to find `PWiseRLoss`, in both Keras flavours."""
import os
import subprocess
import sys
import textwrap

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
