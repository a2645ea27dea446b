"""How strong PWiseR is next to BCE at batch sizes 512, 2048 and 8192.

Under the papers' normalisation (`anchor`: each term divided by the number of its
anchors, 1/N and 1/K), a batch's PWiseR sums over its M converted clicks, so the
term and its gradient grow about M-fold, and M grows with the batch size. Under
`pair` (divided by the number of pairs) they do not. This script measures the
effective strength: the ratio of the gradient norms

    ||d PWiseR / d theta|| / ||d (BCE_ctr + BCE_ctcvr) / d theta||

over the model's trainable variables (lambda = 1, so the ratio is the strength one
unit of lambda has), on batches of the built-in synthetic data, for an MMoE of the
built-in experiment's sizes trained for one epoch with BCE (a realistic point;
`--untrained` measures at the initial weights). It prints one row per batch size
and normalisation, the mean over `--batches` batches, and writes a figure.

    python benchmarks/bench_batch_strength.py --output docs/img/batch_strength.png
"""
import argparse
import os
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--batch-sizes", default="512,2048,8192")
    parser.add_argument("--batches", type=int, default=8, help="batches per batch size")
    parser.add_argument("--untrained", action="store_true")
    parser.add_argument("--output", default=None, help="PNG of the figure")
    parser.add_argument("--data", default=None,
                        help="a converted directory to use instead of generating --rows "
                             "synthetic rows in a temporary directory")
    args = parser.parse_args()

    import tensorflow as tf

    from pwiser_tf import config as config_lib
    from pwiser_tf import experiment, training
    from pwiser_tf.losses import PWiseRLoss, binary_crossentropy
    from pwiser_tf.pipelines import make_dataset

    default = config_lib.packaged("default")
    data = args.data or experiment.prepare_dataset(
        "synthetic", {"synth": {"dataset": "aliexpress", "rows": args.rows, "seed": 0},
                      "validation_fraction": 0.1}, tempfile.mkdtemp(prefix="bench_batch_"),
        progress=False)["data"]
    model_config = training.model_kwargs(default, "mmoe", "bce")
    train_cfg = dict(default["train"], epochs=1)
    model, train_ds, _ = training.seeded_start(data, "mmoe", model_config, train_cfg, 0)
    if not args.untrained:
        model.fit(train_ds, epochs=1, verbose=0)
    variables = model.trainable_variables

    def norm(grads):
        return float(tf.sqrt(sum(tf.reduce_sum(tf.square(tf.convert_to_tensor(g)))
                                 for g in grads if g is not None)))

    results = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        batches = make_dataset(data, batch_size, split="train", shuffle=True, seed=1)
        per = {"anchor": [], "pair": []}
        conversions = []
        for features, labels in batches.take(args.batches):
            packed = tf.stack([labels["click"], labels["conversion"]], axis=1)
            conversions.append(float(tf.reduce_sum(labels["conversion"])))
            with tf.GradientTape(persistent=True) as tape:
                out = model(features, training=False)
                bce = (tf.reduce_mean(binary_crossentropy(labels["click"], out["ctr"]))
                       + tf.reduce_mean(binary_crossentropy(labels["conversion"],
                                                            out["ctcvr"])))
                terms = {n: PWiseRLoss(normalization=n, bce=False).pwiser_term(packed,
                                                                               out["ctr"])
                         for n in per}
            base = norm(tape.gradient(bce, variables))
            for n, term in terms.items():
                per[n].append(norm(tape.gradient(term, variables)) / base)
            del tape
        row = {"batch_size": batch_size, "conversions": float(np.mean(conversions)),
               **{n: float(np.mean(v)) for n, v in per.items()},
               **{n + "_std": float(np.std(v)) for n, v in per.items()}}
        results.append(row)

    print(f"MMoE ({'initial weights' if args.untrained else 'after 1 epoch of BCE'}), "
          f"{args.batches} batches each; ratio = ||grad PWiseR|| / ||grad BCE||, lambda = 1")
    print("| batch | conversions M per batch | anchor ratio | pair ratio | "
          "anchor ratio / M |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['batch_size']} | {r['conversions']:.1f} | {r['anchor']:.3f} ± "
              f"{r['anchor_std']:.3f} | {r['pair']:.4f} ± {r['pair_std']:.4f} | "
              f"{r['anchor'] / max(r['conversions'], 1):.4f} |")
    first, last = results[0], results[-1]
    print(f"from batch {first['batch_size']} to {last['batch_size']}: anchor ratio x"
          f"{last['anchor'] / first['anchor']:.2f}, pair ratio x"
          f"{last['pair'] / first['pair']:.2f}, conversions x"
          f"{last['conversions'] / first['conversions']:.2f}")
    if args.output:
        plot(results, args.output)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["batch_size"] for r in results]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, color in (("anchor", "#1f77b4"), ("pair", "#ff7f0e")):
        ax.errorbar(sizes, [r[name] for r in results], [r[name + "_std"] for r in results],
                    marker="o", color=color, capsize=3, label=f'normalization="{name}"')
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("||∇ PWiseR|| / ||∇ BCE||  (λ = 1)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
