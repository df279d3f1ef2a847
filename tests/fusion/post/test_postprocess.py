"""Post-processing filters: centred mean and median (windows shrinking at the ends), the edge-padded
shift, seconds to frames at each fps, and post.json read back (or refused)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vafusion.errors import VafusionError
from vafusion.fusion.post.apply import DimPost, Post, read_post, shift, smooth, write_post


def _brute(x: np.ndarray, n: int, reduce) -> np.ndarray:
    before, after = (n - 1) // 2, n // 2
    return np.stack([reduce(x[max(0, t - before) : t + after + 1], axis=0) for t in range(len(x))])


@pytest.mark.parametrize("length", [1, 2, 5, 40])
@pytest.mark.parametrize("n", [1, 3, 4, 9, 31])
def test_mean_and_median_are_centred_and_shrink_at_the_ends(length, n):
    x = np.random.default_rng(length * 100 + n).normal(size=(length, 2)).astype(np.float32)
    np.testing.assert_allclose(smooth(x, n, "mean"), _brute(x, n, np.mean), atol=1e-6)
    if n % 2:
        np.testing.assert_allclose(smooth(x, n, "median"), _brute(x, n, np.median), atol=1e-7)
        np.testing.assert_allclose(smooth(x[:, 1], n, "median"), _brute(x, n, np.median)[:, 1], atol=1e-7)
    else:
        with pytest.raises(ValueError, match="odd"):
            smooth(x, n, "median")


def test_median_removes_a_spike_the_mean_spreads():
    x = np.zeros(11, dtype=np.float32)
    x[5] = 1.0
    assert smooth(x, 3, "median").max() == 0.0
    assert smooth(x, 3, "mean")[4:7] == pytest.approx([1 / 3] * 3)


def test_shift_delays_with_edge_padding():
    x = np.arange(6)
    np.testing.assert_array_equal(shift(x, 2), [0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(shift(x, -2), [2, 3, 4, 5, 5, 5])
    np.testing.assert_array_equal(shift(x, 0), x)
    np.testing.assert_array_equal(shift(x, 10), np.zeros(6))


def test_seconds_become_frames_at_each_fps():
    post = DimPost("median", window_s=0.5, shift_s=0.2)
    assert post.frames(30.0) == (15, 6)  # odd, so the window is centred
    assert post.frames(25.0) == (13, 5)  # 12.5 frames: the odd count nearest
    assert DimPost("mean", 0.3).frames(30.0) == (9, 0) and DimPost("mean", 0.1).frames(25.0) == (3, 0)
    assert DimPost().frames(30.0) == (1, 0) and DimPost().identity
    x = np.random.default_rng(0).normal(size=50).astype(np.float32)
    np.testing.assert_allclose(post.apply(x, 25.0), shift(smooth(x, 13, "median"), 5))


def test_post_applies_each_dimension_its_own_choice_and_clips():
    post = Post(valence=DimPost("mean", 0.2, 0.0), arousal=DimPost("mean", 0.0, -0.1))
    pred = np.random.default_rng(1).uniform(-1.5, 1.5, size=(40, 2)).astype(np.float32)
    out = post.apply(pred, 30.0)
    np.testing.assert_allclose(out[:, 0], np.clip(smooth(pred[:, 0], 7, "mean"), -1, 1), atol=1e-6)
    np.testing.assert_allclose(out[:, 1], np.clip(shift(pred[:, 1], -3), -1, 1))
    np.testing.assert_array_equal(Post().apply(np.clip(pred, -1, 1), 30.0), np.clip(pred, -1, 1))


def test_post_json_round_trip_and_refusals(tmp_path):
    post = Post(valence=DimPost("median", 0.3, 0.2), arousal=DimPost())
    path = write_post(tmp_path / "post.json", post, {"fit": {"note": "how"}})
    assert read_post(path) == post
    assert json.loads(path.read_text())["fit"] == {"note": "how"}
    with pytest.raises(VafusionError, match="no such file"):
        read_post(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(VafusionError, match="not JSON"):
        read_post(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"valence": {}}')
    with pytest.raises(VafusionError, match="not a vafusion post-processing file"):
        read_post(tmp_path / "other.json")
    content = json.loads(path.read_text())
    content["valence"]["method"] = "mode"
    (tmp_path / "method.json").write_text(json.dumps(content))
    with pytest.raises(VafusionError, match="'mode'"):
        read_post(tmp_path / "method.json")
    content["valence"]["method"] = "mean"
    del content["arousal"]
    (tmp_path / "half.json").write_text(json.dumps(content))
    with pytest.raises(VafusionError, match="valence and arousal"):
        read_post(tmp_path / "half.json")
