"""The analysis of one video: faces -> features made as the run's training cache's -> the run's prediction.

Why through the corpus and cache formats: the crops, the features and the predictions are then made
by exactly the code that made the training data (``vafusion faces``, ``vafusion extract --like``,
``vafusion predict``'s ensemble and post-processing), never by a second path that could drift.
Intermediate files live in ``OUT/<id>.work/`` while it runs: a killed analysis resumes from them
(faces and extraction are resumable) and they are removed once the outputs are written.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.cache.corpus_index import read_corpus_index
from vafusion.errors import VafusionError
from vafusion.extract.faces.options import FacesOptions
from vafusion.extract.faces.run import faces
from vafusion.extract.like import like_settings
from vafusion.extract.options import ExtractOptions
from vafusion.extract.run import extract
from vafusion.fs import make_dir
from vafusion.fusion.predict.ensemble import choose_post, ensemble_predict
from vafusion.fusion.runs.checkpoint import load_run
from vafusion.fusion.runs.evaluate import run_cache_dir
from vafusion.fusion.runs.layout import find_runs


@dataclass
class AnalyzeOptions:
    """How to analyze: the run(s), the training cache (default: the one the run records), weights files
    the cache names, the face settings, post-processing as ``predict`` takes it, the device."""

    runs: tuple[Path, ...]
    cache: Path | None = None
    weights: Mapping[str, str] = field(default_factory=dict)
    faces: FacesOptions = field(default_factory=FacesOptions)
    post: str = "auto"
    smooth: int | None = None
    device: str = "auto"
    progress: bool = True


@dataclass
class AnalyzeResult:
    """Per frame: ``values`` (T, 2) valence and arousal in [-1, 1], ``face`` (T,) bool; and what made them."""

    video: Path
    id: str
    fps: float
    seconds: np.ndarray
    values: np.ndarray
    face: np.ndarray
    about: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def _features_of(runs: list[Path]) -> tuple[str, ...]:
    features: list[str] = []
    for run_dir in runs:
        features += [f for f in load_run(run_dir).config.data.features if f not in features]
    return tuple(features)


def _faces(video: Path, corpus: Path, opts: AnalyzeOptions) -> None:
    face_opts = FacesOptions(**{**vars(opts.faces), "persons": 1, "preview": True, "shard": (1, 1)})
    report = faces([video], corpus, face_opts)
    if not report.ok:
        raise VafusionError(report.failures[0])


def _extract(corpus: Path, cache: Path, training_cache: Path, features: tuple[str, ...], opts: AnalyzeOptions) -> None:
    settings = like_settings(training_cache, opts.weights, {}, only=features)
    report = extract(corpus, cache, ExtractOptions(**settings, device=opts.device, workers=0, progress=opts.progress))
    if not report.ok:
        raise VafusionError(str((report.failures or report.problems)[0]))


def analyze(
    video: str | Path, out: str | Path, opts: AnalyzeOptions, log: Callable[[str], None] | None = None
) -> AnalyzeResult:
    """Analyze ``video`` with ``opts.runs`` into ``out`` (see the module docstring); returns the per-frame values."""
    from vafusion.analyze.outputs import write_outputs

    say = log or (lambda m: None)
    video = Path(video)
    if not video.is_file():
        raise VafusionError(f"{video}: no such video file")
    runs = find_runs(opts.runs)
    training_cache = run_cache_dir(load_run(runs[0]), opts.cache)
    features = _features_of(runs)
    work = make_dir(Path(out) / f"{video.stem}.work", "analysis folder")
    say(f"faces of {video.name} ...")
    _faces(video, work / "corpus", opts)
    say(f"features {', '.join(features)} as in {training_cache} ...")
    _extract(work / "corpus", work / "cache", training_cache, features, opts)
    index = read_corpus_index(work / "cache")
    vid = video.stem
    step, said = choose_post(runs, opts.post, opts.smooth)
    say(f"predicting with {len(runs)} run(s); {said}")
    raw = ensemble_predict(runs, work / "cache", [vid], index, opts.device)[vid]
    entry = index[vid]
    values = np.clip(step(raw, float(entry.fps)), -1.0, 1.0).astype(np.float32)
    crops = work / "corpus" / "cropped_aligned" / vid
    face = np.zeros(len(values), dtype=bool)
    face[[int(p.stem) - 1 for p in crops.glob("*.jpg") if int(p.stem) <= len(values)]] = True
    times = entry.frame_times if entry.frame_times is not None else np.arange(len(values)) / float(entry.fps)
    about = {
        "video": str(video),
        "runs": [str(r) for r in runs],
        "cache": str(Path(training_cache).resolve()),
        "features": list(features),
        "post_processing": said,
        "detector": opts.faces.detector,
    }
    result = AnalyzeResult(video, vid, float(entry.fps), np.asarray(times, dtype=np.float64), values, face, about)
    result.files = write_outputs(result, Path(out), work / "corpus" / "faces" / f"{vid}.png")
    shutil.rmtree(work, ignore_errors=True)
    return result
