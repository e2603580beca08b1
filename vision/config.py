"""The typed configuration of a long-tailed vision run, and the recipes shipped with the package.

A recipe is a YAML file in ``equipoise/vision/recipes/`` with the keys of :class:`TrainConfig`
(sections ``data``, ``model``, ``loss``, ``sampler``, ``optimizer``, ``mixup``, ``metabalance``);
``load_train_config("ldam_drw", ["epochs=30"])`` merges a recipe and ``key=value`` overrides
and validates the result before any work starts (``equipoise.core.config``). Every recipe names
the paper and table it reproduces in ``paper``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from equipoise.core.config import ConfigError, load_config, package_recipes, recipe_names

__all__ = [
    "DataConfig",
    "LossConfig",
    "MetaBalanceConfig",
    "MixupConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SamplerConfig",
    "TrainConfig",
    "available_recipes",
    "load_train_config",
    "recipes_dir",
]


@dataclass
class DataConfig:
    """Which long-tailed dataset (``equipoise.vision.data.build_dataset``) and how images are fed."""

    dataset: str = "cifar10_lt"
    root: str | None = None  # None: $EQUIPOISE_DATA
    imbalance_ratio: float | None = None  # None: the dataset's own (100 for CIFAR/MNIST-LT)
    profile: Literal["exponential", "step"] | None = None
    seed: int = 0  # which examples the long-tailed subset keeps
    augment: Literal["cifar", "mnist", "imagenet", "none"] = "cifar"
    image_size: int | None = None  # imagenet augmentation: crop size (default 224)
    num_workers: int = 0
    download: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # max_count, majority_class, image_root

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.imbalance_ratio is not None and self.imbalance_ratio < 1:
            raise ConfigError(f"data.imbalance_ratio must be >= 1, got {self.imbalance_ratio}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"data.image_size must be >= 8, got {self.image_size}")


@dataclass
class ModelConfig:
    """A timm model by name (``equipoise.vision.models.create_model``)."""

    name: str = "resnet32_cifar"
    classifier: Literal["linear", "cosine"] = "linear"  # cosine: NormedLinear, as LDAM uses
    pretrained: bool = False
    in_chans: int | None = None  # None: timm's default (3)
    drop_rate: float | None = None  # None: the model's own default


@dataclass
class LossConfig:
    """A core loss by name (``equipoise.core.losses.build_loss``) and the DRW schedule.

    ``options`` go to the loss; ``class_counts`` (the training split's) is passed to every loss
    that takes it. ``drw_epoch``: deferred re-weighting (Cao et al. 2019) from that epoch on,
    class weights ``effective_number_weights(class_counts, drw_beta)``.
    """

    name: str = "cross_entropy"
    options: dict[str, Any] = field(default_factory=dict)
    drw_epoch: int | None = None
    drw_beta: float = 0.9999

    def __post_init__(self) -> None:
        if self.drw_epoch is not None and self.drw_epoch < 0:
            raise ConfigError(f"loss.drw_epoch must be >= 0 or null, got {self.drw_epoch}")
        if not 0 <= self.drw_beta < 1:
            raise ConfigError(f"loss.drw_beta must be in [0, 1), got {self.drw_beta}")


@dataclass
class SamplerConfig:
    """A core sampler by name (``equipoise.core.samplers.SAMPLERS``); ``null``: shuffle every epoch."""

    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    """SGD (or AdamW) with linear warm-up and a step or cosine schedule, per iteration.

    ``lr_steps``: ``[epoch, factor]`` pairs; from ``epoch`` on the learning rate is
    ``lr * factor`` (LDAM-DRW: ``[[160, 0.01], [180, 0.0001]]``). Warm-up ramps linearly from
    ``lr / warmup_epochs`` over the first ``warmup_epochs`` epochs, as the LDAM code does.
    """

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    warmup_epochs: int = 5
    schedule: Literal["step", "cosine", "constant"] = "step"
    lr_steps: list[tuple[int, float]] = field(default_factory=lambda: [(160, 0.01), (180, 0.0001)])

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optimizer.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.momentum < 0:
            raise ConfigError("optimizer.weight_decay and optimizer.momentum must be >= 0")
        if self.warmup_epochs < 0:
            raise ConfigError(f"optimizer.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        epochs = [epoch for epoch, _ in self.lr_steps]
        if epochs != sorted(epochs) or any(factor <= 0 for _, factor in self.lr_steps):
            raise ConfigError(f"optimizer.lr_steps must be increasing epochs with factors > 0, got {self.lr_steps}")


@dataclass
class MixupConfig:
    """Mixup / CutMix through ``timm.data.Mixup`` (off while both alphas are 0).

    Zhang et al. 2018 (mixup), Yun et al. 2019 (CutMix); with a class-balanced or over-sampling
    sampler these are the OS-mixup / OS-CutMix baselines of the long-tail literature.
    """

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: Literal["batch", "pair", "elem"] = "batch"

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ConfigError("mixup.mixup_alpha and mixup.cutmix_alpha must be >= 0")
        if not 0 <= self.prob <= 1 or not 0 <= self.switch_prob <= 1:
            raise ConfigError("mixup.prob and mixup.switch_prob must be in [0, 1]")


@dataclass
class MetaBalanceConfig:
    """MetaBalance (Bansal et al. 2021) as the training step (``equipoise.core.meta.MetaBalance``).

    ``inner_lr`` is the paper's gamma. Each outer update reads ``meta_steps`` support batches
    (instance-wise) and query batches (class-balanced); an epoch makes
    ``max(1, N // (support_batch * meta_steps))`` outer updates unless ``updates_per_epoch`` says.
    """

    enabled: bool = False
    support_batch: int = 20
    query_batch: int = 30
    inner_lr: float = 0.01
    beta: float = 0.0
    meta_steps: int = 80
    first_order: bool = False
    updates_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if min(self.support_batch, self.query_batch, self.meta_steps) < 1:
            raise ConfigError("metabalance.support_batch, query_batch and meta_steps must be >= 1")
        if self.updates_per_epoch is not None and self.updates_per_epoch < 1:
            raise ConfigError(f"metabalance.updates_per_epoch must be >= 1 or null, got {self.updates_per_epoch}")


@dataclass
class TrainConfig:
    """Everything a run needs; the defaults are the LDAM paper's CIFAR setting with plain CE."""

    description: str = ""
    paper: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    metabalance: MetaBalanceConfig = field(default_factory=MetaBalanceConfig)
    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 512
    eval_every: int = 0  # evaluate on the test split every n epochs (0: only after the last)
    evaluate: bool = True  # evaluate after the last epoch (metrics.json)
    seed: int = 0  # weights, shuffling, augmentation
    device: str = "auto"
    amp: bool = True  # automatic mixed precision, on CUDA only
    channels_last: bool = False
    max_steps_per_epoch: int | None = None  # cut epochs short (smoke tests)
    output: str = "results/vision/run"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("batch_size and eval_batch_size must be >= 1")
        if self.mixup.enabled and self.batch_size % 2:
            raise ConfigError(f"mixup needs an even batch_size (timm's Mixup pairs examples), got {self.batch_size}")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ConfigError(f"max_steps_per_epoch must be >= 1 or null, got {self.max_steps_per_epoch}")
        if self.metabalance.enabled and (self.mixup.enabled or self.sampler.name is not None):
            raise ConfigError(
                "metabalance draws its own support and query batches: set mixup off and sampler.name null"
            )


def recipes_dir() -> Path:
    """The folder of the recipes shipped with the package."""
    return package_recipes("equipoise.vision")


def available_recipes() -> list[str]:
    """Names of the shipped recipes (``ldam_drw``, ``ce`` ...)."""
    return recipe_names(recipes_dir())


def load_train_config(recipe: str | Path | dict | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A validated :class:`TrainConfig` from a shipped recipe name or a YAML path, plus overrides."""
    return load_config(TrainConfig, recipe, overrides, recipes_dir())
