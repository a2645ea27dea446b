"""One train step with PWiseR's pairs over the global batch against per replica.

    python benchmarks/bench_pairs.py [--devices 2,8] [--batch 8192] [--repeats 15]

Splits the CPU into max(devices) logical devices, then for each device count runs
one `MirroredStrategy` train step (forward of a small Dense model, `PWiseRLoss`,
gradients, SGD update) with `pairs="global"` (all-gather of scores, labels and
weights, kernel over the global batch) and with `pairs="replica"`, alternating
the two, and prints median milliseconds per step and the ratio global / replica.
Also times a BCE-only step (`pwiser_weight=0`) for scale. Runs under Keras 3.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pwiser_tf import PWiseRLoss  # noqa: E402

FEATURES = 32


def split_cpu(count):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def mirrored(replicas):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
    # Strategies over different device sets would share collective group keys.
    tf.distribute.MirroredStrategy._collective_key_base = 1000 * replicas
    return tf.distribute.MirroredStrategy(devices)


def data(rows, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    click = (rng.uniform(size=rows) < 0.05).astype("float32")
    conversion = click * (rng.uniform(size=rows) < 0.1)
    return x, np.stack([click, conversion], 1).astype("float32")


def make_step(strategy, loss):
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((FEATURES,)),
                                     tf.keras.layers.Dense(64, activation="relu"),
                                     tf.keras.layers.Dense(1, activation="sigmoid")])
        optimizer = tf.keras.optimizers.SGD(0.01)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    @tf.function
    def step(batch):
        return strategy.run(replica_step, args=batch)

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="2,8")
    parser.add_argument("--batch", type=int, default=8192, help="global batch size")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    counts = [int(c) for c in args.devices.split(",")]
    split_cpu(max(counts))
    x, y = data(args.batch)
    print(f"global batch {args.batch}, {FEATURES} features, Dense 64 -> 1, "
          f"median of {args.repeats} steps; ms per step")
    print(f"{'devices':>7} {'BCE only':>9} {'replica':>9} {'global':>9} "
          f"{'global/replica':>15} {'(global-replica)/BCE':>21}")
    for count in counts:
        strategy = mirrored(count)
        batches = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch).repeat())
        iterator = iter(batches)
        variants = {"bce": PWiseRLoss(pwiser_weight=0.0),
                    "replica": PWiseRLoss(pairs="replica"),
                    "global": PWiseRLoss(pairs="global")}
        steps = {name: make_step(strategy, loss) for name, loss in variants.items()}
        batch = next(iterator)
        for step in steps.values():  # trace and warm up
            for _ in range(3):
                step(batch)
        times = {name: [] for name in steps}
        for _ in range(args.repeats):  # alternate, so that load drifts hit all alike
            for name, step in steps.items():
                start = time.perf_counter()
                out = step(batch)
                strategy.experimental_local_results(out)[0].numpy()
                times[name].append(1e3 * (time.perf_counter() - start))
        ms = {name: statistics.median(t) for name, t in times.items()}
        print(f"{count:>7} {ms['bce']:>9.2f} {ms['replica']:>9.2f} {ms['global']:>9.2f} "
              f"{ms['global'] / ms['replica']:>15.2f} "
              f"{(ms['global'] - ms['replica']) / ms['bce']:>21.2f}")


if __name__ == "__main__":
    main()
