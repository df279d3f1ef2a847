"""Log-mel frontend: `vafusion.extract.logmel.log_mel` against the reference numpy implementation.

Reference: ``torchvggish.mel_features.log_mel_spectrogram`` with ``vggish_params`` (the
AudioSet release's numpy code, float64), given the float64 waveform it would get from
``vggish_input`` (conversion done outside the timed region). Ours: ``log_mel`` on the float32
waveform that ``vafusion.extract.audio.load_audio`` returns, with its default
``precise=True`` (the setting extraction uses), and ``precise=False`` for comparison.

10 minutes of 16 kHz audio per signal, seeded:

- ``speech+noise``: a synthetic voice (gliding f0 100-250 Hz, 12 harmonics, 4 Hz syllables,
  pauses) in white background noise at 20 dB SNR: in-the-wild speech, the target row;
- ``clean voice``: the same voice without noise (tonal, near-silent bands: the float32 error
  check sends most frames to float64; the worst case for speed);
- ``white noise``.

Both sides run on one thread (torch and BLAS), as ``log_mel`` runs in extraction (one
DataLoader decode worker per track, ``torch.set_num_threads(1)``); a second block shows the
default thread count. Interleaved, repeated, medians. Results: speed-up on speech+noise
>= 10, and max |ours - reference| <= 1e-4 over all signals with precise=True.

    python benchmarks/bench_logmel.py [--minutes 10] [--repeats 5]
"""

from __future__ import annotations

import argparse

import _common as C
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torchvggish import mel_features, vggish_params

from vafusion.extract.logmel import log_mel

SR = 16000


def voice(rng: np.random.Generator, n: int) -> np.ndarray:
    """A synthetic speaking voice: harmonic source with gliding pitch, syllables and pauses."""
    t = np.arange(n) / SR
    f0 = 100.0 * 2.5 ** (0.5 + 0.5 * np.sin(2 * np.pi * 0.13 * t + rng.uniform(0, 6.3)))  # 100-250 Hz
    phase = 2 * np.pi * np.cumsum(f0) / SR
    src = sum(np.sin(k * phase) / k for k in range(1, 13))
    syllables = np.sin(np.pi * 4.0 * t) ** 2
    on = np.repeat(rng.random(n // SR + 1) < 0.8, SR)[:n]  # ~20% of seconds are pauses
    return (0.3 * src * syllables * on).astype(np.float64)


def signals(minutes: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = int(minutes * 60 * SR)
    v = voice(rng, n)
    noise = rng.standard_normal(n)
    speech_rms = np.sqrt(np.mean(v[v != 0] ** 2))
    return {
        "speech+noise": (v + noise * speech_rms * 10 ** (-20 / 20)).astype(np.float32),
        "clean voice": v.astype(np.float32),
        "white noise": (0.1 * noise).astype(np.float32),
    }


def reference(x64: np.ndarray) -> np.ndarray:
    p = vggish_params
    return mel_features.log_mel_spectrogram(
        x64,
        audio_sample_rate=p.SAMPLE_RATE,
        log_offset=p.LOG_OFFSET,
        window_length_secs=p.STFT_WINDOW_LENGTH_SECONDS,
        hop_length_secs=p.STFT_HOP_LENGTH_SECONDS,
        num_mel_bins=p.NUM_MEL_BINS,
        lower_edge_hertz=p.MEL_MIN_HZ,
        upper_edge_hertz=p.MEL_MAX_HZ,
    )


def measure(x: np.ndarray, repeats: int) -> dict:
    """Interleaved timings (ref, precise, fast) and max abs differences for one signal."""
    x64 = x.astype(np.float64)
    ref = reference(x64)
    diff_p = float(np.abs(log_mel(x).numpy() - ref).max())
    diff_f = float(np.abs(log_mel(x, precise=False).numpy() - ref).max())
    t_ref, t_p, t_f = [], [], []
    for _ in range(repeats):
        t_ref.append(C.timed(lambda: reference(x64)))
        t_p.append(C.timed(lambda: log_mel(x)))
        t_f.append(C.timed(lambda: log_mel(x, precise=False)))
    return {
        "ref": t_ref,
        "precise": t_p,
        "fast": t_f,
        "diff_precise": diff_p,
        "diff_fast": diff_f,
        "frames": ref.shape[0],
    }


def report(name: str, m: dict) -> tuple[float, float]:
    r, p, f = C.median(m["ref"]), C.median(m["precise"]), C.median(m["fast"])
    print(
        f"  {name:13s} reference {r:.3f} s (min {min(m['ref']):.3f}) | precise=True {p:.3f} s: {r / p:5.1f}x "
        f"(best-vs-best {min(m['ref']) / min(m['precise']):.1f}x), max|diff| {m['diff_precise']:.1e} | "
        f"precise=False {f:.3f} s: {r / f:5.1f}x, max|diff| {m['diff_fast']:.1e}",
        flush=True,
    )
    return r / p, r / f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    C.header("log-mel frontend: vafusion log_mel vs torchvggish.mel_features (numpy reference)")
    sigs = signals(args.minutes)
    default_threads = torch.get_num_threads()
    results = {}
    print(f"{args.minutes:g} min of 16 kHz audio per signal; 1 thread (torch and BLAS), medians of {args.repeats}:")
    torch.set_num_threads(1)
    with threadpool_limits(1):
        for name, x in sigs.items():
            results[name] = measure(x, args.repeats)
            report(name, results[name])
    torch.set_num_threads(default_threads)
    print(f"default threads ({default_threads} torch, BLAS default), medians of {args.repeats}:")
    report("speech+noise", measure(sigs["speech+noise"], args.repeats))
    print(f"{results['speech+noise']['frames']} log-mel frames per signal; load average {C.load_average()}")
    speedup = C.median(results["speech+noise"]["ref"]) / C.median(results["speech+noise"]["precise"])
    C.result("logmel_speedup_speech_noise_1thread", speedup, ">=", 10)
    C.result("logmel_max_abs_diff", max(m["diff_precise"] for m in results.values()), "<=", 1e-4)


if __name__ == "__main__":
    main()
