"""The project's losses bound to tf-keras, for tf-keras `compile`, TFRS tasks and TFX.

The same computation as `pwiser_tf.losses` (its mixins, in `keras.ops`, whose
backend is TensorFlow here), on tf-keras' `Loss` and `AUC`, registered with
tf-keras so that `tf.keras.models.load_model` finds them after `import pwiser_tf`
(`TF_USE_LEGACY_KERAS=1`). Each loss declares the reduction `sum` to tf-keras for
a reduced value, as `pwiser_tf.replicas` explains.

Example:

>>> loss = PWiseRLoss(pwiser_weight=0.0)
>>> round(float(loss([[1., 0.], [0., 0.]], [0.8, 0.4])), 4)
0.367
"""
import tf_keras

from pwiser_tf.losses import BinaryCrossentropyTerms, PackedLabel, PWiseRTerms


@tf_keras.utils.register_keras_serializable(package="pwiser_tf")
class BinaryCrossentropy(BinaryCrossentropyTerms, tf_keras.losses.Loss):
    """`pwiser_tf.losses.BinaryCrossentropy` for tf-keras."""

    _TF_KERAS = True


@tf_keras.utils.register_keras_serializable(package="pwiser_tf")
class PWiseRLoss(PWiseRTerms, tf_keras.losses.Loss):
    """`pwiser_tf.losses.PWiseRLoss` for tf-keras (the same arguments)."""

    _TF_KERAS = True
    _BCE = BinaryCrossentropy


@tf_keras.utils.register_keras_serializable(package="pwiser_tf")
class PackedAUC(PackedLabel, tf_keras.metrics.AUC):
    """`pwiser_tf.losses.PackedAUC` for tf-keras."""


__all__ = ["BinaryCrossentropy", "PWiseRLoss", "PackedAUC"]
