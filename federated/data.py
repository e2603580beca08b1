"""Datasets for federated simulation, held once as arrays and sliced per client.

A simulated client is *data*, not a process: a set of row indices into one shared training set
(:mod:`equipoise.federated.partition` makes them). :class:`FederatedData` holds that training set
and the test set as NumPy arrays so that the simulation engine can put them in Ray's object store
once and every worker reads them without a copy (Ray maps NumPy arrays from shared memory).
Images stay ``uint8`` there (a quarter of the float32 size: MNIST is 47 MB, CIFAR-10 184 MB) and
are scaled and normalised only for the rows a client trains on, by :meth:`FederatedData.features`.

:func:`load_federated_data` reads the shared copies the rest of equipoise reads (MNIST's idx files,
CIFAR-10 as torchvision's batches or the JPEG image-folder copy, through
:func:`equipoise.vision.data.load_mnist` and :func:`~equipoise.vision.data.load_cifar`); users
without a copy pass ``download=True`` (torchvision fetches them). Decoding the 60,000 CIFAR-10
JPEGs takes a while, so the decoded arrays are cached under :func:`equipoise.core.paths.cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from equipoise.core.paths import cache_dir

__all__ = ["DATASET_STATS", "FederatedData", "load_federated_data"]

# Per-channel mean and standard deviation of the training images, in [0, 1] units.
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


@dataclass
class FederatedData:
    """A training set and a test set as arrays, with how to turn rows into model inputs.

    Args:
        train_x: ``(N, ...)`` inputs: ``uint8`` images ``(N, C, H, W)`` (scaled to [0, 1] and
            normalised by ``mean``/``std`` in :meth:`features`) or floating features used as they are.
        train_y: ``(N,)`` integer labels in ``[0, num_classes)``.
        test_x, test_y: the same for the test set (the server evaluates the global model on it).
        num_classes: the number of classes, ``>= 2``.
        mean, std: per-channel statistics for ``uint8`` images (one value per channel), else ``None``.
        name: a label for reports.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    name: str = "data"

    def __post_init__(self) -> None:
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {self.num_classes!r}")
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
                raise TypeError(
                    f"{split}_x and {split}_y must be NumPy arrays, got {type(x).__name__}, {type(y).__name__}"
                )
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"{split}_y must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
            if len(y) == 0:
                raise ValueError(f"{split}_y is empty")
            if x.ndim < 2 or len(x) != len(y):
                raise ValueError(f"{split}_x has shape {x.shape}, expected ({len(y)}, ...) to match {split}_y")
            if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
                raise ValueError(f"{split}_x must be uint8 images or floating features, got {x.dtype}")
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= self.num_classes:
                bad = low if low < 0 else high
                raise ValueError(f"{split}_y must lie in [0, {self.num_classes}) (num_classes), got {bad}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"train_x rows {self.train_x.shape[1:]} and test_x rows {self.test_x.shape[1:]} differ")
        if self.train_x.dtype == np.uint8:
            channels = self.train_x.shape[1]
            for name in ("mean", "std"):
                value = getattr(self, name)
                if value is None or len(value) != channels:
                    raise ValueError(f"{name} needs one value per channel ({channels}) for uint8 images, got {value!r}")
            if min(self.std) <= 0:
                raise ValueError(f"std must be > 0, got {self.std!r}")
            self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input row, e.g. ``(1, 28, 28)``."""
        return tuple(self.train_x.shape[1:])

    def features(self, rows: np.ndarray | None = None, split: str = "train") -> torch.Tensor:
        """The model inputs of ``rows`` of ``split`` (all rows when ``None``) as a float32 tensor."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        x = getattr(self, f"{split}_x")
        x = x if rows is None else x[rows]
        if x.dtype != np.uint8:
            return torch.tensor(x, dtype=torch.float32)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32).view(shape)
        return (torch.from_numpy(np.array(x, dtype=np.float32)) / 255.0 - mean) / std

    def labels(self, rows: np.ndarray | None = None, split: str = "train") -> torch.Tensor:
        """The labels of ``rows`` of ``split`` (all rows when ``None``) as an int64 tensor."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        y = getattr(self, f"{split}_y")
        return torch.tensor(y if rows is None else y[rows], dtype=torch.int64)


def load_federated_data(name: str, root: str | Path | None = None, download: bool = False) -> FederatedData:
    """MNIST (``"mnist"``) or CIFAR-10 (``"cifar10"``): the full training and test sets, ``uint8``.

    ``root`` defaults to ``$EQUIPOISE_DATA`` (see :func:`equipoise.core.paths.data_root`); a missing
    copy raises ``FileNotFoundError`` saying where to put it, or is fetched with ``download=True``.
    """
    if name not in DATASET_STATS:
        raise ValueError(f"name must be one of {sorted(DATASET_STATS)}, got {name!r}")
    from equipoise.vision.data import load_cifar, load_mnist

    mean, std = DATASET_STATS[name]
    if name == "mnist":
        train, test = load_mnist(root, train=True, download=download), load_mnist(root, train=False, download=download)
        arrays = [train.data.numpy()[:, None], train.targets.numpy(), test.data.numpy()[:, None], test.targets.numpy()]
    else:
        arrays = _cifar10_arrays(load_cifar(10, root, train=True, download=download), load_cifar(10, root, train=False))
    return FederatedData(*arrays, num_classes=10, mean=mean, std=std, name=name)


def _cifar10_arrays(train: Any, test: Any) -> list[np.ndarray]:
    """``uint8 (N, 3, 32, 32)`` images and int64 labels of both splits; decoded JPEGs are cached."""
    if hasattr(train, "data"):  # torchvision's CIFAR10: (N, 32, 32, 3) uint8 in memory
        return [
            np.ascontiguousarray(train.data.transpose(0, 3, 1, 2)),
            np.asarray(train.targets, dtype=np.int64),
            np.ascontiguousarray(test.data.transpose(0, 3, 1, 2)),
            np.asarray(test.targets, dtype=np.int64),
        ]
    key = hashlib.sha256(json.dumps([str(train.root), str(test.root), len(train), len(test)]).encode()).hexdigest()
    path = cache_dir() / "federated" / f"cifar10-{key[:16]}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return [cached[name] for name in ("train_x", "train_y", "test_x", "test_y")]
    arrays = []
    for dataset in (train, test):
        images = np.stack([np.asarray(dataset.loader(file), dtype=np.uint8) for file, _ in dataset.samples])
        arrays += [np.ascontiguousarray(images.transpose(0, 3, 1, 2)), np.asarray(dataset.targets, dtype=np.int64)]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, **dict(zip(("train_x", "train_y", "test_x", "test_y"), arrays, strict=True)))
    temporary.replace(path)
    return arrays
