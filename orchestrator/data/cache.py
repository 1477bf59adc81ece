"""Where splitsweep keeps what it fetches and builds once per machine (models, demo photos)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_dir", "sha256_file"]


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """``cache``, else ``$SPLITSWEEP_CACHE``, else ``$XDG_CACHE_HOME/splitsweep``, else ``~/.cache/splitsweep``."""
    if cache:
        return Path(cache).expanduser()
    if os.environ.get("SPLITSWEEP_CACHE"):
        return Path(os.environ["SPLITSWEEP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "splitsweep"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks (models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
