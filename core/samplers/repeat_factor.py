"""Repeat factor sampling for multi-label data such as detection images.

Gupta, Dollár, Girshick. "LVIS: A Dataset for Large Vocabulary Instance Segmentation", CVPR
2019 (repeat factor sampling; Appendix B.2 of arXiv:1908.03195v2). Every image ``i`` gets a
repeat factor from the rarest category it contains:

    f_c = (number of images containing at least one instance of c) / (number of images)
    r_c = max(1, sqrt(t / f_c))                   category repeat factor
    r_i = max over the categories c in image i of r_c   (r_i = 1 for an image without annotations)

with the threshold ``t = 0.001`` of the paper: images of a category found in fewer than a
fraction ``t`` of the images are over-sampled, and an image whose rarest category is in a
fraction ``t / 4`` of them appears twice per epoch. An epoch repeats image ``i``
``floor(r_i)`` times plus once more with probability ``r_i - floor(r_i)`` (stochastic
rounding, as detectron2's ``RepeatFactorTrainingSampler`` does, so that ``r_i`` copies are
reached in expectation) and shuffles the list. As every ``r_i >= 1``, every image appears at
least once per epoch, so unlike the class-aware samplers no sample is left out; the epoch has
``sum_i r_i`` indices in expectation, and its exact length changes from epoch to epoch.

:func:`repeat_factors` holds the formula; :class:`RepeatFactorSampler` draws the epochs. The
classes present in each image are given as ``image_labels``, a sequence with one sequence of
class indices per image (duplicates allowed: an image with three cars lists ``0`` three times
or once, to the same effect), or read from a dataset with an ``image_labels()`` method by
:meth:`RepeatFactorSampler.from_dataset`. Single-label data (one class per sample, the
``labels`` every other sampler takes, so that ``SAMPLERS.build(name, labels=...)`` works for
every name) is the special case ``image_labels = [[y] for y in labels]``: ``r_i`` is then
``max(1, sqrt(t * N / n_{y_i}))``.

Why hand-written: torch has no repeat factor sampler, and detectron2's, besides not being a
dependency of equipoise, is built from its dataset dicts (``dataset_dict["annotations"]``) and
yields an endless stream per rank with no epochs. Deliberate differences from detectron2's:

- epochs: the draw of epoch ``e`` depends only on ``(seed, e)`` (``set_epoch``, as every
  equipoise sampler), so a resumed run replays the same epochs, and ``len()`` is defined;
- DDP: every rank draws the same epoch list, pads it by wrapping to a multiple of
  ``num_replicas`` and keeps the positions ``rank, rank + num_replicas, ...``, as
  ``DistributedSampler`` and the class-aware samplers do (detectron2 strides an endless stream,
  which needs no padding but has no epoch boundary);
- precision: repeat factors are float64 and the rounding uniforms too (detectron2 uses
  float32, whose uniforms resolve fractions only to about 6e-8).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from equipoise.core.samplers._common import (
    SAMPLERS,
    _base_seed,
    _check_finite,
    _epoch_generator,
    _rank_share,
    _replicas,
    check_epoch,
)
from equipoise.core.samplers.labels import LabelsLike, as_labels
from equipoise.core.validation import ArrayLike, as_class_counts, check_int

__all__ = ["RepeatFactorSampler", "repeat_factors"]

ImageLabels = Sequence[Sequence[int]]


def repeat_factors(image_labels: ImageLabels, threshold: float = 0.001, num_classes: int | None = None) -> torch.Tensor:
    """The repeat factor ``r_i = max(1, max_{c in image i} sqrt(threshold / f_c))`` of every image.

    See the module docstring for the formula (Gupta et al., LVIS, CVPR 2019).

    Args:
        image_labels: one sequence of class indices per image (list, tuple, NumPy array or 1-D
            tensor of integers >= 0; duplicates count once; an empty one is an image without
            annotations, ``r_i = 1``). ``N`` images, at least one.
        threshold: ``t`` of the paper (default 0.001), > 0: categories in fewer than a fraction
            ``t`` of the images are repeated.
        num_classes: when given, every class index must be ``< num_classes`` (only checked).

    Returns:
        ``(N,)`` float64 tensor, every entry >= 1.
    """
    _check_threshold(threshold)
    return _image_repeat_factors(*_image_class_pairs(image_labels, num_classes), float(threshold))


def _check_threshold(threshold: float) -> None:
    _check_finite(threshold, "threshold")
    if threshold <= 0:
        raise ValueError(
            f"threshold must be > 0 (categories in fewer than this fraction of the images are repeated; "
            f"the paper uses 0.001), got {threshold!r}"
        )


def _image_class_pairs(image_labels: ImageLabels, num_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Check ``image_labels``; return the image and the class of each (image, class) pair, and the image count."""
    if isinstance(image_labels, (str, bytes)) or not isinstance(image_labels, Iterable):
        raise TypeError(
            f"image_labels must be a sequence with one sequence of class indices per image, "
            f"got {type(image_labels).__name__}"
        )
    if num_classes is not None:
        check_int(num_classes, "num_classes", minimum=1)
    lengths: list[int] = []
    flat: list[Any] = []
    for position, classes in enumerate(image_labels):
        if isinstance(classes, (torch.Tensor, np.ndarray)):
            if classes.ndim != 1:
                raise ValueError(
                    f"image_labels[{position}] must be 1-D (the classes in image {position}), "
                    f"got shape {tuple(classes.shape)}"
                )
            classes = classes.tolist()
        elif isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
            raise TypeError(
                f"image_labels[{position}] must be a sequence of the class indices in image {position}, got "
                f"{type(classes).__name__} {classes!r} (for one class per sample pass labels=, not image_labels=)"
            )
        else:
            classes = list(classes)
        lengths.append(len(classes))
        flat.extend(classes)
    num_images = len(lengths)
    if num_images == 0:
        raise ValueError("image_labels is empty: a sampler needs at least one image")
    images = torch.repeat_interleave(torch.arange(num_images), torch.tensor(lengths, dtype=torch.int64))
    if not flat:
        return images, torch.zeros(0, dtype=torch.int64), num_images
    try:
        array = np.asarray(flat)
    except (TypeError, ValueError, OverflowError):
        array = np.asarray(flat, dtype=object)
    if array.dtype.kind not in "iu" or array.ndim != 1:
        bad = next(
            (i for i, value in enumerate(flat) if isinstance(value, bool) or not isinstance(value, (int, np.integer))),
            None,
        )
        if bad is None:  # Python ints beyond 64 bits
            raise ValueError(f"image_labels hold a class index beyond int64: {max(flat)}")
        raise TypeError(
            f"image_labels[{int(images[bad])}] must hold integer class indices, got {type(flat[bad]).__name__} "
            f"{flat[bad]!r}"
        )
    classes = torch.from_numpy(array.astype(np.int64))
    _check_class_range(classes, images, num_classes, "image_labels")
    return images, classes, num_images


def _check_class_range(classes: torch.Tensor, images: torch.Tensor, num_classes: int | None, name: str) -> None:
    negative = torch.nonzero(classes < 0).flatten()
    if negative.numel():
        first = int(negative[0])
        raise ValueError(
            f"{name}[{int(images[first])}] contains class {int(classes[first])}; class indices must be >= 0"
        )
    if num_classes is not None:
        outside = torch.nonzero(classes >= num_classes).flatten()
        if outside.numel():
            first = int(outside[0])
            raise ValueError(
                f"{name}[{int(images[first])}] contains class {int(classes[first])}, outside "
                f"[0, num_classes) = [0, {num_classes})"
            )


def _image_repeat_factors(
    images: torch.Tensor, classes: torch.Tensor, num_images: int, threshold: float
) -> torch.Tensor:
    """``r_i`` from the (image, class) pairs, vectorised (no loop over images or classes)."""
    factors = torch.ones(num_images, dtype=torch.float64)
    if not classes.numel():
        return factors
    # One entry per distinct (image, class) pair: f_c counts images, not instances.
    width = int(classes.max()) + 1
    pairs = torch.unique(images * width + classes)
    images, classes = pairs // width, pairs % width
    class_frequency = torch.bincount(classes, minlength=width).to(torch.float64) / num_images
    # Only classes that occur are indexed below, so their frequency is > 0.
    class_factors = torch.sqrt(threshold / class_frequency.clamp_min(1.0 / num_images)).clamp_min_(1.0)
    return factors.scatter_reduce_(0, images, class_factors.index_select(0, classes), "amax", include_self=True)


def _checked_repeat_factors(values: ArrayLike) -> torch.Tensor:
    factors = as_class_counts(values, name="repeat_factors").clone()
    if factors.dim() != 1 or factors.numel() == 0:
        raise ValueError(f"repeat_factors must be a non-empty 1-D sequence, got shape {tuple(factors.shape)}")
    bad = torch.nonzero(~(torch.isfinite(factors) & (factors >= 0))).flatten()
    if bad.numel():
        index = int(bad[0])
        raise ValueError(f"repeat_factors[{index}] = {factors[index].item()} must be finite and >= 0")
    if not bool((factors > 0).any()):
        raise ValueError("repeat_factors are all 0: at least one sample must have a positive repeat factor")
    return factors


@SAMPLERS.register("repeat_factor")
class RepeatFactorSampler(Sampler[int]):
    """Repeat factor sampling (Gupta et al., LVIS, CVPR 2019): image ``i`` about ``r_i`` times per epoch.

    Each epoch repeats image ``i`` ``floor(r_i)`` times, plus once with probability
    ``r_i - floor(r_i)``, then shuffles; see the module docstring for ``r_i`` and the
    differences from detectron2's sampler.

    Args:
        image_labels: one sequence of class indices per image (see :func:`repeat_factors`).
        repeat_factors: ``(N,)`` precomputed repeat factors instead (finite, >= 0, not all 0;
            a factor below 1 keeps its sample in an epoch with that probability, so an epoch
            can then be empty).
        threshold: ``t`` of the paper (default 0.001), > 0; unused with ``repeat_factors``.
        shuffle: shuffle each epoch's list (default); ``False`` keeps the copies of each sample
            together, in index order.
        labels: ``(N,)`` one class per sample instead, as every equipoise sampler takes it
            (the same as ``image_labels=[[y] for y in labels]``). Pass exactly one of
            ``image_labels``, ``labels`` and ``repeat_factors``.
        num_classes: when given, class indices must be ``< num_classes`` (only checked).
        seed, generator: the randomness (seed 0 by default); see the package docstring.
        num_replicas, rank: DDP split (default from ``torch.distributed``, else 1 and 0).

    ``len(sampler)`` is this rank's share of the current epoch's list, ``ceil(num_samples /
    num_replicas)``, where ``num_samples``, the length of the whole list, varies from epoch to
    epoch around ``expected_num_samples = sum_i r_i``. The list of an epoch is drawn once, when
    first needed, and kept until another epoch is set, so ``len()`` and iteration always agree;
    a learning-rate schedule that needs a fixed number of steps should use
    ``expected_num_samples``.
    """

    def __init__(
        self,
        image_labels: ImageLabels | None = None,
        repeat_factors: ArrayLike | None = None,
        threshold: float = 0.001,
        shuffle: bool = True,
        *,
        labels: LabelsLike | None = None,
        num_classes: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        inputs = {"image_labels": image_labels, "labels": labels, "repeat_factors": repeat_factors}
        given = [name for name, value in inputs.items() if value is not None]
        if len(given) != 1:
            raise ValueError(
                "pass exactly one of image_labels, labels and repeat_factors, got "
                + (" and ".join(given) if given else "none of them")
            )
        _check_threshold(threshold)
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__} {shuffle!r}")
        if image_labels is not None:
            factors = _image_repeat_factors(*_image_class_pairs(image_labels, num_classes), float(threshold))
        elif labels is not None:
            single = as_labels(labels)
            if num_classes is not None:
                check_int(num_classes, "num_classes", minimum=1)
            samples = torch.arange(single.numel())
            _check_class_range(single, samples, num_classes, "labels")
            factors = _image_repeat_factors(samples, single, single.numel(), float(threshold))
        else:
            factors = _checked_repeat_factors(repeat_factors)
        self.repeat_factors = factors
        self.threshold = None if repeat_factors is not None else float(threshold)
        self.shuffle = shuffle
        self.seed = _base_seed(seed, generator)
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.epoch = 0
        self._whole = torch.floor(factors)
        self._fraction = factors - self._whole
        self._whole = self._whole.to(torch.int64)
        self._drawn: tuple[int, torch.Tensor] | None = None

    @classmethod
    def from_dataset(cls, dataset: Any, threshold: float = 0.001, **options: Any) -> RepeatFactorSampler:
        """The sampler of ``dataset.image_labels()`` (one sequence of class indices per image).

        ``options`` are the other keyword arguments of the constructor (``shuffle``, ``seed``,
        ``num_replicas``, ...).
        """
        image_labels = getattr(dataset, "image_labels", None)
        if not callable(image_labels):
            raise TypeError(
                f"dataset must have an image_labels() method returning the class indices of each image; "
                f"{type(dataset).__name__} has none (pass image_labels= to RepeatFactorSampler instead)"
            )
        return cls(image_labels(), threshold=threshold, **options)

    @property
    def num_images(self) -> int:
        """Number of samples (images) the indices point into."""
        return self.repeat_factors.numel()

    @property
    def expected_num_samples(self) -> float:
        """``sum_i r_i``: the expected length of an epoch's list over all ranks."""
        return float(self.repeat_factors.sum())

    @property
    def num_samples(self) -> int:
        """The length of the current epoch's list over all ranks (it varies by epoch)."""
        return self._epoch_list().numel()

    def set_epoch(self, epoch: int) -> None:
        """Use the draw of ``epoch`` (its rounding, its order and so its length)."""
        check_epoch(epoch)
        self.epoch = int(epoch)

    def _epoch_list(self) -> torch.Tensor:
        """The whole epoch's list (every rank draws the same one), drawn once per epoch."""
        if self._drawn is None or self._drawn[0] != self.epoch:
            generator = _epoch_generator(self.seed, self.epoch)
            uniform = torch.rand(self.num_images, dtype=torch.float64, generator=generator)
            copies = self._whole + (uniform < self._fraction)
            indices = torch.repeat_interleave(torch.arange(self.num_images), copies)
            if self.shuffle:
                indices = indices.index_select(0, torch.randperm(indices.numel(), generator=generator))
            self._drawn = (self.epoch, indices)
        return self._drawn[1]

    def indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch, ``(len(self),)`` int64 (what iteration yields)."""
        return _rank_share(self._epoch_list(), self.num_replicas, self.rank)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_images={self.num_images}, threshold={self.threshold}, "
            f"expected_num_samples={self.expected_num_samples:.1f}, epoch={self.epoch}, rank={self.rank}, "
            f"num_replicas={self.num_replicas})"
        )
