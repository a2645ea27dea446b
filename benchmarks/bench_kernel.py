"""PWiseR loss + gradient: the O(B log B) kernel against the alternatives, side by side.

    python benchmarks/bench_kernel.py [--sizes 2048,16384,1048576] [--repeats 7]

For each batch size B (about 5% clicks, 10% of the clicks converted) it times the
value and gradient of: the kernel in graph mode and under XLA, the dense O(B^2)
reference (where its B x B matrices fit in memory), keras-rs `PairwiseHingeLoss`
on one list of B items (Keras 3; quadratic, so capped), a bare `tf.argsort` of B
floats, and BCE. It prints median milliseconds and the ratios the targets name.
Runs under Keras 3 (keras-rs needs it); the kernel itself does not use Keras.
"""
import argparse
import os
import resource
import statistics
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pwiser_tf import pwiser, pwiser_dense  # noqa: E402

DENSE_MAX = 16_384      # 1 GiB per B x B float32 matrix; several are alive at once
KERAS_RS_MAX = 16_384


def batch(size, seed=0):
    rng = np.random.default_rng(seed)
    click = (rng.random(size) < 0.05).astype(np.float32)
    conversion = click * (rng.random(size) < 0.10).astype(np.float32)
    scores = (rng.random(size) * 0.1).astype(np.float32)
    return tf.constant(scores), tf.constant(click), tf.constant(conversion)


def with_gradient(fn, jit=False):
    @tf.function(jit_compile=jit)
    def step(scores, click, conversion):
        with tf.GradientTape() as tape:
            tape.watch(scores)
            value = fn(scores, click, conversion)
        return value, tape.gradient(value, scores)
    return step


def keras_rs_step():
    try:
        import keras_rs
    except ImportError:
        return None
    loss = keras_rs.losses.PairwiseHingeLoss()

    def fn(scores, click, conversion):
        # One list of B items; relevance 2 = converted, 1 = clicked, 0 = not clicked.
        return loss(tf.expand_dims(click + conversion, 0), tf.expand_dims(scores, 0))
    return with_gradient(fn)


def bce(scores, click, conversion):
    return tf.reduce_mean(tf.keras.losses.binary_crossentropy(click[:, None],
                                                              scores[:, None]))


def timed(step, args, repeats):
    for _ in range(2):  # trace and warm up
        [t.numpy() for t in step(*args)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        [t.numpy() for t in step(*args)]
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bare_argsort():
    @tf.function
    def step(scores, click, conversion):
        return (tf.argsort(scores, direction="DESCENDING", stable=True),)
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,16384,65536,262144,1048576")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = {
        "kernel": with_gradient(pwiser),
        "kernel_xla": with_gradient(pwiser, jit=True),
        "dense": with_gradient(pwiser_dense),
        "keras_rs": keras_rs_step(),
        "argsort": bare_argsort(),
        "bce": with_gradient(bce),
    }
    print(f"{'B':>9} | " + " | ".join(f"{name:>10}" for name in steps) + "   (median ms)")
    results = {}
    for size in sizes:
        data = batch(size)
        row = {}
        for name, step in steps.items():
            too_big = (name == "dense" and size > DENSE_MAX) or \
                      (name == "keras_rs" and size > KERAS_RS_MAX)
            if step is None or too_big:
                row[name] = float("nan")
                continue
            repeats = max(2, args.repeats // 3) if name in ("dense", "keras_rs") else \
                args.repeats
            row[name] = timed(step, data, repeats)
        results[size] = row
        print(f"{size:>9,} | " + " | ".join(f"{row[n]:>10.3f}" for n in steps))
    print()
    for size, row in results.items():
        parts = [f"B={size:,}:", f"XLA/graph {row['kernel_xla'] / row['kernel']:.2f}x",
                 f"kernel/argsort {row['kernel'] / row['argsort']:.2f}x",
                 f"kernel/BCE {row['kernel'] / row['bce']:.1f}x"]
        if not np.isnan(row["dense"]):
            parts.append(f"dense/kernel {row['dense'] / row['kernel']:.0f}x")
        if not np.isnan(row["keras_rs"]):
            parts.append(f"keras-rs/kernel {row['keras_rs'] / row['kernel']:.0f}x")
        print("  ".join(parts))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory of the process: {peak:.1f} GiB")


if __name__ == "__main__":
    main()
