"""What to extract and how (:class:`ExtractOptions`), and the ``FEATURE=...`` option syntax."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
    image_size: int = 224
    vggish_weights: str | None = None
    vggish_pca: str | None = None
    weights: Mapping[str, str] = field(default_factory=dict)
    extractor_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None
    shard: tuple[int, int] = (1, 1)
    overwrite: bool = False
    compression: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        if not self.features:
            raise VafusionError("--features: name at least one feature")
        if len(set(self.features)) != len(self.features):
            raise VafusionError(f"feature named twice in {','.join(self.features)}")
        for option, given in (("--weights", self.weights), ("--extractor-option", self.extractor_options)):
            stray = sorted(set(given) - set(self.features))
            if stray:
                raise VafusionError(f"{option} {stray[0]}: {stray[0]} is not in --features ({','.join(self.features)})")
        if self.batch_size < 1:
            raise VafusionError("--batch-size must be at least 1")
        registry.check(self)


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
