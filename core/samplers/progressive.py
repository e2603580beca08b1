"""Class-aware samplers whose class probabilities change with the epoch.

Each is a function of the epoch (the math) and a sampler that calls it for the epoch set by
``set_epoch``. With ``n_c`` samples in class ``c``, ``p_c^IB = n_c / sum_k n_k``
(instance-balanced) and ``p_c^CB = 1 / C`` (class-balanced, over the ``C`` classes with
samples):

- :class:`ProgressivelyBalancedSampler`, progressively-balanced sampling of Kang, Xie,
  Rohrbach, Yan, Gordo, Feng, Kalantidis. "Decoupling Representation and Classifier for
  Long-Tailed Recognition", ICLR 2020 (Sec. 3):

      p_c(t) = (1 - t / T) * p_c^IB + (t / T) * p_c^CB,   t = epoch, T = total_epochs - 1

  so the first epoch is instance-balanced and the last class-balanced. Epochs past ``T`` stay
  class-balanced; with ``total_epochs = 1`` the only epoch is instance-balanced (``t / T`` is
  taken as 0 when ``T = 0``).

- :class:`TemperatureSampler`, temperature sampling with the Cooldown schedule of Li, Xu, Tan,
  Murray, Khashabi. "Upsample or Upweight? Balanced Training on Heavily Imbalanced Datasets",
  NAACL 2025:

      p_c(tau) = n_c ** (1 / tau) / sum_k n_k ** (1 / tau)

  ``tau = 1`` is proportional (instance-balanced) sampling, ``tau -> inf`` uniform over
  classes. Cooldown starts with a high temperature (aggressive up-sampling of the small
  classes, which converges faster) and drops it to ``tau = 1`` at a fixed point to stop
  over-fitting them: ``tau = temperature`` before ``cooldown_epoch``, ``final_temperature``
  from it on. The paper uses ``tau = 5`` for the first half of training and ``tau = 1`` for
  the second (30k + 30k iterations for translation, 50k + 50k for language modelling), and
  finds this single sparse drop better than dense, gradual decreases (its Sec. 4.3), so only
  the step schedule is implemented. Differences from the paper: it switches at an iteration,
  we at an epoch (samplers see epochs; pass ``num_samples`` to make an "epoch" as short as
  you need), and ``cooldown_epoch`` has no default because "half of training" depends on the
  run's length.

- :class:`DeferredResampling`, deferred re-sampling (DRS) of Cao, Wei, Gaidon, Arechiga, Ma.
  "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019:
  instance-balanced before ``switch_epoch``, class-balanced from it on (the paper switches at
  epoch 160 of 200 on CIFAR). Deliberate difference from the reference code: its resampler
  draws sample ``i`` with weight ``(1 - beta) / (1 - beta ** n_{y_i})``, beta = 0.9999 (the
  effective number of Cui et al. 2019), which is close to, but not exactly, class-balanced for
  CIFAR-sized classes (the largest class of CIFAR-10-LT is drawn 1.27x as often as the
  smallest); we use exact class-balanced sampling, the scheme the paper describes.
"""

from __future__ import annotations

import torch

from equipoise.core.samplers._common import SAMPLERS, _check_finite, _ClassAwareSampler, check_epoch
from equipoise.core.samplers.balanced import _checked_counts, _power
from equipoise.core.samplers.labels import LabelsLike
from equipoise.core.validation import ArrayLike, check_int

__all__ = [
    "DeferredResampling",
    "ProgressivelyBalancedSampler",
    "TemperatureSampler",
    "cooldown_temperature",
    "deferred_class_probabilities",
    "progressive_class_probabilities",
    "temperature_class_probabilities",
]


def progressive_class_probabilities(class_counts: ArrayLike, epoch: int, total_epochs: int) -> torch.Tensor:
    """``(1 - t/T) * p^IB + (t/T) * p^CB`` with ``t = epoch``, ``T = total_epochs - 1`` (``t/T`` capped at 1).

    ``class_counts`` ``(C,)`` non-negative, at least one positive; returns ``(C,)`` float64.
    """
    counts = _checked_counts(class_counts)
    check_epoch(epoch)
    check_int(total_epochs, "total_epochs", minimum=1)
    return _progressive(counts, epoch, total_epochs)


def _progressive(counts: torch.Tensor, epoch: int, total_epochs: int) -> torch.Tensor:
    progress = 0.0 if total_epochs == 1 else min(epoch / (total_epochs - 1), 1.0)
    return (1.0 - progress) * _power(counts, 1.0) + progress * _power(counts, 0.0)


def cooldown_temperature(
    epoch: int, temperature: float = 5.0, cooldown_epoch: int | None = None, final_temperature: float = 1.0
) -> float:
    """Cooldown's temperature at ``epoch``: ``temperature`` before ``cooldown_epoch``, ``final_temperature`` after.

    ``cooldown_epoch=None`` keeps ``temperature`` for ever (static temperature sampling).
    """
    check_epoch(epoch)
    _check_temperature(temperature, "temperature")
    _check_temperature(final_temperature, "final_temperature")
    if cooldown_epoch is not None:
        check_epoch(cooldown_epoch, "cooldown_epoch")
    return _cooldown(epoch, temperature, cooldown_epoch, final_temperature)


def _cooldown(epoch: int, temperature: float, cooldown_epoch: int | None, final_temperature: float) -> float:
    return float(temperature if cooldown_epoch is None or epoch < cooldown_epoch else final_temperature)


def _check_temperature(value: float, name: str) -> None:
    _check_finite(value, name)
    if value <= 0:
        raise ValueError(
            f"{name} must be > 0 (1 is proportional sampling, larger up-samples small classes), got {value}"
        )


def temperature_class_probabilities(class_counts: ArrayLike, temperature: float) -> torch.Tensor:
    """``p_c = n_c ** (1 / temperature)`` normalised; ``(C,)`` float64."""
    counts = _checked_counts(class_counts)
    _check_temperature(temperature, "temperature")
    return _power(counts, 1.0 / temperature)


def deferred_class_probabilities(class_counts: ArrayLike, epoch: int, switch_epoch: int) -> torch.Tensor:
    """Instance-balanced probabilities before ``switch_epoch``, class-balanced from it on; ``(C,)`` float64."""
    counts = _checked_counts(class_counts)
    check_epoch(epoch)
    check_epoch(switch_epoch, "switch_epoch")
    return _power(counts, 1.0 if epoch < switch_epoch else 0.0)


class _ScheduledSampler(_ClassAwareSampler):
    """Adds ``num_samples`` and the class counts as float64 for the schedules below."""

    def __init__(self, labels, num_samples, num_classes, allow_empty_classes, seed, generator, num_replicas, rank):
        super().__init__(labels, num_classes, allow_empty_classes, seed, generator, num_replicas, rank)
        self._set_num_samples(num_samples)
        self._counts = self.class_counts.to(torch.float64)

    def _epoch(self, epoch: int | None) -> int:
        if epoch is None:
            return self.epoch
        check_epoch(epoch)
        return int(epoch)


@SAMPLERS.register("progressive")
class ProgressivelyBalancedSampler(_ScheduledSampler):
    """Progressively-balanced sampling (Kang et al. 2020): from instance- to class-balanced over ``total_epochs``.

    ``p_c(t) = (1 - t/T) * n_c / N + (t/T) / C`` with ``t`` the epoch given to ``set_epoch``
    and ``T = total_epochs - 1``; see the module docstring. Other arguments as
    :class:`~equipoise.core.samplers.PowerSampler`.
    """

    def __init__(
        self,
        labels: LabelsLike,
        total_epochs: int,
        num_samples: int | None = None,
        *,
        num_classes: int | None = None,
        allow_empty_classes: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        check_int(total_epochs, "total_epochs", minimum=1)
        super().__init__(labels, num_samples, num_classes, allow_empty_classes, seed, generator, num_replicas, rank)
        self.total_epochs = int(total_epochs)

    def class_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """``(num_classes,)`` float64 class probabilities at ``epoch`` (default: the current epoch)."""
        return _progressive(self._counts, self._epoch(epoch), self.total_epochs)


@SAMPLERS.register("temperature")
class TemperatureSampler(_ScheduledSampler):
    """Temperature sampling with the Cooldown schedule (Li et al., NAACL 2025).

    ``p_c`` proportional to ``n_c ** (1 / tau)``, ``tau = temperature`` (paper: 5) before
    ``cooldown_epoch`` and ``final_temperature`` (paper: 1, proportional sampling) from it
    on; the paper cools down half-way through training. ``cooldown_epoch=None`` keeps the
    temperature fixed (static temperature sampling, e.g. mT5's ``tau = 3.33``). See the module
    docstring; other arguments as :class:`~equipoise.core.samplers.PowerSampler`.
    """

    def __init__(
        self,
        labels: LabelsLike,
        cooldown_epoch: int | None,
        temperature: float = 5.0,
        final_temperature: float = 1.0,
        num_samples: int | None = None,
        *,
        num_classes: int | None = None,
        allow_empty_classes: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        _check_temperature(temperature, "temperature")
        _check_temperature(final_temperature, "final_temperature")
        if cooldown_epoch is not None:
            check_epoch(cooldown_epoch, "cooldown_epoch")
        super().__init__(labels, num_samples, num_classes, allow_empty_classes, seed, generator, num_replicas, rank)
        self.cooldown_epoch = None if cooldown_epoch is None else int(cooldown_epoch)
        self.temperature = float(temperature)
        self.final_temperature = float(final_temperature)

    def temperature_at(self, epoch: int | None = None) -> float:
        """The sampling temperature at ``epoch`` (default: the current epoch)."""
        return _cooldown(self._epoch(epoch), self.temperature, self.cooldown_epoch, self.final_temperature)

    def class_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """``(num_classes,)`` float64 class probabilities at ``epoch`` (default: the current epoch)."""
        return _power(self._counts, 1.0 / self.temperature_at(epoch))


@SAMPLERS.register("deferred_resampling")
class DeferredResampling(_ScheduledSampler):
    """Deferred re-sampling, DRS (Cao et al. 2019): instance-balanced before ``switch_epoch``, then class-balanced.

    The paper switches at epoch 160 of 200 on CIFAR. See the module docstring for the
    difference from the reference code; other arguments as
    :class:`~equipoise.core.samplers.PowerSampler`.
    """

    def __init__(
        self,
        labels: LabelsLike,
        switch_epoch: int,
        num_samples: int | None = None,
        *,
        num_classes: int | None = None,
        allow_empty_classes: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        check_epoch(switch_epoch, "switch_epoch")
        super().__init__(labels, num_samples, num_classes, allow_empty_classes, seed, generator, num_replicas, rank)
        self.switch_epoch = int(switch_epoch)

    def class_probabilities(self, epoch: int | None = None) -> torch.Tensor:
        """``(num_classes,)`` float64 class probabilities at ``epoch`` (default: the current epoch)."""
        return _power(self._counts, 1.0 if self._epoch(epoch) < self.switch_epoch else 0.0)
