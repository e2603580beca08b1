"""RetinaNet (Lin, Goyal, Girshick, He, Dollar. "Focal Loss for Dense Object Detection", ICCV 2017)
on torchvision, with the classification loss of the head taken from the core by name.

>>> from equipoise.detection.models import build_retinanet
>>> model = build_retinanet(num_classes=80, backbone="mobilenet_v2_fpn", loss="sigmoid_focal",
...                         min_size=320, max_size=512)                         # CPU-sized
>>> model = build_retinanet(num_classes=1203, loss="eqlv2", backbone="resnet50_fpn")

torchvision supplies the detector: anchors (3 scales x 3 aspect ratios on P3-P7), the matcher
(IoU >= 0.5 foreground, < 0.4 background, in between ignored), the box-regression head and loss,
post-processing and the resizing transform. What is replaced is the one thing torchvision fixes:
the classification loss of :class:`LossClassificationHead`, any registered core loss that takes
``(logits, one_hot_targets)`` of shape ``(anchors, classes)`` with ``reduction="sum"``:

=================  ======================================================  =======================
loss               paper                                                   defaults (``loss_options``)
=================  ======================================================  =======================
``sigmoid_focal``  Lin et al. 2017, focal loss                             alpha 0.25, gamma 2
``sigmoid_focal``  the same paper's alpha-balanced CE baseline (gamma 0)   alpha 0.75, gamma 0
``eqlv2``          Tan et al. 2021, Equalization Loss v2                   gamma 12, mu 0.8, alpha 4
``sigmoid_seesaw`` Wang et al. 2021, Seesaw loss (sigmoid form)            p 0.8, q 2
=================  ======================================================  =======================

The loss is normalised by the number of foreground anchors, as the paper does ("normalized by
the number of anchors assigned to a ground-truth box"): by default over the whole batch, as
detectron2's RetinaNet does (one call of the loss per batch, so stateful losses such as EQLv2's
gradient statistics and Seesaw's class counts see each batch once); ``normalizer="image"``
normalises each image by its own count and averages the images, which is what torchvision's stock
head does (equal values for one image; tested against it). The classification bias starts at
``-log((1 - pi) / pi)`` with the paper's prior ``pi = 0.01``.

Backbones: ``resnet50_fpn`` (torchvision's ``retinanet_resnet50_fpn`` layout: ResNet-50 C3-C5, FPN
with P6/P7 from P5) and ``mobilenet_v2_fpn`` (MobileNetV2 features at strides 8, 16 and 32 (blocks
6, 13 and 18), the same FPN and P6/P7, so the same five anchor levels). Pretrained ImageNet
weights are torchvision's files, verified by sha256 before they are read with
``weights_only=True`` (:func:`backbone_state_dict`); batch norms of a pretrained backbone are
frozen (``FrozenBatchNorm2d``), as in torchvision's detection builders.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import mobilenet_v2, resnet50
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetClassificationHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from equipoise.core.checkpoint import load_state_dict_file
from equipoise.core.losses import LOSSES
from equipoise.core.paths import data_root
from equipoise.core.registry import Registry

__all__ = [
    "BACKBONES",
    "IMAGENET_WEIGHTS",
    "LossClassificationHead",
    "backbone_state_dict",
    "build_retinanet",
    "head_loss",
]

BACKBONES: Registry = Registry("detection backbone")

#: torchvision's published ImageNet weights: file name, URL and sha256 (the full digest where it was
#: verified here, else the prefix torchvision's file name carries and its own download checks).
IMAGENET_WEIGHTS: dict[str, dict[str, str]] = {
    "mobilenet_v2": {
        "file": "mobilenet_v2-b0353104.pth",
        "url": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        "sha256": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    },
    "resnet50": {
        "file": "resnet50-0676ba61.pth",
        "url": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        "sha256": "0676ba61",
    },
}
_NORMALIZERS = ("batch", "image")


def backbone_state_dict(architecture: str, weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ImageNet ``state_dict`` of ``architecture`` (``"mobilenet_v2"`` or ``"resnet50"``).

    ``weights="imagenet"`` looks for torchvision's file (:data:`IMAGENET_WEIGHTS`) in
    ``$EQUIPOISE_DATA/weights``, then in torch hub's checkpoint folder, and downloads it there
    (torch hub's downloader, with its sha256-prefix check) when it is in neither; any other value
    is a path to such a file. The file is verified against the published sha256 (a path of one's
    own is verified only when its name is the published one) and read with ``weights_only=True``.
    """
    if architecture not in IMAGENET_WEIGHTS:
        raise ValueError(f"architecture must be one of {sorted(IMAGENET_WEIGHTS)}, got {architecture!r}")
    known = IMAGENET_WEIGHTS[architecture]
    if weights != "imagenet":
        path = Path(weights).expanduser()
        return load_state_dict_file(path, known["sha256"] if path.name == known["file"] else None)
    candidates = []
    if os.environ.get("EQUIPOISE_DATA"):
        candidates.append(data_root() / "weights" / known["file"])
    hub = Path(torch.hub.get_dir()) / "checkpoints" / known["file"]
    candidates.append(hub)
    for path in candidates:
        if path.is_file():
            return load_state_dict_file(path, known["sha256"])
    hub.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(known["url"], str(hub), hash_prefix=known["sha256"][:8])
    except Exception as error:  # no network, or a bad transfer: say where the file goes
        raise FileNotFoundError(
            f"ImageNet weights for {architecture} not found in {[str(path) for path in candidates]} and the "
            f"download from {known['url']} failed ({error}); put {known['file']} in one of those folders"
        ) from error
    return load_state_dict_file(hub, known["sha256"])


def _frozen(model: nn.Module, trainable: list[nn.Module]) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for module in trainable:
        for parameter in module.parameters():
            parameter.requires_grad_(True)


def _check_trainable(trainable_layers: int, maximum: int) -> None:
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int):
        raise TypeError(f"trainable_backbone_layers must be an int, got {type(trainable_layers).__name__}")
    if not 0 <= trainable_layers <= maximum:
        raise ValueError(f"trainable_backbone_layers must be in [0, {maximum}], got {trainable_layers}")


@BACKBONES.register("resnet50_fpn")
def resnet50_fpn(weights: str | os.PathLike | None, trainable_layers: int = 3, fpn_channels: int = 256) -> nn.Module:
    """ResNet-50 C3-C5 + FPN + P6/P7 (torchvision's ``retinanet_resnet50_fpn`` backbone).

    ``trainable_layers`` counts ResNet stages from the top (``layer4``, ``layer3``, ... ``conv1``),
    0 to 5; torchvision's default for a pretrained backbone is 3.
    """
    _check_trainable(trainable_layers, 5)
    norm_layer = FrozenBatchNorm2d if weights is not None else nn.BatchNorm2d
    body = resnet50(weights=None, norm_layer=norm_layer)
    if weights is not None:
        body.load_state_dict(backbone_state_dict("resnet50", weights))
    stages = [body.layer4, body.layer3, body.layer2, body.layer1, nn.ModuleList([body.conv1, body.bn1])]
    _frozen(body, stages[:trainable_layers])
    return BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[512, 1024, 2048],
        out_channels=fpn_channels,
        extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
    )


#: MobileNetV2 ``features`` blocks where each resolution ends (strides 2, 4, 8, 16, 32): the stages.
_MOBILENET_STAGE_ENDS = (1, 3, 6, 13, 18)


@BACKBONES.register("mobilenet_v2_fpn")
def mobilenet_v2_fpn(
    weights: str | os.PathLike | None, trainable_layers: int = 3, fpn_channels: int = 256
) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018) blocks 6, 13, 18 (strides 8, 16, 32) + FPN + P6/P7.

    ``trainable_layers`` counts the five resolution stages from the top (0 to 5). torchvision's
    own ``mobilenet_backbone`` returns only the last two stages (for Faster R-CNN's two-level
    FPN); RetinaNet's five anchor levels need P3-P5, hence this builder.
    """
    _check_trainable(trainable_layers, 5)
    norm_layer = FrozenBatchNorm2d if weights is not None else nn.BatchNorm2d
    network = mobilenet_v2(weights=None, norm_layer=norm_layer)
    if weights is not None:
        network.load_state_dict(backbone_state_dict("mobilenet_v2", weights))
    features = network.features
    starts = (0, *(end + 1 for end in _MOBILENET_STAGE_ENDS[:-1]))
    stages = [features[start : end + 1] for start, end in zip(starts, _MOBILENET_STAGE_ENDS)]
    _frozen(features, stages[len(stages) - trainable_layers :])
    return BackboneWithFPN(
        features,
        return_layers={"6": "0", "13": "1", "18": "2"},
        in_channels_list=[32, 96, 1280],
        out_channels=fpn_channels,
        extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
    )


def head_loss(name: str, num_classes: int, options: Mapping[str, Any] | None = None) -> nn.Module:
    """The core loss ``name`` for the head: ``reduction="sum"``, and ``num_classes`` when it takes one."""
    loss_class = LOSSES.get(name)
    options = dict(options or {})
    for reserved in ("reduction", "num_classes"):
        if reserved in options:
            raise ValueError(f"loss_options must not set {reserved!r}: the detection head sets it")
    parameters = inspect.signature(loss_class).parameters
    if "num_classes" in parameters:
        options["num_classes"] = num_classes
    if getattr(loss_class, "target_kind", "binary") == "index" or "reduction" not in parameters:
        raise ValueError(
            f"loss {name!r} takes class indices; the RetinaNet head needs a per-class sigmoid loss on one-hot "
            "targets (e.g. sigmoid_focal, eqlv2, sigmoid_seesaw)"
        )
    return loss_class(reduction="sum", **options)


class LossClassificationHead(RetinaNetClassificationHead):
    """torchvision's RetinaNet classification head whose loss is ``loss`` (module docstring).

    Same layers and initialisation as torchvision's (four 3x3 conv + ReLU, then one 3x3 conv with
    ``num_anchors * num_classes`` outputs, bias ``-log((1 - prior) / prior)``), so its weights load
    into and from a stock head. ``compute_loss`` gathers the anchors that are not ignored, with
    one-hot targets (all zeros for background), and calls ``loss`` (``reduction="sum"``) on them.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        loss: nn.Module,
        prior_probability: float = 0.01,
        normalizer: str = "batch",
        norm_layer: Any = None,
    ) -> None:
        if not 0 < prior_probability < 1:
            raise ValueError(f"prior_probability must be in (0, 1), got {prior_probability}")
        if normalizer not in _NORMALIZERS:
            raise ValueError(f"normalizer must be one of {_NORMALIZERS}, got {normalizer!r}")
        super().__init__(in_channels, num_anchors, num_classes, prior_probability, norm_layer)
        self.loss = loss
        self.normalizer = normalizer

    def compute_loss(
        self, targets: list[dict[str, torch.Tensor]], head_outputs: dict[str, torch.Tensor], matched_idxs: list
    ) -> torch.Tensor:
        logits, one_hots, foreground = [], [], []
        for target, image_logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs):
            is_foreground = matched >= 0
            one_hot = torch.zeros_like(image_logits)
            one_hot[is_foreground, target["labels"][matched[is_foreground]]] = 1.0
            valid = matched != self.BETWEEN_THRESHOLDS
            logits.append(image_logits[valid])
            one_hots.append(one_hot[valid])
            foreground.append(int(is_foreground.sum()))
        if self.normalizer == "image":
            losses = [self.loss(x, y) / max(1, n) for x, y, n in zip(logits, one_hots, foreground)]
            return sum(losses) / max(1, len(targets))
        return self.loss(torch.cat(logits), torch.cat(one_hots)) / max(1, sum(foreground))


def build_retinanet(
    num_classes: int,
    backbone: str = "mobilenet_v2_fpn",
    loss: str = "sigmoid_focal",
    loss_options: Mapping[str, Any] | None = None,
    backbone_weights: str | os.PathLike | None = "imagenet",
    trainable_backbone_layers: int = 3,
    min_size: int = 800,
    max_size: int = 1333,
    prior_probability: float = 0.01,
    normalizer: str = "batch",
    fpn_channels: int = 256,
    **retinanet_options: Any,
) -> RetinaNet:
    """A torchvision ``RetinaNet`` with the core loss ``loss`` in its classification head.

    Args:
        num_classes: foreground classes (the head has one sigmoid per class; no background).
        backbone: a :data:`BACKBONES` name (``"mobilenet_v2_fpn"``, ``"resnet50_fpn"``).
        loss, loss_options: the head's classification loss (:func:`head_loss`).
        backbone_weights: ``"imagenet"``, a path to torchvision's ImageNet file, or ``None``
            (random backbone with trainable batch norms).
        min_size, max_size: torchvision's resize (shorter side, cap on the longer). COCO: 800/1333;
            small values for CPU runs.
        prior_probability: the paper's ``pi`` for the classification bias (0.01).
        normalizer: ``"batch"`` (paper, detectron2) or ``"image"`` (torchvision).
        retinanet_options: passed to ``torchvision.models.detection.RetinaNet`` (``score_thresh``,
            ``nms_thresh``, ``detections_per_img``, ``topk_candidates``, ...).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    for name, value in (("min_size", min_size), ("max_size", max_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 32:
            raise ValueError(f"{name} must be an int >= 32, got {value!r}")
    if max_size < min_size:
        raise ValueError(f"max_size must be >= min_size, got max_size={max_size}, min_size={min_size}")
    body = BACKBONES.build(
        backbone, weights=backbone_weights, trainable_layers=trainable_backbone_layers, fpn_channels=fpn_channels
    )
    model = RetinaNet(body, num_classes, min_size=min_size, max_size=max_size, **retinanet_options)
    num_anchors = model.head.classification_head.num_anchors
    model.head.classification_head = LossClassificationHead(
        body.out_channels,
        num_anchors,
        num_classes,
        head_loss(loss, num_classes, loss_options),
        prior_probability=prior_probability,
        normalizer=normalizer,
    )
    return model
