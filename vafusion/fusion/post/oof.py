"""Out-of-fold predictions: each cross-validation run's predictions of its own validation ids, kept.

Why keep them: post-processing (:mod:`vafusion.fusion.post.fit`) is chosen on predictions of
frames the model never trained on, and in cross-validation every labelled id is validated by
exactly one fold, so the folds' validation predictions together cover the whole labelled
corpus once, out of fold.

``RUN/val_predictions.npz`` (numpy, read with ``allow_pickle=False``; written atomically):
``ids`` (unicode), ``fps``, ``lengths``, ``predictions`` and ``labels`` (all ids' frames
concatenated, ``(N, 2)`` float32, NaN = no label), and ``checkpoint_sha256``, the hash of the
``best.pt`` they come from: a run retrained since is predicted again, never read stale.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vafusion.atomic import atomic_path
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.errors import VafusionError
from vafusion.fusion.data.folds import split_ids
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.runs.checkpoint import BEST, load_run
from vafusion.fusion.runs.evaluate import predict_partition
from vafusion.hashing import sha256_file

OOF_FILE = "val_predictions.npz"


@dataclass
class RunPredictions:
    """One run's validation predictions (``predictions[i]``, ``labels[i]``: ``(T_i, 2)`` of ``ids[i]``)."""

    ids: list[str]
    fps: np.ndarray
    predictions: list[np.ndarray]
    labels: list[np.ndarray]


def write_oof(run_dir: Path, result: RunPredictions) -> Path:
    path = run_dir / OOF_FILE
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            ids=np.array(result.ids, dtype=str),
            fps=np.asarray(result.fps, dtype=np.float64),
            lengths=np.array([len(p) for p in result.predictions], dtype=np.int64),
            predictions=np.concatenate(result.predictions).astype(np.float32),
            labels=np.concatenate(result.labels).astype(np.float32),
            checkpoint_sha256=np.array(sha256_file(run_dir / BEST)),
        )
    return path


def read_oof(run_dir: Path) -> RunPredictions | None:
    """The run's kept validation predictions; ``None`` when missing, unreadable or older than its best.pt."""
    try:
        with np.load(run_dir / OOF_FILE, allow_pickle=False) as z:
            if str(z["checkpoint_sha256"]) != sha256_file(run_dir / BEST):
                return None
            ends = np.cumsum(z["lengths"])[:-1]
            return RunPredictions(
                [str(v) for v in z["ids"]], z["fps"], np.split(z["predictions"], ends), np.split(z["labels"], ends)
            )
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):  # missing, damaged or foreign
        return None


def keep_oof(
    run_dirs: Sequence[Path],
    cache_dir: Path,
    *,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[RunPredictions]:
    """Every run's validation predictions: read back where kept and current, else predicted and written.

    The cache is read once for all runs that need predicting (their validation ids together).
    """
    log = log or (lambda msg: None)
    results: list[RunPredictions | None] = [read_oof(r) for r in run_dirs]
    todo = {i: load_run(run_dirs[i]) for i, r in enumerate(results) if r is None}
    if not todo:
        return [r for r in results if r is not None]  # all of them
    index = read_corpus_index(cache_dir)
    needed: dict[tuple[tuple[str, ...], float | None], set[str]] = {}
    for run in todo.values():
        data = run.config.data
        needed.setdefault((tuple(data.features), data.audio_where_speech), set()).update(split_ids(index, data)[1])
    loaded = {
        key: load_cache(cache_dir, key[0], sorted(ids), index=index, progress=progress, audio_where_speech=key[1])
        for key, ids in needed.items()
    }
    for i, run in todo.items():
        data = run.config.data
        partition = predict_partition(
            run, device=device, loaded=loaded[(tuple(data.features), data.audio_where_speech)]
        )
        labels = [partition.loaded.labels[partition.loaded.rows(v)] for v in partition.ids]
        fps = np.array([partition.loaded.index[v].fps for v in partition.ids], dtype=np.float64)
        kept = results[i] = RunPredictions(
            partition.ids, fps, [partition.predictions[v] for v in partition.ids], labels
        )
        log(f"kept validation predictions: {write_oof(run_dirs[i], kept)}")
    return [r for r in results if r is not None]


def average_runs(runs: Sequence[RunPredictions], names: Sequence[str]) -> RunPredictions:
    """The mean of several runs' predictions of the same ids (the seeds of one fold)."""
    first = runs[0]
    for run, name in zip(runs[1:], names[1:]):
        if run.ids != first.ids:
            raise VafusionError(
                f"{name}: validates other ids than {names[0]}; the seeds of a fold must share "
                f"its split (same cache, same --folds)"
            )
    mean = [np.mean([r.predictions[i] for r in runs], axis=0) for i in range(len(first.ids))]
    return RunPredictions(first.ids, first.fps, mean, first.labels)


__all__ = ["OOF_FILE", "RunPredictions", "average_runs", "keep_oof", "read_oof", "write_oof"]
