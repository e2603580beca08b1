"""Oracle tests for the seesaw losses (Wang et al. 2021): ``seesaw_loss``, ``sigmoid_seesaw_loss``
and the modules ``SeesawLoss`` / ``SigmoidSeesawLoss`` with their cumulative class counts.

The references are a hand-computed 3-class example, per-sample and per-element loops over the
formulas in plain Python (float64), ``F.cross_entropy`` and ``F.binary_cross_entropy_with_logits``
in the limits where every seesaw factor is 1.
"""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from equipoise.core.losses import SeesawLoss, SigmoidSeesawLoss, build_loss, seesaw_loss, sigmoid_seesaw_loss
from equipoise.core.testing import random_logits, random_targets

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")),
]

COUNTS = [1000.0, 0.0, 300.0, 40.0, 5.0]


# --------------------------------------------------------------------------------------------
# Independent oracles (plain Python, float64)
# --------------------------------------------------------------------------------------------


def _mitigation(n_i, n_j, p):
    n_i, n_j = max(n_i, 1.0), max(n_j, 1.0)  # the reference clamps counts at 1
    return (n_j / n_i) ** p if n_i > n_j else 1.0


def _compensation(s_i, s_j, q, eps):
    ratio = s_j / max(s_i, eps)
    return ratio**q if ratio > 1.0 else 1.0


def _seesaw_oracle(logits, target, counts, p, q, eps, ignore_index=-100):
    """Per-sample -log(e^z_i / (sum_{j != i} S_ij e^z_j + e^z_i)); 0 for ignored samples."""
    out = []
    for row, i in zip(logits.tolist(), target.tolist()):
        if i == ignore_index:
            out.append(0.0)
            continue
        top = max(row)
        exps = [math.exp(z - top) for z in row]
        sigma = [e / sum(exps) for e in exps]
        denominator = exps[i]
        for j, e in enumerate(exps):
            if j != i:
                denominator += _mitigation(counts[i], counts[j], p) * _compensation(sigma[i], sigma[j], q, eps) * e
        out.append(-math.log(exps[i] / denominator))
    return torch.tensor(out, dtype=torch.float64)


def _sigmoid_seesaw_oracle(logits, targets, counts, p, q, eps):
    """Elementwise BCE, the negatives of foreground rows on z_j + log S_ij (S: max over the positives i)."""
    rows = []
    for z_row, y_row in zip(logits.tolist(), targets.tolist()):
        s = [1.0 / (1.0 + math.exp(-z)) for z in z_row]
        positives = [i for i, y in enumerate(y_row) if y == 1.0]
        row = []
        for j, y in enumerate(y_row):
            if y == 1.0:
                row.append(-math.log(s[j]))
                continue
            weight = 1.0
            if positives:
                weight = max(_mitigation(counts[i], counts[j], p) for i in positives) * max(
                    _compensation(s[i], s[j], q, eps) for i in positives
                )
            row.append(math.log1p(math.exp(z_row[j] + math.log(weight))))  # -log(1 - sigmoid(z + log S))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def _detection_targets(num_rows, num_classes, seed, background=0.5, dtype=torch.float64):
    """One-hot rows (long-tailed classes) and all-zero background rows."""
    g = torch.Generator().manual_seed(seed)
    probabilities = torch.tensor([0.5 ** (k + 1) for k in range(num_classes)])
    labels = torch.multinomial(probabilities, num_rows, replacement=True, generator=g)
    labels[torch.rand(num_rows, generator=g) < background] = num_classes
    return F.one_hot(labels, num_classes + 1)[:, :num_classes].to(dtype)


# --------------------------------------------------------------------------------------------
# seesaw_loss (softmax)
# --------------------------------------------------------------------------------------------


def test_seesaw_hand_worked_three_classes():
    # z = [0, ln 2, 0] -> sigma = [0.25, 0.5, 0.25]; N = [100, 10, 1000]; p = q = 1.
    # target 0: M = [., 10/100, 1], C = [., 0.5/0.25 = 2, 1]        -> -log(1 / (0.2 * 2 + 1 + 1)) = ln 2.4
    # target 1: N_1 = 10 is the rarest -> M = 1; sigma_1 is the largest -> C = 1  -> CE = ln 2
    # target 2: M = [100/1000, 10/1000, .], C = [1, 0.5/0.25 = 2, .] -> -log(1 / (0.1 + 0.02 * 2 + 1)) = ln 1.14
    logits = torch.tensor([[0.0, math.log(2.0), 0.0]] * 3, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    counts = [100.0, 10.0, 1000.0]
    expected = torch.tensor([math.log(2.4), math.log(2.0), math.log(1.14)], dtype=torch.float64)
    got = seesaw_loss(logits, target, counts, p=1.0, q=1.0, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    assert seesaw_loss(logits, target, counts, p=1.0, q=1.0).item() == pytest.approx(
        math.log(2.4 * 2.0 * 1.14) / 3, rel=1e-12
    )
    # Paper defaults p = 0.8, q = 2: target 0 -> S_01 = 0.1^0.8 * 2^2, S_02 = 1.
    s01 = 0.1**0.8 * 4.0
    got = seesaw_loss(logits[:1], target[:1], counts, reduction="none")
    assert got.item() == pytest.approx(math.log((0.25 * s01 * 2 + 0.25 + 0.25) / 0.25), rel=1e-12)


@pytest.mark.parametrize("p,q", [(0.8, 2.0), (0.0, 2.0), (0.8, 0.0), (1.5, 0.5), (0.0, 0.0)])
@pytest.mark.parametrize("eps", [1e-2, 0.3])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_seesaw_matches_loop(p, q, eps, ignore_index):
    logits = random_logits(24, 5, seed=1, scale=3.0)
    target = random_targets(5, 24, seed=2)
    target[[1, 7]] = ignore_index
    expected = _seesaw_oracle(logits, target, COUNTS, p, q, eps, ignore_index)
    kwargs = dict(p=p, q=q, eps=eps, ignore_index=ignore_index)
    kept = int((target != ignore_index).sum())
    torch.testing.assert_close(seesaw_loss(logits, target, COUNTS, reduction="none", **kwargs), expected)
    torch.testing.assert_close(seesaw_loss(logits, target, COUNTS, reduction="sum", **kwargs), expected.sum())
    torch.testing.assert_close(seesaw_loss(logits, target, COUNTS, reduction="mean", **kwargs), expected.sum() / kept)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("with_ignored", [False, True])
def test_seesaw_equal_counts_without_compensation_is_cross_entropy(reduction, with_ignored):
    logits = random_logits(20, 6, seed=3, scale=4.0).requires_grad_()
    target = random_targets(6, 20, seed=4)
    if with_ignored:
        target[[0, 5]] = -100
    ours = seesaw_loss(logits, target, [50.0] * 6, p=0.8, q=0.0, reduction=reduction)
    ref = F.cross_entropy(logits, target, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(ours.sum(), logits)
    (ref_grad,) = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_seesaw_mitigation_only_reduces_penalties_on_rarer_classes():
    counts = [1000.0, 300.0, 40.0, 5.0]  # class 0 the most frequent, class 3 the rarest
    logits = random_logits(40, 4, seed=5, scale=2.0)
    target = random_targets(4, 40, seed=6)
    ce = F.cross_entropy(logits, target, reduction="none")
    seesaw = seesaw_loss(logits, target, counts, q=0.0, reduction="none")
    assert (seesaw <= ce + 1e-12).all()  # penalties only go down
    rarest = target == 3
    torch.testing.assert_close(seesaw[rarest], ce[rarest])  # nothing is rarer than class 3
    assert (seesaw[~rarest] < ce[~rarest]).all()
    # The negative gradient on class j relative to CE's is M_ij times a per-sample constant:
    # samples of class i push the rarer classes less, the more frequent ones by the same factor.
    x = logits.clone().requires_grad_()
    (grad,) = torch.autograd.grad(seesaw_loss(x, target, counts, q=0.0, reduction="sum"), x)
    sigma = torch.softmax(logits, dim=1)
    for row in range(40):
        i = int(target[row])
        relative = {j: float(grad[row, j] / sigma[row, j]) for j in range(4) if j != i}
        for j, value in relative.items():
            for k, other in relative.items():
                assert value / other == pytest.approx(
                    _mitigation(counts[i], counts[j], 0.8) / _mitigation(counts[i], counts[k], 0.8), rel=1e-9
                )
        # From a sample of the most frequent class, the rarest class is pushed less than by CE.
        if i == 0:
            assert grad[row, 3] < sigma[row, 3]


def test_seesaw_compensation_only_raises_penalties_of_misclassified_samples():
    logits = random_logits(40, 4, seed=7, scale=2.0)
    target = random_targets(4, 40, seed=8)
    ce = F.cross_entropy(logits, target, reduction="none")
    seesaw = seesaw_loss(logits, target, [5.0, 40.0, 300.0, 1000.0], p=0.0, reduction="none")
    assert (seesaw >= ce - 1e-12).all()
    correct = logits.argmax(1) == target  # sigma_i is the largest: every C_ij is 1
    torch.testing.assert_close(seesaw[correct], ce[correct])
    assert (seesaw[~correct] > ce[~correct]).all()


def test_seesaw_gradient_treats_the_factors_as_constants():
    # The compensation is computed from detached probabilities (as in the reference): the
    # gradient is softmax(z + log S) - onehot with S held fixed.
    logits = random_logits(15, 5, seed=9, scale=3.0)
    target = random_targets(5, 15, seed=10)
    x = logits.clone().requires_grad_()
    seesaw_loss(x, target, COUNTS, reduction="sum").backward()
    sigma = torch.softmax(logits, 1).tolist()
    log_s = torch.zeros_like(logits)
    for row, i in enumerate(target.tolist()):
        for j in range(5):
            if j != i:
                factor = _mitigation(COUNTS[i], COUNTS[j], 0.8) * _compensation(sigma[row][i], sigma[row][j], 2.0, 1e-2)
                log_s[row, j] = math.log(factor)
    expected = torch.softmax(logits + log_s, 1) - F.one_hot(target, 5)
    torch.testing.assert_close(x.grad, expected)


def test_seesaw_all_ignored_is_zero():
    logits = random_logits(4, 3, seed=11).requires_grad_()
    loss = seesaw_loss(logits, torch.full((4,), -100), [1.0, 2.0, 3.0])
    assert loss.item() == 0.0
    loss.backward()
    assert (logits.grad == 0).all()


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(-30, 30, allow_nan=False), min_size=12, max_size=12),
    labels=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    counts=st.lists(st.floats(0, 1e6), min_size=4, max_size=4),
    p=st.floats(0, 3),
    q=st.floats(0, 4),
)
def test_seesaw_non_negative_and_matches_loop(values, labels, counts, p, q):
    logits = torch.tensor(values, dtype=torch.float64).reshape(3, 4)
    target = torch.tensor(labels)
    loss = seesaw_loss(logits, target, counts, p=p, q=q, reduction="none")
    assert (loss >= 0).all() and torch.isfinite(loss).all()
    torch.testing.assert_close(loss, _seesaw_oracle(logits, target, counts, p, q, 1e-2), rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------
# sigmoid_seesaw_loss
# --------------------------------------------------------------------------------------------


def test_sigmoid_seesaw_hand_worked():
    # One foreground row of class 0 (N = [100, 10, 1000]), logits [0, ln 3, 0] -> s = [0.5, 0.75, 0.5].
    # p = q = 1: S_01 = (10/100) * (0.75/0.5) = 0.15, S_02 = 1 * 1 = 1.
    # The negative term of class 1 is -log(1 - sigmoid(ln 3 + ln 0.15)) = ln(1 + 3 * 0.15) = ln 1.45;
    # loss = [ln 2, ln 1.45, ln 2]; a background row keeps plain BCE.
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [0.0, math.log(3.0), 0.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    got = sigmoid_seesaw_loss(logits, targets, [100.0, 10.0, 1000.0], p=1.0, q=1.0, reduction="none")
    ln2, ln4 = math.log(2.0), math.log(4.0)
    expected = torch.tensor([[ln2, math.log(1.45), ln2], [ln2, ln4, ln2]], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("p,q", [(0.8, 2.0), (0.0, 2.0), (0.8, 0.0), (2.0, 1.0)])
@pytest.mark.parametrize("multi_label", [False, True])
def test_sigmoid_seesaw_matches_loop(p, q, multi_label):
    logits = random_logits(30, 5, seed=12, scale=3.0)
    targets = _detection_targets(30, 5, seed=13)
    if multi_label:
        targets[[0, 4, 9], 3] = 1.0
        targets[[0, 9], 4] = 1.0
    expected = _sigmoid_seesaw_oracle(logits, targets, COUNTS, p, q, 1e-2)
    kwargs = dict(p=p, q=q)
    torch.testing.assert_close(sigmoid_seesaw_loss(logits, targets, COUNTS, reduction="none", **kwargs), expected)
    torch.testing.assert_close(sigmoid_seesaw_loss(logits, targets, COUNTS, reduction="sum", **kwargs), expected.sum())
    torch.testing.assert_close(
        sigmoid_seesaw_loss(logits, targets, COUNTS, reduction="mean", **kwargs), expected.mean()
    )


@pytest.mark.parametrize(
    "counts,q", [([7.0] * 5, 0.0), (COUNTS, 0.0)], ids=["equal-counts-no-compensation", "background-only"]
)
def test_sigmoid_seesaw_with_unit_factors_is_bce_sum(counts, q):
    logits = random_logits(30, 5, seed=14, scale=3.0).requires_grad_()
    targets = _detection_targets(30, 5, seed=15, background=1.0 if counts is COUNTS else 0.5)
    ours = sigmoid_seesaw_loss(logits, targets, counts, q=q, reduction="sum")
    ref = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(ours, logits)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


def test_sigmoid_seesaw_mitigation_direction_and_constant_factors():
    counts = [1000.0, 300.0, 40.0, 5.0]
    logits = random_logits(40, 4, seed=16, scale=2.0).requires_grad_()
    targets = _detection_targets(40, 4, seed=17)
    (grad,) = torch.autograd.grad(sigmoid_seesaw_loss(logits, targets, counts, q=0.0, reduction="sum"), logits)
    (bce_grad,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(logits, targets, reduction="sum"), logits)
    # The negative gradient on class j is sigmoid(z_j + log M_ij): below BCE's sigmoid(z_j) on rarer
    # classes (about M_ij times it while small, never above 1), equal on more frequent ones, on
    # background rows and on the positives.
    for row in range(40):
        positives = targets[row].nonzero().flatten().tolist()
        for j in range(4):
            factor = 1.0 if (not positives or j in positives) else _mitigation(counts[positives[0]], counts[j], 0.8)
            if factor == 1.0:
                assert float(grad[row, j]) == pytest.approx(float(bce_grad[row, j]), rel=1e-10, abs=1e-15)
            else:
                expected = torch.sigmoid(logits[row, j].detach() + math.log(factor))
                assert float(grad[row, j]) == pytest.approx(float(expected), rel=1e-10)
                assert float(grad[row, j]) < float(bce_grad[row, j])


def test_sigmoid_seesaw_negative_gradients_stay_bounded():
    # A foreground anchor of class 0 whose own probability is tiny and which looks like class 1:
    # the compensation reaches (1 / eps) ** q = 1e4, yet the gradient on z_1 stays below 1.
    logits = torch.tensor([[-12.0, 8.0, -3.0]], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    (grad,) = torch.autograd.grad(sigmoid_seesaw_loss(logits, targets, [5.0, 5.0, 5.0], reduction="sum"), logits)
    assert 0.99 < float(grad[0, 1]) < 1.0 and torch.isfinite(grad).all()


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

_X = torch.zeros(2, 3)
_Y = torch.tensor([0, 1])
_C = [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "logits,target,counts,kwargs,error,match",
    [
        (_X, torch.tensor([0, 3]), _C, {}, ValueError, r"target\[1\] = 3 is outside \[0, 3\)"),
        (_X, torch.tensor([-1, 0]), _C, {}, ValueError, r"target\[0\] = -1 is outside \[0, 3\)"),
        (_X, torch.tensor([0.0, 1.0]), _C, {}, TypeError, "target must hold integer class indices"),
        (_X, torch.tensor([0, 1, 2]), _C, {}, ValueError, r"target must have shape \(N,\) = \(2,\)"),
        (
            torch.tensor([[0.0, float("nan"), 0.0]] * 2),
            _Y,
            _C,
            {},
            ValueError,
            "logits contains a non-finite value nan",
        ),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), _C, {}, ValueError, "logits is empty"),
        (_X.long(), _Y, _C, {}, TypeError, "logits must be a floating-point"),
        (_X, _Y, [1.0, -2.0, 3.0], {}, ValueError, r"class_counts\[1\] = -2.0 is negative"),
        (_X, _Y, [1.0, float("nan"), 3.0], {}, ValueError, r"class_counts\[1\] = nan is not finite"),
        (_X, _Y, [1.0, 2.0], {}, ValueError, r"class_counts must have one entry per class \(3\)"),
        (_X, _Y, _C, {"p": -0.5}, ValueError, "p must be >= 0 and finite, got -0.5"),
        (_X, _Y, _C, {"q": float("nan")}, ValueError, "q must be >= 0 and finite, got nan"),
        (_X, _Y, _C, {"eps": 0.0}, ValueError, "eps must be > 0 and finite, got 0.0"),
        (_X, _Y, _C, {"reduction": "avg"}, ValueError, "reduction must be one of"),
    ],
)
def test_seesaw_bad_input(logits, target, counts, kwargs, error, match):
    with pytest.raises(error, match=match):
        seesaw_loss(logits, target, counts, **kwargs)


@pytest.mark.parametrize(
    "logits,targets,counts,kwargs,error,match",
    [
        (_X, torch.zeros(2, 4), _C, {}, ValueError, r"targets must have the logits' shape \(2, 3\)"),
        (_X, torch.zeros(2, 3, dtype=torch.long), _C, {}, TypeError, "targets must be a floating-point"),
        (_X, torch.full((2, 3), 0.3), _C, {}, ValueError, r"targets must hold 0/1 labels \(no soft labels\)"),
        (_X, torch.full((2, 3), float("nan")), _C, {}, ValueError, r"targets must lie in \[0, 1\]"),
        (
            torch.tensor([[0.0, float("inf"), 0.0]]),
            torch.zeros(1, 3),
            _C,
            {},
            ValueError,
            "logits contains a non-finite",
        ),
        (_X, torch.zeros(2, 3), [-1.0, 2.0, 3.0], {}, ValueError, r"class_counts\[0\] = -1.0 is negative"),
        (_X, torch.zeros(2, 3), [1.0, 2.0, 3.0, 4.0], {}, ValueError, r"one entry per class \(3\)"),
        (_X, torch.zeros(2, 3), _C, {"q": -1.0}, ValueError, "q must be >= 0"),
    ],
)
def test_sigmoid_seesaw_bad_input(logits, targets, counts, kwargs, error, match):
    with pytest.raises(error, match=match):
        sigmoid_seesaw_loss(logits, targets, counts, **kwargs)


# --------------------------------------------------------------------------------------------
# modules: cumulative counts
# --------------------------------------------------------------------------------------------


def test_seesaw_module_counts_online_in_training_mode_only():
    module = SeesawLoss(num_classes=5, ignore_index=-1)
    assert module.auto_update and module.class_counts is module.cum_samples
    expected = torch.zeros(5, dtype=torch.float64)
    for step in range(3):
        logits = random_logits(16, 5, seed=20 + step)
        target = random_targets(5, 16, seed=30 + step)
        target[0] = -1
        expected += torch.bincount(target[target >= 0], minlength=5).double()
        # The batch is counted before its loss, which uses the new counts (as the reference).
        loss = module(logits, target)
        torch.testing.assert_close(module.cum_samples, expected, rtol=0, atol=0)
        torch.testing.assert_close(loss, seesaw_loss(logits, target, expected, ignore_index=-1))
    assert module.cum_samples.dtype == torch.float64
    module.eval()
    module(random_logits(8, 5, seed=40), random_targets(5, 8, seed=41))
    torch.testing.assert_close(module.cum_samples, expected, rtol=0, atol=0)


def test_sigmoid_seesaw_module_counts_positive_elements():
    module = SigmoidSeesawLoss(num_classes=4, reduction="sum")
    targets = _detection_targets(50, 4, seed=42)
    logits = random_logits(50, 4, seed=43)
    loss = module(logits, targets)
    torch.testing.assert_close(module.cum_samples, targets.sum(0), rtol=0, atol=0)
    torch.testing.assert_close(loss, sigmoid_seesaw_loss(logits, targets, targets.sum(0), reduction="sum"))
    with torch.no_grad():
        module.eval()
        module(logits, targets)
    torch.testing.assert_close(module.cum_samples, targets.sum(0), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [SeesawLoss, SigmoidSeesawLoss])
def test_module_with_known_counts_keeps_them_unless_asked(cls):
    logits = random_logits(10, 5, seed=44)
    target = random_targets(5, 10, seed=45) if cls is SeesawLoss else _detection_targets(10, 5, seed=45)
    fixed = cls(class_counts=COUNTS)
    assert fixed.num_classes == 5 and not fixed.auto_update
    fixed(logits, target)
    torch.testing.assert_close(fixed.cum_samples, torch.tensor(COUNTS, dtype=torch.float64), rtol=0, atol=0)
    counting = cls(class_counts=COUNTS, auto_update=True)
    counting(logits, target)
    added = torch.bincount(target, minlength=5).double() if cls is SeesawLoss else target.sum(0)
    torch.testing.assert_close(counting.cum_samples, torch.tensor(COUNTS, dtype=torch.float64) + added)


@pytest.mark.parametrize("name,cls", [("seesaw", SeesawLoss), ("sigmoid_seesaw", SigmoidSeesawLoss)])
def test_module_state_dict_round_trip(name, cls):
    logits = random_logits(12, 5, seed=46)
    target = random_targets(5, 12, seed=47) if cls is SeesawLoss else _detection_targets(12, 5, seed=47)
    module = build_loss(name, num_classes=5)
    assert isinstance(module, cls)
    for _ in range(2):
        module(logits, target)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert set(state) == {"cum_samples"} and state["cum_samples"].dtype == torch.float64
    module.eval()
    for rebuilt in (cls(num_classes=5), cls(), cls(class_counts=[1.0] * 5)):
        rebuilt.load_state_dict(state)
        rebuilt.eval()
        assert rebuilt.num_classes == 5
        torch.testing.assert_close(rebuilt.cum_samples, module.cum_samples, rtol=0, atol=0)
        torch.testing.assert_close(rebuilt(logits, target), module(logits, target), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", [SeesawLoss, SigmoidSeesawLoss])
def test_module_half_precision_finite(device, dtype, cls):
    module = cls(num_classes=5, reduction="sum").to(device)
    logits = random_logits(64, 5, seed=48, scale=20.0, dtype=dtype).to(device).requires_grad_()
    target = random_targets(5, 64, seed=49) if cls is SeesawLoss else _detection_targets(64, 5, seed=49, dtype=dtype)
    loss = module(logits, target.to(device))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    functional = module.functional
    reference = functional(
        logits.detach().double().cpu(),
        target if cls is SeesawLoss else target.double(),
        module.cum_samples.cpu(),
        reduction="sum",
    )
    assert loss.item() == pytest.approx(reference.item(), rel=1e-4)


@pytest.mark.parametrize("cls", [SeesawLoss, SigmoidSeesawLoss])
def test_module_extreme_logits_finite(cls):
    module = cls(class_counts=COUNTS)
    sign = torch.sign(random_logits(16, 5, seed=50))
    logits = (1e4 * sign).requires_grad_()
    target = random_targets(5, 16, seed=51) if cls is SeesawLoss else _detection_targets(16, 5, seed=51)
    loss = module(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    reference = module.functional(logits.detach(), target, module.cum_samples)
    torch.testing.assert_close(loss, reference)


def test_module_without_num_classes_is_sized_by_the_first_batch():
    module = SeesawLoss()
    assert module.num_classes is None
    module(random_logits(6, 4, seed=52), torch.tensor([0, 1, 1, 3, 3, 3]))
    torch.testing.assert_close(module.cum_samples, torch.tensor([1.0, 2.0, 0.0, 3.0], dtype=torch.float64))


@pytest.mark.parametrize("cls", [SeesawLoss, SigmoidSeesawLoss])
def test_module_bad_arguments(cls):
    with pytest.raises(ValueError, match=r"class_counts\[0\] = -5.0 is negative"):
        cls(class_counts=[-5.0, 1.0])
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(3\)"):
        cls(num_classes=3, class_counts=[1.0, 2.0])
    with pytest.raises(ValueError, match="num_classes must be positive, got -2"):
        cls(num_classes=-2)
    with pytest.raises(ValueError, match="p must be >= 0"):
        cls(p=-1.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        cls(eps=0.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        cls(reduction="average")
    module = cls(num_classes=4)
    target = torch.tensor([0, 1]) if cls is SeesawLoss else torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(3\)"):
        module(torch.zeros(2, 3), target)
    with pytest.raises(ValueError, match="logits contains a non-finite value nan"):
        module(torch.full((2, 4), float("nan")), torch.tensor([0, 1]) if cls is SeesawLoss else torch.zeros(2, 4))
    assert (module.cum_samples == 0).all()  # nothing counted from refused batches


def test_seesaw_module_rejects_out_of_range_labels_before_counting():
    module = SeesawLoss(num_classes=3)
    with pytest.raises(ValueError, match=r"target\[1\] = 3 is outside \[0, 3\)"):
        module(torch.zeros(2, 3), torch.tensor([0, 3]))
    assert (module.cum_samples == 0).all()
