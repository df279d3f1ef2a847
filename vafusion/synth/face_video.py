"""Raw videos of a real face for ``vafusion faces``: a photo moving, scaling and rolling, with blank spans.

Why: the face pipeline (detect, track, align) must be tested on a real face, which no generator of
ours draws; a photo that a package ships (the caller passes it, e.g. scikit-image's astronaut, public
domain) moved about on a plain background is a real face whose every frame is known. Nothing here
needs the face pipeline, so the tests and the benchmark share one generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vafusion.synth.media import Mp4Writer

BACKGROUND = (96, 110, 120)


@dataclass(frozen=True)
class FaceClip:
    """What was drawn: ``shown[k - 1]`` is True where frame k shows the face(s); ``centres[k - 1, p]`` is
    person p's patch centre (x, y) in frame k."""

    path: Path
    n_frames: int
    shown: np.ndarray
    centres: np.ndarray


def _patch(face: np.ndarray, width: int, angle: float, mirror: bool) -> Image.Image:
    img = Image.fromarray(face)
    if mirror:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    height = round(width * face.shape[0] / face.shape[1])
    img = img.resize((width, height), Image.Resampling.BILINEAR)
    return img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=BACKGROUND)


def face_clip(
    path: str | Path,
    face: np.ndarray,
    n_frames: int = 50,
    size: tuple[int, int] = (256, 192),
    persons: int = 1,
    blank: Sequence[tuple[int, int]] = (),
    fps: float = 25.0,
    width: int = 110,
) -> FaceClip:
    """Write an mp4 of ``face`` (an RGB photo cropped around one face) moving over ``n_frames`` frames.

    Each person's patch drifts sideways, grows and shrinks by about 15 % and rolls up to 8 degrees,
    on smooth paths; two persons stand side by side (the right one mirrored). Frames in ``blank``
    (1-based, inclusive ``(first, last)`` spans) show the background only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    shown = np.ones(n_frames, dtype=bool)
    for first, last in blank:
        shown[first - 1 : last] = False
    centres = np.zeros((n_frames, persons, 2))
    writer = Mp4Writer(path, fps, h, w, None, 16000)
    for k in range(n_frames):
        t = k / max(1, n_frames - 1)
        canvas = Image.new("RGB", (w, h), BACKGROUND)
        for p in range(persons):
            phase = 2 * np.pi * t + p * 1.3
            x = w * ((p + 0.5) / persons) + 0.08 * w * np.sin(phase) / persons
            y = h * 0.5 + 0.05 * h * np.cos(phase)
            centres[k, p] = (x, y)
            if shown[k]:
                patch = _patch(
                    face, round(width / persons**0.5 * (1 + 0.15 * np.sin(2 * phase))), 8 * np.sin(phase), p == 1
                )
                canvas.paste(patch, (round(x - patch.width / 2), round(y - patch.height / 2)))
        writer.add_frames(np.asarray(canvas)[None])
    writer.close()
    return FaceClip(path, n_frames, shown, centres)
