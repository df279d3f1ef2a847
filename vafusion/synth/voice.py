"""The synthetic voice: where arousal becomes sound.

Why it sounds like this: arousal must be audible to a log-mel front end and to VGGish, so
loudness (+-16 dB), pitch (+-0.6 octave) and syllable rate (2-5 Hz) all rise with it (log
RMS over 0.5 s follows arousal with r ~ 0.9). Per-speaker pitch, timbre and microphone
gain, breathing pauses and background noise are nuisances unrelated to the label.
"""

from __future__ import annotations

import numpy as np

from vafusion.synth.plan import Person, VideoPlan


def moving_average(x: np.ndarray, k: int) -> np.ndarray:
    """Centred moving average of width ``k`` (same length, edges averaged over what exists)."""
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    n = x.size
    lo = np.clip(np.arange(n) - k // 2, 0, n)
    hi = np.clip(np.arange(n) - k // 2 + k, 0, n)
    return (c[hi] - c[lo]) / (hi - lo)


def _tone(rng: np.random.Generator, t: np.ndarray, a: np.ndarray, sample_rate: int) -> np.ndarray:
    """Harmonic tone whose pitch follows arousal, with a slow intonation and a per-speaker tilt.

    Harmonics go up to ~3.5 kHz and stay below Nyquist at the highest pitch (f0 <= 1.6
    f0_base), computed by the Chebyshev recursion sin((h+1)p) = 2 cos(p) sin(hp) - sin((h-1)p)
    with only two trigonometric calls.
    """
    f0_base = rng.uniform(110.0, 170.0)
    intonation = 0.06 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 2 * np.pi))
    f0 = f0_base * 2.0 ** (0.6 * a + intonation)
    phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate
    tilt = rng.uniform(1.0, 1.3)
    n_harm = int(min(12, (min(3500.0, 0.5 * sample_rate) // (1.6 * f0_base))))
    weights = np.arange(1, n_harm + 1, dtype=np.float64) ** -tilt
    weights /= weights.sum()
    two_cos = 2.0 * np.cos(phase)
    prev, cur = np.zeros(t.size), np.sin(phase)
    tone = weights[0] * cur
    for h in range(1, n_harm):
        prev, cur = cur, two_cos * cur - prev
        tone += weights[h] * cur
    return tone


def _syllables(rng: np.random.Generator, a: np.ndarray, sample_rate: int) -> np.ndarray:
    """Amplitude envelope of syllables whose rate (2-5 per second) rises with arousal."""
    rate = 2.0 + 1.5 * (a + 1.0)
    syl = np.cumsum(rate) / sample_rate + rng.uniform()
    return (0.5 - 0.5 * np.cos(2 * np.pi * syl)) ** 1.5


def _phrases(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
    """Breathing pauses between phrases: about one 0.25-0.45 s pause every 2-4 s, 30 ms ramps."""
    phrase = np.ones(t.size)
    pos = rng.uniform(1.0, 3.0)
    while pos < t[-1]:
        length = rng.uniform(0.25, 0.45)
        phrase[int(pos * sample_rate) : int((pos + length) * sample_rate)] = 0.25
        pos += length + rng.uniform(2.0, 4.0)
    return moving_average(phrase, max(1, int(0.03 * sample_rate)))


def voice(plan: VideoPlan, speaker: Person, n_samples: int, sample_rate: int) -> np.ndarray:
    """A synthetic voice whose loudness, pitch and syllable rate follow ``speaker.arousal``."""
    rng = np.random.default_rng(plan.voice_seed)
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    frame_t = np.arange(plan.n_frames) / plan.fps
    a = np.interp(t, frame_t, speaker.arousal.astype(np.float64))
    tone = _tone(rng, t, a, sample_rate)
    env = _syllables(rng, a, sample_rate)
    phrase = _phrases(rng, t, sample_rate)
    gain = 0.12 * 10.0 ** (rng.uniform(-1.5, 1.5) / 20.0)  # microphone distance
    loud = 10.0 ** (16.0 * a / 20.0)
    noise = rng.standard_normal(n_samples) * 10.0 ** (rng.uniform(-50.0, -42.0) / 20.0)
    wave = gain * loud * env * phrase * tone + noise
    return np.clip(wave, -0.99, 0.99).astype(np.float32)
