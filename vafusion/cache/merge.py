"""Combine the shard files of ``extract --shard K/N`` runs into whole feature files.

By default the whole file holds HDF5 external links to the shards (no copy: merging
terabytes takes a second); ``copy=True`` copies the data instead, for a single
self-contained file. A missing shard is an error, never silent fill values.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import h5py

from vafusion.atomic import atomic_path
from vafusion.cache import schema
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.reader import FeatureFile
from vafusion.errors import VafusionError

def find_shards(cache_dir: Path) -> dict[str, dict[int, dict[int, Path]]]:
    """``{feature: {N: {K: path}}}`` of the shard files in ``cache_dir``."""
    found: dict[str, dict[int, dict[int, Path]]] = defaultdict(lambda: defaultdict(dict))
    for path in sorted(cache_dir.glob("*.h5")):
        m = schema.SHARD_FILE.match(path.name)
        if m:
            found[m["feature"]][int(m["n"])][int(m["k"])] = path
    return found


def merge_shards(cache_dir: str | Path, copy: bool = False, features: list[str] | None = None) -> list[Path]:
    """Write ``<feature>.h5`` for every feature whose N shards are all present and agree."""
    cache_dir = Path(cache_dir)
    index = read_corpus_index(cache_dir)
    shards = find_shards(cache_dir)
    if features:
        unknown = sorted(set(features) - set(shards))
        if unknown:
            raise VafusionError(f"{cache_dir}: no shard files for {', '.join(unknown)}; found: {', '.join(shards) or 'none'}")
        shards = {f: shards[f] for f in features}
    if not shards:
        raise VafusionError(f"{cache_dir}: no shard files (<feature>.shard-K-of-N.h5) to merge")
    written = []
    for feature, by_n in sorted(shards.items()):
        if len(by_n) > 1:
            raise VafusionError(
                f"{cache_dir}: {feature} has shards of different splits ({', '.join(f'of-{n}' for n in sorted(by_n))}); "
                f"remove the stale ones"
            )
        (n, by_k), = by_n.items()
        missing = [k for k in range(1, n + 1) if k not in by_k]
        if missing:
            names = ", ".join(schema.feature_file_name(feature, (k, n)) for k in missing)
            raise VafusionError(f"{cache_dir}: cannot merge {feature}: missing shard file(s) {names}; copy them here first")
        written.append(_merge_feature(cache_dir, feature, [by_k[k] for k in range(1, n + 1)], index.fingerprint, copy))
    return written


def _merge_feature(cache_dir: Path, feature: str, paths: list[Path], corpus_fp: str, copy: bool) -> Path:
    headers = []
    owner: dict[str, Path] = {}
    for path in paths:
        with FeatureFile(path) as ff:
            if ff.corpus_fingerprint != corpus_fp:
                raise VafusionError(f"{path}: made for another corpus index than {cache_dir / schema.CORPUS_FILE}; re-extract that shard")
            headers.append((ff.fingerprint, ff.attrs))
            for vid in ff.ids:
                if vid in owner:
                    raise VafusionError(f"{path}: video {vid!r} also in {owner[vid].name}; shards overlap")
                owner[vid] = path
    if len({fp for fp, _ in headers}) != 1:
        raise VafusionError(f"{cache_dir}: the {feature} shards were made by different extractors (fingerprints differ); re-extract")
    out_path = schema.feature_path(cache_dir, feature)
    attrs = headers[0][1]
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        for key, value in attrs.items():
            out.attrs[key] = value
        out.attrs["complete"] = False
        out.attrs["shard"] = f"merged {len(paths)}" + (" (copied)" if copy else " (linked)")
        videos = out.create_group(schema.VIDEOS_GROUP)
        for vid, path in sorted(owner.items()):
            if copy:
                with h5py.File(path, "r") as src:
                    src.copy(src[schema.VIDEOS_GROUP][vid], videos, name=vid)
            else:
                videos[vid] = h5py.ExternalLink(path.name, f"{schema.VIDEOS_GROUP}/{vid}")
        out.attrs["complete"] = True
    return out_path
