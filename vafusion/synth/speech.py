"""A formant-synthesised, speech-like signal that a real voice activity detector takes for speech.

Why not the corpus voice (:mod:`.voice`): a harmonic tone under a syllable envelope carries
arousal for the feature extractors, but Silero VAD, trained on real speech, scores it ~0.03.
What it needs (found by trying): a glottal source (pitch with declination and jitter, pulses
with an open phase), five formant resonators that glide between vowel targets every 5 ms,
and consonants between vowels: fricative noise (3.5-7 kHz), plosive closures and bursts,
nasal murmurs; words of one to three syllables with pauses between them. Silero then scores
the voiced stretches ~0.8-1 (median over a span of words) and digital silence < 0.05.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, lfilter

VOWELS = np.array(
    [
        (730, 1090, 2440, 3400, 4200),  # a
        (270, 2290, 3010, 3500, 4300),  # i
        (300, 870, 2240, 3300, 4100),  # u
        (530, 1840, 2480, 3500, 4200),  # e
        (570, 840, 2410, 3300, 4100),  # o
        (660, 1720, 2410, 3400, 4200),  # ae
        (440, 1020, 2240, 3300, 4100),  # schwa-like
    ],
    dtype=np.float64,
)
"""Formant targets (Hz) of the vowels, F1..F5."""
NASAL = (250.0, 1200.0, 2400.0, 3300.0, 4100.0)
BANDWIDTHS = np.array([60.0, 90.0, 120.0, 180.0, 250.0])
BLOCK_S = 0.005  # formants move every 5 ms


def _resonate(x: np.ndarray, freqs: np.ndarray, bandwidth: float, rate: int, block: int) -> np.ndarray:
    """``x`` through a unit-gain two-pole resonator whose centre follows ``freqs`` (one per block)."""
    out = np.empty_like(x)
    state = np.zeros(2)
    r = np.exp(-np.pi * bandwidth / rate)
    for b, f in enumerate(freqs):
        c = 2.0 * r * np.cos(2.0 * np.pi * f / rate)
        sl = slice(b * block, (b + 1) * block)
        out[sl], state = lfilter([1.0 - c + r * r], [1.0, -c, r * r], x[sl], zi=state)
    return out


def _plan(rng: np.random.Generator, n_blocks: int, block_s: float) -> tuple[np.ndarray, ...]:
    """Per 5 ms block: formant targets (n, 5), voicing amplitude, frication amplitude."""
    targets = np.zeros((n_blocks, 5))
    voiced, fric = np.zeros(n_blocks), np.zeros(n_blocks)
    per_s = 1.0 / block_s
    b = 0
    while b < n_blocks:
        for _ in range(rng.integers(1, 4)):  # a word of 1-3 syllables
            consonant = rng.integers(4)
            if consonant == 0:  # fricative
                n = int(rng.uniform(0.06, 0.12) * per_s)
                fric[b : b + n] = 1.0
                b += n
            elif consonant == 1:  # plosive: closure, then a burst
                b += int(rng.uniform(0.04, 0.07) * per_s)
                fric[b : b + 3] = 0.6
                b += 3
            elif consonant == 2:  # nasal murmur
                n = int(rng.uniform(0.05, 0.08) * per_s)
                voiced[b : b + n] = 0.3
                targets[b : b + n] = NASAL
                b += n
            n = int(rng.uniform(0.12, 0.25) * per_s)  # the vowel
            seg = voiced[b : b + n]
            seg[:] = np.sin(np.linspace(0.2, np.pi - 0.2, len(seg))) ** 0.3
            targets[b : b + n] = VOWELS[rng.integers(len(VOWELS))] * rng.uniform(0.9, 1.1)
            b += n
        b += int(rng.uniform(0.05, 0.3) * per_s)  # pause between words
    return targets[:n_blocks], voiced[:n_blocks], fric[:n_blocks]


def _glide(targets: np.ndarray) -> np.ndarray:
    """Blocks without a target keep the last one; then a 40 ms moving average (coarticulation)."""
    last = VOWELS[0]
    for i in range(len(targets)):
        if targets[i, 0] == 0:
            targets[i] = last
        else:
            last = targets[i]
    k = 8
    padded = np.pad(targets, ((k // 2, k // 2), (0, 0)), mode="edge")
    kernel = np.ones(k) / k
    return np.stack([np.convolve(padded[:, j], kernel, mode="same")[k // 2 : -k // 2] for j in range(5)], axis=1)


def speech_like(n_samples: int, rate: int = 16000, seed: int = 0, peak: float = 0.5) -> np.ndarray:
    """``n_samples`` of speech-like sound at ``rate`` (float32, peak ``peak``), seeded."""
    rng = np.random.default_rng(seed)
    block = int(round(BLOCK_S * rate))
    n_blocks = -(-n_samples // block)
    n = n_blocks * block
    targets, voiced, fric = _plan(rng, n_blocks, BLOCK_S)
    targets = _glide(targets)
    amp = np.repeat(np.convolve(voiced, np.ones(3) / 3, mode="same"), block)
    t = np.arange(n) / rate
    f0 = 130.0 * (1 - 0.15 * (t % 2.5) / 2.5) * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t))
    f0 *= 1 + 0.01 * rng.standard_normal(n)  # jitter
    phase = np.cumsum(f0 / rate) % 1.0
    opening, open_q = 0.45, 0.6  # glottal pulse: opening over 45% of the period, closing until 60%
    pulse = np.where(
        phase < opening,
        0.5 * (1 - np.cos(np.pi * phase / opening)),
        np.where(phase < open_q, np.cos(0.5 * np.pi * (phase - opening) / (open_q - opening)), 0.0),
    )
    source = np.diff(pulse, prepend=0.0) * amp + 0.02 * rng.standard_normal(n) * amp * (phase < open_q)
    for j in range(5):
        source = _resonate(source, targets[:, j], BANDWIDTHS[j], rate, block)
    voice = np.diff(source, prepend=0.0)  # lip radiation
    b, a = butter(4, [3500 / (rate / 2), min(7000, 0.45 * rate) / (rate / 2)], "band")
    hiss = lfilter(b, a, rng.standard_normal(n) * np.repeat(fric, block))
    out = voice + 0.6 * np.abs(voice).max() * hiss
    out *= peak / max(np.abs(out).max(), 1e-12)
    return out[:n_samples].astype(np.float32)
