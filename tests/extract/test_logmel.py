"""The log-mel frontend against the VGGish reference port (numpy, float64).

The reference (``torchvggish`` 0.2, a test-only dependency) is used without any
network access: its numpy log-mel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

# the reference port is a test-only dependency (setup.cfg [dev]): missing, these tests fail, never skip
from torchvggish import mel_features, vggish_params

from vafusion.extract import logmel as L

SR = 16000


def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """The VGGish reference preprocessing (vggish_input.waveform_to_examples, before framing)."""
    return mel_features.log_mel_spectrogram(
        np.asarray(x, dtype=np.float64),
        audio_sample_rate=vggish_params.SAMPLE_RATE,
        log_offset=vggish_params.LOG_OFFSET,
        window_length_secs=vggish_params.STFT_WINDOW_LENGTH_SECONDS,
        hop_length_secs=vggish_params.STFT_HOP_LENGTH_SECONDS,
        num_mel_bins=vggish_params.NUM_MEL_BINS,
        lower_edge_hertz=vggish_params.MEL_MIN_HZ,
        upper_edge_hertz=vggish_params.MEL_MAX_HZ,
    )


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = SR + 123  # odd length: last partial frame dropped
    t = np.arange(n) / SR
    chirp = 0.5 * np.sin(2 * np.pi * (50 * t + 0.5 * 7900 * t**2))  # 50 Hz -> ~8 kHz
    # Speech-like: a 120 Hz glottal harmonic series, syllable-rate envelope, some noise.
    f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(h * phase) / h for h in range(1, 30))
    speech = 0.2 * voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(n)
    return {
        "noise": 0.3 * rng.standard_normal(n),
        "chirp": chirp,
        "speech": speech,
        "silence": np.zeros(n),
        "faint": 1e-4 * rng.standard_normal(n),
        "loud_square": np.sign(np.sin(2 * np.pi * 440 * t)),
        "one_frame": rng.uniform(-1, 1, 400),
        "two_frames_minus_one": rng.uniform(-1, 1, 559),
        "two_frames": rng.uniform(-1, 1, 560),
    }


# ------------------------------------------------------------------ log-mel ---


@pytest.mark.parametrize("name", list(_signals()))
def test_log_mel_matches_reference(name: str) -> None:
    x = _signals()[name].astype(np.float32)  # both sides see the same float32 samples
    ref = reference_log_mel(x)
    ours = L.log_mel(x)
    assert ours.dtype == torch.float32
    assert ours.shape == ref.shape
    assert np.abs(ours.numpy().astype(np.float64) - ref).max() < 1e-4


def test_log_mel_chunks_and_float64_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    # Noise, then a pure tone (needs the float64 fallback), then speech-like,
    # then beeps in digital silence, over many small chunks: fast path, partial
    # and whole-chunk fallback, and the switch back must all agree.
    monkeypatch.setattr(L, "_LOG_MEL_CHUNK", 64)
    sig = _signals()
    rng = np.random.default_rng(1)
    t = np.arange(3 * SR) / SR
    x = np.concatenate(
        [
            0.1 * rng.standard_normal(3 * SR),
            0.9 * np.sin(2 * np.pi * 440 * t),
            sig["speech"],
            np.where(np.abs(t % 0.5 - 0.25) < 0.01, 0.8 * np.sin(2 * np.pi * 1000 * t), 0.0),
            sig["noise"][:777],
        ]
    ).astype(np.float32)
    ref = reference_log_mel(x)
    ours = L.log_mel(torch.from_numpy(x))
    assert ours.shape == ref.shape
    assert np.abs(ours.numpy() - ref).max() < 1e-4


def test_log_mel_fast_path_precision() -> None:
    sig = _signals()
    noise = sig["noise"].astype(np.float32)
    assert np.abs(L.log_mel(noise, precise=False).numpy() - reference_log_mel(noise)).max() < 1e-4
    # A pure tone beside empty bands is where float32 rounding shows; the
    # default path must not, the fast path may (that is why the check exists).
    tone = (0.9 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    ref = reference_log_mel(tone)
    assert np.abs(L.log_mel(tone).numpy() - ref).max() < 1e-5
    assert np.abs(L.log_mel(tone, precise=False).numpy() - ref).max() < 3e-3


def test_mel_matrix_equals_reference() -> None:
    ref = mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=16000, lower_edge_hertz=125, upper_edge_hertz=7500
    )
    assert np.abs(L.mel_matrix() - ref).max() < 1e-12


def test_log_mel_too_short_and_resampled() -> None:
    assert L.log_mel(np.zeros(399, np.float32)).shape == (0, 64)
    assert L.log_mel(np.zeros(0, np.float32)).shape == (0, 64)
    x8k = np.random.default_rng(2).standard_normal(8000).astype(np.float32)
    import torchaudio.functional as AF

    expected = L.log_mel(AF.resample(torch.from_numpy(x8k), 8000, 16000))
    assert torch.equal(L.log_mel(x8k, sample_rate=8000), expected)
    with pytest.raises(ValueError):
        L.log_mel(np.zeros((2, 1000), np.float32))


def test_frame_centre_constants() -> None:
    assert L.LOG_MEL_HOP_S == pytest.approx(0.010)
    assert L.LOG_MEL_CENTRE_OFFSET_S == pytest.approx(0.0125)
    assert L.frame_centre_seconds(0) == pytest.approx(0.0125)
    assert L.frame_centre_seconds(3) == pytest.approx((160 * 3 + 200) / 16000)
