"""Filesystem preconditions of writing a cache: a folder to write into, one writer per file.

Why: a cache lives on shared and sometimes read-only storage, and two runs may be pointed at
the same one. Each failure here is one :class:`VafusionError` that names the path and the
fix, raised before any work is done, instead of an HDF5 "Unable to create file" per video.
Nothing is checked (or written) where nothing must be written: a read-only cache with
nothing left to extract or merge is fine.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from vafusion.cache import schema
from vafusion.errors import VafusionError


def make_dir(path: Path, what: str = "cache directory") -> Path:
    """``mkdir -p path``, with one clear error when a parent is a file or cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise VafusionError(
            f"{path}: cannot create the {what}: {blocker} is a file, not a folder; choose another path"
        ) from None
    except OSError as e:
        raise VafusionError(f"{path}: cannot create the {what} ({e.strerror}); choose another path") from None
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


def write_error(path: Path, error: OSError) -> VafusionError:
    """A failed write (disk full, quota, I/O error) as one line: what finished is kept."""
    reason = os.strerror(error.errno) if error.errno else str(error).splitlines()[0]
    if "errno = 28" in str(error) or error.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif "errno = 27" in str(error) or error.errno == errno.EFBIG:
        reason = "file too large for this process's limit (ulimit -f)"
    return VafusionError(
        f"{path}: could not be written ({reason}); what was finished before is kept: free space or "
        f"fix the storage, then rerun the same command"
    )


class WriteLock:
    """An exclusive ``flock`` on ``CACHE/.<file>.lock`` for as long as one process writes ``<file>``.

    A second writer fails at once, naming the holder's pid. The kernel drops the lock when
    the holder exits or is killed, so a stale lock file never blocks a rerun. Linux and macOS.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.with_name(f".{target.name}{schema.LOCK_SUFFIX}")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock (idempotent); VafusionError if another process holds it."""
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "pid unknown"
                os.close(fd)
                raise VafusionError(
                    f"{self.target} is being written by another process ({holder}); wait for it to "
                    f"finish or use another cache"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # the previous holder removed it as we opened it
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
            self._fd = fd

    def release(self) -> None:
        """Remove the lock file while still holding the lock, then drop it."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


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
        return (f"pid {self.pid} still runs here: a write in progress?" if self.running
                else f"pid {self.pid} no longer runs here: left by a killed writer, safe to delete")

    def __str__(self) -> str:
        return f"{self.path} ({self.state})"


def temporary_files(cache_dir: Path) -> list[TemporaryFile]:
    """Temporary files in the cache folder and in its unfinished ``.parts/`` folders."""
    folders = [cache_dir]
    parts = cache_dir / schema.PARTS_DIR
    if parts.is_dir():
        folders += sorted(p for p in parts.iterdir() if p.is_dir())
    found = []
    for folder in folders:
        for p in sorted(folder.iterdir()):
            m = schema.TEMPORARY_FILE.match(p.name)
            if m:
                found.append(TemporaryFile(p, int(m["pid"])))
    return found
