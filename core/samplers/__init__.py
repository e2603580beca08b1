"""Class-aware samplers: ``torch.utils.data.Sampler`` objects with ``set_epoch``, DDP-aware, built by name.

>>> from equipoise.core.samplers import SAMPLERS, labels_of
>>> sampler = SAMPLERS.build("class_balanced", labels=labels_of(dataset), seed=0)
>>> loader = DataLoader(dataset, batch_size=128, sampler=sampler)  # call sampler.set_epoch(epoch) each epoch

| name | class | paper |
|---|---|---|
| class_balanced | ClassBalancedSampler | Shen et al. 2016 (Relay BP); Kang et al. 2020 (Decoupling) |
| power | PowerSampler(q) | Kang et al. 2020: p_c proportional to n_c ** q |
| square_root | SquareRootSampler | Mahajan et al. 2018; Kang et al. 2020: q = 0.5 |
| progressive | ProgressivelyBalancedSampler | Kang et al. 2020, progressively-balanced sampling |
| temperature | TemperatureSampler | Li et al. 2025, Upsample or Upweight? (Cooldown) |
| deferred_resampling | DeferredResampling | Cao et al. 2019, LDAM-DRS |
| random_over | RandomOverSampler | imbalanced-learn's RandomOverSampler, per epoch |
| random_under | RandomUnderSampler | imbalanced-learn's RandomUnderSampler, per epoch |
| repeat_factor | RepeatFactorSampler | Gupta et al. 2019 (LVIS): repeat factor sampling for multi-label images |

The contract they share (labels, empty classes, seeds, epochs, DDP) is described in
``equipoise.core.samplers._common``; :func:`labels_of` reads labels from a dataset without
loading its samples.
"""

from equipoise.core.samplers._common import SAMPLERS, check_epoch, sample_by_class
from equipoise.core.samplers.balanced import (
    ClassBalancedSampler,
    PowerSampler,
    RandomOverSampler,
    RandomUnderSampler,
    SquareRootSampler,
    power_class_probabilities,
)
from equipoise.core.samplers.labels import as_labels, labels_of
from equipoise.core.samplers.progressive import (
    DeferredResampling,
    ProgressivelyBalancedSampler,
    TemperatureSampler,
    cooldown_temperature,
    deferred_class_probabilities,
    progressive_class_probabilities,
    temperature_class_probabilities,
)
from equipoise.core.samplers.repeat_factor import RepeatFactorSampler, repeat_factors

__all__ = [
    "SAMPLERS",
    "ClassBalancedSampler",
    "DeferredResampling",
    "PowerSampler",
    "ProgressivelyBalancedSampler",
    "RandomOverSampler",
    "RandomUnderSampler",
    "RepeatFactorSampler",
    "SquareRootSampler",
    "TemperatureSampler",
    "as_labels",
    "check_epoch",
    "cooldown_temperature",
    "deferred_class_probabilities",
    "labels_of",
    "power_class_probabilities",
    "progressive_class_probabilities",
    "repeat_factors",
    "sample_by_class",
    "temperature_class_probabilities",
]
