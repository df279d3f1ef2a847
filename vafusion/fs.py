"""Filesystem failures as one-line errors, for every command that writes: caches, runs, predictions.

Why one module: a folder below a regular file, a read-only disk, a full disk or a file-size
limit are the same fault whether a cache, a checkpoint, a report or a prediction file is being
written; each is one :class:`~vafusion.errors.VafusionError` naming the path and the fix, never
an ``OSError`` traceback. :mod:`vafusion.atomic` turns a failed write into :func:`write_error`,
so every file written through ``atomic_path`` gets the same message.

Temporary files (``.<name>.tmp-<pid>``, see :mod:`vafusion.atomic`) left by a killed writer are
listed by :func:`temporary_files` (``cache info``/``verify`` report them) and removed by
:func:`remove_stale_temporaries` where a command owns the folder (a run directory).
"""

from __future__ import annotations

import errno
import os
import re
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from vafusion.errors import VafusionError

TEMPORARY_FILE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)")
"""Names ``vafusion.atomic.atomic_path`` gives files (and folders) being written (groups: name, pid)."""

WRITE_FAILURES = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file too large for this process's limit (ulimit -f)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
    errno.EACCES: "permission denied",
}
"""errno of a write that failed because of the storage, not of the program, with how it is named."""

_HDF5_ERRNO = re.compile(r"errno = (\d+)")  # h5py's OSError carries the errno only in its text


def make_dir(path: Path, what: str = "cache directory") -> Path:
    """``mkdir -p path``, with one clear error when a parent is a file or cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise VafusionError(
            f"{path}: cannot create the {what}: {blocker} is a file, not a folder; choose another path"
        ) from e
    except OSError as e:
        raise VafusionError(f"{path}: cannot create the {what} ({e.strerror}); choose another path") from e
    return path


def require_writable(folder: Path, what: str) -> None:
    """Raise a one-line error if ``what`` cannot be written into ``folder`` (read-only, no permission)."""
    if os.access(folder, os.W_OK):
        return
    try:
        read_only_fs = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_fs = False
    why = "on a read-only file system" if read_only_fs else "not writable by this user"
    raise VafusionError(
        f"{folder}: {what} must be written, but the folder is {why}; copy the cache to a writable "
        f"place (or fix its permissions) and run again"
    )


def require_space(folder: Path, nbytes: int, what: str) -> None:
    """Refuse before writing ``what`` (about ``nbytes``) where it cannot fit: free space, ``ulimit -f``.

    Why check first: a big HDF5 file whose writes fail midway can take the process down with
    it (h5py crashed on a close after EFBIG in our tests); a check costs one statvfs.
    """
    free = shutil.disk_usage(folder).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if nbytes > free:
        raise VafusionError(
            f"{folder}: {what} needs about {nbytes / 2**20:.1f} MiB but only {free / 2**20:.1f} MiB are free; "
            f"free space and rerun the same command: what was finished before is kept"
        )
    if limit != resource.RLIM_INFINITY and nbytes > limit:
        raise VafusionError(
            f"{folder}: {what} needs about {nbytes / 2**20:.1f} MiB, over this process's file size limit "
            f"({limit / 2**20:.1f} MiB, `ulimit -f`); raise it and rerun: what was finished before is kept"
        )


def failed_write_reason(error: OSError) -> str | None:
    """How a storage failure is named ("no space left on device" ...), or None for another OSError."""
    code = error.errno
    if code is None:
        found = _HDF5_ERRNO.search(str(error))
        code = int(found.group(1)) if found else None
    return WRITE_FAILURES.get(code) if code is not None else None


def write_error(path: Path, error: OSError) -> VafusionError:
    """A failed write (disk full, quota, I/O error) as one line: what finished is kept."""
    reason = failed_write_reason(error)
    if reason is None:
        reason = os.strerror(error.errno) if error.errno else (str(error).splitlines() or [type(error).__name__])[0]
    return VafusionError(
        f"{path}: could not be written ({reason}); what was finished before is kept: free space or "
        f"fix the storage, then rerun the same command"
    )


def list_folder(folder: Path, what: str) -> list[os.DirEntry]:
    """The entries of ``folder``; one that cannot be read (permissions, gone, not a folder) is a
    one-line error naming it, not an OSError traceback out of discovery."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as e:
        raise VafusionError(
            f"{folder}: cannot list the {what} ({e.strerror or e}); check the folder and its permissions"
        ) from e


def read_text(path: Path, what: str = "text file") -> str:
    """The content of a UTF-8 text file (a byte-order mark dropped, as editors on Windows write one);
    a missing, unreadable or non-UTF-8 file is one error naming it."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError as e:
        raise VafusionError(f"{path}: no such file; give the path of the {what}") from e
    except IsADirectoryError as e:
        raise VafusionError(f"{path}: a directory, not a {what}") from e
    except UnicodeDecodeError as e:
        raise VafusionError(f"{path}: not UTF-8 text (byte {e.start}); give the {what} as UTF-8 text") from e
    except OSError as e:
        raise VafusionError(f"{path}: cannot read the {what} ({e.strerror or e})") from e


@dataclass(frozen=True)
class TemporaryFile:
    """A ``.<name>.tmp-<pid>`` file: a write in progress, or left by a killed writer."""

    path: Path
    pid: int

    @property
    def running(self) -> bool:
        """Whether the writing pid still runs on this machine (it may be another machine's pid)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def state(self) -> str:
        return (
            f"pid {self.pid} still runs here: a write in progress?"
            if self.running
            else f"pid {self.pid} no longer runs here: left by a killed writer, safe to delete"
        )

    def __str__(self) -> str:
        return f"{self.path} ({self.state})"


def temporary_files(folder: Path, name: str | None = None) -> list[TemporaryFile]:
    """The temporary files (and folders) directly in ``folder``; with ``name``, only those of that final name."""
    found = []
    try:
        entries = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        m = TEMPORARY_FILE.match(entry)
        if m and (name is None or m["name"] == name):
            found.append(TemporaryFile(folder / entry, int(m["pid"])))
    return found


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries in ``folder`` (of final name ``name``, or all) whose writer no longer
    runs here, or is this process (a previous call's leftovers); returns what was removed.

    For folders one command owns (a run directory, a prediction folder's parent), where a
    leftover can only come from a killed run of that command.
    """
    removed = []
    for tmp in temporary_files(folder, name):
        if tmp.running and tmp.pid != os.getpid():
            continue
        if tmp.path.is_dir() and not tmp.path.is_symlink():
            shutil.rmtree(tmp.path, ignore_errors=True)
        else:
            tmp.path.unlink(missing_ok=True)
        removed.append(tmp.path)
    return removed
