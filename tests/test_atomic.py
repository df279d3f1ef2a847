"""atomic_path: readers see the old file or the whole new one, never half, and no leftovers."""

from __future__ import annotations

import resource
import signal

import pytest

from vafusion.atomic import atomic_path
from vafusion.errors import VafusionError


def test_success_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.tmp-") and not tmp.name.endswith(".txt")
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.h5"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target, suffix=".png") as tmp:
        assert tmp.name.endswith(".png")
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_a_storage_failure_is_one_error_naming_the_file(tmp_path):
    """Disk full, ``ulimit -f``, quota: a VafusionError naming the final file; the old one kept, no temporary."""
    target = tmp_path / "out.bin"
    target.write_text("old")
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old_limit[1]))
    try:
        with pytest.raises(VafusionError) as err, atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 10_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert str(err.value).startswith(f"{target}: could not be written (file too large for this process's limit")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.txt"):
        (tmp_path / "missing").read_text()
