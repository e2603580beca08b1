"""Seesaw loss (Jiaqi Wang, Wenwei Zhang, Yuhang Zang, Yuhang Cao, Jiangmiao Pang, Tao Gong, Kai Chen,
Ziwei Liu, Chen Change Loy, Dahua Lin. "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR 2021),
and a sigmoid variant for one-stage detectors.

Softmax cross-entropy on a sample of class ``i`` pushes every other class ``j`` down with a
negative gradient ``sigma_j``. On a long-tailed dataset the many samples of the frequent classes
overwhelm the rare ones with these gradients. Seesaw re-weights, for a sample of class ``i``,
the term of each other class ``j`` in the softmax denominator::

    sigma_hat_i = exp(z_i) / (sum_{j != i} S_ij * exp(z_j) + exp(z_i)),     loss = -log(sigma_hat_i)
    S_ij = M_ij * C_ij
    M_ij = (N_j / N_i) ** p            if N_i > N_j else 1      (mitigation)
    C_ij = (sigma_j / sigma_i) ** q    if sigma_j > sigma_i else 1   (compensation)

``N`` are the cumulative numbers of training instances per class, counted during training;
``sigma`` the softmax probabilities, treated as constants (no gradient through ``C``). The
mitigation factor lowers the penalty that a frequent class's samples put on rarer classes; the
compensation factor raises it again on a class that the sample is mistaken for. It is computed
as cross-entropy on ``z + log(S)`` with ``log(S)`` added to the off-target logits only.

Paper defaults: ``p = 0.8``, ``q = 2``. As in the reference code (mmdetection,
``mmdet/models/losses/seesaw_loss.py``), counts are clamped at 1 in the ratio (a class not yet
seen counts as one instance), ``sigma_i`` is clamped at ``eps = 1e-2`` in the compensation ratio
(which bounds ``C`` by ``eps ** -q``), and :class:`SeesawLoss` adds the targets of each training
batch to its counts before computing that batch's loss. Deliberate differences from that code:

- The logits are the classes only. The reference head has ``C + 2`` outputs (the classes and a
  two-way objectness softmax that takes the background) and applies seesaw to the foreground
  RoIs; such a head computes its objectness cross-entropy separately and passes the foreground
  rows here.
- Counts are float64 (the reference's float32 stops counting exactly beyond 2 ** 24 instances).
- Counts known in advance may be given (``class_counts``) and are then used as they are; the
  online count of the paper is the default when they are not.

The sigmoid variant (:func:`sigmoid_seesaw_loss`, :class:`SigmoidSeesawLoss`) is not in the
paper; see :func:`sigmoid_seesaw_loss` for what it does and why.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from equipoise.core.losses._common import LOSSES, reduce, upcast
from equipoise.core.losses.eqlv2 import _check_device, _check_num_classes, _check_zero_one_targets
from equipoise.core.validation import (
    ArrayLike,
    as_class_counts,
    check_class_counts,
    check_class_targets,
    check_logits,
    check_non_negative,
    check_positive,
    check_reduction,
)

__all__ = ["SeesawLoss", "SigmoidSeesawLoss", "seesaw_loss", "sigmoid_seesaw_loss"]


def seesaw_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_counts: ArrayLike,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
    reduction: str = "mean",
    ignore_index: int = -100,
    validate_args: bool = True,
) -> torch.Tensor:
    """Softmax seesaw loss (Wang et al. 2021, eq. 2-5); see the module docstring.

    Args:
        logits: ``(N, C)`` scores.
        target: ``(N,)`` integer classes in ``[0, C)`` or ``ignore_index``.
        class_counts: ``(C,)`` (cumulative) instances per class, finite and ``>= 0``; zeros count
            as 1.
        p: mitigation exponent, ``>= 0`` (0 switches mitigation off). Paper: 0.8.
        q: compensation exponent, ``>= 0`` (0 switches compensation off). Paper: 2.
        eps: lower clamp of ``sigma_i`` in the compensation ratio, ``> 0``. Reference: 1e-2.
        reduction: ``"none"`` | ``"mean"`` (over the non-ignored samples, as
            ``F.cross_entropy``) | ``"sum"``.
        ignore_index: target value whose samples contribute nothing.
        validate_args: check the arguments.

    Returns:
        The loss in at least float32 (fp16/bf16 logits are upcast); ``(N,)`` for ``"none"``.
    """
    counts = as_class_counts(class_counts)
    if validate_args:
        check_logits(logits)
        check_class_targets(target, logits, ignore_index=ignore_index)
        _check_seesaw_common(counts, logits.shape[1], p, q, eps, reduction)
    x = upcast(logits)
    valid = target != ignore_index
    safe_target = target.masked_fill(~valid, 0)
    column = safe_target.unsqueeze(1)
    log_s = None
    if p > 0:
        log_counts = _log_counts(counts, x)
        log_s = p * (log_counts.unsqueeze(0) - log_counts[safe_target].unsqueeze(1)).clamp_max(0.0)
    if q > 0:
        with torch.no_grad():
            log_probs = F.log_softmax(x.detach(), dim=1)
            log_self = log_probs.gather(1, column).clamp_min(math.log(eps))
            log_c = q * (log_probs - log_self).clamp_min(0.0)
        log_s = log_c if log_s is None else log_s + log_c
    if log_s is not None:
        x = x + log_s.scatter(1, column, 0.0)  # the target's own term keeps weight 1
    loss = F.cross_entropy(x, safe_target, reduction="none") * valid
    return reduce(loss, reduction, denominator=valid.sum().to(loss.dtype))


def sigmoid_seesaw_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_counts: ArrayLike,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
    reduction: str = "mean",
    validate_args: bool = True,
) -> torch.Tensor:
    """Seesaw factors carried over to one sigmoid per class (not in Wang et al. 2021).

    For one-stage detectors such as RetinaNet, whose head has one sigmoid per class and no
    background class. For a foreground row of class ``i``, the logit of every other class ``j``
    is shifted by ``log S_ij`` in its negative BCE term, ``S_ij = M_ij * C_ij``::

        loss_ij = -log(sigmoid(z_ij))                          j = i
        loss_ij = -log(1 - sigmoid(z_ij + log S_ij))           j != i
        M_ij    = (N_j / N_i) ** p          if N_i > N_j else 1
        C_ij    = (s_j / max(s_i, eps)) ** q   if larger than 1, else 1,   s = sigmoid(z), no gradient

    Background rows (all targets 0) and positive terms are plain BCE.

    Why this is the carry-over: the softmax form adds ``log S_ij`` to the logit of each other
    class inside the softmax, so the negative gradient a sample of class ``i`` puts on ``z_j``
    is ``S_ij exp(z_j) / sum_k S_ik exp(z_k)``: scaled by ``S_ij`` while small, and never above 1.
    With one sigmoid per class the same shift gives the negative gradient
    ``sigmoid(z_j + log S_ij)``: about ``S_ij * sigmoid(z_j)`` while small (the samples of
    frequent classes stop drowning rare classes in negative gradients: mitigation; a class the
    sample is mistaken for is pushed down harder: compensation), and bounded by 1. Multiplying
    the BCE term by ``S_ij`` instead has the same small-probability behaviour but no bound: with
    the reference's ``eps = 0.01`` the compensation reaches ``1e4`` and a RetinaNet head
    diverges in its first iterations (measured). Background anchors belong to no class, so
    there is no ratio ``N_j / N_i`` for them.

    Rows with several positive classes (multi-label data) use, for each negative ``j``, the
    largest mitigation and the largest compensation over the row's positive classes: the
    mitigation of its rarest positive class and the compensation of its least confident one, so a
    sample that is also an instance of a rare class gets no more discount than that class would
    give. A one-hot row gives ``S_ij`` exactly.

    Args:
        logits: ``(N, C)`` scores.
        targets: ``(N, C)`` floats in {0, 1}: one-hot rows for foreground, all-zero rows for
            background.
        class_counts: ``(C,)`` (cumulative) positive instances per class, finite and ``>= 0``.
        p, q, eps: as in :func:`seesaw_loss`. Defaults: 0.8, 2, 1e-2.
        reduction: ``"none"`` (``(N, C)``) | ``"mean"`` (over all ``N * C`` elements) | ``"sum"``
            (RetinaNet divides the sum by the number of foreground anchors).
        validate_args: check the arguments.
    """
    counts = as_class_counts(class_counts)
    if validate_args:
        check_logits(logits)
        _check_zero_one_targets(targets, logits)
        _check_seesaw_common(counts, logits.shape[1], p, q, eps, reduction)
    x = upcast(logits)
    y = targets.to(x.dtype)
    positive = y > 0
    log_s = torch.zeros((), dtype=x.dtype, device=x.device)
    if p > 0:
        log_counts = _log_counts(counts, x)
        # log N of the rarest positive class of each row (+inf on background rows, masked below).
        row_log_count = log_counts.expand_as(x).masked_fill(~positive, math.inf).amin(1, keepdim=True)
        log_s = p * (log_counts - row_log_count).clamp_max(0.0)
    if q > 0:
        with torch.no_grad():
            log_sigmoid = F.logsigmoid(x.detach())
            log_self = log_sigmoid.masked_fill(~positive, math.inf).amin(1, keepdim=True).clamp_min(math.log(eps))
            log_s = log_s + q * (log_sigmoid - log_self).clamp_min(0.0)
    if p > 0 or q > 0:
        shifted = positive.any(1, keepdim=True) & ~positive  # negatives of foreground rows
        x = x + torch.where(shifted, log_s, 0.0)
    return reduce(F.binary_cross_entropy_with_logits(x, y, reduction="none"), reduction)


def _log_counts(counts: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return counts.clamp_min(1.0).log().to(device=like.device, dtype=like.dtype)


def _check_seesaw_hyper_parameters(p: float, q: float, eps: float) -> None:
    check_non_negative(p, "p")
    check_non_negative(q, "q")
    check_positive(eps, "eps")


def _check_seesaw_common(counts, num_classes, p, q, eps, reduction) -> None:
    check_class_counts(counts, num_classes, allow_zero=True)
    _check_seesaw_hyper_parameters(p, q, eps)
    check_reduction(reduction)


class _SeesawBase(nn.Module):
    """Class counts as a float64 buffer ``cum_samples``, fixed or counted in training mode."""

    def __init__(
        self,
        num_classes: int | None,
        p: float,
        q: float,
        eps: float,
        reduction: str,
        class_counts: ArrayLike | None,
        auto_update: bool | None,
        validate_args: bool,
    ) -> None:
        super().__init__()
        _check_num_classes(num_classes)
        _check_seesaw_hyper_parameters(p, q, eps)
        check_reduction(reduction)
        if class_counts is None:
            counts = torch.zeros(0 if num_classes is None else num_classes, dtype=torch.float64)
        else:
            counts = as_class_counts(class_counts).clone()
            check_class_counts(counts, num_classes, allow_zero=True)
        self.p = p
        self.q = q
        self.eps = eps
        self.reduction = reduction
        self.auto_update = class_counts is None if auto_update is None else auto_update
        self.validate_args = validate_args
        self.register_buffer("cum_samples", counts)

    @property
    def num_classes(self) -> int | None:
        """``C``, or ``None`` before the first batch when built without it."""
        return self.cum_samples.numel() or None

    @property
    def class_counts(self) -> torch.Tensor:
        """The counts the loss uses: ``cum_samples`` under the functions' argument name."""
        return self.cum_samples

    def _prepare(self, logits: torch.Tensor) -> None:
        if self.validate_args:
            check_logits(logits)
        if self.cum_samples.numel() == 0:
            self.cum_samples = torch.zeros(logits.shape[1], dtype=torch.float64, device=self.cum_samples.device)
        if self.validate_args:
            _check_device(self.cum_samples, logits, type(self).__name__)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Built without num_classes and not yet run: take the size of the saved counts.
        saved = state_dict.get(prefix + "cum_samples")
        if self.cum_samples.numel() == 0 and isinstance(saved, torch.Tensor) and saved.dim() == 1:
            self.cum_samples = torch.zeros(saved.numel(), dtype=torch.float64, device=self.cum_samples.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, p={self.p}, q={self.q}, eps={self.eps}, "
            f"reduction={self.reduction!r}, auto_update={self.auto_update}"
        )


@LOSSES.register("seesaw")
class SeesawLoss(_SeesawBase):
    """Module form of :func:`seesaw_loss` (Wang et al. 2021) with the cumulative class counts.

    ``cum_samples`` is a float64 buffer (saved in the ``state_dict``; keep it in float64,
    ``.half()`` would round the counts). In training mode with
    ``auto_update``, each forward first adds the batch's non-ignored targets to it, then computes
    the loss with the new counts, as the reference does; in eval mode the counts are frozen.
    With data parallelism each process counts its own batches (so does the reference).

    Args:
        num_classes: ``C``. ``None`` takes it from ``class_counts``, or else from the first batch
            (or a loaded ``state_dict``), so the loss can be built by name without it.
        p, q, eps, reduction: see the function. Paper: ``p = 0.8``, ``q = 2``; reference ``eps = 1e-2``.
        class_counts: ``(C,)`` counts known in advance (e.g. the training set's), used as they are
            unless ``auto_update=True``. Without them the counts start at 0 and are counted
            online, as in the paper.
        auto_update: add each training-mode batch's targets to the counts before its loss;
            default ``True`` without ``class_counts`` and ``False`` with them (adding the online
            count of the same data to the dataset's counts would count it twice).
        validate_args: check the inputs of every forward.
    """

    functional = staticmethod(seesaw_loss)
    target_kind = "index"

    def __init__(
        self,
        num_classes: int | None = None,
        p: float = 0.8,
        q: float = 2.0,
        eps: float = 1e-2,
        reduction: str = "mean",
        ignore_index: int = -100,
        class_counts: ArrayLike | None = None,
        auto_update: bool | None = None,
        validate_args: bool = True,
    ) -> None:
        super().__init__(num_classes, p, q, eps, reduction, class_counts, auto_update, validate_args)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._prepare(logits)
        if self.validate_args:
            check_class_targets(target, logits, ignore_index=self.ignore_index)
            _check_seesaw_common(self.cum_samples, logits.shape[1], self.p, self.q, self.eps, self.reduction)
        if self.training and self.auto_update:
            with torch.no_grad():
                valid = target != self.ignore_index
                self.cum_samples.index_add_(
                    0, target.masked_fill(~valid, 0), valid.to(device=target.device, dtype=torch.float64)
                )
        return seesaw_loss(
            logits,
            target,
            self.cum_samples,
            self.p,
            self.q,
            self.eps,
            self.reduction,
            self.ignore_index,
            validate_args=False,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ignore_index={self.ignore_index}"


@LOSSES.register("sigmoid_seesaw")
class SigmoidSeesawLoss(_SeesawBase):
    """Module form of :func:`sigmoid_seesaw_loss` (not in the paper; see the function).

    ``cum_samples`` counts the positive elements of each class (foreground anchors, for
    RetinaNet), added from each training-mode batch before its loss when ``auto_update``.
    RetinaNet use: ``reduction="sum"``, and the caller divides by the number of foreground anchors.

    Args:
        num_classes: ``C``. ``None`` takes it from ``class_counts``, or else from the first batch
            (or a loaded ``state_dict``), so the loss can be built by name without it.
        p, q, eps, reduction: see the function. Paper: ``p = 0.8``, ``q = 2``; reference ``eps = 1e-2``.
        class_counts: ``(C,)`` counts known in advance (e.g. the training set's), used as they are
            unless ``auto_update=True``. Without them the counts start at 0 and are counted
            online, as in the paper.
        auto_update: add each training-mode batch's targets to the counts before its loss;
            default ``True`` without ``class_counts`` and ``False`` with them (adding the online
            count of the same data to the dataset's counts would count it twice).
        validate_args: check the inputs of every forward.
    """

    functional = staticmethod(sigmoid_seesaw_loss)
    target_kind = "binary"

    def __init__(
        self,
        num_classes: int | None = None,
        p: float = 0.8,
        q: float = 2.0,
        eps: float = 1e-2,
        reduction: str = "mean",
        class_counts: ArrayLike | None = None,
        auto_update: bool | None = None,
        validate_args: bool = True,
    ) -> None:
        super().__init__(num_classes, p, q, eps, reduction, class_counts, auto_update, validate_args)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._prepare(logits)
        if self.validate_args:
            _check_zero_one_targets(targets, logits)
            _check_seesaw_common(self.cum_samples, logits.shape[1], self.p, self.q, self.eps, self.reduction)
        if self.training and self.auto_update:
            with torch.no_grad():
                self.cum_samples += (targets.detach() > 0).sum(0, dtype=torch.float64)
        return sigmoid_seesaw_loss(
            logits, targets, self.cum_samples, self.p, self.q, self.eps, self.reduction, validate_args=False
        )
