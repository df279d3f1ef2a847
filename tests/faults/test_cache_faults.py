"""Faults of the cache layer, injected into private copies and met through the CLI.

Each case asserts the outcome the README's Reliability table promises: a one-line error that
names the file (and id, dataset or shard), exit code 1, no traceback, nothing finished lost,
and never a wrong result returned silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.faults.conftest import SHARDED, invoke, one_line_error, read_only, small_disk, write_shards
from vafusion.cache import schema, split
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.inspect import verify_cache
from vafusion.cache.lock import WriteLock
from vafusion.cache.reader import FeatureFile
from vafusion.cache.writer import FeatureWriter
from vafusion.errors import VafusionError
from vafusion.fusion.data.loading import load_cache

FEATURES = "visual,audio"
FAST_EXTRACT = [
    "--features",
    "resnet18,vggish,logmel",
    "--visual-weights",
    "random",
    "--vggish-weights",
    "random",
    "--image-size",
    "32",
    "--batch-size",
    "48",
    "--workers",
    "0",
    "--device",
    "cpu",
]
LOGMEL = ["--features", "logmel", "--workers", "0", "--device", "cpu"]  # no backbone: the cheapest extraction


def _stage2_commands(cache: Path, run: Path, tmp: Path) -> dict[str, list[object]]:
    """train, predict and evaluate on ``cache``: each loads the features of some ids."""
    return {
        "train": [
            "train",
            cache,
            "--run",
            tmp / "new-run",
            "--model",
            "ridge",
            "--features",
            FEATURES,
            "--no-report",
            "--device",
            "cpu",
        ],
        "predict": ["predict", run, "--cache", cache, "--out", tmp / "pred", "--ids", "all", "--device", "cpu"],
        "evaluate": ["evaluate", run, "--cache", cache, "--device", "cpu"],
    }


def _everywhere(cache: Path, run: Path, tmp: Path, *names: str) -> None:
    """Every command that reads the cache fails with one line naming ``names``; verify names them too."""
    verify = invoke("cache", "verify", cache)
    assert verify.exit_code == 1 and "Traceback" not in verify.output, verify.output
    problems = [line for line in verify.output.splitlines() if line.startswith("problem: ")]
    assert any(all(n in line for n in names) for line in problems), (names, verify.output)
    for _command, args in _stage2_commands(cache, run, tmp).items():
        one_line_error(invoke(*args), *names)
    assert not (tmp / "pred").exists() or not any((tmp / "pred").iterdir())  # no predictions from bad data


# --- malformed datasets: the one checker, before any raw read ----------------------------------


def _rewrite(f: h5py.File, vid: str, name: str, data: np.ndarray, **kw) -> None:
    del f[f"videos/{vid}/{name}"]
    f.create_dataset(f"videos/{vid}/{name}", data=data, **kw)


def _mask(f: h5py.File, vid: str) -> np.ndarray:
    return f[f"videos/{vid}/mask"][()]


def _features(f: h5py.File, vid: str) -> np.ndarray:
    return f[f"videos/{vid}/features"][()]


def _external_storage(f: h5py.File, vid: str) -> None:
    data = _features(f, vid)
    raw = Path(f.filename).parent / f"{vid}.raw"
    raw.write_bytes(data.tobytes())
    del f[f"videos/{vid}/features"]
    f.create_dataset(
        f"videos/{vid}/features", shape=data.shape, dtype=data.dtype, external=[(str(raw), 0, data.nbytes)]
    )


BOOL8 = h5py.enum_dtype({"FALSE": 0, "TRUE": 1}, basetype=np.int64)
MUTATIONS: dict[str, tuple[Callable[[h5py.File, str], None], str]] = {
    "mask-int64": (lambda f, v: _rewrite(f, v, "mask", _mask(f, v).astype(np.int64)), "mask is int64 of 8 byte(s)"),
    "mask-8-byte-bool": (
        lambda f, v: _rewrite(f, v, "mask", _mask(f, v).astype(np.int64).astype(BOOL8)),
        "mask is bool of 8 byte(s), expected 1-byte bool",
    ),
    "features-float32": (
        lambda f, v: _rewrite(f, v, "features", _features(f, v).astype(np.float32)),
        "features are float32, expected float16",
    ),
    "mask-one-short": (lambda f, v: _rewrite(f, v, "mask", _mask(f, v)[:-1]), "rows, but T="),
    "features-one-short": (
        lambda f, v: _rewrite(f, v, "features", _features(f, v)[:-1]),
        "in corpus.h5 and the mask has",
    ),
    "features-wrong-dim": (lambda f, v: _rewrite(f, v, "features", _features(f, v)[:, :-1]), ", 23), expected (T, 24)"),
    "features-missing": (lambda f, v: f.__delitem__(f"videos/{v}/features"), "has no features dataset"),
    "mask-missing": (lambda f, v: f.__delitem__(f"videos/{v}/mask"), "has no mask dataset"),
    "external-storage": (_external_storage, "features data is stored in other files (external storage)"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_malformed_dataset_is_one_line_everywhere(mutation, toy_cache, toy_run, copy_cache, tmp_path):
    cache = copy_cache(toy_cache)
    mutate, expected = MUTATIONS[mutation]
    with h5py.File(cache / "visual.h5", "r+") as f:
        for vid in list(f["videos"]):
            mutate(f, vid)
    _everywhere(cache, toy_run, tmp_path, "visual.h5: video '", expected)


def test_mask_one_short_names_mask_and_t(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    with h5py.File(cache / "visual.h5", "r+") as f:
        t = len(_mask(f, "vid01"))
        _rewrite(f, "vid01", "mask", _mask(f, "vid01")[:-1])
    with pytest.raises(VafusionError) as err:
        load_cache(cache, ["visual"], progress=False)
    assert f"visual.h5: video 'vid01': mask has {t - 1} rows, but T={t} in corpus.h5 and features have {t}" in str(
        err.value
    )


# --- damaged files: truncation, compressed chunks, flipped bytes --------------------------------


def test_truncated_feature_file(toy_cache, toy_run, copy_cache, tmp_path):
    cache = copy_cache(toy_cache)
    data = (cache / "visual.h5").read_bytes()
    (cache / "visual.h5").write_bytes(data[: len(data) // 2])
    _everywhere(cache, toy_run, tmp_path, "visual.h5", "truncated")


def test_truncated_anywhere_is_one_error(toy_cache, copy_cache):
    """A copy cut short at any point: one VafusionError from load and problems from verify, nothing else."""
    cache = copy_cache(toy_cache)
    data = (toy_cache / "visual.h5").read_bytes()
    for cut in np.linspace(0, len(data) - 1, 24).astype(int):
        (cache / "visual.h5").write_bytes(data[:cut])
        with pytest.raises(VafusionError) as err:
            load_cache(cache, ["visual", "audio"], verify_checksums=True, progress=False)
        assert "\n" not in str(err.value) and "visual.h5" in str(err.value)
        assert any("visual.h5" in str(p) for p in verify_cache(cache)), cut


def test_corrupted_compressed_chunk(toy_cache, toy_run, copy_cache, tmp_path):
    cache = copy_cache(toy_cache)
    index = read_corpus_index(cache)
    with h5py.File(cache / "visual.h5", "r") as f:
        data = {vid: (_features(f, vid), _mask(f, vid)) for vid in f["videos"]}
        extractor = f.attrs["extractor"]
    import json

    writer = FeatureWriter(
        cache, "visual", 24, json.loads(extractor), index.fingerprint, overwrite=True, compression="gzip"
    )
    for vid, (feats, mask) in data.items():
        writer.write(vid, feats, mask)
    writer.finalize()
    assert invoke("cache", "verify", cache).exit_code == 0
    with h5py.File(cache / "visual.h5", "r") as f:
        chunk = f["videos/vid01/features"].id.get_chunk_info(0)
    with open(cache / "visual.h5", "r+b") as f:
        f.seek(chunk.byte_offset + 8)
        f.write(b"\xff" * 16)
    _everywhere(cache, toy_run, tmp_path, "visual.h5: video 'vid01': features unreadable")


@pytest.mark.parametrize("dataset", ["features", "mask"])
def test_flipped_bytes_named_by_verify_and_checked_load(dataset, toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    with h5py.File(cache / "visual.h5", "r") as f:
        offset = f[f"videos/vid02/{dataset}"].id.get_offset()
    with open(cache / "visual.h5", "r+b") as f:
        f.seek(offset + 5)
        byte = f.read(1)
        f.seek(offset + 5)
        f.write(bytes([byte[0] ^ (0x01 if dataset == "mask" else 0x40)]))
    result = invoke("cache", "verify", cache)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"visual.h5: video 'vid02': {dataset} checksum mismatch" in result.output
    with pytest.raises(VafusionError, match=rf"visual\.h5: video 'vid02': {dataset} checksum mismatch"):
        load_cache(cache, ["audio", "visual"], verify_checksums=True, progress=False)


def test_flipped_label_bytes_name_the_id(toy_cache, toy_run, copy_cache, tmp_path):
    cache = copy_cache(toy_cache)
    with h5py.File(cache / schema.CORPUS_FILE, "r") as f:
        offset = f["labels/vid01"].id.get_offset()
    with open(cache / schema.CORPUS_FILE, "r+b") as f:
        f.seek(offset + 2)
        f.write(b"\x7f")
    _everywhere(cache, toy_run, tmp_path, "corpus.h5: the labels of 1 id(s) do not match their checksums ('vid01')")


def test_cache_without_checksums_loads_and_verifies_with_a_note(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    with h5py.File(cache / "visual.h5", "r+") as f:
        for vid in f["videos"]:
            for name in ("features", "mask"):
                del f[f"videos/{vid}/{name}"].attrs[schema.CHECKSUM_ATTR]
    result = invoke("cache", "verify", cache)
    assert result.exit_code == 0, result.output
    assert (
        "note: " in result.output
        and "visual.h5: no checksums for 9 video(s) (written by an older vafusion)" in result.output
    )
    assert "checksums: none (written by an older vafusion)" in invoke("cache", "info", cache).output
    load_cache(cache, ["visual"], verify_checksums=True, progress=False)


# --- merged caches: links resolve only to the recorded shards -----------------------------------


def _stranger(tmp_path: Path, toy_cache: Path) -> Path:
    """A same-named shard 2 of another extraction run (same extractor and corpus, other values)."""
    other = Path(shutil.copytree(toy_cache, tmp_path / "stranger"))
    write_shards(other, toy_cache, seed=1)
    return other / f"{SHARDED}.shard-2-of-2.h5"


@pytest.mark.parametrize("where", ["cwd", "hdf5-ext-prefix", "cache-folder"])
def test_missing_shard_is_never_replaced_by_a_strangers_file(
    where, sharded_cache, toy_cache, toy_run, copy_cache, tmp_path, monkeypatch
):
    cache = copy_cache(sharded_cache)
    assert invoke("cache", "verify", cache).exit_code == 0
    shard = cache / f"{SHARDED}.shard-2-of-2.h5"
    shard.unlink()
    stranger = _stranger(tmp_path, toy_cache)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(stranger, elsewhere / shard.name)
    if where == "cwd":
        monkeypatch.chdir(elsewhere)
        expected = f"{shard}: missing shard of visual.h5"
    elif where == "hdf5-ext-prefix":
        monkeypatch.setenv("HDF5_EXT_PREFIX", str(elsewhere))
        expected = f"{shard}: missing shard of visual.h5"
    else:
        shutil.copy(stranger, shard)
        expected = f"{shard}: not the shard visual.h5 was merged from"
    _everywhere(cache, toy_run, tmp_path, expected)
    if where == "cache-folder":  # merging again is the way to accept the shard now present
        assert invoke("cache", "merge", cache).output.startswith("wrote")
        assert invoke("cache", "verify", cache).exit_code == 0


def test_merge_of_shards_from_different_extractors_names_the_odd_one(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    (cache / "visual.h5").unlink()
    write_shards(cache, toy_cache, n=3)
    index = read_corpus_index(cache)
    odd = cache / "visual.shard-2-of-3.h5"
    odd.unlink()
    writer = FeatureWriter(
        cache, "visual", 24, {"model": "toy-visual", "weights": "other"}, index.fingerprint, shard=(2, 3)
    )
    for vid in split.shard_ids(index, (2, 3)):
        writer.write(vid, np.zeros((index[vid].n_frames, 24)), np.ones(index[vid].n_frames, bool))
    writer.finalize()
    error = one_line_error(invoke("cache", "merge", cache), "visual.shard-2-of-3.h5 (fingerprint ")
    assert "shard-1-of-3" not in error and "differs from the other 2" in error
    assert not (cache / "visual.h5").exists()


# --- writing: locks, read-only caches, paths, temporary files -----------------------------------


def test_second_writer_fails_at_once_naming_the_first(tiny_extracted, copy_cache, tmp_path):
    corpus, source, _ = tiny_extracted
    cache = copy_cache(source)
    (cache / "logmel.h5").unlink()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from vafusion.cache.lock import WriteLock; "
            "lock = WriteLock(Path(sys.argv[1])); lock.acquire(); print('locked', flush=True); sys.stdin.read()",
            str(cache / "logmel.h5"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = invoke("extract", corpus.root, "--cache", cache, *LOGMEL)
        one_line_error(
            result,
            f"{cache / 'logmel.h5'} is being written by another process (pid {holder.pid} on ",
            "wait for it to finish or use another cache",
        )
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not (cache / "logmel.h5").exists() and not (cache / schema.PARTS_DIR).exists()
    # the holder is gone (its lock with it): the same command now completes the cache
    assert invoke("extract", corpus.root, "--cache", cache, *LOGMEL).exit_code == 0
    assert verify_cache(cache) == [] and not list(cache.glob(f".*{schema.LOCK_SUFFIX}"))


def test_two_writers_in_one_process_conflict(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    index = read_corpus_index(cache)
    first = FeatureWriter(cache, "extra", 2, {"model": "x"}, index.fingerprint)
    with pytest.raises(VafusionError, match=rf"extra\.h5 is being written by another process \(pid {os.getpid()} on "):
        FeatureWriter(cache, "extra", 2, {"model": "x"}, index.fingerprint)
    first.close()
    FeatureWriter(cache, "extra", 2, {"model": "x"}, index.fingerprint).close()


def _snapshot(cache: Path) -> dict[str, bytes]:
    return {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}


def test_read_only_cache_with_nothing_to_do_is_fine(tiny_extracted, sharded_cache, copy_cache):
    corpus, source, _ = tiny_extracted
    cache = copy_cache(source)
    merged = copy_cache(sharded_cache, "merged")
    before = _snapshot(cache), _snapshot(merged)
    with read_only(cache), read_only(merged):
        result = invoke("extract", corpus.root, "--cache", cache, *FAST_EXTRACT)
        assert result.exit_code == 0, result.output
        result = invoke("cache", "merge", merged)
        assert result.exit_code == 0 and result.output == f"up to date {merged / 'visual.h5'}\n", result.output
        assert invoke("cache", "verify", cache).exit_code == 0
    assert (_snapshot(cache), _snapshot(merged)) == before


def test_read_only_cache_with_work_to_do_is_one_line(tiny_extracted, sharded_cache, copy_cache):
    corpus, source, _ = tiny_extracted
    cache = copy_cache(source)
    (cache / "logmel.h5").unlink()
    merged = copy_cache(sharded_cache, "merged")
    (merged / "visual.h5").unlink()
    before = _snapshot(cache), _snapshot(merged)
    with read_only(cache), read_only(merged):
        result = invoke("extract", corpus.root, "--cache", cache, *LOGMEL)
        one_line_error(result, str(cache), "must be written", "read-only")
        one_line_error(invoke("cache", "merge", merged), str(merged), "visual.h5 must be written", "read-only")
    assert (_snapshot(cache), _snapshot(merged)) == before  # nothing finished lost, nothing half-written


def test_cache_path_below_a_regular_file(tiny_extracted, tmp_path):
    corpus, _, _ = tiny_extracted
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    result = invoke("extract", corpus.root, "--cache", blocker / "cache", *FAST_EXTRACT)
    one_line_error(result, f"{blocker / 'cache'}: cannot create the cache directory: {blocker} is a file")


def test_temporary_files_are_reported_by_info_and_verify(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (cache / f".visual.h5.tmp-{pid}").write_bytes(b"half")
    parts = cache / schema.PARTS_DIR / "audio"
    parts.mkdir(parents=True)
    (parts / f".vid03.h5.tmp-{os.getpid()}").write_bytes(b"half")
    info = invoke("cache", "info", cache)
    assert info.exit_code == 0
    assert f"temporary file: {cache / f'.visual.h5.tmp-{pid}'} (pid {pid} no longer runs here" in info.output
    assert f".vid03.h5.tmp-{os.getpid()} (pid {os.getpid()} still runs here" in info.output
    assert "unfinished extraction: audio" in info.output
    verify = invoke("cache", "verify", cache)
    assert f"note: {cache / f'.visual.h5.tmp-{pid}'}: temporary file (pid {pid} no longer runs here" in verify.output
    assert f"problem: {parts}: unfinished extraction" in verify.output and verify.exit_code == 1


def test_lock_file_of_a_killed_writer_does_not_block(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    lock = WriteLock(cache / "extra.h5")
    lock.path.write_text("pid 1 on elsewhere")  # left behind: nobody holds the flock
    index = read_corpus_index(cache)
    writer = FeatureWriter(cache, "extra", 2, {"model": "x"}, index.fingerprint)
    writer.write("vid01", np.zeros((index["vid01"].n_frames, 2)), np.ones(index["vid01"].n_frames, bool))
    writer.finalize()
    assert not lock.path.exists()


def test_full_disk_loses_nothing_finished(tmp_path):
    """A video or the final file that does not fit: one-line error, finished parts kept, rerun completes."""
    cache = tmp_path / "disk" / "cache"
    rng = np.random.default_rng(0)
    small = {f"v{i}": rng.normal(size=(150, 64)) for i in range(5)}  # ~20 KiB parts; ~100 KiB together
    with small_disk(cache.parent, disk_kib=160, file_kib=64) as grow:
        writer = FeatureWriter(cache, "x", 64, {"model": "x"}, "corpus-fp")
        for vid, feats in small.items():
            writer.write(vid, feats, np.ones(len(feats), bool))
        with pytest.raises(VafusionError) as err:
            writer.write("big", rng.normal(size=(1600, 64)), np.ones(1600, bool))
        message = str(err.value)
        assert "\n" not in message and f"{writer.parts_dir / 'big.h5'}: could not be written (" in message
        assert "what was finished before is kept" in message
        with pytest.raises(
            VafusionError, match=r"x\.h5 needs about 0\.1 MiB but only .* free|over this process's file size limit"
        ):
            writer.finalize()
        assert writer.done_ids() == set(small) and not list(cache.rglob(".*.tmp-*"))
        assert not (cache / "x.h5").exists()
        grow()
        writer.finalize()
        with FeatureFile(cache / "x.h5") as ff:
            assert ff.ids == sorted(small)
            np.testing.assert_array_equal(ff.read("v3")[0], small["v3"].astype(np.float16))
