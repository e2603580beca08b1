"""Self-adjusting dice loss (Li, Sun, Meng, Liang, Wu, Li. "Dice Loss for Data-imbalanced NLP
Tasks", ACL 2020).

Dice treats false positives and false negatives alike, so the flood of easy negatives ("O"
tags) does not dominate training the way it does under cross-entropy. The self-adjusting form
(the paper's eq. 12) multiplies each probability by ``(1 - p) ** alpha`` to push down
easy examples, and the squared-denominator form (eq. 11, the paper's DSC with the Milletari
et al. denominator) is the one the authors recommend:

    p'_ic = (1 - p_ic) ** alpha * p_ic
    DSC_ic = (2 p'_ic y_ic + smooth) / (p'_ic ** 2 + y_ic ** 2 + smooth)     (square_denominator)
    DSC_ic = (2 p'_ic y_ic + smooth) / (p'_ic + y_ic + smooth)               (otherwise)
    loss_i = sum_c (1 - DSC_ic)

per example ``i`` (token) and class ``c`` with ``p = softmax(z)`` and ``y`` one-hot, as in the
authors' multi-class code (a one-vs-rest dice for each class, summed). Paper defaults:
``smooth = 1``, ``alpha = 0.01``, squared denominator.

What the formula does to confidently wrong examples (tested): the gradient with respect to
the logits shrinks in proportion to the probability of the true class (a bounded loss, unlike
cross-entropy), and with ``alpha > 0`` it changes sign once that probability falls below about
a third of ``alpha`` (0.003 for the paper's 0.01, two classes): the factor ``(1 - p) ** alpha``
also multiplies the probability of the wrong class, which goes to 1, so that class's term
vanishes and the loss falls as the example gets more wrong. On a task where the rare class is
pushed that far early on (two classes at 10:1), training can lock into the majority class;
``alpha = 0`` removes the sign change but not the vanishing pull.

Set-level form (``batch_dice=True``). The paper's Table 1 also gives dice over the whole set,
not per example ("DL": sums over the examples inside the ratio), and the authors' binary code,
which their NER runs (start/end tagging in MRC form, the CoNLL-2003 93.33 of their Table 4) use,
sums over every position of the batch. For each class ``c``, over the non-ignored rows ``i`` of
the call:

    DSC_c = (2 sum_i p'_ic y_ic + smooth) / (sum_i p'_ic ** 2 + sum_i y_ic ** 2 + smooth)
    loss  = sum_c (1 - DSC_c)

(``p'`` and ``y`` without squares when ``square_denominator=False``). Each class's term is one
minus a soft F1 of that class over the batch, so a rare class weighs as much as "O" however few
its tokens: an F1-oriented objective, unlike the per-token form, where a token's terms stay
bounded by its own probabilities. There is no per-row loss: ``reduction="none"`` gives the
``(C,)`` terms ``1 - DSC_c``, ``"sum"`` and ``"mean"`` both give their sum (the loss of the one
set), and a call whose rows are all ignored gives 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from equipoise.core.losses._common import LOSSES, power, reduce, upcast
from equipoise.core.validation import (
    check_class_targets,
    check_logits,
    check_non_negative,
    check_positive,
    check_reduction,
)

__all__ = ["DiceLoss", "dice_loss"]


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.01,
    smooth: float = 1.0,
    square_denominator: bool = True,
    ignore_index: int = -100,
    reduction: str = "mean",
    validate_args: bool = True,
    batch_dice: bool = False,
) -> torch.Tensor:
    """Self-adjusting multi-class dice loss (Li et al. 2020); see the module docstring.

    Args:
        logits: ``(N, C)`` scores (flatten ``(batch, seq, C)`` token logits first).
        target: ``(N,)`` integer classes or ``ignore_index``.
        alpha: self-adjusting exponent ``>= 0``. Paper: 0.01.
        smooth: ``gamma`` of the paper, added to numerator and denominator ``> 0``. Paper: 1.
        square_denominator: use ``p'^2 + y^2`` in the denominator. Paper: yes.
        ignore_index: positions with this target contribute nothing; ``"mean"`` averages over
            the other positions (0 when none is left).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        batch_dice: one dice per class over all rows of the call (the paper's set-level "DL"
            form, which the authors' NER code uses) instead of one per row; ``"none"`` then
            gives the ``(C,)`` per-class terms and ``"mean"``/``"sum"`` their sum.
    """
    if not isinstance(batch_dice, bool):
        raise TypeError(f"batch_dice must be True or False, got {batch_dice!r}")
    if validate_args:
        check_logits(logits)
        check_class_targets(target, logits, ignore_index=ignore_index)
        check_reduction(reduction)
        check_non_negative(alpha, "alpha")
        check_positive(smooth, "smooth")
    x = upcast(logits)
    valid = target != ignore_index
    one_hot = F.one_hot(target.masked_fill(~valid, 0), x.shape[1]).to(x.dtype)
    log_p = F.log_softmax(x, dim=1)
    p = log_p.exp()
    if alpha != 0:
        p = power(-torch.expm1(log_p), alpha) * p
    mask = valid.to(x.dtype)
    if batch_dice:
        p, one_hot = p * mask[:, None], one_hot * mask[:, None]  # ignored rows: one_hot says class 0
        intersection = (p * one_hot).sum(dim=0)
        sizes = (p.square() + one_hot if square_denominator else p + one_hot).sum(dim=0)
        per_class = 1.0 - (2.0 * intersection + smooth) / (sizes + smooth)
        return per_class if reduction == "none" else per_class.sum()
    numerator = 2.0 * p * one_hot + smooth
    denominator = (p.square() + one_hot if square_denominator else p + one_hot) + smooth
    loss = (1.0 - numerator / denominator).sum(dim=1)
    return reduce(loss * mask, reduction, denominator=mask.sum())


@LOSSES.register("dice")
class DiceLoss(nn.Module):
    """Module form of :func:`dice_loss` (Li et al. 2020); defaults alpha=0.01, smooth=1, squared denominator.

    ``batch_dice=True``: the set-level form (one dice per class over the rows of a call).
    """

    functional = staticmethod(dice_loss)
    target_kind = "index"

    def __init__(
        self,
        alpha: float = 0.01,
        smooth: float = 1.0,
        square_denominator: bool = True,
        ignore_index: int = -100,
        reduction: str = "mean",
        validate_args: bool = True,
        batch_dice: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(batch_dice, bool):
            raise TypeError(f"batch_dice must be True or False, got {batch_dice!r}")
        check_reduction(reduction)
        check_non_negative(alpha, "alpha")
        check_positive(smooth, "smooth")
        self.alpha = alpha
        self.smooth = smooth
        self.square_denominator = square_denominator
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.validate_args = validate_args
        self.batch_dice = batch_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(
            logits,
            target,
            self.alpha,
            self.smooth,
            self.square_denominator,
            self.ignore_index,
            self.reduction,
            self.validate_args,
            self.batch_dice,
        )

    def extra_repr(self) -> str:
        extra = ", batch_dice=True" if self.batch_dice else ""
        return f"alpha={self.alpha}, smooth={self.smooth}, square_denominator={self.square_denominator}{extra}"
