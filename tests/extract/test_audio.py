"""load_audio: formats, channel layouts, resampling, and where sample 0 lies.

Files are written in tmp_path with soundfile and PyAV (AAC, PCM); beeps at known
instants check that timing survives decoding, priming removal and resampling.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from vafusion.errors import VafusionError
from vafusion.extract.audio import SAMPLE_RATE, load_audio

BEEPS = (0.30, 0.90, 1.50)  # seconds on the intended timeline
DURATION = 2.0


def beep_signal(rate: int, n: int) -> np.ndarray:
    """Silence with 40 ms Hann-windowed 1 kHz bursts centred at BEEPS."""
    t = np.arange(n) / rate
    x = np.zeros(n, np.float32)
    for b in BEEPS:
        d = t - b
        m = np.abs(d) < 0.02
        x[m] = 0.5 * (0.5 + 0.5 * np.cos(np.pi * d[m] / 0.02)) * np.sin(2 * np.pi * 1000 * d[m])
    return x


def beep_centres(y: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """Energy centroid (s) of each beep in a 16 kHz waveform, expected near BEEPS + shift."""
    t = np.arange(len(y)) / SAMPLE_RATE
    e = y.astype(np.float64) ** 2
    out = []
    for b in BEEPS:
        m = np.abs(t - b - shift) < 0.2
        assert e[m].sum() > 0, f"no beep near {b + shift:.3f} s"
        out.append((e[m] * t[m]).sum() / e[m].sum())
    return np.array(out)


def write_av(
    path: Path,
    *,
    rate: int = 44100,
    channels: int = 2,
    codec: str = "aac",
    sample_format: str = "fltp",
    start: int = 0,
    video: bool = True,
    audio: bool = True,
    container_format: str | None = None,
) -> None:
    """Write a short file with PyAV: 25 fps video (optional) + beeps whose first sample has pts ``start``."""
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format=container_format) as out:
        a = out.add_stream(codec, rate=rate, layout=layout) if audio else None
        if video:
            v = out.add_stream("mpeg4", rate=25)
            v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
            for i in range(int(DURATION * 25)):
                frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
                frame.pts = i
                out.mux(v.encode(frame))
            out.mux(v.encode(None))
        if a is None:
            return
        n = int(DURATION * rate)
        x = beep_signal(rate, n)
        for s in range(0, n, 1024):
            chunk = np.repeat(x[None, s : s + 1024], channels, axis=0)
            if sample_format == "s16":  # packed interleaved int16
                arr = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
            else:
                arr = np.ascontiguousarray(chunk)
            frame = av.AudioFrame.from_ndarray(arr, format=sample_format, layout=layout)
            frame.sample_rate = rate
            frame.pts = start + s
            out.mux(a.encode(frame))
        out.mux(a.encode(None))


def test_wav_stereo_44k(tmp_path: Path) -> None:
    rate = 44100
    x = beep_signal(rate, int(DURATION * rate))
    path = tmp_path / "a.wav"
    sf.write(path, np.stack([x, x], axis=1), rate, subtype="PCM_16")
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - DURATION * SAMPLE_RATE) <= 1
    assert np.abs(beep_centres(y) - BEEPS).max() < 0.005
    assert np.abs(y).max() == pytest.approx(0.5, abs=0.02)  # mono mean of identical channels keeps the level


def test_wav_mono_16k_is_passed_through(tmp_path: Path) -> None:
    x = beep_signal(SAMPLE_RATE, int(DURATION * SAMPLE_RATE))
    path = tmp_path / "b.flac"
    sf.write(path, x, SAMPLE_RATE, subtype="PCM_24")
    y = load_audio(path)
    assert len(y) == len(x)
    assert np.abs(y - x).max() < 1e-5


def test_downmix_is_channel_mean(tmp_path: Path) -> None:
    rate = SAMPLE_RATE
    left = np.full(1000, 0.5, np.float32)
    right = np.full(1000, -0.25, np.float32)
    path = tmp_path / "lr.wav"
    sf.write(path, np.stack([left, right], axis=1), rate, subtype="FLOAT")
    assert np.allclose(load_audio(path), 0.125)


@pytest.mark.parametrize("suffix", [".mp4", ".m4a"])
def test_aac_44k_stereo(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"a{suffix}"
    write_av(path, video=suffix == ".mp4")
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    # The encoder pads the last AAC frame: length within one 1024-sample frame.
    assert abs(len(y) - DURATION * SAMPLE_RATE) <= 1024 * SAMPLE_RATE / 44100 + 1
    # Priming (1024 samples, negative pts) is removed: beeps where they were put.
    assert np.abs(beep_centres(y) - BEEPS).max() < 0.005


def test_late_audio_start_is_left_padded(tmp_path: Path) -> None:
    path = tmp_path / "late.mkv"
    write_av(path, start=22050, container_format="matroska")  # audio starts at 0.5 s
    y = load_audio(path)
    assert np.abs(y[: int(0.45 * SAMPLE_RATE)]).max() == 0.0
    assert np.abs(beep_centres(y, shift=0.5) - np.add(BEEPS, 0.5)).max() < 0.005


def test_origin_drops_leading_samples(tmp_path: Path) -> None:
    path = tmp_path / "pcm.mov"
    write_av(path, rate=48000, codec="pcm_s16le", sample_format="s16")  # packed int16
    y0 = load_audio(path)
    assert abs(len(y0) - DURATION * SAMPLE_RATE) <= 1
    assert np.abs(beep_centres(y0) - BEEPS).max() < 0.001
    y = load_audio(path, origin_s=0.1)  # sample 0 = container time 0.1 s: audio starts 0.1 s "early"
    assert abs(len(y) - (DURATION - 0.1) * SAMPLE_RATE) <= 1
    assert np.abs(beep_centres(y, shift=-0.1) - np.subtract(BEEPS, 0.1)).max() < 0.001


def test_default_origin_is_the_first_video_frame(tmp_path: Path) -> None:
    # Matroska cannot store the AAC priming's negative pts, so the muxer shifts
    # every stream: the first video frame is then shown at ~0.047 s, not 0.
    path = tmp_path / "shifted.mkv"
    write_av(path, start=-2048, container_format="matroska")
    with av.open(str(path)) as c:
        video_start = float(c.streams.video[0].start_time * c.streams.video[0].time_base)
    assert video_start > 0.02
    expected = np.subtract(BEEPS, 2048 / 44100)  # audio written from pts -2048
    y = load_audio(path)  # origin = first video frame
    assert np.abs(beep_centres(y, shift=expected[0] - BEEPS[0]) - expected).max() < 0.002
    y_pts0 = load_audio(path, origin_s=0.0)
    assert (
        np.abs(beep_centres(y_pts0, shift=expected[0] - BEEPS[0] + video_start) - expected - video_start).max() < 0.002
    )


def test_mono_avi_pcm(tmp_path: Path) -> None:
    path = tmp_path / "mono.avi"
    write_av(path, rate=22050, channels=1, codec="pcm_s16le", sample_format="s16")
    y = load_audio(path)
    assert abs(len(y) - DURATION * SAMPLE_RATE) <= 1
    assert np.abs(beep_centres(y) - BEEPS).max() < 0.001


def test_video_without_audio_returns_none(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    write_av(path, audio=False)
    assert load_audio(path) is None


@pytest.mark.parametrize("name", ["garbage.mp4", "garbage.wav", "garbage.avi"])
def test_garbage_raises_vafusion_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not a media file" * 50)
    with pytest.raises(VafusionError) as err:
        load_audio(path)
    assert name in str(err.value) and "\n" not in str(err.value)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(VafusionError, match=r"nothing.mp4"):
        load_audio(tmp_path / "nothing.mp4")
