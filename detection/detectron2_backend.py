"""The equipoise head losses in detectron2's RetinaNet (detectron2 is Lin et al.'s reference code base).

detectron2 is not on PyPI: it builds from source against the installed torch (README, "Detection"):

    pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'

Then, from a detectron2 config::

    from detectron2.config import get_cfg
    from equipoise.detection.detectron2_backend import add_equipoise_config   # registers the meta-arch

    cfg = get_cfg()
    add_equipoise_config(cfg)
    cfg.merge_from_file("configs/COCO-Detection/retinanet_R_50_FPN_1x.yaml")   # detectron2's own file
    cfg.MODEL.META_ARCHITECTURE = "EquipoiseRetinaNet"
    cfg.MODEL.EQUIPOISE.LOSS = "eqlv2"                                        # any core sigmoid loss
    cfg.MODEL.EQUIPOISE.LOSS_OPTIONS = "{gamma: 12, mu: 0.8, alpha: 4}"        # YAML, the loss's options

:class:`EquipoiseRetinaNet` is detectron2's ``RetinaNet`` with the classification loss replaced by
:func:`equipoise.detection.models.head_loss` (the same losses as the torchvision engine), on the
same anchors detectron2 labels (ignored anchors left out, background rows all zero) and divided by
detectron2's own normaliser (a moving average of the foreground-anchor count). detectron2 computes
its focal loss and the box loss together in ``RetinaNet.losses``; the subclass keeps that method's
box loss and normaliser and replaces ``loss_cls`` (the stock focal term is computed and dropped,
which keeps the subclass independent of detectron2's private box-loss helpers). The prior
probability is detectron2's ``MODEL.RETINANET.PRIOR_PROB`` (0.01, as the paper).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import yaml

try:
    from detectron2.config import CfgNode, configurable
    from detectron2.layers import cat
    from detectron2.modeling import META_ARCH_REGISTRY
    from detectron2.modeling.meta_arch.retinanet import RetinaNet
except ImportError as error:  # pragma: no cover - the message says what to do
    raise ImportError(
        "equipoise.detection.detectron2_backend needs detectron2, which builds from source: "
        "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git' "
        f"(see README, Detection); the torchvision engine (equipoise.detection.models) needs nothing more. ({error})"
    ) from error

from equipoise.detection.models import head_loss

__all__ = ["EquipoiseRetinaNet", "add_equipoise_config"]


def add_equipoise_config(cfg: CfgNode) -> CfgNode:
    """Add ``MODEL.EQUIPOISE.LOSS`` (default ``"sigmoid_focal"``) and ``LOSS_OPTIONS`` (YAML mapping, or ``""``)."""
    cfg.MODEL.EQUIPOISE = CfgNode()
    cfg.MODEL.EQUIPOISE.LOSS = "sigmoid_focal"
    cfg.MODEL.EQUIPOISE.LOSS_OPTIONS = ""
    return cfg


def _loss_options(text: str) -> dict[str, Any]:
    options = yaml.safe_load(text) if text else {}
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"MODEL.EQUIPOISE.LOSS_OPTIONS must be a YAML mapping, got {text!r}")
    return options


@META_ARCH_REGISTRY.register()
class EquipoiseRetinaNet(RetinaNet):
    """detectron2's RetinaNet with an equipoise classification loss (module docstring)."""

    @configurable
    def __init__(self, *, head_loss_module: torch.nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head_loss = head_loss_module

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        options = super().from_config(cfg)
        if not hasattr(cfg.MODEL, "EQUIPOISE"):
            raise ValueError("the config has no MODEL.EQUIPOISE section: call add_equipoise_config(cfg) first")
        options["head_loss_module"] = head_loss(
            cfg.MODEL.EQUIPOISE.LOSS, cfg.MODEL.RETINANET.NUM_CLASSES, _loss_options(cfg.MODEL.EQUIPOISE.LOSS_OPTIONS)
        )
        return options

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):  # noqa: ANN001, ANN201
        losses = super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        labels = torch.stack(gt_labels)  # (N, R): -1 ignored, num_classes background
        valid = labels >= 0
        one_hot = F.one_hot(labels[valid], num_classes=self.num_classes + 1)[:, :-1]
        logits = cat(pred_logits, dim=1)[valid]
        losses["loss_cls"] = self.head_loss(logits, one_hot.to(logits.dtype)) / self.loss_normalizer
        return losses
