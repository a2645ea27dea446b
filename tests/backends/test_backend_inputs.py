"""Bad input gives one clear `InputError` naming the argument, on this process's
backend: a tensor of another framework, integer scores, a wrong label shape."""
import numpy as np
import pytest

import framework
from pwiser_tf.errors import InputError
from pwiser_tf.kernel import pwiser
from pwiser_tf.losses import BinaryCrossentropy, PackedAUC, PWiseRLoss

Y = np.array([[1, 1], [1, 0], [0, 0], [1, 0]], "float32")  # (click, conversion)
P = np.array([0.9, 0.2, 0.5, 0.4], "float32")
W = np.array([1.0, 2.0, 0.5, 1.0], "float32")

# (owner, argument, call with `foreign` applied to that argument)
CALLS = {
    "kernel-scores": ("pwiser", "scores", lambda f: pwiser(f(P), Y[:, 0], Y[:, 1])),
    "kernel-click": ("pwiser", "click", lambda f: pwiser(P, f(Y[:, 0]), Y[:, 1])),
    "kernel-conversion": ("pwiser", "conversion", lambda f: pwiser(P, Y[:, 0], f(Y[:, 1]))),
    "kernel-sample_weight": ("pwiser", "sample_weight",
                             lambda f: pwiser(P, Y[:, 0], Y[:, 1], sample_weight=f(W))),
    "loss-y_true": ("PWiseRLoss", "y_true", lambda f: PWiseRLoss()(f(Y), P)),
    "loss-y_pred": ("PWiseRLoss", "y_pred", lambda f: PWiseRLoss()(Y, f(P))),
    "loss-sample_weight": ("PWiseRLoss", "sample_weight",
                           lambda f: PWiseRLoss()(Y, P, sample_weight=f(W))),
    "bce-y_true": ("BinaryCrossentropy", "y_true",
                   lambda f: BinaryCrossentropy()(f(Y[:, 0]), P)),
    "bce-y_pred": ("BinaryCrossentropy", "y_pred",
                   lambda f: BinaryCrossentropy()(Y[:, 0], f(P))),
    "bce-sample_weight": ("BinaryCrossentropy", "sample_weight",
                          lambda f: BinaryCrossentropy()(Y[:, 0], P, sample_weight=f(W))),
    "auc-y_true": ("PackedAUC", "y_true", lambda f: PackedAUC().update_state(f(Y), P)),
    "auc-y_pred": ("PackedAUC", "y_pred", lambda f: PackedAUC().update_state(Y, f(P))),
}
FOREIGN = [(name, call) for name in framework.other_frameworks() for call in CALLS]


@pytest.mark.parametrize("foreign, call", FOREIGN)
def test_tensor_of_another_framework(foreign, call):
    owner, argument, fn = CALLS[call]
    make = framework.other_frameworks()[foreign]
    try:
        fn(make)
    except InputError as error:
        message = str(error)
    else:
        raise AssertionError(f"{owner} took a {foreign} tensor as {argument}")
    assert message.startswith(f"{owner}: {argument} is a {foreign} tensor"), message
    assert f"the {framework.BACKEND} backend" in message


@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "tensor"])
def test_integer_scores_to_the_kernel(dtype, as_tensor):
    scores = np.array([1, 0, 1, 0], dtype)
    scores = framework.tensor(scores) if as_tensor else scores
    with pytest.raises(InputError, match=r"^pwiser: scores must be floating point, got int"):
        pwiser(scores, Y[:, 0], Y[:, 1])


def test_integer_scores_to_the_loss():
    try:
        PWiseRLoss()(Y, framework.tensor(np.array([1, 0, 1, 0], "int32")))
    except InputError as error:
        assert "y_pred" in str(error) and "floating point" in str(error)
    else:
        raise AssertionError("PWiseRLoss took integer y_pred")


@pytest.mark.parametrize("shape", [(4,), (4, 1), (4, 3), (4, 2, 1)])
@pytest.mark.parametrize("owner", ["PWiseRLoss", "PackedAUC"])
def test_packed_target_must_be_b_by_2(owner, shape):
    y_true = framework.tensor(np.zeros(shape, "float32"))
    call = (lambda: PWiseRLoss()(y_true, P)) if owner == "PWiseRLoss" else \
        (lambda: PackedAUC().update_state(y_true, P))
    if owner == "PackedAUC" and shape == (4, 3):  # (click, conversion, group)
        call()
        return
    with pytest.raises(InputError) as error:
        call()
    assert str(error.value).startswith(f"{owner}: y_true must be [B, 2] = (click, "
                                       f"conversion)")
    assert f"got shape {shape}" in str(error.value)
    if shape == (4, 3):  # the group-less loss names the way to pass groups
        assert str(error.value).endswith("a third column of group ids needs grouped=True")


def test_grouped_loss_pairs_within_the_third_column():
    rng = np.random.default_rng(0)
    click = (rng.random(64) < 0.5).astype("float32")
    conversion = click * (rng.random(64) < 0.4).astype("float32")
    group = rng.integers(0, 6, 64).astype("float32")
    scores = rng.random(64).astype("float32")
    packed = framework.tensor(np.stack([click, conversion, group], 1))
    loss = PWiseRLoss(grouped=True, bce=False, pwiser_weight=1.0)
    grouped = float(framework.numpy(loss(packed, framework.tensor(scores))))
    expected = float(framework.numpy(pwiser(scores, click, conversion,
                                            group=group.astype("int32"))))
    assert grouped == pytest.approx(expected, rel=1e-6)
    assert grouped < float(framework.numpy(pwiser(scores, click, conversion)))
    with pytest.raises(InputError, match=r"y_true must be \[B, 3\] = \(click, conversion, "
                                         r"group\), got shape \(64, 2\)"):
        loss(framework.tensor(np.stack([click, conversion], 1)), scores)
    assert type(loss).from_config(loss.get_config()).grouped


@pytest.mark.parametrize("argument", ["scores", "click", "conversion", "sample_weight"])
def test_kernel_argument_of_two_columns(argument):
    """[B, 2] where [B] or [B, 1] is due: the error names the argument and the shape."""
    args = {"scores": P, "click": Y[:, 0], "conversion": Y[:, 1], "sample_weight": W}
    args[argument] = framework.tensor(np.stack([args[argument]] * 2, 1))
    with pytest.raises(InputError) as error:
        pwiser(args.pop("scores"), args.pop("click"), args.pop("conversion"), **args)
    assert str(error.value) == (f"pwiser: {argument} must have shape [B] or [B, 1], "
                                f"got [4, 2]")
