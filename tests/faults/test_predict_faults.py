"""Faults of ``predict --out DIR``: the per-video files appear as one whole set or not at all.

A set is written into a hidden temporary folder beside DIR with ``predictions.json`` and renamed
into place, so an error (a full disk) or a kill (tests/faults/test_kills.py) leaves no partial set
that looks whole, an earlier set is replaced entirely (no stale files of other ids), and a folder
of other files is never written into.
"""

from __future__ import annotations

import json

from tests.faults.conftest import invoke, one_line_error, small_disk
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.fusion.predict.files import MANIFEST


def _predict(run, cache, out, *extra):
    return invoke("predict", run, "--cache", cache, "--out", out, "--device", "cpu", *extra)


def test_an_ids_file_with_a_bom_and_crlf_reads_as_ids(toy_run, toy_cache, tmp_path):
    ids = read_corpus_index(toy_cache).ids[:3]
    listing = tmp_path / "ids.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(ids).encode() + b"\r\n")  # as Notepad saves it
    result = _predict(toy_run, toy_cache, tmp_path / "out", "--ids", listing)
    assert result.exit_code == 0, result.output
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.txt")) == sorted(ids)
    listing.write_bytes(b"\xff\xfe" + "vid01\n".encode("utf-16-le"))  # UTF-16: named, not a traceback
    one_line_error(_predict(toy_run, toy_cache, tmp_path / "out2", "--ids", listing), str(listing), "not UTF-8")


def test_a_new_set_replaces_the_old_one_whole(toy_run, toy_cache, tmp_path):
    out = tmp_path / "out"
    assert _predict(toy_run, toy_cache, out, "--ids", "all").exit_code == 0
    every = sorted(p.name for p in out.glob("*.txt"))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"] == every and manifest["runs"] == [str(toy_run)] and "post_processing" in manifest
    result = _predict(toy_run, toy_cache, out)  # the test ids only: none of the others may stay behind
    assert result.exit_code == 0 and f"prediction files and {MANIFEST}" in result.output
    test_ids = sorted(e.id for e in read_corpus_index(toy_cache).by_partition("test"))
    assert sorted(p.stem for p in out.glob("*.txt")) == test_ids
    assert json.loads((out / MANIFEST).read_text())["ids"] == test_ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder beside it


def test_a_folder_of_other_files_is_refused(toy_run, toy_cache, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(_predict(toy_run, toy_cache, out), f"--out {out}: holds other files")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _predict(toy_run, toy_cache, empty).exit_code == 0  # an empty folder is fine


def test_disk_full_leaves_no_partial_set(toy_run, toy_cache, tmp_path):
    out = tmp_path / "disk" / "pred"
    with small_disk(tmp_path / "disk", disk_kib=8, file_kib=1) as grow:
        error = one_line_error(_predict(toy_run, toy_cache, out, "--ids", "all"), str(out), "could not be written")
        assert "no space left" in error or "ulimit -f" in error
        assert not out.exists() and not list((tmp_path / "disk").iterdir())  # no partial set, no temporary folder
        grow()
        assert _predict(toy_run, toy_cache, out, "--ids", "all").exit_code == 0
        assert len(list(out.glob("*.txt"))) == len(read_corpus_index(toy_cache))
