"""Where a run trains: the `tf.distribute` strategy, virtual devices and precision.

`resolve_strategy(name)` turns a strategy name into a `tf.distribute.Strategy`:

    auto          TPU when one is attached, `mirrored` when more than one GPU (or
                  `virtual_devices` > 1) is visible, else `default`
    default       the default strategy: one device, no distribution
    mirrored      `MirroredStrategy` over the local GPUs (or the virtual devices)
    multi-worker  `MultiWorkerMirroredStrategy`; the cluster and this process's
                  task come from `TF_CONFIG`, as TensorFlow defines it
    tpu           `TPUClusterResolver`, `experimental_connect_to_cluster`,
                  `initialize_tpu_system`, then `TPUStrategy`

`virtual_devices=N` splits the first physical GPU (or, without one, the CPU)
into N logical devices, so that a strategy can be tried on one device. It must
happen before TensorFlow initialises its devices, i.e. before the first op runs.

Under a strategy, only the chief writes results; `is_chief` tells which process
that is, and `worker_directory` gives the others a temporary folder that is
removed when they finish.

Example:

>>> strategy = resolve_strategy("default")
>>> strategy.num_replicas_in_sync
1
>>> is_chief(strategy)
True
"""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Callable, Optional

from pwiser_tf.errors import InputError

STRATEGIES = ("auto", "default", "mirrored", "multi-worker", "tpu")
# `--mixed-precision` choices -> Keras dtype policies.
PRECISIONS = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
# Memory of each virtual GPU device, in MiB (virtual GPUs need a limit; CPUs do not).
VIRTUAL_GPU_MEMORY_MB = 2048


def configure_virtual_devices(count: int, gpu_memory_mb: int = VIRTUAL_GPU_MEMORY_MB) -> str:
    """Splits the first physical GPU, or the CPU without one, into `count` logical
    devices; returns the device type split ("GPU" or "CPU").

    Raises `InputError` when TensorFlow has already initialised its devices with
    another layout (the split must come before the first op of the process).
    """
    import tensorflow as tf

    if int(count) < 1:
        raise InputError(f"--virtual-devices must be at least 1, got {count}")
    gpus = tf.config.list_physical_devices("GPU")
    kind = "GPU" if gpus else "CPU"
    physical = (gpus or tf.config.list_physical_devices("CPU"))[0]
    current = tf.config.get_logical_device_configuration(physical)
    if current is not None and len(current) == count:
        return kind
    limit = {"memory_limit": gpu_memory_mb} if gpus else {}
    try:
        tf.config.set_logical_device_configuration(
            physical, [tf.config.LogicalDeviceConfiguration(**limit) for _ in range(count)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices(kind))
        raise InputError(
            f"--virtual-devices {count}: TensorFlow has already initialised its devices "
            f"in this process ({have} logical {kind}); split the device before anything "
            f"else runs, e.g. at the start of the program") from None
    return kind


def tpu_available() -> bool:
    """Whether a TPU is attached: local TPU devices, or a TPU named by the environment."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("TPU")) or any(
        os.environ.get(name) for name in ("TPU_NAME", "COLAB_TPU_ADDR"))


def resolve_strategy(name="auto", virtual_devices: Optional[int] = None,
                     tpu: Optional[str] = None):
    """A `tf.distribute.Strategy` from its name (see the module docstring).

    A `Strategy` passes through unchanged; `None` is the strategy whose scope is
    active (the default strategy outside any scope). `tpu` names the TPU for
    `TPUClusterResolver` (default: the local or environment's TPU).
    """
    import tensorflow as tf

    if isinstance(name, tf.distribute.Strategy):
        return name
    if name is None:
        return tf.distribute.get_strategy()
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    # `is not None`: 0 is refused like any count below 1, not taken as "unset".
    kind = configure_virtual_devices(virtual_devices) if virtual_devices is not None else None
    if name == "auto":
        if tpu_available():
            name = "tpu"
        elif len(tf.config.list_physical_devices("GPU")) > 1 or (virtual_devices or 0) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = None
        if kind:
            devices = [d.name for d in tf.config.list_logical_devices(kind)]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi-worker":
        return _multi_worker()
    return _tpu(tpu)


def _multi_worker():
    import tensorflow as tf

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise InputError("--strategy multi-worker: TF_CONFIG is not set; it names the "
                         "cluster and this process's task, e.g. {\"cluster\": {\"worker\": "
                         "[\"host1:port\", \"host2:port\"]}, \"task\": {\"type\": \"worker\", "
                         "\"index\": 0}}")
    try:
        tf_config = json.loads(raw)
        task = tf_config["task"]
        workers = tf_config["cluster"][task["type"]]
        int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"TF_CONFIG: not a cluster with this task's type and index "
                         f"({type(err).__name__}: {err})") from None
    if not workers:
        raise InputError("TF_CONFIG: the cluster lists no workers")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise InputError(f"--strategy multi-worker: {err} (create the strategy before "
                         f"anything else runs in the process)") from None


def _tpu(tpu: Optional[str]):
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"--strategy tpu: no TPU found ({message}); use --strategy auto "
                         f"to fall back to the available devices") from None
    return tf.distribute.TPUStrategy(resolver)


def is_tpu(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, (tf.distribute.TPUStrategy,
                                 tf.distribute.experimental.TPUStrategy))


def is_distributed(strategy) -> bool:
    """Whether `strategy` spreads work over several replicas, workers or a TPU."""
    import tensorflow as tf

    return (strategy.num_replicas_in_sync > 1 or is_tpu(strategy)
            or isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy))


def is_chief(strategy) -> bool:
    """Whether this process writes the results: the `chief` task, else worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or is_tpu(strategy) or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0 \
        and "chief" not in cluster


def task_name(strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "chief"
    return f"{resolver.task_type}{resolver.task_id or 0}"


@contextlib.contextmanager
def worker_directory(output_dir: str, strategy):
    """The folder this process writes its run into: `output_dir` for the chief; for
    another worker a local temporary folder, removed when the block ends."""
    if is_chief(strategy):
        yield output_dir
        return
    folder = tempfile.mkdtemp(prefix=f"pwiser-tf-{task_name(strategy)}-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def distribute_datasets(strategy, dataset_fn: Callable):
    """`dataset_fn(input_context)` through `distribute_datasets_from_function`;
    without distribution, the plain dataset of `dataset_fn(None)`."""
    if not is_distributed(strategy):
        return dataset_fn(None)
    return strategy.distribute_datasets_from_function(dataset_fn)


@contextlib.contextmanager
def precision_policy(precision: str = "off"):
    """Sets the Keras global dtype policy for `--mixed-precision` while the block runs."""
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise InputError(f"unknown mixed precision {precision!r}; choose one of: "
                         f"{', '.join(PRECISIONS)}")
    mixed_precision = tf.keras.mixed_precision
    previous = mixed_precision.global_policy()
    mixed_precision.set_global_policy(PRECISIONS[precision])
    try:
        yield PRECISIONS[precision]
    finally:
        mixed_precision.set_global_policy(previous)


__all__ = ["STRATEGIES", "PRECISIONS", "resolve_strategy", "configure_virtual_devices",
           "tpu_available", "is_tpu", "is_distributed", "is_chief", "task_name",
           "worker_directory", "distribute_datasets", "precision_policy"]
