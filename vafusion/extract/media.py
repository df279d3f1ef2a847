"""Container facts about a video file (frame rate, frame count, frame instants, audio) via PyAV.

The frame grid of every id comes from here, so the numbers must be exact and cheap: the count
is read from the container header when it has one, otherwise counted by demuxing packets (no
decoding), which is still fast for ~600 files.

Time base: row k of every feature is video frame k (the annotation's row k), and its audio is
taken at the instant frame k is shown. For a constant-rate video that instant is
(k - 1) / fps. The frames' own timestamps decide whether the video is one (:func:`frame_timing`):
read from the container's index (mp4, mov, avi: no data read) or, where there is none or it
is irregular, from the packets (demuxed, not decoded). A stream whose timestamps follow
another rate than the container declares gets that rate (with a warning); a variable-rate
stream keeps every frame's instant (``VideoInfo.frame_times``, recorded in corpus.h5), so a
sound at frame 45 lands on row 45, never where a constant rate would put it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vafusion.errors import VafusionError

GRID_TOLERANCE = 0.25
"""Frames by which a timestamp may differ from the constant-rate grid (rounding of a coarse time base,
jitter) before the grid counts as wrong for the video."""


@dataclass(frozen=True, eq=False)
class VideoInfo:
    """What the container says: ``fps`` (the frame rate), frames, audio, duration; ``frame_times``
    (seconds from frame 1) only for a variable-frame-rate stream; ``timing_note``: what discovery
    should warn about the time base ("" when the declared constant rate holds)."""

    fps: float
    n_frames: int
    has_audio: bool
    duration_s: float
    frame_times: np.ndarray | None = field(default=None, repr=False)
    timing_note: str = ""


def _rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    """The stream's frame rate: average_rate, else FFmpeg's guess, else the base rate."""
    for name in ("average_rate", "guessed_rate", "base_rate"):
        rate = getattr(stream, name, None)
        if rate:  # None and 0 both mean unknown
            return Fraction(rate)
    return None


def _index_times(stream: av.video.stream.VideoStream, n_frames: int) -> np.ndarray | None:
    """The timestamps (stream time base) of the container's index, when it lists every frame (mp4, avi)."""
    try:
        entries = stream.index_entries
        if n_frames <= 0 or len(entries) != n_frames:
            return None
        return np.sort(np.array([e.timestamp for e in entries], dtype=np.int64))
    except (AttributeError, TypeError, ValueError):  # a PyAV without index access: demux instead
        return None


def _packet_times(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> tuple[int, np.ndarray | None]:
    """The number of video packets (flush packets of size 0 carry no frame) and their presentation
    timestamps (dts where a packet has no pts), sorted; None where some have neither. No decoding."""
    stamps = [p.pts if p.pts is not None else p.dts for p in container.demux(stream) if p.size > 0]
    if any(t is None for t in stamps):
        return len(stamps), None
    return len(stamps), np.sort(np.array(stamps, dtype=np.int64))


def _timing(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, declared: Fraction
) -> tuple[int, Fraction, np.ndarray | None, str]:
    """``(n_frames, rate, frame_times, note)``: the index's timestamps where they list every frame on a
    regular grid (nothing read), else the packets' (see :func:`frame_timing`)."""
    n_frames = int(stream.frames or 0)
    tb = float(stream.time_base or 0)
    stamps = _index_times(stream, n_frames)
    if stamps is not None and tb and not frame_timing(stamps * tb, declared)[2]:
        return n_frames, declared, None, ""
    count, stamps = _packet_times(container, stream)
    n_frames = count or n_frames  # the packets that hold a frame (an avi header may count empty ones)
    if stamps is None or not tb:
        return n_frames, declared, None, ""
    return (n_frames, *frame_timing(stamps * tb, declared))


def _deviation(times: np.ndarray, rate: float) -> float:
    """Largest distance, in frames, of ``times`` (seconds from frame 1) from the grid (k - 1) / rate."""
    return float(np.abs(times * rate - np.arange(len(times))).max())


def frame_timing(times: np.ndarray, declared: Fraction) -> tuple[Fraction, np.ndarray | None, str]:
    """``(rate, frame_times or None, note)`` from the frames' instants (seconds, sorted) and the declared rate.

    The declared constant rate when every instant is within :data:`GRID_TOLERANCE` frames of
    its grid; else the rate the instants follow (their median interval) if they are regular,
    with a note; else the declared rate and every instant (variable frame rate), with a note.
    """
    t = np.asarray(times, dtype=np.float64) - float(times[0]) if len(times) else np.zeros(0)
    if len(t) < 2 or _deviation(t, float(declared)) <= GRID_TOLERANCE:
        return declared, None, ""
    step = float(np.median(np.diff(t)))
    if step > 0:
        rate = Fraction(1 / step).limit_denominator(1001)
        if _deviation(t, float(rate)) <= GRID_TOLERANCE:
            return (
                rate,
                None,
                (
                    f"the container declares {float(declared):g} fps, but its frames are "
                    f"{float(rate):g} fps apart; using {float(rate):g} fps"
                ),
            )
    gaps = np.diff(t) * 1000
    return (
        declared,
        t,
        (
            f"variable frame rate (frames {gaps.min():.1f} to {gaps.max():.1f} ms apart; "
            f"{_deviation(t, float(declared)):.1f} frames off a constant {float(declared):g} fps): "
            f"each frame's audio is taken at its own timestamp"
        ),
    )


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path`` once and read fps, frame count, frame timing, audio presence and duration.

    ``n_frames`` is the container's frame count when it records one (mp4, avi) and the
    number of demuxed video packets otherwise (mkv, webm): exact without decoding. The
    timing (see :func:`frame_timing`) comes from the container's index where it lists every
    frame and is regular, else from the demuxed packets.
    Raises VafusionError naming the file when it cannot be opened or has no video stream.
    """
    path = Path(path)
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise VafusionError(f"{path}: no video stream in the file; replace it with the original video")
            stream = container.streams.video[0]
            rate = _rate(stream)
            if rate is None or rate <= 0:
                raise VafusionError(
                    f"{path}: the container gives no frame rate; re-mux the video (ffmpeg -i IN -c copy OUT.mp4)"
                )
            n_frames, rate, frame_times, note = _timing(container, stream, rate)
            if container.duration:
                duration = container.duration / av.time_base
            elif stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = n_frames / float(rate)
            has_audio = len(container.streams.audio) > 0
    except VafusionError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VafusionError(f"{path}: cannot read the video ({reason}); check or replace the file") from e
    if n_frames <= 0:
        raise VafusionError(f"{path}: the video stream holds no frames; check or replace the file")
    return VideoInfo(
        fps=float(rate),
        n_frames=n_frames,
        has_audio=has_audio,
        duration_s=float(duration),
        frame_times=frame_times,
        timing_note=note,
    )


def video_frames(path: str | Path, batch_size: int) -> Iterator[np.ndarray]:
    """The decoded frames of the first video stream, in order, ``batch_size`` at a time: (n, H, W, 3) uint8 RGB.

    Every frame comes at the first frame's size (a stream that changes size mid-way is rescaled), so
    frame k of the k-th yield is frame k of the video: the Aff-Wild2 frame numbering. A file that
    fails while decoding is one VafusionError naming it.
    """
    path = Path(path)
    batch: list[np.ndarray] = []
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise VafusionError(f"{path}: no video stream in the file; replace it with the original video")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            size: tuple[int, int] | None = None
            for frame in container.decode(stream):
                size = size or (frame.width, frame.height)
                batch.append(frame.to_ndarray(width=size[0], height=size[1], format="rgb24"))
                if len(batch) == batch_size:
                    yield np.stack(batch)
                    batch = []
    except VafusionError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VafusionError(f"{path}: cannot decode the video ({reason}); check or replace the file") from None
    if batch:
        yield np.stack(batch)
