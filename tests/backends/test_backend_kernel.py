"""`pwiser` against `pwiser_dense` and the float64 definition, on this process's
backend: value and gradient (the backend's own autodiff), eager and compiled."""
import numpy as np
import pytest

import definition
import framework
from pwiser_tf.kernel import pwiser, pwiser_dense

RTOL = 1e-5  # float32 against the float64 definition


def batch(case: str, seed: int = 0):
    """(scores, click, conversion, sample_weight, margin_click, margin_nonclick)."""
    rng = np.random.default_rng(seed)
    size = 257  # one past a power of two: the scan's last round is partial
    click = (rng.random(size) < 0.45).astype("float32")
    conversion = click * (rng.random(size) < 0.35).astype("float32")
    scores = rng.random(size).astype("float32")
    weight = None
    margins = (0.1, 0.3)
    if case == "ties":
        # Few dyadic values and margins: p_a + m - p_j is exactly 0 for many pairs.
        scores = (rng.integers(0, 6, size) / 8).astype("float32")
        margins = (0.0, 0.125)
    elif case == "ties_weighted":
        scores = (rng.integers(0, 4, size) / 4).astype("float32")
        weight = (rng.integers(0, 5, size) / 4).astype("float32")
        margins = (0.25, 0.5)
    elif case == "masked":
        click[rng.random(size) < 0.1] = -1.0
        conversion[rng.random(size) < 0.1] = -1.0
    elif case == "weighted":
        weight = rng.uniform(0.0, 3.0, size).astype("float32")
        weight[rng.random(size) < 0.2] = 0.0
    elif case == "logits":
        scores = rng.normal(1.0, 4.0, size).astype("float32")
        margins = (0.5, 1.5)
    return scores, click, conversion, weight, margins[0], margins[1]


CASES = ["random", "ties", "ties_weighted", "masked", "weighted", "logits"]


def assert_close(actual, expected, what):
    """Relative error <= RTOL, element by element: each element of the gradient is
    a sum of terms of one sign, so no element is a cancellation, and an element
    the definition gives as 0 (no pair, or the plain hinge at d = 0) must be 0."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    error = np.abs(actual - expected) - RTOL * np.abs(expected)
    worst = np.unravel_index(np.argmax(error), error.shape) if error.ndim else ()
    assert np.all(np.isfinite(actual)) and np.all(error <= 0), (
        f"{what}: {actual[worst]} against {expected[worst]} (index {worst})")


def run(fn, scores, click, conversion, weight, **options):
    """Value and gradient of `fn` (the kernel or the dense definition) on the backend."""
    labels = [framework.tensor(x) for x in (click, conversion)]
    w = None if weight is None else framework.tensor(weight)
    return framework.value_and_grad(
        lambda s: fn(s, *labels, sample_weight=w, **options), scores)


@pytest.mark.parametrize("normalization", ["anchor", "pair"])
@pytest.mark.parametrize("squared", [True, False], ids=["squared", "plain"])
@pytest.mark.parametrize("case", CASES)
def test_kernel_equals_dense_and_definition(case, squared, normalization):
    scores, click, conversion, weight, m_click, m_nonclick = batch(case)
    options = dict(margin_click=m_click, margin_nonclick=m_nonclick, squared=squared,
                   normalization=normalization)
    # The definition at the float32 margins the kernel computes with.
    expected = definition.pwiser(scores, click, conversion, float(np.float32(m_click)),
                                 float(np.float32(m_nonclick)), squared, normalization,
                                 weight)
    assert expected[0] > 0 and np.any(expected[1] != 0)
    fast = run(pwiser, scores, click, conversion, weight, **options)
    dense = run(pwiser_dense, scores, click, conversion, weight, **options)
    for name, (value, grad) in (("pwiser", fast), ("pwiser_dense", dense)):
        assert np.shape(value) == ()
        assert_close(value, expected[0], f"{case} {name} value")
        assert_close(grad, expected[1], f"{case} {name} gradient")


def test_plain_hinge_at_exact_ties_follows_relu():
    """d = p_a + m - p_j = 0 exactly: the pair adds nothing, to the value or the
    gradient (ReLU's derivative at 0), as in the dense definition."""
    # Four rows, as the other small cases: JAX compiles its ops once per shape.
    scores = np.array([0.5, 0.5, 0.75, 0.5], "float32")
    click = np.array([1, 1, 0, 0], "float32")
    conversion = np.array([1, 0, 0, 0], "float32")
    options = dict(margin_click=0.0, margin_nonclick=0.0, squared=False)
    value, grad = run(pwiser, scores, click, conversion, None, **options)
    dense_value, dense_grad = run(pwiser_dense, scores, click, conversion, None, **options)
    # Only the non-click at 0.75 is above the positive (d = 0.25, over K = 2 non-clicks).
    np.testing.assert_allclose(value, 0.25 / 2, rtol=1e-6)
    np.testing.assert_allclose(grad, [-0.5, 0, 0.5, 0], atol=1e-7)
    np.testing.assert_allclose(dense_value, value, rtol=1e-6)
    np.testing.assert_allclose(dense_grad, grad, atol=1e-7)


EMPTY = {  # (click, conversion): a batch with one group (or every row) missing
    "no_positive": ([1, 1, 0, 0], [0, 0, 0, 0]),
    "no_anchor": ([1, 1, 1, 1], [1, 1, 1, 1]),
    "all_masked": ([-1, -1, 1, 0], [1, 0, -1, -1]),
    "one_row": ([1], [1]),
}


@pytest.mark.parametrize("normalization", ["anchor", "pair"])
@pytest.mark.parametrize("case", sorted(EMPTY))
def test_empty_groups_give_zero_and_finite_gradients(case, normalization):
    click, conversion = (np.array(x, "float32") for x in EMPTY[case])
    scores = np.linspace(0.9, 0.1, len(click)).astype("float32")
    for fn in (pwiser, pwiser_dense):
        value, grad = run(fn, scores, click, conversion, None, margin_click=0.3,
                          margin_nonclick=0.3, normalization=normalization)
        assert float(value) == 0.0
        assert np.all(np.isfinite(grad)) and np.all(grad == 0)


def test_one_empty_anchor_group_leaves_the_other_term():
    """No S1 rows: the S2 term alone, normalised by the S2 weight only."""
    scores = np.array([0.2, 0.6, 0.4, 0.1], "float32")
    click, conversion = np.ones(4, "float32"), np.array([1, 0, 0, 0], "float32")
    value, grad = run(pwiser, scores, click, conversion, None, margin_click=0.1,
                      margin_nonclick=0.9)
    expected = definition.pwiser(scores, click, conversion, float(np.float32(0.1)), 0.9)
    assert_close(value, expected[0], "value")
    assert_close(grad, expected[1], "gradient")


def check_compiled(what: str):
    """The kernel compiled whole, its labels and weights traced, against the definition."""
    scores, click, conversion, _, m_click, m_nonclick = batch("masked", seed=3)
    weight = np.random.default_rng(4).uniform(0.5, 2.0, len(scores)).astype("float32")
    expected = definition.pwiser(scores, click, conversion, float(np.float32(m_click)),
                                 float(np.float32(m_nonclick)), True, "pair", weight)

    def fn(s, c, v, w):
        return pwiser(s, c, v, margin_click=m_click, margin_nonclick=m_nonclick,
                      normalization="pair", sample_weight=w)

    value, grad = framework.compiled_value_and_grad(fn, scores, click, conversion, weight)
    assert_close(value, expected[0], f"{what} value")
    assert_close(grad, expected[1], f"{what} gradient")


# Compiled: TensorFlow with XLA and as a graph of unknown batch size, JAX with
# jax.jit. PyTorch is checked eagerly only: torch.compile works on the kernel but
# takes about 30 s to compile it on a CPU runner.
if framework.BACKEND == "tensorflow":
    def test_xla_matches_definition():
        check_compiled("tf.function(jit_compile=True)")

    def test_graph_with_unknown_batch_size():
        """A `tf.function` with `[None]` inputs: the scan loops instead of unrolling."""
        tf = framework.lib
        scores, click, conversion, _, m_click, m_nonclick = batch("ties", seed=5)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)] * 3)
        def step(s, c, v):
            with tf.GradientTape() as tape:
                tape.watch(s)
                value = pwiser(s, c, v, margin_click=m_click, margin_nonclick=m_nonclick,
                               squared=False)
            return value, tape.gradient(value, s)

        for size in (len(scores), 9, 1):  # one trace, three batch sizes
            value, grad = step(*(tf.constant(x[:size]) for x in (scores, click, conversion)))
            expected = definition.pwiser(scores[:size], click[:size], conversion[:size],
                                         m_click, m_nonclick, squared=False)
            assert_close(value.numpy(), expected[0], f"B={size} value")
            assert_close(grad.numpy(), expected[1], f"B={size} gradient")
        assert step.experimental_get_tracing_count() == 1

if framework.BACKEND == "jax":
    def test_jit_matches_definition():
        check_compiled("jax.jit")


@pytest.mark.parametrize("groups", [1, 7, 60])
@pytest.mark.parametrize("squared", [True, False], ids=["squared", "plain"])
def test_grouped_pairs_equal_the_same_group_definition(groups, squared):
    """Only rows of one id pair; one id for the batch is the ungrouped term."""
    scores, click, conversion, weight, m_click, m_nonclick = batch("weighted")
    group = np.random.default_rng(groups).integers(-5, groups - 5, len(scores))
    options = dict(margin_click=m_click, margin_nonclick=m_nonclick, squared=squared)
    expected = definition.pwiser(scores, click, conversion, float(np.float32(m_click)),
                                 float(np.float32(m_nonclick)), squared, "anchor", weight,
                                 group)
    assert expected[0] > 0
    for fn in (pwiser, pwiser_dense):
        value, grad = run(fn, scores, click, conversion, weight, group=framework.tensor(
            group.astype("int32")), **options)
        assert_close(value, expected[0], f"{fn.__name__} grouped value")
        assert_close(grad, expected[1], f"{fn.__name__} grouped gradient")
    if groups == 1:
        ungrouped = run(pwiser, scores, click, conversion, weight, **options)
        assert_close(ungrouped[0], expected[0], "ungrouped value")
