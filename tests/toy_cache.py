"""A small feature cache written straight through the cache API, for stage-2 tests.

Features carry the labels through fixed random linear maps plus noise (visual: valence,
audio: arousal), so a model can learn them in seconds; no corpus or backbone involved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vafusion.cache.corpus_index import CorpusIndex, VideoEntry, write_corpus_index
from vafusion.cache.writer import FeatureWriter

DIMS = {"visual": 24, "audio": 12}


def smooth_curve(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / 25.0
    x = sum(
        rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t + rng.uniform(0, 6.3)) for _ in range(3)
    )
    return np.clip(x, -1, 1).astype(np.float32)


def write_toy_cache(
    cache: Path, n_videos: int = 8, frames: tuple[int, int] = (80, 160), seed: int = 0, n_test: int = 2, pairs: int = 1
) -> CorpusIndex:
    rng = np.random.default_rng(seed)
    maps = {name: np.random.default_rng(100 + i).normal(size=(2, d)) for i, (name, d) in enumerate(DIMS.items())}
    entries, feats = [], {name: {} for name in DIMS}
    names = [f"vid{i:02d}" for i in range(n_videos)]
    ids = []
    for i, name in enumerate(names):
        group_ids = [f"{name}_left", f"{name}_right"] if i < pairs else [name]
        for vid in group_ids:
            ids.append((vid, name))
    for k, (vid, group) in enumerate(ids):
        n = int(rng.integers(*frames))
        partition = "test" if k >= len(ids) - n_test else ("validation" if k % 3 == 2 else "train")
        va = np.stack([smooth_curve(rng, n), smooth_curve(rng, n)], axis=1)
        labels = va.copy()
        labels[rng.integers(0, n) :][:5] = np.nan  # a short run of -5 rows
        visual = va[:, :1] * maps["visual"][0] + 0.2 * va[:, 1:] * maps["visual"][1]
        audio = va[:, 1:] * maps["audio"][1]
        face = np.ones(n, bool)
        face[rng.integers(0, n) :][:8] = False
        feats["visual"][vid] = (visual + 0.3 * rng.normal(size=visual.shape), face)
        feats["audio"][vid] = (audio + 0.3 * rng.normal(size=audio.shape), np.ones(n, bool))
        entries.append(
            VideoEntry(vid, 25.0 if k % 2 else 30.0, n, partition, group, None if partition == "test" else labels)
        )
    index = CorpusIndex(tuple(entries))
    write_corpus_index(cache, index)
    for name, dim in DIMS.items():
        writer = FeatureWriter(cache, name, dim, {"model": f"toy-{name}"}, index.fingerprint)
        for vid, (x, mask) in feats[name].items():
            writer.write(vid, np.where(mask[:, None], x, 0.0), mask)
        writer.finalize()
    return index


def write_big_cache(cache: Path, n_videos: int = 40, frames: int = 6400, dim: int = 1024, seed: int = 0) -> int:
    """A cache of one feature set ``big`` far larger than a streamed training may hold; returns its feature bytes.

    Content is cheap on purpose (slices of one random block, smooth labels): what matters is
    its size. Every 5th video validates, the rest train.
    """
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((frames + n_videos, dim), dtype=np.float32).astype(np.float16)
    entries = []
    for i in range(n_videos):
        va = np.stack([smooth_curve(rng, frames), smooth_curve(rng, frames)], axis=1)
        entries.append(
            VideoEntry(f"big{i:03d}", 30.0, frames, "validation" if i % 5 == 4 else "train", f"big{i:03d}", va)
        )
    index = CorpusIndex(tuple(entries))
    write_corpus_index(cache, index)
    writer = FeatureWriter(cache, "big", dim, {"model": "big-random"}, index.fingerprint)
    mask = np.ones(frames, bool)
    for i, entry in enumerate(entries):
        writer.write(entry.id, pool[i : i + frames], mask)
    writer.finalize()
    return n_videos * frames * dim * 2
