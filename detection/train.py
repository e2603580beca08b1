"""Train a RetinaNet with a core classification loss on COCO-format data, from a recipe.

>>> from equipoise.detection.train import load_detection_train_config, train_detection
>>> config = load_detection_train_config("coco128_mobilenet_focal", ["iterations=50"])
>>> model_path = train_detection(config)        # OUTPUT/model.pt, read by equipoise.detection.evaluate

The schedule is detectron2's (iteration-based, as the focal paper's is): SGD with momentum 0.9
and weight decay, a linear warm-up from ``warmup_factor * lr`` over ``warmup_iterations``, then
the learning rate times ``lr_gamma`` at each of ``lr_steps``; the COCO "1x" recipe is 90,000
iterations of 16 images, lr 0.01, steps at 60,000 and 80,000. ``optimizer: adamw`` swaps SGD for
AdamW (Loshchilov & Hutter 2019; ``momentum`` unused, ``weight_decay`` decoupled) under the same
warm-up and steps: the CPU fit-test recipes use it because at their budget (600 iterations of 4
images) SGD leaves the classification loss on its prior-initialisation plateau (AP 0 with focal
loss) and the losses without focal modulation diverge (``results/detection/cpu_sgd.md``).
Images are drawn in a random order per epoch (``seed``, epoch) or with repeat-factor sampling
(``sampler: repeat_factor``; Gupta et al. 2019, :class:`equipoise.core.samplers.RepeatFactorSampler`),
flipped horizontally with probability ``hflip``; torchvision's RetinaNet resizes them
(``min_size``/``max_size``).

What a run leaves in ``config.output``:

- ``config.yaml``: the validated config;
- ``checkpoint.pt``: everything needed to go on (model, optimiser, scheduler, AMP scaler,
  iteration, config), written atomically every ``checkpoint_every`` iterations, at the end and on
  Ctrl-C (after the iteration in progress, :class:`equipoise.core.checkpoint.DeferredInterrupt`; a
  second Ctrl-C stops at once and leaves the previous checkpoint); running the same config again
  resumes from it, to the same weights as an uninterrupted
  run (the image order and flips are drawn from ``(seed, epoch)``, not from a global generator);
- ``model.pt``: the trained weights with what evaluation needs (classes, their COCO ids and
  training image counts, backbone, sizes, loss), format ``equipoise.detection.model/1``;
- ``train_log.jsonl``: per logged iteration the losses, learning rate and seconds per iteration.

Devices: ``device="auto"`` trains on CUDA when present, with float16 autocast and a gradient
scaler (``amp="auto"``); on the CPU in float32.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

from equipoise.core.checkpoint import DeferredInterrupt, load_checkpoint, save_checkpoint
from equipoise.core.config import ConfigError, config_to_dict, load_config, package_recipes, recipe_names
from equipoise.core.device import resolve_device
from equipoise.core.samplers import RepeatFactorSampler
from equipoise.core.samplers._common import _epoch_generator
from equipoise.core.validation import check_int
from equipoise.detection.data import CocoDetection, collate, flip_horizontal, load_coco128
from equipoise.detection.models import BACKBONES, build_retinanet, head_loss

__all__ = [
    "CHECKPOINT_FORMAT",
    "DetectionTrainConfig",
    "MODEL_FORMAT",
    "available_recipes",
    "build_model_from_metadata",
    "load_detection_train_config",
    "load_trained_model",
    "recipes_dir",
    "train_detection",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "equipoise.detection/1"
MODEL_FORMAT = "equipoise.detection.model/1"
#: Keys that may change between a run and its resumption.
RESUMABLE_CHANGES = (
    "description",
    "paper",
    "output",
    "device",
    "iterations",
    "checkpoint_every",
    "log_every",
    "workers",
)


@dataclass
class DetectionTrainConfig:
    """Everything a detection run needs; the defaults are the COCO RetinaNet "1x" schedule.

    Attributes:
        dataset: ``"coco128"`` (the shared 128-image copy) or ``"coco"``: any COCO-format set given
            by ``images`` and ``annotations``.
        data_root: folder holding ``coco128/``; ``None``: ``$EQUIPOISE_DATA``.
        images, annotations: the image folder and ``instances_*.json`` of a ``"coco"`` dataset.
        backbone, backbone_weights, trainable_backbone_layers, fpn_channels: the network
            (:func:`equipoise.detection.models.build_retinanet`); weights ``"imagenet"``, a path or ``None``.
        loss, loss_options: the head's classification loss (a core loss by name); options left out
            keep the loss's own defaults, which are its paper's (focal: alpha 0.25, gamma 2).
        normalizer: ``"batch"`` (the paper) or ``"image"`` (torchvision's head).
        prior_probability: the paper's ``pi`` for the classification bias.
        min_size, max_size: torchvision's resize.
        sampler: ``None`` (a random order per epoch) or ``"repeat_factor"``; ``repeat_threshold``: its ``t``.
        hflip: probability of a horizontal flip.
        optimizer: ``"sgd"`` (the paper's, with ``momentum``) or ``"adamw"`` (module docstring).
        iterations, batch_size, lr, momentum, weight_decay, warmup_iterations, warmup_factor,
            lr_steps, lr_gamma: the schedule (module docstring); ``clip_grad_norm``: off when ``None``.
        drop_empty: leave out training images without boxes.
        checkpoint_every, log_every: in iterations.
        workers: DataLoader worker processes.
        seed: initialisation of the head and FPN, image order and flips.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        amp: ``"auto"`` (float16 on CUDA, off on the CPU), ``"off"``, ``"fp16"`` or ``"bf16"``.
        output: the run folder.
    """

    description: str = ""
    paper: str = ""
    dataset: Literal["coco128", "coco"] = "coco128"
    data_root: str | None = None
    images: str | None = None
    annotations: str | None = None
    backbone: str = "resnet50_fpn"
    backbone_weights: str | None = "imagenet"
    trainable_backbone_layers: int = 3
    fpn_channels: int = 256
    loss: str = "sigmoid_focal"
    loss_options: dict[str, Any] = field(default_factory=dict)
    normalizer: Literal["batch", "image"] = "batch"
    prior_probability: float = 0.01
    min_size: int = 800
    max_size: int = 1333
    sampler: Literal["repeat_factor"] | None = None
    repeat_threshold: float = 0.001
    hflip: float = 0.5
    drop_empty: bool = False
    optimizer: Literal["sgd", "adamw"] = "sgd"
    iterations: int = 90000
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 1000
    warmup_factor: float = 0.001
    lr_steps: list[int] = field(default_factory=lambda: [60000, 80000])
    lr_gamma: float = 0.1
    clip_grad_norm: float | None = None
    checkpoint_every: int = 5000
    log_every: int = 20
    workers: int = 0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"
    output: str = "results/detection/run"

    def __post_init__(self) -> None:
        if self.dataset == "coco" and not (self.images and self.annotations):
            raise ConfigError("dataset 'coco' needs images=<image folder> and annotations=<instances_*.json>")
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone must be one of {BACKBONES.names()}, got {self.backbone!r}")
        try:
            head_loss(self.loss, 2, self.loss_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"loss {self.loss!r} with loss_options {self.loss_options}: {error}") from None
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every", "min_size", "max_size"):
            check_int(getattr(self, name), name, 1, ConfigError, numpy=False)
        for name in ("warmup_iterations", "workers", "seed", "trainable_backbone_layers"):
            check_int(getattr(self, name), name, 0, ConfigError, numpy=False)
        check_int(self.fpn_channels, "fpn_channels", 8, ConfigError, numpy=False)
        for name in ("lr", "repeat_threshold", "lr_gamma"):
            if not (isinstance(getattr(self, name), (int, float)) and math.isfinite(getattr(self, name))):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)!r}")
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("hflip", "warmup_factor", "momentum"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.prior_probability < 1:
            raise ConfigError(f"prior_probability must be in (0, 1), got {self.prior_probability}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be > 0 or null, got {self.clip_grad_norm}")
        if self.max_size < self.min_size:
            raise ConfigError(f"max_size must be >= min_size, got {self.max_size} < {self.min_size}")
        if list(self.lr_steps) != sorted(set(self.lr_steps)) or any(step < 1 for step in self.lr_steps):
            raise ConfigError(f"lr_steps must be increasing positive iterations, got {self.lr_steps}")
        if not isinstance(self.output, str) or not self.output:
            raise ConfigError(f"output must be a folder path, got {self.output!r}")


def recipes_dir() -> Path:
    """The folder of the recipes shipped with the package."""
    return package_recipes("equipoise.detection")


def available_recipes() -> list[str]:
    """Names of the shipped recipes (``coco128_mobilenet_focal``, ``coco_r50_fpn_1x`` ...)."""
    return recipe_names(recipes_dir())


def load_detection_train_config(
    recipe: str | os.PathLike | dict | None = None, overrides: Sequence[str] = ()
) -> DetectionTrainConfig:
    """A validated :class:`DetectionTrainConfig` from a shipped recipe name, a YAML path or a dict, plus overrides."""
    if isinstance(recipe, os.PathLike):
        recipe = Path(recipe)
    return load_config(DetectionTrainConfig, recipe, overrides, recipes_dir())


def training_dataset(config: DetectionTrainConfig) -> CocoDetection:
    """The COCO-format training set the config names."""
    if config.dataset == "coco":
        return CocoDetection(Path(config.images), Path(config.annotations), drop_empty=config.drop_empty)
    return load_coco128(config.data_root, drop_empty=config.drop_empty)


def _model(config: DetectionTrainConfig, num_classes: int) -> nn.Module:
    return build_retinanet(
        num_classes,
        backbone=config.backbone,
        loss=config.loss,
        loss_options=config.loss_options,
        backbone_weights=config.backbone_weights,
        trainable_backbone_layers=config.trainable_backbone_layers,
        min_size=config.min_size,
        max_size=config.max_size,
        prior_probability=config.prior_probability,
        normalizer=config.normalizer,
        fpn_channels=config.fpn_channels,
    )


def _learning_rate_factor(config: DetectionTrainConfig, iteration: int) -> float:
    """detectron2's WarmupMultiStepLR: linear warm-up, then ``lr_gamma`` per passed step."""
    factor = config.lr_gamma ** sum(iteration >= step for step in config.lr_steps)
    if iteration < config.warmup_iterations:
        alpha = iteration / config.warmup_iterations
        factor *= config.warmup_factor * (1 - alpha) + alpha
    return factor


class _Flipped(torch.utils.data.Dataset):
    """Items keyed by ``(index, flip)``, so the flips are drawn with the order, not in the workers."""

    def __init__(self, dataset: CocoDetection) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, flip = key
        image, target = self.dataset[index]
        return flip_horizontal(image, target) if flip else (image, target)


def _epoch_batches(
    config: DetectionTrainConfig, dataset: CocoDetection, sampler: RepeatFactorSampler | None, epoch: int
) -> list[list[tuple[int, bool]]]:
    """The batches of ``epoch``: the order and the flips both come from ``(seed, epoch)``."""
    generator = _epoch_generator(config.seed, epoch)
    if sampler is None:
        order = torch.randperm(len(dataset), generator=generator)
    else:
        sampler.set_epoch(epoch)
        order = torch.as_tensor(list(sampler), dtype=torch.long)
    flips = torch.rand(len(order), generator=generator) < config.hflip
    keys = [(int(index), bool(flip)) for index, flip in zip(order, flips)]
    whole = len(keys) - len(keys) % config.batch_size  # full batches only, as detectron2's aspect-ratio grouping
    return [keys[start : start + config.batch_size] for start in range(0, whole, config.batch_size)]


def _batches_from(
    config: DetectionTrainConfig, dataset: CocoDetection, sampler: RepeatFactorSampler | None, iteration: int
) -> Iterator[list[tuple[int, bool]]]:
    """Every batch from global ``iteration`` on, epoch after epoch."""
    epoch = 0
    while True:
        batches = _epoch_batches(config, dataset, sampler, epoch)
        if not batches:
            raise ValueError(
                f"an epoch of {len(dataset)} training images has no full batch of batch_size={config.batch_size}"
            )
        if iteration < len(batches):
            yield from batches[iteration:]
            iteration = 0
        else:
            iteration -= len(batches)
        epoch += 1


def _amp_dtype(config: DetectionTrainConfig, device: torch.device) -> torch.dtype | None:
    if config.amp == "off" or (config.amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise ConfigError(f"amp={config.amp!r} needs a CUDA device; this run is on {device}")
    return torch.bfloat16 if config.amp == "bf16" else torch.float16


def _check_resumable(saved: dict[str, Any], config: DetectionTrainConfig, path: Path) -> None:
    current = config_to_dict(config)
    changed = [key for key in current if key not in RESUMABLE_CHANGES and saved.get(key) != current[key]]
    if changed:
        raise ConfigError(
            f"checkpoint {str(path)!r} was written by another config ({', '.join(changed)} differ); "
            "use another output folder or start over (resume=False)"
        )


def train_detection(config: DetectionTrainConfig, resume: bool = True, progress: bool = True) -> Path:
    """Train as ``config`` says; return the path of ``model.pt`` (module docstring)."""
    from tqdm.auto import tqdm

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    checkpoint_path = output / "checkpoint.pt"
    if not resume:
        checkpoint_path.unlink(missing_ok=True)
    device = resolve_device(config.device)
    amp_dtype = _amp_dtype(config, device)
    dataset = training_dataset(config)
    (output / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _model(config, len(dataset.category_ids)).to(device)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _learning_rate_factor(config, step))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    iteration = 0
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, CHECKPOINT_FORMAT, ("config", "model", "optimizer", "iteration"))
        _check_resumable(state["config"], config, checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        iteration = int(state["iteration"])
        logger.info("resuming from %s at iteration %d", checkpoint_path, iteration)

    def save() -> None:
        save_checkpoint(
            checkpoint_path,
            {
                "format": CHECKPOINT_FORMAT,
                "config": config_to_dict(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "iteration": iteration,
            },
        )

    sampler = None
    if config.sampler == "repeat_factor":
        sampler = RepeatFactorSampler.from_dataset(dataset, threshold=config.repeat_threshold, seed=config.seed)
    loader = torch.utils.data.DataLoader(
        _Flipped(dataset),
        batch_sampler=_batches_from(config, dataset, sampler, iteration),
        collate_fn=collate,
        num_workers=config.workers,
    )
    model.train()
    bar = tqdm(total=config.iterations, initial=iteration, desc="train", unit="it", disable=not progress)
    log = (output / "train_log.jsonl").open("a")
    began, logged = time.perf_counter(), iteration
    try:
        with DeferredInterrupt() as stop:
            batches = iter(loader)
            while iteration < config.iterations:
                images, targets = next(batches)
                images = [image.to(device, non_blocking=True) for image in images]
                targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    losses = model(images, targets)
                total = sum(losses.values())
                values = {key: float(value.detach()) for key, value in losses.items()}
                if not all(map(math.isfinite, values.values())):
                    raise FloatingPointError(f"loss became non-finite at iteration {iteration}: {values}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if config.clip_grad_norm is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(parameters, config.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                iteration += 1
                bar.update(1)
                if iteration % config.log_every == 0 or iteration == config.iterations:
                    entry = {
                        "iteration": iteration,
                        "loss": sum(values.values()),
                        "lr": optimizer.param_groups[0]["lr"],
                    }
                    entry.update(values)
                    entry["seconds_per_iteration"] = (time.perf_counter() - began) / (iteration - logged)
                    began, logged = time.perf_counter(), iteration
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{entry['loss']:.3f}")
                if iteration % config.checkpoint_every == 0 or stop.requested:
                    save()
                if stop.requested:
                    logger.warning("interrupted at iteration %d; %s resumes from here", iteration, checkpoint_path)
                    raise KeyboardInterrupt
    finally:
        bar.close()
        log.close()
    save()
    return _save_model(model, dataset, config, output / "model.pt")


def _save_model(model: nn.Module, dataset: CocoDetection, config: DetectionTrainConfig, path: Path) -> Path:
    metadata = {
        "num_classes": len(dataset.category_ids),
        "category_ids": [int(value) for value in dataset.category_ids],
        "class_names": list(dataset.class_names),
        "class_image_counts": [int(value) for value in dataset.class_image_counts()],
        "backbone": config.backbone,
        "fpn_channels": config.fpn_channels,
        "loss": config.loss,
        "loss_options": dict(config.loss_options),
        "normalizer": config.normalizer,
        "min_size": config.min_size,
        "max_size": config.max_size,
        "config": config_to_dict(config),
    }
    return save_checkpoint(path, {"format": MODEL_FORMAT, "metadata": metadata, "model": model.state_dict()})


def build_model_from_metadata(metadata: dict[str, Any], **retinanet_options: Any) -> nn.Module:
    """An untrained RetinaNet of the architecture ``metadata`` (of ``model.pt``) describes."""
    return build_retinanet(
        metadata["num_classes"],
        backbone=metadata["backbone"],
        loss=metadata["loss"],
        loss_options=metadata["loss_options"],
        backbone_weights=None,
        min_size=metadata["min_size"],
        max_size=metadata["max_size"],
        normalizer=metadata["normalizer"],
        fpn_channels=metadata["fpn_channels"],
        **retinanet_options,
    )


def load_trained_model(path: str | os.PathLike, **retinanet_options: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The model saved by :func:`train_detection` and its metadata (``weights_only=True``)."""
    state = load_checkpoint(path, MODEL_FORMAT, ("metadata", "model"))
    model = build_model_from_metadata(state["metadata"], **retinanet_options)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected or any(not key.endswith("num_batches_tracked") for key in missing):
        raise ValueError(f"{str(path)!r} does not fit its own architecture: missing {missing}, unexpected {unexpected}")
    return model, state["metadata"]
