"""Checkpoint files every domain writes: plain dicts, saved atomically, read with ``weights_only=True``.

A domain's checkpoint is a dict with a ``format`` key (``"equipoise.vision/1"``,
``"equipoise.tabular/1"``, ...) and its own required keys. :func:`save_checkpoint` writes it to a
temporary file renamed into place, so an interrupted save never leaves a half-written file;
:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)`` only (tensors, numbers,
strings, lists and dicts; no pickled objects) and turns every way a file can be wrong into a
clear error naming the file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["DeferredInterrupt", "file_sha256", "load_checkpoint", "load_state_dict_file", "save_checkpoint"]


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
    except OSError as error:  # torch's zip reader on some truncated files: "[Errno 22] Invalid argument"
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or not a torch checkpoint: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != format:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"checkpoint {str(path)!r} is not an {format} checkpoint (format {found!r})")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} is missing {', '.join(missing)}")
    return checkpoint


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The hex sha256 digest of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict_file(
    path: str | os.PathLike, sha256: str | None = None, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """A plain ``state_dict`` file (torchvision's or timm's published weights), verified, then read safely.

    ``sha256`` is the expected digest or a prefix of it of at least 8 hex digits (torchvision names
    its files after the first 8 or 10, e.g. ``mobilenet_v2-b0353104.pth``); the file is hashed and
    refused before anything is unpickled when it does not match. Reading uses
    ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a hash mismatch, a corrupt file, or a file that is not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {str(path)!r} does not exist")
    if sha256 is not None:
        expected = sha256.lower()
        if len(expected) < 8 or any(char not in "0123456789abcdef" for char in expected):
            raise ValueError(f"sha256 must be at least 8 hex digits, got {sha256!r}")
        actual = file_sha256(path)
        if not actual.startswith(expected):
            raise ValueError(f"weights file {str(path)!r} has sha256 {actual}, expected {expected}...: refusing it")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise ValueError(f"weights file {str(path)!r} is corrupt or not a torch file: {error}") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"weights file {str(path)!r} is not a state_dict (a dict of tensors)")
    return state


class DeferredInterrupt:
    """Hold a Ctrl-C until the training loop reaches a point where the state is whole.

    ``with DeferredInterrupt() as stop:`` turns the first SIGINT into ``stop.requested = True``;
    the loop checks it after each step, saves a checkpoint of a finished step, and raises
    ``KeyboardInterrupt`` itself. A second Ctrl-C raises at once (the last saved checkpoint is
    then the one to resume from). Outside the main thread, where signal handlers cannot be set,
    Ctrl-C is not deferred; a process that ignores SIGINT (``nohup``, a background job) keeps
    ignoring it. The previous handler is restored on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # e.g. nohup: stays ignored
        if threading.current_thread() is threading.main_thread() and not ignored:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
