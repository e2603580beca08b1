"""Imbalance-aware losses, each as a function (the math) and an ``nn.Module`` (hyper-parameters
and class statistics as buffers), built by name through one registry.

>>> from equipoise.core.losses import build_loss, available_losses
>>> loss = build_loss("ldam", class_counts=[500, 50, 5])

| name | paper |
|---|---|
| cross_entropy | baseline (``F.cross_entropy``) |
| focal, sigmoid_focal | Lin et al. 2017, Focal Loss for Dense Object Detection |
| class_balanced | Cui et al. 2019, Class-Balanced Loss Based on Effective Number of Samples |
| ldam, ldam_hinge | Cao et al. 2019, LDAM (+ ``DeferredReweighting`` for LDAM-DRW) |
| balanced_softmax | Ren et al. 2020, Balanced Meta-Softmax |
| logit_adjusted | Menon et al. 2021, Long-tail learning via logit adjustment |
| vs | Kini et al. 2021, Label-imbalanced and group-sensitive classification (VS loss) |
| dice | Li et al. 2020, Dice Loss for Data-imbalanced NLP Tasks |
| asymmetric | Ridnik et al. 2021, Asymmetric Loss for Multi-Label Classification |
| dual_focal | Tao et al. 2023, Dual Focal Loss for Calibration |
| squentropy | Hui et al. 2023, Cut your Losses with Squentropy |
| eqlv2 | Tan et al. 2021, Equalization Loss v2 (sigmoid detection loss, online gradient statistics) |
| seesaw, sigmoid_seesaw | Wang et al. 2021, Seesaw Loss for Long-Tailed Instance Segmentation (sigmoid: not in paper) |
"""

from __future__ import annotations

from typing import Any

from torch import nn

from equipoise.core.losses._common import LOSSES
from equipoise.core.losses.asl import AsymmetricLoss, asymmetric_loss
from equipoise.core.losses.class_balanced import (
    ClassBalancedLoss,
    class_balanced_loss,
    effective_number_weights,
    inverse_frequency_weights,
)
from equipoise.core.losses.cross_entropy import CrossEntropyLoss, cross_entropy
from equipoise.core.losses.dice import DiceLoss, dice_loss
from equipoise.core.losses.dual_focal import DualFocalLoss, dual_focal_loss
from equipoise.core.losses.eqlv2 import EQLv2Loss, eqlv2_loss, eqlv2_weights
from equipoise.core.losses.focal import FocalLoss, SigmoidFocalLoss, sigmoid_focal_loss, softmax_focal_loss
from equipoise.core.losses.ldam import (
    DeferredReweighting,
    LDAMHingeLoss,
    LDAMLoss,
    NormedLinear,
    ldam_hinge_loss,
    ldam_loss,
    ldam_margins,
)
from equipoise.core.losses.logit_adjust import (
    BalancedSoftmaxLoss,
    LogitAdjustedLoss,
    VSLoss,
    balanced_softmax_loss,
    logit_adjusted_loss,
    priors_from_counts,
    vs_loss,
)
from equipoise.core.losses.seesaw import SeesawLoss, SigmoidSeesawLoss, seesaw_loss, sigmoid_seesaw_loss
from equipoise.core.losses.squentropy import SquentropyLoss, squentropy_loss

__all__ = [
    "LOSSES",
    "AsymmetricLoss",
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "CrossEntropyLoss",
    "DeferredReweighting",
    "DiceLoss",
    "DualFocalLoss",
    "EQLv2Loss",
    "FocalLoss",
    "LDAMHingeLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "NormedLinear",
    "SeesawLoss",
    "SigmoidFocalLoss",
    "SigmoidSeesawLoss",
    "SquentropyLoss",
    "VSLoss",
    "asymmetric_loss",
    "available_losses",
    "balanced_softmax_loss",
    "build_loss",
    "class_balanced_loss",
    "cross_entropy",
    "dice_loss",
    "dual_focal_loss",
    "effective_number_weights",
    "eqlv2_loss",
    "eqlv2_weights",
    "inverse_frequency_weights",
    "ldam_hinge_loss",
    "ldam_loss",
    "ldam_margins",
    "logit_adjusted_loss",
    "priors_from_counts",
    "seesaw_loss",
    "sigmoid_focal_loss",
    "sigmoid_seesaw_loss",
    "softmax_focal_loss",
    "squentropy_loss",
    "vs_loss",
]


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss module registered as ``name``: ``build_loss("ldam", class_counts=counts)``.

    Unknown names raise ``ValueError`` listing the known ones.
    """
    return LOSSES.build(name, **kwargs)


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss`, sorted."""
    return LOSSES.names()
