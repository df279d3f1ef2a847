"""Checksums, shard identities and the one dataset checker, at the library level."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from vafusion.cache import checksum, schema, shards, split
from vafusion.cache.check import rows_problem
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.inspect import verify_cache
from vafusion.cache.merge import merge_shards
from vafusion.cache.reader import FeatureFile, open_feature_file
from vafusion.cache.writer import FeatureWriter
from vafusion.errors import VafusionError


def _rewrite_visual(cache: Path, source: Path, shard: tuple[int, int] = (1, 1), compression: str | None = None) -> Path:
    """Write ``visual`` of ``source`` into ``cache`` again (a shard of it, or compressed) through FeatureWriter."""
    index = read_corpus_index(cache)
    with open_feature_file(source, "visual") as ff:
        data = {vid: ff.read(vid) for vid in ff.ids}
        extractor = ff.extractor
    with FeatureWriter(
        cache,
        "visual",
        24,
        extractor,
        index.fingerprint,
        shard=shard,
        compression=compression,
        overwrite=shard == (1, 1),
    ) as writer:
        for vid in split.shard_ids(index, shard):
            writer.write(vid, *data[vid])
        return writer.finalize()


def test_checksum_covers_id_name_shape_and_bytes():
    x = np.arange(12, dtype=np.float16).reshape(6, 2)
    base = checksum.checksum("a", "features", x)
    assert base.startswith("crc32:") and len(base) == len("crc32:") + 8
    assert checksum.checksum("a", "features", x.copy()) == base
    assert checksum.checksum("a", "features", x.astype(">f2")) == base  # logical content, not byte order
    assert checksum.checksum("b", "features", x) != base
    assert checksum.checksum("a", "mask", x) != base
    assert checksum.checksum("a", "features", x.reshape(4, 3)) != base
    y = x.copy()
    y[3, 1] = np.nextafter(y[3, 1], np.float16(100))
    assert checksum.checksum("a", "features", y) != base


def test_compressed_and_copied_files_keep_the_checksums(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    with h5py.File(cache / "visual.h5") as f:
        plain = f["videos/vid02/features"].attrs[schema.CHECKSUM_ATTR]
    _rewrite_visual(cache, toy_cache, compression="lzf")
    with h5py.File(cache / "visual.h5") as f:
        assert f["videos/vid02/features"].compression == "lzf"
        assert f["videos/vid02/features"].attrs[schema.CHECKSUM_ATTR] == plain
    assert verify_cache(cache) == [] and verify_cache(cache).notes == []


def test_merge_copy_keeps_checksums_and_verify_still_sees_damage(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    (cache / "visual.h5").unlink()
    for k in (1, 2):
        _rewrite_visual(cache, toy_cache, shard=(k, 2))
    (merged,) = merge_shards(cache, copy=True)
    assert merged.written and verify_cache(cache) == []
    with h5py.File(merged.path, "r+") as f:
        assert json.loads(f.attrs["merged_from"])[1]["file"] == "visual.shard-2-of-2.h5"
        f["videos/vid05/mask"][0] = not f["videos/vid05/mask"][0]
    (problem,) = verify_cache(cache)
    assert str(problem).startswith(f"{merged.path}: video 'vid05': mask checksum mismatch")


def test_resume_does_not_launder_a_damaged_earlier_file(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    index = read_corpus_index(cache)
    with h5py.File(cache / "visual.h5", "r+") as f:
        f["videos/vid03/features"][2, 2] += 1
        del f["videos/vid06"]  # missing: the next run extracts it and rewrites the file
    with open_feature_file(toy_cache, "visual") as ff:
        feats, mask = ff.read("vid06")
        extractor = ff.extractor
    writer = FeatureWriter(cache, "visual", 24, extractor, index.fingerprint)
    assert writer.pending(index.ids) == ["vid06"]
    writer.write("vid06", feats, mask)
    with pytest.raises(VafusionError, match=r"visual\.h5: video 'vid03': features checksum mismatch"):
        writer.finalize()
    assert (cache / schema.PARTS_DIR / "visual" / "vid06.h5").is_file()  # the new video is kept


def test_old_merge_without_shard_records_reads_with_a_note(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    (cache / "visual.h5").unlink()
    for k in (1, 2):
        _rewrite_visual(cache, toy_cache, shard=(k, 2))
    merge_shards(cache)
    with h5py.File(cache / "visual.h5", "r+") as f:
        del f.attrs[schema.SHARDS_ATTR]
    report = verify_cache(cache)
    assert report == [] and "merged by an older vafusion: shard identities not recorded" in str(report.notes)
    with h5py.File(cache / "visual.h5", "r+") as f:  # still: only plain names beside the merged file
        del f["videos/vid02"]
        f["videos/vid02"] = h5py.ExternalLink("../visual.shard-1-of-2.h5", "/videos/vid02")
    with pytest.raises(VafusionError, match=r"links to '\.\./visual\.shard-1-of-2\.h5', which is not a file beside it"):
        with FeatureFile(cache / "visual.h5") as ff:
            ff.read("vid02")


def test_shard_identity_falls_back_for_files_without_file_id(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    with FeatureFile(cache / "visual.h5") as ff:
        assert len(ff.file_id) == 32 and not ff.file_id.startswith("legacy-")
    with h5py.File(cache / "visual.h5", "r+") as f:
        del f.attrs[schema.FILE_ID_ATTR]
    with FeatureFile(cache / "visual.h5") as ff:
        legacy = ff.file_id
        assert legacy.startswith("legacy-") and legacy == shards.identity(ff.attrs, ff.ids)
    assert shards.identity({"created": "x"}, ["a"]) != shards.identity({"created": "y"}, ["a"])


def test_rows_problem_names_the_odd_dataset():
    assert rows_problem(112, 112, 112) is None
    assert rows_problem(112, 111, 112) == "mask has 111 rows, but T=112 in corpus.h5 and features have 112"
    assert rows_problem(111, 112, 112) == "features have 111 rows, but T=112 in corpus.h5 and the mask has 112"
    assert rows_problem(110, 111, 112) == "features have 110 rows and the mask 111, but T=112 in corpus.h5"
    assert rows_problem(112, 111) == "mask has 111 rows but features have 112; each frame needs one of each"


def test_writer_creates_nothing_until_it_writes(toy_cache, copy_cache):
    cache = copy_cache(toy_cache)
    index = read_corpus_index(cache)
    before = sorted(p.name for p in cache.rglob("*"))
    with FeatureWriter(cache, "visual", 24, {"model": "toy-visual"}, index.fingerprint) as writer:
        assert writer.pending(index.ids) == []
        assert writer.finalize() == cache / "visual.h5"
    assert sorted(p.name for p in cache.rglob("*")) == before  # no parts folder, no lock file left
