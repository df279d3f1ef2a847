"""A trained run scored on its own split: the predictions of its validation (or train) ids and their CCC.

Why here: ``vafusion evaluate``, the run report and the out-of-fold predictions of ``cv`` all
ask the same question of one run (how well does it predict the ids it was validated on), and
the answer needs only the run, its cache and :mod:`.infer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.cache.corpus_index import read_corpus_index
from vafusion.device import resolve_device
from vafusion.errors import VafusionError
from vafusion.fusion.data.folds import split_ids
from vafusion.fusion.data.loading import LoadedCache, load_cache
from vafusion.fusion.data.scores import partition_score
from vafusion.fusion.data.speech import SPEECH_FEATURE
from vafusion.fusion.models import is_closed_form
from vafusion.fusion.runs.checkpoint import TrainedRun, load_run
from vafusion.fusion.runs.infer import predict_loaded


def check_features_match(run: TrainedRun, loaded: LoadedCache) -> None:
    """Refuse a cache whose features come from other extractors than the run was trained on."""
    trained = run.fingerprints.get("features", {})
    gated = run.config.data.audio_where_speech is not None
    if loaded.audio_where_speech != run.config.data.audio_where_speech:  # a caller's cache, loaded otherwise
        raise ValueError(
            f"the cache was loaded with audio_where_speech={loaded.audio_where_speech}, the run needs "
            f"{run.config.data.audio_where_speech}"
        )
    features = [*run.config.data.features, *([SPEECH_FEATURE] if gated else [])]
    wrong = [f for f in features if trained.get(f) != loaded.feature_fingerprints.get(f)]
    if wrong:
        raise VafusionError(
            f"{loaded.cache_dir}: feature set(s) {', '.join(wrong)} were made by another extractor than the ones "
            f"run {run.run_dir} was trained on (fingerprints differ); extract them with the same weights and options"
        )


@dataclass
class PartitionPredictions:
    """A run's per-frame predictions for one partition of its own split, with their scores."""

    loaded: LoadedCache  # the partition's ids, features and labels (fps via loaded.index)
    ids: list[str]
    predictions: dict[str, np.ndarray]  # id -> (T, 2) float32 in [-1, 1]
    scores: dict[str, Any]  # partition_score(): ccc_v, ccc_a, p, per_id
    cache_dir: Path


def run_cache_dir(run: TrainedRun, cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else the cache ``run`` was trained on; an error naming --cache if it is not here."""
    chosen = cache_dir or run.fingerprints.get("cache") or ""
    if not str(chosen) or not Path(chosen).is_dir():
        raise VafusionError(f"{run.run_dir}: the cache it was trained on ({chosen}) is not here; pass --cache CACHE")
    return Path(chosen)


def predict_partition(
    run: TrainedRun,
    cache_dir: str | Path | None = None,
    partition: str = "validation",
    device: str = "auto",
    loaded: LoadedCache | None = None,
) -> PartitionPredictions:
    """Predict the run's own ``validation`` (or ``train``) ids from ``cache_dir`` and score them.

    ``loaded``: a cache already in RAM that holds those ids (the trainer's, when it writes its
    report), used instead of reading ``cache_dir`` again.
    """
    if partition not in ("validation", "train"):
        raise VafusionError(f"--partition {partition!r}: use validation or train (the run's own split)")
    if loaded is None:
        cache_dir = run_cache_dir(run, cache_dir)
        index = read_corpus_index(cache_dir)
    else:
        cache_dir, index = loaded.cache_dir, loaded.index
    train_ids, val_ids = split_ids(index, run.config.data)
    ids = val_ids if partition == "validation" else train_ids
    if loaded is None:
        loaded = load_cache(
            cache_dir,
            run.config.data.features,
            ids,
            index=index,
            progress=False,
            audio_where_speech=run.config.data.audio_where_speech,
        )
    check_features_match(run, loaded)
    dev = resolve_device(device)
    if not is_closed_form(run.model):
        run.model.to(dev)
    preds = predict_loaded(run.model, run.config, run.standardizer, loaded, ids, dev)
    return PartitionPredictions(loaded, ids, preds, partition_score(loaded, preds, ids), cache_dir)


def evaluate_run(
    run_dir: str | Path, cache_dir: str | Path | None = None, partition: str = "validation", device: str = "auto"
) -> dict[str, Any]:
    """CCC_V, CCC_A, P over the run's ``validation`` (or ``train``) ids, plus a per-id table."""
    result = predict_partition(load_run(run_dir), cache_dir, partition, device)
    scores = result.scores
    scores.update(partition=partition, run=str(Path(run_dir)), cache=str(result.cache_dir), ids=len(result.ids))
    return scores


__all__ = ["PartitionPredictions", "check_features_match", "evaluate_run", "predict_partition", "run_cache_dir"]
