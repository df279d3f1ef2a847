"""Corpora and caches shared by the whole suite, generated once per session.

Why here: generating a corpus and extracting it costs seconds; each module making its own
made the suite slow. Fixtures hand out read-only paths: a test that changes a cache takes a
private copy first (``copy_cache``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.toy_cache import write_big_cache, write_toy_cache
from vafusion.extract.run import ExtractOptions, extract
from vafusion.synth import SynthCorpus, make_alignment_corpus, make_corpus
from vafusion.synth.face_video import FaceClip

FAST_EXTRACT = dict(
    visual_weights="random", vggish_weights="random", image_size=32, batch_size=48, workers=0, progress=False
)
"""Extraction options for tests: random weights, small crops, no worker processes."""

SPEECH_SPANS = ((26, 100), (151, 225))
"""Frames (1-based, inclusive) of :func:`speech_cache`'s video that hold speech-like sound."""


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, restored after: tiny models run fastest so, and OpenMP spinning
    on a busy machine can cost 40x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory) -> Path:
    """A small stage-2 cache (features 'visual' (24) and 'audio' (12)) written through the cache API."""
    path = tmp_path_factory.mktemp("toy") / "cache"
    write_toy_cache(path)
    return path


@pytest.fixture(scope="session")
def big_cache(tmp_path_factory) -> tuple[Path, int]:
    """A 500 MiB cache (one 1024-d feature set ``big``, 256k frames in 40 videos) and its feature bytes.

    For memory bounds of streamed training: far larger than what a streamed run may hold.
    Written once per session (~5 s); delete nothing from it.
    """
    path = tmp_path_factory.mktemp("big") / "cache"
    return path, write_big_cache(path)


@pytest.fixture(scope="session")
def tiny_extracted(tmp_path_factory) -> tuple[SynthCorpus, Path, object]:
    """A 6-id generated corpus (2 s each) and its resnet18 + vggish + logmel cache: (corpus, cache, report)."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = make_corpus(root / "corpus", n_videos=6, seconds=2.0, seed=3)
    cache = root / "cache"
    report = extract(root / "corpus", cache, ExtractOptions(features=("resnet18", "vggish", "logmel"), **FAST_EXTRACT))
    return corpus, cache, report


@pytest.fixture(scope="session")
def learnable_cache(tmp_path_factory) -> Path:
    """A 10-video generated corpus (8 s each) extracted at 48 px: big enough for fusion to learn the synthetic task.

    At 10 and 12 fps, not 25 and 30: the same seconds of faces and voice in 40 % of the frames (VGGish, one
    0.96 s example per frame, was two thirds of the suite's slowest setup); windows are counted in frames,
    so its users scale them (test_end_to_end: 40 frames, 4 s, as 100 frames were at 25 fps).
    """
    root = tmp_path_factory.mktemp("e2e")
    make_corpus(root / "corpus", n_videos=10, seconds=8.0, seed=1, n_test=1, fps_options=(10.0, 12.0))
    opts = ExtractOptions(
        features=("resnet18", "vggish", "logmel"),
        visual_weights="random",
        vggish_weights="random",
        image_size=48,
        batch_size=64,
        progress=False,
    )
    report = extract(root / "corpus", root / "cache", opts)
    assert report.ok, (report.problems, report.failures)
    return root / "cache"


@pytest.fixture(scope="session")
def alignment_corpus(tmp_path_factory) -> Path:
    """One 25 fps video (id ``align``) of 100 frames: 1 kHz beeps centred on frames 25 and 70 in
    digital silence, a white crop on frame 10 among grey ones (make_alignment_corpus)."""
    root = tmp_path_factory.mktemp("align") / "corpus"
    make_alignment_corpus(root, fps=25.0, n_frames=100, beep_frames=[25, 70], marker_frames=[10])
    return root


@pytest.fixture(scope="session")
def speech_cache(tmp_path_factory) -> tuple[Path, Path]:
    """A 10 s, 25 fps video (id ``align``, 250 frames) whose track holds speech-like sound on the
    frames of :data:`SPEECH_SPANS` and digital silence elsewhere, and its ``vad`` (real Silero
    weights) + ``logmel`` + ``resnet18`` (32 px, random) cache: (corpus root, cache)."""
    root = tmp_path_factory.mktemp("speech")
    make_alignment_corpus(
        root / "corpus", fps=25.0, n_frames=250, beep_frames=[], marker_frames=[], speech_spans=SPEECH_SPANS
    )
    report = extract(
        root / "corpus", root / "cache", ExtractOptions(features=("vad", "logmel", "resnet18"), **FAST_EXTRACT)
    )
    assert report.ok, (report.problems, report.failures)
    return root / "corpus", root / "cache"


@pytest.fixture
def copy_cache(tmp_path) -> Callable[[Path], Path]:
    """``copy_cache(src)`` -> a private copy of a shared cache, for tests that change it."""

    def copy(src: Path, name: str = "cache") -> Path:
        return Path(shutil.copytree(src, tmp_path / name, symlinks=True))

    return copy


FACE_OPTIONS = dict(detector_options={"min_face": "40"}, device="cpu", batch_size=8, progress=False)
"""``vafusion faces`` settings for tests: the real MTCNN weights, faces of 40 px and more (a short pyramid)."""


@dataclass(frozen=True)
class FaceCorpus:
    """Clips of a real face (scikit-image's astronaut, public domain) and the corpus ``vafusion faces`` made."""

    root: Path
    one: FaceClip  # one person, a blank span
    two: FaceClip  # two persons side by side
    bad: tuple[Path, ...]  # a corrupt file and an audio-only file
    report: object


def astronaut_face() -> np.ndarray:
    """The astronaut photo cropped around her face (hair to chin), the face every face test uses."""
    from skimage import data

    return data.astronaut()[20:230, 120:320]


@pytest.fixture(scope="session")
def face_corpus(tmp_path_factory) -> FaceCorpus:
    """A one-person clip with a blank span, a two-person clip, a corrupt and an audio-only file, and the
    corpus ``faces`` wrote from them (one person, then the two-person clip with persons=2)."""
    from vafusion.extract.faces.options import FacesOptions
    from vafusion.extract.faces.run import faces
    from vafusion.synth.face_video import face_clip

    root = tmp_path_factory.mktemp("faces")
    (root / "in").mkdir()
    face = astronaut_face()
    one = face_clip(root / "in" / "one.mp4", face, n_frames=20, size=(160, 120), width=72, blank=[(8, 12)])
    two = face_clip(root / "in2" / "two.mp4", face, n_frames=10, size=(224, 120), width=80, persons=2)
    corrupt = root / "in" / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    audio_only = root / "in" / "voice.m4a"
    write_tone(audio_only)
    out = root / "corpus"
    report = faces([root / "in", audio_only], out, FacesOptions(preview=True, **FACE_OPTIONS))
    faces([two.path], out, FacesOptions(persons=2, **FACE_OPTIONS))
    return FaceCorpus(out, one, two, (corrupt, audio_only), report)


def write_tone(path: Path, seconds: float = 0.5) -> None:
    """An audio-only file (a 440 Hz tone): a 'video' without a video stream."""
    import av

    rate = 16000
    wave = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)


TIMES = ("seconds", "elapsed", "train_seconds", "seconds_to_best")
"""Wall-clock keys of metrics rows, summaries and cv/compare results: the only part in which two identical
runs (a straight one and a resumed or rerun one, say) differ."""


def untimed(value: Any) -> Any:
    """``value`` (a result read from JSON) without its wall-clock keys (:data:`TIMES`), at any depth."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def untimed_metrics(run: Path) -> list[dict]:
    """A run's metrics.jsonl rows without their wall-clock ``seconds`` and ``elapsed``."""
    return untimed([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()])
