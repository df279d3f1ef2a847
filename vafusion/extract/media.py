"""Container facts about a video file (frame rate, frame count, audio present) via PyAV.

The frame grid of every id (t = (k - 1) / fps) comes from here, so the numbers must be
exact and cheap: the count is read from the container header when it has one, otherwise
counted by demuxing packets (no decoding), which is still fast for ~600 files.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from vafusion.errors import VafusionError


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: ``fps`` (float of the average frame rate), frames, audio, duration."""

    fps: float
    n_frames: int
    has_audio: bool
    duration_s: float


def _rate(stream: "av.video.stream.VideoStream") -> Fraction | None:
    """The stream's frame rate: average_rate, else FFmpeg's guess, else the base rate."""
    for name in ("average_rate", "guessed_rate", "base_rate"):
        rate = getattr(stream, name, None)
        if rate:  # None and 0 both mean unknown
            return Fraction(rate)
    return None


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path`` once and read fps, frame count, audio presence and duration.

    ``n_frames`` is the container's frame count when it records one (mp4, avi) and the
    number of demuxed video packets otherwise (mkv, webm): exact without decoding.
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
                raise VafusionError(f"{path}: the container gives no frame rate; re-mux the video (ffmpeg -i IN -c copy OUT.mp4)")
            n_frames = int(stream.frames or 0)
            if n_frames <= 0:
                # Flush packets (size 0) carry no frame.
                n_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
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
        raise VafusionError(f"{path}: cannot read the video ({reason}); check or replace the file") from None
    if n_frames <= 0:
        raise VafusionError(f"{path}: the video stream holds no frames; check or replace the file")
    return VideoInfo(fps=float(rate), n_frames=n_frames, has_audio=has_audio, duration_s=float(duration))
