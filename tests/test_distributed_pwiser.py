"""PWiseR over the global batch under `tf.distribute`.

The checks on virtual CPU devices need the CPU split before TensorFlow
initialises, so they run in their own process (`tests/distributed/`, tf-keras;
the Keras 3 ones are in `tests/keras3/`, run by `tests/test_keras3_mode.py`).
The tests here check the options on one device."""
import numpy as np
import pytest

from pwiser_tf import InputError, PackedAUC, PWiseRLoss
from pwiser_tf import replicas
from subsuite import assert_suite_passes

pytestmark = pytest.mark.slow  # the virtual-device suite runs in a subprocess


def test_virtual_device_suite_passes():
    assert_suite_passes("distributed", PWISER_TEST_DISTRIBUTED="1", TF_USE_LEGACY_KERAS="1")


def test_pairs_option_is_checked_and_serialized():
    with pytest.raises(InputError, match="pairs must be one of"):
        PWiseRLoss(pairs="batch")
    loss = PWiseRLoss(pairs="replica")
    assert PWiseRLoss.from_config(loss.get_config()).pairs == "replica"
    assert PWiseRLoss().pairs == "global"


def test_one_device_is_the_same_for_both_pairs_options():
    y = np.array([[1, 1], [1, 0], [0, 0], [1, 1], [0, 0]], "float32")
    p = np.array([0.3, 0.6, 0.5, 0.8, 0.2], "float32")
    assert replicas.num_replicas() == 1
    assert float(PWiseRLoss()(y, p)) == float(PWiseRLoss(pairs="replica")(y, p))


def test_packed_auc_reads_one_column_and_skips_missing_labels():
    y = np.array([[1, 1], [0, 0], [1, 0], [-1, -1], [0, 0]], "float32")
    p = np.array([[0.9], [0.2], [0.4], [0.99], [0.5]], "float32")
    click, conversion = PackedAUC(), PackedAUC("conversion", name="cvr")
    click.update_state(y, p)
    conversion.update_state(y, p)
    # click: positives 0.9, 0.4 over negatives 0.2, 0.5 -> 3 of 4 pairs ordered.
    assert float(click.result()) == pytest.approx(0.75, abs=1e-3)
    assert float(conversion.result()) == pytest.approx(1.0, abs=1e-3)
    assert conversion.name == "cvr" and click.name == "click_auc"
    assert PackedAUC.from_config(conversion.get_config()).label == "conversion"
    with pytest.raises(InputError, match="label must be one of"):
        PackedAUC("intent")
