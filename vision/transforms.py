"""The image transforms of the long-tail papers, by name (``DataConfig.augment``).

- ``cifar``: the LDAM / CB-loss CIFAR pipeline: 4-pixel zero padding + random 32x32 crop,
  horizontal flip, normalisation with the CIFAR-10 channel statistics; evaluation only normalises.
- ``mnist``: normalisation with the MNIST statistics (no augmentation), one channel.
- ``imagenet``: the ImageNet-LT / iNaturalist pipeline of Kang et al. 2020: RandomResizedCrop
  ``image_size`` (224) + flip for training; resize to ``image_size * 8 / 7`` (256) and centre crop
  for evaluation; ImageNet statistics.
- ``none``: tensor conversion only.

torchvision's transforms do the work; this module only names the recipes' pipelines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision import transforms as T

__all__ = ["NORMALIZATION", "build_transform"]

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "mnist": ((0.1307,), (0.3081,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def build_transform(augment: str, train: bool, image_size: int | None = None) -> Callable[[Any], Any]:
    """The transform for ``augment`` (see the module docstring); ``train`` adds the augmentation."""
    if augment == "none":
        return T.ToTensor()
    if augment not in NORMALIZATION:
        raise ValueError(f"augment must be one of {', '.join([*NORMALIZATION, 'none'])}, got {augment!r}")
    normalize = T.Normalize(*NORMALIZATION[augment])
    if augment == "cifar":
        steps = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    elif augment == "mnist":
        steps = []
    else:
        size = image_size or 224
        if train:
            steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
        else:
            steps = [T.Resize(round(size * 8 / 7)), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), normalize])
