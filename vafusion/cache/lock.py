"""One writer per cache file (and per run directory): an exclusive lock held while a process writes it.

Why: two runs may be pointed at the same cache. The second fails at once with one
:class:`VafusionError` naming the holder, instead of an HDF5 "Unable to create file" per
video. Two trainings of one run directory (two identical ``compare`` or ``cv`` commands, a
``train --resume`` beside a running ``train``) would write every epoch twice into one
``metrics.jsonl``; the trainer takes the same lock on the directory (:mod:`vafusion.fusion.runs.run_dir`).
(The folder checks every writing command shares, ``make_dir``, ``require_writable``,
``require_space``, ``write_error``, live in :mod:`vafusion.fs`.)
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from vafusion.cache import schema
from vafusion.errors import VafusionError


class WriteLock:
    """An exclusive ``flock`` on ``CACHE/.<file>.lock`` for as long as one process writes ``<file>``.

    A second writer fails at once, naming the holder's pid. The kernel drops the lock when
    the holder exits or is killed, so a stale lock file never blocks a rerun. Linux and macOS.
    """

    def __init__(
        self,
        target: Path,
        path: Path | None = None,
        doing: str = "written",
        advice: str = "wait for it to finish or use another cache",
    ) -> None:
        """``path``: the lock file (default ``.<target name>.lock`` beside ``target``); ``doing`` and
        ``advice`` word the error (``"... is being {doing} by another process (pid N on HOST); {advice}"``)."""
        self.target = target
        self.path = path or target.with_name(f".{target.name}{schema.LOCK_SUFFIX}")
        self.doing, self.advice = doing, advice
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
            except BlockingIOError as e:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "pid unknown"
                os.close(fd)
                raise VafusionError(
                    f"{self.target} is being {self.doing} by another process ({holder}); {self.advice}"
                ) from e
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

    def __enter__(self) -> WriteLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
