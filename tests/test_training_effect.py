"""The effect PWiseR exists for, on a small model trained both ways on the same seeds.

Toy data: intent follows features x0, x1; noise clicks follow a "clickbait"
feature x2 and never convert; converted exposures are a subset of intentional
clicks. BCE on clicks rewards the clickbait feature; PWiseR ranks converted
clicks (S3) above clicks without conversion (S2), so pCTR's AUC of S3 against S2
must be clearly higher with it.
"""
import numpy as np
import pytest
import tensorflow as tf

from pwiser_tf import PWiseRLoss
from pwiser_tf.metrics import auc

pytestmark = pytest.mark.slow  # trains a model per seed and loss

SEEDS = (0, 1, 2)


def data(seed, rows=20000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4)).astype("float32")
    intent = rng.random(rows) < 1 / (1 + np.exp(-(1.5 * x[:, 0] + x[:, 1] - 3.5)))
    noise = rng.random(rows) < 1 / (1 + np.exp(-(2.0 * x[:, 2] - 3.5)))
    click = intent | noise
    conversion = intent & (rng.random(rows) < 0.5)
    return x, np.stack([click, conversion], axis=1).astype("float32")


def s3_vs_s2_auc(loss, seed):
    tf.keras.utils.set_random_seed(seed)
    x, y = data(seed)
    model = tf.keras.Sequential([tf.keras.Input((4,)),
                                 tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss=loss)
    model.fit(x, y, batch_size=1024, epochs=6, verbose=0)
    test_x, test_y = data(seed + 100)
    pctr = model.predict(test_x, batch_size=4096, verbose=0)[:, 0]
    clicked = test_y[:, 0] > 0
    return auc(test_y[:, 1], pctr, mask=clicked)


def test_pwiser_ranks_converted_clicks_above_other_clicks():
    bce = [s3_vs_s2_auc(PWiseRLoss(pwiser_weight=0.0), seed) for seed in SEEDS]
    with_pwiser = [s3_vs_s2_auc(PWiseRLoss(pwiser_weight=1.0), seed) for seed in SEEDS]
    gains = np.array(with_pwiser) - np.array(bce)
    assert np.all(gains > 0.03), (bce, with_pwiser)
    assert gains.mean() > 0.08, (bce, with_pwiser)
