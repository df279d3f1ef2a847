"""Write-then-rename, the one way vafusion writes a file that others may read.

Why: caches, checkpoints, reports and prediction files are read by other processes (a
teammate's trainer, a resumed run, a submission script). A file renamed into place is either
the old one or the whole new one; a kill or an error never leaves half of it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary name beside ``path``; on success it replaces ``path``, on error it is removed.

    The name is ``.<name>.tmp-<pid><suffix>``: hidden, unique per process, and never ending
    in the final file's extension unless ``suffix`` says so (for writers that pick the format
    from it), so globs such as ``*.h5`` do not see half-written files.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there after an error
