"""Rendering one planned video: the scene with its faces, the aligned crops, the sound
track and the annotation files.

Why in chunks of frames: drawing is vectorised over frames, and a fixed chunk size bounds
memory for long videos while keeping the draws of the noise generators in a fixed order
(the chunk size is part of what makes the same seed give the same bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vafusion.synth.faces import render_faces
from vafusion.synth.layout import PARTITION_DIRS, annotation_path, crop_dir, video_path, write_annotation
from vafusion.synth.media import BackgroundWriter, Mp4Writer, to_uint8, write_crops
from vafusion.synth.plan import Person, VideoPlan, frame_shape
from vafusion.synth.voice import voice

CHUNK = 128
"""Frames rendered at once: bounds memory for long videos, fixed for determinism."""
NOISE_BANK = 24
"""Sensor-noise images per video and person."""


def noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Uniform noise with the given standard deviation (8x cheaper to draw than Gaussian)."""
    half = np.float32(std * np.sqrt(3.0))
    out = rng.random(shape, dtype=np.float32)
    out -= np.float32(0.5)
    out *= 2.0 * half
    return out


class _SensorNoise:
    """Per-frame sensor noise drawn from a small bank of noise images: drawing fresh noise
    for every pixel of every frame would dominate the generation time."""

    def __init__(self, seed: np.random.SeedSequence, shape: tuple[int, ...], std: float) -> None:
        self.rng = np.random.default_rng(seed)
        self.bank = noise(self.rng, (NOISE_BANK, *shape), std)

    def frames(self, m: int) -> np.ndarray:
        """Noise for the next ``m`` frames."""
        return self.bank[self.rng.integers(0, NOISE_BANK, m)]


@dataclass
class _Backdrop:
    """What does not change over a video: the scene's background (colour, horizontal
    gradient, a soft blob) and the crops' background (the same colours, gentler)."""

    scene: np.ndarray  # (H, W, 3)
    crop: np.ndarray  # (1, S, 3)

    @classmethod
    def of(cls, plan: VideoPlan, h: int, w: int, crop_size: int) -> _Backdrop:
        xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :, None]
        ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None, None]
        blob = np.exp(-((xs - 0.3) ** 2 + (ys + 0.2) ** 2) / 0.05)
        scene = plan.background.astype(np.float32) + plan.bg_gradient.astype(np.float32) * xs + 30.0 * blob
        cx = np.linspace(-0.5, 0.5, crop_size, dtype=np.float32)[None, :, None]
        crop = plan.background.astype(np.float32) + 0.5 * plan.bg_gradient.astype(np.float32) * cx
        return cls(scene=scene, crop=crop)


def _paste_face(scene: np.ndarray, person: Person, sl: slice) -> None:
    """Composite ``person``'s face into the scene frames of ``sl`` at its drifting box
    (absent where the crop is missing: the face is turned away)."""
    s = person.scene_size
    face_s, alpha_s = render_faces(s, person, sl, jitter=False)
    al = alpha_s[0][..., None]  # static: the scene face moves as a whole
    for i in range(sl.stop - sl.start):
        if person.crop_missing[sl.start + i]:
            continue
        x0, y0 = person.scene_xy[sl.start + i]
        region = scene[i, y0 : y0 + s, x0 : x0 + s]
        region += al * (face_s[i] - region)


def _crops(
    person: Person, sl: slice, crop_size: int, backdrop: _Backdrop, illum: np.ndarray, sensor: _SensorNoise
) -> np.ndarray:
    """The aligned crops of ``person`` for the frames of ``sl``: jittered face over the crop
    background, lit like the scene, with sensor noise; uint8."""
    face, alpha = render_faces(crop_size, person, sl, jitter=True)
    crop = (backdrop.crop + alpha[..., None] * (face - backdrop.crop)) * illum
    crop += sensor.frames(sl.stop - sl.start)
    return to_uint8(crop)


def _audio(plan: VideoPlan, sample_rate: int) -> np.ndarray | None:
    """The sound track: the first person's voice for the video's whole length, or None."""
    if not plan.has_audio:
        return None
    n_samples = int(np.ceil(plan.n_frames / plan.fps * sample_rate))
    return voice(plan, plan.persons[0], n_samples, sample_rate)


def render_video(
    plan: VideoPlan, root: Path, crop_size: int, frame_size: int, sample_rate: int, jpeg: BackgroundWriter
) -> None:
    """Write the mp4, the crops (through ``jpeg``) and the annotation files of one video."""
    h, w = frame_shape(frame_size)
    audio = _audio(plan, sample_rate)
    scene_noise = _SensorNoise(plan.scene_seed, (h, w, 3), 2.0)
    crop_noise = [_SensorNoise(p.seed, (crop_size, crop_size, 3), 2.5) for p in plan.persons]
    backdrop = _Backdrop.of(plan, h, w, crop_size)
    crop_dirs = [crop_dir(root, p.id) for p in plan.persons]
    for d in crop_dirs:
        d.mkdir(parents=True, exist_ok=True)

    writer = Mp4Writer(video_path(root, plan.name), plan.fps, h, w, audio, sample_rate)
    try:
        for start in range(0, plan.n_frames, CHUNK):
            sl = slice(start, min(plan.n_frames, start + CHUNK))
            m = sl.stop - sl.start
            illum = plan.illumination[sl][:, None, None, None]
            scene = np.broadcast_to(backdrop.scene, (m, h, w, 3)).copy()
            for p, sensor, d in zip(plan.persons, crop_noise, crop_dirs):
                jpeg.submit(
                    write_crops, d, sl.start + 1, _crops(p, sl, crop_size, backdrop, illum, sensor), p.crop_missing[sl]
                )
                _paste_face(scene, p, sl)
            scene *= illum
            scene += scene_noise.frames(m)
            writer.add_frames(to_uint8(scene))
    finally:
        writer.close()

    if plan.partition in PARTITION_DIRS:
        for p in plan.persons:
            write_annotation(annotation_path(root, plan.partition, p.id), p.valence, p.arousal, p.label_missing)
