"""equipoise.detection: dense detection, where background anchors outnumber objects a thousand to one.

- ``equipoise.detection.data``: COCO-format data through pycocotools (any ``instances_*.json`` and
  image folder; COCO128 offline), degenerate and crowd boxes dropped with a count, LVIS frequency
  groups.
- ``equipoise.detection.models``: torchvision's RetinaNet (ResNet-50-FPN or MobileNetV2-FPN) whose
  head's classification loss is any core sigmoid loss by name (focal, alpha-balanced BCE, EQLv2,
  Seesaw), normalised by the foreground anchors, with the prior-probability bias.
- ``equipoise.detection.train``: a training run from a recipe (``tools/train_detection.py``):
  detectron2's schedule, repeat-factor sampling, checkpoint/resume, AMP on a GPU.
- ``equipoise.detection.metrics`` / ``equipoise.detection.evaluate``: COCO AP (pycocotools), per
  class and by frequency group, with report and plots (``tools/eval_detection.py``).
- ``equipoise.detection.detectron2_backend``: the same losses in a detectron2 RetinaNet (when detectron2 is
  installed).

The names below are imported on first use, so ``import equipoise.detection`` loads nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CocoDetection": "data",
    "collate": "data",
    "frequency_groups": "data",
    "load_coco128": "data",
    "LossClassificationHead": "models",
    "build_retinanet": "models",
    "DetectionTrainConfig": "train",
    "load_detection_train_config": "train",
    "load_trained_model": "train",
    "train_detection": "train",
    "coco_evaluation": "metrics",
    "evaluate_detection": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'equipoise.detection' has no attribute {name!r}")
    return getattr(importlib.import_module(f"equipoise.detection.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
