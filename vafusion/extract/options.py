"""What to extract and how (:class:`ExtractOptions`), and the ``FEATURE=...`` option syntax."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vafusion.bounds import IMAGE_SIZE, bound, declared, require_bounds
from vafusion.errors import VafusionError
from vafusion.extract import registry


@dataclass
class ExtractOptions:
    """What to extract and how; everything that changes the numbers goes into provenance.

    ``features``: ``--features`` entries (built-in names, ``package.module:attribute``,
    entry-point names). ``weights``: ``{entry: SPEC}`` (``--weights``), overriding
    ``visual_weights`` (every torchvision model) and ``vggish_weights``.
    ``extractor_options``: ``{entry: {key: value}}`` (``--extractor-option``).
    """

    features: tuple[str, ...] = ("resnet50", "vggish", "logmel")
    visual_weights: str = "imagenet"
    image_size: int = field(default=224, metadata=declared(IMAGE_SIZE))
    vggish_weights: str | None = None
    vggish_pca: str | None = None
    weights: Mapping[str, str] = field(default_factory=dict)
    extractor_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    device: str = "auto"
    batch_size: int = field(default=64, metadata=bound(1))
    workers: int | None = field(default=None, metadata=bound(0, optional=True))  # None: min(8, cores - 1)
    shard: tuple[int, int] = (1, 1)
    overwrite: bool = False
    compression: str | None = None
    progress: bool = True
    like: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``--like CACHE``: entry -> that cache's ``{"fingerprint", "provenance"}``; a feature that would come out
    otherwise is refused before anything is written (:mod:`vafusion.extract.like`)."""

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        if not self.features or not all(isinstance(f, str) and f.strip() for f in self.features):
            raise VafusionError(
                f"--features {','.join(map(str, self.features))!r}: name at least one feature, "
                f"comma-separated (e.g. resnet50,vggish,logmel)"
            )
        if len(set(self.features)) != len(self.features):
            raise VafusionError(f"feature named twice in {','.join(self.features)}")
        for option, given in (("--weights", self.weights), ("--extractor-option", self.extractor_options)):
            stray = sorted(set(given) - set(self.features))
            if stray:
                raise VafusionError(f"{option} {stray[0]}: {stray[0]} is not in --features ({','.join(self.features)})")
        require_bounds(self, "extraction options")
        registry.check(self.features, self.extractor_settings())

    def extractor_settings(self) -> registry.Settings:
        """What the registry needs to build this run's extractors; the older per-family flags mapped
        to their families (``--visual-weights``: every torchvision model, ``--vggish-pca``: ``vggish.pca``)."""
        return registry.Settings(
            weights=self.weights,
            options=self.extractor_options,
            image_size=self.image_size,
            family_weights={"torchvision": self.visual_weights, "vggish": self.vggish_weights},
            family_options={"vggish": {"pca": self.vggish_pca}} if self.vggish_pca is not None else {},
        )


def parse_weights(values: Iterable[str]) -> dict[str, str]:
    """``["resnet50=random", "vggish=w.pth"]`` -> ``{"resnet50": "random", "vggish": "w.pth"}``."""
    out: dict[str, str] = {}
    for text in values:
        feature, sep, spec = text.partition("=")
        if not sep or not feature or not spec:
            raise VafusionError(f"--weights {text!r}: write FEATURE=SPEC (SPEC: random, default or a PATH)")
        if feature in out:
            raise VafusionError(f"--weights {feature}: given twice")
        out[feature] = spec
    return out


def parse_extractor_options(values: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["wav2vec2_base.layer=6"]`` -> ``{"wav2vec2_base": {"layer": "6"}}``.

    The key is what follows the last dot before ``=``, so a feature may be a dotted
    ``package.module:attribute``.
    """
    out: dict[str, dict[str, str]] = {}
    for text in values:
        target, sep, value = text.partition("=")
        feature, dot, key = target.rpartition(".")
        if not sep or not dot or not feature or not key.isidentifier():
            raise VafusionError(f"--extractor-option {text!r}: write FEATURE.KEY=VALUE (e.g. wav2vec2_base.layer=6)")
        if key in out.setdefault(feature, {}):
            raise VafusionError(f"--extractor-option {feature}.{key}: given twice")
        out[feature][key] = value
    return out
