"""Where data and caches live, shared by every domain.

- The data root: an explicit ``root`` argument, else the environment variable ``EQUIPOISE_DATA``
  (never a hard-coded path).
- The cache: ``$EQUIPOISE_CACHE/data``, by default ``~/.cache/equipoise/data`` (extracted
  archives, parsed tables); nothing is ever written next to the data, which may be read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_root"]


def data_root(root: str | os.PathLike | None = None, holds: str = "the datasets") -> Path:
    """``root`` when given, else ``$EQUIPOISE_DATA``; ``FileNotFoundError`` when neither.

    ``holds`` completes the error message ("pass root=<folder holding {holds}>").
    """
    if root is None:
        root = os.environ.get("EQUIPOISE_DATA") or None
        if root is None:
            raise FileNotFoundError(
                f"no data root: pass root=<folder holding {holds}> or set the environment variable EQUIPOISE_DATA"
            )
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}")
    return Path(root).expanduser()


def cache_dir() -> Path:
    """The cache folder: ``$EQUIPOISE_CACHE/data``, by default ``~/.cache/equipoise/data``."""
    base = os.environ.get("EQUIPOISE_CACHE") or None
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "equipoise") / "data"
