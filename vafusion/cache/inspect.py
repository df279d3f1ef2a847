"""``cache info`` and ``cache verify``: describe a cache, and prove it whole before it is trusted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.cache import schema
from vafusion.cache.check import corpus_agreement, few
from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index
from vafusion.cache.reader import FeatureFile, list_features
from vafusion.errors import VafusionError
from vafusion.fs import TemporaryFile, temporary_files


def _file_bytes(ff: FeatureFile) -> int:
    """Bytes on disk of a feature file plus the shard files a merged one links to."""
    return ff.path.stat().st_size + sum(p.stat().st_size for p in ff.sources)


def cache_temporary_files(cache_dir: Path) -> list[TemporaryFile]:
    """Temporary files in the cache folder and in its unfinished ``.parts/`` folders."""
    folders = [cache_dir]
    parts = cache_dir / schema.PARTS_DIR
    if parts.is_dir():
        folders += sorted(p for p in parts.iterdir() if p.is_dir())
    return [t for folder in folders for t in temporary_files(folder)]


def _unfinished(cache_dir: Path) -> list[str]:
    parts = cache_dir / schema.PARTS_DIR
    return sorted(p.name for p in parts.iterdir() if p.is_dir()) if parts.is_dir() else []


def _shard_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.glob("*.h5") if schema.SHARD_FILE.match(p.name))


def _feature_info(path: Path, index: CorpusIndex) -> dict[str, Any]:
    """One feature file's entry of ``cache info``; a file that cannot be read gets an ``error``."""
    try:
        with FeatureFile(path) as ff:
            ids = ff.ids
            frames = sum(ff.n_frames(v) for v in ids)
            with_checksums = sum(ff.has_checksums(v) for v in ids)
            return {
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
                "kind": ff.kind,
                "checksums": "all" if with_checksums == len(ids) else "none" if not with_checksums else "some",
                "shards": [p.name for p in ff.sources],
                "created": ff.created,
                "vafusion_version": ff.vafusion_version,
                "bytes": _file_bytes(ff),
            }
    except VafusionError as e:
        return {"feature": path.name[: -len(".h5")], "file": path.name, "error": str(e)}


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
            "variable_frame_rate": [e.id for e in index if e.frame_times is not None],
            "partitions": partitions,
            "fingerprint": index.fingerprint,
        },
        "features": [],
        "shards": _shard_files(cache_dir),
        "unfinished": _unfinished(cache_dir),
        "temporary": [str(t) for t in cache_temporary_files(cache_dir)],
    }
    for name in list_features(cache_dir):
        info["features"].append(_feature_info(schema.feature_path(cache_dir, name), index))
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
        *(
            [f"          variable frame rate (rows at each frame's timestamp): {', '.join(c['variable_frame_rate'])}"]
            if c["variable_frame_rate"]
            else []
        ),
        f"          fingerprint {c['fingerprint'][:16]}",
    ]
    if not info["features"]:
        lines.append("  no feature files yet")
    for f in info["features"]:
        if "error" in f:
            lines.append(f"  {f['file']}: UNREADABLE: {f['error']}")
            continue
        ex = f["extractor"]
        weights = f"weights {ex['weights']}" if "weights" in ex else "no learned weights"
        if "derived_from" in ex:  # cache derive
            parent, fit = ex["derived_from"], ex.get("fit", {})
            weights = (
                f"of {parent['feature']} (fingerprint {str(parent.get('fingerprint'))[:16]}), {ex.get('k')} "
                f"components, {100 * float(ex.get('explained_variance_ratio', 0)):.1f}% of the variance, "
                f"fitted on {fit.get('ids')} {fit.get('partition')} ids"
            )
        lines.append(
            f"  {f['file']}: dim {f['dim']} {f['dtype']}, {f['ids']} ids, {f['frames']} frames, "
            f"{_human_bytes(f['bytes'])}, compression {f['compression']}"
            + (f", rows from {schema.KINDS[f['kind']]}" if f.get("kind") in schema.KINDS else "")
        )
        lines.append(
            f"      extractor {ex.get('model', f['feature'])} ({weights}), fingerprint {f['fingerprint'][:16]}"
        )
        checksums = {"all": "every dataset", "none": "none (written by an older vafusion)", "some": "some datasets"}
        lines.append(
            f"      checksums: {checksums[f['checksums']]}"
            + (f"; links to shards {', '.join(f['shards'])}" if f["shards"] else "")
        )
        if not f["corpus_matches"]:
            lines.append("      WARNING: made for another corpus index (run `vafusion cache verify`)")
    if info["shards"]:
        lines.append(f"  shard files: {', '.join(info['shards'])} (merge with `vafusion cache merge`)")
    if info["unfinished"]:
        lines.append(f"  unfinished extraction: {', '.join(info['unfinished'])} (rerun `vafusion extract` to resume)")
    for tmp in info["temporary"]:
        lines.append(f"  temporary file: {tmp}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    @classmethod
    def from_error(cls, error: VafusionError) -> Problem:
        """A VafusionError's ``<path>: <message>`` (the path may be a shard's, not the checked file's)."""
        path, _, message = str(error).partition(": ")
        return cls(path, message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class VerifyReport(list):
    """The problems found (a list: empty means the cache is whole), plus ``notes``.

    A note is worth knowing but does not make the cache wrong: data without checksums
    (written by an older vafusion), a merge that recorded no shard identities, temporary
    files of a write in progress or of a killed writer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[Problem] = []


def _verify_content(ff: FeatureFile, vid: str) -> list[str]:
    """Read one video and check what only the data can show: checksums, mask values, finite features."""
    feats, mask = ff.read(vid)
    found = ff.checksum_problems(vid, feats, mask)
    if mask.size and mask.view(np.uint8).max() > 1:
        found.append("mask holds values other than 0 and 1")
    if not np.isfinite(feats).all():
        found.append(f"{int((~np.isfinite(feats)).any(axis=1).sum())} frame(s) with non-finite values")
    return found


def _verify_feature_file(path: Path, index: CorpusIndex, report: VerifyReport) -> None:
    try:
        ff = FeatureFile(path)
    except VafusionError as e:
        report.append(Problem.from_error(e))
        return

    def bad(msg: str) -> None:
        report.append(Problem(str(path), msg))

    with ff:
        if ff.fingerprint != schema.fingerprint(ff.extractor):
            bad("extractor description does not match its fingerprint; the header was altered")
        agreement = corpus_agreement(ff, index, index.ids)
        report.extend(Problem.from_error(VafusionError(m)) for m in agreement.malformed)
        for msg in agreement.corpus:
            bad(msg + ("; rerun `vafusion extract` to fill them" if msg.startswith("lacks") else "; re-extract it"))
        extra = sorted(set(ff.ids) - set(index.ids))
        if extra:
            bad(f"{len(extra)} id(s) not in {schema.CORPUS_FILE}: {few(extra)}")
        without = 0
        for vid in sorted(set(ff.ids) & set(index.ids) - agreement.malformed_ids):
            try:
                for msg in _verify_content(ff, vid):
                    report.append(Problem(str(ff.holder(vid)), f"video {vid!r}: {msg}"))
                without += not ff.has_checksums(vid)
            except VafusionError as e:
                report.append(Problem.from_error(e))
        if without:
            report.notes.append(
                Problem(
                    str(path),
                    f"no checksums for {without} video(s) (written by an older "
                    f"vafusion): their content cannot be proven intact",
                )
            )
        if ff.sources and ff.shard_records is None:
            report.notes.append(
                Problem(
                    str(path),
                    "merged by an older vafusion: shard identities not recorded; "
                    "rerun `vafusion cache merge` to record them",
                )
            )


def verify_cache(cache_dir: str | Path) -> VerifyReport:
    """Every problem found, each naming its file (empty: the cache is whole); ``.notes`` besides.

    Runs the same dataset and corpus checks as ``load_cache`` (:mod:`vafusion.cache.check`),
    then reads every video: stored checksums, mask values, finite features.
    """
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise VafusionError(f"{cache_dir}: no such cache directory")
    report = VerifyReport()
    for tmp in cache_temporary_files(cache_dir):
        report.notes.append(Problem(str(tmp.path), f"temporary file ({tmp.state})"))
    try:
        index = read_corpus_index(cache_dir)
    except VafusionError as e:
        report.append(Problem.from_error(e))
        return report
    features = list_features(cache_dir)
    if not features:
        report.append(
            Problem(str(cache_dir), "no feature files (run `vafusion extract`, or `vafusion cache merge` for shards)")
        )
    for name in features:
        _verify_feature_file(schema.feature_path(cache_dir, name), index, report)
    for stem in _unfinished(cache_dir):
        report.append(
            Problem(
                str(cache_dir / schema.PARTS_DIR / stem), "unfinished extraction; rerun `vafusion extract` to resume"
            )
        )
    return report
