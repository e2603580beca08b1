"""Equalization Loss v2 (Jingru Tan, Xin Lu, Gang Zhang, Changqing Yin, Quanquan Li. "Equalization
Loss v2: A New Gradient Balance Approach for Long-tailed Object Detection", CVPR 2021).

A sigmoid detection loss: each class ``j`` is its own binary task. On a long-tailed dataset the
negative gradients that the samples of every other class (and the background) put on a rare
class swamp its few positive gradients. EQLv2 keeps, per class, the accumulated magnitudes of
the positive and negative gradients the class has received, and re-weights the next ones from
their ratio ``g_j``::

    g_j     = pos_grad_j / neg_grad_j
    q_j     = sigmoid(gamma * (g_j - mu))            weight of the negatives of class j
    r_j     = 1 + alpha * (1 - q_j)                  weight of the positives of class j
    loss_ij = (r_j * y_ij + q_j * (1 - y_ij)) * BCE(z_ij, y_ij)

A class with balanced gradients (``g_j`` well above ``mu``) keeps weights near 1; a rare class
(``g_j`` near 0) has its negative gradients scaled towards 0 and its positive ones towards
``1 + alpha``. After each backward pass the statistics grow by the gradient ``G`` of the
weighted loss with respect to the logits::

    pos_grad_j += sum_i |G_ij| * y_ij
    neg_grad_j += sum_i |G_ij| * (1 - y_ij)

Paper defaults: ``gamma = 12``, ``mu = 0.8``, ``alpha = 4``.

:func:`eqlv2_loss` is stateless (it takes the statistics); :class:`EQLv2Loss` keeps them as
float64 buffers and updates them from the real gradient with a hook on the logits.

Deliberate differences from the authors' code (``tztztztztz/eqlv2``,
``mmdet/models/losses/eqlv2.py``):

- Statistics come from the gradient autograd computes, read by a tensor hook, instead of the
  closed form ``|sigmoid(z) - y| * w`` recomputed in the forward pass. The two are equal up to a
  positive factor per backward pass: the hook's gradient includes the reduction's normaliser
  and whatever the caller multiplies the loss by (RetinaNet's ``1 / num_foreground``, a loss
  weight, the AMP loss scale), where the reference accumulates the gradient of the plain
  weighted sum. ``g_j`` is a ratio of running sums, so a factor common to every batch cancels;
  one that varies between batches (``1 / num_foreground``) changes only how much each batch
  counts in the sums. ``reduction="sum"``, back-propagated unscaled, gives the reference's
  numbers. Statistics are
  only collected when a backward pass goes through the loss (the reference counts every
  training forward, also one whose loss is never back-propagated).
- The ratio is exact: ``pos_grad / neg_grad`` instead of ``pos_grad / (neg_grad + 1e-10)``.
  With normalised gradients the statistics can be small numbers, where a fixed ``1e-10`` would
  bias them. A class with no statistics yet (``0 / 0``) gets ``q = r = 1``: the reference's
  first forward, before it has collected anything, uses weights of 1. ``neg_grad = 0 < pos_grad``
  gives ``g = inf``, ``q = 1``, ``r = 1`` (the reference's ``pos / 1e-10`` gives the same).
- Every column of the logits is a class. The reference head has an extra objectness channel
  with fixed weights and no statistics; such a head computes that channel's loss separately.
- Statistics are float64 (the reference keeps them in the logits' dtype, fp16 under AMP), and a
  backward pass with a non-finite gradient (an AMP step that overflowed and that ``GradScaler``
  will skip) leaves them unchanged. As in the reference, they are summed over processes with
  ``all_reduce`` when ``torch.distributed`` is initialised.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from equipoise.core.losses._common import LOSSES, reduce, upcast
from equipoise.core.validation import (
    ArrayLike,
    as_class_counts,
    check_binary_targets,
    check_class_counts,
    check_logits,
    check_non_negative,
    check_reduction,
)

__all__ = ["EQLv2Loss", "eqlv2_loss", "eqlv2_weights"]


def eqlv2_weights(
    pos_grad: ArrayLike,
    neg_grad: ArrayLike,
    gamma: float = 12.0,
    mu: float = 0.8,
    alpha: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class ``(pos_weight, neg_weight) = (r, q)`` from accumulated gradient magnitudes.

    ``q_j = sigmoid(gamma * (pos_grad_j / neg_grad_j - mu))`` and ``r_j = 1 + alpha * (1 - q_j)``;
    a class with both statistics 0 gets ``q_j = r_j = 1``. Returns two float64 ``(C,)`` tensors.
    """
    pos, neg = _as_statistics(pos_grad, neg_grad)
    _check_statistics(pos, neg, None)
    _check_hyper_parameters(gamma, mu, alpha)
    return _weights(pos, neg, gamma, mu, alpha)


def eqlv2_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_grad: ArrayLike,
    neg_grad: ArrayLike,
    gamma: float = 12.0,
    mu: float = 0.8,
    alpha: float = 4.0,
    reduction: str = "mean",
    validate_args: bool = True,
) -> torch.Tensor:
    """EQLv2 loss (Tan et al. 2021) for given gradient statistics; see the module docstring.

    Args:
        logits: ``(N, C)`` scores, one sigmoid per class (no background column).
        targets: either ``(N, C)`` floats in {0, 1} (one-hot, multi-hot, or an all-zero row for
            a background sample), or ``(N,)`` integer classes in ``[0, C]`` where ``C`` means
            background (all ``C`` binary targets 0), mmdetection's convention.
        pos_grad: ``(C,)`` accumulated positive-gradient magnitudes, ``>= 0``.
        neg_grad: ``(C,)`` accumulated negative-gradient magnitudes, ``>= 0``.
        gamma: slope of the mapping ``g -> q``, ``>= 0``. Paper: 12.
        mu: centre of the mapping (``g = mu`` gives ``q = 0.5``), ``>= 0``. Paper: 0.8.
        alpha: positive up-weighting, ``>= 0``. Paper: 4.
        reduction: ``"none"`` (the ``(N, C)`` elementwise loss) | ``"mean"`` (over all ``N * C``
            elements, as ``F.binary_cross_entropy_with_logits``) | ``"sum"``. The reference
            divides the sum by ``N``; RetinaNet divides it by the number of foreground anchors.
        validate_args: check the arguments.

    Returns:
        The loss in at least float32 (fp16/bf16 logits are upcast).
    """
    if validate_args:
        _check_eqlv2(logits, targets, pos_grad, neg_grad, gamma, mu, alpha, reduction)
    x = upcast(logits)
    pos, neg = _as_statistics(pos_grad, neg_grad)
    pos_weight, neg_weight = _weights(pos, neg, gamma, mu, alpha)
    y = _dense_targets(targets, x.shape[1], x.dtype)
    pos_weight, neg_weight = (w.to(device=x.device, dtype=x.dtype) for w in (pos_weight, neg_weight))
    weight = torch.addcmul(neg_weight, y, pos_weight - neg_weight)  # r * y + q * (1 - y)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none") * weight
    return reduce(loss, reduction)


def _weights(
    pos: torch.Tensor, neg: torch.Tensor, gamma: float, mu: float, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    has_neg = neg > 0
    safe_neg = torch.where(has_neg, neg, 1.0)
    ratio = pos / safe_neg
    if gamma > 0:
        # A tiny neg (a denormal) overflows pos / neg to inf although gamma * pos / neg may be
        # moderate (gamma tiny too): there it is computed as exp(log gamma + log pos - log neg).
        in_logs = torch.exp(math.log(gamma) + torch.log(pos) - torch.log(safe_neg))
        scaled = torch.where(torch.isinf(ratio), in_logs, gamma * ratio)
    else:  # the mapping is constant; 0 * inf would be NaN
        scaled = torch.zeros_like(ratio)
    neg_weight = torch.sigmoid(scaled - gamma * mu)
    # neg == 0 < pos: g = inf, sigmoid(+inf) = 1 (0.5 for gamma = 0, whose mapping is constant).
    neg_weight = torch.where(has_neg, neg_weight, 1.0 if gamma > 0 else 0.5)
    # Nothing collected for the class yet: weights 1, as the reference's first iteration.
    neg_weight = torch.where(has_neg | (pos > 0), neg_weight, 1.0)
    pos_weight = 1.0 + alpha * (1.0 - neg_weight)
    return pos_weight, neg_weight


def _as_statistics(pos_grad: ArrayLike, neg_grad: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    return as_class_counts(pos_grad, name="pos_grad"), as_class_counts(neg_grad, name="neg_grad")


def _dense_targets(targets: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``(N, C)`` 0/1 targets; integer targets ``C`` (background) become all-zero rows."""
    if targets.is_floating_point():
        return targets.to(dtype)
    dense = torch.zeros(targets.shape[0], num_classes + 1, dtype=dtype, device=targets.device)
    return dense.scatter_(1, targets.unsqueeze(1), 1.0)[:, :num_classes]


def _check_statistics(pos: torch.Tensor, neg: torch.Tensor, num_classes: int | None) -> None:
    check_class_counts(pos, num_classes, name="pos_grad", allow_zero=True)
    check_class_counts(neg, num_classes, name="neg_grad", allow_zero=True)
    if pos.shape != neg.shape:
        raise ValueError(
            f"pos_grad and neg_grad must have the same shape, got {tuple(pos.shape)} and {tuple(neg.shape)}"
        )


def _check_hyper_parameters(gamma: float, mu: float, alpha: float) -> None:
    check_non_negative(gamma, "gamma")
    check_non_negative(mu, "mu")
    check_non_negative(alpha, "alpha")


def _check_zero_one_targets(targets: torch.Tensor, logits: torch.Tensor, name: str = "targets") -> None:
    """Floating targets of the logits' shape holding only 0 and 1 (no soft labels)."""
    check_binary_targets(targets, logits, name=name)
    hard = (targets == 0) | (targets == 1)
    if not bool(hard.all()):
        index = tuple(int(i) for i in torch.nonzero(~hard)[0])
        raise ValueError(f"{name} must hold 0/1 labels (no soft labels), got {targets[index].item()} at index {index}")


def _check_targets(targets: torch.Tensor, logits: torch.Tensor) -> None:
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.is_floating_point():
        _check_zero_one_targets(targets, logits)
        return
    if targets.dtype == torch.bool or targets.is_complex() or targets.dim() != 1:
        raise TypeError(
            "targets must be (N, C) floating-point 0/1 labels or (N,) integer class indices, "
            f"got dtype {targets.dtype} and shape {tuple(targets.shape)}"
        )
    if targets.shape != logits.shape[:1]:
        raise ValueError(
            f"targets must have shape (N,) = {tuple(logits.shape[:1])} to match logits of shape "
            f"{tuple(logits.shape)}, got shape {tuple(targets.shape)}"
        )
    num_classes = logits.shape[1]
    bad = (targets < 0) | (targets > num_classes)
    if bool(bad.any()):
        position = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"targets[{position}] = {int(targets[position])} is outside [0, {num_classes}] "
            f"(classes 0..{num_classes - 1}, {num_classes} = background)"
        )


def _check_eqlv2(logits, targets, pos_grad, neg_grad, gamma, mu, alpha, reduction) -> None:
    check_logits(logits)
    _check_targets(targets, logits)
    pos, neg = _as_statistics(pos_grad, neg_grad)
    _check_statistics(pos, neg, logits.shape[1])
    _check_hyper_parameters(gamma, mu, alpha)
    check_reduction(reduction)


def _check_num_classes(num_classes: int | None) -> None:
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
        raise TypeError(f"num_classes must be an int or None, got {type(num_classes).__name__}")
    if num_classes is not None and num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")


def _check_device(statistic: torch.Tensor, logits: torch.Tensor, owner: str) -> None:
    if statistic.device != logits.device:
        raise ValueError(
            f"{owner} keeps its statistics on {statistic.device} but the logits are on {logits.device}; "
            f"move the loss with .to({str(logits.device)!r})"
        )


@LOSSES.register("eqlv2")
class EQLv2Loss(nn.Module):
    """Module form of :func:`eqlv2_loss` (Tan et al. 2021) that keeps the gradient statistics.

    ``pos_grad`` and ``neg_grad`` are float64 buffers (saved in the ``state_dict``; keep them in
    float64, ``.half()`` would round them). In training mode with ``auto_update=True`` (the
    default), each forward whose logits require a gradient puts a hook on them; when the
    backward pass reaches the logits, the hook adds the magnitudes of that gradient to the
    statistics (see the module docstring), so the next forward uses the new weights. In eval
    mode, or with ``auto_update=False``, the statistics are frozen.

    RetinaNet use: logits ``(num_anchors, C)``, one-hot targets with all-zero rows for the
    background anchors (ignored anchors removed), ``reduction="sum"``, and the caller divides
    by the number of foreground anchors.

    Args:
        num_classes: ``C``. ``None`` sizes the statistics from the first batch (or from a
            loaded ``state_dict``), so the loss can be built by name without it.
        gamma, mu, alpha: see :func:`eqlv2_loss`. Paper: 12, 0.8, 4.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        auto_update: collect the statistics in training mode.
        validate_args: check the inputs of every forward.
    """

    functional = staticmethod(eqlv2_loss)
    target_kind = "binary"

    def __init__(
        self,
        num_classes: int | None = None,
        gamma: float = 12.0,
        mu: float = 0.8,
        alpha: float = 4.0,
        reduction: str = "mean",
        auto_update: bool = True,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        _check_num_classes(num_classes)
        _check_hyper_parameters(gamma, mu, alpha)
        check_reduction(reduction)
        self.gamma = gamma
        self.mu = mu
        self.alpha = alpha
        self.reduction = reduction
        self.auto_update = auto_update
        self.validate_args = validate_args
        size = 0 if num_classes is None else num_classes
        self.register_buffer("pos_grad", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("neg_grad", torch.zeros(size, dtype=torch.float64))

    @property
    def num_classes(self) -> int | None:
        """``C``, or ``None`` before the first batch when built without it."""
        return self.pos_grad.numel() or None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.validate_args:
            check_logits(logits)
        if self.pos_grad.numel() == 0:
            self._resize(logits.shape[1])
        if self.validate_args:
            _check_device(self.pos_grad, logits, type(self).__name__)
            _check_eqlv2(logits, targets, self.pos_grad, self.neg_grad, self.gamma, self.mu, self.alpha, self.reduction)
        # A view is a node of its own: its hook sees the gradient of this loss only, even when the
        # logits also feed other losses.
        x = upcast(logits).view_as(logits)
        if self.training and self.auto_update and x.requires_grad:
            y = _dense_targets(targets, x.shape[1], x.dtype).detach()
            x.register_hook(partial(self._collect, y))
        return eqlv2_loss(
            x,
            targets,
            self.pos_grad,
            self.neg_grad,
            self.gamma,
            self.mu,
            self.alpha,
            self.reduction,
            validate_args=False,
        )

    @torch.no_grad()
    def _collect(self, targets: torch.Tensor, grad: torch.Tensor) -> None:
        magnitude = grad.detach().abs()
        statistics = torch.stack(
            [(magnitude * targets).sum(0, dtype=torch.float64), (magnitude * (1 - targets)).sum(0, dtype=torch.float64)]
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(statistics)
        # A non-finite gradient (overflowed AMP step) adds nothing; tested without a host sync.
        statistics = torch.where(torch.isfinite(statistics).all(), statistics, 0.0)
        self.pos_grad += statistics[0]
        self.neg_grad += statistics[1]

    def _resize(self, num_classes: int) -> None:
        self.pos_grad = torch.zeros(num_classes, dtype=torch.float64, device=self.pos_grad.device)
        self.neg_grad = torch.zeros(num_classes, dtype=torch.float64, device=self.neg_grad.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Built without num_classes and not yet run: take the size of the saved statistics.
        saved = state_dict.get(prefix + "pos_grad")
        if self.pos_grad.numel() == 0 and isinstance(saved, torch.Tensor) and saved.dim() == 1:
            self._resize(saved.numel())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, gamma={self.gamma}, mu={self.mu}, alpha={self.alpha}, "
            f"reduction={self.reduction!r}, auto_update={self.auto_update}"
        )
