"""Drawing the face of a planned person: where valence (and faintly arousal) becomes pixels.

Why it looks like this: valence is drawn boldly (mouth curvature, frowning brows, a large
warm/cool skin tint and brightness), since big low-frequency colour changes survive
random-weight conv nets with global average pooling; arousal only opens the eyes a little
and brightens the skin slightly, as a faint visual cue. Coordinates are normalised to the
face box, so the aligned crop and the face in the scene are one drawing at two sizes.
"""

from __future__ import annotations

import numpy as np

from vafusion.synth.plan import Person

_MOUTH_RGB = np.array([130.0, 30.0, 45.0], np.float32)
_EYE_RGB = np.array([35.0, 25.0, 25.0], np.float32)
_TINT = np.array([38.0, 6.0, -34.0], dtype=np.float32)
"""Skin colour change per unit of valence: warm for positive, cool for negative."""


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x right, y down), shapes (1, 1, S) and (1, S, 1)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return c[None, None, :], c[None, :, None]


def soft(d: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased inside-indicator of a signed distance-like field ``d`` (> 0 inside)."""
    return np.clip(d * (size * 0.5) + 0.5, 0.0, 1.0)


def rows(gy: np.ndarray, lo: float, hi: float) -> slice:
    """Row band of the grid that can hold a feature spanning face rows [lo, hi] under jitter.

    Head jitter moves the face by at most 0.05 and scales it by at most 4 % (see
    :func:`vafusion.synth.plan.make_person`); the margin also covers anti-aliasing, so
    drawing only these rows gives the same pixels as drawing all of them, at a fraction
    of the cost.
    """
    c = gy.ravel()
    margin = 0.1 + 4.0 / c.size  # jitter + anti-aliasing, which is wider in small images
    idx = np.flatnonzero((c >= lo * 1.05 - margin) & (c <= hi * 1.05 + margin))
    return slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0)


def _coordinates(size: int, person: Person, frames: slice, jitter: bool) -> tuple[np.ndarray, np.ndarray]:
    """Face-box coordinates per pixel: moved and scaled per frame with ``jitter`` (aligned
    crops move a little), else the static grid, so the static parts are drawn once."""
    gx, gy = grid(size)
    if not jitter:
        return gx, gy  # (1, 1, S), (1, S, 1)
    j = person.jitter[frames].astype(np.float32)
    scale = np.exp(j[:, 2])[:, None, None]
    x = (gx - j[:, 0, None, None]) / scale  # (n, 1, S)
    y = (gy - j[:, 1, None, None]) / scale  # (n, S, 1)
    return x, y


def _eyes(
    mask: np.ndarray, x: np.ndarray, y: np.ndarray, band: slice, a: np.ndarray, px: np.float32, size: int
) -> None:
    """Two eyes into ``mask``; openness grows with arousal (the faint visual arousal cue)."""
    ys = y[:, band]
    eye_h = np.float32(0.045) + np.float32(0.012) * (a + 1.0) + 0.5 * px
    for ex in (-0.32, 0.32):
        e = ((x - np.float32(ex)) / np.float32(0.15)) ** 2 + ((ys + np.float32(0.16)) / eye_h) ** 2
        np.maximum(mask[:, band], soft((1.0 - e) * np.float32(0.06), size), out=mask[:, band])


def _brows(
    mask: np.ndarray, x: np.ndarray, y: np.ndarray, band: slice, v: np.ndarray, px: np.float32, size: int
) -> None:
    """Two brows into ``mask``: inner ends pulled down in a frown (v < 0), raised a little for v > 0."""
    ys = y[:, band]
    frown = np.minimum(v, 0.0)
    lift = np.float32(0.05) * np.maximum(v, 0.0)
    for side in (-1.0, 1.0):
        bx = x - np.float32(side * 0.32)
        inner = np.float32(-side) * bx  # > 0 toward the nose
        by = np.float32(-0.38) - lift - np.float32(0.14 / 0.18) * frown * inner
        d = np.abs(ys - by)
        within = soft((np.float32(0.2) - np.abs(bx)) * np.float32(0.5), size)
        stroke = soft((np.float32(0.035) + px - d) * np.float32(0.5), size) * within
        np.maximum(mask[:, band], stroke, out=mask[:, band])


def _mouth(
    mask: np.ndarray, x: np.ndarray, y: np.ndarray, band: slice, v: np.ndarray, px: np.float32, size: int
) -> None:
    """The mouth into ``mask``: a bold curve, corners up (smile) for v > 0, down (frown) for v < 0."""
    ys = y[:, band]
    half_w = np.float32(0.34)
    ym = np.float32(0.45) + np.float32(0.24) * v * (np.float32(0.5) - (x / half_w) ** 2)
    mask[:, band] = soft((np.float32(0.05) + px - np.abs(ys - ym)) * np.float32(0.5), size) * soft(
        (half_w - np.abs(x)) * np.float32(0.5), size
    )


def _feature_masks(
    x: np.ndarray, y: np.ndarray, gy: np.ndarray, alpha: np.ndarray, v: np.ndarray, a: np.ndarray, n: int, size: int
) -> tuple[np.ndarray, list[slice]]:
    """Masks of hair, eyes, brows and lips, (4, n, S, S), and the row band each can occupy.

    Only the band rows of eyes, brows and lips are drawn (see :func:`rows`): the same
    pixels at a fraction of the cost.
    """
    px = np.float32(2.0 / size)  # one pixel in normalised units, keeps strokes >= ~1.5 px
    masks = np.zeros((4, n, size, size), dtype=np.float32)
    masks[0] = soft((-0.5 - y) * np.float32(2.0) + np.float32(0.3) * x**2, size) * alpha  # hair cap
    bands = [
        slice(0, size),  # hair: anywhere
        rows(gy, -0.16 - 0.1, -0.16 + 0.1),
        rows(gy, -0.6 - 0.06, -0.22 + 0.06),
        rows(gy, 0.33 - 0.08, 0.57 + 0.08),
    ]
    _eyes(masks[1], x, y, bands[1], a, px, size)
    _brows(masks[2], x, y, bands[2], v, px, size)
    _mouth(masks[3], x, y, bands[3], v, px, size)
    return masks, bands


def _paint(
    person: Person,
    masks: np.ndarray,
    bands: list[slice],
    shade: np.ndarray,
    v: np.ndarray,
    a: np.ndarray,
    n: int,
    size: int,
) -> np.ndarray:
    """Colour the face: the masks do not overlap, so each channel is skin * (1 - cover) plus
    the sum of mask * colour. Skin is the person's colour + valence tint (warm/bright vs
    cool/dark) + a faint arousal brightness."""
    hair_rgb = person.hair.astype(np.float32)
    colours = np.stack([hair_rgb, _EYE_RGB, 0.5 * hair_rgb, _MOUTH_RGB])
    skin_shade = shade * (1.0 - masks[0])  # (n, S, S)
    for k in (1, 2, 3):
        skin_shade[:, bands[k]] -= shade[:, bands[k]] * masks[k, :, bands[k]]
    img = np.empty((n, size, size, 3), dtype=np.float32)
    for c in range(3):
        skin = np.float32(person.skin[c]) + v * _TINT[c] + np.float32(10.0) * v + np.float32(3.0) * a  # (n, 1, 1)
        ch = skin * skin_shade
        ch += masks[0] * colours[0, c]
        for k in (1, 2, 3):
            ch[:, bands[k]] += masks[k, :, bands[k]] * colours[k, c]
        img[..., c] = ch
    return img


def render_faces(size: int, person: Person, frames: slice, jitter: bool) -> tuple[np.ndarray, np.ndarray]:
    """Draw the face of ``person`` for ``frames`` at ``size`` px: (n, S, S, 3) RGB and alpha.

    Vectorised over frames and pixels; the alpha is (n, S, S) with ``jitter`` (aligned
    crops move a little), else (1, S, S).
    """
    n = frames.stop - frames.start
    v = person.valence[frames].astype(np.float32)[:, None, None]
    a = person.arousal[frames].astype(np.float32)[:, None, None]
    x, y = _coordinates(size, person, frames, jitter)
    # Head: ellipse; soft shading toward the rim.
    r = np.sqrt((x / np.float32(0.74)) ** 2 + (y / np.float32(0.92)) ** 2)
    alpha = soft((1.0 - r) * np.float32(0.8), size)
    shade = 1.0 - np.float32(0.18) * (x**2 + y**2)
    masks, bands = _feature_masks(x, y, grid(size)[1], alpha, v, a, n, size)
    return _paint(person, masks, bands, shade, v, a, n, size), alpha
