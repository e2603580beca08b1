"""Small networks of the federated-learning literature, built the same way on every client.

:class:`SimpleCNN` is the "simple CNN" of NIID-Bench (Li, Diao, Chen, He 2022, "Federated Learning
on Non-IID Data Silos: An Experimental Study", ICDE; Flower's ``niid_bench`` baseline uses the same
network): LeNet-5's layout, two 5x5 convolutions (6 and 16 channels) each followed by ReLU and 2x2
max pooling, then fully connected layers of 120 and 84 ReLU units and a linear classifier. For
3x32x32 CIFAR-10 images the flattened feature map is 16x5x5; for 1x28x28 MNIST it is 16x4x4.

The module imports nothing but torch, so a benchmark environment without equipoise's other
dependencies can load it by file path (``tools/benchmarks/flower_mnist.py`` does, to train the
very same network under Flower).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SimpleCNN", "simple_cnn"]


class SimpleCNN(nn.Module):
    """NIID-Bench's simple CNN: conv(6, 5x5)-pool-conv(16, 5x5)-pool-fc(120)-fc(84)-fc(num_classes).

    Args:
        in_channels: image channels, ``>= 1`` (1 for MNIST, 3 for CIFAR-10).
        num_classes: output width, ``>= 2``.
        image_size: the side of the square input image, ``>= 16`` (28 for MNIST, 32 for CIFAR-10);
            sets the width of the first fully connected layer.

    Shapes: ``(N, in_channels, image_size, image_size)`` floats in, ``(N, num_classes)`` logits out.
    The last layer is ``self.classifier`` (an ``nn.Linear(84, num_classes)``), which
    :func:`equipoise.federated.client.attach_etf_head` can replace by a fixed simplex-ETF head.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        for name, value, minimum in (("in_channels", in_channels, 1), ("num_classes", num_classes, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
            raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
        side = ((image_size - 4) // 2 - 4) // 2
        self.in_channels, self.num_classes, self.image_size = in_channels, num_classes, image_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.hidden = nn.Sequential(nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU())
        self.classifier = nn.Linear(84, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        return self.classifier(self.hidden(self.features(images)))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}, image_size={self.image_size}"


def simple_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> SimpleCNN:
    """Build a :class:`SimpleCNN` (the factory the simulation engine calls once per worker)."""
    return SimpleCNN(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
