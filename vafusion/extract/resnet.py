"""The visual backbone: a torchvision ResNet trunk giving one pooled embedding per face crop.

Weights come from exactly one of three places, and the provenance dict says which, so a
cache records what produced it (it goes into the feature file's ``extractor`` JSON):

* ``"imagenet"``: torchvision's ImageNet weights enum (downloaded once into
  ``torch.hub.get_dir()/checkpoints``; never used by the tests, which have no network);
* a path to a local checkpoint: a plain ``state_dict``, or one nested under ``"state_dict"``
  or ``"model"``, keys possibly prefixed ``module.`` (DataParallel/DDP); the classifier
  (``fc.*``) is ignored because only the trunk is used; read with ``weights_only=True``
  (no pickle);
* ``"random"``: a deterministic seeded initialisation, for tests and smoke runs only.

Decoding (:func:`decode_crop`) runs in DataLoader workers and returns compact uint8 images of
one fixed size; normalisation (:func:`preprocess_batch`) runs on the compute device so the
workers ship 4x fewer bytes than float images would need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from vafusion.errors import VafusionError
from vafusion.extract.weights import assign_state_dict, read_state_dict, sha256_file

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
EMBED_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}

# torchvision's best ImageNet weights per trunk (V2 exists only for 50/101).
IMAGENET_WEIGHTS = {
    "resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"),
    "resnet34": ("ResNet34_Weights", "IMAGENET1K_V1"),
    "resnet50": ("ResNet50_Weights", "IMAGENET1K_V2"),
    "resnet101": ("ResNet101_Weights", "IMAGENET1K_V2"),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANDOM_SEED = 0


def _trunk(name: str, device: str = "cpu") -> nn.Module:
    """A torchvision ResNet whose ``fc`` is Identity: its output is the pooled embedding.

    ``device="meta"`` gives shapes without allocating or initialising anything: loaded
    weights are then checked against it and assigned, which skips a random init that would
    be overwritten anyway (a second for resnet101) and makes rejecting a wrong file instant.
    """
    import torchvision.models as tvm

    with torch.device(device):
        model = getattr(tvm, name)(weights=None)
        model.fc = nn.Identity()
    return model


def build_resnet(name: str, weights: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the ``name`` trunk with ``weights`` ("imagenet", "random" or a checkpoint path).

    Returns the model in eval mode (BatchNorm uses its running statistics: extraction is
    inference) on the CPU, mapping (N, 3, H, W) normalised images to (N, dim) embeddings,
    and the provenance dict ``{"model", "weights", "sha256", "dim"}`` (plus ``"url"`` for
    ImageNet weights). The caller adds the preprocessing parameters.
    """
    if name not in RESNETS:
        raise VafusionError(f"{name}: unknown ResNet; choose one of {', '.join(RESNETS)}")
    dim = EMBED_DIMS[name]
    if weights == "random":
        # Seed a forked RNG so the init is reproducible without disturbing the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = _trunk(name)
        provenance = {"model": name, "weights": "random", "sha256": None, "dim": dim}
    elif weights == "imagenet":
        model = _trunk(name, "meta")
        provenance = _load_imagenet(model, name)
    else:
        model = _trunk(name, "meta")
        provenance = _load_checkpoint(model, name, Path(weights))
    provenance["dim"] = dim
    model.eval()
    return model, provenance


def _load_imagenet(model: nn.Module, name: str) -> dict[str, Any]:
    """Load torchvision's ImageNet weights (download on first use) and record their hash."""
    import torch.hub
    import torchvision.models as tvm

    enum_name, member = IMAGENET_WEIGHTS[name]
    enum = getattr(getattr(tvm, enum_name), member)
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / os.path.basename(urlparse(enum.url).path)
    try:
        state = enum.get_state_dict(progress=True, check_hash=True, weights_only=True, map_location="cpu")
    except Exception as e:  # URLError, HTTPError, hash mismatch, truncated file ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VafusionError(
            f"{enum.url}: could not get ImageNet weights ({reason}); on a machine with network "
            f"download the file into {cache_dir}, or pass a local checkpoint path as weights"
        ) from None
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assign_state_dict(model, state, enum.url, name, "delete the cached file to download it again")
    return {
        "model": name,
        "weights": f"imagenet:{member}",
        "url": enum.url,
        "sha256": sha256_file(cached) if cached.is_file() else None,
    }


def _load_checkpoint(model: nn.Module, name: str, path: Path) -> dict[str, Any]:
    """Load a local checkpoint strictly into the trunk; the classifier (``fc.*``) is ignored."""
    fix = f"pass a state_dict of a torchvision {name} (torch.save(model.state_dict(), PATH)), 'imagenet' or 'random'"
    state = {k: v for k, v in read_state_dict(path, fix).items() if not k.startswith("fc.")}
    assign_state_dict(model, state, path, name, fix)
    return {"model": name, "weights": f"file:{path.name}", "sha256": sha256_file(path)}


def preprocess_params(image_size: int) -> dict[str, Any]:
    """What :func:`decode_crop` + :func:`preprocess_batch` do, for the extractor provenance."""
    return {
        "image_size": int(image_size),
        "color": "RGB",
        "resize": "bilinear-antialias",
        "scale": "1/255",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def preprocess_batch(images: torch.Tensor, image_size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, 3, H, W) on the compute device -> normalised float (N, 3, S, S).

    Resizes (antialiased bilinear) only when H, W differ from ``image_size``; then scales to
    [0, 1] and applies the ImageNet mean/std the torchvision weights were trained with.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(images.shape)}")
    x = images.to(torch.float32)
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    # (x/255 - mean)/std == (x - 255*mean)/(255*std): one fused pass instead of three.
    return ((x - mean) / std).to(dtype)


def decode_crop(path: str | Path, image_size: int) -> torch.Tensor:
    """Read a JPEG/PNG face crop as uint8 RGB (3, image_size, image_size).

    Meant for DataLoader workers: resizing here gives every batch one shape, so batches can
    span videos and crops of any size.
    """
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as TF

    try:
        img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except Exception as e:  # RuntimeError from libjpeg/libpng, missing file ...
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise VafusionError(
            f"{path}: unreadable face crop ({reason}); replace or delete the file (a missing crop counts as no face)"
        ) from None
    if img.dtype != torch.uint8:  # 16-bit PNG
        img = TF.to_dtype(img, torch.uint8, scale=True)
    if tuple(img.shape[-2:]) != (image_size, image_size):
        img = TF.resize(img, [image_size, image_size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return img.contiguous()
