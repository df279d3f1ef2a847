"""``vafusion extract --like CACHE``: the extraction settings of an existing cache, for another corpus.

Why: a trained run only makes sense on features made exactly as its training cache's were (the same
backbone, weights file, image size and options). A cache records each feature's provenance and its
fingerprint; this module reads them back into :class:`~vafusion.extract.options.ExtractOptions`
(features, weights, options, image size), and the run then refuses any feature whose provenance
would come out different (:attr:`ExtractOptions.like`), so a new cache made ``--like`` an old one
carries the same fingerprints or is not made at all.

A weights file is recorded by name and sha256 only: it is looked for by that name in the current
folder, CACHE and CACHE's parent, and taken only when its sha256 matches; anywhere else, one line
names it and ``--weights FEATURE=PATH`` (checked the same way).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vafusion.cache.reader import list_features, open_feature_file
from vafusion.errors import VafusionError
from vafusion.extract import registry
from vafusion.hashing import sha256_file

_FILE = re.compile(r"^(file:)?(?P<name>[^:]+)$")


@dataclass(frozen=True)
class Recorded:
    """One feature of the model cache: its name, provenance and fingerprint."""

    feature: str
    provenance: dict[str, Any]
    fingerprint: str


def recorded_features(cache: Path) -> list[Recorded]:
    names = list_features(cache)
    if not names:
        raise VafusionError(f"--like {cache}: no feature files (<feature>.h5) in it; give a feature cache")
    out = []
    for name in names:
        with open_feature_file(cache, name) as ff:
            out.append(Recorded(name, ff.extractor, ff.fingerprint))
    return out


def _locate(feature: str, file_name: str, sha256: str, cache: Path) -> str:
    """A local file of that name and sha256 near the cache, else the one-line error asking for it."""
    for folder in (Path.cwd(), cache, cache.parent):
        path = folder / file_name
        if path.is_file() and sha256_file(path) == sha256:
            return str(path)
    raise VafusionError(
        f"{cache / (feature + '.h5')}: made with the weights file {file_name} (sha256 {sha256[:12]}...), not "
        f"found here; give it: --weights {feature}=PATH"
    )


def _weights(rec: Recorded, record: Mapping[str, Any], cache: Path) -> str | None:
    """The ``--weights`` spec that reproduces a recorded ``weights``/``sha256`` pair."""
    spec, sha256 = record.get("weights"), record.get("sha256")
    if spec is None:
        return None
    if spec == "random":
        return "random"
    if isinstance(spec, str) and spec.split(":")[0] in ("imagenet", "torchaudio", "timm"):
        return "default"  # the published weights of that tag
    match = _FILE.match(str(spec))
    if sha256 and match:
        return _locate(rec.feature, match["name"], str(sha256), cache)
    return str(spec)


def _options(rec: Recorded, cache: Path) -> dict[str, str]:
    """Options of built-ins that their provenance states outright (a speech model's layer, VGGish's PCA file,
    a timm model's options as given)."""
    prov = rec.provenance
    options: dict[str, str] = {}
    layer = prov.get("layer")
    if isinstance(layer, str):
        span = re.match(r"^mean of (\d+)-(\d+) \(of (\d+)\)$", layer)
        options["layer"] = (
            layer if not span else ("mean" if span[1] == "1" and span[2] == span[3] else f"{span[1]}-{span[2]}")
        )
    post = prov.get("postprocess")
    if isinstance(post, dict) and post.get("pca"):
        options["pca"] = _locate(rec.feature, str(post["pca"]), str(post.get("pca_sha256")), cache)
    given = prov.get("options")  # a family that records the options it was given (timm:)
    if isinstance(given, dict):
        options.update({str(k): str(v) for k, v in given.items()})
    return options


def _builtin_entry(rec: Recorded) -> str:
    """The ``--features`` entry of a built-in's file: its name, or for a family of open-ended names
    (``timm:``, ``hf:``, whose files are named ``timm-...``) the ``PREFIX:NAME`` its provenance records."""
    model = rec.provenance.get("model")
    return model if isinstance(model, str) and registry.prefixed(model) is not None else rec.feature


def like_settings(
    cache: str | Path,
    weights: Mapping[str, str],
    extractor_options: Mapping[str, Mapping[str, str]],
    only: Collection[str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of :class:`ExtractOptions` that reproduce ``cache``'s features (``only``: those
    features); ``weights`` and ``extractor_options`` the user gave win over what is read back."""
    cache = Path(cache)
    features, found_weights, options, sizes, like = [], {}, {}, set(), {}
    recorded = [r for r in recorded_features(cache) if only is None or r.feature in only]
    missing = sorted(set(only or ()) - {r.feature for r in recorded})
    if missing:
        raise VafusionError(f"--cache {cache}: has no feature {missing[0]}; give the cache the run was trained on")
    for rec in recorded:
        plugin = rec.provenance.get("plugin")
        entry = plugin["source"] if isinstance(plugin, dict) else _builtin_entry(rec)
        if not isinstance(plugin, dict) and not registry.is_builtin(entry):
            raise VafusionError(
                f"--like {cache}: feature {rec.feature} records neither a built-in nor a plug-in source; "
                "extract it with --features"
            )
        features.append(entry)
        spec = weights.get(entry) or _weights(rec, plugin if isinstance(plugin, dict) else rec.provenance, cache)
        if spec is not None:
            found_weights[entry] = spec
        given = plugin.get("options", {}) if isinstance(plugin, dict) else _options(rec, cache)
        options[entry] = {**{k: str(v) for k, v in given.items()}, **extractor_options.get(entry, {})}
        size = rec.provenance.get("preprocessing", {}).get("image_size")
        if size is not None:
            sizes.add(int(size))
        like[entry] = {"fingerprint": rec.fingerprint, "provenance": rec.provenance}
    if len(sizes) > 1:
        raise VafusionError(
            f"--like {cache}: its frame features were made at several image sizes ({sorted(sizes)}); "
            "extract them in separate runs with --features and --image-size"
        )
    settings: dict[str, Any] = {
        "features": tuple(features),
        "weights": found_weights,
        "extractor_options": {k: v for k, v in options.items() if v},
        "like": like,
    }
    if sizes:
        settings["image_size"] = sizes.pop()
    return settings


def first_difference(expected: Mapping[str, Any], got: Mapping[str, Any], prefix: str = "") -> str:
    """The first key where two provenances differ, as ``key: old -> new``."""
    for key in sorted(set(expected) | set(got)):
        a, b = expected.get(key), got.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return first_difference(a, b, f"{prefix}{key}.")
        return f"{prefix}{key}: {a!r} -> {b!r}"
    return "(none)"
