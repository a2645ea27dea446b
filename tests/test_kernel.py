"""The O(B log B) PWiseR kernel against its dense O(B^2) definition."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pwiser_tf import pwiser, pwiser_dense
from pwiser_tf.errors import InputError

OPTIONS = [dict(squared=s, normalization=n) for s in (True, False) for n in ("anchor", "pair")]


def value_and_grad(fn, scores, *args, **kwargs):
    scores = tf.convert_to_tensor(scores, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(scores)
        value = fn(scores, *args, **kwargs)
    return value.numpy(), tape.gradient(value, scores).numpy()


def assert_same(scores, click, conversion, **kwargs):
    fast = value_and_grad(pwiser, scores, click, conversion, **kwargs)
    dense = value_and_grad(pwiser_dense, scores, click, conversion, **kwargs)
    np.testing.assert_allclose(fast[0], dense[0], rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(fast[1], dense[1], rtol=2e-3, atol=1e-5)
    return fast


@st.composite
def batches(draw):
    size = draw(st.integers(1, 48))
    # Scores and margins on a grid of 1/16: exact in float32, so ties are real ties.
    scores = np.array(draw(st.lists(st.integers(0, 16), min_size=size, max_size=size))) / 16
    click = np.array(draw(st.lists(st.sampled_from([0, 1, -1]), min_size=size, max_size=size)))
    converted = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)))
    conversion = np.where(click == 1, converted.astype(int), np.where(click < 0, -1, 0))
    weights = np.array(draw(st.lists(st.integers(0, 4), min_size=size, max_size=size))) / 2
    margins = draw(st.tuples(st.integers(0, 4), st.integers(0, 4)))
    return (scores.astype(np.float32), click.astype(np.float32),
            conversion.astype(np.float32), weights.astype(np.float32),
            margins[0] / 16, margins[1] / 16)


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(OPTIONS), st.booleans())
def test_matches_dense_reference_values_and_gradients(batch, options, weighted):
    scores, click, conversion, weights, m1, m2 = batch
    assert_same(scores, click, conversion, margin_click=m1, margin_nonclick=m2,
                sample_weight=weights if weighted else None, **options)


@pytest.mark.parametrize("options", OPTIONS)
def test_random_continuous_scores(options):
    rng = np.random.default_rng(7)
    size = 3000
    click = (rng.random(size) < 0.1).astype(np.float32)
    conversion = (click * (rng.random(size) < 0.2)).astype(np.float32)
    scores = rng.random(size).astype(np.float32) * 0.2
    assert_same(scores, click, conversion, margin_click=0.01, margin_nonclick=0.02,
                sample_weight=rng.random(size).astype(np.float32), **options)


def test_hand_computed_value():
    # S3 = {0.9}, S2 = {0.2, 0.6}, S1 = {0.1}; margins 0.5.
    value = pwiser([0.9, 0.2, 0.6, 0.1], [1, 1, 1, 0], [1, 0, 0, 0],
                   margin_click=0.5, margin_nonclick=0.5)
    assert float(value) == pytest.approx(0.5 * (0.2 ** 2), abs=1e-7)
    plain = pwiser([0.9, 0.2, 0.6, 0.1], [1, 1, 1, 0], [1, 0, 0, 0],
                   margin_click=0.5, margin_nonclick=0.9, squared=False)
    assert float(plain) == pytest.approx(0.5 * 0.2 + 0.1, abs=1e-6)


def test_ties_contribute_zero_and_match_the_hinge_derivative():
    # Every anchor's key equals the positive's score: the hinge sits at 0.
    scores = np.array([0.5, 0.25, 0.25, 0.0], np.float32)
    click = np.array([1, 1, 1, 0], np.float32)
    conversion = np.array([1, 0, 0, 0], np.float32)
    for squared in (True, False):
        value, grad = assert_same(scores, click, conversion, margin_click=0.25,
                                  margin_nonclick=0.5, squared=squared)
        assert value == 0.0 and np.all(grad == 0.0)


@pytest.mark.parametrize("click, conversion", [
    ([1, 1, 0, 0], [0, 0, 0, 0]),      # no conversion
    ([1, 1, 1, 1], [1, 1, 1, 1]),      # only S3
    ([0, 0, 0, 0], [0, 0, 0, 0]),      # only S1
    ([-1, -1, -1, -1], [-1, -1, -1, -1]),  # all missing
])
def test_empty_groups_give_zero_with_finite_gradients(click, conversion):
    value, grad = value_and_grad(pwiser, [0.1, 0.9, 0.3, 0.7], np.float32(click),
                                 np.float32(conversion))
    assert value == 0.0
    assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)


def test_missing_labels_leave_the_exposure_out():
    rng = np.random.default_rng(1)
    scores = rng.random(40).astype(np.float32)
    click = (rng.random(40) < 0.5).astype(np.float32)
    conversion = click * (rng.random(40) < 0.5)
    keep = rng.random(40) < 0.7
    masked_click = np.where(keep, click, -1).astype(np.float32)
    full = pwiser(scores, masked_click, conversion.astype(np.float32), margin_click=0.1)
    subset = pwiser(scores[keep], click[keep], conversion[keep].astype(np.float32),
                    margin_click=0.1)
    assert float(full) == pytest.approx(float(subset), rel=1e-5)


def test_integer_weights_equal_repeated_rows():
    scores = np.array([0.3, 0.6, 0.2, 0.8, 0.1], np.float32)
    click = np.array([1, 1, 0, 1, 0], np.float32)
    conversion = np.array([1, 0, 0, 0, 0], np.float32)
    weights = np.array([2, 1, 3, 1, 1], np.float32)
    repeat = np.repeat(np.arange(5), weights.astype(int))
    for normalization in ("anchor", "pair"):
        weighted = pwiser(scores, click, conversion, sample_weight=weights, margin_click=0.2,
                          margin_nonclick=0.3, normalization=normalization)
        repeated = pwiser(scores[repeat], click[repeat], conversion[repeat], margin_click=0.2,
                          margin_nonclick=0.3, normalization=normalization)
        assert float(weighted) == pytest.approx(float(repeated), rel=1e-5)


def test_column_vectors_are_accepted():
    scores = np.array([[0.2], [0.7], [0.4]], np.float32)
    value = pwiser(scores, [[1.0], [1.0], [0.0]], [[1.0], [0.0], [0.0]], margin_click=0.1)
    assert float(value) == pytest.approx(float(pwiser(scores[:, 0], [1, 1, 0], [1, 0, 0],
                                                      margin_click=0.1)))


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_inputs_compute_in_float32(dtype):
    rng = np.random.default_rng(3)
    scores = rng.random(256).astype(np.float32)
    click = (rng.random(256) < 0.3).astype(np.float32)
    conversion = click * (rng.random(256) < 0.3)
    low = tf.cast(scores, dtype)
    value = pwiser(low, tf.cast(click, dtype), tf.cast(conversion, dtype), margin_click=0.05)
    assert value.dtype == tf.float32
    reference = pwiser(tf.cast(low, tf.float32), click, conversion, margin_click=0.05)
    assert float(value) == pytest.approx(float(reference), rel=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(low)
        out = pwiser(low, click, conversion, margin_click=0.05)
    assert tape.gradient(out, low).dtype == dtype


def test_xla_and_graph_match_eager():
    rng = np.random.default_rng(5)
    scores = tf.constant(rng.random(4096).astype(np.float32))
    click = tf.constant((rng.random(4096) < 0.05).astype(np.float32))
    conversion = click * tf.constant((rng.random(4096) < 0.1).astype(np.float32))

    def loss_and_grad(s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            value = pwiser(s, click, conversion)
        return value, tape.gradient(value, s)

    eager = loss_and_grad(scores)
    for jit in (False, True):
        compiled = tf.function(loss_and_grad, jit_compile=jit)(scores)
        np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-5)
        np.testing.assert_allclose(compiled[1], eager[1], rtol=1e-4, atol=1e-8)


def test_inside_a_distribution_strategy_replica():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    scores = tf.constant([0.2, 0.9, 0.4, 0.6, 0.1])
    click = tf.constant([1.0, 1.0, 0.0, 1.0, 0.0])
    conversion = tf.constant([0.0, 1.0, 0.0, 0.0, 0.0])

    @tf.function
    def step():
        def replica_fn():
            assert tf.distribute.in_cross_replica_context() is False
            return pwiser(scores, click, conversion, margin_click=0.5, margin_nonclick=0.5)
        per_replica = strategy.run(replica_fn)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    expected = pwiser_dense(scores, click, conversion, margin_click=0.5, margin_nonclick=0.5)
    assert float(step()) == pytest.approx(float(expected), rel=1e-6)


def test_large_batch_without_a_pair_matrix():
    # A B x B float32 matrix here would need 256 GiB.
    size = 262_144
    rng = np.random.default_rng(0)
    click = (rng.random(size) < 0.05).astype(np.float32)
    conversion = click * (rng.random(size) < 0.1)
    value = tf.function(pwiser)(tf.constant(rng.random(size).astype(np.float32)),
                                click, conversion.astype(np.float32))
    assert np.isfinite(float(value)) and float(value) > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(scores=[0.1, 0.2], click=[1, 0, 0], conversion=[0, 0, 0]), "batch sizes differ"),
    (dict(scores=[0.1, 0.2], click=[2, 0], conversion=[0, 0]), r"click\[0\] = 2"),
    (dict(scores=[0.1, 0.2], click=[0, 1], conversion=[1, 0]), "conversion without a click"),
    (dict(scores=[[0.1, 0.2]], click=[0], conversion=[0]), r"shape \[B\] or \[B, 1\]"),
    (dict(scores=[0.1], click=[0], conversion=[0], normalization="mean"), "normalization"),
])
def test_bad_input_gives_one_clear_error(kwargs, message):
    kwargs = {k: np.asarray(v, np.float32) if k in ("scores", "click", "conversion") else v
              for k, v in kwargs.items()}
    with pytest.raises(InputError, match=message):
        pwiser(**kwargs)


def test_conversion_without_click_as_click():
    scores = np.array([0.2, 0.9, 0.5], np.float32)
    as_click = pwiser(scores, [0, 1, 0], [1, 0, 0], margin_click=0.1,
                      conversion_without_click="as_click")
    explicit = pwiser(scores, [1, 1, 0], [1, 0, 0], margin_click=0.1)
    assert float(as_click) == pytest.approx(float(explicit))


def brute_force(scores, click, conversion, weights, margin_click, margin_nonclick,
                squared=True, normalization="anchor"):
    """The definition in float64, with its gradient with respect to the scores."""
    p, c, v = (np.asarray(x, np.float64) for x in (scores, click, conversion))
    w = np.ones_like(p) if weights is None else np.asarray(weights, np.float64)
    known = (c >= 0) & (v >= 0)
    w3 = np.where(known & (c > 0.5) & (v > 0.5), w, 0)
    value, grad = 0.0, np.zeros_like(p)
    for anchor, margin in ((np.where(known & (c > 0.5) & (v < 0.5), w, 0), margin_click),
                           (np.where(known & (c < 0.5), w, 0), margin_nonclick)):
        d = np.maximum(p[:, None] - p[None, :] + np.float64(np.float32(margin)), 0)
        pair = anchor[:, None] * w3[None, :]
        h, dh = (d ** 2, 2 * d) if squared else (d, (d > 0).astype(np.float64))
        den = anchor.sum() * (w3.sum() if normalization == "pair" else 1.0)
        if den > 0:
            value += (pair * h).sum() / den
            grad += ((pair * dh).sum(1) - (pair * dh).sum(0)) / den
    return value, grad


@st.composite
def far_batches(draw):
    """Batches anywhere in +-1000, at any spread: a shift (a multiple of 1/16), a
    power-of-two scale and grid offsets, all exact in float32, so ties are ties."""
    size = draw(st.integers(2, 40))
    shift = draw(st.integers(-16000, 16000)) / 16
    scale = 2.0 ** draw(st.integers(-4, 6))
    offsets = np.array(draw(st.lists(st.integers(-16, 16), min_size=size, max_size=size)))
    click = np.array(draw(st.lists(st.sampled_from([0, 1]), min_size=size, max_size=size)))
    converted = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)))
    weights = np.array(draw(st.lists(st.integers(0, 4), min_size=size, max_size=size))) / 2
    margins = draw(st.tuples(st.integers(0, 8), st.integers(0, 8)))
    return ((shift + scale * offsets / 16).astype(np.float32), click.astype(np.float32),
            (click * converted).astype(np.float32), weights.astype(np.float32),
            margins[0] / 16, margins[1] / 16)


@settings(max_examples=80, deadline=None)
@given(far_batches(), st.sampled_from(OPTIONS), st.booleans())
def test_float64_brute_force_anywhere_in_plus_minus_1000(batch, options, weighted):
    scores, click, conversion, weights, m1, m2 = batch
    weights = weights if weighted else None
    value, grad = value_and_grad(pwiser, scores, click, conversion, margin_click=m1,
                                 margin_nonclick=m2, sample_weight=weights, **options)
    exact, exact_grad = brute_force(scores, click, conversion, weights, m1, m2, **options)
    assert value >= 0.0
    assert value == pytest.approx(exact, rel=1e-4, abs=1e-12)
    np.testing.assert_allclose(grad, exact_grad, rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("b", [1.0, 100.0, 306.0, 1000.0])
def test_far_from_the_batch_mean(b, squared):
    # S3 = {b}, S2 = {b}, S1 = {-b, -b, -b}: only the S2 pair pays, 0.1^2 (or 0.1).
    scores = np.array([b, b, -b, -b, -b], np.float32)
    click, conversion = [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]
    value = float(pwiser(scores, click, conversion, margin_click=0.1, margin_nonclick=0.1,
                         squared=squared))
    exact, _ = brute_force(scores, click, conversion, None, 0.1, 0.1, squared=squared)
    assert value == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize("options", OPTIONS)
def test_continuous_scores_far_from_zero(options):
    rng = np.random.default_rng(11)
    size = 2000
    click = (rng.random(size) < 0.2).astype(np.float32)
    conversion = (click * (rng.random(size) < 0.3)).astype(np.float32)
    weights = rng.random(size).astype(np.float32)
    for centre in (-1000.0, 300.0, 1000.0):
        scores = (centre + rng.normal(0, 0.5, size)).astype(np.float32)
        value, grad = value_and_grad(pwiser, scores, click, conversion, margin_click=0.1,
                                     margin_nonclick=0.2, sample_weight=weights, **options)
        exact, exact_grad = brute_force(scores, click, conversion, weights, 0.1, 0.2,
                                        **options)
        assert value == pytest.approx(exact, rel=1e-4)
        # The plain hinge's derivative jumps at 0: a pair within the keys' float32
        # rounding (6e-5 at 1000) of it may fall on either side.
        near = near_ties(scores, click, conversion, 0.1, 0.2) if not options["squared"] \
            else np.zeros(size, bool)
        assert near.sum() < 0.05 * size
        np.testing.assert_allclose(grad[~near], exact_grad[~near], rtol=1e-4,
                                   atol=1e-7 * abs(grad).max())


def near_ties(scores, click, conversion, margin_click, margin_nonclick, within=2e-4):
    """Rows of a pair whose hinge argument lies within `within` of 0."""
    p = np.asarray(scores, np.float64)
    positive = (click > 0.5) & (conversion > 0.5)
    near = np.zeros(len(p), bool)
    for anchor, margin in (((click > 0.5) & (conversion < 0.5), margin_click),
                           (click < 0.5, margin_nonclick)):
        d = p[:, None] - p[None, :] + margin
        close = (np.abs(d) < within) & anchor[:, None] & positive[None, :]
        near |= close.any(1) | close.any(0)
    return near


@pytest.mark.parametrize("group, message", [
    (np.array([0.0, 1.5, 2.0, 3.0]), r"group must hold integer ids; group\[1\] = 1.5"),
    (np.array([True, False, True, False]), "group must hold integer ids, got bool"),
    (np.array([0, 1, 2]), r"group must have one id per row \(4\), got 3"),
    (np.zeros((4, 2), "int32"), r"group must have shape \[B\] or \[B, 1\]"),
])
def test_a_bad_group_is_named(group, message):
    scores = np.array([0.9, 0.2, 0.6, 0.1], "float32")
    with pytest.raises(InputError, match=message):
        pwiser(scores, [1., 1., 1., 0.], [1., 0., 0., 0.], group=group)


def test_grouped_pairs_in_a_graph_of_unknown_batch_and_under_xla():
    rng = np.random.default_rng(3)
    size = 300
    click = (rng.random(size) < 0.5).astype("float32")
    conversion = click * (rng.random(size) < 0.4).astype("float32")
    scores = rng.random(size).astype("float32")
    group = rng.integers(0, 20, size)
    spec = [tf.TensorSpec([None])] * 3 + [tf.TensorSpec([None], tf.int64)]
    graph = tf.function(lambda *a: pwiser(*a[:3], group=a[3]), input_signature=spec)
    xla = tf.function(lambda *a: pwiser(*a[:3], group=a[3]), jit_compile=True)
    dense = float(pwiser_dense(scores, click, conversion, group=group))
    assert dense < 0.5 * float(pwiser(scores, click, conversion))  # fewer pairs
    for step in (graph, xla):
        assert float(step(scores, click, conversion, group)) == pytest.approx(dense, rel=1e-5)
