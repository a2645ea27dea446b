"""The CTR/CVR networks (see the model definitions in the project's specs).

Task 1 is the click (CTR). Task 2 is the conversion over all exposures (CTCVR),
as in the public AliExpress benchmark: models with a CTR and a CTCVR head report
pCVR = pCTCVR / pCTR. ESMM-style models (ESMM, ESCM2) have a CVR tower instead
and pCTCVR = pCTR * pCVR.

Example:

>>> from pwiser_tf.pipelines.schema import Field, Schema
>>> schema = Schema("toy", categorical=(Field("a", 5),), numerical=("x",))
>>> model = MMoE(schema, embedding_dim=4, num_experts=2, expert_units=(8,),
...              tower_units=(4,))
>>> out = model({"categorical": tf.constant([[1]], tf.int64),
...              "numerical": tf.constant([[0.5]])})
>>> sorted(out)
['ctcvr', 'ctr', 'cvr']
"""
from typing import Sequence

import tensorflow as tf

from pwiser_tf.errors import InputError
from pwiser_tf.models.base import CtrCvrModel, check_units, options, predictions
from pwiser_tf.models.layers import MLP, ExpertBank, Gate, TransferAttention
from pwiser_tf.models.task import binary_crossentropy, label_weights


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class SingleTask(CtrCvrModel):
    """STL: one network per task (own embeddings, bottom MLP and tower).

    Args:
      bottom_units: widths of each task's bottom MLP.
      **kwargs: the common options of `CtrCvrModel`.
    """

    def __init__(self, schema, *, bottom_units: Sequence[int] = (512, 256), **kwargs):
        super().__init__(schema, **kwargs)
        self._init_config.update(options(locals()))
        bottom_units = check_units(bottom_units, "bottom_units")
        self.ctr_embedding = self.make_embedding("ctr_embedding")
        self.ctcvr_embedding = self.make_embedding("ctcvr_embedding")
        self.ctr_bottom = MLP(bottom_units, self.dropout, self.batch_norm, name="ctr_bottom")
        self.ctcvr_bottom = MLP(bottom_units, self.dropout, self.batch_norm,
                                name="ctcvr_bottom")
        self.ctr_tower = self.make_tower("ctr_tower")
        self.ctcvr_tower = self.make_tower("ctcvr_tower")

    def forward(self, features, training=None):
        ctr = self.ctr_bottom(self.ctr_embedding(features), training=training)
        ctcvr = self.ctcvr_bottom(self.ctcvr_embedding(features), training=training)
        return predictions(tf.sigmoid(self.ctr_tower(ctr, training=training)),
                           pctcvr=tf.sigmoid(self.ctcvr_tower(ctcvr, training=training))), {}


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class SharedBottom(CtrCvrModel):
    """Shared-Bottom: one shared bottom MLP, one tower per task.

    Args:
      bottom_units: widths of the shared bottom MLP.
      **kwargs: the common options of `CtrCvrModel`.
    """

    def __init__(self, schema, *, bottom_units: Sequence[int] = (512, 256), **kwargs):
        super().__init__(schema, **kwargs)
        self._init_config.update(options(locals()))
        self.embedding = self.make_embedding()
        self.bottom = MLP(check_units(bottom_units, "bottom_units"), self.dropout,
                          self.batch_norm, name="bottom")
        self.ctr_tower = self.make_tower("ctr_tower")
        self.ctcvr_tower = self.make_tower("ctcvr_tower")

    def forward(self, features, training=None):
        shared = self.bottom(self.embedding(features), training=training)
        return predictions(tf.sigmoid(self.ctr_tower(shared, training=training)),
                           pctcvr=tf.sigmoid(self.ctcvr_tower(shared, training=training))), {}


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class MMoE(CtrCvrModel):
    """MMoE: `num_experts` expert MLPs, one softmax gate per task, one tower per task.

    Args:
      num_experts: number of experts.
      expert_units: widths of each expert MLP.
      **kwargs: the common options of `CtrCvrModel`.
    """

    #: tasks per gate: MMoE has a gate per task, OMoE one gate for all.
    gate_per_task = True

    def __init__(self, schema, *, num_experts: int = 8,
                 expert_units: Sequence[int] = (512, 256), **kwargs):
        super().__init__(schema, **kwargs)
        self._init_config.update(options(locals()))
        self.embedding = self.make_embedding()
        self.experts = ExpertBank(num_experts, check_units(expert_units, "expert_units"),
                                  self.dropout, self.batch_norm, name="experts")
        self.gates = [Gate(num_experts, name=f"gate_{i}")
                      for i in range(2 if self.gate_per_task else 1)]
        self.ctr_tower = self.make_tower("ctr_tower")
        self.ctcvr_tower = self.make_tower("ctcvr_tower")

    def mix(self, features, training=None):
        """Per task the mixed expert output; and the gate weights `[B, E]`."""
        x = self.embedding(features)
        experts = self.experts(x, training=training)
        weights = [gate(x) for gate in self.gates]
        mixed = [Gate.mix(w, experts) for w in weights]
        return (mixed if self.gate_per_task else mixed * 2), weights

    def gate_weights(self, features):
        return self.mix(features, training=False)[1]

    def forward(self, features, training=None):
        (ctr, ctcvr), _ = self.mix(features, training=training)
        return predictions(tf.sigmoid(self.ctr_tower(ctr, training=training)),
                           pctcvr=tf.sigmoid(self.ctcvr_tower(ctcvr, training=training))), {}


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class OMoE(MMoE):
    """OMoE: MMoE with one softmax gate shared by both tasks."""

    gate_per_task = False


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class PLE(CtrCvrModel):
    """PLE (CGC levels): task-specific and shared experts per level.

    Level `l` has `num_shared_experts` shared experts and `num_specific_experts`
    per task, each one MLP block of width `level_units[l]`. A task gate mixes its
    own experts with the shared ones; a shared gate mixes all experts and feeds
    the next level's shared experts (the last level has none).

    Args:
      num_shared_experts, num_specific_experts: experts per level.
      level_units: width of each level's experts; its length is the number of levels.
      **kwargs: the common options of `CtrCvrModel`.
    """

    def __init__(self, schema, *, num_shared_experts: int = 4,
                 num_specific_experts: int = 4, level_units: Sequence[int] = (512, 256),
                 **kwargs):
        super().__init__(schema, **kwargs)
        self._init_config.update(options(locals()))
        level_units = check_units(level_units, "level_units")
        self.embedding = self.make_embedding()
        # Flat lists of layers, not a list of per-level dicts: the Keras savers
        # (`.weights.h5`, `.keras`) follow attributes and flat lists of layers, not
        # containers nested in a list. `levels` groups them by level.
        num_all = num_shared_experts + 2 * num_specific_experts
        self.shared_banks, self.specific_banks = [], []
        self.task_gates, self.shared_gates = [], []
        for level, width in enumerate(level_units):
            self.shared_banks.append(self._bank(num_shared_experts, width,
                                                f"level{level}_shared"))
            self.specific_banks.extend(self._bank(num_specific_experts, width,
                                                  f"level{level}_task{t}") for t in range(2))
            self.task_gates.extend(Gate(num_shared_experts + num_specific_experts,
                                        name=f"level{level}_gate{t}") for t in range(2))
            if level < len(level_units) - 1:  # the last level has no shared gate
                self.shared_gates.append(Gate(num_all, name=f"level{level}_gate_s"))
        self.ctr_tower = self.make_tower("ctr_tower")
        self.ctcvr_tower = self.make_tower("ctcvr_tower")

    @property
    def levels(self):
        """Per level, its layers: `shared` (a bank), `specific` (a bank per task),
        `task_gates` (a gate per task) and `shared_gate` (None at the last level)."""
        return [{"shared": shared,
                 "specific": list(self.specific_banks[2 * level:2 * level + 2]),
                 "task_gates": list(self.task_gates[2 * level:2 * level + 2]),
                 "shared_gate": (self.shared_gates[level]
                                 if level < len(self.shared_gates) else None)}
                for level, shared in enumerate(self.shared_banks)]

    def _bank(self, num_experts, width, name):
        return ExpertBank(num_experts, (width,), self.dropout, self.batch_norm, name=name)

    def extract(self, features, training=None):
        """The last level's task outputs, and every gate's weights."""
        x = self.embedding(features)
        tasks, shared, weights = [x, x], x, []
        for level in self.levels:
            shared_experts = level["shared"](shared, training=training)
            specific = [bank(t, training=training)
                        for bank, t in zip(level["specific"], tasks)]
            outputs = []
            for t, gate in enumerate(level["task_gates"]):
                w = gate(tasks[t])
                weights.append(w)
                outputs.append(Gate.mix(w, tf.concat([specific[t], shared_experts], 1)))
            if level["shared_gate"] is not None:
                w = level["shared_gate"](shared)
                weights.append(w)
                shared = Gate.mix(w, tf.concat(specific + [shared_experts], 1))
            tasks = outputs
        return tasks, weights

    def gate_weights(self, features):
        return self.extract(features, training=False)[1]

    def forward(self, features, training=None):
        (ctr, ctcvr), _ = self.extract(features, training=training)
        return predictions(tf.sigmoid(self.ctr_tower(ctr, training=training)),
                           pctcvr=tf.sigmoid(self.ctcvr_tower(ctcvr, training=training))), {}


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class AITM(CtrCvrModel):
    """AITM: per-task bottoms, adaptive information transfer from CTR to CTCVR.

    Args:
      bottom_units: widths of each task's bottom MLP.
      calibrator: add the behavioural expectation calibrator
        `mean(max(pCTCVR - pCTR, 0))` (off in the public AliExpress benchmark).
      calibrator_weight: its weight alpha (the official range is 0.3 to 0.6).
      **kwargs: the common options of `CtrCvrModel`.
    """

    def __init__(self, schema, *, bottom_units: Sequence[int] = (512, 256),
                 calibrator: bool = False, calibrator_weight: float = 0.6, **kwargs):
        super().__init__(schema, extra_weights={"calibrator": calibrator_weight}
                         if calibrator else None, **kwargs)
        self._init_config.update(options(locals()))
        bottom_units = check_units(bottom_units, "bottom_units")
        self.calibrator = bool(calibrator)
        self.embedding = self.make_embedding()
        self.ctr_bottom = MLP(bottom_units, self.dropout, self.batch_norm, name="ctr_bottom")
        self.ctcvr_bottom = MLP(bottom_units, self.dropout, self.batch_norm,
                                name="ctcvr_bottom")
        self.attention = TransferAttention(bottom_units[-1], name="transfer_attention")
        self.ctr_tower = self.make_tower("ctr_tower")
        self.ctcvr_tower = self.make_tower("ctcvr_tower")

    def forward(self, features, training=None):
        x = self.embedding(features)
        ctr = self.ctr_bottom(x, training=training)
        ctcvr = self.attention((ctr, self.ctcvr_bottom(x, training=training)))
        out = predictions(tf.sigmoid(self.ctr_tower(ctr, training=training)),
                          pctcvr=tf.sigmoid(self.ctcvr_tower(ctcvr, training=training)))
        extras = {}
        if self.calibrator:
            extras["calibrator"] = tf.reduce_mean(tf.nn.relu(out["ctcvr"] - out["ctr"]))
        return out, extras


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class ESMM(CtrCvrModel):
    """ESMM: CTR and CVR towers on shared embeddings, pCTCVR = pCTR * pCVR.

    Both losses cover the entire exposure space, BCE(click, pCTR) +
    BCE(click AND conversion, pCTCVR); pCVR has no direct loss.

    Args:
      bottom_units: widths of each tower's MLP before its task tower.
      **kwargs: the common options of `CtrCvrModel`.
    """

    def __init__(self, schema, *, bottom_units: Sequence[int] = (512, 256), **kwargs):
        super().__init__(schema, **kwargs)
        self._init_config.update(options(locals()))
        bottom_units = check_units(bottom_units, "bottom_units")
        self.embedding = self.make_embedding()
        self.ctr_bottom = MLP(bottom_units, self.dropout, self.batch_norm, name="ctr_bottom")
        self.cvr_bottom = MLP(bottom_units, self.dropout, self.batch_norm, name="cvr_bottom")
        self.ctr_tower = self.make_tower("ctr_tower")
        self.cvr_tower = self.make_tower("cvr_tower")

    def forward(self, features, training=None):
        x = self.embedding(features)
        pctr = tf.sigmoid(self.ctr_tower(self.ctr_bottom(x, training=training),
                                         training=training))
        pcvr = tf.sigmoid(self.cvr_tower(self.cvr_bottom(x, training=training),
                                         training=training))
        return predictions(pctr, pcvr=pcvr), {}


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class ESCM2(ESMM):
    """ESCM2-IPS: ESMM plus a counterfactual CVR risk over the exposure space.

    The risk is `mean_i click_i * BCE(conversion_i, pCVR_i) / p_i` with the
    propensity `p_i = clip(stop_gradient(pCTR_i), min_propensity, 1)`.

    Args:
      counterfactual_weight: weight of the counterfactual risk.
      min_propensity: lower clip of the propensity (upper bound of the IPS weight).
      **kwargs: the options of `ESMM`.
    """

    def __init__(self, schema, *, counterfactual_weight: float = 0.1,
                 min_propensity: float = 0.01, **kwargs):
        if not 0 < min_propensity <= 1:
            raise InputError(f"min_propensity must be in (0, 1], got {min_propensity}")
        super().__init__(schema, extra_weights={"counterfactual": counterfactual_weight},
                         **kwargs)
        self._init_config.update(options(locals()))
        self.min_propensity = float(min_propensity)

    def compute_loss(self, inputs, training: bool = False):
        # The risk needs the labels, so it is computed here rather than in forward.
        features, labels = inputs
        out, _ = self.forward(features, training=training)
        labels = {k: tf.cast(tf.reshape(v, [-1]), tf.float32) for k, v in labels.items()}
        propensity = tf.clip_by_value(tf.stop_gradient(out["ctr"]), self.min_propensity, 1.0)
        clicked = label_weights(labels)["cvr"]
        risk = clicked * binary_crossentropy(tf.maximum(labels["conversion"], 0.0),
                                             out["cvr"]) / propensity
        extras = {"counterfactual": tf.reduce_mean(risk)}
        return self.task(labels, out, extras, training=training)
