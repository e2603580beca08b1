"""Stage-1 training of a long-tailed image classifier from a :class:`~equipoise.vision.config.TrainConfig`.

>>> from equipoise.vision.config import load_train_config
>>> from equipoise.vision.train import train
>>> run_dir = train(load_train_config("ldam_drw", ["epochs=30", "output=results/vision/ldam"]))

One loop for every recipe: a timm model (``equipoise.vision.models``), any core loss by name
with optional deferred re-weighting (``LossConfig.drw_epoch``), any core sampler (or a
shuffle), optional mixup/CutMix through ``timm.data.Mixup``, or MetaBalance's meta-learning
step (``equipoise.core.meta.MetaBalance``) in place of the plain step.

What a run leaves in ``config.output``:

- ``config.yaml``: the merged, validated config; ``class_counts.md`` / ``class_counts.png``: the
  training split's profile (``describe`` and its log-scale plot);
- ``checkpoint.pt``: written atomically after every epoch (``equipoise.vision.checkpoint``);
  running the same config again resumes from it and gives exactly the weights of an
  uninterrupted run (model, optimiser, AMP scaler, and the torch / NumPy / Python random states
  of every rank are saved; samplers draw from ``(seed, epoch)``);
- ``log.jsonl``: one JSON line per epoch (learning rate, training loss and accuracy, images/s,
  test accuracy and balanced accuracy when evaluated);
- ``metrics.json``: the last evaluation on the test split (``evaluate_classification``).

Devices: ``config.device`` (``"auto"``: CUDA when present). On CUDA, ``config.amp`` trains in
float16 autocast with a gradient scaler. Launched by ``torchrun --nproc_per_node N``, every
process trains a DDP replica on its share of each epoch (the core samplers and
``DistributedSampler`` split an epoch into disjoint rank shares); rank 0 writes the files.

Randomness: the run owns its process, so it seeds PyTorch, NumPy (timm's Mixup draws from it)
and Python's ``random`` from ``config.seed`` (plus the rank) once at the start -- the one place
in equipoise that seeds globally; the model's initial weights come from ``config.seed`` alone,
identical on every rank.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from equipoise.core.config import ConfigError, config_to_dict
from equipoise.core.device import resolve_device
from equipoise.core.losses import LOSSES, DeferredReweighting
from equipoise.core.samplers import SAMPLERS
from equipoise.vision.checkpoint import FORMAT, build_model, load_checkpoint, save_checkpoint
from equipoise.vision.config import OptimizerConfig, TrainConfig
from equipoise.vision.data import dataset_from_config, describe, plot_class_counts

__all__ = ["build_criterion", "learning_rate", "train"]

# Keys that may change between a run and its resumption: they do not change what the finished
# epochs computed ("epochs" may grow, to extend a run).
_RESUMABLE_DIFFERENCES = {
    "output",
    "progress",
    "device",
    "epochs",
    "eval_every",
    "evaluate",
    "eval_batch_size",
    "data.num_workers",
}


def learning_rate(optimizer: OptimizerConfig, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (from 0): linear warm-up, then the step, cosine or constant schedule.

    Warm-up (Goyal et al. 2017; the LDAM code's ``adjust_learning_rate``): ``lr * (epoch + 1) /
    warmup_epochs`` for the first ``warmup_epochs`` epochs. Step: ``lr * factor`` of the last
    ``[epoch, factor]`` pair of ``lr_steps`` reached. Cosine: ``lr / 2 * (1 + cos(pi * t))`` with
    ``t`` running from 0 to 1 over the epochs after warm-up.
    """
    if epoch < optimizer.warmup_epochs:
        return optimizer.lr * (epoch + 1) / optimizer.warmup_epochs
    if optimizer.schedule == "constant":
        return optimizer.lr
    if optimizer.schedule == "cosine":
        span = max(1, epochs - optimizer.warmup_epochs)
        return optimizer.lr * 0.5 * (1 + math.cos(math.pi * (epoch - optimizer.warmup_epochs) / span))
    factor = 1.0
    for milestone, step_factor in optimizer.lr_steps:
        if epoch >= milestone:
            factor = step_factor
    return optimizer.lr * factor


def build_criterion(config: TrainConfig, class_counts: list[int]) -> nn.Module:
    """The configured core loss; ``class_counts`` is passed to losses that take it.

    With mixup on, the loss is built with ``reduction="none"`` (the mixed loss weighs each
    example's two terms). Unknown loss names or options raise ``ConfigError`` naming them.
    """
    if config.loss.name not in LOSSES.names():
        raise ConfigError(
            f"loss.name {config.loss.name!r} is not a core loss; choose one of {', '.join(LOSSES.names())}"
        )
    loss_class = LOSSES.get(config.loss.name)
    parameters = inspect.signature(loss_class).parameters
    options = dict(config.loss.options)
    unknown = sorted(set(options) - set(parameters) - {"self"})
    if unknown:
        raise ConfigError(
            f"loss.options {unknown} are not options of {config.loss.name!r}; it takes {', '.join(parameters)}"
        )
    if "class_counts" in parameters and "class_counts" not in options:
        options["class_counts"] = class_counts
    if config.mixup.enabled:
        options["reduction"] = "none"
    criterion = loss_class(**options)
    if config.loss.drw_epoch is not None and not hasattr(criterion, "weight"):
        raise ConfigError(f"loss.drw_epoch needs a loss with per-class weights; {config.loss.name!r} has none")
    return criterion


@dataclass
class _Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Distributed(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and key not in ("options",):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    old, new = _flatten(saved), _flatten(current)
    differing = sorted(
        k for k in old.keys() | new.keys() if k not in _RESUMABLE_DIFFERENCES and old.get(k) != new.get(k)
    )
    if differing:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differing[:5])
        raise ValueError(
            f"{path} was written by a different config ({details}); resume with the same config, "
            "or choose another output directory"
        )


def _truncate_log(path: Path, epochs: int) -> None:
    """Keep the log lines of the first ``epochs`` epochs (those the checkpoint being resumed holds)."""
    if path.is_file():
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["epoch"] <= epochs]
        path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def _autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else nullcontext()


def _mixed_loss(criterion: nn.Module, logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Mixup's loss ``lam * L(z, y) + (1 - lam) * L(z, y_flip)`` for any loss, from timm's soft targets.

    timm mixes example ``i`` with example ``N - 1 - i`` (``target.flip(0)``), and with label
    smoothing 0 its soft target holds ``lam_i`` at ``y_i`` (1 when both labels agree, where the
    two terms are equal anyway).
    """
    lam = soft.gather(1, labels[:, None]).squeeze(1).float()
    return (lam * criterion(logits, labels) + (1 - lam) * criterion(logits, labels.flip(0))).mean()


def train(config: TrainConfig, resume: bool = True) -> Path:
    """Train (or resume) the run ``config`` describes; returns its output directory."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (see load_train_config), got {type(config).__name__}")
    device = resolve_device(config.device)
    ddp = _init_distributed(device)
    if device.type == "cuda" and ddp.world_size > 1:
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    amp = config.amp and device.type == "cuda"
    output = Path(config.output)
    checkpoint_path = output / "checkpoint.pt"
    config_dict = config_to_dict(config)

    train_set = dataset_from_config(config.data, "train")
    test_set = dataset_from_config(config.data, "test")
    class_counts = list(train_set.class_counts)
    if ddp.main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.yaml").write_text(yaml.safe_dump(config_dict, sort_keys=False), encoding="utf-8")
        (output / "class_counts.md").write_text(describe(train_set) + "\n", encoding="utf-8")
        plot_class_counts(class_counts, output / "class_counts.png", train_set.classes)

    _seed_everything(config.seed + ddp.rank)
    model = build_model(config, len(class_counts)).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_criterion(config, class_counts).to(device)
    drw = (
        None
        if config.loss.drw_epoch is None
        else DeferredReweighting(class_counts, config.loss.drw_epoch, config.loss.drw_beta)
    )
    if config.optimizer.name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.optimizer.lr,
            momentum=config.optimizer.momentum,
            nesterov=config.optimizer.nesterov,
            weight_decay=config.optimizer.weight_decay,
        )
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.optimizer.lr, weight_decay=config.optimizer.weight_decay
        )
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start_epoch, metrics = 0, {}
    if ddp.main and not (resume and checkpoint_path.is_file()):
        (output / "log.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log
    if resume and checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path)
        _check_resumable(saved["config"], config_dict, checkpoint_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
        _set_rng_state(saved["rng"][ddp.rank] if ddp.rank < len(saved["rng"]) else saved["rng"][0])
        start_epoch, metrics = saved["epoch"], saved.get("metrics") or {}
        if ddp.main:
            _truncate_log(output / "log.jsonl", start_epoch)
    network = (
        nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if ddp.world_size > 1
        else model
    )

    if config.sampler.name is not None:
        if config.sampler.name not in SAMPLERS.names():
            known = ", ".join(SAMPLERS.names())
            raise ConfigError(
                f"sampler.name {config.sampler.name!r} is not a core sampler; choose one of {known} or null"
            )
        sampler = SAMPLERS.build(
            config.sampler.name, labels=train_set.targets, seed=config.seed, **config.sampler.options
        )
    else:
        sampler = DistributedSampler(
            train_set, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=config.seed
        )
    loader_options = {"num_workers": config.data.num_workers, "pin_memory": device.type == "cuda"}
    train_loader = DataLoader(
        train_set,
        config.batch_size,
        sampler=sampler,
        drop_last=config.mixup.enabled,
        generator=torch.Generator(),
        **loader_options,
    )
    mixup = None
    if config.mixup.enabled:
        from timm.data import Mixup

        mixup = Mixup(
            mixup_alpha=config.mixup.mixup_alpha,
            cutmix_alpha=config.mixup.cutmix_alpha,
            prob=config.mixup.prob,
            switch_prob=config.mixup.switch_prob,
            mode=config.mixup.mode,
            label_smoothing=0.0,
            num_classes=len(class_counts),
        )
    meta = (
        _MetaBalanceSteps(config, model, criterion, optimizer, train_set, device)
        if config.metabalance.enabled
        else None
    )

    try:
        for epoch in range(start_epoch, config.epochs):
            lr = learning_rate(config.optimizer, epoch, config.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if drw is not None:
                criterion.weight = drw.weight(epoch).to(device)
            network.train()
            started = time.perf_counter()
            if meta is not None:
                loss_sum, correct, seen = meta.run_epoch(epoch, config.progress and ddp.main)
            else:
                sampler.set_epoch(epoch)
                train_loader.generator.manual_seed(config.seed * 100_003 + epoch)
                loss_sum, correct, seen = 0.0, 0, 0
                steps = (
                    len(train_loader)
                    if config.max_steps_per_epoch is None
                    else min(len(train_loader), config.max_steps_per_epoch)
                )
                batches = tqdm(
                    train_loader,
                    total=steps,
                    desc=f"epoch {epoch + 1}/{config.epochs}",
                    disable=not (config.progress and ddp.main),
                    leave=False,
                )
                for step, (images, labels) in enumerate(batches):
                    if step >= steps:
                        break
                    images = images.to(device, non_blocking=True)
                    labels = labels.to(device, non_blocking=True)
                    if config.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    soft = None
                    if mixup is not None:
                        images, soft = mixup(images, labels)
                    with _autocast(device, amp):
                        logits = network(images)
                    logits = logits.float()
                    loss = criterion(logits, labels) if soft is None else _mixed_loss(criterion, logits, labels, soft)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    loss_sum += float(loss.detach()) * labels.numel()
                    correct += int((logits.detach().argmax(1) == labels).sum())
                    seen += labels.numel()
                    batches.set_postfix(loss=f"{loss_sum / seen:.4f}")
            elapsed = time.perf_counter() - started
            record = {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "images": seen * ddp.world_size,
                "images_per_second": seen * ddp.world_size / elapsed,
                "seconds": elapsed,
            }
            # The random state after training, before evaluation: what the next epoch starts from.
            rng_states = [_rng_state()]
            if ddp.world_size > 1:
                rng_states = [None] * ddp.world_size
                dist.all_gather_object(rng_states, _rng_state())
            last = epoch + 1 == config.epochs
            if (last and config.evaluate) or (config.eval_every and (epoch + 1) % config.eval_every == 0):
                metrics = _test_metrics(config, model, test_set, device, class_counts, train_set.classes)
                record.update(
                    {
                        f"test_{k}": v
                        for k, v in metrics.items()
                        if k in ("accuracy", "balanced_accuracy", "few_shot_accuracy")
                    }
                )
            if ddp.main:
                # The log line first: a resumption drops the lines of epochs its checkpoint lacks.
                with open(output / "log.jsonl", "a", encoding="utf-8") as log:
                    log.write(json.dumps(record) + "\n")
                save_checkpoint(
                    checkpoint_path,
                    {
                        "format": FORMAT,
                        "stage": "train",
                        "config": config_dict,
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "class_counts": class_counts,
                        "class_names": list(train_set.classes),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": rng_states,
                        "metrics": metrics,
                    },
                )
                if config.progress:
                    shown = ", ".join(
                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in record.items()
                        if k != "epoch" and v is not None
                    )
                    tqdm.write(f"epoch {epoch + 1}/{config.epochs}: {shown}")
    except KeyboardInterrupt:
        if ddp.main:
            tqdm.write(f"interrupted; {checkpoint_path} holds the last finished epoch: run the same command to resume")
        raise
    if ddp.main:
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return output


def _test_metrics(config: TrainConfig, model: nn.Module, test_set, device, class_counts, class_names) -> dict[str, Any]:
    from equipoise.core.metrics import evaluate_classification
    from equipoise.vision.evaluate import predict_logits

    logits, targets = predict_logits(
        model, test_set, device, config.eval_batch_size, config.data.num_workers, amp=False, progress=False
    )
    report = evaluate_classification(logits, targets, class_counts=class_counts, class_names=list(class_names))
    return dict(report.scalars)


class _MetaBalanceSteps:
    """Epochs of MetaBalance outer updates over the training split held in memory.

    The support stream draws instance-wise batches, the query stream class-balanced ones
    (``equipoise.core.meta.iterate_batches``), both from a generator seeded by ``(seed, epoch)``
    so that a resumed run draws what an uninterrupted one would. The images are read once with
    the evaluation transform: the meta-steps see un-augmented images, as in the authors' code.
    """

    def __init__(self, config, model, criterion, optimizer, train_set, device) -> None:
        from equipoise.core.meta import MetaBalance

        settings = config.metabalance
        plain = dataset_from_config(config.data, "train", augment=False)
        images = torch.stack([plain[i][0] for i in range(len(plain))]).to(device)
        self.images, self.labels = images, torch.as_tensor(plain.targets, device=device)
        self.trainer = MetaBalance(
            model, criterion, optimizer, settings.inner_lr, settings.beta, settings.meta_steps, settings.first_order
        )
        self.updates = settings.updates_per_epoch or max(
            1, len(plain) // (settings.support_batch * settings.meta_steps)
        )
        self.config = config

    def run_epoch(self, epoch: int, progress: bool) -> tuple[float, int, int]:
        from equipoise.core.meta import iterate_batches

        settings = self.config.metabalance
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        support = iterate_batches(self.images, self.labels, settings.support_batch, "instance", generator=generator)
        query = iterate_batches(self.images, self.labels, settings.query_batch, "balanced", generator=generator)
        loss_sum, seen = 0.0, 0
        for _ in tqdm(range(self.updates), desc=f"epoch {epoch + 1} (MetaBalance)", disable=not progress, leave=False):
            losses = self.trainer.step(support, query)
            loss_sum += float(losses.meta_loss) * settings.query_batch
            seen += settings.query_batch
        return loss_sum, 0, seen
