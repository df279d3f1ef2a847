"""The one aligner: steps with their centre times -> one row per video frame.

Log-mel pooling and VGGish patch centres are pinned against exact brute force (fractions),
beeps at known instants land in their frames, and the generic forms (irregular steps,
sparse steps, a synthetic track extractor, a speech model's step timing) follow the same rules.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from vafusion.extract import align, logmel, vggish

SR = 16000


def _pooled(lm: torch.Tensor, fps: float, n_frames: int) -> torch.Tensor:
    return logmel.pooled_log_mel(lm, align.frame_instants(fps, n_frames))


def _patches(lm: torch.Tensor, fps: float, n_frames: int) -> torch.Tensor:
    return vggish.vggish_patches(lm, align.frame_instants(fps, n_frames))


def beeps(instants: list[float], duration_s: float, half_width_s: float = 0.005) -> np.ndarray:
    """Silence with Hann-windowed 1 kHz bursts centred exactly at ``instants``."""
    n = int(round(duration_s * SR))
    x = np.zeros(n, np.float32)
    t = np.arange(n) / SR
    for c in instants:
        d = t - c
        m = np.abs(d) < half_width_s
        env = 0.5 + 0.5 * np.cos(np.pi * d[m] / half_width_s)
        x[m] += (0.8 * env * np.sin(2 * np.pi * 1000 * d[m])).astype(np.float32)
    return x


@pytest.mark.parametrize(
    "fps,frames", [(25.0, [11, 37, 64, 90]), (30.0, [11, 40, 77, 108]), (30000 / 1001, [5, 50, 99])]
)
def test_beeps_peak_at_their_frames(fps: float, frames: list[int]) -> None:
    n_frames = int(4.0 * fps)
    instants = [(k - 1) / fps for k in frames]
    lm = logmel.log_mel(beeps(instants, 4.0))
    energy = _pooled(lm, fps, n_frames).mean(dim=1).numpy()
    silence = math.log(0.01)
    for k in frames:
        row = k - 1
        window = energy[row - 3 : row + 4]
        assert int(np.argmax(window)) == 3, (k, window)
    far = np.ones(n_frames, bool)
    for k in frames:
        far[max(k - 4, 0) : k + 3] = False
    assert np.allclose(energy[far], silence, atol=1e-5)

    patches = _patches(lm, fps, n_frames)
    assert patches.shape == (n_frames, 1, 96, 64)
    for k in frames:
        rows = patches[k - 1, 0].mean(dim=1)
        assert int(torch.argmax(rows)) == 48  # row 48 = log-mel frame nearest the instant
        assert rows[48] > silence + 1
        assert rows[47] > silence + 0.1 and rows[49] > silence + 0.1  # neighbours overlap the beep
        assert torch.allclose(rows[:40], torch.tensor(silence), atol=1e-5)
        assert torch.allclose(rows[56:], torch.tensor(silence), atol=1e-5)


def _centre(j: int) -> Fraction:
    return Fraction(1, 80) + Fraction(j, 100)  # 0.0125 + 0.010 j, exactly


def _candidates(lo: Fraction, hi: Fraction) -> range:
    """A range of log-mel indices surely containing every centre in [lo, hi] (plus neighbours)."""
    return range(math.floor((lo - Fraction(1, 80)) * 100) - 2, math.ceil((hi - Fraction(1, 80)) * 100) + 3)


def _nearest(t: Fraction) -> int:
    # Exact arithmetic; ties go to the later frame.
    return min(_candidates(t, t), key=lambda j: (abs(_centre(j) - t), -j))


def _brute_force_patches(lm: torch.Tensor, fps: float, n_frames: int) -> torch.Tensor:
    out = torch.empty(n_frames, 1, 96, 64)
    for k in range(1, n_frames + 1):
        c = _nearest((k - 1) / Fraction(fps))
        for r, j in enumerate(range(c - 48, c + 48)):
            out[k - 1, 0, r] = lm[min(max(j, 0), lm.shape[0] - 1)]
    return out


def _brute_force_pooled(lm: torch.Tensor, fps: float, n_frames: int) -> torch.Tensor:
    out = torch.empty(n_frames, 64, dtype=torch.float64)
    lm64 = lm.double()
    half = 1 / (2 * Fraction(fps))
    for k in range(1, n_frames + 1):
        t = (k - 1) / Fraction(fps)
        js = [j for j in _candidates(t - half, t + half) if t - half <= _centre(j) < t + half]
        if not js:
            js = [_nearest(t)]
        out[k - 1] = torch.stack([lm64[min(max(j, 0), lm.shape[0] - 1)] for j in js]).mean(0)
    return out.float()


@pytest.mark.parametrize("fps", [25.0, 30.0, 30000 / 1001, 40.0, 60.0, 7.5, 240.0])
def test_alignment_matches_brute_force(fps: float) -> None:
    lm = torch.randn(130, 64, generator=torch.Generator().manual_seed(3))  # 1.3 s of log-mel
    n_frames = int(1.6 * fps) + 2  # runs past the end of the track
    assert torch.equal(_patches(lm, fps, n_frames), _brute_force_patches(lm, fps, n_frames))
    assert torch.allclose(_pooled(lm, fps, n_frames), _brute_force_pooled(lm, fps, n_frames), atol=1e-5)


def test_alignment_edges_are_padded() -> None:
    lm = torch.randn(100, 64, generator=torch.Generator().manual_seed(4))
    fps, n_frames = 25.0, 60  # 2.4 s of frames, 1 s of log-mel
    patches = _patches(lm, fps, n_frames)
    # Frame 1 (t = 0): c = round(-1.25) = -1, rows are frames -49..46 -> rows 0..49 repeat frame 0.
    assert torch.equal(patches[0, 0, :50], lm[0].expand(50, 64))
    assert torch.equal(patches[0, 0, 50:], lm[1:47])
    assert torch.equal(patches[-1, 0], lm[-1].expand(96, 64))
    pooled = _pooled(lm, fps, n_frames)
    assert torch.allclose(pooled[-1], lm[-1])
    const = torch.full((10, 64), 2.5)
    assert torch.allclose(_pooled(const, 30.0, 40), torch.tensor(2.5))
    # No log-mel frame at all: digital silence rather than an error.
    empty = torch.zeros(0, 64)
    assert torch.allclose(_patches(empty, 25.0, 3), torch.tensor(logmel.SILENCE_LOG_MEL))
    assert torch.allclose(_pooled(empty, 25.0, 3), torch.tensor(logmel.SILENCE_LOG_MEL))
    assert torch.equal(_pooled(empty, 25.0, 3), torch.full((3, 64), logmel.SILENCE_LOG_MEL))
    assert torch.equal(_patches(empty, 240.0, 5), torch.full((5, 1, 96, 64), logmel.SILENCE_LOG_MEL))


def test_coverage_mask() -> None:
    mask = align.covered(align.frame_instants(25.0, 30), 1.0)  # 1 s of audio: frames at 0.00 .. 0.96 s
    assert mask.dtype == bool and mask.shape == (30,)
    assert mask[:25].all() and not mask[25:].any()
    assert not align.covered(align.frame_instants(25.0, 3), 0.0).any()


def test_irregular_steps_match_brute_force_with_edge_padding():
    """Explicit instants (imports): span means of the steps inside, nearest when none, and past
    the ends virtual steps every median hop repeating the edge value."""
    rng = np.random.default_rng(5)
    times = np.cumsum(rng.uniform(0.005, 0.03, 60)) + 0.1  # ~0.1 .. ~1.1 s, irregular
    values = torch.from_numpy(rng.normal(size=(60, 3)))
    steps = align.Steps.at(times)
    hop = float(np.median(np.diff(times)))
    fps = 30.0
    t = align.frame_instants(fps, 45)  # 0 .. 1.47 s: runs past both ends
    got = align.span_mean(values, steps, t).double()
    virtual_before = times[0] - hop * np.arange(1, 200)
    virtual_after = times[-1] + hop * np.arange(1, 200)
    for k, tk in enumerate(t):
        lo, hi = tk - 0.5 / fps, tk + 0.5 / fps
        rows = [values[j] for j in range(60) if lo <= times[j] < hi]
        rows += [values[0] for v in virtual_before if lo <= v < hi] + [
            values[-1] for v in virtual_after if lo <= v < hi
        ]
        if not rows:
            allc = np.concatenate([virtual_before, times, virtual_after])
            j = int(np.argmin(np.abs(allc - tk)))
            rows = [values[0] if j < len(virtual_before) else values[min(j - len(virtual_before), 59)]]
        torch.testing.assert_close(got[k], torch.stack(rows).mean(0), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="increase"):
        align.Steps.at([0.1, 0.1, 0.2])


def test_one_hot_step_lands_in_its_frame_for_any_hop():
    """A single distinct step centred on frame k's instant is pooled into row k (and only there
    when steps are denser than frames); nearest_step picks it for frame k."""
    for fps, hop in ((25.0, 0.02), (30.0, 0.01), (29.97, 0.02), (50.0, 0.02), (10.0, 0.0123)):
        k = 17
        times = (k - 1) / fps + hop * np.arange(-40, 41)
        values = torch.zeros(len(times), 1)
        values[40] = 1.0
        steps = align.Steps.at(times)
        rows = align.span_mean(values, steps, align.frame_instants(fps, 40))[:, 0]
        assert int(torch.argmax(rows)) == k - 1 and (rows > 0).sum() == 1, (fps, hop)
        assert align.nearest_step(steps, align.frame_instants(fps, 40))[k - 1] == 40


def test_single_frame_and_single_step():
    steps = align.Steps.regular(0.0125, 0.01, 1)
    np.testing.assert_array_equal(align.nearest_step(steps, np.array([-0.02, 0.0, 0.03])), [-3, -1, 2])  # virtual steps
    v = torch.tensor([[1.0], [2.0], [3.0]])
    out = align.span_mean(v, align.Steps.regular(0.0125, 0.01, 3), np.array([0.024]))  # one frame: nearest step
    assert out.tolist() == [[2.0]]
