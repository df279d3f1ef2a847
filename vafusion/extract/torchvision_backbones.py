"""Every torchvision image classification model as a frame extractor, by its torchvision name.

The names are torchvision's own (``torchvision.models.list_models(module=torchvision.models)``:
``resnet50``, ``efficientnet_b0``, ``convnext_tiny``, ``vit_b_16`` ...). The embedding is the
input of the model's final classifier layer: the last ``nn.Linear`` (``fc``,
``classifier.1``, ``heads.head`` ...) is replaced by Identity; a model without one
(squeezenet) loses its final 1x1 classifier convolution instead, leaving its global pool.
That rule is checked on every torchvision model by the tests.

Weights (``--weights FEATURE=SPEC``, or ``--visual-weights SPEC`` for all of them):

* ``default`` (alias ``imagenet``): torchvision's default weights enum (``IMAGENET1K_V1``
  for resnet18/34, ``IMAGENET1K_V2`` for resnet50/101 ...), downloaded once into
  ``torch.hub.get_dir()/checkpoints``; a member name (``IMAGENET1K_V1``) picks another;
* a local checkpoint PATH: a state_dict, or one nested under ``state_dict``/``model``, keys
  possibly prefixed ``module.``; the classifier's keys are ignored (only the trunk is used);
  read with ``weights_only=True`` (no pickle);
* ``random``: a seeded initialisation, for tests and smoke runs only.

Normalisation: the mean/std of the weights' own transforms (``weights.transforms()``);
ImageNet's for checkpoints and random weights; stated in the provenance either way.
Crops arrive as uint8 (decoded and resized in the workers, :mod:`.frame_pass`); the
normalisation runs on the compute device, so workers ship 4x fewer bytes than floats.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from vafusion.device import autocast
from vafusion.errors import VafusionError
from vafusion.extract import align
from vafusion.extract.registry import BuildRequest, Family
from vafusion.extract.weights import assign_state_dict, read_state_dict
from vafusion.hashing import sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANDOM_SEED = 0
DEFAULT_WEIGHTS = ("default", "imagenet")


def model_names() -> tuple[str, ...]:
    """Every torchvision image classification model name."""
    import torchvision.models as tvm

    return tuple(tvm.list_models(module=tvm))


def classifier_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """The qualified name and module of the final classifier layer: the last ``nn.Linear``,
    or, in a model without one, the last 1x1 ``nn.Conv2d``."""
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linear:
        return linear[-1]
    conv = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    if not conv:
        raise VafusionError(f"{type(model).__name__}: no classifier layer found (no Linear, no 1x1 Conv2d)")
    return conv[-1]


def _embedding_dim(layer: nn.Module) -> int:
    """The width the classifier layer (:func:`classifier_layer`) takes in: the embedding's."""
    if isinstance(layer, nn.Linear):
        return int(layer.in_features)
    if isinstance(layer, nn.Conv2d):
        return int(layer.in_channels)
    raise TypeError(f"not a classifier layer: {type(layer).__name__}")


@dataclass
class Backbone:
    """A trunk (classifier removed, eval mode, CPU) and what describes it."""

    model: nn.Module
    provenance: dict[str, Any]  # model, weights, sha256, dim (+ url for downloaded weights)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


def _strip_classifier(model: nn.Module) -> tuple[str, int]:
    name, layer = classifier_layer(model)
    model.set_submodule(name, nn.Identity())
    return name, _embedding_dim(layer)


def _architecture(name: str, device: str = "cpu", weights: Any = None) -> tuple[nn.Module, str, int]:
    """``name`` built (on ``device``) with its classifier stripped: ``(model, classifier name, dim)``.

    ``device="meta"`` gives shapes without allocating or initialising anything (loaded
    weights are then checked against it and assigned: no init that would be overwritten).
    A builder that computes with tensors while building (regnet) cannot run on meta; it is
    built on the CPU instead.
    """
    import torchvision.models as tvm

    try:
        with torch.device(device), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # googlenet/inception: "init will change" notices
            model = tvm.get_model(name, weights=weights)
    except NotImplementedError:
        if device != "meta":
            raise
        model = tvm.get_model(name, weights=weights)
    prefix, dim = _strip_classifier(model)
    return model, prefix, dim


def build_backbone(name: str, weights: str | Path) -> Backbone:
    """Build the ``name`` trunk with ``weights`` (default/imagenet, a member name, random, or a PATH)."""
    if name not in model_names():
        raise VafusionError(f"{name}: not a torchvision classification model; see torchvision.models.list_models()")
    spec = str(weights)
    if spec == "random":
        # Seed a forked RNG so the init is reproducible without disturbing the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model, _, dim = _architecture(name)
        backbone = Backbone(model, {"model": name, "weights": "random", "sha256": None})
    elif spec in DEFAULT_WEIGHTS or spec in _members(name):
        backbone = _load_published(name, spec)
        dim = backbone.provenance.pop("dim")
    else:
        backbone, dim = _load_checkpoint(name, Path(spec))
    backbone.provenance["dim"] = dim
    backbone.model.eval()
    return backbone


def _members(name: str) -> tuple[str, ...]:
    import torchvision.models as tvm

    return tuple(tvm.get_model_weights(name).__members__)


def _load_published(name: str, spec: str) -> Backbone:
    """torchvision's weights (downloaded once into the hub cache), loaded by its own builder."""
    import torch.hub
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    member = enum.DEFAULT if spec in DEFAULT_WEIGHTS else enum[spec]
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / os.path.basename(urlparse(member.url).path)
    try:
        # The builder, not a bare state_dict: some models take other settings with their
        # published weights (e.g. inception_v3's transform_input).
        model, _, dim = _architecture(name, weights=member)
    except Exception as e:  # URLError, HTTPError, hash mismatch, truncated file ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VafusionError(
            f"{member.url}: could not get {name} weights ({reason}); on a machine with network "
            f"download the file into {cache_dir}, or pass a local checkpoint path as weights"
        ) from e
    transforms = member.transforms()
    prov = {
        "model": name,
        "weights": f"imagenet:{member.name}",
        "url": member.url,
        "sha256": sha256_file(cached) if cached.is_file() else None,
        "dim": dim,
    }
    return Backbone(model, prov, tuple(transforms.mean), tuple(transforms.std))


def _load_checkpoint(name: str, path: Path) -> tuple[Backbone, int]:
    """Load a local checkpoint strictly into the trunk; the classifier's keys are ignored."""
    model, prefix, dim = _architecture(name, "meta")
    fix = f"pass a state_dict of a torchvision {name} (torch.save(model.state_dict(), PATH)), 'default' or 'random'"
    state = {k: v for k, v in read_state_dict(path, fix).items() if not k.startswith(prefix + ".")}
    assign_state_dict(model, state, path, name, fix)
    return Backbone(model, {"model": name, "weights": f"file:{path.name}", "sha256": sha256_file(path)}), dim


def preprocess_params(
    image_size: int, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> dict[str, Any]:
    """What the frame pass's decoding + :func:`preprocess_batch` do, for the provenance."""
    return {
        "image_size": int(image_size),
        "color": "RGB",
        "resize": "bilinear-antialias",
        "scale": "1/255",
        "mean": list(mean),
        "std": list(std),
    }


def preprocess_batch(
    images: torch.Tensor,
    image_size: int,
    dtype: torch.dtype = torch.float32,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 (N, 3, H, W) on the compute device -> normalised float (N, 3, S, S).

    Resizes (antialiased bilinear) only when H, W differ from ``image_size``; then scales to
    [0, 1] and applies the weights' mean/std.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a (N, 3, H, W) batch, got shape {tuple(images.shape)}")
    x = images.to(torch.float32)
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    # (x/255 - mean)/std == (x - 255*mean)/(255*std): one fused pass instead of three.
    return ((x - m) / s).to(dtype)


class TorchvisionExtractor:
    """A frame extractor around a :class:`Backbone`: uint8 crops -> pooled embeddings."""

    kind: Literal["frame"] = "frame"

    def __init__(self, name: str, backbone: Backbone, image_size: int) -> None:
        self.name = name
        self.model = backbone.model
        self.dim = int(backbone.provenance["dim"])
        self.image_size = int(image_size)
        self.mean, self.std = backbone.mean, backbone.std
        self.device = torch.device("cpu")
        self._provenance = dict(
            backbone.provenance,
            preprocessing=preprocess_params(image_size, self.mean, self.std),
            input="face crops",
            missing="no crop: zero row, mask False",
            timing=align.GRID_TIMING,
        )

    def provenance(self) -> dict:
        return dict(self._provenance)

    def to(self, device: torch.device) -> TorchvisionExtractor:
        # channels_last: oneDNN's and cuDNN's fast convolution layout (resnet50 at 224 px on a
        # 2-core CPU: ~1.3x, one-off measurement; no gain at 64 px).
        self.model = self.model.to(device).eval()
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented; not in torch's stubs
        self.device = torch.device(device)
        return self

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        with autocast(self.device):
            x = preprocess_batch(crops, self.image_size, mean=self.mean, std=self.std)
            return self.model(x.contiguous(memory_format=torch.channels_last))


def _weights(request: BuildRequest) -> str:
    if not request.weights:
        raise VafusionError(f"{request.name} needs weights: --weights {request.name}=default|random|PATH")
    return request.weights


def _check(request: BuildRequest) -> None:
    _weights(request)


def _build(request: BuildRequest) -> TorchvisionExtractor:
    return TorchvisionExtractor(request.name, build_backbone(request.name, _weights(request)), request.image_size)


FAMILY = Family(key="torchvision", names=model_names, build=_build, check=_check, default_weights="default")
