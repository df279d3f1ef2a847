"""Shared pieces of the fault suite: a trained run, a sharded cache, CLI outcome checks, a read-only folder.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

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


@pytest.fixture(scope="session")
def toy_run(toy_cache: Path, tmp_path_factory) -> Path:
    """A ridge run trained on ``toy_cache`` (seconds), for predict and evaluate on damaged copies."""
    run = tmp_path_factory.mktemp("faults") / "run"
    result = invoke("train", toy_cache, "--run", run, "--model", "ridge", "--features", "visual,audio",
                    "--no-report", "--device", "cpu")
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
        pytest.skip("running as root without the right to mount: no way to make a read-only folder here")
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
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={disk_kib}k", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0:
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
