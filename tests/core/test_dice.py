"""Oracle tests for the self-adjusting dice loss (Li et al. 2020): ``dice_loss`` and ``DiceLoss``."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from equipoise.core.losses import DiceLoss, dice_loss
from equipoise.core.testing import random_logits, random_targets


def _dice_oracle(logits, target, alpha, smooth, square_denominator, ignore_index=-100):
    """Per-example sum_c (1 - DSC_ic) with p' = (1 - p)^alpha p; 0 at ignored positions.

    Returns the per-example losses and the number of non-ignored positions.
    """
    out, kept = [], 0
    for row, y in zip(logits.tolist(), target.tolist()):
        if y == ignore_index:
            out.append(0.0)
            continue
        kept += 1
        total = sum(math.exp(v) for v in row)
        loss = 0.0
        for c, z in enumerate(row):
            p = math.exp(z) / total
            q = (1.0 - p) ** alpha * p
            t = 1.0 if c == y else 0.0
            denominator = (q * q + t * t if square_denominator else q + t) + smooth
            loss += 1.0 - (2.0 * q * t + smooth) / denominator
        out.append(loss)
    return torch.tensor(out, dtype=torch.float64), kept


def test_dice_hand_worked():
    # logits [0, 0] -> p = [0.5, 0.5]; target 0; alpha 0 (p' = p), smooth 1.
    # squared: class 0: (2 * .5 + 1) / (.25 + 1 + 1) = 2 / 2.25 -> 1 - 8/9 = 1/9
    #          class 1: (0 + 1) / (.25 + 0 + 1) = 0.8        -> 0.2
    #          loss = 1/9 + 1/5 = 14/45 = 0.3111111111111111
    # plain:   class 0: 2 / (0.5 + 1 + 1) = 0.8 -> 0.2;  class 1: 1 / 1.5 -> 1/3;  loss = 8/15
    logits = torch.zeros(1, 2, dtype=torch.float64)
    target = torch.tensor([0])
    assert dice_loss(logits, target, alpha=0.0).item() == pytest.approx(14 / 45, rel=1e-12)
    assert dice_loss(logits, target, alpha=0.0, square_denominator=False).item() == pytest.approx(8 / 15, rel=1e-12)
    # alpha 1: p' = (1 - .5) * .5 = .25; squared, smooth 1:
    # class 0: (.5 + 1) / (.0625 + 1 + 1) = 1.5 / 2.0625 -> 1 - 8/11 = 3/11
    # class 1: 1 / (.0625 + 1) = 16/17 -> 1/17;   loss = 3/11 + 1/17 = 62/187 = 0.3315508021390374
    assert dice_loss(logits, target, alpha=1.0).item() == pytest.approx(62 / 187, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.5, 2.0])
@pytest.mark.parametrize("smooth", [1.0, 0.1])
@pytest.mark.parametrize("square_denominator", [True, False])
@pytest.mark.parametrize("ignore_index", [-100, 7])
def test_dice_matches_python_loop(alpha, smooth, square_denominator, ignore_index):
    logits, target = random_logits(10, 4, seed=1), random_targets(4, 10, seed=2)
    target[[2, 6, 7]] = ignore_index
    per_example, kept = _dice_oracle(logits, target, alpha, smooth, square_denominator, ignore_index)
    kwargs = dict(alpha=alpha, smooth=smooth, square_denominator=square_denominator, ignore_index=ignore_index)
    torch.testing.assert_close(
        dice_loss(logits, target, reduction="none", **kwargs), per_example, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        dice_loss(logits, target, reduction="sum", **kwargs), per_example.sum(), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        dice_loss(logits, target, reduction="mean", **kwargs), per_example.sum() / kept, rtol=1e-10, atol=1e-12
    )
    assert kept == 7


def test_dice_ignore_index_inside_class_range():
    # ignore_index = 1 is also a class: every position labelled 1 is skipped
    logits = random_logits(6, 3, seed=3)
    target = torch.tensor([0, 1, 2, 1, 0, 2])
    per_example, kept = _dice_oracle(logits, target, 0.01, 1.0, True, ignore_index=1)
    assert kept == 4
    torch.testing.assert_close(dice_loss(logits, target, ignore_index=1), per_example.sum() / 4, rtol=1e-10, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dice_all_ignored_is_zero_with_finite_gradient(reduction):
    logits = random_logits(5, 3, seed=4).requires_grad_(True)
    target = torch.full((5,), -100)
    loss = dice_loss(logits, target, reduction=reduction)
    assert not torch.isnan(loss).any()
    assert (loss == 0).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.5])
@pytest.mark.parametrize("square_denominator", [True, False])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_dice_gradcheck(alpha, square_denominator, reduction):
    logits = random_logits(5, 4, seed=5).requires_grad_(True)
    target = torch.tensor([0, -100, 3, 2, 3])
    assert torch.autograd.gradcheck(
        lambda x: dice_loss(x, target, alpha=alpha, square_denominator=square_denominator, reduction=reduction),
        (logits,),
    )


def test_dice_gradient_finite_on_perfect_prediction():
    logits = torch.tensor([[300.0, 0.0, 0.0], [0.0, -300.0, 0.0]], requires_grad=True)
    dice_loss(logits, torch.tensor([0, 2]), alpha=0.01).backward()
    assert torch.isfinite(logits.grad).all()


def test_dice_module_matches_function():
    logits, target = random_logits(6, 3, seed=6), random_targets(3, 6, seed=7)
    target[1] = -1
    module = DiceLoss(alpha=0.1, smooth=0.5, square_denominator=False, ignore_index=-1, reduction="sum")
    torch.testing.assert_close(
        module(logits, target),
        dice_loss(logits, target, alpha=0.1, smooth=0.5, square_denominator=False, ignore_index=-1, reduction="sum"),
    )
    default = DiceLoss()
    assert (default.alpha, default.smooth, default.square_denominator) == (0.01, 1.0, True)


def test_dice_validate_args_false_same_value():
    logits, target = random_logits(6, 3, seed=8), random_targets(3, 6, seed=9)
    torch.testing.assert_close(dice_loss(logits, target, validate_args=False), dice_loss(logits, target))


@settings(max_examples=60, deadline=None)
@given(
    kept_values=st.lists(st.floats(-20, 20, allow_nan=False), min_size=6, max_size=6),
    ignored_a=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=3, max_size=3),
    ignored_b=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=3, max_size=3),
    labels=st.lists(st.integers(0, 2), min_size=2, max_size=2),
    alpha=st.floats(0.0, 2.0),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_dice_invariant_to_logits_at_ignored_positions(kept_values, ignored_a, ignored_b, labels, alpha, reduction):
    kept = torch.tensor(kept_values, dtype=torch.float64).reshape(2, 3)
    target = torch.tensor([labels[0], -100, labels[1]])
    a = torch.stack([kept[0], torch.tensor(ignored_a, dtype=torch.float64), kept[1]]).requires_grad_(True)
    b = torch.stack([kept[0], torch.tensor(ignored_b, dtype=torch.float64), kept[1]]).requires_grad_(True)
    loss_a = dice_loss(a, target, alpha=alpha, reduction=reduction)
    loss_b = dice_loss(b, target, alpha=alpha, reduction=reduction)
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
    loss_a.sum().backward()
    assert (a.grad[1] == 0).all()
    # bounded: each of the C terms 1 - DSC lies in [0, 1)
    assert (loss_a >= 0).all() and (loss_a <= 3).all()


_X = torch.zeros(2, 3)
_Y = torch.tensor([0, 2])


@pytest.mark.parametrize(
    "logits,target,kwargs,error,match",
    [
        (_X, torch.tensor([0, 3]), {}, ValueError, r"target\[1\] = 3 is outside \[0, 3\) or ignore_index=-100"),
        (_X, torch.tensor([-1, 0]), {}, ValueError, r"target\[0\] = -1 is outside"),
        (
            _X,
            torch.tensor([-100, 0]),
            {"ignore_index": 5},
            ValueError,
            r"target\[0\] = -100 is outside \[0, 3\) or ignore_index=5",
        ),
        (_X, torch.tensor([0.0, 2.0]), {}, TypeError, "target must hold integer class indices"),
        (_X, torch.tensor([0, 1, 2]), {}, ValueError, r"target must have shape \(N,\) = \(2,\)"),
        (
            torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]]),
            _Y,
            {},
            ValueError,
            "logits contains a non-finite value nan",
        ),
        (
            torch.tensor([[0.0, float("inf"), 0.0], [0.0, 0.0, 0.0]]),
            _Y,
            {},
            ValueError,
            "logits contains a non-finite value inf",
        ),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), {}, ValueError, "logits is empty"),
        (torch.zeros(2, 3, 4), _Y, {}, ValueError, r"logits must have shape \(N, C\)"),
        (_X, _Y, {"reduction": "avg"}, ValueError, "reduction must be one of"),
        (_X, _Y, {"alpha": -0.1}, ValueError, "alpha must be >= 0"),
        (_X, _Y, {"alpha": float("nan")}, ValueError, "alpha must be >= 0"),
        (_X, _Y, {"smooth": 0.0}, ValueError, "smooth must be > 0"),
        (_X, _Y, {"smooth": -1.0}, ValueError, "smooth must be > 0"),
    ],
)
def test_dice_bad_input(logits, target, kwargs, error, match):
    with pytest.raises(error, match=match):
        dice_loss(logits, target, **kwargs)


def test_dice_accepts_ignore_index_targets():
    logits = random_logits(3, 3, seed=10)
    assert torch.isfinite(dice_loss(logits, torch.tensor([0, -100, 2])))
    assert torch.isfinite(dice_loss(logits, torch.tensor([0, 9, 2]), ignore_index=9))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"alpha": -1.0}, "alpha must be >= 0"),
        ({"smooth": 0.0}, "smooth must be > 0"),
        ({"reduction": "x"}, "reduction must be one of"),
    ],
)
def test_dice_module_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiceLoss(**kwargs)


def test_confidently_wrong_examples_lose_their_pull_and_alpha_pushes_them_further_wrong():
    # Two classes, logits (0, m): the example of class 0 has p = sigmoid(-m), more wrong as m grows.
    # Cross-entropy's derivative with respect to m tends to 1. The dice loss's, without the
    # self-adjusting factor (alpha = 0), stays positive but shrinks like p. With the paper's
    # alpha = 0.01 it changes sign near p = 0.003: the factor (1 - p_j) ** alpha also multiplies the
    # wrong class's probability p_j -> 1, which makes that class's term vanish, so the loss then
    # falls as the example gets more wrong. This is the formula of Li et al. 2020 (and of their
    # multi-class code), not a bug: it is why the self-adjusting dice collapses to the majority
    # class on the 10:1 imbalanced IMDB (README, NLP benchmarks).
    margins = torch.tensor([2.0, 4.0, 6.0, 8.0, 10.0], dtype=torch.float64, requires_grad=True)
    logits = torch.stack([torch.zeros_like(margins), margins], dim=1)
    target = torch.zeros(5, dtype=torch.long)
    p = torch.sigmoid(-margins.detach())
    (ce_grad,) = torch.autograd.grad(F.cross_entropy(logits, target, reduction="sum"), margins)
    torch.testing.assert_close(ce_grad, 1 - p)
    (plain,) = torch.autograd.grad(dice_loss(logits, target, alpha=0.0, reduction="sum"), margins)
    assert torch.all(plain > 0) and torch.all(plain < 2.5 * p)  # pulls back, but only in proportion to p
    (adjusted,) = torch.autograd.grad(dice_loss(logits, target, alpha=0.01, reduction="sum"), margins)
    assert torch.all(adjusted[:2] > 0) and torch.all(adjusted[2:] < 0)  # past p ~ 0.003: pushed further wrong


# ---- the set-level form (batch_dice=True) -------------------------------------------------------


def _batch_dice_oracle(logits, target, alpha, smooth, square_denominator, ignore_index=-100):
    """Per-class 1 - DSC_c with the sums over the non-ignored rows, computed one class at a time."""
    rows = [(row, y) for row, y in zip(logits.tolist(), target.tolist()) if y != ignore_index]
    out = []
    for c in range(logits.shape[1]):
        intersection = size_p = size_y = 0.0
        for row, y in rows:
            total = sum(math.exp(v) for v in row)
            p = math.exp(row[c]) / total
            q = (1.0 - p) ** alpha * p
            t = 1.0 if y == c else 0.0
            intersection += q * t
            size_p += q * q if square_denominator else q
            size_y += t  # t * t == t for 0/1 labels
        out.append(1.0 - (2.0 * intersection + smooth) / (size_p + size_y + smooth))
    return torch.tensor(out, dtype=torch.float64)


def test_batch_dice_hand_worked():
    # Two rows, logits [0, 0] -> p = [.5, .5] on both; targets [0, 0]; alpha 0, smooth 1.
    # squared: class 0: (2 * (.5 + .5) + 1) / ((.25 + .25) + (1 + 1) + 1) = 3 / 3.5 -> 1 - 6/7 = 1/7
    #          class 1: (0 + 1) / ((.25 + .25) + 0 + 1) = 1 / 1.5              -> 1/3
    #          loss = 1/7 + 1/3 = 10/21
    # plain:   class 0: 3 / (1 + 2 + 1) = 3/4 -> 1/4;  class 1: 1 / (1 + 1) -> 1/2;  loss = 3/4
    logits = torch.zeros(2, 2, dtype=torch.float64)
    target = torch.tensor([0, 0])
    assert dice_loss(logits, target, alpha=0.0, batch_dice=True).item() == pytest.approx(10 / 21, rel=1e-12)
    none = dice_loss(logits, target, alpha=0.0, batch_dice=True, reduction="none")
    torch.testing.assert_close(none, torch.tensor([1 / 7, 1 / 3], dtype=torch.float64), rtol=1e-12, atol=0)
    plain = dice_loss(logits, target, alpha=0.0, square_denominator=False, batch_dice=True)
    assert plain.item() == pytest.approx(3 / 4, rel=1e-12)
    # Not the mean of the per-row losses (each row alone: 14/45, see test_dice_hand_worked).
    assert dice_loss(logits, target, alpha=0.0).item() == pytest.approx(14 / 45, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.5])
@pytest.mark.parametrize("smooth", [1.0, 0.1])
@pytest.mark.parametrize("square_denominator", [True, False])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_batch_dice_matches_python_loop(alpha, smooth, square_denominator, ignore_index):
    logits, target = random_logits(12, 4, seed=3), random_targets(4, 12, seed=4)
    target[[1, 5]] = ignore_index
    kwargs = {"alpha": alpha, "smooth": smooth, "square_denominator": square_denominator}
    expected = _batch_dice_oracle(logits, target, ignore_index=ignore_index, **kwargs)
    kwargs.update(ignore_index=ignore_index, batch_dice=True)
    got = dice_loss(logits, target, reduction="none", **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    for reduction in ("mean", "sum"):
        torch.testing.assert_close(
            dice_loss(logits, target, reduction=reduction, **kwargs), expected.sum(), rtol=1e-10, atol=1e-12
        )


def test_batch_dice_of_one_row_is_the_per_row_loss():
    logits, target = random_logits(1, 5, seed=5), torch.tensor([2])
    torch.testing.assert_close(dice_loss(logits, target, batch_dice=True), dice_loss(logits, target))


def test_batch_dice_ignores_row_order_and_ignored_rows():
    logits, target = random_logits(9, 3, seed=6), random_targets(3, 9, seed=7)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    reference = dice_loss(logits, target, batch_dice=True)
    torch.testing.assert_close(dice_loss(logits[order], target[order], batch_dice=True), reference)
    padded = torch.cat([logits, 50 * torch.randn(4, 3, dtype=logits.dtype)]).requires_grad_(True)
    loss = dice_loss(padded, torch.cat([target, torch.full((4,), -100)]), batch_dice=True)
    torch.testing.assert_close(loss, reference)
    loss.backward()
    assert (padded.grad[9:] == 0).all()


def test_batch_dice_all_ignored_is_zero_with_zero_gradient():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = dice_loss(logits, torch.full((3,), -100), batch_dice=True)
    assert loss.item() == 0.0
    loss.backward()
    assert (logits.grad == 0).all()


def test_batch_dice_rare_class_weighs_like_the_frequent_one():
    # 99 rows of class 0 predicted right, 1 row of class 1 predicted as class 0. The per-row
    # mean hardly sees the miss; the set-level loss keeps class 1's whole term (no true positive).
    logits = torch.tensor([[6.0, -6.0]] * 100, dtype=torch.float64)
    target = torch.tensor([0] * 99 + [1])
    per_class = dice_loss(logits, target, alpha=0.0, smooth=1e-6, batch_dice=True, reduction="none")
    assert per_class[1].item() == pytest.approx(1.0, abs=1e-4)
    assert dice_loss(logits, target, alpha=0.0, smooth=1e-6).item() == pytest.approx(0.02, abs=1e-3)  # 2 / 100


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batch_dice_finite_in_half_precision(dtype):
    logits = (30 * random_logits(64, 9, seed=8)).to(dtype).requires_grad_(True)
    loss = dice_loss(logits, random_targets(9, 64, seed=9), batch_dice=True)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_batch_dice_module_and_bad_flag():
    logits, target = random_logits(7, 3, seed=10), random_targets(3, 7, seed=11)
    module = DiceLoss(alpha=0.1, smooth=0.5, batch_dice=True, reduction="none")
    torch.testing.assert_close(
        module(logits, target), dice_loss(logits, target, 0.1, 0.5, reduction="none", batch_dice=True)
    )
    assert "batch_dice=True" in repr(module)
    with pytest.raises(TypeError, match="batch_dice must be True or False, got 'yes'"):
        dice_loss(logits, target, batch_dice="yes")
    with pytest.raises(TypeError, match="batch_dice must be True or False, got 1"):
        DiceLoss(batch_dice=1)
