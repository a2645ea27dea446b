"""Training throughput of the models at the reference settings, side by side.

For each backend setting (TensorFlow's default, oneDNN off and on, optionally
XLA) a subprocess starts (TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` at import)
and times `model.fit` steps of every model on in-memory AliExpress-like
batches: 16 categorical fields with vocabularies of a few thousand, 63
numerical features, embedding 128, MLPs (512, 256), towers (128, 64), 8
experts, batch 2048. A step's time is the median over its timed steps; the
settings run in turn for several rounds and each keeps its best round, so load
from other processes on a shared machine disturbs the comparison less. Each
setting also times MMoE with BCE + PWiseR against MMoE with BCE alone, and the
PWiseR term on its own (value and gradient), as fractions of the step time.

    python benchmarks/bench_models.py                        # all models, 3 settings
    python benchmarks/bench_models.py --models mmoe --xla    # add XLA settings
    python benchmarks/bench_models.py --models mmoe --onednn default --precisions off,bf16

`--precisions` times each setting under each `--mixed-precision` policy (`off` is
float32, `bf16` mixed_bfloat16: bfloat16 activations and matmuls, float32
weights, heads, loss and metrics).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

VOCABS = (3000, 2000, 5000, 1500, 4000, 2500, 6000, 1000,
          3500, 2000, 4500, 1200, 8000, 3000, 2200, 5000)
NUM_NUMERICAL = 63
CLICK_RATE, CVR = 0.03, 0.05   # clicks per exposure, conversions per click
ALL_MODELS = ("stl", "shared-bottom", "omoe", "mmoe", "ple", "esmm", "aitm", "adaftr",
              "escm2")


def worker(args):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf

    from pwiser_tf import distribute, models
    from pwiser_tf.pipelines.schema import Field, Schema

    schema = Schema("aliexpress_like",
                    categorical=tuple(Field(f"categorical_{i + 1}", v)
                                      for i, v in enumerate(VOCABS)),
                    numerical=tuple(f"numerical_{i + 1}" for i in range(NUM_NUMERICAL)))
    rng = np.random.default_rng(0)
    b = args.batch_size
    click = rng.uniform(size=b) < CLICK_RATE
    batch = ({"categorical": np.stack([rng.integers(0, v, b) for v in VOCABS], 1),
              "numerical": rng.uniform(size=(b, NUM_NUMERICAL)).astype(np.float32)},
             {"click": click.astype(np.float32),
              "conversion": (click & (rng.uniform(size=b) < CVR)).astype(np.float32)})
    data = tf.data.Dataset.from_tensors(batch).repeat()

    class StepTimes(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    def step_seconds(name, **config):
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(0)
        with distribute.precision_policy(args.precision):
            model = models.build_model(name, schema, **config)
            model.compile(optimizer=models.reference_optimizer(), jit_compile=args.xla)
        times = StepTimes()
        model.fit(data, steps_per_epoch=args.warmup + args.steps, epochs=1, verbose=0,
                  callbacks=[times])
        return float(np.median(np.diff(times.ends[args.warmup - 1:])))

    results = {}
    for name in args.models:
        results[name] = step_seconds(name)
        print(f"  {name}: {b / results[name]:.0f} ex/s", file=sys.stderr, flush=True)
    if args.pwiser:
        from pwiser_tf import kernel

        results["mmoe+pwiser"] = step_seconds("mmoe", loss="pwiser")
        scores = tf.Variable(rng.uniform(size=b).astype(np.float32))
        labels = [tf.constant(batch[1][k]) for k in ("click", "conversion")]

        @tf.function(jit_compile=args.xla)
        def term():
            with tf.GradientTape() as tape:
                value = kernel.pwiser(scores, *labels, margin_click=0.01,
                                      margin_nonclick=0.01, squared=True,
                                      normalization="anchor")
            return tape.gradient(value, scores)

        seconds = []
        for _ in range(53):
            start = time.perf_counter()
            term().numpy()
            seconds.append(time.perf_counter() - start)
        results["pwiser_term"] = float(np.median(seconds[3:]))
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(ALL_MODELS))
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--xla", action="store_true", help="also time jit_compile=True")
    parser.add_argument("--no-pwiser", dest="pwiser", action="store_false")
    parser.add_argument("--onednn", type=lambda s: s.split(","), default=["default", "0", "1"],
                        help="TF_ENABLE_ONEDNN_OPTS settings to time (default,0,1)")
    parser.add_argument("--precisions", type=lambda s: s.split(","), default=["off"],
                        help="--mixed-precision policies to time, e.g. off,bf16")
    parser.add_argument("--precision", default="off", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    settings = [(onednn, False, p) for p in args.precisions for onednn in args.onednn]
    if args.xla:
        settings += [(o, True, p) for p in args.precisions for o in args.onednn
                     if o != "default"]
    table = {}
    for round_ in range(args.rounds):
        for onednn, xla, precision in settings:
            label = (f"oneDNN={onednn}{'+XLA' if xla else ''}"
                     + (f" {precision}" if precision != "off" else ""))
            print(f"round {round_ + 1}: {label} ...", file=sys.stderr, flush=True)
            command = [sys.executable, os.path.abspath(__file__), "--worker",
                       "--models", ",".join(args.models),
                       "--batch-size", str(args.batch_size), "--warmup", str(args.warmup),
                       "--steps", str(args.steps), "--precision", precision]
            command += (["--xla"] if xla else []) + ([] if args.pwiser else ["--no-pwiser"])
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
            env.pop("TF_ENABLE_ONEDNN_OPTS", None)
            if onednn != "default":
                env["TF_ENABLE_ONEDNN_OPTS"] = onednn
            proc = subprocess.run(command, env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{label}: failed\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            best = table.setdefault(label, result)
            for key, seconds in result.items():
                best[key] = min(best[key], seconds)

    labels = list(table)
    print(f"batch {args.batch_size}: training examples/s (median step of {args.steps} after "
          f"{args.warmup} warm-up, best of {args.rounds} rounds); last column: best "
          f"setting / TensorFlow's default")
    print(f"{'model':<14}" + "".join(f"{l:>21}" for l in labels) + f"{'best/default':>14}")
    rows = list(args.models) + (["mmoe+pwiser"] if args.pwiser else [])
    for name in rows:
        rates = [args.batch_size / table[l][name] for l in labels]
        print(f"{name:<14}" + "".join(f"{r:>21.0f}" for r in rates)
              + f"{max(rates) / rates[0]:>14.2f}")
    if args.pwiser:
        for l in labels:
            t = table[l]
            print(f"{l}: PWiseR in MMoE: step time {t['mmoe+pwiser'] / t['mmoe'] - 1:+.1%}; "
                  f"the term alone (value + gradient, B={args.batch_size}) "
                  f"{t['pwiser_term'] * 1e3:.2f} ms = {t['pwiser_term'] / t['mmoe']:.1%} "
                  f"of the MMoE step")


if __name__ == "__main__":
    main()
