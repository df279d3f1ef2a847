"""Write-then-rename, the one way vafusion writes a file that others may read.

Why: caches, checkpoints, reports and prediction files are read by other processes (a
teammate's trainer, a resumed run, a submission script). A file renamed into place is either
the old one or the whole new one; a kill or an error never leaves half of it. A write that
fails because of the storage (disk full, ``ulimit -f``, quota, read-only) is one
:class:`~vafusion.errors.VafusionError` naming the file (:func:`vafusion.fs.write_error`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vafusion.fs import failed_write_reason, write_error


def temporary_name(path: Path, suffix: str = "") -> Path:
    """``.<name>.tmp-<pid><suffix>`` beside ``path`` (:data:`vafusion.fs.TEMPORARY_FILE` matches it)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary name beside ``path``; on success it replaces ``path``, on error it is removed.

    The name is ``.<name>.tmp-<pid><suffix>``: hidden, unique per process, and never ending
    in the final file's extension unless ``suffix`` says so (for writers that pick the format
    from it), so globs such as ``*.h5`` do not see half-written files.
    """
    path = Path(path)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if failed_write_reason(e) is None:
            raise
        raise write_error(path, e) from e
    finally:
        tmp.unlink(missing_ok=True)  # only still there after an error
