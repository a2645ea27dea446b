"""The model of a run: seeded, compiled and built in its strategy's scope."""
import contextlib
from typing import Optional

import tensorflow as tf

from pwiser_tf import config as config_lib
from pwiser_tf import distribute
from pwiser_tf.errors import InputError
from pwiser_tf.pipelines.schema import Metadata
from pwiser_tf.training.inputs import Inputs


def model_kwargs(config: config_lib.Config, model_name: str, loss: str) -> dict:
    """The constructor arguments of `model_name` under a configuration: `model:`,
    then the model's `model_options:`, the loss and, for `pwiser`, every PWiseR
    setting at its resolved value (`config.pwiser`, defaults spelled out)."""
    config = config_lib.validate(config)
    kwargs = {**config.model, **config.model_options.get(model_name, {}), "loss": loss}
    if loss == "pwiser":
        kwargs.update(config.pwiser.model_arguments())
    return kwargs


def build_compiled(model_name: str, schema, model_config: dict,
                   train: config_lib.TrainSettings, jit_compile: Optional[bool] = None):
    """The registry's model, compiled with the reference optimizer at `train`'s
    learning rate and weight decay.

    Call it inside a strategy's scope to create the variables there. Under the
    `mixed_float16` policy tf-keras wraps the optimizer in a `LossScaleOptimizer`.
    """
    from pwiser_tf import models

    model = models.build_model(model_name, schema, **model_config)
    model.compile(optimizer=models.reference_optimizer(
        learning_rate=train.learning_rate, weight_decay=train.weight_decay),
        jit_compile=jit_compile)
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        # The task's metrics are global already; Keras would sum them over the workers.
        model.distribute_reduction_method = "first"
    return model


def seeded_model(inputs: Inputs, model_name: str, model_config: dict,
                 train: config_lib.TrainSettings, seed: int, schema=None):
    """The built, compiled model of a run, its initial weights set by `seed` alone.

    The model is built in the scope of `inputs.strategy`, under the
    `train.mixed_precision` policy, and its variables are created (on a
    validation batch), so that a checkpoint can be restored into it.
    """
    train = config_lib.train_settings(train)
    strategy = inputs.strategy
    scope = strategy_scope(strategy)
    tf.keras.utils.set_random_seed(seed)
    schema = schema if schema is not None else inputs.metadata.schema
    jit_compile = distribute.is_tpu(strategy) if train.jit_compile is None \
        else train.jit_compile
    with scope, distribute.precision_policy(train.mixed_precision):
        model = build_compiled(model_name, schema, model_config, train,
                               jit_compile=jit_compile)
        # Build the variables (in the scope), so that a checkpoint can be restored.
        model(next(iter(inputs.dataset("validation")))[0])
    return model


def seeded_start(data_dir: str, model_name: str, model_config: dict,
                 train: config_lib.TrainSettings, seed: int, schema=None, strategy=None):
    """The built, compiled model, the first epoch's training data and the validation
    data of a run.

    The seed alone sets the initial weights and the order of the training data,
    whatever the loss: a BCE and a PWiseR run of one seed (or two variants that
    add no variables before the shared ones) start from the same weights and see
    the same batches, so their results form a pair.

    The model is built in `strategy`'s scope (default: the active one), under the
    `train.mixed_precision` policy, and the datasets are distributed over its
    replicas (see `Inputs`). `train`: typed settings, or a partial `train:` section.
    """
    train = config_lib.train_settings(train)
    strategy = strategy or tf.distribute.get_strategy()
    inputs = Inputs(data_dir, Metadata.load(data_dir), train, strategy)
    model = seeded_model(inputs, model_name, model_config, train, seed, schema)
    return model, inputs.epochs(seed, 0, 1), inputs.distributed("validation")


def strategy_scope(strategy, check_only: bool = False):
    """The scope to build a model in. A scope the caller entered stays as it is
    (clearing the Keras session inside it would drop the strategy); otherwise
    the session is cleared and `strategy`'s scope entered."""
    if tf.distribute.has_strategy():
        if tf.distribute.get_strategy() is not strategy:
            raise InputError("strategy= differs from the strategy whose scope is active; "
                             "pass that strategy, or None")
        return contextlib.nullcontext()
    if check_only:
        return None
    tf.keras.backend.clear_session()
    return strategy.scope()


def outside_strategy_scope(function, *args):
    """`function(*args)` outside any strategy scope the caller entered (scopes are
    per thread): the exported model serves on one device, as in production."""
    if not tf.distribute.has_strategy():
        return function(*args)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()
