"""Post-processing filters: centred mean and median (windows shrinking at the ends), the edge-padded
shift, seconds to frames at each fps, and post.json read back (or refused)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vafusion.errors import VafusionError
from vafusion.fusion.post.apply import DimPost, Post, read_post, write_post
from vafusion.fusion.post.steps import Shift, Smooth, shift, smooth


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
    post = DimPost.smooth_then_shift("median", window_s=0.5, shift_s=0.2)
    assert Smooth("median", 0.5).frames(30.0) == 15 and Shift(0.2).frames(30.0) == 6  # odd, so the window is centred
    assert (
        Smooth("median", 0.5).frames(25.0) == 13 and Shift(0.2).frames(25.0) == 5
    )  # 12.5 frames: the odd count nearest
    assert Smooth("mean", 0.3).frames(30.0) == 9 and Smooth("mean", 0.1).frames(25.0) == 3
    assert Smooth().frames(30.0) == 1 and DimPost.smooth_then_shift().identity and DimPost().identity
    x = np.random.default_rng(0).normal(size=50).astype(np.float32)
    np.testing.assert_allclose(post.apply(x, 25.0), shift(smooth(x, 13, "median"), 5))


def test_post_applies_each_dimension_its_own_choice_and_clips():
    post = Post(
        valence=DimPost.smooth_then_shift("mean", 0.2, 0.0), arousal=DimPost.smooth_then_shift("mean", 0.0, -0.1)
    )
    pred = np.random.default_rng(1).uniform(-1.5, 1.5, size=(40, 2)).astype(np.float32)
    out = post.apply(pred, 30.0)
    np.testing.assert_allclose(out[:, 0], np.clip(smooth(pred[:, 0], 7, "mean"), -1, 1), atol=1e-6)
    np.testing.assert_allclose(out[:, 1], np.clip(shift(pred[:, 1], -3), -1, 1))
    np.testing.assert_array_equal(Post().apply(np.clip(pred, -1, 1), 30.0), np.clip(pred, -1, 1))


def test_post_json_round_trip_and_refusals(tmp_path):
    post = Post(valence=DimPost.smooth_then_shift("median", 0.3, 0.2), arousal=DimPost((Shift(-0.1),)))
    path = write_post(tmp_path / "post.json", post, {"fit": {"note": "how"}})
    assert read_post(path) == post
    content = json.loads(path.read_text())
    assert content["format_version"] == 2 and content["fit"] == {"note": "how"}
    assert content["valence"] == {
        "steps": [{"step": "smooth", "method": "median", "window_s": 0.3}, {"step": "shift", "shift_s": 0.2}]
    }
    with pytest.raises(VafusionError, match="no such file"):
        read_post(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(VafusionError, match="not JSON"):
        read_post(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"valence": {}}')
    with pytest.raises(VafusionError, match="not a vafusion post-processing file"):
        read_post(tmp_path / "other.json")
    content["valence"]["steps"][0]["method"] = "mode"
    (tmp_path / "method.json").write_text(json.dumps(content))
    with pytest.raises(VafusionError, match="'mode'"):
        read_post(tmp_path / "method.json")
    content["valence"]["steps"][0] = {"step": "smoth", "method": "mean"}
    (tmp_path / "step.json").write_text(json.dumps(content))
    with pytest.raises(VafusionError, match=r"smoth: unknown post-processing step \(did you mean smooth\?\)"):
        read_post(tmp_path / "step.json")
    content["valence"]["steps"][0] = {"step": "smooth", "method": "mean", "width": 3}
    (tmp_path / "param.json").write_text(json.dumps(content))
    with pytest.raises(VafusionError, match=r"smooth\.width: .* has no such option; its options: method, window_s"):
        read_post(tmp_path / "param.json")
    content["format_version"] = 3
    (tmp_path / "later.json").write_text(json.dumps(content))
    with pytest.raises(VafusionError, match="format_version 3, this vafusion reads 1 and 2"):
        read_post(tmp_path / "later.json")
    content["format_version"] = 2
    content["valence"]["steps"][0] = {"step": "smooth", "method": "mean", "window_s": 0.1}
    del content["arousal"]
    (tmp_path / "half.json").write_text(json.dumps(content))
    with pytest.raises(VafusionError, match="valence and arousal"):
        read_post(tmp_path / "half.json")


V1 = Path(__file__).parent / "v1" / "post.json"  # written by vafusion cv before post.json named its steps


def test_a_post_json_of_format_version_1_reads_as_a_smoothing_then_a_shift():
    content = json.loads(V1.read_text())
    assert content["format_version"] == 1 and content["valence"] == {
        "method": "median",
        "window_s": 0.4,
        "shift_s": 0.0,
    }
    post = read_post(V1)
    assert post == Post(DimPost.smooth_then_shift("median", 0.4, 0.0), DimPost.smooth_then_shift("mean", 0.0, 0.0))
    assert post.describe() == "valence: median over 0.4 s, shift +0.000 s; arousal: no smoothing, shift +0.000 s"
    pred = np.random.default_rng(2).uniform(-1, 1, size=(60, 2)).astype(np.float32)
    np.testing.assert_array_equal(post.apply(pred, 25.0)[:, 0], smooth(pred[:, 0], 11, "median"))
