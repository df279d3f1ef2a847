"""Every random choice of a generated corpus, drawn up front into plain data (no pixels yet).

Why apart from rendering: drawing all choices first, from seeded generators in a fixed
order, is what makes the same seed give the same corpus whatever the rendering does
(chunk sizes, threads, encoders). A plan is cheap, so tests and callers can reason about
roles, partitions and curves without touching media.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass
class Person:
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
class VideoPlan:
    """One video file: its timing and role, its one or two persons, its scene and the seeds
    of the noise that rendering draws later."""

    name: str
    fps: float
    n_frames: int
    partition: str
    has_audio: bool
    persons: list[Person]
    background: np.ndarray  # (3,) RGB
    bg_gradient: np.ndarray  # (3,) RGB change from left to right
    illumination: np.ndarray  # (T,) multiplicative drift
    scene_seed: np.random.SeedSequence
    voice_seed: np.random.SeedSequence


@dataclass
class _Roles:
    """Which video indices are test, labelled, the two-person one and the silent one."""

    test: set[int]
    labelled: list[int]
    two_person: int | None
    no_audio: int | None


def smooth_curve(rng: np.random.Generator, t: np.ndarray, bias: float) -> np.ndarray:
    """tanh(bias + offset + three slow sinusoids): smooth, within (-1, 1), different per call."""
    freqs = rng.uniform(0.06, 0.45, 3)
    amps = rng.uniform(0.3, 0.7, 3)
    phases = rng.uniform(0.0, 2.0 * np.pi, 3)
    offset = rng.normal(0.0, 0.35)
    x = bias + offset + (amps[:, None] * np.sin(2.0 * np.pi * freqs[:, None] * t[None, :] + phases[:, None])).sum(0)
    return np.tanh(x)


def quantise(x: np.ndarray) -> np.ndarray:
    """Round to the 4 decimals written in the annotation files (so ground truth == file)."""
    return (np.round(x.astype(np.float64), 4) + 0.0).astype(np.float32)


def runs(rng: np.random.Generator, n: int, n_runs: int, min_len: int, max_len: int) -> np.ndarray:
    """Boolean mask with ``n_runs`` runs of ``min_len..max_len`` True values (may touch)."""
    mask = np.zeros(n, dtype=bool)
    for _ in range(n_runs):
        length = int(rng.integers(min_len, max_len + 1))
        if length >= n:
            continue
        start = int(rng.integers(0, n - length + 1))
        mask[start : start + length] = True
    return mask


def random_walk(rng: np.random.Generator, n: int, scale: float, smooth: int) -> np.ndarray:
    """Smoothed, mean-removed random walk of ``n`` steps with peak about ``scale``."""
    steps = rng.normal(0.0, 1.0, n + smooth)
    walk = np.cumsum(steps)
    kernel = np.ones(smooth) / smooth
    walk = np.convolve(walk, kernel, mode="valid")[:n]
    walk = walk - walk.mean()
    peak = np.abs(walk).max()
    return walk * (scale / peak) if peak > 0 else walk


def exact_fps(fps: float) -> float:
    """The rate the container will record (a fraction with denominator <= 1001, so 29.97
    and 30000/1001 both survive), as the float that :class:`SynthVideo` reports."""
    return float(Fraction(float(fps)).limit_denominator(1001))


def frame_shape(frame_size: int) -> tuple[int, int]:
    """(height, width) of the scene: ``frame_size`` high, 3:2 wide, both even (yuv420p)."""
    h = frame_size + (frame_size % 2)
    w = 2 * int(round(h * 0.75))
    return h, w


def _signals(
    rng: np.random.Generator, fps: float, n: int, labelled: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Valence, arousal and the two gap masks (missing crops, ``-5`` labels) of one person.

    Gaps come in short runs, about one per 4-6 s, as face detectors and annotators lose
    a face for a moment rather than for single frames.
    """
    t = np.arange(n) / fps
    seconds = n / fps
    valence = quantise(smooth_curve(rng, t, bias=0.0))
    arousal = quantise(smooth_curve(rng, t, bias=0.25))
    n_gap_runs = max(1, int(round(seconds / 4.0 * rng.uniform(0.6, 1.4))))
    crop_missing = runs(rng, n, n_gap_runs, 2, max(3, int(0.25 * fps)))
    n_label_runs = int(rng.integers(0, max(1, int(round(seconds / 5.0))) + 1)) if labelled else 0
    label_missing = runs(rng, n, n_label_runs, 3, max(4, int(0.4 * fps)))
    return valence, arousal, crop_missing, label_missing


def _motion(
    rng: np.random.Generator, fps: float, n: int, face_box: tuple[int, int, int], frame_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Head motion: the aligned crop's small jitter (dx, dy, log-scale) and the face box's
    drift in the scene, both smooth over about a second."""
    smooth = max(2, int(fps))
    jitter = np.stack(
        [
            random_walk(rng, n, 0.05, smooth),
            random_walk(rng, n, 0.04, smooth),
            random_walk(rng, n, 0.04, smooth),
        ],
        axis=1,
    )
    x0, y0, size = face_box
    h, w = frame_hw
    dx = np.round(random_walk(rng, n, 0.08 * size, smooth)).astype(int)
    dy = np.round(random_walk(rng, n, 0.05 * size, smooth)).astype(int)
    xs = np.clip(x0 + dx, 0, w - size)
    ys = np.clip(y0 + dy, 0, h - size)
    return jitter, np.stack([xs, ys], axis=1)


def make_person(
    rng: np.random.Generator,
    vid: str,
    fps: float,
    n: int,
    labelled: bool,
    face_box: tuple[int, int, int],
    frame_hw: tuple[int, int],
    seed: np.random.SeedSequence,
) -> Person:
    """Draw one person: signals, then looks (skin tone, hair), then motion, in that order."""
    valence, arousal, crop_missing, label_missing = _signals(rng, fps, n, labelled)
    tone = rng.uniform(0.55, 1.0)
    skin = np.array([235.0, 190.0, 160.0]) * tone + rng.normal(0.0, 6.0, 3)
    hair = rng.uniform(20.0, 120.0) * np.array([1.0, 0.8, 0.6]) + rng.normal(0.0, 8.0, 3)
    jitter, scene_xy = _motion(rng, fps, n, face_box, frame_hw)
    return Person(
        id=vid,
        valence=valence,
        arousal=arousal,
        label_missing=label_missing,
        crop_missing=crop_missing,
        skin=skin,
        hair=hair,
        jitter=jitter,
        scene_xy=scene_xy,
        scene_size=face_box[2],
        seed=seed,
    )


def _roles(rng: np.random.Generator, n_videos: int, n_test: int) -> _Roles:
    """roles[0] -> two-person (labelled), roles[1] -> no audio (labelled when possible),
    the last ``n_test`` roles -> unlabelled test videos. One seeded permutation decides all,
    so every quirk lands on a different file."""
    roles = rng.permutation(n_videos)
    test_set = set(int(i) for i in roles[n_videos - n_test :]) if n_test else set()
    labelled = [int(i) for i in roles if int(i) not in test_set]
    two_person = labelled[0] if labelled else None
    no_audio = labelled[1] if len(labelled) > 1 else (int(roles[1]) if n_videos > 1 else None)
    return _Roles(test=test_set, labelled=labelled, two_person=two_person, no_audio=no_audio)


def _frame_rates(rng: np.random.Generator, n_videos: int, fps_options: Sequence[float]) -> np.ndarray:
    """Every option appears once (when there are enough videos), the rest draw from the first two."""
    fps_list = [float(f) for f in fps_options]
    fps_of = np.empty(n_videos, dtype=float)
    order = rng.permutation(n_videos)
    for j, i in enumerate(order):
        fps_of[i] = fps_list[j] if j < len(fps_list) else fps_list[int(rng.integers(0, min(2, len(fps_list))))]
    return fps_of


def _validation_set(rng: np.random.Generator, labelled: list[int], validation_fraction: float) -> set[int]:
    """Labelled files in Validation_Set (a file's ids stay together); at least one each of
    train and validation when two or more files are labelled and the fraction is > 0."""
    n_val = int(round(validation_fraction * len(labelled)))
    if validation_fraction > 0 and len(labelled) >= 2:
        n_val = min(max(n_val, 1), len(labelled) - 1)
    elif len(labelled) < 2:
        n_val = 0
    return set(int(i) for i in rng.permutation(labelled)[:n_val])


def _face_boxes(
    vrng: np.random.Generator, name: str, two_person: bool, h: int, w: int
) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Ids and scene face boxes (x0, y0, side) of one video: two fixed side-by-side boxes
    with ``_left``/``_right`` ids, or one box of random size and horizontal position."""
    if two_person:
        size = int(round(0.5 * h))
        boxes = [
            (int(round(0.27 * w - size / 2)), int(round(0.45 * h - size / 2)), size),
            (int(round(0.73 * w - size / 2)), int(round(0.5 * h - size / 2)), size),
        ]
        return [f"{name}_left", f"{name}_right"], boxes
    size = int(round(vrng.uniform(0.55, 0.7) * h))
    cx = vrng.uniform(0.35, 0.65) * w
    return [name], [(int(round(cx - size / 2)), int(round(0.5 * h - size / 2)), size)]


def _plan_video(
    i: int, seq: np.random.SeedSequence, fps: float, partition: str, roles: _Roles, seconds: float, h: int, w: int
) -> VideoPlan:
    """Draw video ``i`` from its own seed: length, name, persons, then the scene."""
    vrng = np.random.default_rng(seq)
    n = max(2, int(round(seconds * vrng.uniform(0.8, 1.2) * fps)))
    name = f"{i + 1}-{fps:g}-{w}x{h}" if i % 3 else f"video{i + 1}"
    # Independent streams: [0] scene noise, [1] voice, [2], [3] crop noise per person.
    seqs = seq.spawn(4)
    ids, boxes = _face_boxes(vrng, name, i == roles.two_person, h, w)
    persons = [
        make_person(vrng, vid, fps, n, partition != "test", box, (h, w), seqs[2 + k])
        for k, (vid, box) in enumerate(zip(ids, boxes))
    ]
    has_audio = i != roles.no_audio
    for k, p in enumerate(persons):
        p.speaks = has_audio and k == 0
    t = np.arange(n) / fps
    illum = 1.0 + 0.06 * np.sin(2 * np.pi * vrng.uniform(0.05, 0.2) * t + vrng.uniform(0, 2 * np.pi))
    return VideoPlan(
        name=name,
        fps=fps,
        n_frames=n,
        partition=partition,
        has_audio=has_audio,
        persons=persons,
        background=vrng.uniform(40.0, 200.0, 3),
        bg_gradient=vrng.normal(0.0, 25.0, 3),
        illumination=illum.astype(np.float32),
        scene_seed=seqs[0],
        voice_seed=seqs[1],
    )


def plan_corpus(
    *,
    n_videos: int,
    seconds: float,
    seed: int,
    frame_size: int,
    validation_fraction: float,
    n_test: int,
    fps_options: Sequence[float],
) -> list[VideoPlan]:
    """Draw every random choice of the corpus (roles, fps, partitions, curves, looks).

    The corpus-wide choices come from the first child of ``seed``, each video's from its
    own child, so changing one video's drawing never shifts another's.
    """
    children = np.random.SeedSequence(seed).spawn(n_videos + 1)
    rng = np.random.default_rng(children[0])
    roles = _roles(rng, n_videos, n_test)
    fps_of = _frame_rates(rng, n_videos, fps_options)
    val_set = _validation_set(rng, roles.labelled, validation_fraction)
    h, w = frame_shape(frame_size)
    plans = []
    for i, seq in enumerate(children[1:]):
        partition = "test" if i in roles.test else ("validation" if i in val_set else "train")
        plans.append(_plan_video(i, seq, exact_fps(fps_of[i]), partition, roles, seconds, h, w))
    return plans
