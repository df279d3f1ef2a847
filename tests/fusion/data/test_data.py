"""Loading a cache (into RAM or streamed), standardisation, windows, batches, overlap averaging, scoring."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vafusion.cache import split
from vafusion.cache.corpus_index import CorpusIndex, VideoEntry, write_corpus_index
from vafusion.cache.merge import merge_shards
from vafusion.cache.writer import FeatureWriter
from vafusion.errors import VafusionError
from vafusion.fusion.data.batches import BufferPool, build_batch, iterate_batches
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.data.scores import partition_score
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import make_windows, overlap_average, windows_with_labels
from vafusion.fusion.metrics import ccc

DIMS = {"vis": 6, "aud": 3}
# id: (partition, group, T)
VIDEOS = {
    "p_left": ("train", "p", 23),
    "p_right": ("train", "p", 23),
    "q": ("train", "q", 7),
    "r": ("validation", "r", 15),
    "s": ("validation", "s", 4),
    "t": ("test", "t", 9),
}


def _labels(vid: str, partition: str, n: int) -> np.ndarray | None:
    if partition == "test":
        return None
    rng = np.random.default_rng(sum(map(ord, vid)))
    labels = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    labels[rng.random(n) < 0.2, 0] = np.nan  # frames with -5 in the annotation file
    return labels


def _features(feature: str, vid: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([sum(map(ord, feature)), sum(map(ord, vid)), n])
    scale = 1.0 + np.arange(DIMS[feature])  # per-dimension scale and offset: standardising matters
    x = (rng.normal(0, 1, (n, DIMS[feature])) * scale + 3 * scale).astype(np.float16)
    if feature == "vis":
        x[:, -1] = 2.5  # a constant dimension: std floor -> 1
    mask = rng.random(n) > 0.25
    return x, mask


def _index(videos: dict = VIDEOS) -> CorpusIndex:
    return CorpusIndex(
        tuple(VideoEntry(v, 30.0, n, part, grp, _labels(v, part, n)) for v, (part, grp, n) in videos.items())
    )


def _write_feature(
    cache: Path,
    feature: str,
    fingerprint: str,
    videos: dict = VIDEOS,
    t_delta: dict | None = None,
    compression: str | None = None,
    shard: tuple[int, int] = (1, 1),
) -> None:
    writer = FeatureWriter(
        cache,
        feature,
        DIMS[feature],
        {"model": f"test-{feature}"},
        fingerprint,
        overwrite=True,
        compression=compression,
        shard=shard,
    )
    for vid, (_, _, n) in videos.items():
        if shard == (1, 1) or vid in split.shard_ids(_index(videos), shard):
            x, m = _features(feature, vid, n + (t_delta or {}).get(vid, 0))
            writer.write(vid, x, m)
    writer.finalize()


def _block(loaded, k: int) -> np.ndarray:
    """Feature k's rows of every loaded id, whether in RAM or streamed."""
    return np.asarray(loaded.sources[k].rows(0, loaded.n_frames))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    index = _index()
    write_corpus_index(tmp_path, index)
    for feature in DIMS:
        _write_feature(tmp_path, feature, index.fingerprint)
    return tmp_path


# --- load_cache ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_load_round_trips_exactly(cache: Path, stream: bool) -> None:
    ids = ["r", "p_left", "t", "q"]  # caller's order is kept
    loaded = load_cache(cache, ["vis", "aud"], ids, progress=False, stream=stream)
    assert loaded.in_memory is not stream
    assert loaded.ids == ids
    assert loaded.features == ("vis", "aud") and loaded.dims == (6, 3)
    assert list(loaded.lengths) == [15, 23, 9, 7]
    assert list(loaded.offsets) == [0, 15, 38, 47, 54]
    for k, feature in enumerate(loaded.features):
        block = _block(loaded, k)
        assert block.dtype == np.float16 and block.flags.c_contiguous and block.shape == (54, DIMS[feature])
        for vid in ids:
            x, m = _features(feature, vid, VIDEOS[vid][2])
            np.testing.assert_array_equal(block[loaded.rows(vid)], x)
            np.testing.assert_array_equal(loaded.masks[k][loaded.rows(vid)], m)
    for vid in ids:
        expected = _labels(vid, VIDEOS[vid][0], VIDEOS[vid][2])
        got = loaded.labels[loaded.rows(vid)]
        if expected is None:
            assert np.isnan(got).all()
        else:
            np.testing.assert_array_equal(got, expected)  # NaN positions equal too
    assert loaded.extractors["vis"] == {"model": "test-vis"}
    assert loaded.feature_bytes == 54 * (6 + 3) * 2
    everything = load_cache(cache, ["aud"], progress=False)
    assert everything.ids == sorted(VIDEOS)


def test_refuses_feature_file_of_another_corpus(cache: Path) -> None:
    other = _index({**VIDEOS, "q": ("train", "q", 8)})
    _write_feature(cache, "aud", other.fingerprint, videos={**VIDEOS, "q": ("train", "q", 8)})
    with pytest.raises(VafusionError) as err:
        load_cache(cache, ["vis", "aud"], progress=False)
    message = str(err.value)
    assert "aud.h5" in message and "vis.h5" not in message
    assert "another corpus index" in message and "re-extract" in message
    assert "'q'" in message or "q (8 != 7)" in message  # the frame count disagreement is named too
    assert "\n" not in message


def test_refuses_missing_id_and_frame_count_mismatch(cache: Path) -> None:
    index = _index()
    _write_feature(cache, "aud", index.fingerprint, videos={k: v for k, v in VIDEOS.items() if k != "s"})
    with pytest.raises(VafusionError, match=r"aud\.h5: lacks 1 id\(s\): 's'.*re-extract"):
        load_cache(cache, ["vis", "aud"], progress=False)
    # only loading ids the file has is fine
    load_cache(cache, ["vis", "aud"], ["r", "q"], progress=False)
    _write_feature(cache, "aud", index.fingerprint, t_delta={"r": 2})
    with pytest.raises(VafusionError, match=r"aud\.h5: frame counts differ .* r \(17 != 15\)"):
        load_cache(cache, ["aud"], progress=False)


def test_unknown_feature_and_unknown_id(cache: Path) -> None:
    with pytest.raises(VafusionError, match="'resnet50' is not in this cache; available: aud, vis"):
        load_cache(cache, ["vis", "resnet50"], progress=False)
    with pytest.raises(VafusionError, match=r"corpus.h5: no id.*'zz'"):
        load_cache(cache, ["vis"], ["q", "zz"], progress=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_refuses_non_finite_values(cache: Path, bad: float) -> None:
    with h5py.File(cache / "vis.h5", "r+") as f:
        f["videos/r/features"][3, 2] = bad
    with pytest.raises(VafusionError, match=r"vis\.h5: non-finite .*vis values in video 'r'"):
        load_cache(cache, ["aud", "vis"], progress=False)
    load_cache(cache, ["vis"], ["q", "s"], progress=False)  # other videos are fine
    # streamed: the same error when the video is first used (here by the statistics pass)
    streamed = load_cache(cache, ["aud", "vis"], progress=False, stream=True)
    Standardizer.fit(streamed, ["q", "s"])
    with pytest.raises(VafusionError, match=r"vis\.h5: non-finite .*vis values in video 'r'"):
        Standardizer.fit(streamed, ["q", "r"])


# --- standardisation -----------------------------------------------------------------------


def test_standardizer_uses_training_ids_and_present_frames_only(cache: Path) -> None:
    loaded = load_cache(cache, ["vis", "aud"], progress=False)
    train = ["p_left", "p_right", "q"]
    st = Standardizer.fit(loaded, train)
    for k, feature in enumerate(loaded.features):
        parts = [_features(feature, v, VIDEOS[v][2]) for v in train]
        rows = np.concatenate([x[m] for x, m in parts]).astype(np.float64)
        mean, std = rows.mean(axis=0), rows.std(axis=0)
        std[std < 1e-6] = 1.0
        np.testing.assert_allclose(st.mean[k], mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(st.std[k], std, rtol=1e-5)
        assert st.mean[k].dtype == np.float32
    assert st.std[0][-1] == 1.0  # the constant dimension
    everything = Standardizer.fit(loaded, loaded.ids)
    assert not np.allclose(everything.mean[0], st.mean[0])  # validation frames would change it
    # round trip, also from tensors (what a weights_only checkpoint holds)
    state = st.state_dict()
    assert list(state) == ["vis.mean", "vis.std", "aud.mean", "aud.std"]
    again = Standardizer.from_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    assert again.features == st.features
    for a, b in zip(again.mean + again.std, st.mean + st.std):
        np.testing.assert_array_equal(a, b)


def test_standardizer_chunking_is_exact(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vafusion.fusion.data.standardize as standardize

    loaded = load_cache(cache, ["vis", "aud"], progress=False)
    whole = Standardizer.fit(loaded, loaded.ids)
    monkeypatch.setattr(standardize, "_STATS_CHUNK", 8)  # a few rows per chunk
    chunked = Standardizer.fit(loaded, loaded.ids)
    for a, b in zip(whole.mean + whole.std, chunked.mean + chunked.std):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --- windows -------------------------------------------------------------------------------


def test_make_windows_cover_every_frame_right_aligned() -> None:
    lengths = [1000, 300, 299, 700, 1, 0, 500]
    w = make_windows(lengths, window=300, hop=200)
    assert w.dtype == np.int64 and w.shape[1] == 3
    for v, t in enumerate(lengths):
        rows = w[w[:, 0] == v]
        if t == 0:
            assert len(rows) == 0
            continue
        covered = np.zeros(t, dtype=int)
        for _, start, length in rows:
            assert 0 <= start and start + length <= t
            covered[start : start + length] += 1
        assert (covered > 0).all()
        assert rows[-1, 1] + rows[-1, 2] == t  # the end is covered by a right-aligned window
        assert len(set(rows[:, 1])) == len(rows)  # no duplicate window
        assert (rows[:, 2] == min(t, 300)).all()
    starts = {v: list(w[w[:, 0] == v, 1]) for v in range(len(lengths))}
    assert starts[0] == [0, 200, 400, 600, 700]  # last right-aligned at 1000 - 300
    assert starts[1] == [0] and starts[2] == [0] and starts[4] == [0]
    assert starts[3] == [0, 200, 400]  # 400 + 300 == 700 already aligned: no extra window
    assert starts[6] == [0, 200]
    np.testing.assert_array_equal(make_windows(offsets=np.cumsum([0, *lengths]), window=300, hop=200), w)
    only = make_windows(lengths, 300, 200, videos=[3, 1])
    assert [tuple(r) for r in only] == [(3, 0, 300), (3, 200, 300), (3, 400, 300), (1, 0, 300)]
    assert len(make_windows([10], window=4, hop=4)) == 3  # 0, 4, 6
    with pytest.raises(ValueError, match="hop <= window"):
        make_windows([10], window=4, hop=5)


# --- batches -------------------------------------------------------------------------------


def _expected_window(loaded, st, row, width):
    """Direct slicing: what one window of a batch must contain."""
    v, start, length = (int(x) for x in row)
    a = loaded.offsets[v] + start
    out = []
    for k in range(len(loaded.features)):
        x = np.zeros((width, loaded.dims[k]), np.float32)
        p = np.zeros(width, bool)
        p[:length] = loaded.masks[k][a : a + length]
        x[:length] = (loaded.data[k][a : a + length].astype(np.float32) - st.mean[k]) / st.std[k]
        x[~p] = 0
        out.append((x, p))
    labels = np.full((width, 2), np.nan, np.float32)
    labels[:length] = loaded.labels[a : a + length]
    return out, labels


def _check_batch(batch, loaded, st, rows, width) -> None:
    assert len(batch.streams) == len(loaded.features)
    np.testing.assert_array_equal(batch.windows.numpy(), rows)
    for b, row in enumerate(rows):
        expected, labels = _expected_window(loaded, st, row, width)
        for k, (x, p) in enumerate(expected):
            assert batch.streams[k].dtype == torch.float32
            np.testing.assert_allclose(batch.streams[k][b].numpy(), x, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(batch.present[k][b].numpy(), p)
        np.testing.assert_array_equal(batch.valid[b].numpy(), np.arange(width) < row[2])
        np.testing.assert_array_equal(batch.labels[b].numpy(), labels)


def test_batch_contents_equal_direct_slicing_with_padding(cache: Path) -> None:
    loaded = load_cache(cache, ["vis", "aud"], progress=False)
    st = Standardizer.fit(loaded, ["p_left", "p_right", "q"])
    windows = make_windows(loaded.lengths, window=10, hop=6)
    assert (windows[:, 2] < 10).any()  # short videos are padded
    rows = windows[[0, 3, len(windows) - 1, 5]]
    batch = build_batch(loaded, st, rows, window=10)
    assert batch.streams[0].shape == (4, 10, 6) and batch.streams[1].shape == (4, 10, 3)
    assert batch.labels.shape == (4, 10, 2) and batch.valid.dtype == torch.bool
    _check_batch(batch, loaded, st, rows, 10)
    moved = batch.to("cpu")
    assert torch.equal(moved.streams[0], batch.streams[0])


def test_iterate_batches_covers_windows_and_pooled_buffers_never_alias(cache: Path) -> None:
    loaded = load_cache(cache, ["vis", "aud"], progress=False)
    st = Standardizer.fit(loaded, loaded.ids)
    windows = make_windows(loaded.lengths, window=8, hop=5)
    batches = list(iterate_batches(loaded, st, windows, batch_size=3, shuffle=True, seed=1))
    # all kept at once: a recycled buffer would have overwritten earlier batches
    seen = np.concatenate([b.windows.numpy() for b in batches])
    assert sorted(map(tuple, seen)) == sorted(map(tuple, windows))
    for b in batches:
        assert b.streams[0].shape[1] == 8  # common W for stacking
        _check_batch(b, loaded, st, b.windows.numpy(), 8)
    again = [b.windows.numpy() for b in iterate_batches(loaded, st, windows, 3, shuffle=True, seed=1)]
    np.testing.assert_array_equal(np.concatenate(again), seen)
    in_order = np.concatenate([b.windows.numpy() for b in iterate_batches(loaded, st, windows, 4)])
    np.testing.assert_array_equal(in_order, windows)
    assert sum(len(b.windows) for b in iterate_batches(loaded, st, windows, 4, drop_last=True)) == len(windows) // 4 * 4


def test_buffer_pool_reuses_only_released_buffers() -> None:
    pool = BufferPool(slots=2)
    a = pool.take((2, 3))
    a_ptr = a.data_ptr()
    b = pool.take((2, 3))
    assert b.data_ptr() != a_ptr  # a is still held
    view = a[0]
    del a
    assert pool.take((2, 3)).data_ptr() != a_ptr  # a view of it is still alive
    del view
    c = pool.take((2, 3))
    assert c.data_ptr() == a_ptr  # released: recycled
    assert pool.take((2, 3)).data_ptr() not in (a_ptr, b.data_ptr())  # nothing free: fresh one


def test_windows_with_labels(cache: Path) -> None:
    loaded = load_cache(cache, ["vis"], progress=False)
    windows = make_windows(loaded.lengths, window=5, hop=5)
    kept = windows_with_labels(loaded, windows)
    t_pos = loaded.position("t")  # test partition: no labels
    assert not (kept[:, 0] == t_pos).any()
    assert len(kept) == len(windows) - (windows[:, 0] == t_pos).sum()


# --- overlap averaging and scoring --------------------------------------------------------


def test_overlap_average_reproduces_per_frame_values() -> None:
    lengths = np.array([23, 7, 10, 1])
    width = 10
    windows = make_windows(lengths, window=width, hop=4)
    assert np.bincount(windows[:, 0]).max() > 2 and (windows[:, 2] < width).any()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    preds = np.full((len(windows), width, 2), 1e6, np.float32)  # padding garbage must be ignored
    for i, (v, start, length) in enumerate(windows):
        frames = offsets[v] + start + np.arange(length)
        preds[i, :length, 0] = frames  # each window "predicts" the frame's own index
        preds[i, :length, 1] = -2.0 * frames
    out = overlap_average(torch.from_numpy(preds), windows, lengths)
    assert [o.shape for o in out] == [(t, 2) for t in lengths]
    for v, o in enumerate(out):
        frames = offsets[v] + np.arange(lengths[v])
        np.testing.assert_allclose(o[:, 0], frames)
        np.testing.assert_allclose(o[:, 1], -2.0 * frames)


def test_overlap_average_means_overlaps_and_marks_uncovered() -> None:
    windows = np.array([[0, 0, 4], [0, 2, 4]])
    preds = np.zeros((2, 4, 2), np.float32)
    preds[0] = 1.0
    preds[1] = 3.0
    (out,) = overlap_average(preds, windows, [7])
    np.testing.assert_allclose(out[:, 0][:6], [1, 1, 2, 2, 3, 3])
    assert np.isnan(out[6]).all()
    with pytest.raises(ValueError, match="wide"):
        overlap_average(preds[:, :3], windows, [7])


def test_partition_score_pools_frames_like_the_challenge(cache: Path) -> None:
    loaded = load_cache(cache, ["vis"], progress=False)
    rng = np.random.default_rng(0)
    preds = [
        np.nan_to_num(loaded.labels[loaded.rows(v)]) * 0.5 + rng.normal(0, 0.2, (t, 2))
        for v, t in zip(loaded.ids, loaded.lengths)
    ]
    ids = ["r", "s"]
    result = partition_score(loaded, preds, ids)
    true = np.concatenate([loaded.labels[loaded.rows(v)] for v in ids])
    pred = np.concatenate([preds[loaded.position(v)] for v in ids])
    assert result["ccc_v"] == pytest.approx(ccc(pred[:, 0], true[:, 0]))
    assert result["ccc_a"] == pytest.approx(ccc(pred[:, 1], true[:, 1]))
    assert result["p"] == pytest.approx((result["ccc_v"] + result["ccc_a"]) / 2)
    assert [r["id"] for r in result["per_id"]] == ids
    r0 = result["per_id"][0]
    assert r0["ccc_v"] == pytest.approx(ccc(preds[loaded.position("r")][:, 0], loaded.labels[loaded.rows("r")][:, 0]))
    assert r0["frames"] == 15
    as_mapping = partition_score(loaded, {v: preds[loaded.position(v)] for v in ids}, ids)
    assert as_mapping["p"] == result["p"]
    with pytest.raises(ValueError, match="expected"):
        partition_score(loaded, {"r": np.zeros((3, 2)), "s": preds[loaded.position("s")]}, ids)


def test_end_to_end_window_predictions_to_score(cache: Path) -> None:
    """Identity 'model' (predict the labels) through batches and overlap averaging scores 1."""
    loaded = load_cache(cache, ["vis", "aud"], progress=False)
    st = Standardizer.fit(loaded, ["p_left", "p_right", "q"])
    windows = make_windows(loaded.lengths, window=8, hop=5)
    preds = []
    for batch in iterate_batches(loaded, st, windows, batch_size=4, window=8):
        preds.append(torch.nan_to_num(batch.labels, nan=0.0))
    per_video = overlap_average(torch.cat(preds), windows, loaded.lengths)
    result = partition_score(loaded, per_video, ["r", "s", "p_left"])
    assert result["ccc_v"] == pytest.approx(1.0) and result["ccc_a"] == pytest.approx(1.0)


def test_prefetch_gives_the_same_batches_and_stops_cleanly(cache: Path) -> None:
    import threading

    loaded = load_cache(cache, ["vis", "aud"], progress=False)
    st = Standardizer.fit(loaded, loaded.ids)
    windows = make_windows(loaded.lengths, window=8, hop=5)
    plain = list(iterate_batches(loaded, st, windows, 3, shuffle=True, seed=4))
    ahead = list(iterate_batches(loaded, st, windows, 3, shuffle=True, seed=4, prefetch=2, pin_memory=True))
    assert len(plain) == len(ahead)
    for a, b in zip(plain, ahead):
        for x, y in zip(a.streams + a.present + [a.valid, a.windows], b.streams + b.present + [b.valid, b.windows]):
            assert torch.equal(x, y)
        assert torch.equal(torch.nan_to_num(a.labels, nan=9.0), torch.nan_to_num(b.labels, nan=9.0))
    for i, _ in enumerate(iterate_batches(loaded, st, windows, 1, prefetch=1)):
        if i == 1:
            break  # the producer thread must end, not hang on its full queue
    for _ in range(50):
        if not any(t.name == "vafusion-batches" for t in threading.enumerate()):
            break
        threading.Event().wait(0.02)
    assert not any(t.name == "vafusion-batches" for t in threading.enumerate())
    with pytest.raises(ValueError, match="does not fit"):  # errors of the producer reach the consumer
        list(iterate_batches(loaded, st, windows, 2, window=3, prefetch=2))


# --- streaming -----------------------------------------------------------------------------


def _storage_variant(cache: Path, tmp: Path, storage: str) -> Path:
    """The test cache stored contiguous (as written), lzf-compressed (chunked), or as linked shards."""
    if storage == "contiguous":
        return cache
    out = tmp / storage
    index = _index()
    write_corpus_index(out, index)
    for feature in DIMS:
        if storage == "compressed":
            _write_feature(out, feature, index.fingerprint, compression="lzf")
        else:
            for k in (1, 2):
                _write_feature(out, feature, index.fingerprint, shard=(k, 2))
    if storage == "merged":
        merge_shards(out)
    return out


@pytest.mark.parametrize("storage", ["contiguous", "compressed", "merged"])
def test_streamed_batches_are_identical_to_in_memory(cache: Path, tmp_path: Path, storage: str) -> None:
    cache = _storage_variant(cache, tmp_path, storage)
    ram = load_cache(cache, ["vis", "aud"], progress=False, stream=False)
    streamed = load_cache(cache, ["vis", "aud"], progress=False, stream=True)
    assert ram.in_memory and not streamed.in_memory
    mapped = {s.mapped for s in streamed.sources}
    assert mapped == ({0} if storage == "compressed" else {len(VIDEOS)})  # chunked data is read through HDF5
    if storage == "merged":  # the mapped file is the shard the reader resolved, not the linking file
        holders = {streamed.sources[0].ff.holder(v).name for v in streamed.ids}
        assert holders == {"vis.shard-1-of-2.h5", "vis.shard-2-of-2.h5"}
    train = ["p_left", "p_right", "q"]
    st_ram, st_stream = Standardizer.fit(ram, train), Standardizer.fit(streamed, train)
    for a, b in zip(st_ram.mean + st_ram.std, st_stream.mean + st_stream.std):
        assert a.tobytes() == b.tobytes()  # the same statistics, bit for bit
    windows = make_windows(ram.lengths, window=10, hop=6)
    pairs = zip(
        iterate_batches(ram, st_ram, windows, 4, shuffle=True, seed=5),
        iterate_batches(streamed, st_stream, windows, 4, shuffle=True, seed=5),
        strict=True,
    )
    for x, y in pairs:
        for a, b in zip(
            x.streams + x.present + [x.valid, x.labels, x.windows],
            y.streams + y.present + [y.valid, y.labels, y.windows],
        ):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.numpy().tobytes() == b.numpy().tobytes()  # same values, NaN labels included
    streamed.close()


def test_streamed_checksums_are_verified_when_a_video_is_first_used(cache: Path) -> None:
    with h5py.File(cache / "aud.h5", "r+") as f:
        f["videos/q/features"][0, 0] = 1.5  # a finite value the checksum does not match
    loaded = load_cache(cache, ["aud"], progress=False, stream=True, verify_checksums=True)
    Standardizer.fit(loaded, ["r"])
    with pytest.raises(VafusionError, match=r"aud\.h5: video 'q': .*checksum"):
        Standardizer.fit(loaded, ["p_left", "q"])
    Standardizer.fit(load_cache(cache, ["aud"], progress=False, stream=True), ["q"])  # not asked to verify


def test_default_streams_when_the_features_exceed_half_the_available_memory(cache: Path, monkeypatch) -> None:
    import vafusion.fusion.data.sources as sources

    need = sum(n for _, _, n in VIDEOS.values()) * sum(DIMS.values()) * 2
    monkeypatch.setattr(sources, "available_memory", lambda: 2 * need)
    assert load_cache(cache, ["vis", "aud"], progress=False).in_memory  # exactly half: fits
    monkeypatch.setattr(sources, "available_memory", lambda: 2 * need - 1)
    assert not load_cache(cache, ["vis", "aud"], progress=False).in_memory
    with sources.loading(False):  # what --in-memory sets; an explicit argument still wins
        assert load_cache(cache, ["vis", "aud"], progress=False).in_memory
        assert not load_cache(cache, ["vis", "aud"], progress=False, stream=True).in_memory
    with sources.loading(True):
        monkeypatch.setattr(sources, "available_memory", lambda: 100 * need)
        assert not load_cache(cache, ["vis", "aud"], progress=False).in_memory
    assert load_cache(cache, ["vis", "aud"], progress=False).in_memory
