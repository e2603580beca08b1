"""Weight balancing, stage 2: fine-tune a trained linear head under a MaxNorm constraint (Alshammari,
Wang, Ramanan, Kong, "Long-Tailed Recognition via Weight Balancing", CVPR 2022).

Stage 1 of the paper is plain cross-entropy with a tuned (larger) weight decay: a training
recipe, nothing to compute here. Stage 2 freezes the backbone and fine-tunes the stage-1 head
``(W, b)`` on the frozen features with the class-balanced loss of Cui et al. 2019
(``equipoise.core.losses.class_balanced_loss``), weight decay and the MaxNorm constraint, by
projected gradient descent:

    minimise   mean_{i in batch} w_{y_i} * CE(W x_i + b, y_i)  +  weight_decay / 2 * (||W||^2 + ||b||^2)
    subject to ||W_c|| <= radius for every class row c

    w_c    = (1 - beta) / (1 - beta ** n_c), normalised to sum to C     (n_c: examples of class c)
    radius = min_c ||W0_c|| + threshold * (max_c ||W0_c|| - min_c ||W0_c||)   (W0: the stage-1 head)

After every SGD step (momentum, weight decay) each row of ``W`` with ``||W_c|| > radius`` is
scaled back onto the ball (:func:`max_norm_`); the bias is not constrained, as in the reference
code. The threshold is *relative*, as in the reference code's
``MaxNorm_via_PGD.setPerLayerThresh`` (:func:`max_norm_radius`): 0 gives the smallest stage-1
row norm, 1 the largest (no row is then shrunk at the start).

Defaults, from the authors' CIFAR-100-LT second-stage demo (github.com/ShadeAlsha/LTR-weight-balancing,
``demo2_second-stage-training``, ``utils/regularizers.py``): ``epochs`` 10, ``lr`` 0.01 with
cosine decay to 0, ``momentum`` 0.9, ``weight_decay`` 0.1 (on weight and bias), ``batch_size``
64 with instance-balanced shuffling (the loss does the balancing), ``beta`` 0.9999 and
``max_norm_threshold`` 0.1.

Deliberate differences from the reference code, and why:

- the loss is the Cui et al. softmax cross-entropy; the reference's ``CB_loss(..., "softmax")``
  (ported from a third-party implementation) computes binary cross-entropy on softmax
  probabilities, which is not the loss the class-balanced paper defines;
- the projection follows every optimiser step (projected gradient descent as the paper describes
  it) where the demo projects once per epoch; the last step is projected either way;
- the learning rate decays per step over ``epochs * ceil(N / batch_size)`` steps (as cRT in
  ``equipoise.core.calibration.decoupling`` does), where the demo steps its cosine schedule once
  at the start of each epoch;
- no epoch is picked by test accuracy: the demo keeps the epoch with the best *test* accuracy,
  which would fit on the test split; here the last epoch is kept.

Shapes: features ``(N, D)``, labels ``(N,)``, weight ``(C, D)``, bias ``(C,)``. Like the
decoupled heads of Kang et al. 2020 (:mod:`equipoise.core.calibration.decoupling`),
:class:`WeightBalancing` is a calibrator on *features*: ``fit(features, labels)`` on the training
(or a held-out retraining) split, ``forward(features)`` the fine-tuned head's logits.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from equipoise.core.calibration._common import (
    CALIBRATORS,
    Calibrator,
    check_classes_present,
    check_features,
    check_labels,
)

# The head and SGD-option checks are the decoupled heads' own; weight balancing is one of them.
from equipoise.core.calibration.decoupling import _check_training, _check_weight
from equipoise.core.losses.class_balanced import class_balanced_loss
from equipoise.core.validation import check_logits, check_non_negative

__all__ = ["WeightBalancing", "fit_weight_balancing", "max_norm_", "max_norm_radius"]


def max_norm_radius(weight: torch.Tensor, threshold: float) -> float:
    """The MaxNorm radius ``min_c ||W_c|| + threshold * (max_c ||W_c|| - min_c ||W_c||)`` of a ``(C, D)`` weight.

    The reference code's per-layer threshold (``MaxNorm_via_PGD.setPerLayerThresh``): relative
    to the spread of the row norms, so ``threshold = 0`` is the smallest row norm and ``1`` the
    largest. ``threshold >= 0``; above 1 the radius exceeds every row norm.
    """
    check_logits(weight, name="weight")
    check_non_negative(threshold, "threshold")
    return _max_norm_radius(weight, float(threshold))


def _max_norm_radius(weight: torch.Tensor, threshold: float) -> float:
    norms = torch.linalg.vector_norm(weight.detach(), dim=1)
    low, high = float(norms.min()), float(norms.max())
    return low + threshold * (high - low)


def max_norm_(weight: torch.Tensor, radius: float) -> torch.Tensor:
    """Project each class row of a ``(C, D)`` weight onto the ball ``||W_c|| <= radius``, in place; returns ``weight``.

    Rows with norm above ``radius`` are scaled to it, the others are left alone (the MaxNorm
    projection of Alshammari et al. 2022). Implemented by ``torch.renorm``, which scales by
    ``radius / (||W_c|| + 1e-7)``: a projected row ends just inside the ball. Runs under
    ``torch.no_grad()``, so it may be applied to a parameter between optimiser steps.
    ``radius >= 0``.
    """
    check_logits(weight, name="weight")
    check_non_negative(radius, "radius")
    return _max_norm_(weight, float(radius))


def _max_norm_(weight: torch.Tensor, radius: float) -> torch.Tensor:
    with torch.no_grad():
        return weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=radius))


def _check_weight_balancing(beta: float, max_norm_threshold: float) -> None:
    if isinstance(beta, bool) or not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise ValueError(f"beta must be a number in [0, 1), got {beta!r}")
    check_non_negative(max_norm_threshold, "max_norm_threshold")


def fit_weight_balancing(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    epochs: int = 10,
    lr: float = 0.01,
    weight_decay: float = 0.1,
    batch_size: int = 64,
    momentum: float = 0.9,
    beta: float = 0.9999,
    max_norm_threshold: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """Weight balancing, stage 2 (Alshammari et al. 2022): fine-tune the head ``(weight, bias)`` on frozen features.

    Projected SGD on the class-balanced softmax cross-entropy (Cui et al. 2019, ``beta``) with
    weight decay, the rows of ``weight`` kept within :func:`max_norm_radius` ``(weight,
    max_norm_threshold)`` after every step (see the module docstring for the formula, the
    defaults and the deliberate differences from the reference code). The class counts ``n_c``
    are those of ``labels``; every class must occur in them.

    Args:
        features: ``(N, D)`` frozen features (the training split, as in the paper).
        labels: ``(N,)`` class indices in ``[0, C)``.
        weight: ``(C, D)`` stage-1 head weight (not modified).
        bias: ``(C,)`` stage-1 head bias, or ``None`` for a head without one.
        epochs, lr, weight_decay, batch_size, momentum: SGD over ``epochs`` passes of shuffled
            batches of ``batch_size``, ``lr`` decaying to 0 by a cosine over
            ``epochs * ceil(N / batch_size)`` steps; the weight decay applies to weight and bias.
        beta: the class-balanced loss's ``beta`` in ``[0, 1)``.
        max_norm_threshold: the relative MaxNorm threshold (>= 0).
        generator: draws each epoch's shuffling (a CPU generator; ``None``: torch's default).
            Same seed, same head.

    Returns:
        ``(weight, bias, details)``: the fine-tuned ``(C, D)`` weight and ``(C,)`` bias (``None``
        when ``bias`` is) on the features' device, in the features' and the weight's promoted
        dtype (float32 at least), and ``details = {"max_norm_radius": float, "epoch_losses":
        [float, ...]}``, the radius and the mean training loss of each epoch (before the
        weight-decay term).
    """
    _check_weight(weight, bias)
    _check_training(epochs, lr, batch_size, momentum, weight_decay)
    _check_weight_balancing(beta, max_norm_threshold)
    num_classes, num_features = weight.shape
    check_features(features, num_features=num_features)
    check_labels(labels, features.shape[0], num_classes)
    class_counts = check_classes_present(
        labels, num_classes, why="the class-balanced loss (its weight 1 / E_n is infinite for an absent class)"
    )
    dtype = torch.promote_types(torch.promote_types(features.dtype, weight.dtype), torch.float32)
    x = features.detach().to(dtype)
    y = labels.detach().to(device=x.device, dtype=torch.long)
    start = weight.detach().to(device=x.device, dtype=dtype)
    start_bias = None if bias is None else bias.detach().to(device=x.device, dtype=dtype)
    return _fit_weight_balancing(
        x,
        y,
        class_counts,
        start,
        start_bias,
        epochs,
        lr,
        weight_decay,
        batch_size,
        momentum,
        float(beta),
        float(max_norm_threshold),
        generator,
    )


def _fit_weight_balancing(
    features: torch.Tensor,
    labels: torch.Tensor,
    class_counts: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    momentum: float,
    beta: float,
    max_norm_threshold: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """The projected SGD loop on trusted inputs (one device and dtype)."""
    num_samples = features.shape[0]
    radius = _max_norm_radius(weight, max_norm_threshold)
    weight = weight.clone().requires_grad_(True)
    bias = None if bias is None else bias.clone().requires_grad_(True)
    parameters = [weight] if bias is None else [weight, bias]
    steps_per_epoch = math.ceil(num_samples / batch_size)
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    epoch_losses = []
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(num_samples, generator=generator).to(features.device)
            total = torch.zeros((), dtype=torch.float64, device=features.device)
            for start in range(0, num_samples, batch_size):
                batch = order[start : start + batch_size]
                logits = F.linear(features[batch], weight, bias)
                loss = class_balanced_loss(
                    logits, labels[batch], class_counts, beta=beta, loss_type="softmax", validate_args=False
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                _max_norm_(weight, radius)  # projected gradient descent: back onto the ball after every step
                total += loss.detach().double() * batch.numel()
            epoch_losses.append(float(total) / num_samples)
    details = {"max_norm_radius": radius, "epoch_losses": epoch_losses}
    return weight.detach(), None if bias is None else bias.detach(), details


@CALIBRATORS.register("weight_balancing")
class WeightBalancing(Calibrator):
    """Weight balancing, stage 2 (Alshammari et al. 2022), as a calibrator on features.

    ``weight`` ``(C, D)`` and ``bias`` ``(C,)`` (optional), the stage-1 head, are copied into the
    buffers ``initial_weight`` and ``initial_bias``; the optimiser settings are constructor
    arguments with the defaults of :func:`fit_weight_balancing`. ``fit(features, labels,
    generator=None)`` fine-tunes from the stage-1 head (every fit restarts from it) on the
    features' device and stores the result in the buffers ``weight`` and ``bias``, with
    ``max_norm_radius`` (float64 scalar) and ``epoch_losses`` (float64 ``(epochs,)``), both NaN
    until fitted. ``forward(features)`` is ``features @ weight.T + bias``.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        epochs: int = 10,
        lr: float = 0.01,
        weight_decay: float = 0.1,
        batch_size: int = 64,
        momentum: float = 0.9,
        beta: float = 0.9999,
        max_norm_threshold: float = 0.1,
    ) -> None:
        super().__init__()
        _check_weight(weight, bias)
        _check_training(epochs, lr, batch_size, momentum, weight_decay)
        _check_weight_balancing(beta, max_norm_threshold)
        self.options = {
            "epochs": epochs,
            "lr": lr,
            "weight_decay": weight_decay,
            "batch_size": batch_size,
            "momentum": momentum,
            "beta": beta,
            "max_norm_threshold": max_norm_threshold,
        }
        self.register_buffer("initial_weight", weight.detach().clone())
        self.register_buffer("initial_bias", None if bias is None else bias.detach().clone())
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("max_norm_radius", torch.full((), math.nan, dtype=torch.float64))
        self.register_buffer("epoch_losses", torch.full((epochs,), math.nan, dtype=torch.float64))

    def fit(
        self, features: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> WeightBalancing:
        """Fine-tune the stage-1 head on features ``(N, D)`` and labels ``(N,)``; returns ``self``."""
        weight, bias, details = fit_weight_balancing(
            features, labels, self.initial_weight, self.initial_bias, generator=generator, **self.options
        )
        with torch.no_grad():
            self.weight.copy_(weight)
            if self.bias is not None:
                self.bias.copy_(bias)
            self.max_norm_radius.fill_(details["max_norm_radius"])
            self.epoch_losses.copy_(torch.tensor(details["epoch_losses"], dtype=torch.float64))
        self._remember_fit(features)
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        check_features(features, num_features=self.weight.shape[1])
        return F.linear(features, self.weight.to(features), None if self.bias is None else self.bias.to(features))
