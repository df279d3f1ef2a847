"""Combine the shard files of ``extract --shard K/N`` runs into whole feature files.

Shards combine by their ids (each id in one shard only), whatever rule chose them; when
shards of one set overlap and were split by different rules (:mod:`vafusion.cache.split`),
the error says so.

By default the whole file holds HDF5 external links to the shards (no copy: merging
terabytes takes a second) and records each shard's identity, which the reader checks
(:mod:`vafusion.cache.shards`); ``copy=True`` copies the data (with its checksums) instead,
for a single self-contained file. A missing shard is an error, never silent fill values. A
merge whose output already links (or holds) exactly the shards present writes nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import h5py

from vafusion.atomic import atomic_path
from vafusion.cache import schema, shards
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.lock import WriteLock
from vafusion.cache.reader import FeatureFile
from vafusion.cache.writer import write_header
from vafusion.errors import VafusionError
from vafusion.fs import require_space, require_writable, write_error

_MERGED_FROM = "merged_from"  # root attribute of a copied merge: the shard records (provenance only)
_NOT_COPIED = {
    "complete",
    "created",
    "vafusion_version",
    "shard",
    schema.SPLIT_ATTR,
    schema.FILE_ID_ATTR,
    schema.SHARDS_ATTR,
    _MERGED_FROM,
}


@dataclass(frozen=True)
class Merged:
    """One feature's merge: the whole file, and whether it was (re)written or already up to date."""

    path: Path
    written: bool


def find_shards(cache_dir: Path) -> dict[str, dict[int, dict[int, Path]]]:
    """``{feature: {N: {K: path}}}`` of the shard files in ``cache_dir``."""
    found: dict[str, dict[int, dict[int, Path]]] = defaultdict(lambda: defaultdict(dict))
    for path in sorted(cache_dir.glob("*.h5")):
        m = schema.SHARD_FILE.match(path.name)
        if m:
            found[m["feature"]][int(m["n"])][int(m["k"])] = path
    return found


def merge_shards(cache_dir: str | Path, copy: bool = False, features: list[str] | None = None) -> list[Merged]:
    """Write ``<feature>.h5`` for every feature whose N shards are all present and agree."""
    cache_dir = Path(cache_dir)
    index = read_corpus_index(cache_dir)
    shard_files = find_shards(cache_dir)
    if features:
        unknown = sorted(set(features) - set(shard_files))
        if unknown:
            raise VafusionError(
                f"{cache_dir}: no shard files for {', '.join(unknown)}; found: {', '.join(shard_files) or 'none'}"
            )
        shard_files = {f: shard_files[f] for f in features}
    if not shard_files:
        raise VafusionError(f"{cache_dir}: no shard files (<feature>.shard-K-of-N.h5) to merge")
    merged = []
    for feature, by_n in sorted(shard_files.items()):
        if len(by_n) > 1:
            raise VafusionError(
                f"{cache_dir}: {feature} has shards of different splits "
                f"({', '.join(f'of-{n}' for n in sorted(by_n))}); "
                f"remove the stale ones"
            )
        ((n, by_k),) = by_n.items()
        missing = [k for k in range(1, n + 1) if k not in by_k]
        if missing:
            names = ", ".join(schema.feature_file_name(feature, (k, n)) for k in missing)
            raise VafusionError(
                f"{cache_dir}: cannot merge {feature}: missing shard file(s) {names}; copy them here first"
            )
        merged.append(_merge_feature(cache_dir, feature, [by_k[k] for k in range(1, n + 1)], index.fingerprint, copy))
    return merged


def _check_same_extractor(cache_dir: Path, feature: str, files: list[FeatureFile]) -> None:
    """All shards of a feature come from one extractor; otherwise name the odd ones out."""
    counts = Counter(ff.fingerprint for ff in files)
    if len(counts) == 1:
        return
    usual = max(counts, key=lambda fp: (counts[fp], fp == files[0].fingerprint))
    odd = [ff for ff in files if ff.fingerprint != usual]
    names = ", ".join(f"{ff.path.name} (fingerprint {ff.fingerprint[:12]})" for ff in odd)
    raise VafusionError(
        f"{cache_dir}: the {feature} shards were made by different extractors: {names} "
        f"differ{'s' if len(odd) == 1 else ''} from the other {len(files) - len(odd)} ({usual[:12]}); "
        f"re-extract {'it' if len(odd) == 1 else 'them'} with the same options"
    )


def _split_rules(files: list[FeatureFile]) -> str:
    """Why shards may overlap: ``""`` when all were split by one rule, else which file used which."""
    rules: dict[str, list[str]] = {}
    for ff in files:
        rules.setdefault(str(ff.attrs.get(schema.SPLIT_ATTR, schema.LEGACY_SPLIT)), []).append(ff.path.name)
    if len(rules) == 1:
        return ""
    found = "; ".join(f"{rule}: {', '.join(names)}" for rule, names in sorted(rules.items()))
    return (
        f" (they were split by different rules: {found}; {schema.LEGACY_SPLIT} is vafusion 0.1.0's: extract "
        f"every shard of the set with one vafusion, --overwrite starts one afresh)"
    )


def _up_to_date(out_path: Path, records: list[shards.ShardRecord], copy: bool) -> bool:
    """Whether ``out_path`` already is this merge (same shards, same mode): then nothing is written."""
    if not out_path.is_file():
        return False
    try:
        with FeatureFile(out_path) as existing:
            recorded = existing.attrs.get(_MERGED_FROM) if copy else existing.attrs.get(schema.SHARDS_ATTR)
    except VafusionError:
        return False
    return recorded == shards.records_json(records)


def _merge_feature(cache_dir: Path, feature: str, paths: list[Path], corpus_fp: str, copy: bool) -> Merged:
    owner: dict[str, FeatureFile] = {}
    out_path = schema.feature_path(cache_dir, feature)
    with ExitStack() as stack:
        files = [stack.enter_context(FeatureFile(path)) for path in paths]
        for ff in files:
            if ff.shard_records is not None:
                raise VafusionError(f"{ff.path}: a merged file, not a shard; remove it or give it its shard name back")
            if ff.corpus_fingerprint != corpus_fp:
                raise VafusionError(
                    f"{ff.path}: made for another corpus index than {cache_dir / schema.CORPUS_FILE}; re-extract "
                    "that shard"
                )
            for vid in ff.ids:
                if vid in owner:
                    raise VafusionError(
                        f"{ff.path}: video {vid!r} also in {owner[vid].path.name}; shards overlap" + _split_rules(files)
                    )
                if ff.holder(vid) != ff.path:  # also runs the dataset checks on every video
                    raise VafusionError(f"{ff.path}: video {vid!r} links to another file; a shard holds its own data")
                owner[vid] = ff
        _check_same_extractor(cache_dir, feature, files)
        records = [ff.shard_record() for ff in files]
        if _up_to_date(out_path, records, copy):
            return Merged(out_path, written=False)
        require_writable(cache_dir, out_path.name)
        if copy:
            require_space(cache_dir, sum(p.stat().st_size for p in paths), out_path.name)
        lock = WriteLock(out_path)
        lock.acquire()
        try:
            _write_merged(out_path, files[0].attrs, owner, records, copy)
        except OSError as e:
            raise write_error(out_path, e) from e
        finally:
            lock.release()
    return Merged(out_path, written=True)


def _write_merged(
    out_path: Path, attrs: dict, owner: dict[str, FeatureFile], records: list[shards.ShardRecord], copy: bool
) -> None:
    with ExitStack() as stack, atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        sources = {ff.path: stack.enter_context(h5py.File(ff.path, "r")) for ff in set(owner.values())} if copy else {}
        write_header(out, {k: v for k, v in attrs.items() if k not in _NOT_COPIED})
        out.attrs["shard"] = f"merged {len(records)}" + (" (copied)" if copy else " (linked)")
        out.attrs[_MERGED_FROM if copy else schema.SHARDS_ATTR] = shards.records_json(records)
        videos = out.create_group(schema.VIDEOS_GROUP)
        for vid, ff in sorted(owner.items()):
            if copy:  # H5Ocopy of the shard's own (hard-linked, checked) group keeps the checksums
                src = sources[ff.path]
                src.copy(src[schema.VIDEOS_GROUP][vid], videos, name=vid)
            else:
                videos[vid] = h5py.ExternalLink(ff.path.name, f"{schema.VIDEOS_GROUP}/{vid}")
        out.attrs["complete"] = True
