"""PWiseR value + gradient on one Keras backend, beside a bare argsort of that backend.

    python benchmarks/bench_kernel.py --backend tensorflow [--sizes 16384,1048576]
    python benchmarks/bench_kernel.py --backend jax [--repeats 5]
    python benchmarks/bench_kernel.py --backend torch [--torch-compile]

The script sets `KERAS_BACKEND` from `--backend` before Keras is imported, then times,
for each batch size B (about 5% clicks, 10% of the clicks converted, scores uniform
in [0, 0.1), seed 0), the value and the gradient with respect to the scores of
`pwiser_tf.kernel.pwiser`, and a bare stable descending argsort of the B scores (the
one sort the kernel does), each compiled as the backend compiles:

- tensorflow: `tf.function` with a `GradientTape` (graph), and the same with
  `jit_compile=True` (XLA). Also the TensorFlow kernel of commit 0dfd400 (`tf.*`
  ops, before the kernel moved to `keras.ops`), read with `git show` into a
  temporary module of its own (one process cannot hold two `pwiser_tf` packages,
  so the trees of `package_roots` in bench_convert_cli.py do not fit here), with
  the ratio new/old in each mode. `--old-commit none` leaves it out.
- jax: `jax.jit(jax.value_and_grad(...))`, timed up to `block_until_ready`.
- torch: eager autograd (`torch.autograd.grad`); `--torch-compile` adds
  `torch.compile` of the forward (the backward through AOTAutograd).

`--extras` adds the dense O(B^2) reference (`pwiser_dense`, B <= 16,384) and, on
TensorFlow with keras-rs installed, keras-rs `PairwiseHingeLoss` on one list of B.

Every step is called twice first (tracing, compiling; the first call's seconds are
printed), then the steps take turns, `--repeats` rounds, the order reversed every
other round, so that a load beside the process weighs on all of them alike. Prints
the median milliseconds, the ratios kernel/argsort (and new/old, XLA/graph), the
device, whether `tensorflow` was imported (never with jax or torch) and the peak
resident memory of the process.

On a GPU machine that has JAX and PyTorch but neither Keras nor TensorFlow, carry
this package and Keras as wheels. Here, in the repository root:

    pip wheel --no-deps . -w dist
    pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --platform manylinux2014_x86_64 -d dist keras==3.15.1 namex optree

(Keras needs absl-py, numpy, rich, h5py, ml-dtypes, packaging, namex and optree; take
whichever the machine lacks.) There:

    pip install --no-deps dist/*.whl        # or --target DIR and PYTHONPATH=DIR
    python benchmarks/bench_kernel.py --backend jax
    python benchmarks/bench_kernel.py --backend torch

Run from a checkout, the script imports the checkout's `pwiser_tf`. The data go to
Keras' default device (the GPU where the backend sees one), and the header names it.
"""
import argparse
import atexit
import importlib.util
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
OLD_COMMIT = "0dfd400"   # the last TensorFlow-only kernel
EXTRAS_MAX = 16_384      # the dense reference holds several B x B float32 matrices


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--sizes", default="16384,1048576",
                        help="comma-separated batch sizes (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--old-commit", default=OLD_COMMIT,
                        help="tensorflow: the commit whose kernel to time beside "
                             "(default %(default)s; 'none' leaves it out)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="torch: also time torch.compile")
    parser.add_argument("--groups", type=int, default=0,
                        help="also time the kernel with this many group ids (uniform; "
                             "pwiser(..., group=...)); 0 leaves it out")
    parser.add_argument("--extras", action="store_true",
                        help="the dense reference and keras-rs, B <= 16,384")
    return parser.parse_args(argv)


def batch(size, seed=0):
    """NumPy scores, clicks and conversions, as the earlier benchmarks drew them."""
    import numpy as np
    rng = np.random.default_rng(seed)
    click = (rng.random(size) < 0.05).astype(np.float32)
    conversion = click * (rng.random(size) < 0.10).astype(np.float32)
    scores = (rng.random(size) * 0.1).astype(np.float32)
    return scores, click, conversion


def cpu_name() -> str:
    """The CPU's model name and whether it has AVX2 / AVX-512 (Linux)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    avx = "avx2" if "avx2" in flags else "no avx2"
    avx += ", avx512f" if "avx512f" in flags else ", no avx512"
    return f"{model} ({avx}), {os.cpu_count()} logical CPUs"


def load_kernel_at(commit: str):
    """`pwiser_tf/kernel.py` of `commit` as a module of its own (its imports of
    `pwiser_tf.errors` and `pwiser_tf.options` resolve to this tree's)."""
    source = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:pwiser_tf/kernel.py"],
                            capture_output=True, text=True, check=True).stdout
    name = f"pwiser_kernel_{commit}"
    folder = tempfile.mkdtemp(prefix="bench_kernel_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, name + ".py")  # kept while running: AutoGraph reads it
    with open(path, "w") as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TensorFlowSteps:
    """Graph (`tf.function`) and XLA (`jit_compile=True`) steps."""
    modes = ("graph", "xla")

    def __init__(self):
        import tensorflow as tf
        self.tf = tf
        # Each step traces once; the steps share their Python code, which TensorFlow
        # would report as retracing.
        tf.get_logger().setLevel("ERROR")

    def device(self) -> str:
        gpus = self.tf.config.list_physical_devices("GPU")
        if not gpus:
            return f"CPU (TensorFlow {self.tf.__version__})"
        details = self.tf.config.experimental.get_device_details(gpus[0])
        return f"{details.get('device_name', gpus[0].name)} (TensorFlow {self.tf.__version__})"

    def value_and_grad(self, fn, mode):
        tf = self.tf

        @tf.function(jit_compile=mode == "xla")
        def step(scores, click, conversion):
            with tf.GradientTape() as tape:
                tape.watch(scores)
                value = fn(scores, click, conversion)
            return value, tape.gradient(value, scores)
        return step

    def argsort(self, mode):
        tf = self.tf

        @tf.function(jit_compile=mode == "xla")
        def step(scores, click, conversion):
            return (tf.argsort(scores, direction="DESCENDING", stable=True),)
        return step

    def block(self, outputs):
        for t in outputs:
            t.numpy()


class JaxSteps:
    """`jax.jit` steps, waited for with `block_until_ready`."""
    modes = ("jit",)

    def __init__(self):
        import jax
        self.jax = jax

    def device(self) -> str:
        device = self.jax.devices()[0]
        return f"{device.device_kind} ({device}; JAX {self.jax.__version__})"

    def value_and_grad(self, fn, mode):
        return self.jax.jit(self.jax.value_and_grad(fn))

    def argsort(self, mode):
        jnp = self.jax.numpy
        return self.jax.jit(lambda scores, click, conversion:
                            (jnp.argsort(scores, descending=True, stable=True),))

    def block(self, outputs):
        self.jax.block_until_ready(outputs)


class TorchSteps:
    """Eager autograd; `torch.compile` of the forward where asked."""

    def __init__(self, compile_too: bool):
        import torch
        self.torch = torch
        self.modes = ("eager", "compile") if compile_too else ("eager",)

    def device(self) -> str:
        torch = self.torch
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
        else:
            name = f"CPU, {torch.get_num_threads()} threads"
        return f"{name} (PyTorch {torch.__version__})"

    def value_and_grad(self, fn, mode):
        torch = self.torch
        # Static shapes: the kernel unrolls its scan for each B.
        forward = torch.compile(fn, dynamic=False) if mode == "compile" else fn

        def step(scores, click, conversion):
            scores = scores.detach().requires_grad_(True)
            value = forward(scores, click, conversion)
            (grad,) = torch.autograd.grad(value, scores)
            return value, grad
        return step

    def argsort(self, mode):
        torch = self.torch
        sort = lambda s: torch.argsort(s, descending=True, stable=True)  # noqa: E731
        if mode == "compile":
            sort = torch.compile(sort, dynamic=False)
        return lambda scores, click, conversion: (sort(scores),)

    def block(self, outputs):
        if self.torch.cuda.is_available():
            self.torch.cuda.synchronize()


def keras_rs_loss():
    """keras-rs `PairwiseHingeLoss` on one list of B items, or None without keras-rs."""
    try:
        import keras_rs
    except ImportError:
        return None
    from keras import ops
    loss = keras_rs.losses.PairwiseHingeLoss()

    def fn(scores, click, conversion):
        # Relevance 2 = converted, 1 = clicked, 0 = not clicked.
        return loss(ops.expand_dims(click + conversion, 0), ops.expand_dims(scores, 0))
    return fn


GROUP = {}  # the current batch's group ids, read by the grouped step when it traces


def grouped(scores, click, conversion):
    from pwiser_tf.kernel import pwiser
    return pwiser(scores, click, conversion, group=GROUP["ids"])


def build_steps(args, runner):
    """{column: (step, largest B or None)}, in the table's order."""
    from pwiser_tf.kernel import pwiser, pwiser_dense
    old = None
    if args.backend == "tensorflow" and args.old_commit.lower() != "none":
        old = load_kernel_at(args.old_commit).pwiser
    rs = keras_rs_loss() if args.extras and args.backend == "tensorflow" else None
    steps = {}
    for mode in runner.modes:
        steps[f"kernel {mode}"] = (runner.value_and_grad(pwiser, mode), None)
        if args.groups:
            steps[f"grouped {mode}"] = (runner.value_and_grad(grouped, mode), None)
        if old is not None:
            steps[f"old {mode}"] = (runner.value_and_grad(old, mode), None)
        steps[f"argsort {mode}"] = (runner.argsort(mode), None)
        if args.extras:
            steps[f"dense {mode}"] = (runner.value_and_grad(pwiser_dense, mode), EXTRAS_MAX)
            if rs is not None:
                steps[f"keras-rs {mode}"] = (runner.value_and_grad(rs, mode), EXTRAS_MAX)
    return steps


def measure(steps, data, runner, repeats):
    """Median ms of each step, the seconds of its first call and the loss value of each
    step that has one (the kernels should agree); the steps take turns."""
    import numpy as np
    from keras import ops

    def once(step):
        start = time.perf_counter()
        runner.block(step(*data))
        return time.perf_counter() - start

    first, values = {}, {}
    for name, step in steps.items():
        first[name] = once(step)
        outputs = step(*data)
        runner.block(outputs)
        if not name.startswith("argsort"):
            values[name] = float(np.asarray(ops.convert_to_numpy(outputs[0])))
    times = {name: [] for name in steps}
    names = list(steps)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            times[name].append(once(steps[name]) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}, first, values


def factor(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2f}x"


def ratio_lines(size, row, modes):
    parts = [f"B={size:,}:"]
    for mode in modes:
        kernel = row[f"kernel {mode}"]
        parts.append(f"kernel/argsort {mode} {kernel / row[f'argsort {mode}']:.2f}x")
        if f"grouped {mode}" in row:
            parts.append(f"grouped/argsort {mode} "
                         f"{row[f'grouped {mode}'] / row[f'argsort {mode}']:.2f}x")
        if f"old {mode}" in row:
            parts.append(f"new/old {mode} {kernel / row[f'old {mode}']:.2f}x")
        if f"dense {mode}" in row:
            parts.append(f"dense/kernel {mode} {factor(row[f'dense {mode}'] / kernel)}")
        if f"keras-rs {mode}" in row:
            parts.append(f"keras-rs/kernel {mode} "
                         f"{factor(row[f'keras-rs {mode}'] / kernel)}")
    if "kernel xla" in row and "kernel graph" in row:
        parts.append(f"XLA/graph {row['kernel xla'] / row['kernel graph']:.2f}x")
    return "  ".join(parts)


def main(argv=None):
    args = parse(argv)
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != args.backend:
        sys.exit("bench_kernel: Keras is already imported with another backend")
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)  # this tree's pwiser_tf, whatever is installed
    import keras
    from keras import ops

    runner = {"tensorflow": TensorFlowSteps, "jax": JaxSteps,
              "torch": lambda: TorchSteps(args.torch_compile)}[args.backend]()
    steps = build_steps(args, runner)
    print(f"backend {keras.backend.backend()} (Keras {keras.__version__}), "
          f"device: {runner.device()}")
    print(f"CPU: {cpu_name()}; Python {platform.python_version()}")
    print(f"value + gradient, median of {args.repeats} (ms):")
    print(f"{'B':>9} | " + " | ".join(f"{name:>14}" for name in steps))
    results, firsts, values = {}, {}, {}
    for size in (int(s) for s in args.sizes.split(",")):
        data = tuple(ops.convert_to_tensor(x) for x in batch(size))
        if args.groups:
            import numpy as np
            GROUP["ids"] = ops.convert_to_tensor(np.random.default_rng(1).integers(
                0, args.groups, size).astype("int32"))
        active = {name: step for name, (step, largest) in steps.items()
                  if largest is None or size <= largest}
        row, firsts[size], values[size] = measure(active, data, runner, args.repeats)
        results[size] = row
        print(f"{size:>9,} | " + " | ".join(
            f"{row[name]:>14.3f}" if name in row else f"{'-':>14}" for name in steps),
            flush=True)
    print()
    for size, row in results.items():
        print(ratio_lines(size, row, runner.modes))
    print()
    for size, value in values.items():
        print(f"loss value, B={size:,}: " + ", ".join(
            f"{name} {number:.9g}" for name, number in value.items()))
    for size, first in firsts.items():
        print(f"first call (trace, compile), B={size:,}: " + ", ".join(
            f"{name} {seconds:.2f} s" for name, seconds in first.items()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory of the process: {peak:.2f} GiB")
    print(f"tensorflow imported: {'tensorflow' in sys.modules}")


if __name__ == "__main__":
    main()
