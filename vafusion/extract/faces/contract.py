"""The public face-detector contract, and the checks vafusion applies to every detector.

A detector (README, "Face detectors") declares ``kind = "detector"`` and a ``name``, and has
``provenance() -> dict`` (plain JSON: what weights and settings it detects with, written beside the
crops), ``to(device) -> detector`` and ``__call__(images)``: images a ``(B, 3, H, W)`` uint8 RGB
tensor on the device, returning one ``(boxes (N, 4), landmarks (N, 5, 2), scores (N,))`` per image:
boxes as x1, y1, x2, y2 and landmarks as (x, y) in pixels of that image, the points in the order
image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.

Why the checks: a detector may be code vafusion did not write. Whatever it returns that would put a
wrong crop in a corpus (a wrong count of images, shapes that disagree, NaN) becomes one
:class:`DetectorError` line naming it; the video in hand is reported and the others go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from vafusion.errors import VafusionError
from vafusion.plugins import FOREIGN, failure


@runtime_checkable
class Detector(Protocol):
    """Faces in frames: boxes, five landmarks and a score per face."""

    kind: Literal["detector"]
    name: str

    def provenance(self) -> dict: ...

    def to(self, device: torch.device) -> Detector: ...

    def __call__(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]: ...


class DetectorError(VafusionError):
    """A detector broke the contract (or raised)."""


@dataclass(frozen=True)
class Faces:
    """The faces of one image, checked and on the CPU: ``boxes`` (N, 4), ``landmarks`` (N, 5, 2), ``scores`` (N,)."""

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def check_declaration(det: object, source: str) -> Detector:
    """Check what ``det`` declares; ``source`` names it in every message."""
    if getattr(det, "kind", None) != "detector":
        raise DetectorError(f"detector {source}: kind must be 'detector', got {getattr(det, 'kind', None)!r}")
    if not isinstance(getattr(det, "name", None), str) or not det.name:  # type: ignore[attr-defined]
        raise DetectorError(f"detector {source}: name must be a non-empty string")
    for method in ("provenance", "to", "__call__"):
        if not callable(getattr(det, method, None)):
            raise DetectorError(f"detector {source}: has no {method}() method (see README, Face detectors)")
    prov = det.provenance()  # type: ignore[attr-defined]
    if not isinstance(prov, dict):
        raise DetectorError(f"detector {source}: provenance() must return a dict, got {type(prov).__name__}")
    try:
        json.dumps(prov, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise DetectorError(f"detector {source}: provenance() is not plain JSON ({e})") from None
    return det  # type: ignore[return-value]


def _array(value: Any, shape: tuple[int, ...], what: str, source: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise DetectorError(f"detector {source}: {what} must be a numeric tensor, got {type(value).__name__}")
    arr = value.astype(np.float32, copy=False)
    if arr.shape != shape:
        raise DetectorError(f"detector {source}: {what} has shape {arr.shape}, expected {shape}")
    if not np.isfinite(arr).all():
        raise DetectorError(f"detector {source}: {what} holds NaN or inf")
    return arr


def check_output(out: object, n_images: int, source: str) -> list[Faces]:
    """One :class:`Faces` per image from what the detector returned for ``n_images`` images."""
    if not isinstance(out, (list, tuple)) or len(out) != n_images:
        got = f"{len(out)} results" if isinstance(out, (list, tuple)) else type(out).__name__
        raise DetectorError(f"detector {source}: returned {got} for {n_images} images; return one per image")
    faces = []
    for item in out:
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise DetectorError(f"detector {source}: each image's result must be (boxes, landmarks, scores)")
        n = len(item[2])
        faces.append(
            Faces(
                _array(item[0], (n, 4), "boxes", source),
                _array(item[1], (n, 5, 2), "landmarks", source),
                _array(item[2], (n,), "scores", source),
            )
        )
    return faces


def guarded_detect(det: Detector, images: torch.Tensor, source: str) -> list[Faces]:
    """``det(images)`` checked; anything it raises becomes one :class:`DetectorError` line."""
    try:
        out = det(images)
    except VafusionError:
        raise
    except FOREIGN as e:  # sys.exit() included: the video is reported, the run goes on
        raise DetectorError(f"detector {source} {failure(e)}") from e
    return check_output(out, len(images), source)
