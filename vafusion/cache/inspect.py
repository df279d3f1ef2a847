"""``cache info`` and ``cache verify``: describe a cache, and prove it whole before it is trusted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vafusion.cache import schema
from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index
from vafusion.cache.reader import FeatureFile, list_features
from vafusion.errors import VafusionError


def _file_bytes(path: Path) -> int:
    """Bytes on disk of a feature file plus the shard files its external links point to."""
    total = path.stat().st_size
    targets: set[str] = set()
    with h5py.File(path, "r") as f:
        videos = f.get(schema.VIDEOS_GROUP)
        if videos is not None:
            for vid in videos:
                link = videos.get(vid, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    targets.add(link.filename)
    for name in targets:
        target = path.parent / name
        if target.is_file():
            total += target.stat().st_size
    return total


def _unfinished(cache_dir: Path) -> list[str]:
    parts = cache_dir / schema.PARTS_DIR
    return sorted(p.name for p in parts.iterdir() if p.is_dir()) if parts.is_dir() else []


def _shard_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.glob("*.h5") if schema.SHARD_FILE.match(p.name))


def cache_info(cache_dir: str | Path) -> dict[str, Any]:
    """A JSON-ready description of the cache: corpus summary and one entry per feature file."""
    cache_dir = Path(cache_dir)
    index = read_corpus_index(cache_dir)
    partitions: dict[str, dict[str, int]] = {}
    for e in index:
        p = partitions.setdefault(e.partition, {"ids": 0, "frames": 0})
        p["ids"] += 1
        p["frames"] += e.n_frames
    info: dict[str, Any] = {
        "cache": str(cache_dir),
        "corpus": {
            "ids": len(index),
            "frames": int(sum(e.n_frames for e in index)),
            "videos": len({e.group for e in index}),
            "fps": sorted({round(e.fps, 3) for e in index}),
            "partitions": partitions,
            "fingerprint": index.fingerprint,
        },
        "features": [],
        "shards": _shard_files(cache_dir),
        "unfinished": _unfinished(cache_dir),
    }
    for name in list_features(cache_dir):
        path = schema.feature_path(cache_dir, name)
        with FeatureFile(path) as ff:
            ids = ff.ids
            frames = sum(ff.n_frames(v) for v in ids)
            info["features"].append(
                {
                    "feature": ff.feature,
                    "file": path.name,
                    "dim": ff.dim,
                    "dtype": schema.FEATURE_DTYPE,
                    "ids": len(ids),
                    "frames": int(frames),
                    "extractor": ff.extractor,
                    "fingerprint": ff.fingerprint,
                    "corpus_matches": ff.corpus_fingerprint == index.fingerprint,
                    "compression": ff.compression,
                    "created": ff.created,
                    "vafusion_version": ff.vafusion_version,
                    "bytes": _file_bytes(path),
                }
            )
    return info


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def format_info(info: dict[str, Any]) -> str:
    """The human-readable form printed by ``vafusion cache info``."""
    c = info["corpus"]
    parts = ", ".join(f"{k} {v['ids']} ids / {v['frames']} frames" for k, v in sorted(c["partitions"].items()))
    lines = [
        f"cache {info['cache']}",
        f"  corpus: {c['ids']} ids from {c['videos']} videos, {c['frames']} frames, fps {c['fps']}",
        f"          {parts}",
        f"          fingerprint {c['fingerprint'][:16]}",
    ]
    if not info["features"]:
        lines.append("  no feature files yet")
    for f in info["features"]:
        ex = f["extractor"]
        weights = f"weights {ex['weights']}" if "weights" in ex else "no learned weights"
        lines.append(
            f"  {f['file']}: dim {f['dim']} {f['dtype']}, {f['ids']} ids, {f['frames']} frames, "
            f"{_human_bytes(f['bytes'])}, compression {f['compression']}"
        )
        lines.append(f"      extractor {ex.get('model', f['feature'])} ({weights}), fingerprint {f['fingerprint'][:16]}")
        if not f["corpus_matches"]:
            lines.append("      WARNING: made for another corpus index (run `vafusion cache verify`)")
    if info["shards"]:
        lines.append(f"  shard files: {', '.join(info['shards'])} (merge with `vafusion cache merge`)")
    if info["unfinished"]:
        lines.append(f"  unfinished extraction: {', '.join(info['unfinished'])} (rerun `vafusion extract` to resume)")
    return "\n".join(lines)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _verify_feature_file(path: Path, index: CorpusIndex) -> list[Problem]:
    problems: list[Problem] = []

    def bad(msg: str) -> None:
        problems.append(Problem(str(path), msg))

    try:
        ff = FeatureFile(path)
    except VafusionError as e:
        return [Problem(str(path), str(e).split(": ", 1)[-1])]
    with ff:
        if ff.corpus_fingerprint != index.fingerprint:
            bad("made for another corpus index (corpus_fingerprint differs from corpus.h5); re-extract it")
        if ff.fingerprint != schema.fingerprint(ff.extractor):
            bad("extractor description does not match its fingerprint; the header was altered")
        ids = set(ff.ids)
        missing = [v for v in index.ids if v not in ids]
        extra = sorted(ids - set(index.ids))
        if missing:
            bad(f"{len(missing)} id(s) of corpus.h5 missing: {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''} (rerun `vafusion extract` to fill them)")
        if extra:
            bad(f"{len(extra)} id(s) not in corpus.h5: {', '.join(extra[:5])}")
        for vid in sorted(ids & set(index.ids)):
            try:
                feats, mask = ff.read(vid)
            except (VafusionError, OSError, KeyError) as e:
                bad(f"{vid}: unreadable ({str(e).split(': ', 1)[-1]})")
                continue
            t = index[vid].n_frames
            if feats.shape != (t, ff.dim):
                bad(f"{vid}: features shape {feats.shape}, expected ({t}, {ff.dim})")
            if feats.dtype != np.float16:
                bad(f"{vid}: dtype {feats.dtype}, expected float16")
            if mask.shape != (t,) or mask.dtype != bool:
                bad(f"{vid}: mask shape {mask.shape} dtype {mask.dtype}, expected ({t},) bool")
            if not np.isfinite(feats).all():
                bad(f"{vid}: {int((~np.isfinite(feats)).any(axis=1).sum())} frame(s) with non-finite values")
    return problems


def verify_cache(cache_dir: str | Path) -> list[Problem]:
    """Every problem found, each naming its file; an empty list means the cache is whole."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise VafusionError(f"{cache_dir}: no such cache directory")
    try:
        index = read_corpus_index(cache_dir)
    except VafusionError as e:
        return [Problem(str(cache_dir / schema.CORPUS_FILE), str(e).split(": ", 1)[-1])]
    problems: list[Problem] = []
    features = list_features(cache_dir)
    if not features:
        problems.append(Problem(str(cache_dir), "no feature files (run `vafusion extract`, or `vafusion cache merge` for shards)"))
    for name in features:
        problems += _verify_feature_file(schema.feature_path(cache_dir, name), index)
    for stem in _unfinished(cache_dir):
        problems.append(Problem(str(cache_dir / schema.PARTS_DIR / stem), "unfinished extraction; rerun `vafusion extract` to resume"))
    return problems
