"""Load the sound track of a video (or an audio file) as mono 16 kHz float32.

Everything downstream (log-mel, VGGish, the frame alignment in
:mod:`vafusion.extract.align`) assumes that sample 0 of the returned waveform is
the instant t = 0 of the video timeline, the instant of frame 1. Containers do
not guarantee that on their own: an audio stream may start late (positive start
pts: we left-pad with silence) or carry encoder priming that the decoder did not
strip (negative pts: we drop those samples), and a muxer may shift every stream
so that frame 1 is shown at t > 0 (we anchor at the first video frame by
default). Getting this wrong shifts every audio feature against the labels by a
constant, which no model can learn away.

What FFmpeg already does for us: AAC priming recorded in an mp4/mov edit list
(the usual 1024 samples) is dropped by the decoder, whose first frame then has
pts 0; a positive start (audio beginning later than video) is kept as the first
frame's pts.

Decoding uses PyAV (the FFmpeg libraries), resampling uses
``torchaudio.functional.resample``; plain audio files (.wav, .flac, ...) are read
with soundfile. torchaudio itself no longer decodes files (2.9).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vafusion.errors import VafusionError

if TYPE_CHECKING:
    import av

SAMPLE_RATE = 16000
"""The sample rate of every waveform this module returns (the VGGish rate)."""

SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".aif", ".aiff"})
"""Suffixes read with soundfile first; anything else goes through PyAV."""

# Decoded frames are converted and down-mixed in blocks of about this many
# samples per channel: one numpy call per block instead of per 1024-sample frame
# (fast), without holding the whole multi-channel track in memory (lean).
_BLOCK_SAMPLES = 1 << 20

_INT_SCALE = {  # full scale of signed integer samples (u8 is offset binary, handled apart)
    np.dtype(np.int16): 1.0 / 32768.0,
    np.dtype(np.int32): 1.0 / 2147483648.0,
    np.dtype(np.int64): 1.0 / 9223372036854775808.0,
}


def load_audio(path: Path | str, *, origin_s: float | None = None) -> np.ndarray | None:
    """Return the mono 16 kHz float32 waveform of ``path``, or None without audio.

    Args:
        path: a video container (mp4, avi, mkv, ...) or an audio file.
        origin_s: the container time in seconds that becomes sample 0. ``None``
            (default) means the first video stream's start time, i.e. the instant
            frame 1 is shown (0 for audio-only files and for almost every mp4/avi;
            not 0 e.g. in an mkv whose muxer shifted all streams to hide negative
            audio timestamps). Pass 0.0 to anchor at pts 0 instead.

    Returns:
        ``(n,)`` float32 in about [-1, 1], channels averaged, sample 0 at the
        origin; None when the container has no audio stream (the caller warns
        and writes masked rows).

    Raises:
        VafusionError: the file is missing, corrupt or cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise VafusionError(f"{path}: no such file; check the corpus path")
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        try:
            return _load_with_soundfile(path)
        except VafusionError:
            # libsndfile cannot read every codec a .wav may wrap (e.g. MP3 in
            # WAV); FFmpeg usually can, so give it a chance before failing.
            pass
    return _load_with_av(path, origin_s)


def resample(waveform: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D float32 waveform with torchaudio's band-limited sinc filter."""
    if orig_rate == new_rate or waveform.size == 0:
        return np.ascontiguousarray(waveform, dtype=np.float32)
    import torch
    import torchaudio.functional as AF

    x = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    return AF.resample(x, int(orig_rate), int(new_rate)).numpy()


def _load_with_soundfile(path: Path) -> np.ndarray:
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise VafusionError(f"{path}: cannot read audio ({exc}); re-encode it or check the file") from exc
    return resample(_downmix(data.reshape(-1), data.shape[1]), int(rate))


_SAMPLE_DTYPES: dict[str, np.dtype] = {
    "u8": np.dtype(np.uint8),
    "s16": np.dtype(np.int16),
    "s32": np.dtype(np.int32),
    "s64": np.dtype(np.int64),
    "flt": np.dtype(np.float32),
    "dbl": np.dtype(np.float64),
}


def _to_float(raw: np.ndarray) -> np.ndarray:
    """Integer or float samples -> float32 in [-1, 1] (full scale of the integer type)."""
    if raw.dtype == np.uint8:
        return (raw.astype(np.float32) - 128.0) * np.float32(1.0 / 128.0)
    if raw.dtype in _INT_SCALE:
        return raw.astype(np.float32) * np.float32(_INT_SCALE[raw.dtype])
    return raw.astype(np.float32, copy=False)


def _downmix(interleaved: np.ndarray, channels: int) -> np.ndarray:
    """``(samples * channels,)`` interleaved float32 -> mono mean, via one BLAS gemv.

    (``x.reshape(-1, C).mean(axis=1)`` is a strided reduction, ~10x slower.)
    """
    if channels == 1:
        return np.ascontiguousarray(interleaved, dtype=np.float32)
    weights = np.full(channels, 1.0 / channels, dtype=np.float32)
    return interleaved.reshape(-1, channels) @ weights


def _to_mono(frames: list[list[np.ndarray]], planar: bool, channels: int) -> np.ndarray:
    """Convert buffered frames of one sample format/layout to mono float32.

    Each entry of ``frames`` holds one array per plane: ``channels`` planes of
    ``samples`` values when planar, one plane of interleaved values when packed.
    """
    if planar:
        mono = _to_float(np.concatenate([f[0] for f in frames]))
        for c in range(1, channels):
            mono += _to_float(np.concatenate([f[c] for f in frames]))
        if channels > 1:
            mono *= np.float32(1.0 / channels)
        return mono
    return _downmix(_to_float(np.concatenate([f[0] for f in frames])), channels)


class _MonoBuffer:
    """Decoded frames in, one mono float32 waveform out.

    Frames are kept as zero-copy views of their planes and converted in blocks of
    ``_BLOCK_SAMPLES`` (see there), and whenever the sample format, planarity or
    channel count changes, since one block is converted with one layout.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.chunks: list[np.ndarray] = []
        self.pending: list[list[np.ndarray]] = []  # frames not yet converted, one array per plane
        self.pending_samples = 0
        self.key: tuple[str, bool, int] | None = None  # (format name, planar, channels)
        self.dtype: np.dtype | None = None

    def add(self, frame: av.AudioFrame) -> None:
        """Buffer one decoded ``av.AudioFrame`` with at least one sample."""
        n = frame.samples
        fmt = frame.format
        channels = len(frame.layout.channels)
        key = (fmt.name, fmt.is_planar, channels)
        if key != self.key:
            self._convert_pending()
            self.key = key
            self.dtype = _SAMPLE_DTYPES.get(fmt.name.rstrip("p"))
        if self.dtype is None:
            raise VafusionError(f"{self.path}: unsupported audio sample format {fmt.name}; re-encode the audio")
        # Zero-copy views of the frame's planes (buffers may be padded,
        # hence count); ~3x cheaper than frame.to_ndarray() per frame.
        if fmt.is_planar:
            self.pending.append([np.frombuffer(memoryview(p), self.dtype, count=n) for p in frame.planes[:channels]])
        else:
            self.pending.append([np.frombuffer(memoryview(frame.planes[0]), self.dtype, count=n * channels)])
        self.pending_samples += n
        if self.pending_samples >= _BLOCK_SAMPLES:
            self._convert_pending()

    def _convert_pending(self) -> None:
        if self.pending:
            assert self.key is not None  # set with the first frame buffered
            self.chunks.append(_to_mono(self.pending, *self.key[1:]))
            self.pending, self.pending_samples = [], 0

    def waveform(self) -> np.ndarray:
        """All samples added so far (at least one frame must have been added)."""
        self._convert_pending()
        return np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]


def _first_video_start(container: av.container.InputContainer) -> float:
    """The instant frame 1 is shown, in seconds (0 without a video stream or start time)."""
    if container.streams.video:
        v = container.streams.video[0]
        if v.start_time is not None and v.time_base is not None:
            return float(v.start_time * v.time_base)
    return 0.0


def _decode_mono(container: av.container.InputContainer, path: Path) -> tuple[np.ndarray, int, float] | None:
    """Decode the first audio stream: (mono waveform, its rate, the time of its first sample
    in seconds), or None when the stream has not a single decodable sample."""
    import av

    buffer = _MonoBuffer(path)
    rate = None
    start_s = 0.0
    try:
        for frame in container.decode(container.streams.audio[0]):
            if frame.samples == 0:
                continue
            if rate is None:
                rate = frame.sample_rate
                # Decoder-side time of the first sample kept. FFmpeg has
                # already dropped AAC priming signalled by the mp4 edit list
                # (first frame pts 0); an un-signalled offset shows up here.
                start_s = float(frame.time) if frame.time is not None else 0.0
            elif frame.sample_rate != rate:
                raise VafusionError(
                    f"{path}: audio sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz); "
                    "re-encode the audio track at one rate"
                )
            buffer.add(frame)
    except av.FFmpegError as exc:
        raise VafusionError(f"{path}: audio stream cannot be decoded ({exc}); re-encode or drop the file") from exc
    if rate is None:
        return None
    return buffer.waveform(), rate, start_s


def _shift(wave: np.ndarray, seconds: float, rate: int) -> np.ndarray:
    """Delay ``wave`` by ``seconds`` (left-pad with silence) or, when negative, drop its first samples."""
    offset = int(round(seconds * rate))
    if offset > 0:
        return np.concatenate([np.zeros(offset, dtype=np.float32), wave])
    if offset < 0:
        return wave[-offset:]
    return wave


def _load_with_av(path: Path, origin_s: float | None) -> np.ndarray | None:
    """:func:`load_audio` through FFmpeg: any container or codec it knows, sample 0 at ``origin_s``."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise VafusionError(f"{path}: cannot open as audio or video ({exc}); check the file is not corrupt") from exc
    with container:
        if not container.streams.audio:
            return None
        if origin_s is None:
            origin_s = _first_video_start(container)
        decoded = _decode_mono(container, path)
    if decoded is None:  # an audio stream without a single decodable sample
        return np.zeros(0, dtype=np.float32)
    wave, rate, start_s = decoded
    # Put sample 0 at origin_s, working at the source rate (finer than 16 kHz).
    return resample(_shift(wave, start_s - origin_s, rate), rate)
