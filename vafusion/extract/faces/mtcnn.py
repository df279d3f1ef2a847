"""The built-in face detector: MTCNN (Zhang et al. 2016), a three-stage cascade with 5 landmarks.

Why MTCNN: its published weights (about 2 MB, MIT licence) ship inside a wheel that installs
beside any torch: the ``mtcnn`` package (``pip install vafusion[faces]`` brings it, with
``joblib`` and ``lz4``), so detection works offline from the first run and a test can load the
real weights. The networks here are our own torch modules (P-Net, R-Net, O-Net as the paper
describes them); only the weight arrays are read from the package's data folder, or from a
folder given as ``weights=DIR`` holding ``pnet.lz4``, ``rnet.lz4`` and ``onet.lz4``.

The weight files are joblib dumps (a pickle stream with the arrays inline). They are read by an
unpickler that resolves nothing but numpy's array classes, so a file cannot run code when it is
loaded, the rule every weight file of vafusion follows.

The cascade runs on the device over a batch of frames at once: one P-Net pass per pyramid scale
for the whole batch, then R-Net and O-Net over every candidate of every frame in one batch each.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align

from vafusion.errors import VafusionError
from vafusion.hashing import sha256_file

WEIGHT_FILES = ("pnet.lz4", "rnet.lz4", "onet.lz4")
CARRIER = "mtcnn"
"""The package whose wheel carries the published weights (its ``assets/weights`` folder)."""


def _conv(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k), nn.PReLU(cout)]


class _Net(nn.Module):
    """A trunk of conv + PReLU (+ pooling) and named heads; ``load`` takes the published arrays in order."""

    def load(self, arrays: Sequence[np.ndarray], source: str) -> None:
        params = [p for _, p in self.named_parameters()]
        if len(arrays) != len(params):
            raise VafusionError(f"{source}: {len(arrays)} arrays, {type(self).__name__} needs {len(params)}")
        for param, array in zip(params, arrays, strict=True):
            value = torch.from_numpy(np.ascontiguousarray(_to_torch_layout(array, param.dim())))
            if value.shape != param.shape:
                raise VafusionError(
                    f"{source}: an array of shape {tuple(array.shape)} does not fit {type(self).__name__} "
                    f"({tuple(param.shape)}); use the weights of the mtcnn package"
                )
            param.data.copy_(value.to(param.dtype))


def _to_torch_layout(array: np.ndarray, dims: int) -> np.ndarray:
    """Keras layouts -> torch: conv (kh, kw, in, out) -> (out, in, kh, kw); dense (in, out) -> (out, in);
    PReLU (1, 1, C) -> (C,)."""
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if array.ndim == 2 and dims == 2:
        return array.T
    return array.reshape(-1)


class PNet(_Net):
    """Proposal net: fully convolutional over a 12 x 12 window, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            *_conv(3, 10, 3), nn.MaxPool2d(2, 2, ceil_mode=True), *_conv(10, 16, 3), *_conv(16, 32, 3)
        )
        self.box = nn.Conv2d(32, 4, 1)
        self.face = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.box(h), F.softmax(self.face(h), dim=1)[:, 1]


class _Refiner(_Net):
    """R-Net (24 px) and O-Net (48 px): conv trunk, then dense layers over the (W, H, C)-ordered map,
    the order the published dense weights expect."""

    def __init__(self, trunk: list[nn.Module], flat: int, hidden: int, landmarks: bool) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*trunk)
        self.dense = nn.Sequential(nn.Linear(flat, hidden), nn.PReLU(hidden))
        self.box = nn.Linear(hidden, 4)
        self.points = nn.Linear(hidden, 10) if landmarks else None
        self.face = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        h = self.dense(self.trunk(x).permute(0, 3, 2, 1).flatten(1))
        points = self.points(h) if self.points is not None else None
        return self.box(h), points, F.softmax(self.face(h), dim=1)[:, 1]


def rnet() -> _Refiner:
    pool = nn.MaxPool2d(3, 2, ceil_mode=True)
    trunk = [*_conv(3, 28, 3), pool, *_conv(28, 48, 3), nn.MaxPool2d(3, 2), *_conv(48, 64, 2)]
    return _Refiner(trunk, 576, 128, landmarks=False)


def onet() -> _Refiner:
    trunk = [
        *_conv(3, 32, 3),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        *_conv(32, 64, 3),
        nn.MaxPool2d(3, 2),
        *_conv(64, 64, 3),
        nn.MaxPool2d(2, 2, ceil_mode=True),
        *_conv(64, 128, 2),
    ]
    return _Refiner(trunk, 1152, 256, landmarks=True)


class _ArraysOnly(pickle.Unpickler):
    """Marker base; the real class is built in :func:`read_arrays` (joblib is imported only when used)."""


_ALLOWED = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


def read_arrays(path: Path) -> list[np.ndarray]:
    """The list of arrays in a joblib + lz4 weight file, resolving only numpy's array classes."""
    try:
        import lz4.frame
        from joblib.numpy_pickle import NumpyUnpickler
    except ImportError as e:
        raise VafusionError(
            f"{path}: reading MTCNN weights needs joblib and lz4 ({e}); pip install vafusion[faces]"
        ) from e

    class Restricted(NumpyUnpickler):
        def find_class(self, module: str, name: str) -> object:
            if (module, name) not in _ALLOWED:
                raise pickle.UnpicklingError(f"{module}.{name} is not an array")
            return super().find_class(module, name)

    try:
        with lz4.frame.open(path, "rb") as f:
            arrays = Restricted(str(path), f, True).load()
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise VafusionError(f"{path}: not an MTCNN weight file ({e}); use the files of the mtcnn package") from None
    if not isinstance(arrays, list) or not all(isinstance(a, np.ndarray) for a in arrays):
        raise VafusionError(f"{path}: holds no list of arrays; use the files of the mtcnn package")
    return arrays


def default_weights_dir() -> Path:
    """The weights folder of the installed ``mtcnn`` package (found without importing it: it imports
    TensorFlow); one line saying how to get it when absent."""
    spec = importlib.util.find_spec(CARRIER)
    folder = Path(spec.origin).parent / "assets" / "weights" if spec and spec.origin else None
    if folder is None or not all((folder / n).is_file() for n in WEIGHT_FILES):
        raise VafusionError(
            "detector mtcnn: its weights come with the mtcnn package, which is not installed; "
            "pip install 'vafusion[faces]' (or give a folder: --detector-option weights=DIR "
            f"holding {', '.join(WEIGHT_FILES)})"
        )
    return folder


@dataclass(frozen=True)
class Thresholds:
    """The cascade's settings (the paper's defaults; O-Net at 0.8 as the reference release)."""

    min_face: float = 20.0
    scale_factor: float = 0.709
    pnet: float = 0.6
    rnet: float = 0.7
    onet: float = 0.8
    nms_scale: float = 0.5
    nms_pnet: float = 0.7
    nms_rnet: float = 0.7
    nms_onet: float = 0.7


def pyramid(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """Scales at which a ``min_face`` face becomes P-Net's 12 px window, down to a 12 px image."""
    scale = 12.0 / min_face
    side = min(height, width) * scale
    scales = []
    while side >= 12:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box as the square of its longer side around its centre (what the next net sees)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply a net's box offsets (fractions of the box's width and height)."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


def _patches(images: torch.Tensor, boxes: torch.Tensor, owner: torch.Tensor, side: int) -> torch.Tensor:
    """``side`` x ``side`` crops of the boxes (area-averaged samples), for every frame's candidates at once."""
    rois = torch.cat([owner[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(images, rois, output_size=side, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class MTCNN:
    """The built-in detector (``--detector mtcnn``): the three-net cascade on the device, batched.

    Options: ``weights`` (a folder with the three weight files; default: the mtcnn package's),
    ``min_face`` (the smallest face searched for, in pixels; larger is faster), ``threshold``
    (O-Net's face probability for a detection).
    """

    kind = "detector"
    name = "mtcnn"

    def __init__(self, weights: str | None = None, min_face: float = 20.0, threshold: float = 0.8) -> None:
        if not min_face >= 12:
            raise VafusionError(f"detector mtcnn: min_face must be >= 12 pixels, got {min_face}")
        if not 0 < threshold < 1:
            raise VafusionError(f"detector mtcnn: threshold must lie in (0, 1), got {threshold}")
        folder = Path(weights) if weights else default_weights_dir()
        missing = [n for n in WEIGHT_FILES if not (folder / n).is_file()]
        if missing:
            raise VafusionError(f"{folder}: no {', '.join(missing)}; give the folder of the mtcnn package's weights")
        self.settings = Thresholds(min_face=float(min_face), onet=float(threshold))
        self.nets = {"pnet": PNet(), "rnet": rnet(), "onet": onet()}
        self.files = {}
        for key, net in self.nets.items():
            path = folder / f"{key}.lz4"
            net.load(read_arrays(path), str(path))
            net.eval()
            self.files[path.name] = sha256_file(path)
        self.device = torch.device("cpu")

    def provenance(self) -> dict:
        s = self.settings
        return {
            "detector": "mtcnn",
            "weights": dict(sorted(self.files.items())),
            "min_face": s.min_face,
            "thresholds": [s.pnet, s.rnet, s.onet],
        }

    def to(self, device: torch.device) -> MTCNN:
        self.device = torch.device(device)
        for net in self.nets.values():
            net.to(self.device)
        return self

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        x = (images.to(self.device, torch.float32) - 127.5) * (1 / 128)
        boxes, owner = self._propose(x)
        boxes, owner, _, _ = self._refine(x, boxes, owner, "rnet", 24, self.settings.rnet, self.settings.nms_rnet)
        boxes, owner, points, scores = self._refine(
            x, boxes, owner, "onet", 48, self.settings.onet, self.settings.nms_onet
        )
        out = []
        for i in range(len(images)):
            mine = owner == i
            out.append((boxes[mine], points[mine], scores[mine]))
        return out

    def _propose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid: candidate squares and the frame each belongs to."""
        s = self.settings
        height, width = x.shape[-2:]
        found: list[tuple[torch.Tensor, ...]] = []
        for scale in pyramid(height, width, s.min_face, s.scale_factor):
            size = (math.ceil(height * scale), math.ceil(width * scale))
            offsets, prob = self.nets["pnet"](F.interpolate(x, size=size, mode="area"))
            b, yy, xx = torch.nonzero(prob >= s.pnet, as_tuple=True)
            corner = torch.stack([xx, yy], dim=1).to(x.dtype) * 2
            boxes = torch.cat([corner + 1, corner + 12], dim=1) / scale
            score = prob[b, yy, xx]
            keep = batched_nms(boxes, score, b, s.nms_scale)
            found.append((boxes[keep], offsets[b, :, yy, xx][keep], score[keep], b[keep]))
        if not found:
            return x.new_zeros((0, 4)), torch.zeros(0, dtype=torch.long, device=x.device)
        boxes, offsets, score, owner = (torch.cat(parts) for parts in zip(*found, strict=True))
        keep = batched_nms(boxes, score, owner, s.nms_pnet)
        return _square(_regress(boxes[keep], offsets[keep])), owner[keep]

    def _refine(
        self, x: torch.Tensor, boxes: torch.Tensor, owner: torch.Tensor, key: str, side: int, cut: float, nms: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One refining net over every candidate: keep the faces, move the boxes, landmarks in frame pixels."""
        if len(boxes) == 0:
            return boxes, owner, x.new_zeros((0, 5, 2)), x.new_zeros(0)
        offsets, points, prob = self.nets[key](_patches(x, boxes, owner, side))
        keep = prob >= cut
        boxes, owner, offsets, prob = boxes[keep], owner[keep], offsets[keep], prob[keep]
        size = boxes[:, 2:] - boxes[:, :2]
        if points is not None:
            p = points[keep].view(-1, 2, 5).transpose(1, 2)  # (x1..x5, y1..y5) -> five (x, y)
            points = boxes[:, None, :2] + p * size[:, None, :]
        else:
            points = x.new_zeros((len(boxes), 5, 2))
        boxes = _regress(boxes, offsets)
        keep = batched_nms(boxes, prob, owner, nms)
        boxes = boxes[keep] if key == "onet" else _square(boxes[keep])
        return boxes, owner[keep], points[keep], prob[keep]
