"""AdaFTR: adaptive fine-grained task relatedness on an MMoE backbone.

The CTR and CVR towers' last hidden layers `h_c(i)`, `h_v(i)` (through an
optional projection head, L2-normalised) of the same instance form a positive
pair; other instances are negatives. A relatedness network predicts each
instance's InfoNCE temperature:

    tau_i = tau_min + (tau_max - tau_min) * sigmoid(MLP_r([h_c(i); h_v(i)]))
    L_CL  = -mean_i log( exp(s(h_c(i), h_v(i)) / tau_i) / sum_j exp(s(h_c(i), h_v(j)) / tau_i) )

The loss is the task BCEs + `contrastive_weight` * L_CL. The published text
leaves the parts below open; each is an argument with the default named.

Ablations (`configs/adaftr_ablation.yaml`, docs/adaftr_ablation.md):
`contrastive_weight=0` is the base model (the same MMoE with a CTR and a CVR
tower, no contrastive term), and `temperature="fixed"` replaces the per-instance
temperature with one constant.
"""
from typing import Optional, Sequence

import tensorflow as tf

from pwiser_tf import replicas
from pwiser_tf.contrastive import info_nce
from pwiser_tf.errors import InputError
from pwiser_tf.models.base import check_units, options, predictions
from pwiser_tf.models.layers import MLP, dense
from pwiser_tf.models.networks import MMoE

NEGATIVES = ("batch", "random")
CVR_LOSSES = ("ctcvr", "cvr")
TEMPERATURES = ("adaptive", "fixed")


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class AdaFTR(MMoE):
    """AdaFTR on MMoE with a CTR and a CVR tower, pCTCVR = pCTR * pCVR.

    Args:
      contrastive_weight: alpha, the weight of the contrastive term.
      tau_min, tau_max: the range of the per-instance temperature.
      negatives: `batch` (all other in-batch instances; under a `tf.distribute`
        strategy those of the global batch, or of the replica's with
        `pairs="replica"`) or `random` (one random other instance of the
        replica's batch per instance).
      projection_units: widths of the projection head before the similarity
        (empty: contrast the towers' hidden layers themselves).
      relatedness_units: hidden widths of the relatedness network MLP_r.
      relatedness_stop_gradient: stop the gradient of the temperature into the
        representations, so that MLP_r learns the temperature without reshaping
        the towers.
      cvr_loss: `ctcvr` (BCE of pCTCVR over all exposures, ESMM style) or `cvr`
        (BCE of pCVR over clicked exposures).
      temperature: `adaptive` (the paper's: per instance, from MLP_r) or `fixed`
        (one constant, `fixed_temperature`, for every instance; no MLP_r).
      fixed_temperature: the constant of `temperature="fixed"`; default
        (tau_min + tau_max) / 2, where the adaptive temperature starts (MLP_r's
        output near 0 at initialisation).
      **kwargs: the options of `MMoE`.
    """

    def __init__(self, schema, *, contrastive_weight: float = 0.1, tau_min: float = 0.05,
                 tau_max: float = 1.0, negatives: str = "batch",
                 projection_units: Sequence[int] = (),
                 relatedness_units: Sequence[int] = (64,),
                 relatedness_stop_gradient: bool = False, cvr_loss: str = "ctcvr",
                 temperature: str = "adaptive", fixed_temperature: Optional[float] = None,
                 **kwargs):
        if not 0 < tau_min < tau_max:
            raise InputError(f"need 0 < tau_min < tau_max, got {tau_min}, {tau_max}")
        if negatives not in NEGATIVES:
            raise InputError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
        if cvr_loss not in CVR_LOSSES:
            raise InputError(f"cvr_loss must be one of {CVR_LOSSES}, got {cvr_loss!r}")
        if temperature not in TEMPERATURES:
            raise InputError(f"temperature must be one of {TEMPERATURES}, "
                             f"got {temperature!r}")
        if fixed_temperature is None:
            fixed_temperature = (tau_min + tau_max) / 2
        if fixed_temperature <= 0:
            raise InputError(f"fixed_temperature must be > 0, got {fixed_temperature}")
        super().__init__(schema, extra_weights={"contrastive": contrastive_weight},
                         bce_heads=("ctr", cvr_loss), **kwargs)
        self._init_config.update(options(locals()))
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)
        self.negatives, self.relatedness_stop_gradient = negatives, relatedness_stop_gradient
        self.projection = (MLP(check_units(projection_units, "projection_units"),
                               dropout=0.0, batch_norm=False, name="projection")
                           if projection_units else None)
        self.temperature_mode, self.fixed_temperature = temperature, float(fixed_temperature)
        relatedness = [dense(u, activation="relu", name=f"relatedness_{i}")
                       for i, u in enumerate(check_units(relatedness_units,
                                                         "relatedness_units"))]
        relatedness.append(dense(1, name="relatedness_out", dtype="float32"))
        self.relatedness = (tf.keras.Sequential(relatedness, name="relatedness")
                            if temperature == "adaptive" else None)

    @property
    def cvr_tower(self):
        """MMoE's second tower, which here predicts CVR."""
        return self.ctcvr_tower

    def _represent(self, hidden, training):
        z = self.projection(hidden, training=training) if self.projection else hidden
        return tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)  # float32 when mixed

    def temperature(self, z_ctr, z_cvr):
        if self.relatedness is None:  # temperature="fixed"
            return tf.fill(tf.shape(z_ctr)[:1], self.fixed_temperature)
        pair = tf.concat([z_ctr, z_cvr], axis=-1)
        if self.relatedness_stop_gradient:
            pair = tf.stop_gradient(pair)
        gate = tf.sigmoid(tf.squeeze(self.relatedness(pair), -1))
        return self.tau_min + (self.tau_max - self.tau_min) * gate

    def contrastive(self, z_ctr, z_cvr, tau):
        """InfoNCE of each instance's CTR vs CVR representation at its temperature
        (`pwiser_tf.contrastive`, whose Keras 3 loss is `ContrastiveAlignmentLoss`)."""
        if self.negatives == "batch":
            # Under a strategy, the CVR representations of every replica's rows
            # (`pairs="global"`), or of this replica's (`pairs="replica"`).
            candidates = replicas.gather([z_cvr], self.pairs)[0]
            return tf.reduce_mean(info_nce(z_ctr, z_cvr, tau, candidates))
        positive = tf.reduce_sum(z_ctr * z_cvr, -1)
        shift = tf.random.uniform([], 1, tf.maximum(tf.shape(z_ctr)[0], 2), tf.int32)
        negative = tf.reduce_sum(z_ctr * tf.roll(z_cvr, shift, axis=0), -1)
        logits = tf.stack([positive, negative], axis=1) / tau[:, None]  # [B, 2]
        return tf.reduce_mean(tf.reduce_logsumexp(logits, axis=1) - positive / tau)

    def representations(self, features, training=None):
        (ctr, cvr), _ = self.mix(features, training=training)
        return (self.ctr_tower.hidden(ctr, training=training),
                self.cvr_tower.hidden(cvr, training=training))

    def temperatures(self, features):
        """Each instance's temperature (for its histogram)."""
        h_ctr, h_cvr = self.representations(features, training=False)
        return self.temperature(self._represent(h_ctr, False), self._represent(h_cvr, False))

    def forward(self, features, training=None):
        h_ctr, h_cvr = self.representations(features, training=training)
        out = predictions(tf.sigmoid(self.ctr_tower.logit(h_ctr)),
                          pcvr=tf.sigmoid(self.cvr_tower.logit(h_cvr)))
        z_ctr, z_cvr = self._represent(h_ctr, training), self._represent(h_cvr, training)
        tau = self.temperature(z_ctr, z_cvr)
        return out, {"contrastive": self.contrastive(z_ctr, z_cvr, tau)}
