"""From trained runs to per-frame predictions, scores, and ABAW-format prediction files.

Window predictions are overlap-averaged per frame before anything is scored or written,
exactly as the challenge evaluation sees a submission: one row per frame, every frame.
Several runs (every seed of every fold of ``vafusion cv``) are averaged, each run weighing
the same; the average is then post-processed (``post.json`` of the cross-validation, see
:func:`choose_post`) and written as one file per video, or as the single submission file
the challenge takes (:mod:`vafusion.fusion.submission`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index
from vafusion.device import autocast, resolve_device, trim_heap
from vafusion.errors import VafusionError
from vafusion.fs import read_text
from vafusion.fusion.checkpoint import TrainedRun, load_run
from vafusion.fusion.config import FusionConfig
from vafusion.fusion.data import (
    LoadedCache,
    Standardizer,
    build_batch,
    iterate_batches,
    load_cache,
    make_windows,
    overlap_average,
    partition_score,
)
from vafusion.fusion.folds import split_ids
from vafusion.fusion.models import is_closed_form
from vafusion.fusion.postprocess import read_post
from vafusion.fusion.postprocess import smooth as smooth_frames
from vafusion.fusion.prediction_files import check_out_dir, write_prediction_set
from vafusion.fusion.runs import find_post, find_runs
from vafusion.fusion.submission import CountDifference, read_sample, write_submission


class _StreamsOnDemand:
    """The standardised streams and presence masks of each id, built when asked for.

    Why not a list: a model fitted in closed form (the ridge baseline) walks the videos a few times (checks,
    labels, design
    rows), and holding every video's float32 streams at once would be ~4 bytes x dims per
    frame (~18 GB at Aff-Wild2 scale) where it only keeps ``max_frames`` rows. The last
    video built is kept, so the ``zip(features, present)`` walks build each video once.
    """

    def __init__(self, loaded: LoadedCache, standardizer: Standardizer, ids: Sequence[str]) -> None:
        self.loaded, self.standardizer, self.ids = loaded, standardizer, list(ids)
        self._last: tuple[int, tuple[list[np.ndarray], list[np.ndarray]]] | None = None

    def video(self, i: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self._last is None or self._last[0] != i:
            pos = self.loaded.position(self.ids[i])
            t = int(self.loaded.lengths[pos])
            batch = build_batch(self.loaded, self.standardizer, np.array([[pos, 0, t]]), window=max(t, 1))
            self._last = (i, ([s[0, :t].numpy() for s in batch.streams], [p[0, :t].numpy() for p in batch.present]))
        return self._last[1]


class _StreamsView(Sequence):
    """One side (0: features, 1: presence) of a :class:`_StreamsOnDemand`, as a sequence of videos."""

    def __init__(self, source: _StreamsOnDemand, side: int) -> None:
        self.source, self.side = source, side

    def __len__(self) -> int:
        return len(self.source.ids)

    def __getitem__(self, i: int) -> list[np.ndarray]:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.source.video(i)[self.side]


def video_streams(loaded: LoadedCache, standardizer: Standardizer, ids: Sequence[str]) -> tuple[Sequence, Sequence]:
    """Per id: the standardised streams and presence masks of the whole video (numpy), built on access.

    One window spanning the video, through the same :func:`build_batch` the trainer uses, so
    a model fitted in closed form sees exactly the features a windowed model sees.
    """
    source = _StreamsOnDemand(loaded, standardizer, ids)
    return _StreamsView(source, 0), _StreamsView(source, 1)


def predict_loaded(
    model: Any,
    config: FusionConfig,
    standardizer: Standardizer,
    loaded: LoadedCache,
    ids: Sequence[str],
    device: torch.device | None = None,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """``{id: (T, 2) float32}`` predictions in [-1, 1] for ``ids`` of ``loaded``.

    A module predicts windows of ``config.data`` (overlap-averaged per frame); a model fitted
    in closed form predicts each whole video.
    """
    if is_closed_form(model):
        feats, present = video_streams(loaded, standardizer, ids)
        return {
            vid: np.clip(np.asarray(p, dtype=np.float32), -1.0, 1.0)
            for vid, p in zip(ids, model.predict(feats, present))
        }
    data = config.data
    device = device or torch.device("cpu")
    windows = make_windows(offsets=loaded.offsets, window=data.window, hop=data.hop, videos=loaded.positions(ids))
    width = int(windows[:, 2].max()) if len(windows) else data.window
    outputs = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        on_gpu = device.type == "cuda"
        for batch in iterate_batches(
            loaded,
            standardizer,
            windows,
            batch_size or config.training.batch_size,
            window=width,
            prefetch=int(on_gpu),
            pin_memory=on_gpu,
        ):
            batch = batch.to(device, non_blocking=True)
            with autocast(device, config.training.amp):
                out = model(batch.streams, batch.present, batch.valid)
            outputs.append(out.float().cpu())
            trim_heap()
    model.train(was_training)
    preds = torch.cat(outputs) if outputs else torch.zeros(0, width, 2)
    per_video = overlap_average(preds, windows, loaded.lengths)
    return {vid: np.clip(per_video[loaded.position(vid)], -1.0, 1.0) for vid in ids}


def check_features_match(run: TrainedRun, loaded: LoadedCache) -> None:
    """Refuse a cache whose features come from other extractors than the run was trained on."""
    trained = run.fingerprints.get("features", {})
    wrong = [f for f in run.config.data.features if trained.get(f) != loaded.feature_fingerprints.get(f)]
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
        loaded = load_cache(cache_dir, run.config.data.features, ids, index=index, progress=False)
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


def select_ids(index: CorpusIndex, which: str) -> list[str]:
    """``test`` (the test partition), ``all``, or a FILE of ids (one per line)."""
    if which == "all":
        return list(index.ids)
    if which == "test":
        ids = [e.id for e in index.by_partition("test")]
        if not ids:
            raise VafusionError("the cache has no test ids (extract with --test-list); use --ids all or --ids FILE")
        return ids
    path = Path(which)
    if not path.is_file():
        raise VafusionError(f"--ids {which}: not 'test', 'all' or an existing file of video ids")
    ids = [line.strip() for line in read_text(path, "file of video ids").splitlines() if line.strip()]
    unknown = [v for v in ids if v not in index]
    if unknown:
        raise VafusionError(f"{path}: {len(unknown)} id(s) not in the cache, e.g. {', '.join(unknown[:3])}")
    twice = sorted({v for v in ids if ids.count(v) > 1})
    if twice:
        raise VafusionError(f"{path}: id(s) listed more than once: {', '.join(twice[:3])}; list each id once")
    return ids


def ensemble_predict(
    run_dirs: Sequence[Path], cache_dir: Path, ids: Sequence[str], index: CorpusIndex, device: str = "auto"
) -> dict[str, np.ndarray]:
    """``{id: (T, 2)}``: the mean of every run's predictions (each run weighs the same), before post-processing."""
    dev = resolve_device(device)
    total: dict[str, np.ndarray] = {}
    loaded_by_features: dict[tuple[str, ...], LoadedCache] = {}
    for run_dir in run_dirs:
        run = load_run(run_dir)
        key = tuple(run.config.data.features)
        if key not in loaded_by_features:
            loaded_by_features[key] = load_cache(cache_dir, key, ids, index=index, progress=False)
        loaded = loaded_by_features[key]
        check_features_match(run, loaded)
        if not is_closed_form(run.model):
            run.model.to(dev)
        for vid, pred in predict_loaded(run.model, run.config, run.standardizer, loaded, ids, dev).items():
            total[vid] = total.get(vid, 0) + pred
    return {vid: (total[vid] / len(run_dirs)).astype(np.float32) for vid in ids}


PostStep = Callable[[np.ndarray, float], np.ndarray]  # (T, 2) predictions of a video at its fps -> post-processed


def choose_post(runs: Sequence[Path], post: str = "auto", smooth: int | None = None) -> tuple[PostStep, str]:
    """The post-processing ``predict`` applies, and a line saying which and why.

    ``smooth`` (frames, ``--smooth``) overrides everything: a centred mean over that many frames
    of both dimensions. Else ``post``: ``auto`` (the ``post.json`` of the runs' cross-validation,
    see :mod:`vafusion.fusion.runs`, none if there is none), ``none``, or a post.json path.
    """
    if smooth is not None:
        if smooth < 1:
            raise VafusionError(f"--smooth {smooth}: must be >= 1 (1 = no smoothing)")
        if post not in ("auto", "none"):
            raise VafusionError(f"--smooth {smooth} and --post {post}: give one of them")
        note = "; post.json not applied" if post == "auto" and find_post(runs) else ""
        return (
            lambda pred, fps: smooth_frames(pred, smooth, "mean")
        ), f"post-processing: --smooth {smooth} (centred mean over {smooth} frames){note}"
    path = find_post(runs) if post == "auto" else None if post == "none" else Path(post)
    if path is None:
        why = "--post none" if post == "none" else "no post.json beside the runs"
        return (lambda pred, fps: pred), f"post-processing: none ({why})"
    chosen = read_post(path)
    return chosen.apply, f"post-processing from {path}: {chosen.describe()}"


def _predict_ids(
    run_dirs: Sequence[str | Path],
    cache_dir: str | Path,
    ids: Mapping[str, str] | str,
    smooth: int | None,
    post: str,
    device: str,
    log: Callable[[str], None],
) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
    """The chosen ids, their post-processed ensemble predictions, and what made them (runs, cache, post-processing).

    ``ids``: as ``--ids`` takes it, or ``{id: where it was named}`` (for the error naming an id
    the cache lacks).
    """
    runs = find_runs(run_dirs)
    step, said = choose_post(runs, post, smooth)
    cache_dir = Path(cache_dir)
    index = read_corpus_index(cache_dir)
    chosen = select_ids(index, ids) if isinstance(ids, str) else list(ids)
    unknown = [v for v in chosen if v not in index]
    if unknown:
        others = f" (and {len(unknown) - 1} other video(s))" if len(unknown) > 1 else ""
        raise VafusionError(
            f"{ids[unknown[0]]}: video {unknown[0]} is not in the cache {cache_dir}{others}; extract "
            f"it into the cache (e.g. with --test-list), or give the cache that has it"
        )
    log(f"predicting {len(chosen)} id(s) with {len(runs)} run(s), averaged")
    log(said)
    preds = ensemble_predict(runs, cache_dir, chosen, index, device)
    about = {"runs": [str(r) for r in runs], "cache": str(cache_dir.resolve()), "post_processing": said}
    return chosen, {vid: step(preds[vid], float(index[vid].fps)) for vid in chosen}, about  # the writers clip


def predict_to_dir(
    run_dirs: Sequence[str | Path],
    cache_dir: str | Path,
    out_dir: str | Path,
    ids: str = "test",
    smooth: int | None = None,
    device: str = "auto",
    *,
    post: str = "auto",
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Average the predictions of ``run_dirs`` (runs, or directories of runs), post-process, write one file per id.

    The files and ``predictions.json`` appear in ``out_dir`` together or not at all (a kill or an
    error leaves no partial set; an earlier set there is replaced as a whole, see
    :mod:`vafusion.fusion.prediction_files`). ``smooth``/``post``: see :func:`choose_post`.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    chosen, preds, about = _predict_ids(run_dirs, cache_dir, ids, smooth, post, device, log or (lambda msg: None))
    return write_prediction_set(out_dir, {vid: preds[vid] for vid in chosen}, about)


def predict_submission(
    run_dirs: Sequence[str | Path],
    cache_dir: str | Path,
    sample: str | Path,
    out: str | Path,
    smooth: int | None = None,
    device: str = "auto",
    *,
    post: str = "auto",
    log: Callable[[str], None] | None = None,
) -> list[CountDifference]:
    """Write the single ABAW submission file ``out`` for the organisers' ``sample`` (see :mod:`.submission`).

    The sample's videos are predicted (averaged over ``run_dirs``, post-processed as
    :func:`choose_post` says) and mapped onto its rows; returns every video whose row count
    differs from its frames. A video of the sample the cache lacks is an error, and nothing is written.
    """
    if Path(out).is_dir():
        raise VafusionError(f"--out {out}: a directory; with --sample give the path of the file to write")
    parsed = read_sample(sample)
    named = {vid: f"{parsed.path} line {line}" for vid, line in parsed.first_line.items()}
    _, preds, _ = _predict_ids(run_dirs, cache_dir, named, smooth, post, device, log or (lambda m: None))
    return write_submission(out, parsed, preds)
