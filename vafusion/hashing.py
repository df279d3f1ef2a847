"""The sha256 of a file, for every layer: provenance of weight files (extract) and the checkpoint a
set of out-of-fold predictions belongs to (fusion). Standard library only, so any layer may use it."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (checkpoints are ~100 MB, never read whole)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
