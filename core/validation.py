"""Shared argument checks for the public boundary of every core component.

Each check raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong value or
shape) naming the argument and the offending value, so that bad input never turns into a
silent NaN or a wrong answer further down. Internal helpers trust their inputs; callers in hot
loops that validated their data once pass ``validate_args=False`` to skip these checks (as
torchmetrics does).

Checks on CUDA tensors read values back to the host (``.item()``), which synchronises the
device: that is the price of validation, and the reason it can be switched off.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "REDUCTIONS",
    "as_class_counts",
    "check_binary_targets",
    "check_class_counts",
    "check_class_priors",
    "check_class_weight",
    "check_class_targets",
    "check_int",
    "check_logits",
    "check_non_negative",
    "check_positive",
    "check_reduction",
]

REDUCTIONS = ("none", "mean", "sum")

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


def check_int(
    value: object, name: str, minimum: int = 0, error: type[Exception] = ValueError, numpy: bool = True
) -> None:
    """Raise ``error`` (``ValueError`` or a subclass such as a config error) unless ``value`` is an
    integer (not ``bool``) ``>= minimum``; NumPy integers count unless ``numpy=False`` (configs,
    which are written out as YAML, take Python ints only)."""
    kind = numbers.Integral if numpy else int
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        raise error(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``"none"``, ``"mean"``, ``"sum"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_non_negative(value: float, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0 (NaN and inf included)."""
    if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
        raise ValueError(f"{name} must be >= 0 and finite, got {value!r}")


def check_positive(value: float, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise ValueError(f"{name} must be > 0 and finite, got {value!r}")


def check_logits(logits: torch.Tensor, name: str = "logits", ndim: int | None = 2) -> None:
    """Check a floating tensor of scores: right rank, non-empty, finite.

    ``ndim=2`` asks for ``(N, C)``; ``ndim=None`` accepts any rank of at least one.
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")
    if ndim is not None and logits.dim() != ndim:
        expected = "(N, C)" if ndim == 2 else f"{ndim} dimensions"
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(logits.shape)}")
    if logits.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    if logits.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(logits.shape)}): nothing to compute a loss on")
    # aminmax is one reduction pass (NaN propagates into it): far cheaper than isfinite().all().
    low, high = torch.aminmax(logits.detach())
    if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
        finite = torch.isfinite(logits)
        index = tuple(int(i) for i in torch.nonzero(~finite)[0])
        raise ValueError(f"{name} contains a non-finite value {logits[index].item()} at index {index}")


def check_class_targets(
    target: torch.Tensor,
    logits: torch.Tensor,
    name: str = "target",
    ignore_index: int | None = None,
) -> None:
    """Check integer class targets ``(N,)`` against logits ``(N, C)``: dtype, shape and range.

    Values must lie in ``[0, C)``; ``ignore_index`` (when given) is also allowed.
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {target.dtype}")
    if target.shape != logits.shape[:1]:
        raise ValueError(
            f"{name} must have shape (N,) = {tuple(logits.shape[:1])} to match logits of shape "
            f"{tuple(logits.shape)}, got shape {tuple(target.shape)}"
        )
    num_classes = logits.shape[1]
    if target.numel() == 0:
        return
    low, high = torch.aminmax(target)
    if int(low) >= 0 and int(high) < num_classes:
        return
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bool(bad.any()):
        position = int(torch.nonzero(bad)[0, 0])
        allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or ignore_index={ignore_index}")
        raise ValueError(
            f"{name}[{position}] = {int(target[position])} is outside {allowed} for logits with {num_classes} classes"
        )


def check_binary_targets(targets: torch.Tensor, logits: torch.Tensor, name: str = "targets") -> None:
    """Check float targets of the logits' shape with values in ``[0, 1]`` (binary or multi-label)."""
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(targets).__name__}")
    if not targets.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of 0/1 (or soft) labels, got dtype {targets.dtype}")
    if targets.shape != logits.shape:
        raise ValueError(f"{name} must have the logits' shape {tuple(logits.shape)}, got shape {tuple(targets.shape)}")
    low, high = torch.aminmax(targets.detach())  # NaN propagates, and fails both tests below
    if not (float(low) >= 0 and float(high) <= 1):
        bad = ~((targets >= 0) & (targets <= 1))
        index = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"{name} must lie in [0, 1], got {targets[index].item()} at index {index}")


def as_class_counts(class_counts: ArrayLike, name: str = "class_counts") -> torch.Tensor:
    """Convert counts given as a tensor, NumPy array or sequence to a float64 tensor, unchecked."""
    if isinstance(class_counts, torch.Tensor):
        if class_counts.dtype == torch.bool or class_counts.is_complex():
            raise TypeError(f"{name} must be numeric, got dtype {class_counts.dtype}")
        return class_counts.detach().to(torch.float64)
    try:
        array = np.asarray(class_counts, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a sequence of numbers, got {class_counts!r}") from error
    return torch.from_numpy(array)


def check_class_counts(
    class_counts: torch.Tensor,
    num_classes: int | None = None,
    name: str = "class_counts",
    allow_zero: bool = False,
    reason: str = "the formula divides by each count",
) -> None:
    """Check per-class counts: 1-D, one per class, finite, non-negative, non-zero unless allowed.

    ``reason`` says why a zero count is refused and appears in the error message.
    """
    if not isinstance(class_counts, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(class_counts).__name__}")
    if class_counts.dim() != 1 or class_counts.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {tuple(class_counts.shape)}")
    if num_classes is not None and class_counts.numel() != num_classes:
        raise ValueError(f"{name} must have one entry per class ({num_classes}), got {class_counts.numel()} entries")
    finite = torch.isfinite(class_counts)
    if not bool(finite.all()):
        index = int(torch.nonzero(~finite)[0, 0])
        raise ValueError(f"{name}[{index}] = {class_counts[index].item()} is not finite")
    negative = class_counts < 0
    if bool(negative.any()):
        index = int(torch.nonzero(negative)[0, 0])
        raise ValueError(f"{name}[{index}] = {class_counts[index].item()} is negative; counts must be >= 0")
    if not allow_zero:
        zero = class_counts == 0
        if bool(zero.any()):
            index = int(torch.nonzero(zero)[0, 0])
            raise ValueError(
                f"{name}[{index}] is 0, but {reason}: drop classes that never occur, or count them at least once"
            )


def check_class_priors(class_priors: torch.Tensor, num_classes: int | None = None, name: str = "class_priors") -> None:
    """Check class priors: 1-D, one per class, positive, summing to 1 within 1e-3."""
    check_class_counts(class_priors, num_classes, name=name, reason="the formula takes log(prior)")
    total = float(class_priors.sum())
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f"{name} must sum to 1 (within 1e-3), got a sum of {total:.6g}")


def check_class_weight(weight: torch.Tensor, num_classes: int, name: str = "weight") -> None:
    """Check per-class loss weights: a floating 1-D tensor of ``num_classes`` finite values >= 0."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {weight.dtype}")
    check_class_counts(weight, num_classes, name=name, allow_zero=True)
