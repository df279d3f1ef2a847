"""``make_alignment_corpus``: one video whose frames, beeps and labels name their own frame.

Why: the extractors' frame alignment (frame k <-> instant (k - 1) / fps, or frame k's own
timestamp in a variable-frame-rate video) can only be tested against a corpus where the
answer is known exactly: a beep centred on a frame's instant, a white frame among grey
ones, a label ramp whose value gives the frame number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vafusion.errors import VafusionError
from vafusion.synth.layout import (
    SynthCorpus,
    SynthVideo,
    annotation_path,
    crop_dir,
    crop_name,
    prepare_root,
    video_path,
    write_annotation,
    write_test_list,
)
from vafusion.synth.media import Mp4Writer, save_crop
from vafusion.synth.plan import exact_fps, frame_shape, quantise
from vafusion.synth.speech import speech_like

BEEP_HZ = 1000.0
"""Frequency of the alignment corpus' beeps."""
BEEP_SECONDS = 0.040
"""Length of one alignment beep (Hann-windowed tone burst centred on its instant)."""

_NAME = "align"


def _check_arguments(
    fps: float,
    n_frames: int,
    beep_frames: Sequence[int],
    marker_frames: Sequence[int],
    frame_times: Sequence[float] | None,
    speech_spans: Sequence[tuple[int, int]] = (),
) -> None:
    """Refuse frames outside the video and instants that do not start at 0 and increase."""
    if n_frames < 2 or fps <= 0:
        raise VafusionError(
            f"make_alignment_corpus: need n_frames >= 2 and fps > 0, got {n_frames}, {fps}; fix the arguments"
        )
    if any(not 1 <= first <= last <= n_frames for first, last in speech_spans):
        raise VafusionError(
            f"speech_spans={list(speech_spans)}: give (first, last) frames with 1 <= first <= last <= {n_frames}"
        )
    for name, frames in (("beep_frames", beep_frames), ("marker_frames", marker_frames)):
        bad = [k for k in frames if not 1 <= k <= n_frames]
        if bad:
            raise VafusionError(f"{name}={bad}: frames are 1-based and must lie in [1, {n_frames}]; fix the list")
    if frame_times is not None and (
        len(frame_times) != n_frames or frame_times[0] != 0 or not (np.diff(frame_times) > 0).all()
    ):
        raise VafusionError(f"make_alignment_corpus: frame_times must be {n_frames} increasing instants from 0")


def _beeps(instants: np.ndarray, beep_frames: Sequence[int], fps: float, sample_rate: int) -> np.ndarray:
    """Digital silence through the last frame's end, with a symmetric Hann-windowed burst
    centred on the instant of each of ``beep_frames`` (cut where it runs past either end)."""
    n_samples = int(np.ceil((instants[-1] + 1 / fps) * sample_rate))
    audio = np.zeros(n_samples, dtype=np.float32)
    length = int(round(BEEP_SECONDS * sample_rate))
    offsets = np.arange(length) - (length - 1) / 2.0  # symmetric around the centre sample
    burst = 0.5 * np.sin(2 * np.pi * BEEP_HZ * offsets / sample_rate) * np.hanning(length)
    for k in beep_frames:
        centre = instants[k - 1] * sample_rate
        idx = np.round(centre + offsets).astype(int)
        ok = (idx >= 0) & (idx < n_samples)
        audio[idx[ok]] += burst[ok].astype(np.float32)
    return audio


def _speech(audio: np.ndarray, instants: np.ndarray, spans: Sequence[tuple[int, int]], fps: float, rate: int) -> None:
    """Add speech-like sound (:func:`.speech.speech_like`) from the instant of each span's first frame
    to the end of its last (the instant after it), a different utterance per span."""
    for i, (first, last) in enumerate(spans):
        lo = int(round(instants[first - 1] * rate))
        hi = min(len(audio), int(round((instants[last - 1] + 1 / fps) * rate)))
        audio[lo:hi] += speech_like(hi - lo, rate, seed=i)


def _write_media(
    root: Path,
    markers: np.ndarray,
    fps: float,
    audio: np.ndarray,
    sample_rate: int,
    crop_size: int,
    frame_size: int,
    frame_times: Sequence[float] | None,
) -> None:
    """Crops and video frames: plain grey (128), white (255) on marker frames."""
    h, w = frame_shape(frame_size)
    directory = crop_dir(root, _NAME)
    directory.mkdir(parents=True, exist_ok=True)
    grey_crop = np.full((crop_size, crop_size, 3), 128, np.uint8)
    white_crop = np.full((crop_size, crop_size, 3), 255, np.uint8)
    writer = Mp4Writer(video_path(root, _NAME), fps, h, w, audio, sample_rate, frame_times)
    try:
        for k, marker in enumerate(markers, start=1):
            save_crop(directory / crop_name(k), white_crop if marker else grey_crop)
            writer.add_frames(np.full((1, h, w, 3), 255 if marker else 128, np.uint8))
    finally:
        writer.close()


def make_alignment_corpus(
    root: str | Path,
    *,
    fps: float = 25.0,
    n_frames: int = 75,
    beep_frames: Sequence[int],
    marker_frames: Sequence[int],
    sample_rate: int = 16000,
    crop_size: int = 64,
    frame_size: int = 64,
    overwrite: bool = False,
    frame_times: Sequence[float] | None = None,
    speech_spans: Sequence[tuple[int, int]] = (),
) -> SynthCorpus:
    """One labelled train video for frame-alignment tests of the extractors.

    The audio is digital silence except Hann-windowed 1 kHz beeps of 40 ms centred on
    the instants ``t = (k - 1) / fps`` of the 1-based ``beep_frames`` (a beep on frame 1
    is cut in half by t = 0: prefer k >= 2). ``frame_times`` (seconds, increasing, from 0):
    a variable-frame-rate video instead, frame k shown (and its beep centred) at
    ``frame_times[k - 1]``; ``fps`` is then only the rate the stream declares. Crops and video frames are plain grey
    (128) except the ``marker_frames``, which are white (255). Labels are a ramp that
    names the frame: valence of frame k is ``-1 + 2 (k - 1) / (n_frames - 1)``,
    arousal its negative, so label alignment can be checked too. The id is ``align``
    (file ``videos/align.mp4``); no crops or labels are missing. ``speech_spans``: 1-based
    ``(first, last)`` frames during which the track holds speech-like sound that a voice activity
    detector takes for speech (:mod:`vafusion.synth.speech`); elsewhere it stays silent.
    """
    _check_arguments(fps, n_frames, beep_frames, marker_frames, frame_times, speech_spans)
    instants = np.arange(n_frames) / fps if frame_times is None else np.asarray(frame_times, dtype=np.float64)
    root = prepare_root(root, overwrite)
    audio = _beeps(instants, beep_frames, fps, sample_rate)
    _speech(audio, instants, speech_spans, fps, sample_rate)
    markers = np.zeros(n_frames, dtype=bool)
    markers[np.asarray(list(marker_frames), dtype=int) - 1] = True
    _write_media(root, markers, fps, audio, sample_rate, crop_size, frame_size, frame_times)

    valence = quantise(-1.0 + 2.0 * np.arange(n_frames) / (n_frames - 1))
    arousal = quantise(-valence)
    no = np.zeros(n_frames, dtype=bool)
    write_annotation(annotation_path(root, "train", _NAME), valence, arousal, no)
    video = SynthVideo(
        id=_NAME,
        video_name=_NAME,
        fps=exact_fps(fps),
        n_frames=n_frames,
        partition="train",
        valence=valence,
        arousal=arousal,
        label_missing=no,
        crop_missing=no.copy(),
        has_audio=True,
        speaks=True,
    )
    return SynthCorpus(root=root, videos=[video], test_list=write_test_list(root, []))
