"""Checkpoint files every domain writes: plain dicts, saved atomically, read with ``weights_only=True``.

A domain's checkpoint is a dict with a ``format`` key (``"equipoise.vision/1"``,
``"equipoise.tabular/1"``, ...) and its own required keys. :func:`save_checkpoint` writes it to a
temporary file renamed into place, so an interrupted save never leaves a half-written file;
:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)`` only (tensors, numbers,
strings, lists and dicts; no pickled objects) and turns every way a file can be wrong into a
clear error naming the file.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (a temporary file beside it, renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(checkpoint, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: str | os.PathLike,
    format: str,
    required: Sequence[str] = (),
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint of ``format`` holding the ``required`` keys, with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a corrupt or truncated file, a file that is not a torch checkpoint, another
            format, or missing keys; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or not a torch checkpoint: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != format:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"checkpoint {str(path)!r} is not an {format} checkpoint (format {found!r})")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} is missing {', '.join(missing)}")
    return checkpoint
