"""Five-point alignment: a similarity transform (least squares) onto the standard template, one warp per face.

Why this template: the 112 x 112 five-point template (eye centres, nose tip, mouth corners) is the
one the ArcFace family and the Aff-Wild2 organisers' ``cropped_aligned`` crops use, so crops written
by ``vafusion faces`` look like the corpus's own and a backbone trained on either sees the same
framing. Points are (x, y) in pixel-index coordinates (the centre of pixel i is i), in the order
image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner.

The warp runs on the device for every face of a batch at once (``grid_sample``, bilinear), so
alignment costs little next to detection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPLATE_112 = torch.tensor(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=torch.float64,
)
"""The five target points of a 112 x 112 crop."""


def template(size: int = 112, margin: float = 0.0) -> torch.Tensor:
    """The target points of a ``size`` x ``size`` crop; ``margin`` > 0 shows more around the face
    (the points move toward the centre by 1 / (1 + margin))."""
    centre = (112 - 1) / 2
    points = centre + (TEMPLATE_112 - centre) / (1 + margin)
    return (points + 0.5) * (size / 112) - 0.5


def similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) taking each ``src`` (N, 5, 2)
    onto ``dst`` (5, 2): the (N, 2, 3) matrices [[a, -b, tx], [b, a, ty]]."""
    src = src.to(torch.float64)
    dst = dst.to(src)
    s0, d0 = src.mean(dim=1, keepdim=True), dst.mean(dim=0)
    s, d = src - s0, dst - d0
    norm = (s**2).sum(dim=(1, 2)).clamp_min(1e-12)
    a = (s * d).sum(dim=(1, 2)) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(dim=1) / norm
    rot = torch.stack([torch.stack([a, -b], dim=1), torch.stack([b, a], dim=1)], dim=1)  # (N, 2, 2)
    shift = d0 - (rot @ s0.transpose(1, 2)).squeeze(-1)
    return torch.cat([rot, shift[..., None]], dim=2)


def apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``points`` (N, K, 2) moved by ``matrix`` (N, 2, 3)."""
    m = matrix.to(points.dtype)
    return points @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


def invert(matrix: torch.Tensor) -> torch.Tensor:
    """The inverse of similarity matrices (N, 2, 3)."""
    rot, shift = matrix[:, :, :2], matrix[:, :, 2:]
    inv = torch.linalg.inv(rot)
    return torch.cat([inv, -inv @ shift], dim=2)


def warp(frames: torch.Tensor, matrix: torch.Tensor, size: int) -> torch.Tensor:
    """Crops (N, 3, size, size) uint8: crop n samples ``frames[n]`` (N, 3, H, W) where ``matrix[n]`` sends it
    (frame pixel -> crop pixel); outside the frame is black."""
    height, width = frames.shape[-2:]
    axis = torch.arange(size, dtype=torch.float64, device=frames.device)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(1, -1, 2)
    source = apply(invert(matrix.to(frames.device)), grid.expand(len(frames), -1, -1))
    scale = torch.tensor([2 / width, 2 / height], dtype=torch.float64, device=frames.device)
    normed = ((source + 0.5) * scale - 1).view(len(frames), size, size, 2)
    out = F.grid_sample(frames.float(), normed.float(), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def align(frames: torch.Tensor, landmarks: torch.Tensor, size: int = 112, margin: float = 0.0) -> torch.Tensor:
    """The aligned crops of faces: ``frames`` (N, 3, H, W) uint8, one per face, and their ``landmarks`` (N, 5, 2)."""
    if len(frames) == 0:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8, device=frames.device)
    return warp(frames, similarity(landmarks, template(size, margin)), size)
