"""Oracle tests for weight balancing, stage 2 (Alshammari et al. 2022): MaxNorm and projected SGD.

The oracles are written independently in NumPy (float64): the relative radius and the projection
from their formulas, one and two full-batch steps worked out by hand (the class-balanced weights
from Cui et al.'s formula, the cross-entropy gradient in closed form ``(softmax - one_hot) x``,
SGD momentum and the cosine schedule), and the whole minibatch loop replayed step by step with
the same shuffling.
"""

import inspect
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from equipoise.core.calibration import (
    CALIBRATORS,
    WeightBalancing,
    fit_weight_balancing,
    max_norm_,
    max_norm_radius,
)
from equipoise.core.testing import random_logits

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")),
]
COUNTS = [600, 200, 60, 15]


def _mixture(counts, seed, dim=6):
    """Gaussian classes around fixed random means (the same means for every split)."""
    means = torch.randn(len(counts), dim, generator=torch.Generator().manual_seed(4321))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return means[labels] + torch.randn(len(labels), dim, generator=generator), labels


@pytest.fixture(scope="module")
def stage1():
    """An imbalanced, overlapping training split and an instance-balanced head fitted on it by sklearn (stage 1)."""
    features, labels = _mixture(COUNTS, seed=0)
    model = LogisticRegression(C=10.0, max_iter=2000).fit(features.numpy(), labels.numpy())
    weight = torch.tensor(model.coef_, dtype=torch.float32)
    bias = torch.tensor(model.intercept_, dtype=torch.float32)
    return features, labels, weight, bias


# --------------------------------------------------------------------------------------------
# NumPy oracles
# --------------------------------------------------------------------------------------------


def _np_radius(weight, threshold):
    norms = np.sqrt((weight**2).sum(axis=1))
    return norms.min() + threshold * (norms.max() - norms.min())


def _np_project(weight, radius):
    norms = np.sqrt((weight**2).sum(axis=1, keepdims=True))
    return np.where(norms > radius, weight * radius / norms, weight)


def _np_class_weights(counts, beta):
    weights = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    return weights * len(counts) / weights.sum()


def _np_gradients(x, y, weight, bias, class_weights):
    """Loss and gradients of mean_i w_{y_i} * CE(W x_i + b, y_i): d/dz = w_y * (softmax(z) - one_hot(y)) / N."""
    z = x @ weight.T + bias
    z = z - z.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    one_hot = np.eye(weight.shape[0])[y]
    w = class_weights[y][:, None]
    loss = float((w[:, 0] * -np.log(probs[np.arange(len(y)), y])).mean())
    dz = w * (probs - one_hot) / len(y)
    return loss, dz.T @ x, dz.sum(axis=0)


def _np_weight_balancing(x, y, weight, bias, orders, lr, weight_decay, batch_size, momentum, beta, threshold):
    """The projected SGD loop, step by step: momentum buffers, per-step cosine lr, projection after each step."""
    counts = np.bincount(y, minlength=weight.shape[0])
    class_weights = _np_class_weights(counts, beta)
    radius = _np_radius(weight, threshold)
    steps = len(orders) * math.ceil(len(y) / batch_size)
    buffers, step, losses = None, 0, []
    for order in orders:
        total = 0.0
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            loss, grad_w, grad_b = _np_gradients(x[batch], y[batch], weight, bias, class_weights)
            grad_w, grad_b = grad_w + weight_decay * weight, grad_b + weight_decay * bias
            if buffers is None:  # the first SGD step: the momentum buffer is the gradient itself
                buffers = (grad_w, grad_b)
            else:
                buffers = (momentum * buffers[0] + grad_w, momentum * buffers[1] + grad_b)
            rate = lr * (1 + math.cos(math.pi * step / steps)) / 2
            weight, bias = _np_project(weight - rate * buffers[0], radius), bias - rate * buffers[1]
            step += 1
            total += loss * len(batch)
        losses.append(total / len(y))
    return weight, bias, radius, losses


# --------------------------------------------------------------------------------------------
# MaxNorm
# --------------------------------------------------------------------------------------------


def test_radius_is_relative_to_the_row_norms_by_hand():
    weight = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])  # row norms 5, 1, 2
    assert max_norm_radius(weight, 0.0) == pytest.approx(1.0)
    assert max_norm_radius(weight, 1.0) == pytest.approx(5.0)
    assert max_norm_radius(weight, 0.25) == pytest.approx(2.0)
    assert max_norm_radius(weight, 1.5) == pytest.approx(7.0)  # above 1: no row is shrunk


def test_max_norm_projects_rows_by_hand():
    weight = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    result = max_norm_(weight, 2.0)
    assert result is weight  # in place
    # [3, 4] (norm 5) -> [1.2, 1.6]; [1, 0] and [0, 2] are inside the ball (2 is on it) and stay.
    torch.testing.assert_close(weight, torch.tensor([[1.2, 1.6], [1.0, 0.0], [0.0, 2.0]]), rtol=1e-6, atol=0)


@given(seed=st.integers(0, 10_000), threshold=st.floats(0.0, 1.2))
@settings(max_examples=40, deadline=None)
def test_max_norm_agrees_with_numpy_and_keeps_rows_in_the_ball(seed, threshold):
    weight = random_logits(7, 5, seed=seed) * torch.linspace(0.2, 3.0, 7, dtype=torch.float64)[:, None]
    expected_radius = _np_radius(weight.numpy(), threshold)
    radius = max_norm_radius(weight, threshold)
    assert radius == pytest.approx(expected_radius, rel=1e-12)
    expected = _np_project(weight.numpy(), radius)
    projected = max_norm_(weight.clone(), radius)
    np.testing.assert_allclose(projected.numpy(), expected, rtol=1e-6, atol=1e-12)
    assert float(projected.norm(dim=1).max()) <= radius * (1 + 1e-12)
    # Same direction, and a projection: applying it again changes nothing.
    np.testing.assert_allclose(max_norm_(projected.clone(), radius).numpy(), projected.numpy(), rtol=1e-6)


def test_max_norm_works_on_a_parameter_between_optimiser_steps():
    parameter = torch.nn.Parameter(torch.tensor([[6.0, 8.0]]))
    max_norm_(parameter, 5.0)
    assert parameter.requires_grad and parameter.grad_fn is None  # still a leaf: no autograd history
    torch.testing.assert_close(parameter.detach(), torch.tensor([[3.0, 4.0]]), rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------
# The fine-tuning loop
# --------------------------------------------------------------------------------------------


def test_one_full_batch_step_by_hand(stage1):
    features, labels, weight, bias = stage1
    lr, weight_decay, beta, threshold = 0.05, 0.1, 0.99, 0.3
    x, y = features.double(), labels
    new_weight, new_bias, details = fit_weight_balancing(
        x, y, weight.double(), bias.double(), epochs=1, batch_size=len(y), lr=lr,
        weight_decay=weight_decay, beta=beta, max_norm_threshold=threshold,
    )  # fmt: skip
    w0, b0 = weight.double().numpy(), bias.double().numpy()
    class_weights = _np_class_weights(COUNTS, beta)
    loss, grad_w, grad_b = _np_gradients(x.numpy(), y.numpy(), w0, b0, class_weights)
    # First SGD step: the momentum buffer is the decayed gradient itself; the cosine schedule starts at lr.
    radius = _np_radius(w0, threshold)
    expected_weight = _np_project(w0 - lr * (grad_w + weight_decay * w0), radius)
    expected_bias = b0 - lr * (grad_b + weight_decay * b0)
    np.testing.assert_allclose(new_weight.numpy(), expected_weight, rtol=1e-6, atol=1e-9)
    # The core loss rounds its class weights to float32: agreement to ~1e-8, not to float64's last bits.
    np.testing.assert_allclose(new_bias.numpy(), expected_bias, rtol=1e-7, atol=1e-10)
    assert details["max_norm_radius"] == pytest.approx(radius, rel=1e-12)
    assert details["epoch_losses"] == pytest.approx([loss], rel=1e-7)
    norms = np.sqrt(((w0 - lr * (grad_w + weight_decay * w0)) ** 2).sum(axis=1))
    assert (norms > radius).any() and (norms < radius).any()  # the projection acted on some rows, not all


def test_two_full_batch_steps_use_momentum_and_the_cosine_schedule(stage1):
    features, labels, weight, bias = stage1
    lr, weight_decay, momentum, beta, threshold = 0.2, 0.05, 0.9, 0.999, 0.5
    x, y = features.double(), labels
    new_weight, new_bias, _ = fit_weight_balancing(
        x, y, weight.double(), bias.double(), epochs=2, batch_size=len(y), lr=lr, weight_decay=weight_decay,
        momentum=momentum, beta=beta, max_norm_threshold=threshold,
    )  # fmt: skip
    w, b = weight.double().numpy(), bias.double().numpy()
    class_weights = _np_class_weights(COUNTS, beta)
    radius = _np_radius(w, threshold)
    _, grad_w, grad_b = _np_gradients(x.numpy(), y.numpy(), w, b, class_weights)
    buffer_w, buffer_b = grad_w + weight_decay * w, grad_b + weight_decay * b
    w, b = _np_project(w - lr * buffer_w, radius), b - lr * buffer_b
    _, grad_w, grad_b = _np_gradients(x.numpy(), y.numpy(), w, b, class_weights)
    buffer_w = momentum * buffer_w + grad_w + weight_decay * w
    buffer_b = momentum * buffer_b + grad_b + weight_decay * b
    half = lr * (1 + math.cos(math.pi / 2)) / 2  # cosine over 2 steps: lr, then lr / 2
    w, b = _np_project(w - half * buffer_w, radius), b - half * buffer_b
    np.testing.assert_allclose(new_weight.numpy(), w, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(new_bias.numpy(), b, rtol=1e-7, atol=1e-10)


def test_minibatch_loop_matches_a_numpy_replay(stage1):
    features, labels, weight, bias = stage1
    options = {"epochs": 3, "lr": 0.1, "weight_decay": 0.01, "batch_size": 100, "momentum": 0.9, "beta": 0.999}
    x, y = features.double(), labels
    new_weight, new_bias, details = fit_weight_balancing(
        x, y, weight.double(), bias.double(), max_norm_threshold=0.2, generator=torch.Generator().manual_seed(7),
        **options,
    )  # fmt: skip
    replay = torch.Generator().manual_seed(7)
    orders = [torch.randperm(len(y), generator=replay).numpy() for _ in range(options.pop("epochs"))]
    expected_weight, expected_bias, radius, losses = _np_weight_balancing(
        x.numpy(), y.numpy(), weight.double().numpy(), bias.double().numpy(), orders, threshold=0.2, **options
    )
    # float32 class weights in the core loss, and renorm's 1e-7 in the projection: ~1e-7 relative.
    np.testing.assert_allclose(new_weight.numpy(), expected_weight, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(new_bias.numpy(), expected_bias, rtol=1e-7, atol=1e-10)
    assert details["max_norm_radius"] == pytest.approx(radius, rel=1e-12)
    assert details["epoch_losses"] == pytest.approx(losses, rel=1e-7)


def test_rows_stay_in_the_ball_the_loss_falls_and_the_tail_gains(stage1):
    features, labels, weight, bias = stage1
    new_weight, new_bias, details = fit_weight_balancing(
        features, labels, weight, bias, epochs=8, generator=torch.Generator().manual_seed(0)
    )
    radius = _np_radius(weight.double().numpy(), 0.1)
    assert details["max_norm_radius"] == pytest.approx(radius, rel=1e-6)
    assert float(new_weight.norm(dim=1).max()) <= radius * (1 + 1e-6)
    assert float(weight.norm(dim=1).max()) > radius  # the constraint was active
    losses = details["epoch_losses"]
    assert len(losses) == 8 and losses[-1] < losses[0]
    # The class-balanced loss and the norm cap move the head towards the rare classes.
    test_features, test_labels = _mixture([300] * 4, seed=1)
    before = balanced_accuracy_score(test_labels.numpy(), (test_features @ weight.T + bias).argmax(1).numpy())
    after = balanced_accuracy_score(test_labels.numpy(), (test_features @ new_weight.T + new_bias).argmax(1).numpy())
    assert after > before


def test_same_generator_same_head_other_seed_other_head(stage1):
    features, labels, weight, bias = stage1

    def fit(seed):
        generator = torch.Generator().manual_seed(seed)
        return fit_weight_balancing(features, labels, weight, bias, epochs=1, generator=generator)

    first, again, other = fit(3), fit(3), fit(4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_head_without_bias_and_dtypes(stage1):
    features, labels, weight, _ = stage1
    new_weight, new_bias, _ = fit_weight_balancing(features, labels, weight, None, epochs=1)
    assert new_bias is None and new_weight.dtype == torch.float32
    assert torch.equal(weight, stage1[2])  # the input head is not modified
    promoted, _, _ = fit_weight_balancing(features.double(), labels, weight, None, epochs=1)
    assert promoted.dtype == torch.float64


def test_defaults_are_the_authors_demo():
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(fit_weight_balancing).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "generator"
    }
    assert defaults == {
        "epochs": 10,
        "lr": 0.01,
        "weight_decay": 0.1,
        "batch_size": 64,
        "momentum": 0.9,
        "beta": 0.9999,
        "max_norm_threshold": 0.1,
    }
    calibrator = WeightBalancing(torch.ones(2, 3))
    assert calibrator.options == defaults


# --------------------------------------------------------------------------------------------
# The calibrator
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_calibrator_is_the_function_and_round_trips(stage1, device):
    features, labels, weight, bias = (t.to(device) for t in stage1)
    options = {"epochs": 2, "batch_size": 128, "lr": 0.05}
    calibrator = CALIBRATORS.build("weight_balancing", weight=weight, bias=bias, **options).to(device)
    assert isinstance(calibrator, WeightBalancing) and not calibrator.fitted
    calibrator.fit(features, labels, generator=torch.Generator().manual_seed(0))
    expected_weight, expected_bias, details = fit_weight_balancing(
        features, labels, weight, bias, generator=torch.Generator().manual_seed(0), **options
    )
    with torch.no_grad():
        torch.testing.assert_close(calibrator(features), features @ expected_weight.T + expected_bias)
    assert float(calibrator.max_norm_radius) == pytest.approx(details["max_norm_radius"])
    assert calibrator.epoch_losses.tolist() == pytest.approx(details["epoch_losses"])
    torch.testing.assert_close(calibrator.initial_weight, weight, rtol=0, atol=0)  # kept for the next fit
    # A second fit restarts from the stage-1 head: same seed, same result.
    refit = calibrator.weight.clone()
    calibrator.fit(features, labels, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(calibrator.weight, refit, rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.save(calibrator.state_dict(), buffer)
    buffer.seek(0)
    rebuilt = WeightBalancing(torch.zeros(4, 6), torch.zeros(4), epochs=2).to(device)
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(features), calibrator(features))
    assert float(rebuilt.max_norm_radius) == float(calibrator.max_norm_radius)
    with pytest.raises(ValueError, match="WeightBalancing was fitted on"):
        rebuilt.check_not_fitted_on(features)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_bad_inputs_raise(stage1):
    features, labels, weight, bias = stage1
    with pytest.raises(ValueError, match="radius must be >= 0"):
        max_norm_(weight.clone(), -1.0)
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        max_norm_radius(weight, float("nan"))
    with pytest.raises(ValueError, match=r"weight must have shape \(N, C\)"):
        max_norm_(torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="beta must be a number in"):
        fit_weight_balancing(features, labels, weight, bias, beta=1.0)
    with pytest.raises(ValueError, match="max_norm_threshold must be >= 0"):
        WeightBalancing(weight, max_norm_threshold=-0.1)
    with pytest.raises(ValueError, match="momentum"):
        WeightBalancing(weight, momentum=1.0)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fit_weight_balancing(features, labels, weight, epochs=0)
    with pytest.raises(ValueError, match="features must have 6 columns"):
        fit_weight_balancing(features[:, :5], labels, weight)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        fit_weight_balancing(features, labels, weight, torch.zeros(3))
    missing = labels.clone()
    missing[missing == 2] = 1
    with pytest.raises(ValueError, match="class 2 has 0 example"):
        fit_weight_balancing(features, missing, weight, bias)
    with pytest.raises(RuntimeError, match="WeightBalancing is not fitted"):
        WeightBalancing(weight)(features)
