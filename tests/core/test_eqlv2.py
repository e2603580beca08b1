"""Oracle tests for Equalization Loss v2 (Tan et al. 2021): ``eqlv2_weights``, ``eqlv2_loss`` and
the module ``EQLv2Loss`` with its gradient statistics.

The references are the paper's formulas written out in plain Python (float64),
``F.binary_cross_entropy_with_logits`` when every weight is 1, and, for the statistics the
module collects, the gradient of the same loss taken separately with ``torch.autograd.grad``.
"""

import io
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from equipoise.core.losses import EQLv2Loss, build_loss, eqlv2_loss, eqlv2_weights

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")),
]


# --------------------------------------------------------------------------------------------
# Independent oracles (plain Python, float64)
# --------------------------------------------------------------------------------------------


def _weights_oracle(pos_grad, neg_grad, gamma, mu, alpha):
    """(r_j, q_j) per class: q = sigmoid(gamma (pos/neg - mu)), r = 1 + alpha (1 - q); 0/0 -> 1, 1."""
    pos_weights, neg_weights = [], []
    for pos, neg in zip(pos_grad, neg_grad):
        if pos == 0 and neg == 0:
            q = 1.0
        elif neg == 0:
            q = 1.0 if gamma > 0 else 0.5
        elif gamma == 0:  # the mapping is constant, even where pos / neg overflows to inf
            q = 0.5
        else:  # in exact rational arithmetic: pos / neg may overflow a float where gamma * pos / neg does not
            z = Fraction(gamma) * (Fraction(pos) / Fraction(neg) - Fraction(mu))
            q = 1.0 if z > 800 else 0.0 if z < -800 else 1.0 / (1.0 + math.exp(-float(z)))
        neg_weights.append(q)
        pos_weights.append(1.0 + alpha * (1.0 - q))
    return pos_weights, neg_weights


def _loss_oracle(logits, targets, pos_grad, neg_grad, gamma, mu, alpha):
    """Elementwise (r_j y + q_j (1 - y)) * BCE(z, y) as an (N, C) float64 tensor."""
    r, q = _weights_oracle(pos_grad, neg_grad, gamma, mu, alpha)
    rows = []
    for z_row, y_row in zip(logits.tolist(), targets.tolist()):
        row = []
        for j, (z, y) in enumerate(zip(z_row, y_row)):
            p = 1.0 / (1.0 + math.exp(-z))
            bce = -(y * math.log(p) + (1.0 - y) * math.log(1.0 - p))
            row.append((r[j] * y + q[j] * (1.0 - y)) * bce)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def _one_hot_with_background(labels, num_classes):
    """Rows one-hot for labels < C, all zero for label C (background)."""
    return F.one_hot(torch.as_tensor(labels), num_classes + 1)[:, :num_classes].to(torch.float64)


def _retina_batch(num_anchors, num_classes, seed, dtype=torch.float64):
    """Anchors with one-hot targets: a long-tailed foreground and about 80% background rows."""
    g = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(num_anchors, num_classes, generator=g, dtype=torch.float64) - 3.0).to(dtype)
    probabilities = torch.tensor([0.5 ** (k + 1) for k in range(num_classes)])
    labels = torch.multinomial(probabilities / probabilities.sum(), num_anchors, replacement=True, generator=g)
    background = torch.rand(num_anchors, generator=g) < 0.8
    labels[background] = num_classes
    return logits, _one_hot_with_background(labels, num_classes).to(dtype), labels


# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------


def test_weights_hand_worked():
    # class 0: g = 0.8 / 1 = mu            -> q = 0.5, r = 1 + 4 * 0.5 = 3
    # class 1: g = 0 (no positives yet)    -> q = 1 / (1 + e^9.6) = 6.772903... e-05, r = 1 + 4 (1 - q)
    # class 2: g = 3 / 0 = inf             -> q = 1, r = 1
    # class 3: nothing collected (0 / 0)   -> q = 1, r = 1 (the reference's first iteration)
    # class 4: g = 2.4 / 2 = 1.2           -> q = 1 / (1 + e^(-4.8)), r = 1 + 4 (1 - q)
    pos = torch.tensor([0.8, 0.0, 3.0, 0.0, 2.4], dtype=torch.float64)
    neg = torch.tensor([1.0, 2.0, 0.0, 0.0, 2.0], dtype=torch.float64)
    r, q = eqlv2_weights(pos, neg)
    q1 = 1.0 / (1.0 + math.exp(9.6))
    q4 = 1.0 / (1.0 + math.exp(-4.8))
    assert q1 == pytest.approx(6.7729e-05, rel=1e-4)
    expected_q = torch.tensor([0.5, q1, 1.0, 1.0, q4], dtype=torch.float64)
    expected_r = torch.tensor([3.0, 1.0 + 4.0 * (1.0 - q1), 1.0, 1.0, 1.0 + 4.0 * (1.0 - q4)], dtype=torch.float64)
    torch.testing.assert_close(q, expected_q, rtol=1e-12, atol=0)
    torch.testing.assert_close(r, expected_r, rtol=1e-12, atol=0)
    assert r.dtype == q.dtype == torch.float64


@pytest.mark.parametrize("gamma", [0.0, 1.0, 12.0, 50.0])
@pytest.mark.parametrize("alpha", [0.0, 4.0])
def test_weights_at_g_equal_mu_are_half_and_one_plus_half_alpha(gamma, alpha):
    mu = 0.8
    neg = torch.tensor([1.0, 5.0, 1e-9, 1e6], dtype=torch.float64)
    r, q = eqlv2_weights(neg * mu, neg, gamma=gamma, mu=mu, alpha=alpha)
    torch.testing.assert_close(q, torch.full_like(q, 0.5))
    torch.testing.assert_close(r, torch.full_like(r, 1.0 + alpha / 2))


def test_weights_gamma_zero_is_constant_half_once_anything_is_collected():
    r, q = eqlv2_weights([0.0, 1.0, 0.0, 7.0], [0.0, 0.0, 3.0, 2.0], gamma=0.0, alpha=4.0)
    torch.testing.assert_close(q, torch.tensor([1.0, 0.5, 0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(r, torch.tensor([1.0, 3.0, 3.0, 3.0], dtype=torch.float64))


def test_weights_do_not_depend_on_the_scale_of_the_statistics():
    # The ratio is exact (no + 1e-10): statistics from normalised gradients can be tiny.
    pos = torch.tensor([1e-14, 0.0, 3e-13], dtype=torch.float64)
    neg = torch.tensor([2e-14, 1e-15, 1e-13], dtype=torch.float64)
    for scale in (1.0, 1e12, 1e-6):
        r, q = eqlv2_weights(pos * scale, neg * scale)
        expected_r, expected_q = _weights_oracle((pos * scale).tolist(), (neg * scale).tolist(), 12.0, 0.8, 4.0)
        torch.testing.assert_close(q, torch.tensor(expected_q, dtype=torch.float64), rtol=1e-12, atol=0)
        torch.testing.assert_close(r, torch.tensor(expected_r, dtype=torch.float64), rtol=1e-12, atol=0)


def test_weights_stay_finite_when_the_ratio_overflows():
    # a denormal negative statistic makes pos / neg overflow to inf; gamma = 0 must not give 0 * inf = NaN
    r, q = eqlv2_weights([1.0, 0.0], [2.2250738585e-313, 0.0], gamma=0.0, mu=0.0, alpha=0.0)
    assert q.tolist() == [0.5, 1.0] and r.tolist() == [1.0, 1.0]
    r, q = eqlv2_weights([1.0], [2.2250738585e-313], gamma=12.0, mu=0.8, alpha=4.0)
    assert q.tolist() == [1.0] and r.tolist() == [1.0]


@example(pos=[0.0, 0.0, 0.0, 1.0], neg=[0.0, 0.0, 0.0, 2.225073858507e-311], gamma=0.0, mu=0.0, alpha=0.0)
@example(pos=[0.0, 0.0, 4.0, 0.0], neg=[0.0, 0.0, 2**-1023, 0.0], gamma=2**-1023, mu=0.0, alpha=1.0)
@settings(max_examples=60, deadline=None)
@given(
    pos=st.lists(st.floats(0, 1e6), min_size=4, max_size=4),
    neg=st.lists(st.floats(0, 1e6), min_size=4, max_size=4),
    gamma=st.floats(0, 50),
    mu=st.floats(0, 5),
    alpha=st.floats(0, 10),
)
def test_weights_properties(pos, neg, gamma, mu, alpha):
    r, q = eqlv2_weights(pos, neg, gamma=gamma, mu=mu, alpha=alpha)
    assert ((q >= 0) & (q <= 1)).all() and torch.isfinite(r).all()
    torch.testing.assert_close(r, 1.0 + alpha * (1.0 - q))
    expected_r, expected_q = _weights_oracle(pos, neg, gamma, mu, alpha)
    torch.testing.assert_close(q, torch.tensor(expected_q, dtype=torch.float64), rtol=1e-9, atol=1e-300)


# --------------------------------------------------------------------------------------------
# eqlv2_loss
# --------------------------------------------------------------------------------------------


def test_loss_hand_worked():
    # Two classes: class 0 with g = mu (q = 0.5, r = 3), class 1 with nothing collected (q = r = 1).
    # Logits 0 -> BCE = ln 2 for either target; logit ln 3 with target 0 -> BCE = -ln(1 - 0.75) = ln 4.
    # Row 0, targets [1, 0], logits [0, ln 3]:  3 ln 2 + 1 * ln 4 = 5 ln 2
    # Row 1, background, logits [0, 0]:        0.5 ln 2 + 1 * ln 2 = 1.5 ln 2
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    pos, neg = torch.tensor([0.8, 0.0], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    ln2 = math.log(2.0)
    expected = torch.tensor([[3 * ln2, 2 * ln2], [0.5 * ln2, ln2]], dtype=torch.float64)
    torch.testing.assert_close(eqlv2_loss(logits, targets, pos, neg, reduction="none"), expected)
    assert eqlv2_loss(logits, targets, pos, neg, reduction="sum").item() == pytest.approx(6.5 * ln2, rel=1e-12)
    assert eqlv2_loss(logits, targets, pos, neg).item() == pytest.approx(6.5 * ln2 / 4, rel=1e-12)
    # The same with class-index targets, 2 = background.
    torch.testing.assert_close(eqlv2_loss(logits, torch.tensor([0, 2]), pos, neg, reduction="none"), expected)


@pytest.mark.parametrize("gamma,mu,alpha", [(12.0, 0.8, 4.0), (0.0, 0.8, 4.0), (3.0, 0.2, 1.0), (12.0, 0.8, 0.0)])
def test_loss_matches_python_loop(gamma, mu, alpha):
    logits, targets, _ = _retina_batch(30, 5, seed=1)
    pos = [0.0, 0.3, 2.0, 0.0, 5.0]
    neg = [0.0, 1.0, 1.5, 4.0, 0.0]
    expected = _loss_oracle(logits, targets, pos, neg, gamma, mu, alpha)
    kwargs = dict(gamma=gamma, mu=mu, alpha=alpha)
    torch.testing.assert_close(eqlv2_loss(logits, targets, pos, neg, reduction="none", **kwargs), expected)
    torch.testing.assert_close(eqlv2_loss(logits, targets, pos, neg, reduction="sum", **kwargs), expected.sum())
    torch.testing.assert_close(eqlv2_loss(logits, targets, pos, neg, reduction="mean", **kwargs), expected.mean())


def test_index_targets_with_background_equal_one_hot_targets():
    logits, targets, labels = _retina_batch(40, 6, seed=2)
    pos, neg = torch.rand(6, dtype=torch.float64), torch.rand(6, dtype=torch.float64)
    torch.testing.assert_close(
        eqlv2_loss(logits, labels, pos, neg, reduction="none"),
        eqlv2_loss(logits, targets, pos, neg, reduction="none"),
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(
    "pos,neg",
    [([0.0] * 4, [0.0] * 4), ([1.0, 2.0, 0.5, 9.0], [0.0] * 4)],
    ids=["nothing-collected", "no-negative-gradient"],
)
def test_uniform_weights_give_bce_with_logits(reduction, pos, neg):
    # Statistics giving q = r = 1 for every class: the loss is plain BCE, gradient included.
    logits, targets, _ = _retina_batch(25, 4, seed=3)
    ours_in, ref_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = eqlv2_loss(ours_in, targets, pos, neg, reduction=reduction)
    ref = F.binary_cross_entropy_with_logits(ref_in, targets, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    upstream = torch.rand_like(ours)
    ours.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-12, atol=1e-12)


def test_gradient_is_the_weighted_bce_gradient():
    # The weights are constants: dL/dz = w * (sigmoid(z) - y) for reduction "sum".
    logits, targets, _ = _retina_batch(20, 4, seed=4)
    logits.requires_grad_()
    pos, neg = [0.1, 0.0, 2.0, 0.7], [1.0, 3.0, 1.0, 0.0]
    eqlv2_loss(logits, targets, pos, neg, reduction="sum").backward()
    r, q = _weights_oracle(pos, neg, 12.0, 0.8, 4.0)
    weight = targets * torch.tensor(r, dtype=torch.float64) + (1 - targets) * torch.tensor(q, dtype=torch.float64)
    torch.testing.assert_close(logits.grad, weight * (torch.sigmoid(logits.detach()) - targets))
    assert torch.autograd.gradcheck(
        lambda x: eqlv2_loss(x, targets, pos, neg, reduction="none"), (logits.detach().clone().requires_grad_(),)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_upcast_and_finite(dtype):
    logits, targets, _ = _retina_batch(30, 5, seed=5, dtype=dtype)
    logits = (logits * 8).requires_grad_()  # up to |z| ~ 40: saturated sigmoids
    pos, neg = [0.0, 0.3, 2.0, 0.0, 5.0], [0.0, 1.0, 1.5, 4.0, 0.0]
    loss = eqlv2_loss(logits, targets, pos, neg)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    expected = eqlv2_loss(logits.detach().double(), targets.double(), pos, neg)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_extreme_logits_finite():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 50.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    loss = eqlv2_loss(logits, targets, [1.0, 0.0, 2.0], [2.0, 1.0, 1.0], reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


_L = torch.zeros(2, 3)
_T = torch.zeros(2, 3)
_S = torch.zeros(3)


@pytest.mark.parametrize(
    "logits,targets,kwargs,error,match",
    [
        (torch.tensor([[0.0, float("nan"), 0.0]]), torch.zeros(1, 3), {}, ValueError, "logits contains a non-finite"),
        (torch.tensor([[0.0, float("inf"), 0.0]]), torch.zeros(1, 3), {}, ValueError, "logits contains a non-finite"),
        (torch.zeros(3), torch.zeros(3), {}, ValueError, r"logits must have shape \(N, C\)"),
        (torch.zeros(0, 3), torch.zeros(0, 3), {}, ValueError, "logits is empty"),
        (_L.long(), _T, {}, TypeError, "logits must be a floating-point"),
        (_L, torch.zeros(2, 4), {}, ValueError, r"targets must have the logits' shape \(2, 3\)"),
        (_L, torch.full((2, 3), 0.5), {}, ValueError, r"targets must hold 0/1 labels \(no soft labels\), got 0.5"),
        (_L, torch.full((2, 3), 2.0), {}, ValueError, r"targets must lie in \[0, 1\]"),
        (_L, torch.full((2, 3), float("nan")), {}, ValueError, r"targets must lie in \[0, 1\]"),
        (_L, torch.zeros(2, 3, dtype=torch.long), {}, TypeError, r"targets must be \(N, C\) floating-point"),
        (_L, torch.tensor([True, False]), {}, TypeError, r"targets must be \(N, C\) floating-point"),
        (_L, [[0.0] * 3] * 2, {}, TypeError, "targets must be a torch.Tensor"),
        (_L, torch.tensor([0, 1, 2]), {}, ValueError, r"targets must have shape \(N,\) = \(2,\)"),
        (_L, torch.tensor([0, 4]), {}, ValueError, r"targets\[1\] = 4 is outside \[0, 3\] .*3 = background"),
        (_L, torch.tensor([-1, 0]), {}, ValueError, r"targets\[0\] = -1 is outside \[0, 3\]"),
        (_L, _T, {"pos_grad": torch.tensor([0.0, -1.0, 0.0])}, ValueError, r"pos_grad\[1\] = -1.0 is negative"),
        (_L, _T, {"neg_grad": torch.tensor([0.0, float("nan"), 0.0])}, ValueError, r"neg_grad\[1\] = nan is not"),
        (_L, _T, {"pos_grad": torch.zeros(4)}, ValueError, r"pos_grad must have one entry per class \(3\)"),
        (_L, _T, {"neg_grad": torch.zeros(3, 1)}, ValueError, "neg_grad must be a non-empty 1-D"),
        (_L, _T, {"pos_grad": "abc"}, TypeError, "pos_grad must be a sequence of numbers"),
        (_L, _T, {"gamma": -1.0}, ValueError, "gamma must be >= 0 and finite, got -1.0"),
        (_L, _T, {"mu": float("nan")}, ValueError, "mu must be >= 0 and finite, got nan"),
        (_L, _T, {"alpha": float("inf")}, ValueError, "alpha must be >= 0 and finite, got inf"),
        (_L, _T, {"reduction": "batchmean"}, ValueError, "reduction must be one of"),
    ],
)
def test_loss_bad_input(logits, targets, kwargs, error, match):
    arguments = {"pos_grad": _S, "neg_grad": _S, **kwargs}
    with pytest.raises(error, match=match):
        eqlv2_loss(logits, targets, **arguments)


def test_weights_bad_input():
    with pytest.raises(ValueError, match="pos_grad and neg_grad must have the same shape"):
        eqlv2_weights([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"pos_grad\[0\] = -1.0 is negative"):
        eqlv2_weights([-1.0], [1.0])
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        eqlv2_weights([1.0], [1.0], gamma=-2.0)


# --------------------------------------------------------------------------------------------
# EQLv2Loss: statistics from the gradient
# --------------------------------------------------------------------------------------------


def _statistics_oracle(logits, targets, pos, neg, scale, reduction, **hyper):
    """Statistics after one backward of ``scale * loss``, from torch.autograd.grad done separately."""
    x = logits.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(scale * eqlv2_loss(x, targets, pos, neg, reduction=reduction, **hyper), x)
    magnitude = grad.abs().double()
    return pos + (magnitude * targets).sum(0), neg + (magnitude * (1 - targets)).sum(0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_module_statistics_equal_autograd_gradient_over_training_steps(device, reduction):
    # RetinaNet use: (anchors, C) logits, one-hot targets with background rows, the loss summed
    # and divided by the number of foreground anchors by the caller.
    num_classes = 6
    module = EQLv2Loss(num_classes, reduction=reduction).to(device)
    pos = torch.zeros(num_classes, dtype=torch.float64)
    neg = torch.zeros(num_classes, dtype=torch.float64)
    for step in range(4):
        logits, targets, _ = _retina_batch(200, num_classes, seed=10 + step)
        scale = 1.0 / max(1.0, float(targets.sum()))
        # The loss the module computes uses the statistics collected so far.
        x = logits.to(device).requires_grad_()
        loss = module(x, targets.to(device))
        torch.testing.assert_close(loss.cpu(), eqlv2_loss(logits, targets, pos, neg, reduction=reduction))
        (scale * loss).backward()
        pos, neg = _statistics_oracle(logits, targets, pos, neg, scale, reduction)
        torch.testing.assert_close(module.pos_grad.cpu(), pos, rtol=1e-10, atol=1e-300)
        torch.testing.assert_close(module.neg_grad.cpu(), neg, rtol=1e-10, atol=1e-300)
        assert module.pos_grad.dtype == module.neg_grad.dtype == torch.float64
    # The rare classes, with few positives, end with q < 1 (negatives down-weighted) and r > 1.
    r, q = eqlv2_weights(module.pos_grad.cpu(), module.neg_grad.cpu())
    assert (q[-2:] < 0.5).all() and (r[-2:] > 2).all()


def test_module_statistics_with_reference_normalisation_equal_closed_form():
    # reduction "sum" back-propagated unscaled: the statistics are the reference code's
    # sum_i |sigmoid(z) - y| * w, split by the sign of the target.
    logits, targets, _ = _retina_batch(50, 4, seed=20)
    module = EQLv2Loss(4, reduction="sum")
    module.pos_grad.copy_(torch.tensor([1.0, 0.2, 0.0, 3.0], dtype=torch.float64))
    module.neg_grad.copy_(torch.tensor([2.0, 4.0, 1.0, 0.0], dtype=torch.float64))
    r, q = eqlv2_weights(module.pos_grad, module.neg_grad)
    weight = targets * r + (1 - targets) * q
    closed_form = (torch.sigmoid(logits) - targets).abs() * weight
    expected_pos = module.pos_grad + (closed_form * targets).sum(0)
    expected_neg = module.neg_grad + (closed_form * (1 - targets)).sum(0)
    module(logits.requires_grad_(), targets).backward()
    torch.testing.assert_close(module.pos_grad, expected_pos)
    torch.testing.assert_close(module.neg_grad, expected_neg)


def test_module_index_targets_collect_like_one_hot_targets():
    logits, targets, labels = _retina_batch(60, 5, seed=21)
    dense, index = EQLv2Loss(5), EQLv2Loss(5)
    dense(logits.clone().requires_grad_(), targets).backward()
    index(logits.clone().requires_grad_(), labels).backward()
    torch.testing.assert_close(index.pos_grad, dense.pos_grad)
    torch.testing.assert_close(index.neg_grad, dense.neg_grad)


def test_hook_sees_only_this_loss_gradient():
    logits, targets, _ = _retina_batch(40, 4, seed=22)
    alone, shared = EQLv2Loss(4), EQLv2Loss(4)
    alone(logits.clone().requires_grad_(), targets).backward()
    x = logits.clone().requires_grad_()
    (shared(x, targets) + 100.0 * x.square().sum()).backward()  # the logits feed another loss too
    torch.testing.assert_close(shared.pos_grad, alone.pos_grad)
    torch.testing.assert_close(shared.neg_grad, alone.neg_grad)


def test_statistics_frozen_outside_training_backward():
    logits, targets, _ = _retina_batch(30, 4, seed=23)
    module = EQLv2Loss(4)
    module(logits, targets)  # logits need no gradient
    with torch.no_grad():
        module(logits.clone().requires_grad_(), targets)
    module(logits.clone().requires_grad_(), targets)  # forward only: nothing reached the logits
    assert (module.pos_grad == 0).all() and (module.neg_grad == 0).all()
    module.eval()
    module(logits.clone().requires_grad_(), targets).backward()
    assert (module.pos_grad == 0).all() and (module.neg_grad == 0).all()
    frozen = EQLv2Loss(4, auto_update=False)
    frozen(logits.clone().requires_grad_(), targets).backward()
    assert (frozen.pos_grad == 0).all() and (frozen.neg_grad == 0).all()
    module.train()
    module(logits.clone().requires_grad_(), targets).backward()
    assert module.pos_grad.sum() > 0 and (module.neg_grad > 0).all()


def test_non_finite_gradient_leaves_statistics_unchanged():
    # An overflowed AMP step: GradScaler skips it, and so do the statistics.
    logits, targets, _ = _retina_batch(30, 4, seed=24)
    module = EQLv2Loss(4)
    module(logits.clone().requires_grad_(), targets).backward()
    before = module.pos_grad.clone(), module.neg_grad.clone()
    module(logits.clone().requires_grad_(), targets).backward(torch.tensor(float("inf"), dtype=torch.float64))
    torch.testing.assert_close(module.pos_grad, before[0])
    torch.testing.assert_close(module.neg_grad, before[1])


def test_statistics_summed_over_processes(tmp_path):
    # torch.distributed initialised (one gloo process): the hook's all_reduce runs and, with a
    # single process, leaves the statistics as they are.
    from datetime import timedelta

    import torch.distributed as dist

    logits, targets, _ = _retina_batch(30, 4, seed=25)
    local = EQLv2Loss(4)
    local(logits.clone().requires_grad_(), targets).backward()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1, timeout=timedelta(seconds=60)
    )
    try:
        synced = EQLv2Loss(4)
        synced(logits.clone().requires_grad_(), targets).backward()
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(synced.pos_grad, local.pos_grad)
    torch.testing.assert_close(synced.neg_grad, local.neg_grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_module_half_precision_finite(device, dtype):
    logits, targets, _ = _retina_batch(64, 5, seed=26, dtype=dtype)
    module = EQLv2Loss(5, reduction="sum").to(device)
    for _ in range(3):
        x = (8 * logits).to(device).requires_grad_()
        loss = module(x, targets.to(device))
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert torch.isfinite(x.grad).all()
    assert torch.isfinite(module.pos_grad).all() and (module.neg_grad > 0).all()


def test_state_dict_round_trip():
    logits, targets, _ = _retina_batch(50, 5, seed=27)
    module = EQLv2Loss(5, gamma=10.0)
    for _ in range(2):
        module(logits.clone().requires_grad_(), targets).backward()
    state = module.state_dict()
    assert set(state) == {"pos_grad", "neg_grad"} and state["pos_grad"].dtype == torch.float64
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    for rebuilt in (EQLv2Loss(5, gamma=10.0), EQLv2Loss(gamma=10.0)):  # sized, and sized by the state
        rebuilt.load_state_dict(loaded)
        assert rebuilt.num_classes == 5
        torch.testing.assert_close(rebuilt.pos_grad, module.pos_grad, rtol=0, atol=0)
        torch.testing.assert_close(rebuilt(logits, targets), module(logits, targets), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="size mismatch"):
        EQLv2Loss(4).load_state_dict(loaded)


def test_module_without_num_classes_is_sized_by_the_first_batch():
    logits, targets, _ = _retina_batch(20, 7, seed=28)
    module = build_loss("eqlv2")
    assert isinstance(module, EQLv2Loss) and module.num_classes is None
    module(logits.requires_grad_(), targets).backward()
    assert module.num_classes == 7 and module.pos_grad.shape == (7,)
    with pytest.raises(ValueError, match=r"pos_grad must have one entry per class \(8\)"):
        module(torch.zeros(2, 8), torch.zeros(2, 8))


def test_module_equals_function_and_repr():
    logits, targets, _ = _retina_batch(20, 3, seed=29)
    module = EQLv2Loss(3, gamma=5.0, mu=0.5, alpha=2.0, reduction="sum")
    module.pos_grad.copy_(torch.tensor([0.2, 1.0, 0.0], dtype=torch.float64))
    module.neg_grad.copy_(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(
        module(logits, targets),
        eqlv2_loss(logits, targets, module.pos_grad, module.neg_grad, 5.0, 0.5, 2.0, "sum"),
    )
    assert "num_classes=3" in repr(module) and "gamma=5.0" in repr(module)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"num_classes": 0}, ValueError, "num_classes must be positive, got 0"),
        ({"num_classes": 2.5}, TypeError, "num_classes must be an int or None, got float"),
        ({"num_classes": True}, TypeError, "num_classes must be an int or None, got bool"),
        ({"gamma": -1.0}, ValueError, "gamma must be >= 0"),
        ({"alpha": float("nan")}, ValueError, "alpha must be >= 0"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
    ],
)
def test_module_bad_hyper_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        EQLv2Loss(**kwargs)


def test_module_bad_input():
    module = EQLv2Loss(3)
    with pytest.raises(ValueError, match=r"pos_grad must have one entry per class \(4\)"):
        module(torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="logits contains a non-finite value nan"):
        module(torch.tensor([[0.0, float("nan"), 0.0]]), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"targets\[0\] = 5 is outside \[0, 3\]"):
        module(torch.zeros(1, 3), torch.tensor([5]))
    assert (module.pos_grad == 0).all()
