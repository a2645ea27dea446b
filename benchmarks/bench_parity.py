"""The project's models against an independent reference, on the same rows.

The reference is MTReclib's PyTorch models (single-task, Shared-Bottom, OMoE,
MMoE, PLE, AITM) trained by `pwiser_reference.py`: the mean BCE of the CTR and
CTCVR heads, plus lambda times PWiseR written the dense way from its definition.
It is not part of the project; this script calls it by path, in its own Python.

What it needs:
  --reference PATH          pwiser_reference.py, with MTReclib's code beside it
                            (default: $PWISER_REFERENCE)
  --reference-python PATH   a Python with torch, scikit-learn and pandas
                            (default: $PWISER_REFERENCE_PYTHON)

Both sides train on the same processed AliExpress CSV (`pwiser-tf synth` writes
one, with the clean `intent` label; the project reads it through its converter)
for one epoch at the reference settings: embedding 128, MLPs (512, 256), towers
(128, 64), 8 experts, dropout 0.2, Adam 1e-3 with weight decay 1e-6, batch
2048, every train row once in a uniformly shuffled order. Both score the same
test rows with the exact AUC. The runs of the two sides alternate, so load from
other processes on a shared machine falls on both alike.

Lambda: the reference's loss is (BCE_ctr + BCE_ctcvr) / 2 + lambda * PWiseR.
`--pwiser-weight` is that lambda; the project's model gets the weight that
makes its loss the same multiple of the reference's (its task's BCE weights
are read from the task, so the mapping holds whatever their convention).

Each finished run appends one JSON line to OUT/runs.jsonl; a rerun skips the
runs already there (so an interrupted benchmark resumes) and prints the table:
mean and standard deviation over seeds of CTR and CTCVR AUC (and intent AUC on
synthetic data) per side, model and loss, and the project minus the reference.

    export PWISER_REFERENCE=../shared/peers/pwiser_reference.py
    export PWISER_REFERENCE_PYTHON=~/refvenv/bin/python
    python benchmarks/bench_parity.py --out /tmp/parity --rows 300000 --seeds 1 2 3
    python benchmarks/bench_parity.py --out /tmp/study --models mmoe ple \\
        --losses bce pwiser --seeds 1 2 3 4 5
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

# The reference's model names and the project registry's.
MODELS = {"singletask": "stl", "sharedbottom": "shared-bottom", "omoe": "omoe",
          "mmoe": "mmoe", "ple": "ple", "aitm": "aitm"}
SIDES = ("reference", "project")


def project_label(variants):
    """The project side's name in runs.jsonl: `project`, or `project[v1,v2]`."""
    return "project" + (f"[{','.join(sorted(variants))}]" if variants else "")


def side_name(side, label):
    """A side's name in runs.jsonl: `reference`, or the project's `label`."""
    return label if side == "project" else side


METRICS = ("ctr_auc", "ctcvr_auc", "intent_auc")
# Runs the reference as `python SCRIPT ARGS` would (sys.path[0] its folder), with
# os.cpu_count() answering the thread count given first.
REFERENCE_WITH_THREADS = (
    "import os, runpy, sys; threads = int(sys.argv.pop(1)); sys.argv.pop(0); "
    "os.cpu_count = lambda: threads; "
    "sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0])); "
    "runpy.run_path(sys.argv[0], run_name='__main__')")
PARITY_TOLERANCE = 0.01  # the project's mean AUC may trail the reference's by this much
VARIANTS = {
    "keras_init": "Keras' default initialisation instead of the models' (Glorot-uniform "
                  "kernels, the embedding table uniform +-0.05)",
    "l2": "weight decay 1e-6 added to the gradient (torch.optim.Adam) instead of decoupled",
    "bn_eps": "batch norm epsilon 1e-5 (PyTorch's) instead of 1e-3",
    "bias_init": "biases drawn from U(+-1/sqrt(fan_in)), as torch.nn.Linear, instead of zeros",
    "adam_eps": "Adam epsilon 1e-9 instead of 1e-7: Keras adds it to the uncorrected "
                "sqrt(v), so 1e-9 is within 3x of PyTorch's 1e-8 on the corrected one "
                "over a 98-step epoch",
    "group16": "the training pipeline's default grouped shuffle (16 records)",
}


def prepare_data(args):
    """The processed CSVs (synthesized unless given) and their conversion."""
    if args.train_csv:
        train, test = args.train_csv, args.test_csv
    else:
        from pwiser_tf.pipelines import synthesize

        synth_dir = os.path.join(args.out, "synth")
        manifest = os.path.join(synth_dir, "synth.json")
        if not os.path.isfile(manifest):
            synthesize("aliexpress", args.rows, synth_dir, seed=args.data_seed,
                       test_fraction=args.test_fraction)
        train, test = (os.path.join(synth_dir, "processed", f"{s}.csv")
                       for s in ("train", "test"))
    records = None
    if "project" in args.sides:  # the reference reads the CSVs itself
        from pwiser_tf.pipelines.convert import convert

        records = os.path.join(args.out, "records")
        convert("aliexpress-csv", {"train": [train], "test": [test]}, records, progress=False)
    return train, test, records


def project_weight(pwiser_weight: float) -> float:
    """The project's PWiseR weight equal to the reference's `pwiser_weight`.

    The reference's loss is mean(BCE) + lambda * PWiseR. A task whose BCE terms
    weigh w each has the loss 2 w * mean(BCE) + lambda' * PWiseR, which is
    2 w times the reference's when lambda' = 2 w * lambda; Adam does not see
    the common factor.
    """
    from pwiser_tf.models.task import CtrCvrTask

    weights = CtrCvrTask().task_weights
    return pwiser_weight * float(sum(weights))


def apply_variants(model, variants):
    """Ablations of the project side, one named change each (see --variant)."""
    import tensorflow as tf

    from pwiser_tf.models import ExpertBank, FeatureEmbedding

    rng = np.random.default_rng(0)

    def uniform(var, bound):
        var.assign(rng.uniform(-bound, bound, size=var.shape).astype(np.float32))

    def glorot(var, fan_in, fan_out):
        uniform(var, np.sqrt(6.0 / (fan_in + fan_out)))

    # One pass over the layers; the expert bank's later layers are batched kernels
    # [E, fan_in, fan_out] with biases [E, fan_out], its first layer a Dense.
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization) and "bn_eps" in variants:
            layer.epsilon = 1e-5
        elif isinstance(layer, FeatureEmbedding) and "keras_init" in variants:
            uniform(layer.table, 0.05)
        elif isinstance(layer, tf.keras.layers.Dense):
            if "keras_init" in variants:
                glorot(layer.kernel, *layer.kernel.shape)
            if "bias_init" in variants and layer.use_bias:
                uniform(layer.bias, layer.kernel.shape[0] ** -0.5)
        elif isinstance(layer, ExpertBank):
            for kernel, bias in zip(layer.kernels, layer.biases):
                if "keras_init" in variants:
                    glorot(kernel, *kernel.shape[1:])
                if "bias_init" in variants:
                    uniform(bias, kernel.shape[1] ** -0.5)
    if "l2" in variants:  # Adam with L2 added to the gradient, as torch.optim.Adam
        def train_step(self, inputs):
            with tf.GradientTape() as tape:
                loss = self.compute_loss(inputs, training=True)
            variables = self.trainable_variables
            grads = tape.gradient(loss, variables)
            grads = [tf.convert_to_tensor(g) + 1e-6 * v for g, v in zip(grads, variables)]
            self.optimizer.apply_gradients(zip(grads, variables))
            return {"loss": loss}
        model.train_step = train_step.__get__(model)


def project_worker(args):
    """One project run: prints one JSON line of test metrics."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    from pwiser_tf import metrics, models
    from pwiser_tf.pipelines import Metadata, make_dataset

    meta = Metadata.load(args.records)
    rows = meta.splits["train"].counts["rows"]
    tf.keras.utils.set_random_seed(args.seed)
    # Every row once, uniformly shuffled, as the reference's randperm.
    group = 16 if "group16" in args.variant else 1
    train = make_dataset(args.records, args.batch_size, split="train", shuffle=True,
                         seed=args.seed, shuffle_group=group, shuffle_buffer=rows)
    config = {"loss": "pwiser" if args.pwiser_weight > 0 else "bce"}
    if args.pwiser_weight > 0:
        config.update(pwiser_weight=project_weight(args.pwiser_weight),
                      margin_click=args.margin_click, margin_nonclick=args.margin_nonclick)
    model = models.build_model(MODELS[args.model], meta.schema, **config)
    model(next(iter(train))[0])  # build the variables
    apply_variants(model, args.variant)
    optimizer = models.reference_optimizer(
        args.learning_rate, weight_decay=0.0 if "l2" in args.variant else 1e-6)
    if "adam_eps" in args.variant:
        optimizer.epsilon = 1e-9
    model.compile(optimizer=optimizer)
    start = time.perf_counter()
    model.fit(train, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    test = make_dataset(args.records, 8192, split="test")
    labels, scores = {}, {}
    for features, batch_labels in test:
        out = model(features, training=False)
        for key in ("ctr", "cvr", "ctcvr"):
            scores.setdefault("p" + key, []).append(out[key].numpy())
        for key, value in batch_labels.items():
            labels.setdefault(key, []).append(value.numpy())
    result = metrics.ctr_cvr_metrics({k: np.concatenate(v) for k, v in labels.items()},
                                     {k: np.concatenate(v) for k, v in scores.items()})
    result["train_examples_per_sec"] = rows / seconds
    print(json.dumps(result))


def run_side(side, args, data, model, seed, weight):
    train, test, records = data
    common = ["--model", model, "--seed", str(seed), "--pwiser-weight", str(weight),
              "--margin-click", str(args.margin_click),
              "--margin-nonclick", str(args.margin_nonclick)]
    if side == "reference":
        command = [args.reference_python, args.reference, "--train", train, "--test", test,
                   "--batch-size", str(args.batch_size),
                   "--learning-rate", str(args.learning_rate)] + common
        if args.threads:
            # The reference sizes its thread pool by os.cpu_count(), the whole machine;
            # runs side by side (--jobs) each get --threads of it, the script unchanged.
            command[1:2] = ["-c", REFERENCE_WITH_THREADS, str(args.threads), args.reference]
    else:
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--records", records,
                   "--batch-size", str(args.batch_size),
                   "--learning-rate", str(args.learning_rate),
                   "--variant", *args.variant] + common
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        sys.exit(f"bench_parity: the {side} run {model} seed {seed} failed "
                 f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_all(todo, args, data, label, runs_path):
    """Runs `todo` ((side, model, loss, seed) each), `--jobs` at a time, appending each
    result to runs.jsonl as it finishes; none starts after `--deadline` seconds."""
    start, lock = time.monotonic(), threading.Lock()

    def one(item):
        side, model, loss, seed = item
        if args.deadline and time.monotonic() - start > args.deadline:
            return
        weight = args.pwiser_weight if loss == "pwiser" else 0.0
        result = run_side(side, args, data, model, seed, weight)
        result.update(side=side_name(side, label), model=model, loss=loss, seed=seed)
        with lock:
            with open(runs_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
            print(f"{result['side']:9s} {model:12s} {loss:6s} seed {seed}: "
                  + ", ".join(f"{m} {result[m]:.4f}" for m in METRICS if m in result)
                  + f" ({result['train_examples_per_sec']:.0f} examples/s)", flush=True)

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(one, item) for item in todo]:
            future.result()


def load_runs(path):
    runs = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            runs = [json.loads(line) for line in f if line.strip()]
    return runs


def table(runs, models, losses, label="project"):
    head = ["model", "loss", "seeds"]
    for metric in METRICS:
        head += [f"{metric} reference", f"{metric} project", "diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in models:
        for loss in losses:
            # One run per seed (the last written, should a seed have run twice).
            cell = {side: list({r["seed"]: r for r in runs if (r["side"], r["model"], r["loss"])
                                == (side_name(side, label), model, loss)}.values())
                    for side in SIDES}
            seeds = sorted({r["seed"] for r in cell["reference"]}
                           & {r["seed"] for r in cell["project"]})
            if not seeds:
                continue
            row = [model, loss, str(len(seeds))]
            for metric in METRICS:
                values = {side: np.array([r[metric] for r in cell[side]
                                          if r["seed"] in seeds and metric in r])
                          for side in SIDES}
                if any(v.size == 0 for v in values.values()):
                    row += ["-", "-", "-"]
                    continue
                row += [f"{v.mean():.4f} ± {v.std(ddof=1) if v.size > 1 else 0:.4f}"
                        for v in values.values()]
                row.append(f"{values['project'].mean() - values['reference'].mean():+.4f}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _by_seed(runs, side, model, loss, metric):
    return {r["seed"]: r[metric] for r in runs
            if (r["side"], r["model"], r["loss"]) == (side, model, loss) and metric in r}


def parity_table(runs, models, label="project", tolerance=PARITY_TOLERANCE):
    """BCE only: per model, whether the project's mean CTR and CTCVR AUC reach the
    reference's minus `tolerance` over the seeds both sides ran."""
    lines = ["| model | seeds | CTR AUC: project - reference | CTCVR AUC: project - reference "
             f"| met (>= -{tolerance}) |", "|---|---|---|---|---|"]
    for model in models:
        cells, met, seeds = [], True, None
        for metric in ("ctr_auc", "ctcvr_auc"):
            ref = _by_seed(runs, "reference", model, "bce", metric)
            ours = _by_seed(runs, label, model, "bce", metric)
            seeds = sorted(set(ref) & set(ours))
            if not seeds:
                break
            diff = np.mean([ours[s] for s in seeds]) - np.mean([ref[s] for s in seeds])
            cells.append(f"{diff:+.4f}")
            met &= diff >= -tolerance
        if len(cells) == 2:
            lines.append(f"| {model} | {len(seeds)} | {cells[0]} | {cells[1]} | "
                         f"{'yes' if met else '**no**'} |")
    return "\n".join(lines)


def effects_table(runs, models, label="project"):
    """BCE -> PWiseR on each side, paired by seed (both losses start from the seed's
    weights and data order): the mean difference, its 95% t interval, the wins."""
    from pwiser_tf.report import paired

    lines = ["| model | side | seeds | " + " | ".join(
        f"{m}: PWiseR - BCE [95% CI] wins" for m in METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS)]
    for model in models:
        for side in ("reference", label):
            cells, n = [], 0
            for metric in METRICS:
                stats = paired(_by_seed(runs, side, model, "bce", metric),
                               _by_seed(runs, side, model, "pwiser", metric))
                n = max(n, stats["n"])
                cells.append("-" if not stats["n"] else
                             f"{stats['mean']:+.4f} [{stats['low']:+.3f}, {stats['high']:+.3f}]"
                             f" {stats['wins']}/{stats['n']}")
            if n:
                lines.append(f"| {model} | {side} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_reference_arguments(ap):
    """--reference and --reference-python, defaulting to their environment variables."""
    ap.add_argument("--reference", default=os.environ.get("PWISER_REFERENCE"))
    ap.add_argument("--reference-python", default=os.environ.get("PWISER_REFERENCE_PYTHON"))


def check_reference(ap, args, python=True):
    """One clear error for a missing reference script (or, with `python`, its Python)."""
    if not (args.reference and os.path.isfile(args.reference)):
        ap.error("--reference (or $PWISER_REFERENCE) must name pwiser_reference.py")
    if python and not (args.reference_python and os.path.isfile(args.reference_python)):
        ap.error("--reference-python (or $PWISER_REFERENCE_PYTHON) must name a Python "
                 "with torch, scikit-learn and pandas")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="parity_runs", help="data and runs.jsonl go here")
    add_reference_arguments(ap)
    ap.add_argument("--train-csv", help="a processed AliExpress train CSV (else synthesized)")
    ap.add_argument("--test-csv")
    ap.add_argument("--rows", type=int, default=300_000, help="synthetic rows, all splits")
    ap.add_argument("--test-fraction", type=float, default=1 / 3)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--losses", nargs="+", default=["bce"], choices=["bce", "pwiser"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    ap.add_argument("--pwiser-weight", type=float, default=1.0,
                    help="lambda of the reference's loss, for --losses pwiser")
    ap.add_argument("--margin-click", type=float, default=0.1)
    ap.add_argument("--margin-nonclick", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--variant", nargs="*", default=[], choices=VARIANTS,
                    help="ablations of the project side: " + "; ".join(
                        f"{k}: {v}" for k, v in VARIANTS.items()))
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES,
                    help="run only these sides (the table pairs whatever runs.jsonl holds)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs side by side (for a machine with many cores)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads of each reference run (default: all cores)")
    ap.add_argument("--deadline", type=float, default=0,
                    help="start no run after this many seconds (0: no limit)")
    ap.add_argument("--table-only", action="store_true", help="print the table of OUT")
    # The project side's worker (run by the script itself in a fresh process).
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--records", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return project_worker(args)

    runs_path = os.path.join(args.out, "runs.jsonl")
    label = project_label(args.variant)
    if not args.table_only:
        check_reference(ap, args)
        if bool(args.train_csv) != bool(args.test_csv):
            ap.error("give both --train-csv and --test-csv, or neither")
        os.makedirs(args.out, exist_ok=True)
        data = prepare_data(args)
        done = {(r["side"], r["model"], r["loss"], r["seed"]) for r in load_runs(runs_path)}
        todo = []
        for seed in args.seeds:
            for model in args.models:
                for loss in args.losses:
                    # Alternate which side goes first, so neither always runs warm.
                    sides = SIDES if seed % 2 else SIDES[::-1]
                    todo += [(side, model, loss, seed) for side in sides if side in args.sides
                             and (side_name(side, label), model, loss, seed) not in done]
        run_all(todo, args, data, label, runs_path)
    runs = load_runs(runs_path)
    print(table(runs, args.models, args.losses, label))
    if "bce" in args.losses:
        print("\nParity (BCE):\n" + parity_table(runs, args.models, label))
    if {"bce", "pwiser"} <= set(args.losses):
        print("\nBCE -> PWiseR, paired by seed:\n" + effects_table(runs, args.models, label))


if __name__ == "__main__":
    main()
