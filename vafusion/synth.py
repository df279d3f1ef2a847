"""Seeded synthetic corpora in the Aff-Wild2 layout, for tests, ``vafusion demo`` and benchmarks.

Why this exists: the real corpus is licensed and huge, yet every stage needs a corpus
with the real layout and the real quirks (mixed frame rates, a two-person video with
``_left``/``_right`` ids sharing one sound track, gaps in the face crops, ``-5`` label
rows, a video without audio, an unlabelled test list) and with valence/arousal (VA)
signals a model can actually learn, so that "fusion helps" is measurable end to end.

Where the signals live (only in pixels and waveform; nothing in names or metadata):

- Valence is drawn boldly on the face: mouth curvature (smile / frown), frowning
  brows, and a large warm/cool colour tint plus brightness of the skin. Big,
  low-frequency colour changes survive random-weight conv nets with global average
  pooling (the face-centre red-minus-blue follows valence with r ~ 0.95).
- Arousal is audible: a synthetic voice (harmonic tone, amplitude-modulated syllables,
  a little noise) whose loudness (+-16 dB), pitch (+-0.6 octave) and syllable rate
  (2-5 Hz) rise with arousal (log RMS over 0.5 s follows arousal with r ~ 0.9). On
  the face it is only faint: eye openness and a small brightness change.
- Valence and arousal are independent smooth curves (tanh of a sum of three slow
  sinusoids with random frequencies, amplitudes and phases), different per id.

Nuisances unrelated to the labels make the task non-trivial: per-person skin tone,
hair and voice, per-video background and microphone gain, slow illumination drift,
head motion, sensor noise, breathing pauses in speech and background noise.

Media and codecs (see :data:`VIDEO_CODEC`, :data:`AUDIO_CODEC`):

- ``ROOT/videos/<name>.mp4``: H.264 (libx264, ``ultrafast``, no B-frames, yuv420p)
  at the video's exact frame rate, first frame at pts 0, exactly ``n_frames`` frames;
  mono AAC at ``sample_rate`` (16 kHz by default). FFmpeg's mp4 muxer records the
  AAC encoder's 1024 priming samples in an edit list; PyAV's decoder drops them, so
  the first decoded audio frame has pts 0 and decoded sample ``n`` is the instant
  ``n / sample_rate`` (checked with :func:`make_alignment_corpus`: decoded beep centres
  land within 0.3 ms of their intended instants). The decoded track is at least
  ``n_frames / fps`` seconds long (AAC pads the last 1024-sample frame, so it may run
  up to 1023 samples longer). If this PyAV build lacks an encoder, libx264 falls back
  to mpeg4 and AAC to ALAC (lossless, no priming; decodes to integer samples).
- ``ROOT/cropped_aligned/<id>/00001.jpg``: JPEG (quality 90) face crops,
  ``crop_size`` square, 1-based 5-digit frame numbers, missing numbers = no face.
- ``ROOT/annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<id>.txt``:
  ``valence,arousal`` header and one row per video frame, 4 decimals, ``-5,-5`` rows
  for frames without a valid label.
- ``ROOT/test_set.txt``: one unlabelled id per line (they still have video and crops).

The two-person video's sound track carries the ``_left`` person's voice (arousal);
the ``_right`` person is a silent listener, so ``_right`` has only the faint visual
arousal evidence, as with a real listener. :attr:`SynthVideo.speaks` says which.

Determinism: the same arguments give the same VA curves, annotation files and JPEG
bytes (crops are encoded by PIL from arrays computed in a fixed order from seeded
generators). mp4 bytes are not promised, only their decoded content.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from vafusion.errors import VafusionError

__all__ = [
    "ANNOTATION_DIR",
    "AUDIO_CODEC",
    "MISSING_LABEL",
    "PARTITION_DIRS",
    "SIZES",
    "SynthCorpus",
    "SynthVideo",
    "TEST_LIST_NAME",
    "VIDEO_CODEC",
    "make_alignment_corpus",
    "make_corpus",
]

ANNOTATION_DIR = Path("annotations") / "VA_Estimation_Challenge"
"""Annotation root relative to ROOT, as in Aff-Wild2."""

PARTITION_DIRS: dict[str, str] = {"train": "Train_Set", "validation": "Validation_Set"}
"""Annotation sub-folder per labelled partition."""

TEST_LIST_NAME = "test_set.txt"
"""File name (under ROOT) of the list of unlabelled test ids."""

MISSING_LABEL = -5.0
"""Value written on both columns of an annotation row without a valid label."""

JPEG_QUALITY = 90
BEEP_HZ = 1000.0
"""Frequency of the alignment corpus' beeps."""
BEEP_SECONDS = 0.040
"""Length of one alignment beep (Hann-windowed tone burst centred on its instant)."""

_CHUNK = 128  # frames rendered at once: bounds memory for long videos, fixed for determinism
_NOISE_BANK = 24  # sensor-noise images per video and person
_AUDIO_FRAME = 1024  # samples per AudioFrame handed to the encoder (AAC's frame size)


@functools.lru_cache(maxsize=None)
def _pick_encoder(candidates: tuple[str, ...]) -> str:
    """First codec in ``candidates`` that this PyAV build can encode with."""
    import av

    for name in candidates:
        try:
            av.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises different types across versions
            continue
        return name
    raise VafusionError(f"PyAV: none of the encoders {list(candidates)} is available; install a PyAV wheel with FFmpeg encoders")


def _video_codec() -> str:
    return _pick_encoder(("libx264", "mpeg4"))


def _audio_codec() -> str:
    return _pick_encoder(("aac", "alac"))


def __getattr__(name: str) -> str:
    # VIDEO_CODEC / AUDIO_CODEC resolved lazily, so importing this module never needs av.
    if name == "VIDEO_CODEC":
        return _video_codec()
    if name == "AUDIO_CODEC":
        return _audio_codec()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- public types


@dataclass
class SynthVideo:
    """Ground truth of one video id of a generated corpus.

    ``valence``/``arousal`` are the values before ``-5`` masking (exactly the numbers
    written in the annotation file where ``label_missing`` is False; test ids have
    no file but keep their ground truth here for evaluation).
    """

    id: str
    video_name: str
    fps: float
    n_frames: int
    partition: str  # 'train' | 'validation' | 'test'
    valence: np.ndarray  # (n_frames,) float32
    arousal: np.ndarray  # (n_frames,) float32
    label_missing: np.ndarray  # (n_frames,) bool: rows written as -5
    crop_missing: np.ndarray  # (n_frames,) bool: frames without a crop image
    has_audio: bool
    speaks: bool = True
    """True when this id's arousal drives the video's sound track (False for ``_right``
    of the two-person video, and for a video without audio)."""

    @property
    def labelled(self) -> bool:
        """Whether an annotation file exists for this id."""
        return self.partition in PARTITION_DIRS


@dataclass
class SynthCorpus:
    """A generated corpus: its ROOT, one :class:`SynthVideo` per id (sorted by id), the test list."""

    root: Path
    videos: list[SynthVideo]
    test_list: Path

    @property
    def ids(self) -> list[str]:
        return [v.id for v in self.videos]

    def __getitem__(self, video_id: str) -> SynthVideo:
        for v in self.videos:
            if v.id == video_id:
                return v
        raise KeyError(video_id)

    def by_partition(self, partition: str) -> list[SynthVideo]:
        return [v for v in self.videos if v.partition == partition]

    def video_path(self, video: SynthVideo | str) -> Path:
        """The mp4 holding ``video`` (shared by ``_left``/``_right``)."""
        v = self[video] if isinstance(video, str) else video
        return self.root / "videos" / f"{v.video_name}.mp4"

    def crop_dir(self, video: SynthVideo | str) -> Path:
        vid = video if isinstance(video, str) else video.id
        return self.root / "cropped_aligned" / vid

    def annotation_path(self, video: SynthVideo | str) -> Path | None:
        """The annotation file of ``video``, or None for unlabelled (test) ids."""
        v = self[video] if isinstance(video, str) else video
        if not v.labelled:
            return None
        return self.root / ANNOTATION_DIR / PARTITION_DIRS[v.partition] / f"{v.id}.txt"


SIZES: dict[str, dict[str, Any]] = {
    # unit tests: 7 ids (6 files), 3-4 s each, about 600 frames in all
    "tiny": dict(n_videos=6, seconds=3.5, n_test=1),
    # quick experiments: 11 ids, ~8 s each
    "small": dict(n_videos=10, seconds=8.0, n_test=2),
    # `vafusion demo`: 15 ids, ~12 s each; sized so the whole demo (VGGish at one example per
    # video frame dominates) stays well under 5 minutes on 2 CPU cores
    "demo": dict(n_videos=14, seconds=12.0, n_test=2),
    # benchmarks: 61 ids, ~60 s each, 112 px crops like Aff-Wild2
    "large": dict(n_videos=60, seconds=60.0, n_test=6, crop_size=112, frame_size=96, fps_options=(25.0, 30.0, 60.0)),
}
"""Preset keyword arguments of :func:`make_corpus`: ``make_corpus(root, **SIZES["tiny"])``."""


# --------------------------------------------------------------------------- plans (cheap, all random draws for a video)


@dataclass
class _Person:
    """Appearance, voice and per-frame state of one face in one video."""

    id: str
    valence: np.ndarray
    arousal: np.ndarray
    label_missing: np.ndarray
    crop_missing: np.ndarray
    skin: np.ndarray  # (3,) base RGB
    hair: np.ndarray  # (3,)
    jitter: np.ndarray  # (T, 3): crop-space dx, dy, log-scale of the aligned face
    scene_xy: np.ndarray  # (T, 2) face-box top-left in the scene (pixels, int)
    scene_size: int  # face-box side in the scene (pixels)
    seed: np.random.SeedSequence  # noise of this person's crops
    speaks: bool = True


@dataclass
class _VideoPlan:
    name: str
    fps: float
    n_frames: int
    partition: str
    has_audio: bool
    persons: list[_Person]
    background: np.ndarray  # (3,) RGB
    bg_gradient: np.ndarray  # (3,) RGB change from left to right
    illumination: np.ndarray  # (T,) multiplicative drift
    scene_seed: np.random.SeedSequence
    voice_seed: np.random.SeedSequence


def _smooth_curve(rng: np.random.Generator, t: np.ndarray, bias: float) -> np.ndarray:
    """tanh(bias + offset + three slow sinusoids): smooth, within (-1, 1), different per call."""
    freqs = rng.uniform(0.06, 0.45, 3)
    amps = rng.uniform(0.3, 0.7, 3)
    phases = rng.uniform(0.0, 2.0 * np.pi, 3)
    offset = rng.normal(0.0, 0.35)
    x = bias + offset + (amps[:, None] * np.sin(2.0 * np.pi * freqs[:, None] * t[None, :] + phases[:, None])).sum(0)
    return np.tanh(x)


def _quantise(x: np.ndarray) -> np.ndarray:
    """Round to the 4 decimals written in the annotation files (so ground truth == file)."""
    return (np.round(x.astype(np.float64), 4) + 0.0).astype(np.float32)


def _runs(rng: np.random.Generator, n: int, n_runs: int, min_len: int, max_len: int) -> np.ndarray:
    """Boolean mask with ``n_runs`` runs of ``min_len..max_len`` True values (may touch)."""
    mask = np.zeros(n, dtype=bool)
    for _ in range(n_runs):
        length = int(rng.integers(min_len, max_len + 1))
        if length >= n:
            continue
        start = int(rng.integers(0, n - length + 1))
        mask[start : start + length] = True
    return mask


def _moving_average(x: np.ndarray, k: int) -> np.ndarray:
    """Centred moving average of width ``k`` (same length, edges averaged over what exists)."""
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    n = x.size
    lo = np.clip(np.arange(n) - k // 2, 0, n)
    hi = np.clip(np.arange(n) - k // 2 + k, 0, n)
    return (c[hi] - c[lo]) / (hi - lo)


def _random_walk(rng: np.random.Generator, n: int, scale: float, smooth: int) -> np.ndarray:
    """Smoothed, mean-removed random walk of ``n`` steps with peak about ``scale``."""
    steps = rng.normal(0.0, 1.0, n + smooth)
    walk = np.cumsum(steps)
    kernel = np.ones(smooth) / smooth
    walk = np.convolve(walk, kernel, mode="valid")[:n]
    walk = walk - walk.mean()
    peak = np.abs(walk).max()
    return walk * (scale / peak) if peak > 0 else walk


def _make_person(
    rng: np.random.Generator,
    vid: str,
    fps: float,
    n: int,
    labelled: bool,
    face_box: tuple[int, int, int],
    frame_hw: tuple[int, int],
    seed: np.random.SeedSequence,
) -> _Person:
    t = np.arange(n) / fps
    seconds = n / fps
    valence = _quantise(_smooth_curve(rng, t, bias=0.0))
    arousal = _quantise(_smooth_curve(rng, t, bias=0.25))
    # Short runs of missing crops (face not found) and of -5 labels, ~1 per 4-6 s.
    n_gap_runs = max(1, int(round(seconds / 4.0 * rng.uniform(0.6, 1.4))))
    crop_missing = _runs(rng, n, n_gap_runs, 2, max(3, int(0.25 * fps)))
    n_label_runs = int(rng.integers(0, max(1, int(round(seconds / 5.0))) + 1)) if labelled else 0
    label_missing = _runs(rng, n, n_label_runs, 3, max(4, int(0.4 * fps)))
    tone = rng.uniform(0.55, 1.0)
    skin = np.array([235.0, 190.0, 160.0]) * tone + rng.normal(0.0, 6.0, 3)
    hair = rng.uniform(20.0, 120.0) * np.array([1.0, 0.8, 0.6]) + rng.normal(0.0, 8.0, 3)
    smooth = max(2, int(fps))
    jitter = np.stack(
        [
            _random_walk(rng, n, 0.05, smooth),
            _random_walk(rng, n, 0.04, smooth),
            _random_walk(rng, n, 0.04, smooth),
        ],
        axis=1,
    )
    x0, y0, size = face_box
    h, w = frame_hw
    dx = np.round(_random_walk(rng, n, 0.08 * size, smooth)).astype(int)
    dy = np.round(_random_walk(rng, n, 0.05 * size, smooth)).astype(int)
    xs = np.clip(x0 + dx, 0, w - size)
    ys = np.clip(y0 + dy, 0, h - size)
    return _Person(
        id=vid,
        valence=valence,
        arousal=arousal,
        label_missing=label_missing,
        crop_missing=crop_missing,
        skin=skin,
        hair=hair,
        jitter=jitter,
        scene_xy=np.stack([xs, ys], axis=1),
        scene_size=size,
        seed=seed,
    )


def _exact_fps(fps: float) -> float:
    """The rate the container will record (a fraction with denominator <= 1001, so 29.97
    and 30000/1001 both survive), as the float that :class:`SynthVideo` reports."""
    return float(Fraction(float(fps)).limit_denominator(1001))


def _frame_shape(frame_size: int) -> tuple[int, int]:
    """(height, width) of the scene: ``frame_size`` high, 3:2 wide, both even (yuv420p)."""
    h = frame_size + (frame_size % 2)
    w = 2 * int(round(h * 0.75))
    return h, w


def _plan_corpus(
    *,
    n_videos: int,
    seconds: float,
    seed: int,
    frame_size: int,
    validation_fraction: float,
    n_test: int,
    fps_options: Sequence[float],
) -> list[_VideoPlan]:
    """Draw every random choice of the corpus (roles, fps, partitions, curves, looks)."""
    children = np.random.SeedSequence(seed).spawn(n_videos + 1)
    rng = np.random.default_rng(children[0])
    video_seqs = children[1:]

    roles = rng.permutation(n_videos)
    # roles[0] -> two-person (labelled), roles[1] -> no audio (labelled when possible),
    # the last n_test roles -> unlabelled test videos.
    test_set = set(int(i) for i in roles[n_videos - n_test :]) if n_test else set()
    labelled = [int(i) for i in roles if int(i) not in test_set]
    two_person = labelled[0] if labelled else None
    no_audio = labelled[1] if len(labelled) > 1 else (int(roles[1]) if n_videos > 1 else None)

    # Frame rates: every option appears once (when there are enough videos), rest random.
    fps_list = [float(f) for f in fps_options]
    fps_of = np.empty(n_videos, dtype=float)
    order = rng.permutation(n_videos)
    for j, i in enumerate(order):
        fps_of[i] = fps_list[j] if j < len(fps_list) else fps_list[int(rng.integers(0, min(2, len(fps_list))))]

    # Partitions over labelled files (a file's ids stay together).
    n_val = int(round(validation_fraction * len(labelled)))
    if validation_fraction > 0 and len(labelled) >= 2:
        n_val = min(max(n_val, 1), len(labelled) - 1)
    elif len(labelled) < 2:
        n_val = 0
    val_set = set(int(i) for i in rng.permutation(labelled)[:n_val])

    h, w = _frame_shape(frame_size)
    plans: list[_VideoPlan] = []
    for i in range(n_videos):
        vrng = np.random.default_rng(video_seqs[i])
        fps = _exact_fps(fps_of[i])
        n = max(2, int(round(seconds * vrng.uniform(0.8, 1.2) * fps)))
        fps_txt = f"{fps:g}"
        name = f"{i + 1}-{fps_txt}-{w}x{h}" if i % 3 else f"video{i + 1}"
        partition = "test" if i in test_set else ("validation" if i in val_set else "train")
        # Independent streams: [0] scene noise, [1] voice, [2], [3] crop noise per person.
        seqs = video_seqs[i].spawn(4)
        if i == two_person:
            size = int(round(0.5 * h))
            boxes = [
                (int(round(0.27 * w - size / 2)), int(round(0.45 * h - size / 2)), size),
                (int(round(0.73 * w - size / 2)), int(round(0.5 * h - size / 2)), size),
            ]
            ids = [f"{name}_left", f"{name}_right"]
        else:
            size = int(round(vrng.uniform(0.55, 0.7) * h))
            cx = vrng.uniform(0.35, 0.65) * w
            boxes = [(int(round(cx - size / 2)), int(round(0.5 * h - size / 2)), size)]
            ids = [name]
        persons = [
            _make_person(vrng, vid, fps, n, partition != "test", box, (h, w), seqs[2 + k])
            for k, (vid, box) in enumerate(zip(ids, boxes))
        ]
        has_audio = i != no_audio
        for k, p in enumerate(persons):
            p.speaks = has_audio and k == 0
        t = np.arange(n) / fps
        illum = 1.0 + 0.06 * np.sin(2 * np.pi * vrng.uniform(0.05, 0.2) * t + vrng.uniform(0, 2 * np.pi))
        background = vrng.uniform(40.0, 200.0, 3)
        bg_gradient = vrng.normal(0.0, 25.0, 3)
        plans.append(
            _VideoPlan(
                name=name,
                fps=fps,
                n_frames=n,
                partition=partition,
                has_audio=has_audio,
                persons=persons,
                background=background,
                bg_gradient=bg_gradient,
                illumination=illum.astype(np.float32),
                scene_seed=seqs[0],
                voice_seed=seqs[1],
            )
        )
    return plans


# --------------------------------------------------------------------------- drawing


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x right, y down), shapes (1, 1, S) and (1, S, 1)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return c[None, None, :], c[None, :, None]


def _soft(d: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased inside-indicator of a signed distance-like field ``d`` (> 0 inside)."""
    return np.clip(d * (size * 0.5) + 0.5, 0.0, 1.0)


def _rows(gy: np.ndarray, lo: float, hi: float) -> slice:
    """Row band of the grid that can hold a feature spanning face rows [lo, hi] under jitter.

    Head jitter moves the face by at most 0.05 and scales it by at most 4 % (see
    :func:`_make_person`); the margin also covers anti-aliasing, so drawing only these
    rows gives the same pixels as drawing all of them, at a fraction of the cost.
    """
    c = gy.ravel()
    margin = 0.1 + 4.0 / c.size  # jitter + anti-aliasing, which is wider in small images
    idx = np.flatnonzero((c >= lo * 1.05 - margin) & (c <= hi * 1.05 + margin))
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)


def _render_faces(
    size: int,
    person: _Person,
    frames: slice,
    jitter: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the face of ``person`` for ``frames`` at ``size`` px: (n, S, S, 3) RGB and alpha.

    Coordinates are normalised to the face box, so the crop and the face in the scene
    are the same drawing at two resolutions. Vectorised over frames and pixels; the
    alpha is (n, S, S) with ``jitter`` (aligned crops move a little), else (1, S, S).
    """
    n = frames.stop - frames.start
    v = person.valence[frames].astype(np.float32)[:, None, None]
    a = person.arousal[frames].astype(np.float32)[:, None, None]
    gx, gy = _grid(size)
    if jitter:
        j = person.jitter[frames].astype(np.float32)
        scale = np.exp(j[:, 2])[:, None, None]
        x = (gx - j[:, 0, None, None]) / scale  # (n, 1, S)
        y = (gy - j[:, 1, None, None]) / scale  # (n, S, 1)
    else:
        x, y = gx, gy  # (1, 1, S), (1, S, 1): the static parts are drawn once
    px = np.float32(2.0 / size)  # one pixel in normalised units, keeps strokes >= ~1.5 px

    # Head: ellipse; hair cap on top; soft shading toward the rim.
    r = np.sqrt((x / np.float32(0.74)) ** 2 + (y / np.float32(0.92)) ** 2)
    alpha = _soft((1.0 - r) * np.float32(0.8), size)
    shade = 1.0 - np.float32(0.18) * (x**2 + y**2)

    # Feature masks (hair, eyes, brows, lips); they do not overlap, so each channel is
    # skin * (1 - cover) + sum of mask * colour.
    masks = np.zeros((4, n, size, size), dtype=np.float32)
    masks[0] = _soft((-0.5 - y) * np.float32(2.0) + np.float32(0.3) * x**2, size) * alpha

    # Eyes: openness grows with arousal (faint cue).
    bands = [slice(0, size)]  # rows where each mask can be non-zero (hair: anywhere)
    rows = _rows(gy, -0.16 - 0.1, -0.16 + 0.1)
    bands.append(rows)
    ys = y[:, rows]
    eye_h = np.float32(0.045) + np.float32(0.012) * (a + 1.0) + 0.5 * px
    for ex in (-0.32, 0.32):
        e = ((x - np.float32(ex)) / np.float32(0.15)) ** 2 + ((ys + np.float32(0.16)) / eye_h) ** 2
        np.maximum(masks[1, :, rows], _soft((1.0 - e) * np.float32(0.06), size), out=masks[1, :, rows])
    # Brows: inner ends pulled down in a frown (v < 0), raised a little for v > 0.
    rows = _rows(gy, -0.6 - 0.06, -0.22 + 0.06)
    bands.append(rows)
    ys = y[:, rows]
    frown = np.minimum(v, 0.0)
    lift = np.float32(0.05) * np.maximum(v, 0.0)
    for side in (-1.0, 1.0):
        bx = x - np.float32(side * 0.32)
        inner = np.float32(-side) * bx  # > 0 toward the nose
        by = np.float32(-0.38) - lift - np.float32(0.14 / 0.18) * frown * inner
        d = np.abs(ys - by)
        within = _soft((np.float32(0.2) - np.abs(bx)) * np.float32(0.5), size)
        stroke = _soft((np.float32(0.035) + px - d) * np.float32(0.5), size) * within
        np.maximum(masks[2, :, rows], stroke, out=masks[2, :, rows])
    # Mouth: bold curve, corners up (smile) for v > 0, down (frown) for v < 0.
    rows = _rows(gy, 0.33 - 0.08, 0.57 + 0.08)
    bands.append(rows)
    ys = y[:, rows]
    half_w = np.float32(0.34)
    ym = np.float32(0.45) + np.float32(0.24) * v * (np.float32(0.5) - (x / half_w) ** 2)
    masks[3, :, rows] = _soft((np.float32(0.05) + px - np.abs(ys - ym)) * np.float32(0.5), size) * _soft(
        (half_w - np.abs(x)) * np.float32(0.5), size
    )

    hair_rgb = person.hair.astype(np.float32)
    colours = np.stack([hair_rgb, np.array([35.0, 25.0, 25.0], np.float32), 0.5 * hair_rgb, np.array([130.0, 30.0, 45.0], np.float32)])
    skin_shade = shade * (1.0 - masks[0])  # (n, S, S)
    for k in (1, 2, 3):
        skin_shade[:, bands[k]] -= shade[:, bands[k]] * masks[k, :, bands[k]]

    # Skin: identity colour + valence tint (warm/bright vs cool/dark) + faint arousal brightness.
    tint = np.array([38.0, 6.0, -34.0], dtype=np.float32)
    img = np.empty((n, size, size, 3), dtype=np.float32)
    for c in range(3):
        skin = np.float32(person.skin[c]) + v * tint[c] + np.float32(10.0) * v + np.float32(3.0) * a  # (n, 1, 1)
        ch = skin * skin_shade
        ch += masks[0] * colours[0, c]
        for k in (1, 2, 3):
            ch[:, bands[k]] += masks[k, :, bands[k]] * colours[k, c]
        img[..., c] = ch
    return img, alpha


def _noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Uniform noise with the given standard deviation (8x cheaper to draw than Gaussian)."""
    half = np.float32(std * np.sqrt(3.0))
    noise = rng.random(shape, dtype=np.float32)
    noise -= np.float32(0.5)
    noise *= 2.0 * half
    return noise


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- sound


def _voice(plan: _VideoPlan, speaker: _Person, n_samples: int, sample_rate: int) -> np.ndarray:
    """A synthetic voice whose loudness, pitch and syllable rate follow ``speaker.arousal``."""
    rng = np.random.default_rng(plan.voice_seed)
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    frame_t = np.arange(plan.n_frames) / plan.fps
    a = np.interp(t, frame_t, speaker.arousal.astype(np.float64))

    f0_base = rng.uniform(110.0, 170.0)
    intonation = 0.06 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 2 * np.pi))
    f0 = f0_base * 2.0 ** (0.6 * a + intonation)
    phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate
    tilt = rng.uniform(1.0, 1.3)
    # Harmonics up to ~3.5 kHz and below Nyquist at the highest pitch (f0 <= 1.6 f0_base),
    # by the Chebyshev recursion sin((h+1)p) = 2 cos(p) sin(hp) - sin((h-1)p): 2 trig calls.
    n_harm = int(min(12, (min(3500.0, 0.5 * sample_rate) // (1.6 * f0_base))))
    weights = np.arange(1, n_harm + 1, dtype=np.float64) ** -tilt
    weights /= weights.sum()
    two_cos = 2.0 * np.cos(phase)
    prev, cur = np.zeros(n_samples), np.sin(phase)
    tone = weights[0] * cur
    for h in range(1, n_harm):
        prev, cur = cur, two_cos * cur - prev
        tone += weights[h] * cur

    rate = 2.0 + 1.5 * (a + 1.0)  # syllables per second: 2 .. 5
    syl = np.cumsum(rate) / sample_rate + rng.uniform()
    env = (0.5 - 0.5 * np.cos(2 * np.pi * syl)) ** 1.5
    # Breathing pauses between phrases (about one 0.25-0.45 s pause every 2-4 s), 30 ms ramps.
    phrase = np.ones(n_samples)
    pos = rng.uniform(1.0, 3.0)
    while pos < t[-1]:
        length = rng.uniform(0.25, 0.45)
        phrase[int(pos * sample_rate) : int((pos + length) * sample_rate)] = 0.25
        pos += length + rng.uniform(2.0, 4.0)
    phrase = _moving_average(phrase, max(1, int(0.03 * sample_rate)))

    gain = 0.12 * 10.0 ** (rng.uniform(-1.5, 1.5) / 20.0)  # microphone distance
    loud = 10.0 ** (16.0 * a / 20.0)
    noise = rng.standard_normal(n_samples) * 10.0 ** (rng.uniform(-50.0, -42.0) / 20.0)
    wave = gain * loud * env * phrase * tone + noise
    return np.clip(wave, -0.99, 0.99).astype(np.float32)


# --------------------------------------------------------------------------- writing


def _write_annotation(path: Path, valence: np.ndarray, arousal: np.ndarray, missing: np.ndarray) -> None:
    lines = ["valence,arousal"]
    for v, a, m in zip(valence.tolist(), arousal.tolist(), missing.tolist()):
        lines.append("-5,-5" if m else f"{v:.4f},{a:.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def _write_crops(directory: Path, first_frame: int, crops: np.ndarray, missing: np.ndarray) -> None:
    """Write ``crops[i]`` as ``<first_frame + i>.jpg`` (5 digits, 1-based) unless missing."""
    for i in range(crops.shape[0]):
        if not missing[i]:
            Image.fromarray(crops[i]).save(directory / f"{first_frame + i:05d}.jpg", quality=JPEG_QUALITY)


class _BackgroundWriter:
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


class _Mp4Writer:
    """Streams video frames (and the whole audio track, interleaved by time) into an mp4."""

    def __init__(self, path: Path, fps: float, height: int, width: int, audio: np.ndarray | None, sample_rate: int,
                 frame_times: Sequence[float] | None = None):
        import av

        self._av = av
        self.container = av.open(str(path), mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        codec = _video_codec()
        self.video = self.container.add_stream(codec, rate=rate)
        self.video.width = width
        self.video.height = height
        self.video.pix_fmt = "yuv420p"
        # Frame k at pts k / rate, or (variable frame rate) at frame_times[k] on a 90 kHz clock.
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
        self.fps_rate = rate
        self.audio_data = audio
        self.audio = None
        self.audio_pos = 0
        self.sample_rate = sample_rate
        if audio is not None:
            self.audio = self.container.add_stream(_audio_codec(), rate=sample_rate)
            self.audio.layout = "mono"
            if self.audio.codec_context.name == "aac":
                self.audio.bit_rate = 48_000
        self.n_written = 0

    def add_frames(self, frames: np.ndarray) -> None:
        av = self._av
        for img in frames:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = self.n_written if self.frame_pts is None else self.frame_pts[self.n_written]
            frame.time_base = self.time_base
            for packet in self.video.encode(frame):
                self.container.mux(packet)
            self.n_written += 1
        self._audio_until(float((frame.pts + 1) * self.time_base) if self.frame_pts else
                          float(self.n_written / self.fps_rate))

    def _audio_until(self, seconds: float | None) -> None:
        if self.audio is None or self.audio_data is None:
            return
        av = self._av
        data = self.audio_data
        stop = data.size if seconds is None else min(data.size, int(np.ceil(seconds * self.sample_rate)))
        audio_fmt = self.audio.codec_context.format.name  # 'fltp' for aac, 's16p'/'s32p' for alac
        while self.audio_pos < stop:
            chunk = data[self.audio_pos : self.audio_pos + _AUDIO_FRAME]
            if seconds is not None and chunk.size < _AUDIO_FRAME and self.audio_pos + chunk.size < data.size:
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
        for packet in self.video.encode():
            self.container.mux(packet)
        if self.audio is not None:
            self._audio_until(None)
            for packet in self.audio.encode():
                self.container.mux(packet)
        self.container.close()


def _render_video(
    plan: _VideoPlan, root: Path, crop_size: int, frame_size: int, sample_rate: int, jpeg: _BackgroundWriter
) -> None:
    """Write the mp4, the crops and the annotation files of one video."""
    h, w = _frame_shape(frame_size)
    n = plan.n_frames
    audio = None
    if plan.has_audio:
        n_samples = int(np.ceil(n / plan.fps * sample_rate))
        audio = _voice(plan, plan.persons[0], n_samples, sample_rate)
    # Sensor noise: per-frame draws from a small bank of noise images (drawing fresh
    # noise for every pixel of every frame would dominate the generation time).
    scene_rng = np.random.default_rng(plan.scene_seed)
    scene_noise = _noise(scene_rng, (_NOISE_BANK, h, w, 3), 2.0)
    crop_rngs = [np.random.default_rng(p.seed) for p in plan.persons]
    crop_noise = [_noise(r, (_NOISE_BANK, crop_size, crop_size, 3), 2.5) for r in crop_rngs]

    # Static scene: background colour with a horizontal gradient and a soft blob.
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :, None]
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None, None]
    blob = np.exp(-((xs - 0.3) ** 2 + (ys + 0.2) ** 2) / 0.05)
    scene_static = plan.background.astype(np.float32) + plan.bg_gradient.astype(np.float32) * xs + 30.0 * blob
    cx = np.linspace(-0.5, 0.5, crop_size, dtype=np.float32)[None, :, None]
    crop_bg = plan.background.astype(np.float32) + 0.5 * plan.bg_gradient.astype(np.float32) * cx

    crop_dirs = []
    for p in plan.persons:
        d = root / "cropped_aligned" / p.id
        d.mkdir(parents=True, exist_ok=True)
        crop_dirs.append(d)

    writer = _Mp4Writer(root / "videos" / f"{plan.name}.mp4", plan.fps, h, w, audio, sample_rate)
    try:
        for start in range(0, n, _CHUNK):
            sl = slice(start, min(n, start + _CHUNK))
            m = sl.stop - sl.start
            illum = plan.illumination[sl][:, None, None, None]
            scene = np.broadcast_to(scene_static, (m, h, w, 3)).copy()
            for p, rng_c, bank, d in zip(plan.persons, crop_rngs, crop_noise, crop_dirs):
                face, alpha = _render_faces(crop_size, p, sl, jitter=True)
                crop = (crop_bg + alpha[..., None] * (face - crop_bg)) * illum
                crop += bank[rng_c.integers(0, _NOISE_BANK, m)]
                jpeg.submit(_write_crops, d, sl.start + 1, _to_uint8(crop), p.crop_missing[sl])
                # The face in the scene (absent where the crop is missing: face turned away).
                s = p.scene_size
                face_s, alpha_s = _render_faces(s, p, sl, jitter=False)
                al = alpha_s[0][..., None]  # static: the scene face moves as a whole
                for i in range(m):
                    if p.crop_missing[sl.start + i]:
                        continue
                    x0, y0 = p.scene_xy[sl.start + i]
                    region = scene[i, y0 : y0 + s, x0 : x0 + s]
                    region += al * (face_s[i] - region)
            scene *= illum
            scene += scene_noise[scene_rng.integers(0, _NOISE_BANK, m)]
            writer.add_frames(_to_uint8(scene))
    finally:
        writer.close()

    for p in plan.persons:
        if plan.partition in PARTITION_DIRS:
            path = root / ANNOTATION_DIR / PARTITION_DIRS[plan.partition] / f"{p.id}.txt"
            _write_annotation(path, p.valence, p.arousal, p.label_missing)


_OUTPUTS = ("videos", "cropped_aligned", "annotations", TEST_LIST_NAME)


def _prepare_root(root: str | Path, overwrite: bool) -> Path:
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise VafusionError(f"{root}: exists and is not a directory; choose another output directory")
    present = [name for name in _OUTPUTS if (root / name).exists()]
    if present:
        if not overwrite:
            raise VafusionError(
                f"{root}: already holds a corpus ({', '.join(present)}); choose an empty directory or pass overwrite=True"
            )
        for name in present:
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "cropped_aligned").mkdir(exist_ok=True)
    for sub in PARTITION_DIRS.values():
        (root / ANNOTATION_DIR / sub).mkdir(parents=True, exist_ok=True)
    return root


def _to_synth_videos(plan: _VideoPlan) -> Iterator[SynthVideo]:
    for p in plan.persons:
        labelled = plan.partition in PARTITION_DIRS
        yield SynthVideo(
            id=p.id,
            video_name=plan.name,
            fps=plan.fps,
            n_frames=plan.n_frames,
            partition=plan.partition,
            valence=p.valence,
            arousal=p.arousal,
            label_missing=p.label_missing if labelled else np.zeros(plan.n_frames, dtype=bool),
            crop_missing=p.crop_missing,
            has_audio=plan.has_audio,
            speaks=p.speaks,
        )


# --------------------------------------------------------------------------- public entry points


def make_corpus(
    root: str | Path,
    *,
    n_videos: int = 6,
    seconds: float = 4.0,
    seed: int = 0,
    crop_size: int = 64,
    frame_size: int = 64,
    sample_rate: int = 16000,
    validation_fraction: float = 0.34,
    n_test: int = 1,
    fps_options: Sequence[float] = (25.0, 30.0),
    overwrite: bool = False,
    progress: bool = False,
) -> SynthCorpus:
    """Generate a seeded Aff-Wild2-layout corpus under ``root`` and return its ground truth.

    Args:
        root: output directory; created if needed. It must not already hold a corpus
            (``videos/``, ``cropped_aligned/``, ``annotations/``, the test list) unless
            ``overwrite`` is True, which deletes exactly those entries first, so stale
            crops from an earlier run can never pose as frames of this one.
        n_videos: number of video files. One of them holds two people, so there are
            ``n_videos + 1`` ids. One labelled file has no audio stream; the last
            ``n_test`` (in a seeded order) are unlabelled test videos.
        seconds: mean duration; each video lasts ``seconds`` x U(0.8, 1.2).
        seed: everything (roles, fps, partitions, curves, looks, noise) derives from it.
        crop_size: side of the square face crops (Aff-Wild2's are 112).
        frame_size: height of the video frames (width is 1.5x, both even).
        sample_rate: audio sample rate of the mp4s (mono AAC).
        validation_fraction: share of labelled files in Validation_Set (at least one
            each of train and validation when two or more files are labelled).
        n_test: number of unlabelled test-list videos.
        fps_options: frame rates; each appears at least once when ``n_videos`` allows,
            the remaining videos draw from the first two.
        overwrite: replace an existing corpus in ``root``.
        progress: show a tqdm bar over videos.

    Returns:
        :class:`SynthCorpus` with one :class:`SynthVideo` per id, sorted by id.
    """
    if n_videos < 1:
        raise VafusionError(f"n_videos={n_videos}: need at least 1 video; pass n_videos >= 1")
    if not 0 <= n_test < n_videos:
        raise VafusionError(f"n_test={n_test}: must be in [0, n_videos - 1] = [0, {n_videos - 1}]; lower n_test")
    if not 0.0 <= validation_fraction < 1.0:
        raise VafusionError(f"validation_fraction={validation_fraction}: must be in [0, 1); pass e.g. 0.34")
    if seconds <= 0 or crop_size < 16 or frame_size < 32 or sample_rate < 8000 or not fps_options:
        raise VafusionError(
            "make_corpus: need seconds > 0, crop_size >= 16, frame_size >= 32, sample_rate >= 8000 and "
            "at least one fps option; fix the arguments"
        )
    root = _prepare_root(root, overwrite)
    plans = _plan_corpus(
        n_videos=n_videos,
        seconds=seconds,
        seed=seed,
        frame_size=frame_size,
        validation_fraction=validation_fraction,
        n_test=n_test,
        fps_options=fps_options,
    )
    iterator: Any = plans
    if progress:
        from tqdm import tqdm

        iterator = tqdm(plans, desc="synth videos", unit="video")
    jpeg = _BackgroundWriter()
    try:
        for plan in iterator:
            _render_video(plan, root, crop_size, frame_size, sample_rate, jpeg)
    finally:
        jpeg.close()

    videos = sorted((v for plan in plans for v in _to_synth_videos(plan)), key=lambda v: v.id)
    test_list = root / TEST_LIST_NAME
    test_ids = [v.id for v in videos if v.partition == "test"]
    test_list.write_text("".join(f"{vid}\n" for vid in test_ids), encoding="ascii")
    return SynthCorpus(root=root, videos=videos, test_list=test_list)


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
    (file ``videos/align.mp4``); no crops or labels are missing.
    """
    if n_frames < 2 or fps <= 0:
        raise VafusionError(f"make_alignment_corpus: need n_frames >= 2 and fps > 0, got {n_frames}, {fps}; fix the arguments")
    for name, frames in (("beep_frames", beep_frames), ("marker_frames", marker_frames)):
        bad = [k for k in frames if not 1 <= k <= n_frames]
        if bad:
            raise VafusionError(f"{name}={bad}: frames are 1-based and must lie in [1, {n_frames}]; fix the list")
    if frame_times is not None and (len(frame_times) != n_frames or frame_times[0] != 0
                                    or not (np.diff(frame_times) > 0).all()):
        raise VafusionError(f"make_alignment_corpus: frame_times must be {n_frames} increasing instants from 0")
    instants = np.arange(n_frames) / fps if frame_times is None else np.asarray(frame_times, dtype=np.float64)
    root = _prepare_root(root, overwrite)
    name = "align"
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

    markers = np.zeros(n_frames, dtype=bool)
    markers[np.asarray(list(marker_frames), dtype=int) - 1] = True
    h, w = _frame_shape(frame_size)
    crop_dir = root / "cropped_aligned" / name
    crop_dir.mkdir(parents=True, exist_ok=True)
    grey_crop = np.full((crop_size, crop_size, 3), 128, np.uint8)
    white_crop = np.full((crop_size, crop_size, 3), 255, np.uint8)
    writer = _Mp4Writer(root / "videos" / f"{name}.mp4", fps, h, w, audio, sample_rate, frame_times)
    try:
        for k in range(1, n_frames + 1):
            marker = markers[k - 1]
            Image.fromarray(white_crop if marker else grey_crop).save(crop_dir / f"{k:05d}.jpg", quality=JPEG_QUALITY)
            writer.add_frames(np.full((1, h, w, 3), 255 if marker else 128, np.uint8))
    finally:
        writer.close()

    valence = _quantise(-1.0 + 2.0 * np.arange(n_frames) / (n_frames - 1))
    arousal = _quantise(-valence)
    no = np.zeros(n_frames, dtype=bool)
    _write_annotation(root / ANNOTATION_DIR / PARTITION_DIRS["train"] / f"{name}.txt", valence, arousal, no)
    test_list = root / TEST_LIST_NAME
    test_list.write_text("", encoding="ascii")
    video = SynthVideo(
        id=name,
        video_name=name,
        fps=_exact_fps(fps),
        n_frames=n_frames,
        partition="train",
        valence=valence,
        arousal=arousal,
        label_missing=no,
        crop_missing=no.copy(),
        has_audio=True,
        speaks=True,
    )
    return SynthCorpus(root=root, videos=[video], test_list=test_list)
