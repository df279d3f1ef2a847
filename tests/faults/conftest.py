"""Shared pieces of the fault suite: a trained run, a sharded cache, CLI outcome checks, a read-only folder,
a small disk, and commands killed at a chosen write.

Why: every fault is injected into a private copy (``copy_cache``) of a session cache and
checked through the command line the way a user meets it: exit code, one ``error:`` line
naming the file (and id, dataset or option), no traceback.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result
from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

from vafusion.cache import split
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.merge import merge_shards
from vafusion.cache.reader import open_feature_file
from vafusion.cache.writer import FeatureWriter
from vafusion.cli import cli

SHARDED = "visual"  # the feature the sharded cache splits in two


def invoke(*args: object) -> Result:
    """Run the CLI in-process; an exception other than the CLI's own exit is a test failure."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"vafusion {' '.join(map(str, args))} raised {result.exception!r}:\n{result.output}")
    return result


def one_line_error(result: Result, *names: str) -> str:
    """Assert a failed command printed exactly one ``error:`` line naming each of ``names``; return it."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


@pytest.fixture(autouse=True)
def _every_test_on_one_thread(one_thread):
    """Tiny models run fastest on one torch thread; the forked children of the kill tests inherit it."""


@pytest.fixture(scope="session")
def toy_run(toy_cache: Path, tmp_path_factory) -> Path:
    """A ridge run trained on ``toy_cache`` (seconds), for predict and evaluate on damaged copies."""
    run = tmp_path_factory.mktemp("faults") / "run"
    result = invoke(
        "train",
        toy_cache,
        "--run",
        run,
        "--model",
        "ridge",
        "--features",
        "visual,audio",
        "--no-report",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    return run


def write_shards(cache: Path, source: Path, n: int = 2, seed: int | None = None) -> list[Path]:
    """Write ``visual`` of ``source`` as N shards into ``cache`` (``seed``: perturb the values, a stranger's run)."""
    index = read_corpus_index(source)
    rng = np.random.default_rng(seed)
    with open_feature_file(source, SHARDED) as ff:
        data = {vid: ff.read(vid) for vid in ff.ids}
        extractor, dim = ff.extractor, ff.dim
    paths = []
    for k in range(1, n + 1):
        writer = FeatureWriter(cache, SHARDED, dim, extractor, index.fingerprint, shard=(k, n))
        for vid in split.shard_ids(index, (k, n)):
            feats, mask = data[vid]
            if seed is not None:
                feats = feats + rng.normal(size=feats.shape).astype(np.float16)
            writer.write(vid, feats, mask)
        paths.append(writer.finalize())
    return paths


@pytest.fixture(scope="session")
def sharded_cache(toy_cache: Path, tmp_path_factory) -> Path:
    """``toy_cache`` with ``visual`` extracted as 2 shards and merged by links (audio whole)."""
    cache = Path(shutil.copytree(toy_cache, tmp_path_factory.mktemp("sharded") / "cache"))
    (cache / f"{SHARDED}.h5").unlink()
    write_shards(cache, toy_cache)
    merge_shards(cache)
    return cache


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` read-only for this process: permissions for a user, a read-only bind mount for root."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            assert not os.access(folder, os.W_OK)
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    mount = shutil.which("mount")
    steps = [["mount", "--bind", str(folder), str(folder)], ["mount", "-o", "remount,bind,ro", str(folder)]]
    done = 0
    for step in steps if mount else []:
        if subprocess.run(step, capture_output=True).returncode != 0:
            break
        done += 1
    if done < len(steps):
        if done:
            subprocess.run(["umount", str(folder)], check=True)
        pytest.fail(
            "running as root without the right to mount: cannot make a read-only folder; run the suite "
            "as a normal user or where root may mount (a skipped check would pass for nothing)"
        )
    try:
        assert not os.access(folder, os.W_OK)
        yield
    finally:  # lazy: files a failed test left open must not keep the mount
        subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def small_disk(folder: Path, disk_kib: int, file_kib: int) -> Iterator[Callable[[], None]]:
    """Writes under ``folder`` fail: a tmpfs of ``disk_kib`` KiB for root, else ``ulimit -f`` of ``file_kib``.

    Yields ``grow()``, which lifts the limit (space freed), so the test can rerun and finish.
    """
    if os.geteuid() == 0 and shutil.which("mount"):
        folder.mkdir(parents=True, exist_ok=True)
        if (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={disk_kib}k", "tmpfs", str(folder)], capture_output=True
            ).returncode
            == 0
        ):
            try:
                yield lambda: subprocess.run(["mount", "-o", "remount,size=16m", str(folder)], check=True)
            finally:  # lazy: files a failed test left open must not keep the mount
                subprocess.run(["umount", "-l", str(folder)], check=True)
            return
    folder.mkdir(parents=True, exist_ok=True)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_kib * 1024, old_limit[1]))
    try:
        yield lambda: resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def usage_error(result: Result, option: str) -> str:
    """Assert a bad option was refused before any work: exit code 2, one ``error:`` line naming it."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Usage:" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert option in lines[0], (option, lines[0])
    return lines[0]


@dataclass
class ChildRun:
    """A ``vafusion`` command run in a forked child: how it ended and what it said."""

    status: int  # waitpid status
    writes: int  # file renames done (os.replace calls) before it ended
    output: str

    @property
    def killed(self) -> bool:
        return os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == signal.SIGKILL

    @property
    def exit_code(self) -> int | None:
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None


@contextmanager
def counting_writes(
    also_count: tuple[tuple[object, str], ...] = (),
    kill_at: int | None = None,
    report: Callable[[], None] = lambda: None,
) -> Iterator[list[int]]:
    """Count the writes of this process: ``os.replace`` calls (every file written through ``atomic_path``,
    every folder renamed into place) and calls of the functions in ``also_count`` (``(module, name)``);
    with ``kill_at``, SIGKILL this process just before the ``kill_at``-th (the way a kill lands in the
    middle of a write). Yields ``[count]``; ``report()`` is called at each write."""
    count = [0]
    patched = [(os, "replace"), *also_count]
    originals = [getattr(module, name) for module, name in patched]

    def counted(real: Callable) -> Callable:
        def call(*a, **k):
            count[0] += 1
            report()
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)

        return call

    for (module, name), real in zip(patched, originals):
        setattr(module, name, counted(real))
    try:
        yield count
    finally:
        for (module, name), real in zip(patched, originals):
            setattr(module, name, real)


def run_in_child(
    args: list[object],
    log: Path,
    kill_at: int | None = None,
    also_count: tuple[tuple[object, str], ...] = (),
    timeout: float = 90.0,
    memory_cap: int | None = None,
) -> ChildRun:
    """Run ``vafusion ARGS`` in a forked copy of this process (no imports to pay; run the command once
    in-process first to warm it up), and, with ``kill_at``, SIGKILL it at its ``kill_at``-th write
    (see :func:`counting_writes`).

    Why fork and SIGKILL, not an exception: a real kill runs no ``finally``, no cleanup, so what it
    leaves on disk (temporary files, half a set) is exactly what a user meets. A fork copies a lock
    another thread of pytest held at that instant, locked for ever (tqdm's monitor thread is
    stopped first for that reason); a child that does not end within ``timeout`` has its stacks
    written to ``log`` (faulthandler), is killed (which is one more kill the command must survive)
    and run once more: a second hang is a failure. ``memory_cap``: bytes of address space the child
    may map beyond what it has at the fork (RLIMIT_AS), so a case that would exhaust the memory of a
    shared machine fails fast in the child instead.
    """
    _stop_tqdm_monitor()
    for _attempt in (1, 2):
        run = _fork_once(args, log, kill_at, also_count, timeout, memory_cap)
        if run is not None:
            return run
    raise AssertionError(
        f"vafusion {' '.join(map(str, args))} did not end within {timeout} s, twice; "
        f"its stacks:\n{log.read_text(errors='replace')}"
    )


def _stop_tqdm_monitor() -> None:
    tqdm.monitor_interval = 0  # no new monitor thread
    if tqdm.monitor is not None:
        tqdm.monitor.exit()
        tqdm.monitor = None


def _fork_once(
    args: list[object],
    log: Path,
    kill_at: int | None,
    also_count: tuple[tuple[object, str], ...],
    timeout: float,
    memory_cap: int | None = None,
) -> ChildRun | None:
    """One forked run (see :func:`run_in_child`); None if it had to be killed after ``timeout``."""
    pid, read_fd = _start_child(args, log, kill_at, also_count, timeout, memory_cap)
    return _wait_child(pid, read_fd, log, time.monotonic() + timeout)


def run_children_at_once(commands: list[list[object]], logs: list[Path], timeout: float = 90.0) -> list[ChildRun]:
    """Run several ``vafusion`` commands at the same time, each in a forked child (see :func:`run_in_child`);
    how each ended. A child still running after ``timeout`` is killed and fails the test."""
    _stop_tqdm_monitor()
    started = [_start_child(args, log, None, (), timeout) for args, log in zip(commands, logs)]
    deadline = time.monotonic() + timeout
    runs = [_wait_child(pid, read_fd, log, deadline) for (pid, read_fd), log in zip(started, logs)]
    hung = [str(log) for run, log in zip(runs, logs) if run is None]
    assert not hung, f"did not end within {timeout} s: {hung}"
    return [run for run in runs if run is not None]


def one_thread(args: list[object]) -> list[object]:
    """ARGS with ``--threads 1`` added where the command takes it and none is given. A forked child
    that computes on more than one thread waits for ever on the OpenMP pool the fork copied without
    its threads (seen in the full suite, where pytest has used the pool before the fork); on one
    thread torch never enters that pool."""
    names = [str(a) for a in args]
    command = cli
    for name in names:
        if not isinstance(command, click.Group) or name not in command.commands:
            break
        command = command.commands[name]
    takes_threads = any(p.name == "threads" for p in command.params)
    return [*args, "--threads", "1"] if takes_threads and "--threads" not in names else args


def _start_child(
    args: list[object],
    log: Path,
    kill_at: int | None,
    also_count: tuple[tuple[object, str], ...],
    timeout: float,
    memory_cap: int | None = None,
) -> tuple[int, int]:
    """Fork a child running ``vafusion ARGS`` (output to ``log``); its pid and the pipe that counts its writes."""
    import faulthandler
    import sys

    args = one_thread(args)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            # tqdm's default lock holds a multiprocessing semaphore that a fork shares with the parent:
            # a child killed while holding it would leave every later progress bar of pytest waiting
            # for ever. The child's bars get a lock of their own.
            for bars in (tqdm, auto_tqdm):
                bars.set_lock(threading.RLock())
            os.close(read_fd)
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
            sys.stdout = sys.stderr = open(out, "w", buffering=1, closefd=False)  # not pytest's capture
            faulthandler.dump_traceback_later(timeout * 0.8, file=sys.stderr)
            if memory_cap is not None:
                mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
                resource.setrlimit(resource.RLIMIT_AS, (mapped + memory_cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
            with counting_writes(also_count, kill_at, lambda: os.write(write_fd, b".")):
                try:
                    cli.main(args=[str(a) for a in args], prog_name="vafusion", standalone_mode=True)
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - a bug: show it in the log
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _wait_child(pid: int, read_fd: int, log: Path, deadline: float) -> ChildRun | None:
    """Wait for a child of :func:`_start_child` until ``deadline``; None if it had to be killed then."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return None
        time.sleep(0.01)
    with os.fdopen(read_fd, "rb") as f:
        writes = len(f.read())
    return ChildRun(status, writes, log.read_text(errors="replace"))
