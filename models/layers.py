"""Building blocks of the networks: MLP blocks, towers, expert banks, gates and
AITM's transfer attention.

An MLP block is `Dense -> BatchNorm -> ReLU -> Dropout` (the reference setting).
"""
from typing import Sequence

import tensorflow as tf

from pwiser_tf.errors import InputError

# The reference implementation's batch norm keeps 90% of its running statistics per
# step (PyTorch momentum 0.1). Keras' default of 0.99 leaves the inference-time
# statistics far from the data after the few hundred steps of an epoch on a small
# dataset, and the predictions collapse.
BATCH_NORM_MOMENTUM = 0.9


def fan_in_uniform(fan_in=None):
    """The kernel initializer of every layer: U(+-1/sqrt(fan_in)), as the reference
    implementation's `torch.nn.Linear`.

    Keras' Glorot default draws the experts' first kernel (2176 -> 512) from about
    twice that range; in the one-epoch runs of `docs/pwiser_study.md` it trained
    measurably slower (MMoE CTR AUC 0.05 below the reference). `fan_in` is given
    for kernels whose shape does not say it (the expert bank's `[E, in, out]`).
    """
    if fan_in is None:
        return tf.keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
    bound = float(fan_in) ** -0.5
    return tf.keras.initializers.RandomUniform(-bound, bound)


def dense(units: int, **kwargs) -> tf.keras.layers.Dense:
    """`Dense` with the kernel initializer of every layer here (`fan_in_uniform`)."""
    return tf.keras.layers.Dense(units, kernel_initializer=fan_in_uniform(), **kwargs)


def resettable_dropout(rate: float, **kwargs) -> tf.keras.layers.Dropout:
    """`Dropout` whose masks come from a `tf.random.Generator` (tf-keras' default is a
    stateful op that no one can reset): a trainer sets its state at each epoch, so a
    resumed run draws the masks of an uninterrupted one (`pwiser_tf.training.seeds`)."""
    return tf.keras.layers.Dropout(rate, rng_type="stateful", **kwargs)


def _units(units, what: str):
    units = tuple(int(u) for u in units)
    if any(u <= 0 for u in units):
        raise InputError(f"{what} must be positive layer widths, got {units}")
    return units


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class MLP(tf.keras.layers.Layer):
    """A stack of `Dense -> BatchNorm -> ReLU -> Dropout` blocks.

    The layers are kept in one flat list, `sublayers` (block `i`'s are named
    `dense_i`, `batch_norm_i`, `relu_i`, `dropout_i`): the Keras savers
    (`.weights.h5`, `.keras`) only follow layers held by an attribute or by a
    flat list or dict attribute, not by nested lists. `blocks` groups them by block.

    Example:

    >>> mlp = MLP((8, 4), dropout=0.1)
    >>> mlp(tf.ones([3, 5])).shape
    TensorShape([3, 4])
    >>> [layer.name for layer in mlp.blocks[1]]
    ['dense_1', 'batch_norm_1', 'relu_1', 'dropout_1']
    """

    def __init__(self, units: Sequence[int], dropout: float = 0.2,
                 batch_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units = _units(units, "MLP units")
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        sublayers = []
        for i, width in enumerate(self.units):
            sublayers.append(dense(width, name=f"dense_{i}"))
            if self.batch_norm:
                sublayers.append(tf.keras.layers.BatchNormalization(
                    momentum=BATCH_NORM_MOMENTUM, name=f"batch_norm_{i}"))
            sublayers.append(tf.keras.layers.ReLU(name=f"relu_{i}"))
            if self.dropout:
                sublayers.append(resettable_dropout(self.dropout, name=f"dropout_{i}"))
        self.sublayers = sublayers

    @property
    def blocks(self):
        """The layers of each block: `[Dense, BatchNorm, ReLU, Dropout]` (BatchNorm
        and Dropout only where the block has them)."""
        size = len(self.sublayers) // len(self.units)
        return [list(self.sublayers[i:i + size])
                for i in range(0, len(self.sublayers), size)]

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.sublayers:
            x = layer(x, training=training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, dropout=self.dropout, batch_norm=self.batch_norm)
        return config


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class Tower(tf.keras.layers.Layer):
    """A task tower: an `MLP`, then `Dense(1)`; returns the logit `[B]`.

    `hidden` gives the last hidden layer (AdaFTR contrasts it).

    Example:

    >>> tower = Tower((8, 4))
    >>> tower(tf.ones([3, 5])).shape
    TensorShape([3])
    """

    def __init__(self, units: Sequence[int] = (128, 64), dropout: float = 0.2,
                 batch_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.mlp = MLP(units, dropout, batch_norm, name="mlp")
        # float32 under mixed precision too: the logit and the heads' probabilities
        self.head = dense(1, name="logit", dtype="float32")

    def hidden(self, inputs, training=None):
        return self.mlp(inputs, training=training)

    def logit(self, hidden):
        return tf.squeeze(self.head(hidden), axis=-1)

    def call(self, inputs, training=None):
        return self.logit(self.hidden(inputs, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(units=self.mlp.units, dropout=self.mlp.dropout,
                      batch_norm=self.mlp.batch_norm)
        return config


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class ExpertBank(tf.keras.layers.Layer):
    """`num_experts` expert MLPs on one input, computed together.

    The first layers of all experts are one wide `Dense` (a single GEMM); later
    layers are one batched matmul over experts. Batch norm and dropout act per
    unit, so this is exactly `num_experts` separate MLP blocks, only faster.
    Returns `[B, num_experts, units[-1]]`.

    Example:

    >>> bank = ExpertBank(3, (8, 4))
    >>> bank(tf.ones([2, 5])).shape
    TensorShape([2, 3, 4])
    """

    def __init__(self, num_experts: int, units: Sequence[int] = (512, 256),
                 dropout: float = 0.2, batch_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        if int(num_experts) <= 0:
            raise InputError(f"num_experts must be positive, got {num_experts}")
        self.num_experts = int(num_experts)
        self.units = _units(units, "expert units")
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        self.first = dense(self.num_experts * self.units[0], name="dense_0")
        # One batch norm per layer, none without batch norm (no `None` entries: the
        # savers track a list of layers).
        self.norms = [tf.keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM,
                                                         name=f"batch_norm_{i}")
                      for i in range(len(self.units))] if self.batch_norm else []
        self.drop = resettable_dropout(self.dropout) if self.dropout else None

    def build(self, input_shape):
        # Each sublayer is built in its own name scope, as its first call would:
        # `experts/dense_0/kernel`, `experts/batch_norm_1/gamma`, ... (unique names).
        with tf.name_scope(self.first.name):
            self.first.build(input_shape)
        self.kernels, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(self.units, self.units[1:]), start=1):
            self.kernels.append(self.add_weight(
                name=f"kernel_{i}", shape=[self.num_experts, fan_in, fan_out],
                initializer=fan_in_uniform(fan_in)))
            self.biases.append(self.add_weight(
                name=f"bias_{i}", shape=[self.num_experts, fan_out], initializer="zeros"))
        for norm, width in zip(self.norms, self.units):
            with tf.name_scope(norm.name):
                norm.build([None, self.num_experts * width])
        super().build(input_shape)

    def _activate(self, x, i, training):
        if self.norms:
            x = self.norms[i](x, training=training)
        x = tf.nn.relu(x)
        if self.drop is not None:
            x = self.drop(x, training=training)
        return x

    def call(self, inputs, training=None):
        x = self._activate(self.first(inputs), 0, training)          # [B, E * U0]
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases), start=1):
            x = tf.reshape(x, [-1, self.num_experts, self.units[i - 1]])
            x = tf.einsum("beu,euv->bev", x, kernel) + bias
            x = self._activate(tf.reshape(x, [-1, self.num_experts * self.units[i]]),
                               i, training)
        return tf.reshape(x, [-1, self.num_experts, self.units[-1]])

    def get_config(self):
        config = super().get_config()
        config.update(num_experts=self.num_experts, units=self.units,
                      dropout=self.dropout, batch_norm=self.batch_norm)
        return config


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class Gate(tf.keras.layers.Layer):
    """A softmax gate over experts: returns the weights `[B, E]` (rows sum to 1).

    Example:

    >>> gate = Gate(3)
    >>> float(tf.reduce_sum(gate(tf.ones([1, 5]))))
    1.0
    """

    def __init__(self, num_experts: int, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = int(num_experts)
        self.dense = dense(self.num_experts, name="logits")

    def call(self, inputs):
        return tf.nn.softmax(self.dense(inputs), axis=-1)

    @staticmethod
    def mix(weights, experts):
        """`sum_k weights[:, k] * experts[:, k, :]`."""
        return tf.einsum("be,bed->bd", weights, experts)

    def get_config(self):
        config = super().get_config()
        config.update(num_experts=self.num_experts)
        return config


@tf.keras.utils.register_keras_serializable(package="pwiser_tf")
class TransferAttention(tf.keras.layers.Layer):
    """AITM's adaptive information transfer.

    The previous task's representation passes through a transfer layer `p`; it
    and the current task's `q` are mixed by self-attention:
    `z = sum_u w_u h1(u)`, `w_u = softmax_u(<h2(u), h3(u)> / sqrt(units))`.
    Called on `(previous, current)`, both `[B, units]`.

    Example:

    >>> attention = TransferAttention(4)
    >>> attention((tf.ones([2, 4]), tf.zeros([2, 4]))).shape
    TensorShape([2, 4])
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.transfer = dense(self.units, name="transfer")
        self.h1 = dense(self.units, name="value")
        self.h2 = dense(self.units, name="key")
        self.h3 = dense(self.units, name="query")

    def call(self, inputs):
        previous, current = inputs
        u = tf.stack([self.transfer(previous), current], axis=1)          # [B, 2, d]
        scores = tf.reduce_sum(self.h2(u) * self.h3(u), axis=-1) * self.units ** -0.5
        weights = tf.nn.softmax(scores, axis=1)                            # [B, 2]
        return tf.einsum("bu,bud->bd", weights, self.h1(u))

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config
