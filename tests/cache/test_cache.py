"""The cache contract: round trip, crash-safe resume bookkeeping, verify, merge, info, CLI errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from vafusion.cache import schema, split
from vafusion.cache.corpus_index import CorpusIndex, VideoEntry, read_corpus_index, write_corpus_index
from vafusion.cache.inspect import cache_info, format_info, verify_cache
from vafusion.cache.merge import merge_shards
from vafusion.cache.reader import FeatureFile, list_features, open_feature_file
from vafusion.cache.writer import FeatureWriter
from vafusion.cli import cli
from vafusion.errors import VafusionError

DIM = 4
EXTRACTOR = {"model": "toy", "weights": "random", "dim": DIM}


def _index() -> CorpusIndex:
    rng = np.random.default_rng(0)
    labels = rng.uniform(-1, 1, (12, 2)).astype(np.float32)
    labels[3] = np.nan
    return CorpusIndex(
        (
            VideoEntry("v1_left", 25.0, 12, "train", "v1", labels),
            VideoEntry("v1_right", 25.0, 12, "train", "v1", labels[::-1].copy()),
            VideoEntry("v2", 30.0, 7, "validation", "v2", np.zeros((7, 2), np.float32)),
            VideoEntry("v3", 30.0, 5, "test", "v3", None),
        )
    )


def _features(entry: VideoEntry) -> tuple[np.ndarray, np.ndarray]:
    seed = sum(map(ord, entry.id))
    feats = np.random.default_rng(seed).normal(size=(entry.n_frames, DIM)).astype(np.float32)
    mask = np.ones(entry.n_frames, bool)
    mask[::3] = False
    return feats, mask


def _make_cache(cache: Path, shard=(1, 1), ids=None, finalize=True) -> CorpusIndex:
    index = _index()
    write_corpus_index(cache, index)
    writer = FeatureWriter(cache, "toy", DIM, EXTRACTOR, index.fingerprint, shard=shard)
    for e in index:
        if ids is None or e.id in ids:
            writer.write(e.id, *_features(e))
    if finalize:
        writer.finalize()
    return index


def test_corpus_index_round_trip(tmp_path):
    index = _index()
    write_corpus_index(tmp_path, index)
    back = read_corpus_index(tmp_path)
    assert back.ids == ["v1_left", "v1_right", "v2", "v3"]
    assert back.fingerprint == index.fingerprint
    assert back["v3"].labels is None
    np.testing.assert_array_equal(back["v1_left"].labels, index["v1_left"].labels)
    assert np.isnan(back["v1_left"].labels[3]).all()
    assert back["v2"].fps == 30.0 and back["v1_right"].group == "v1"


def test_corpus_index_tamper_detected(tmp_path):
    write_corpus_index(tmp_path, _index())
    with h5py.File(tmp_path / schema.CORPUS_FILE, "a") as f:
        f["labels/v2"][0, 0] = 0.5
    with pytest.raises(VafusionError, match=r"labels of 1 id\(s\) do not match their checksums \('v2'\)"):
        read_corpus_index(tmp_path)
    with h5py.File(tmp_path / schema.CORPUS_FILE, "a") as f:
        f["fps"][0] = 50.0  # a column without its own checksum: still caught by the fingerprint
        f["labels/v2"][0, 0] = _index()["v2"].labels[0, 0]
    with pytest.raises(VafusionError, match="does not match its fingerprint"):
        read_corpus_index(tmp_path)


def test_feature_round_trip_is_float16_and_exact(tmp_path):
    index = _make_cache(tmp_path)
    assert list_features(tmp_path) == ["toy"]
    with open_feature_file(tmp_path, "toy") as ff:
        assert ff.ids == index.ids and ff.dim == DIM and ff.extractor == EXTRACTOR
        assert ff.corpus_fingerprint == index.fingerprint
        for e in index:
            feats, mask = ff.read(e.id)
            want, want_mask = _features(e)
            assert feats.dtype == np.float16 and feats.shape == (e.n_frames, DIM)
            np.testing.assert_array_equal(feats, want.astype(np.float16))
            np.testing.assert_array_equal(mask, want_mask)
            out = np.empty_like(feats)
            out_mask = np.empty_like(mask)
            ff.read_into(e.id, out, out_mask)
            np.testing.assert_array_equal(out, feats)
    # plain h5py, as the README tells a colleague
    with h5py.File(tmp_path / "toy.h5", "r") as f:
        assert f.attrs["format"] == "vafusion-features" and f.attrs["complete"]
        assert f["videos/v2/features"].shape == (7, DIM)


def test_unknown_feature_lists_available(tmp_path):
    _make_cache(tmp_path)
    with pytest.raises(VafusionError, match="available: toy"):
        open_feature_file(tmp_path, "resnet50")


def test_resume_bookkeeping_counts_only_renamed_parts(tmp_path):
    index = _make_cache(tmp_path, ids={"v1_left", "v2"}, finalize=False)
    parts = tmp_path / schema.PARTS_DIR / "toy"
    (parts / ".v3.h5.tmp-999").write_bytes(b"half written")  # a kill mid-write leaves this
    writer = FeatureWriter(tmp_path, "toy", DIM, EXTRACTOR, index.fingerprint)
    assert writer.pending(index.ids) == ["v1_right", "v3"]
    for vid in writer.pending(index.ids):
        writer.write(vid, *_features(index[vid]))
    writer.finalize()
    assert not (tmp_path / schema.PARTS_DIR).exists()
    clean = tmp_path / "clean"
    _make_cache(clean)
    for vid in index.ids:
        with open_feature_file(tmp_path, "toy") as a, open_feature_file(clean, "toy") as b:
            np.testing.assert_array_equal(a.read(vid)[0], b.read(vid)[0])


def test_other_extractor_parts_refused_unless_overwrite(tmp_path):
    index = _make_cache(tmp_path, ids={"v1_left"}, finalize=False)
    other = dict(EXTRACTOR, weights="file:x.pt")
    with pytest.raises(VafusionError, match="--overwrite"):
        FeatureWriter(tmp_path, "toy", DIM, other, index.fingerprint)
    w = FeatureWriter(tmp_path, "toy", DIM, other, index.fingerprint, overwrite=True)
    assert w.pending(index.ids) == index.ids


def test_final_file_of_other_extractor_refused(tmp_path):
    index = _make_cache(tmp_path)
    with pytest.raises(VafusionError, match="another extractor"):
        FeatureWriter(tmp_path, "toy", DIM, dict(EXTRACTOR, model="other"), index.fingerprint)


def test_finalize_adds_missing_ids_to_existing_file(tmp_path):
    index = _make_cache(tmp_path, ids={"v1_left", "v1_right"})
    writer = FeatureWriter(tmp_path, "toy", DIM, EXTRACTOR, index.fingerprint)
    assert writer.pending(index.ids) == ["v2", "v3"]
    for vid in writer.pending(index.ids):
        writer.write(vid, *_features(index[vid]))
    writer.finalize()
    assert verify_cache(tmp_path) == []


def test_writer_rejects_bad_shapes_and_nan(tmp_path):
    index = _index()
    writer = FeatureWriter(tmp_path, "toy", DIM, EXTRACTOR, index.fingerprint)
    with pytest.raises(ValueError):
        writer.write("v2", np.zeros((7, DIM + 1)), np.ones(7, bool))
    with pytest.raises(ValueError, match="non-finite"):
        writer.write("v2", np.full((7, DIM), np.nan), np.ones(7, bool))


def test_verify_passes_whole_cache(tmp_path):
    _make_cache(tmp_path)
    assert verify_cache(tmp_path) == []
    result = CliRunner().invoke(cli, ["cache", "verify", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_verify_catches_missing_id(tmp_path):
    _make_cache(tmp_path, ids={"v1_left", "v1_right", "v3"})
    problems = verify_cache(tmp_path)
    assert len(problems) == 1 and "lacks 1 id(s): 'v2'" in str(problems[0])
    result = CliRunner().invoke(cli, ["cache", "verify", str(tmp_path)])
    assert result.exit_code == 1 and "lacks 1 id(s): 'v2'" in result.output


def test_verify_catches_truncated_file(tmp_path):
    _make_cache(tmp_path)
    path = tmp_path / "toy.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problems = verify_cache(tmp_path)
    assert problems and "toy.h5" in str(problems[0]) and "truncated" in str(problems[0])
    result = CliRunner().invoke(cli, ["cache", "verify", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_verify_catches_wrong_shape_nan_and_unfinished(tmp_path):
    _make_cache(tmp_path)
    with h5py.File(tmp_path / "toy.h5", "a") as f:
        for name, data in (("features", np.zeros((6, DIM), np.float16)), ("mask", np.ones(6, bool))):
            del f[f"videos/v2/{name}"]
            f[f"videos/v2/{name}"] = data
        f["videos/v3/features"][1, 2] = np.nan
    (tmp_path / schema.PARTS_DIR / "logmel").mkdir(parents=True)
    text = "\n".join(map(str, verify_cache(tmp_path)))
    assert "frame counts differ from corpus.h5 for 1 id(s): v2 (6 != 7)" in text
    assert "video 'v3': features checksum mismatch" in text  # NaN written behind the writer's back
    assert "video 'v3': 1 frame(s) with non-finite values" in text
    assert "unfinished extraction" in text


def test_verify_catches_foreign_file_and_other_corpus(tmp_path):
    _make_cache(tmp_path)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    other = tmp_path / "other"
    _make_cache(other)
    index = _index()
    shifted = CorpusIndex(
        tuple(
            VideoEntry(e.id, e.fps, e.n_frames, "train" if e.partition == "test" else e.partition, e.group, e.labels)
            for e in index
        )
    )
    write_corpus_index(other, shifted)
    assert "not a vafusion feature file" in str(verify_cache(tmp_path)[0])
    assert "another corpus index" in "\n".join(map(str, verify_cache(other)))


def test_merge_links_and_copies(tmp_path):
    for k in (1, 2):
        _make_cache(tmp_path, shard=(k, 2), ids=set(split.shard_ids(_index(), (k, 2))))
    assert list_features(tmp_path) == []
    clean = tmp_path / "clean"
    _make_cache(clean)
    (linked,) = merge_shards(tmp_path)
    assert linked.written and verify_cache(tmp_path) == []
    size_linked = linked.path.stat().st_size
    moved = tmp_path.parent / "moved"
    shutil.copytree(tmp_path, moved)  # links are relative: the cache directory moves as a whole
    (copied,) = merge_shards(moved, copy=True)
    assert [m.written for m in merge_shards(moved, copy=True) + merge_shards(tmp_path)] == [False, False]
    for cache in (tmp_path, moved):
        with open_feature_file(cache, "toy") as a, open_feature_file(clean, "toy") as b:
            assert a.ids == b.ids
            for vid in a.ids:
                np.testing.assert_array_equal(a.read(vid)[0], b.read(vid)[0])
    assert copied.path.stat().st_size > size_linked


def test_merge_missing_shard_is_an_error(tmp_path):
    _make_cache(tmp_path, shard=(1, 3), ids=set(split.shard_ids(_index(), (1, 3))))
    _make_cache(tmp_path, shard=(3, 3), ids=set(split.shard_ids(_index(), (3, 3))))
    with pytest.raises(VafusionError, match=r"missing shard file\(s\) toy.shard-2-of-3.h5"):
        merge_shards(tmp_path)
    result = CliRunner().invoke(cli, ["cache", "merge", str(tmp_path)])
    assert result.exit_code == 1 and "toy.shard-2-of-3.h5" in result.output


def test_linked_merge_with_shard_deleted_fails_verify(tmp_path):
    for k in (1, 2):
        _make_cache(tmp_path, shard=(k, 2), ids=set(split.shard_ids(_index(), (k, 2))))
    merge_shards(tmp_path)
    (tmp_path / "toy.shard-2-of-2.h5").unlink()
    (problem,) = verify_cache(tmp_path)
    assert str(problem).endswith(
        "toy.shard-2-of-2.h5: missing shard of toy.h5 (its links point to it); copy that shard file back beside toy.h5"
    )


def test_reader_names_missing_video_and_missing_link_target(tmp_path):
    from vafusion.fusion.data.loading import load_cache

    for k in (1, 2):
        _make_cache(tmp_path, shard=(k, 2), ids=set(split.shard_ids(_index(), (k, 2))))
    merge_shards(tmp_path)
    with FeatureFile(tmp_path / "toy.h5") as ff:
        with pytest.raises(VafusionError, match="no video 'nope'"):
            ff.read("nope")
        feats, _mask = ff.read("v2")  # through the external link
        np.testing.assert_array_equal(feats, _features(_index()["v2"])[0].astype(np.float16))
    (tmp_path / "toy.shard-2-of-2.h5").unlink()
    with pytest.raises(VafusionError, match=r"toy.shard-2-of-2.h5: missing shard of toy.h5"):
        load_cache(tmp_path, ["toy"], progress=False)


def test_info_text_and_json(tmp_path):
    _make_cache(tmp_path)
    info = cache_info(tmp_path)
    assert info["corpus"]["ids"] == 4 and info["corpus"]["frames"] == 36
    (feat,) = info["features"]
    assert feat["dim"] == DIM and feat["ids"] == 4 and feat["frames"] == 36 and feat["bytes"] > 0
    text = format_info(info)
    assert "toy.h5: dim 4 float16, 4 ids, 36 frames" in text
    result = CliRunner().invoke(cli, ["cache", "info", "--json", str(tmp_path)])
    assert result.exit_code == 0
    assert json.loads(result.output)["features"][0]["fingerprint"] == feat["fingerprint"]


def test_reader_refuses_incomplete_file(tmp_path):
    _make_cache(tmp_path)
    with h5py.File(tmp_path / "toy.h5", "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(VafusionError, match="not marked complete"):
        FeatureFile(tmp_path / "toy.h5")


def test_shard_parsing():
    assert schema.parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "x", "1/2/3"):
        with pytest.raises(ValueError):
            schema.parse_shard(bad)
