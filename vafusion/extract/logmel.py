"""The log-mel frontend (VGGish's reference preprocessing) and the ``logmel`` track feature.

:func:`log_mel`: 16 kHz mono in, 64-band log-mel frames out, numerically the reference
preprocessing of the AudioSet VGGish release (25 ms periodic-Hann window, 10 ms hop,
512-point FFT magnitude, 64 HTK mel bands 125-7500 Hz with the DC bin zeroed,
log(mel + 0.01)), in batched torch instead of numpy, so a whole track is one call.
Log-mel frame j covers samples [160 j, 160 j + 400): its centre is the instant
0.0125 + 0.010 j s (:data:`LOG_MEL_STEPS`).

:class:`LogMelExtractor` (``logmel``): those frames averaged over each video frame's span
by the shared aligner (:func:`vafusion.extract.align.span_mean`). VGGish (:mod:`.vggish`)
reads the same log-mel; the track pass computes it once per track in a decoding worker.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from vafusion.errors import VafusionError
from vafusion.extract import align
from vafusion.extract.audio import SAMPLE_RATE
from vafusion.extract.registry import BuildRequest, Family

# --- frontend constants (the VGGish release's vggish_params) -----------------
# SAMPLE_RATE (16 kHz): audio.py's, the rate every decoded waveform has.
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
FFT_LENGTH = 512  # next power of two >= the window
NUM_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01

LOG_MEL_HOP_S = HOP_SAMPLES / SAMPLE_RATE  # 0.010
"""Seconds between consecutive log-mel frames."""
LOG_MEL_CENTRE_OFFSET_S = WINDOW_SAMPLES / 2 / SAMPLE_RATE  # 0.0125
"""Instant (s) of the centre of log-mel frame 0; frame j is centred at this + j * hop."""
SILENCE_LOG_MEL = math.log(LOG_OFFSET)
"""The log-mel value of digital silence; used when a track is too short for one frame."""


def frontend_params() -> dict[str, object]:
    """What :func:`log_mel` computes, for the extractor provenance (and so the cache fingerprint)."""
    return {
        "sample_rate": SAMPLE_RATE,
        "window": f"periodic-hann {1000 * WINDOW_SAMPLES // SAMPLE_RATE} ms ({WINDOW_SAMPLES})",
        "hop": f"{1000 * HOP_SAMPLES // SAMPLE_RATE} ms ({HOP_SAMPLES})",
        "n_fft": FFT_LENGTH,
        "mel_bands": NUM_BANDS,
        "mel_scale": "htk",
        "fmin": MEL_MIN_HZ,
        "fmax": MEL_MAX_HZ,
        "dc_bin": "zeroed",
        "log": f"log(x + {LOG_OFFSET})",
    }


# Frames are processed in chunks with buffers allocated once per call: fresh
# multi-megabyte temporaries per chunk cost page faults, and a whole-track batch
# falls out of cache; both are several times slower on CPU.
_LOG_MEL_CHUNK = 2048

# Precision model of the float32 fast path (see log_mel). A float32 FFT leaves a
# rounding error of about _FFT32_ERROR * ||windowed frame|| in every bin (measured
# median 4e-7 for 512-point rFFTs; eps32 * sqrt(log2 N) scale). log(mel + 0.01)
# turns that into a visible error only where a band's mel energy is small next
# to the frame's loudness: bands near digital silence beside a loud tone.
_FFT32_ERROR = 4e-7
_FFT32_SAFETY = 8.0  # worst observed (true error / estimate) over tones, chirps, voice, noise: 7.6
_FFT32_TOLERANCE = 5e-5  # frames whose estimated error may exceed this are redone in float64

# ---------------------------------------------------------------- frontend ---


def frame_centre_seconds(j: int | np.ndarray | Tensor) -> float | np.ndarray | Tensor:
    """Instant (s) of the centre of log-mel frame ``j`` (0-based): 0.0125 + 0.010 j."""
    return LOG_MEL_CENTRE_OFFSET_S + LOG_MEL_HOP_S * j


def mel_matrix(
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    num_bands: int = NUM_BANDS,
    low_hz: float = MEL_MIN_HZ,
    high_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """HTK mel filterbank as a ``(bins, bands)`` float64 matrix (spectrum @ matrix).

    Built the way the VGGish reference builds it: band edges evenly spaced in
    mel between ``low_hz`` and ``high_hz``, triangles that are linear in *mel*
    (not Hz) evaluated at the linearly spaced FFT bin frequencies, and the DC bin
    given zero weight (HTK ignores it).
    """
    if not 0.0 <= low_hz < high_hz <= sample_rate / 2:
        raise ValueError(f"mel band edges {low_hz}-{high_hz} Hz do not fit 0-{sample_rate / 2} Hz")

    def to_mel(hz: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)

    bin_mel = to_mel(np.linspace(0.0, sample_rate / 2, num_spectrogram_bins))[:, None]
    edges = np.linspace(to_mel(low_hz), to_mel(high_hz), num_bands + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel - lower) / (centre - lower)
    falling = (upper - bin_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def _periodic_hann(n: int) -> Tensor:
    # torch's periodic Hann is 0.5 - 0.5 cos(2 pi i / n), i < n: the reference's window.
    return torch.hann_window(n, periodic=True, dtype=torch.float64)


_MEL = mel_matrix()
_MEL_ROWS = np.flatnonzero(_MEL.any(axis=1))
_MEL_LO, _MEL_HI = int(_MEL_ROWS[0]), int(_MEL_ROWS[-1]) + 1  # bins 5..239 carry weight
_MEL64 = torch.from_numpy(_MEL[_MEL_LO:_MEL_HI].copy())
_MEL32 = _MEL64.float()
_MEL_L2 = _MEL64.pow(2).sum(0).sqrt().float()  # (64,): random-sign error gain of each band
_WINDOW64 = _periodic_hann(WINDOW_SAMPLES)
_WINDOW32 = _WINDOW64.float()


def _band_blocks(weights: np.ndarray, n_blocks: int = 4) -> list[tuple[int, int, int, int]]:
    """Split the (banded) mel matrix into ``(band0, band1, bin0, bin1)`` blocks.

    Each band only reads a short run of bins, so four dense blocks cover the
    nonzeros with ~4x fewer multiply-adds than the full (bins, 64) product,
    and the same sums.
    """
    blocks = []
    edges = np.linspace(0, weights.shape[1], n_blocks + 1).astype(int)
    for b0, b1 in itertools.pairwise(edges):
        rows = np.flatnonzero(weights[:, b0:b1].any(axis=1))
        blocks.append((int(b0), int(b1), int(rows[0]), int(rows[-1]) + 1))
    return blocks


_MEL_BLOCKS = _band_blocks(_MEL[_MEL_LO:_MEL_HI])
_MEL_BLOCKS32 = [_MEL32[r0:r1, b0:b1].contiguous() for b0, b1, r0, r1 in _MEL_BLOCKS]
_MEL_BLOCKS64 = [_MEL64[r0:r1, b0:b1].contiguous() for b0, b1, r0, r1 in _MEL_BLOCKS]


class _Workspace:
    """Buffers for one chunk of frames in one dtype, reused across chunks."""

    def __init__(self, rows: int, dtype: torch.dtype) -> None:
        self.window = _WINDOW32 if dtype == torch.float32 else _WINDOW64
        self.blocks = _MEL_BLOCKS32 if dtype == torch.float32 else _MEL_BLOCKS64
        self.padded = torch.zeros(rows, FFT_LENGTH, dtype=dtype)  # columns 400.. stay zero
        self.mag = torch.empty(rows, FFT_LENGTH // 2 + 1, dtype=dtype)
        self.mel = torch.empty(rows, NUM_BANDS, dtype=dtype)

    def magnitude_and_mel(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """``|rfft(frames * window, 512)|`` (n, 257) and the mel energies (n, 64), as views of the buffers."""
        n = frames.shape[0]
        torch.mul(frames, self.window, out=self.padded[:n, :WINDOW_SAMPLES])
        spec = torch.fft.rfft(self.padded[:n])  # a fresh output: rfft(out=...) measured 1.6x slower
        mag = self.mag[:n]
        np.abs(spec.numpy(), out=mag.numpy())  # numpy's SIMD complex abs: ~4x torch's
        return mag, _mel_product(mag[:, _MEL_LO:_MEL_HI], self.blocks, self.mel[:n])


def _mel_product(band: Tensor, blocks: list[Tensor], out: Tensor) -> Tensor:
    """``band @ mel matrix`` (``band``: the (n, 235) weighted bins) into ``out`` (n, 64), block by block."""
    for (b0, b1, r0, r1), w in zip(_MEL_BLOCKS, blocks):
        out[:, b0:b1] = band[:, r0:r1] @ w
    return out


_PARSEVAL = math.sqrt(2.0 / FFT_LENGTH)  # ||windowed frame|| <= this * ||rfft bins||
_RANDOM_LIMIT = _FFT32_TOLERANCE / (_FFT32_SAFETY * _MEL_L2)  # (64,): floor limit per unit of mel + 0.01


class _LogMelRunner:
    """Chunked log-mel with the float32 fast path and the float64 fallback; owns the buffers."""

    def __init__(self, chunk: int, precise: bool) -> None:
        self.ws32 = _Workspace(chunk, torch.float32)
        self.near = torch.empty(chunk, NUM_BANDS)
        self.ws64: _Workspace | None = None
        self.chunk = chunk
        self.precise = precise
        # After a chunk that needed float64 throughout (tonal or very clean audio),
        # the next few go straight to float64 instead of paying for both paths;
        # "few" doubles while the audio stays that way (2, 4, ... 32 chunks).
        self.exact_streak = 0
        self.backoff = 1

    def _exact(self, frames: Tensor, out: Tensor) -> None:
        if self.ws64 is None:
            self.ws64 = _Workspace(self.chunk, torch.float64)
        _, mel = self.ws64.magnitude_and_mel(frames.double())
        out.copy_(torch.log(mel.add_(LOG_OFFSET)))

    def run(self, frames: Tensor, out: Tensor) -> None:
        """Log-mel of ``frames`` (n <= chunk, 400) into ``out`` (n, 64)."""
        if self.exact_streak:
            self.exact_streak -= 1
            self._exact(frames, out)
            return
        full, mel = self.ws32.magnitude_and_mel(frames)
        mel.add_(LOG_OFFSET)
        torch.log(mel, out=out)
        if not self.precise:
            return
        # Error estimate per frame and band. Rounding error per bin ~ floor =
        # c * ||windowed frame||. Away from the floor, bin errors have random
        # signs and add in quadrature (``_MEL_L2``): a per-frame limit on floor.
        # Bins at the rounding floor (true magnitude ~0) are biased upwards by
        # it and add coherently (``near``): checked only for frames that have
        # such bins, which noisy audio mostly does not.
        floor = (_FFT32_ERROR * _PARSEVAL) * torch.linalg.vector_norm(full, dim=1)  # (n,)
        risky = floor > (mel * _RANDOM_LIMIT).amin(dim=1)
        band = full[:, _MEL_LO:_MEL_HI]
        check = ((band.amin(dim=1) < 10.0 * floor) & ~risky).nonzero().squeeze(1)
        if check.numel():
            f = floor[check, None]
            near = _mel_product((band[check] < 10.0 * f).float(), _MEL_BLOCKS32, self.near[: check.numel()])
            near.add_(_MEL_L2).mul_(f * _FFT32_SAFETY)
            risky[check] = (near > _FFT32_TOLERANCE * mel[check]).any(dim=1)
        redo = risky.nonzero().squeeze(1)
        if redo.numel() > frames.shape[0] // 4:  # mostly tonal/clean: one contiguous float64 pass
            self._exact(frames, out)
            self.backoff = min(2 * self.backoff, 32)
            self.exact_streak = self.backoff
            return
        self.backoff = 1
        if redo.numel():
            fixed = torch.empty(redo.numel(), NUM_BANDS)
            self._exact(frames[redo], fixed)
            out[redo] = fixed


def log_mel(waveform: Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE, *, precise: bool = True) -> Tensor:
    """Log-mel spectrogram of a mono waveform, ``(frames, 64)`` float32, on CPU.

    Frame j covers samples [160 j, 160 j + 400) of the 16 kHz signal (centre at
    0.0125 + 0.010 j s); incomplete frames at the end are dropped, so a track
    shorter than 400 samples gives zero frames. Other sample rates are resampled
    to 16 kHz first.

    Precision: the reference computes in float64. Here every frame first goes
    through a float32 FFT (fast) plus an estimate of its rounding error; frames
    whose estimate could exceed 5e-5 are recomputed in float64. That happens
    where a loud narrow-band sound sits next to near-silent bands (pure tones,
    chirps, music, band-limited or very clean audio): there float32 rounding
    (~4e-7 of the frame's level per bin) becomes up to ~1e-3 after
    ``log(x + 0.01)``. With the check the max abs difference to the reference
    stays ~5e-6 for any content; its cost depends on the content (noisy
    speech: ~2x the float32 path; tonal audio: the float64 path, ~3x; see
    benchmarks/bench_logmel.py and BENCHMARKS.md, 2b).

    ``precise=False`` skips the check: pure float32, ~2x faster on noisy speech and
    ~3x on clean or tonal audio, max abs difference ~2e-5 on noisy audio and up to
    ~1e-3 on pure tones
    (for scale: the feature cache stores float16, whose step near -4.6 is 4e-3).
    """
    x = torch.as_tensor(waveform)
    if x.dim() != 1:
        raise ValueError(f"log_mel expects a 1-D mono waveform, got shape {tuple(x.shape)}")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    if sample_rate != SAMPLE_RATE:
        import torchaudio.functional as AF

        x = AF.resample(x, int(sample_rate), SAMPLE_RATE)
    n_frames = 0 if x.numel() < WINDOW_SAMPLES else 1 + (x.numel() - WINDOW_SAMPLES) // HOP_SAMPLES
    out = torch.empty(n_frames, NUM_BANDS, dtype=torch.float32)
    if n_frames == 0:
        return out
    frames = x.contiguous().unfold(0, WINDOW_SAMPLES, HOP_SAMPLES)  # a view, no copy
    runner = _LogMelRunner(min(_LOG_MEL_CHUNK, n_frames), precise)
    with torch.no_grad():
        for s in range(0, n_frames, _LOG_MEL_CHUNK):
            runner.run(frames[s : s + _LOG_MEL_CHUNK], out[s : s + _LOG_MEL_CHUNK])
    return out


# -------------------------------------------------------------- on the frame grid ---


def log_mel_steps(n_frames: int) -> align.Steps:
    """Where ``n_frames`` log-mel frames sit in time: centres 0.0125 + 0.010 j s."""
    return align.Steps.regular(LOG_MEL_CENTRE_OFFSET_S, LOG_MEL_HOP_S, n_frames)


def track_log_mel(log_mel_frames: Tensor | np.ndarray) -> Tensor:
    """A track's ``(frames, 64)`` log-mel, checked; a track too short for one STFT frame
    becomes one row of digital silence (``SILENCE_LOG_MEL``).

    Why one row rather than none: every consumer (patches, pooling) then works by the same
    edge-padding index arithmetic, and a too-short track reads as silence, not an error.
    """
    lm = torch.as_tensor(log_mel_frames)
    if lm.dim() != 2 or lm.shape[1] != NUM_BANDS:
        raise ValueError(f"expected a (frames, {NUM_BANDS}) log-mel, got shape {tuple(lm.shape)}")
    if lm.shape[0] == 0:
        return torch.full((1, NUM_BANDS), SILENCE_LOG_MEL, dtype=lm.dtype)
    return lm


def pooled_log_mel(log_mel_frames: Tensor, frame_times: np.ndarray) -> Tensor:
    """Mean log-mel over each video frame's span, ``(T, 64)`` float32 (:func:`align.span_mean`)."""
    lm = track_log_mel(log_mel_frames)
    return align.span_mean(lm, log_mel_steps(lm.shape[0]), frame_times)


class LogMelFrontend:
    """The whole-track log-mel, computed once per track in a decoding worker (a track-pass hook).

    Extractors whose ``frontend`` has the same ``key`` share one computation per track.
    """

    key = "vggish-log-mel"
    sample_rate = SAMPLE_RATE

    def __call__(self, wave: np.ndarray | Tensor) -> Tensor:
        return track_log_mel(log_mel(wave))


LOG_MEL = LogMelFrontend()


class LogMelExtractor:
    """``logmel``: the 64 log-mel bands averaged over each video frame's span."""

    kind: Literal["track"] = "track"
    name = "logmel"
    dim = NUM_BANDS
    sample_rate = SAMPLE_RATE
    frontend = LOG_MEL

    def provenance(self) -> dict:
        return {
            "model": "logmel",
            "frontend": frontend_params(),
            "pooling": align.SPAN_MEAN,
            "timing": align.GRID_TIMING,
        }

    def to(self, device: torch.device) -> LogMelExtractor:
        return self  # CPU work in the decoding workers; nothing to move

    def __call__(self, wave: Tensor, frame_times: np.ndarray) -> Tensor:
        return self.from_frontend(self.frontend(wave), frame_times)

    def from_frontend(self, lm: Tensor, frame_times: np.ndarray) -> Tensor:
        return pooled_log_mel(lm, frame_times)


def _check(request: BuildRequest) -> None:
    if request.weights is not None:
        raise VafusionError(f"--weights {request.name}={request.weights}: logmel has no weights; drop the option")


def _build(request: BuildRequest) -> LogMelExtractor:
    _check(request)
    return LogMelExtractor()


FAMILY = Family(key="logmel", names=lambda: ("logmel",), build=_build, check=_check)
