"""Writing generated pixels and samples as media files: JPEG crops and an mp4 with audio.

Why apart: encoding is where the corpus meets PyAV and FFmpeg, whose encoders differ
between builds. Keeping them here (imported lazily, so ``import vafusion.synth`` never
needs av) lets the drawing and voice code stay pure numpy.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from PIL import Image

from vafusion.errors import VafusionError
from vafusion.synth.layout import crop_name

if TYPE_CHECKING:
    from av import AudioStream, VideoStream

JPEG_QUALITY = 90
AUDIO_FRAME = 1024
"""Samples per AudioFrame handed to the encoder (AAC's frame size)."""


@functools.cache
def pick_encoder(candidates: tuple[str, ...]) -> str:
    """First codec in ``candidates`` that this PyAV build can encode with."""
    import av

    for name in candidates:
        try:
            av.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises different types across versions
            continue
        return name
    raise VafusionError(
        f"PyAV: none of the encoders {list(candidates)} is available; install a PyAV wheel with FFmpeg encoders"
    )


def video_codec() -> str:
    """libx264, else mpeg4 on PyAV builds without it."""
    return pick_encoder(("libx264", "mpeg4"))


def audio_codec() -> str:
    """AAC like real videos, else ALAC (lossless) on PyAV builds without it."""
    return pick_encoder(("aac", "alac"))


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and clip float pixels to the 8-bit values an encoder takes."""
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def save_crop(path: Path, crop: np.ndarray) -> None:
    """One JPEG crop at the corpus' fixed quality (PIL's encoder is deterministic)."""
    Image.fromarray(crop).save(path, quality=JPEG_QUALITY)


def write_crops(directory: Path, first_frame: int, crops: np.ndarray, missing: np.ndarray) -> None:
    """Write ``crops[i]`` as the crop of frame ``first_frame + i`` (1-based) unless missing."""
    for i in range(crops.shape[0]):
        if not missing[i]:
            save_crop(directory / crop_name(first_frame + i), crops[i])


class BackgroundWriter:
    """Runs crop writing (JPEG encoding + file creation, which release the GIL) on one thread,
    so it overlaps with drawing and video encoding. At most ``max_pending`` jobs wait, which
    bounds memory; the first error is re-raised in the caller's thread."""

    def __init__(self, max_pending: int = 4) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-jpeg")
        self._pending: list[Any] = []
        self._max = max_pending

    def submit(self, fn: Any, *args: Any) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._max:
            self._pending.pop(0).result()

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pending = []
            self._pool.shutdown(wait=True)


class Mp4Writer:
    """Streams video frames (and the whole audio track, interleaved by time) into an mp4.

    Audio is muxed up to each frame's end as frames arrive, so the container interleaves
    the streams the way a real recording does and readers never need a long look-ahead.
    """

    def __init__(
        self,
        path: Path,
        fps: float,
        height: int,
        width: int,
        audio: np.ndarray | None,
        sample_rate: int,
        frame_times: Sequence[float] | None = None,
    ):
        import av

        self._av = av
        self.container = av.open(str(path), mode="w", format="mp4")
        self.fps_rate = Fraction(fps).limit_denominator(1001)
        self._add_video_stream(height, width, frame_times)
        self.audio_data = audio
        self.audio: AudioStream | None = None
        self.audio_pos = 0
        self.sample_rate = sample_rate
        if audio is not None:
            # add_stream's return type follows the codec's name only for names PyAV's stubs list
            self.audio = stream = cast("AudioStream", self.container.add_stream(audio_codec(), rate=sample_rate))
            stream.layout = "mono"
            if stream.codec_context.name == "aac":
                stream.bit_rate = 48_000
        self.n_written = 0

    def _add_video_stream(self, height: int, width: int, frame_times: Sequence[float] | None) -> None:
        """Frame k at pts k / rate, or (variable frame rate) at ``frame_times[k]`` on a 90 kHz clock."""
        rate = self.fps_rate
        codec = video_codec()
        self.video = cast("VideoStream", self.container.add_stream(codec, rate=rate))  # as for the audio
        self.video.width = width
        self.video.height = height
        self.video.pix_fmt = "yuv420p"
        self.time_base = 1 / rate if frame_times is None else Fraction(1, 90000)
        self.frame_pts = None if frame_times is None else [round(t * 90000) for t in frame_times]
        self.video.codec_context.time_base = self.time_base
        self.video.thread_count = 1
        if codec == "libx264":
            # ultrafast has no B-frames: pts == dts, first frame at pts 0, tiny and quick.
            self.video.options = {"preset": "ultrafast", "crf": "20"}
        else:
            self.video.bit_rate = 400_000
            self.video.options = {"bf": "0"}

    def add_frames(self, frames: np.ndarray) -> None:
        """Encode (n, H, W, 3) uint8 frames, then the audio up to the last one's end."""
        if len(frames) == 0:
            return
        av = self._av
        for img in frames:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = self.n_written if self.frame_pts is None else self.frame_pts[self.n_written]
            frame.time_base = self.time_base
            for packet in self.video.encode(frame):
                self.container.mux(packet)
            self.n_written += 1
        self._audio_until(
            float((frame.pts + 1) * self.time_base) if self.frame_pts else float(self.n_written / self.fps_rate)
        )

    def _audio_until(self, seconds: float | None) -> None:
        """Encode whole audio frames up to ``seconds`` (None: the rest of the track)."""
        if self.audio is None or self.audio_data is None:
            return
        av = self._av
        data = self.audio_data
        stop = data.size if seconds is None else min(data.size, int(np.ceil(seconds * self.sample_rate)))
        audio_fmt = self.audio.codec_context.format.name  # 'fltp' for aac, 's16p'/'s32p' for alac
        arr: np.ndarray
        while self.audio_pos < stop:
            chunk = data[self.audio_pos : self.audio_pos + AUDIO_FRAME]
            if seconds is not None and chunk.size < AUDIO_FRAME and self.audio_pos + chunk.size < data.size:
                break  # wait for a full frame unless this is the end of the track
            if audio_fmt.startswith("flt"):
                arr = chunk[None, :].astype(np.float32)
                fmt = "fltp"
            else:
                arr = np.round(chunk * 32767.0).astype(np.int16)[None, :]
                fmt = "s16p"
            frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = self.audio_pos
            frame.time_base = Fraction(1, self.sample_rate)
            for packet in self.audio.encode(frame):
                self.container.mux(packet)
            self.audio_pos += chunk.size

    def close(self) -> None:
        """Flush both encoders (the audio's tail first muxed whole) and finish the file."""
        for packet in self.video.encode():
            self.container.mux(packet)
        if self.audio is not None:
            self._audio_until(None)
            for packet in self.audio.encode():
                self.container.mux(packet)
        self.container.close()
