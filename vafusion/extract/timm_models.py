"""Any timm image model as a frame extractor: ``--features timm:<model>``.

``<model>`` is any name ``timm.list_models()`` knows, with or without its pretrained tag
(``timm:vit_base_patch14_dinov2.lvd142m``, ``timm:vit_base_patch16_clip_224.openai``,
``timm:tf_efficientnet_b0.ns_jft_in1k``); the feature (file) is ``timm-<model>``. The
embedding is the model's output with its classifier removed (``num_classes=0``): its pooled
pre-logits features (``num_features`` wide; the class token or the pooled tokens of a ViT, as
the model's ``global_pool`` says).

Preprocessing is the model's own, from its pretrained configuration
(``timm.data.resolve_model_data_config``): input size S, interpolation, ``crop_pct`` and
mean/std. As timm's evaluation transform does, a crop is resized to ``floor(S / crop_pct)``
(in the decoding workers, with the model's interpolation, antialiased) and its centre S x S
is cut (on the device) before scaling to [0, 1] and normalising. ``--image-size`` does not
apply: options override what the configuration says (``--extractor-option timm:M.KEY=VALUE``):

* ``image_size``: another input size S (a ViT is built for it: timm resamples its position
  embedding when it loads published weights);
* ``crop_pct``: in (0, 1]; ``1`` resizes the whole crop to S (no centre cut);
* ``interpolation``: ``bilinear``, ``bicubic`` or ``nearest``;
* ``mean``, ``std``: three comma-separated numbers each.

Weights (``--weights timm:M=SPEC``): ``default`` (timm's published weights of the model's tag,
downloaded once into the Hugging Face cache), a local checkpoint PATH (a state_dict, plain
or nested under ``state_dict``/``model``, ``.pth``/``.pt``/``.bin`` read with
``weights_only=True``, or ``.safetensors``; the classifier's keys are ignored, everything
else must match), or ``random`` (seeded; for tests). The provenance holds the model, the
weights (tag and source, or the file's sha256) and the preprocessing, so two settings never
share a cache file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vafusion.device import autocast
from vafusion.errors import VafusionError
from vafusion.extract import align
from vafusion.extract.contract import file_safe
from vafusion.extract.extras import need
from vafusion.extract.registry import BuildRequest, Family
from vafusion.extract.torchvision_backbones import preprocess_batch
from vafusion.extract.weights import assign_state_dict, read_state_dict
from vafusion.hashing import sha256_file

PREFIX = "timm"
OPTIONS = ("image_size", "crop_pct", "interpolation", "mean", "std")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
"""What the decoding workers resize with (torchvision's tensor modes); timm's others become bicubic."""
RANDOM_SEED = 0


def model_name(entry: str) -> str:
    """``timm:NAME`` -> ``NAME``."""
    return entry.partition(":")[2]


def _option_error(entry: str, key: str, value: str, fix: str) -> VafusionError:
    return VafusionError(f"--extractor-option {entry}.{key}={value}: {fix}")


def _triple(entry: str, key: str, value: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(math.isfinite(p) for p in parts) or (key == "std" and min(parts) <= 0):
        raise _option_error(entry, key, value, "give three comma-separated numbers (R,G,B)" + (" > 0" * (key == "std")))
    return parts


def parse_options(entry: str, options: Mapping[str, str]) -> dict[str, Any]:
    """The typed overrides of :data:`OPTIONS` (only those given); one line per bad value."""
    out: dict[str, Any] = {}
    if "image_size" in options:
        text = options["image_size"]
        if not text.isdigit() or not 16 <= int(text) <= 2048:
            raise _option_error(entry, "image_size", text, "give a size in pixels, 16..2048")
        out["image_size"] = int(text)
    if "crop_pct" in options:
        text = options["crop_pct"]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 < value <= 1:
            raise _option_error(entry, "crop_pct", text, "give a fraction in (0, 1] (1: no centre crop)")
        out["crop_pct"] = value
    if "interpolation" in options:
        if options["interpolation"] not in INTERPOLATIONS:
            raise _option_error(entry, "interpolation", options["interpolation"], f"use {', '.join(INTERPOLATIONS)}")
        out["interpolation"] = options["interpolation"]
    for key in ("mean", "std"):
        if key in options:
            out[key] = _triple(entry, key, options[key])
    return out


@dataclass(frozen=True)
class Preprocessing:
    """timm's evaluation transform for square face crops: resize to ``resize``, centre ``size``."""

    size: int  # S: the model's input side
    crop_pct: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def resize(self) -> int:
        """The side crops are resized to before the centre cut (timm: ``floor(S / crop_pct)``)."""
        return max(self.size, math.floor(self.size / self.crop_pct))

    @classmethod
    def of(cls, model: nn.Module, overrides: Mapping[str, Any], entry: str) -> Preprocessing:
        from timm.data import resolve_model_data_config

        cfg = resolve_model_data_config(model)
        _, height, width = cfg["input_size"]
        size = overrides.get("image_size", height)
        if "image_size" not in overrides and height != width:
            raise VafusionError(
                f"{entry}: the model takes {height} x {width} images and face crops are square; "
                f"give a size: --extractor-option {entry}.image_size=S"
            )
        interpolation = overrides.get("interpolation", cfg.get("interpolation", "bicubic"))
        return cls(
            size=int(size),
            crop_pct=float(overrides.get("crop_pct", cfg.get("crop_pct") or 0.875)),
            interpolation=interpolation if interpolation in INTERPOLATIONS else "bicubic",
            mean=tuple(float(v) for v in overrides.get("mean", cfg["mean"])),
            std=tuple(float(v) for v in overrides.get("std", cfg["std"])),
        )

    def record(self) -> dict[str, Any]:
        return {
            "input_size": self.size,
            "resize": f"{self.resize} px, {self.interpolation}-antialias",
            "crop": f"centre {self.size} px (crop_pct {self.crop_pct:g})",
            "color": "RGB",
            "scale": "1/255",
            "mean": list(self.mean),
            "std": list(self.std),
        }


def _create(name: str, pretrained: bool, image_size: int | None) -> nn.Module:
    """``timm.create_model(name, num_classes=0)``; a ViT built for ``image_size`` when given (a CNN
    takes any size as it is: its builder refuses ``img_size``)."""
    import timm

    if image_size is not None:
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=0, img_size=image_size)
        except TypeError:
            pass
    return timm.create_model(name, pretrained=pretrained, num_classes=0)


def _random(name: str, image_size: int | None) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # reproducible without disturbing the caller's RNG
        torch.manual_seed(RANDOM_SEED)
        return _create(name, False, image_size)


def _published(entry: str, name: str, image_size: int | None) -> tuple[nn.Module, dict[str, Any]]:
    """timm's published weights (downloaded once into the Hugging Face cache)."""
    try:
        model = _create(name, True, image_size)
    except Exception as e:  # network, missing weights, hub errors: one line
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise VafusionError(
            f"{entry}: could not get its published weights ({reason}); on a machine with network they "
            f"download into the Hugging Face cache, or pass a local checkpoint: --weights {entry}=PATH"
        ) from e
    cfg = _pretrained_cfg(model)
    source = cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")
    return model, {"weights": f"timm:{cfg.get('tag') or 'default'}", "source": source, "sha256": _cached_sha(cfg)}


def _cached_sha(cfg: Mapping[str, Any]) -> str | None:
    """sha256 of the published file timm loaded, where the Hugging Face cache holds it (else None)."""
    repo = cfg.get("hf_hub_id")
    if not repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in (
        cfg.get("hf_hub_filename"),
        "model.safetensors",
        "open_clip_model.safetensors",
        "pytorch_model.bin",
    ):
        found = try_to_load_from_cache(repo, filename) if filename else None
        if isinstance(found, str) and Path(found).is_file():
            return sha256_file(found)
    return None


def _pretrained_cfg(model: nn.Module) -> dict[str, Any]:
    """What timm attaches to every model it builds: its tag, source, classifier name, preprocessing."""
    return dict(getattr(model, "pretrained_cfg", None) or {})


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = _pretrained_cfg(model).get("classifier") or ()
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


def _checkpoint(entry: str, name: str, path: Path, image_size: int | None) -> tuple[nn.Module, dict[str, Any]]:
    """A local checkpoint loaded strictly into the model without its classifier."""
    model = _random(name, image_size)
    fix = (
        f"pass a state_dict of timm's {name} (torch.save(model.state_dict(), PATH); a whole pickled model: "
        f"torch.save(torch.load(FILE, weights_only=False).state_dict(), PATH) once, if you trust FILE), "
        f"default or random"
    )
    classifier = _classifier_prefixes(model)
    state = {k: v for k, v in read_state_dict(path, fix).items() if not k.startswith(classifier)}
    assign_state_dict(model, state, path, f"timm {name}", fix)
    return model, {"weights": f"file:{path.name}", "sha256": sha256_file(path)}


def _embedding_dim(model: nn.Module) -> int:
    width: Any = getattr(model, "head_hidden_size", None) or model.num_features  # timm's attributes, untyped
    return int(width)


class TimmExtractor:
    """A frame extractor around a timm model: uint8 crops (resized) -> centre -> normalise -> embedding."""

    kind: Literal["frame"] = "frame"

    def __init__(
        self,
        entry: str,
        model: nn.Module,
        weights: dict[str, Any],
        prep: Preprocessing,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.name = file_safe(PREFIX, model_name(entry))
        self.model = model.eval()
        self.prep = prep
        self.dim = _embedding_dim(model)
        self.image_size = prep.resize  # what the workers resize to
        self.interpolation = prep.interpolation  # how (an optional frame-pass hook)
        self.device = torch.device("cpu")
        self._provenance = {
            "model": entry,
            **weights,
            "dim": self.dim,
            "embedding": "timm num_classes=0 (pooled pre-logits features)",
            "preprocessing": prep.record(),
            **({"options": dict(sorted(options.items()))} if options else {}),  # as given: --like reads them
            "input": "face crops",
            "missing": "no crop: zero row, mask False",
            "timing": align.GRID_TIMING,
        }

    def provenance(self) -> dict:
        return dict(self._provenance)

    def to(self, device: torch.device) -> TimmExtractor:
        self.model = self.model.to(device).eval()
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented; not in torch's stubs
        self.device = torch.device(device)
        return self

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        size, edge = self.prep.size, (crops.shape[-1] - self.prep.size) // 2
        centre = crops[..., edge : edge + size, edge : edge + size]
        with autocast(self.device):
            x = preprocess_batch(centre, size, mean=self.prep.mean, std=self.prep.std)
            return self.model(x.contiguous(memory_format=torch.channels_last))


def _check(request: BuildRequest) -> None:
    entry, name = request.name, model_name(request.name)
    timm = need("timm", entry)
    if not name:
        raise VafusionError(f"--features {entry}: name a timm model after timm: (e.g. timm:resnet50)")
    if not timm.is_model(name):
        raise VafusionError(f"--features {entry}: timm has no model {name!r}; see timm.list_models()")
    parse_options(entry, request.options)
    if not request.weights:
        raise VafusionError(f"{entry} needs weights: --weights {entry}=default|random|PATH")


def _build(request: BuildRequest) -> TimmExtractor:
    _check(request)
    entry, name, spec = request.name, model_name(request.name), str(request.weights)
    overrides = parse_options(entry, request.options)
    size = overrides.get("image_size")
    if spec == "random":
        model, weights = _random(name, size), {"weights": "random", "sha256": None}
    elif spec == "default":
        model, weights = _published(entry, name, size)
    else:
        model, weights = _checkpoint(entry, name, Path(spec), size)
    return TimmExtractor(entry, model, weights, Preprocessing.of(model, overrides, entry), request.options)


FAMILY = Family(
    key="timm",
    names=tuple,
    build=_build,
    check=_check,
    options=OPTIONS,
    default_weights="default",
    prefix=PREFIX,
    needs="timm",
)
