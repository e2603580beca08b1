"""Vision checkpoints: one file per run holding everything to resume, decouple or evaluate it.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)`` only (tensors, numbers, strings, lists and dicts; no
pickled objects):

| key | what |
|---|---|
| ``format`` | ``"equipoise.vision/1"`` |
| ``stage`` | ``"train"`` (stage 1) or the decoupling method that produced it (``"crt"``, ...) |
| ``config`` | the run's ``TrainConfig`` as a dict (``config_to_dict``) |
| ``epoch`` | epochs completed |
| ``model`` | the model's ``state_dict`` |
| ``class_counts`` / ``class_names`` | of the training split |
| ``optimizer``, ``scaler``, ``rng`` | training state for an exact resume (``None`` when not resumable) |
| ``metrics`` | the last evaluation, if any |

Writes are atomic (a temporary file renamed into place), so an interrupted save never leaves
a half-written checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from equipoise.core import checkpoint as core_checkpoint
from equipoise.core.config import config_from_dict
from equipoise.core.device import resolve_device

__all__ = ["FORMAT", "build_model", "load_checkpoint", "model_from_checkpoint", "save_checkpoint"]

FORMAT = "equipoise.vision/1"
_REQUIRED = ("format", "stage", "config", "epoch", "model", "class_counts", "class_names")


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` (the dict described in the module docstring) atomically to ``path``."""
    missing = [key for key in _REQUIRED if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint is missing {', '.join(missing)}")
    return core_checkpoint.save_checkpoint(path, checkpoint)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a vision checkpoint with ``torch.load(weights_only=True)`` and check its keys
    (``equipoise.core.checkpoint.load_checkpoint``: ``FileNotFoundError`` for a missing file,
    ``ValueError`` naming the file for a corrupt one, another format or missing keys)."""
    return core_checkpoint.load_checkpoint(path, FORMAT, _REQUIRED, map_location)


def model_from_checkpoint(
    checkpoint: str | Path | dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint (built from its config, weights loaded strictly), and the checkpoint.

    The model is in eval mode on ``device`` (``"auto"``: CUDA when present).
    """
    from equipoise.vision.config import TrainConfig

    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    config = config_from_dict(TrainConfig, checkpoint["config"])
    model = build_model(config, len(checkpoint["class_counts"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ValueError(f"checkpoint weights do not fit model {config.model.name!r}: {error}") from None
    return model.to(resolve_device(device)).eval(), checkpoint


def build_model(config: Any, num_classes: int) -> nn.Module:
    """The model a ``TrainConfig`` describes, with ``num_classes`` outputs, initialised from ``config.seed``."""
    from equipoise.vision.models import create_model

    options: dict[str, Any] = {}
    if config.model.in_chans is not None:
        options["in_chans"] = config.model.in_chans
    if config.model.drop_rate is not None:
        options["drop_rate"] = config.model.drop_rate
    return create_model(
        config.model.name,
        num_classes,
        classifier=config.model.classifier,
        pretrained=config.model.pretrained,
        seed=config.seed,
        **options,
    )
