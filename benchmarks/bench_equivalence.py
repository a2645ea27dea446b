"""Same weights, same batches: do the project's networks train like MTReclib's?

`bench_parity.py` compares means over seeds, where each side draws its own
initial weights, dropout masks and data order. This script takes the chance
out: it builds MTReclib's PyTorch model (in the reference's Python, given as
for `bench_parity.py`), copies its initial weights into the project's model,
and trains both on the same batches in the same order, then compares the loss
of every step and the test predictions. A difference in a layer, the loss or
the optimizer shows up as a gap that grows with the steps; float rounding alone
stays small.

  --optimizer sgd    plain SGD on both sides: the networks and the loss alone
  --optimizer adam   Adam 1e-3 with weight decay 1e-6 (the reference's), on the
                     project side as `models.reference_optimizer`; `--l2` adds
                     the decay to the gradient (as torch.optim.Adam) instead
  --dropout 0        (default) no dropout on either side, so nothing is random;
                     with --dropout 0.2 the masks differ and only the size of
                     the gap is informative

    export PWISER_REFERENCE=../shared/peers/pwiser_reference.py
    export PWISER_REFERENCE_PYTHON=~/refvenv/bin/python
    python benchmarks/bench_equivalence.py --train-csv data/s300/processed/train.csv \\
        --test-csv data/s300/processed/test.csv --model singletask --optimizer sgd

It prints, for every tenth step, both sides' loss ((BCE_ctr + BCE_ctcvr) / 2)
and their relative difference, the largest relative difference over all steps,
then both sides' test CTR and CTCVR AUC and the largest difference of their test
predictions. docs/benchmarks.md has the figures.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from bench_parity import MODELS, add_reference_arguments, apply_variants, check_reference

WEIGHT_COPIES = ("singletask", "sharedbottom")  # the models `copy_weights` maps


# --- the reference side (run in the reference's Python) ---------------------------

def torch_side(args):
    """Trains MTReclib's model; saves its initial weights, the batches, the losses
    of every step and the test predictions to `args.out`."""
    import torch

    spec = importlib.util.spec_from_file_location("reference", args.reference)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)  # puts MTReclib's folders on sys.path

    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count())
    train, test = ref.load(args.train_csv), ref.load(args.test_csv)
    dims = np.maximum(train[0].max(0), test[0].max(0)) + 1
    model = ref.get_model(args.model, dims, train[1].shape[1], 2, 8, 128)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = args.dropout
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=args.learning_rate)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=args.learning_rate, weight_decay=1e-6)
    bce = torch.nn.BCELoss()
    order = np.random.default_rng(args.seed).permutation(len(train[2]))
    order = order[:args.steps * args.batch_size]
    cat, num, lab = (torch.from_numpy(x[order]) for x in train[:3])
    losses = []
    model.train()
    for i in range(0, len(order), args.batch_size):
        out = model(cat[i:i + args.batch_size], num[i:i + args.batch_size])
        y = lab[i:i + args.batch_size]
        loss = (bce(out[0], y[:, 0]) + bce(out[1], y[:, 1])) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(test[0].copy()), torch.from_numpy(test[1].copy()))
    np.savez(args.out, dims=dims, losses=np.array(losses),
             pctr=out[0].numpy(), pctcvr=out[1].numpy(),
             train_cat=train[0][order], train_num=train[1][order], train_labels=train[2][order],
             test_cat=test[0], test_num=test[1], test_labels=test[2],
             **{"w/" + k: v for k, v in initial.items()})


# --- the project side ---------------------------------------------------------------

def copy_mlp(blocks, weights, prefix, head=None):
    """MTReclib's `MultiLayerPerceptron` (Linear, BatchNorm, ReLU, Dropout per block,
    then an optional output Linear) into the project's `MLP` blocks (and a head)."""
    for k, block in enumerate(blocks):
        dense, norm = block[0], block[1]
        dense.kernel.assign(weights[f"{prefix}.mlp.{4 * k}.weight"].T)
        dense.bias.assign(weights[f"{prefix}.mlp.{4 * k}.bias"])
        for var, name in ((norm.gamma, "weight"), (norm.beta, "bias"),
                          (norm.moving_mean, "running_mean"),
                          (norm.moving_variance, "running_var")):
            var.assign(weights[f"{prefix}.mlp.{4 * k + 1}.{name}"])
    if head is not None:
        out = 4 * len(blocks)
        head.kernel.assign(weights[f"{prefix}.mlp.{out}.weight"].T)
        head.bias.assign(weights[f"{prefix}.mlp.{out}.bias"])


def copy_embedding(layer, weights, table, numerical, dims):
    """MTReclib's table (fields back to back) into the project's (one OOV row after
    each field's rows), and the numerical projection."""
    rows = layer.table.numpy()
    ref_start = np.concatenate([[0], np.cumsum(dims)[:-1]])
    for field, size in enumerate(dims):
        start = ref_start[field] + field  # each earlier field's OOV row
        rows[start:start + size] = weights[table][ref_start[field]:ref_start[field] + size]
    layer.table.assign(rows)
    layer.numerical_dense.kernel.assign(weights[f"{numerical}.weight"].T)
    layer.numerical_dense.bias.assign(weights[f"{numerical}.bias"])


def copy_weights(model, name, weights, dims):
    if name == "singletask":
        for i, task in enumerate(("ctr", "ctcvr")):
            copy_embedding(getattr(model, f"{task}_embedding"), weights,
                           f"embedding.{i}.embedding.weight", f"numerical_layer.{i}", dims)
            copy_mlp(getattr(model, f"{task}_bottom").blocks, weights, f"bottom.{i}")
    else:
        copy_embedding(model.embedding, weights, "embedding.embedding.weight",
                       "numerical_layer", dims)
        copy_mlp(model.bottom.blocks, weights, "bottom")
    for i, task in enumerate(("ctr", "ctcvr")):
        tower = getattr(model, f"{task}_tower")
        copy_mlp(tower.mlp.blocks, weights, f"tower.{i}", head=tower.head)


def project_side(args, saved):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    from pwiser_tf import metrics, models
    from pwiser_tf.pipelines.schema import Field, Schema

    tf.keras.utils.set_random_seed(args.seed)  # the dropout masks, for a repeatable run
    dims = [int(d) for d in saved["dims"]]
    schema = Schema("aliexpress",
                    categorical=tuple(Field(f"categorical_{i + 1}", d) for i, d in enumerate(dims)),
                    numerical=tuple(f"numerical_{i + 1}"
                                    for i in range(saved["train_num"].shape[1])))
    model = models.build_model(MODELS[args.model], schema, dropout=args.dropout)

    def batch(prefix, start, stop):
        labels = saved[f"{prefix}_labels"][start:stop]
        return ({"categorical": tf.constant(saved[f"{prefix}_cat"][start:stop]),
                 "numerical": tf.constant(saved[f"{prefix}_num"][start:stop])},
                {"click": tf.constant(labels[:, 0]), "conversion": tf.constant(labels[:, 1])})

    model(batch("train", 0, 2)[0])
    weights = {k[2:]: saved[k] for k in saved if k.startswith("w/")}
    copy_weights(model, args.model, weights, dims)
    # PyTorch's batch norm epsilon; with --l2, torch.optim.Adam's weight decay.
    apply_variants(model, ["bn_eps"] + (["l2"] if args.l2 else []))
    if args.optimizer == "sgd":
        optimizer = tf.keras.optimizers.SGD(args.learning_rate)
    else:
        optimizer = models.reference_optimizer(args.learning_rate,
                                               weight_decay=0.0 if args.l2 else 1e-6)
    model.compile(optimizer=optimizer)
    train_step = tf.function(model.train_step)

    # The project's loss is BCE_ctr + BCE_ctcvr; the reference's, their mean. Under
    # SGD the learning rate is halved for the same step; Adam does not see the factor.
    if args.optimizer == "sgd":
        optimizer.learning_rate.assign(args.learning_rate / 2)
    losses = [float(train_step(batch("train", i, i + args.batch_size))["loss"]) / 2
              for i in range(0, len(saved["train_labels"]), args.batch_size)]
    out = model(batch("test", 0, None)[0], training=False)
    labels = saved["test_labels"]
    scores = {k: out[k].numpy() for k in ("ctr", "ctcvr")}
    return np.array(losses), scores, {
        "ctr_auc": metrics.auc(labels[:, 0], scores["ctr"]),
        "ctcvr_auc": metrics.auc(labels[:, 1], scores["ctcvr"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_reference_arguments(ap)
    ap.add_argument("--train-csv", required=True)
    ap.add_argument("--test-csv", required=True)
    ap.add_argument("--model", default="singletask", choices=WEIGHT_COPIES)
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    ap.add_argument("--learning-rate", type=float, default=None,
                    help="default: 0.1 for sgd, 1e-3 for adam")
    ap.add_argument("--l2", action="store_true",
                    help="adam: weight decay added to the gradient, as torch.optim.Adam")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=98, help="98: one epoch of 200k rows")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--torch-side", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.learning_rate is None:
        args.learning_rate = 0.1 if args.optimizer == "sgd" else 1e-3
    check_reference(ap, args, python=not args.torch_side)
    if args.torch_side:
        return torch_side(args)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "reference.npz")
        subprocess.run([args.reference_python, os.path.abspath(__file__), *sys.argv[1:],
                        "--reference", args.reference, "--learning-rate", str(args.learning_rate),
                        "--torch-side", "--out", out], check=True)
        saved = dict(np.load(out))
    ours, scores, aucs = project_side(args, saved)
    from pwiser_tf import metrics  # TensorFlow is loaded by now

    theirs, labels = saved["losses"], saved["test_labels"]
    ref_aucs = {"ctr_auc": metrics.auc(labels[:, 0], saved["pctr"]),
                "ctcvr_auc": metrics.auc(labels[:, 1], saved["pctcvr"])}
    gaps = {k: float(np.max(np.abs(scores[k] - saved["p" + k]))) for k in ("ctr", "ctcvr")}
    relative = np.abs(ours - theirs) / theirs
    print(f"{args.model}, {args.optimizer} lr {args.learning_rate}"
          f"{' (L2 in the gradient)' if args.l2 else ''}, dropout {args.dropout}, "
          f"{len(ours)} steps of {args.batch_size}, seed {args.seed}")
    print("| step | loss reference | loss project | relative difference |")
    print("|---|---|---|---|")
    for i in sorted(set(range(0, len(ours), 10)) | {len(ours) - 1}):
        print(f"| {i + 1} | {theirs[i]:.6f} | {ours[i]:.6f} | {relative[i]:.2e} |")
    print(f"largest relative loss difference: {relative.max():.2e}")
    print(json.dumps({"reference": ref_aucs, "project": aucs,
                      "max_abs_prediction_difference": gaps}))


if __name__ == "__main__":
    main()
