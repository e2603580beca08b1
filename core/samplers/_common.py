"""The sampler registry and the machinery every class-aware sampler shares.

Every sampler in ``equipoise.core.samplers`` is a ``torch.utils.data.Sampler[int]`` with the
same contract (imbalanced-learn's one-contract-per-kind habit):

- it takes the labels (tensor, NumPy array or list of ints; see :func:`~equipoise.core.samplers.labels_of`
  to get them from a dataset) and classes ``0 .. num_classes - 1`` (``num_classes`` defaults
  to ``max(labels) + 1``);
- a class without any sample raises ``ValueError`` naming it, unless
  ``allow_empty_classes=True``, which skips empty classes: they get probability 0 and the
  others are normalised among themselves (so "class-balanced" means uniform over the classes
  that occur);
- randomness comes from ``seed`` (default 0, as ``torch.utils.data.DistributedSampler``, so
  that every DDP rank draws the same epoch) or from ``generator`` (one number is drawn from it
  at construction and used as the seed). The draw of epoch ``e`` uses a generator seeded from
  ``(seed, e)`` through NumPy's ``SeedSequence``, so the same seed and epoch always give the
  same indices, and :meth:`set_epoch` changes the draw;
- under DDP (``num_replicas``/``rank``, read from ``torch.distributed`` when it is initialised)
  every rank draws the same epoch, pads it by wrapping to a multiple of ``num_replicas`` and
  keeps the positions ``rank, rank + num_replicas, ...``, exactly as ``DistributedSampler``
  does, so the ranks' shares are disjoint, equally long, and together make up the epoch;
- ``len(sampler)`` is the per-rank length ``ceil(num_samples / num_replicas)``, while the
  attribute ``num_samples`` is the length of the whole epoch's draw (for
  ``DistributedSampler`` that attribute is per rank: the names differ on purpose, see the
  argument of the same name).

Drawing ``n`` samples from class probabilities ``p`` (:func:`sample_by_class`) never makes a
categorical draw over the samples (``torch.multinomial`` refuses more than 2**24 categories,
and ``WeightedRandomSampler`` inherits that limit). It draws the class of each sample by
inverting the CDF of ``p`` over the ``C`` classes (a guide table in front of
``searchsorted``: same result, a third of the time), then a position inside the class
uniformly, through the index array of the labels sorted by class (one stable ``argsort`` at
construction) and the per-class offsets. Everything is vectorised: no Python loop over
samples or classes. Samplers work on the host (indices feed a ``DataLoader``); CUDA labels
are copied to the CPU once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from equipoise.core.registry import Registry
from equipoise.core.samplers.labels import LabelsLike, as_labels
from equipoise.core.validation import ArrayLike, as_class_counts, check_class_counts, check_int

__all__ = ["SAMPLERS", "check_epoch", "sample_by_class"]

SAMPLERS: Registry = Registry("sampler")


def check_epoch(epoch: int, name: str = "epoch") -> None:
    """Raise ``ValueError`` unless ``epoch`` is an integer >= 0."""
    check_int(epoch, name, minimum=0)


def _check_finite(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


class _ClassIndex:
    """The labels grouped by class, built once: the basis of every draw.

    ``order`` holds the sample indices sorted by class (stable, so ties keep their order and
    the result is deterministic); the samples of class ``c`` are
    ``order[class_offsets[c] : class_offsets[c] + class_counts[c]]``.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int | None, allow_empty_classes: bool) -> None:
        largest = int(labels.max())
        if num_classes is None:
            num_classes = largest + 1
            origin = "classes are 0 .. max(labels)"
        else:
            check_int(num_classes, "num_classes", minimum=1)
            num_classes = int(num_classes)
            if largest >= num_classes:
                position = int(torch.nonzero(labels >= num_classes)[0, 0])
                raise ValueError(
                    f"labels[{position}] = {int(labels[position])} is outside [0, num_classes) = [0, {num_classes})"
                )
            origin = f"num_classes={num_classes}"
        counts = torch.bincount(labels, minlength=num_classes)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel() and not allow_empty_classes:
            shown = ", ".join(str(int(c)) for c in empty[:10]) + (", ..." if empty.numel() > 10 else "")
            raise ValueError(
                f"class {shown} has no sample in labels ({origin}, {empty.numel()} of {num_classes} empty), but the "
                "sampler draws from every class: relabel the classes to be contiguous, fix num_classes, or pass "
                "allow_empty_classes=True to skip empty classes"
            )
        # Sorting small integers is 3x faster than sorting int64 (radix-friendly); same order.
        sort_dtype = torch.int16 if num_classes <= 2**15 else torch.int32 if num_classes <= 2**31 else torch.int64
        self.order = torch.argsort(labels.to(sort_dtype), stable=True)
        self.class_counts = counts
        self.class_offsets = torch.cumsum(counts, 0) - counts
        # The largest double below n_c: u * scale < n_c for every u in [0, 1), so that
        # floor(u * scale) is a valid position in the class even when u * n_c rounds up to n_c.
        counts_double = counts.to(torch.float64)
        self.class_scale = torch.nextafter(counts_double, torch.zeros_like(counts_double))
        self.num_classes = num_classes
        self.num_labels = labels.numel()

    def draw(
        self, class_probabilities: torch.Tensor, num_samples: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``num_samples`` indices: a class from ``class_probabilities``, then a sample of it uniformly."""
        uniform = torch.rand(num_samples, dtype=torch.float64, generator=generator)
        classes = _draw_classes(class_probabilities, uniform)
        return self.draw_within(classes, uniform.uniform_(generator=generator))

    def draw_within(self, classes: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """One sample of each class in ``classes``, uniformly and with replacement (``uniform`` is consumed)."""
        positions = uniform.mul_(self.class_scale.index_select(0, classes)).to(torch.int64)
        positions.add_(self.class_offsets.index_select(0, classes))
        return self.order.index_select(0, positions)

    def sorted_labels(self) -> torch.Tensor:
        """The label of each position of ``order``."""
        return torch.repeat_interleave(torch.arange(self.num_classes), self.class_counts)


def _draw_classes(class_probabilities: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The class of each uniform in ``[0, 1)`` by inversion of the CDF (``uniform`` is scaled in place).

    Plain ``searchsorted`` over the CDF costs a binary search per sample (60 ns each here). A
    guide table makes it a lookup (Chen and Asau 1974): the interval is cut into ``G`` equal
    buckets (``G`` a power of two, so ``u * G`` is exact), and a bucket in which the CDF does
    not step holds its class; only samples falling into one of the at most ``C`` buckets where
    it steps (a fraction of at most ``C / G <= 1/32``) need the binary search.
    """
    support = torch.nonzero(class_probabilities > 0).flatten()
    cdf = torch.cumsum(class_probabilities.index_select(0, support), 0)
    cdf /= cdf[-1].clone()
    cdf[-1] = 1.0  # uniforms are < 1, so the search never runs past the last class of the support
    buckets = 2 ** min(max(10, math.ceil(math.log2(32 * support.numel()))), 22)
    edges = torch.arange(buckets + 1, dtype=torch.float64) / buckets
    first = torch.searchsorted(cdf, edges[:-1], right=True)  # the class of u = j / G
    last = torch.searchsorted(cdf, edges[1:], right=False).clamp_max_(support.numel() - 1)  # >= class of u < (j+1)/G
    table = torch.where(first == last, support.index_select(0, first), -1)
    scaled = uniform.mul_(buckets)
    classes = table.index_select(0, scaled.to(torch.int64))
    ambiguous = torch.nonzero(classes < 0).flatten()
    if ambiguous.numel():
        exact = torch.searchsorted(cdf, scaled.index_select(0, ambiguous).div_(buckets), right=True)
        classes.index_copy_(0, ambiguous, support.index_select(0, exact))
    return classes


def sample_by_class(
    labels: LabelsLike,
    class_probabilities: ArrayLike,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Indices into ``labels``: each picks class ``c`` with ``class_probabilities[c]``, then a sample of it uniformly.

    The functional form of the samplers' draw (a one-off: samplers build the class index once
    and reuse it every epoch). Shapes: ``labels`` ``(N,)``, ``class_probabilities`` ``(C,)``
    with ``C > max(labels)``, non-negative and summing to a positive number (normalised
    here); result ``(num_samples,)`` int64, ``num_samples`` defaulting to ``N``. A class with
    a positive probability but no sample raises ``ValueError``. Randomness from ``generator``,
    or a generator seeded with ``seed``, or (neither given) torch's default generator, as
    ``torch.multinomial`` does.
    """
    labels = as_labels(labels)
    probabilities = as_class_counts(class_probabilities, name="class_probabilities")
    check_class_counts(probabilities, name="class_probabilities", allow_zero=True)
    if float(probabilities.sum()) <= 0:
        raise ValueError("class_probabilities sum to 0: at least one class must have a positive probability")
    if int(labels.max()) >= probabilities.numel():
        raise ValueError(
            f"labels contain class {int(labels.max())}, but class_probabilities has only {probabilities.numel()} "
            "entries (one per class)"
        )
    index = _ClassIndex(labels, probabilities.numel(), allow_empty_classes=True)
    missing = torch.nonzero((probabilities > 0) & (index.class_counts == 0)).flatten()
    if missing.numel():
        raise ValueError(
            f"class {int(missing[0])} has probability {float(probabilities[missing[0]]):.4g} but no sample in labels"
        )
    num_samples = labels.numel() if num_samples is None else num_samples
    check_int(num_samples, "num_samples", minimum=1)
    if seed is not None:
        generator = _epoch_generator(_base_seed(seed, generator), 0)
    return index.draw(probabilities, int(num_samples), generator)


def _base_seed(seed: int | None, generator: torch.Generator | None) -> int:
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both (under DDP pass the same seed on every rank)")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    if seed is None:
        return 0
    check_int(seed, "seed", minimum=0)
    return int(seed)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # SeedSequence mixes (seed, epoch) so that nearby pairs give unrelated streams, unlike
    # DistributedSampler's seed + epoch, which makes (seed 0, epoch 1) repeat (seed 1, epoch 0).
    high, low = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(high) << 32) | int(low))


def _replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    check_int(num_replicas, "num_replicas", minimum=1)
    check_int(rank, "rank", minimum=0)
    if rank >= num_replicas:
        raise ValueError(f"rank must lie in [0, num_replicas) = [0, {num_replicas}), got rank={rank}")
    return int(num_replicas), int(rank)


def _rank_share(indices: torch.Tensor, num_replicas: int, rank: int) -> torch.Tensor:
    """Positions ``rank, rank + num_replicas, ...`` of the epoch padded by wrapping (as ``DistributedSampler``)."""
    if num_replicas == 1:
        return indices
    total = math.ceil(indices.numel() / num_replicas) * num_replicas
    padding = total - indices.numel()
    if padding:
        indices = torch.cat([indices, indices.repeat(math.ceil(padding / indices.numel()))[:padding]])
    return indices[rank:total:num_replicas]


class _ClassAwareSampler(Sampler[int]):
    """What every class-aware sampler shares (see the module docstring for the contract).

    A subclass sets ``num_samples`` and either defines ``class_probabilities(epoch)`` (the
    draw is then :meth:`_ClassIndex.draw`) or overrides :meth:`_draw`.
    """

    num_samples: int

    def __init__(
        self,
        labels: LabelsLike,
        num_classes: int | None,
        allow_empty_classes: bool,
        seed: int | None,
        generator: torch.Generator | None,
        num_replicas: int | None,
        rank: int | None,
    ) -> None:
        super().__init__()
        self._index = _ClassIndex(as_labels(labels), num_classes, bool(allow_empty_classes))
        self.seed = _base_seed(seed, generator)
        self.num_replicas, self.rank = _replicas(num_replicas, rank)
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return self._index.num_classes

    @property
    def class_counts(self) -> torch.Tensor:
        """Samples per class in the labels, ``(num_classes,)`` int64."""
        return self._index.class_counts

    def _set_num_samples(self, num_samples: int | None) -> None:
        if num_samples is None:
            num_samples = self._index.num_labels
        check_int(num_samples, "num_samples", minimum=1)
        self.num_samples = int(num_samples)

    def set_epoch(self, epoch: int) -> None:
        """Use the draw (and, for scheduled samplers, the class probabilities) of ``epoch``."""
        check_epoch(epoch)
        self.epoch = int(epoch)

    def _draw(self, generator: torch.Generator) -> torch.Tensor:
        """The whole epoch's draw (every rank makes the same one)."""
        probabilities = self.class_probabilities(self.epoch)  # type: ignore[attr-defined]
        return self._index.draw(probabilities, self.num_samples, generator)

    def indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch, ``(len(self),)`` int64 (what iteration yields)."""
        draw = self._draw(_epoch_generator(self.seed, self.epoch))
        return _rank_share(draw, self.num_replicas, self.rank)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_labels={self._index.num_labels}, num_classes={self.num_classes}, "
            f"num_samples={self.num_samples}, epoch={self.epoch}, rank={self.rank}, num_replicas={self.num_replicas})"
        )
