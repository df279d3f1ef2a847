"""From trained runs to the predictions of chosen ids: averaged over runs, post-processed, written.

Several runs (every seed of every fold of ``vafusion cv``) are averaged, each run weighing
the same; the average is then post-processed (``post.json`` of the cross-validation, see
:func:`choose_post`) and written as one file per video (:mod:`.files`), or as the single
submission file the challenge takes (:mod:`.submission`). Each run predicts through
:mod:`vafusion.fusion.runs.infer`, the code its training validated with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index
from vafusion.device import resolve_device
from vafusion.errors import VafusionError
from vafusion.fs import read_text
from vafusion.fusion.data.loading import LoadedCache, load_cache
from vafusion.fusion.models import is_closed_form
from vafusion.fusion.post.apply import read_post
from vafusion.fusion.post.steps import smooth as smooth_frames
from vafusion.fusion.predict.files import check_out_dir, write_prediction_set
from vafusion.fusion.predict.submission import CountDifference, read_sample, write_submission
from vafusion.fusion.runs.checkpoint import load_run
from vafusion.fusion.runs.evaluate import check_features_match
from vafusion.fusion.runs.infer import predict_loaded
from vafusion.fusion.runs.layout import find_post, find_runs


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
    loaded_by_features: dict[tuple[tuple[str, ...], float | None], LoadedCache] = {}
    for run_dir in run_dirs:
        run = load_run(run_dir)
        data = run.config.data
        key = (tuple(data.features), data.audio_where_speech)
        if key not in loaded_by_features:
            loaded_by_features[key] = load_cache(
                cache_dir, data.features, ids, index=index, progress=False, audio_where_speech=data.audio_where_speech
            )
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
    see :mod:`vafusion.fusion.runs.layout`, none if there is none), ``none``, or a post.json path.
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


def _known(ids: Mapping[str, str], index: CorpusIndex, cache_dir: Path) -> list[str]:
    """The ids of ``{id: where it was named}``; one the cache lacks is an error naming where."""
    unknown = [v for v in ids if v not in index]
    if unknown:
        others = f" (and {len(unknown) - 1} other video(s))" if len(unknown) > 1 else ""
        raise VafusionError(
            f"{ids[unknown[0]]}: video {unknown[0]} is not in the cache {cache_dir}{others}; extract "
            f"it into the cache (e.g. with --test-list), or give the cache that has it"
        )
    return list(ids)


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
    chosen = select_ids(index, ids) if isinstance(ids, str) else _known(ids, index, cache_dir)
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
    :mod:`vafusion.fusion.predict.files`). ``smooth``/``post``: see :func:`choose_post`.
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


__all__ = ["choose_post", "ensemble_predict", "predict_submission", "predict_to_dir", "select_ids"]
