"""``make_corpus``: plan a seeded corpus, render each video, return its ground truth.

Why a thin entry point: the argument checks, the size presets and the returned
:class:`~vafusion.synth.layout.SynthCorpus` are what callers (tests, ``vafusion demo``,
benchmarks) see; planning and rendering live in their own modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.errors import VafusionError
from vafusion.synth.layout import PARTITION_DIRS, SynthCorpus, SynthVideo, prepare_root, write_test_list
from vafusion.synth.media import BackgroundWriter
from vafusion.synth.plan import VideoPlan, plan_corpus
from vafusion.synth.render import render_video

SIZES: dict[str, dict[str, Any]] = {
    # unit tests: 7 ids (6 files), 3-4 s each, about 600 frames in all
    "tiny": dict(n_videos=6, seconds=3.5, n_test=1),
    # quick experiments: 11 ids, ~8 s each
    "small": dict(n_videos=10, seconds=8.0, n_test=2),
    # `vafusion demo`: 15 ids, ~12 s each; sized so the whole demo (VGGish at one example per
    # video frame dominates) stays well under 5 minutes on 2 CPU cores
    "demo": dict(n_videos=14, seconds=12.0, n_test=2),
    # benchmarks: 61 ids, ~60 s each, 112 px crops like Aff-Wild2
    "large": dict(n_videos=60, seconds=60.0, n_test=6, crop_size=112, frame_size=96, fps_options=(25.0, 30.0, 60.0)),
}
"""Preset keyword arguments of :func:`make_corpus`: ``make_corpus(root, **SIZES["tiny"])``."""


def _check_arguments(
    *,
    n_videos: int,
    seconds: float,
    crop_size: int,
    frame_size: int,
    sample_rate: int,
    validation_fraction: float,
    n_test: int,
    fps_options: Sequence[float],
) -> None:
    """Refuse arguments that cannot make a corpus with every quirk, before any file is touched."""
    if n_videos < 1:
        raise VafusionError(f"n_videos={n_videos}: need at least 1 video; pass n_videos >= 1")
    if not 0 <= n_test < n_videos:
        raise VafusionError(f"n_test={n_test}: must be in [0, n_videos - 1] = [0, {n_videos - 1}]; lower n_test")
    if not 0.0 <= validation_fraction < 1.0:
        raise VafusionError(f"validation_fraction={validation_fraction}: must be in [0, 1); pass e.g. 0.34")
    if seconds <= 0 or crop_size < 16 or frame_size < 32 or sample_rate < 8000 or not fps_options:
        raise VafusionError(
            "make_corpus: need seconds > 0, crop_size >= 16, frame_size >= 32, sample_rate >= 8000 and "
            "at least one fps option; fix the arguments"
        )


def _to_synth_videos(plan: VideoPlan) -> Iterator[SynthVideo]:
    """The ground truth of each id of a planned video (test ids keep no ``-5`` rows: they have no file)."""
    for p in plan.persons:
        labelled = plan.partition in PARTITION_DIRS
        yield SynthVideo(
            id=p.id,
            video_name=plan.name,
            fps=plan.fps,
            n_frames=plan.n_frames,
            partition=plan.partition,
            valence=p.valence,
            arousal=p.arousal,
            label_missing=p.label_missing if labelled else np.zeros(plan.n_frames, dtype=bool),
            crop_missing=p.crop_missing,
            has_audio=plan.has_audio,
            speaks=p.speaks,
        )


def make_corpus(
    root: str | Path,
    *,
    n_videos: int = 6,
    seconds: float = 4.0,
    seed: int = 0,
    crop_size: int = 64,
    frame_size: int = 64,
    sample_rate: int = 16000,
    validation_fraction: float = 0.34,
    n_test: int = 1,
    fps_options: Sequence[float] = (25.0, 30.0),
    overwrite: bool = False,
    progress: bool = False,
) -> SynthCorpus:
    """Generate a seeded Aff-Wild2-layout corpus under ``root`` and return its ground truth.

    Args:
        root: output directory; created if needed. It must not already hold a corpus
            (``videos/``, ``cropped_aligned/``, ``annotations/``, the test list) unless
            ``overwrite`` is True, which deletes exactly those entries first, so stale
            crops from an earlier run can never pose as frames of this one.
        n_videos: number of video files. One of them holds two people, so there are
            ``n_videos + 1`` ids. One labelled file has no audio stream; the last
            ``n_test`` (in a seeded order) are unlabelled test videos.
        seconds: mean duration; each video lasts ``seconds`` x U(0.8, 1.2).
        seed: everything (roles, fps, partitions, curves, looks, noise) derives from it.
        crop_size: side of the square face crops (Aff-Wild2's are 112).
        frame_size: height of the video frames (width is 1.5x, both even).
        sample_rate: audio sample rate of the mp4s (mono AAC).
        validation_fraction: share of labelled files in Validation_Set (at least one
            each of train and validation when two or more files are labelled).
        n_test: number of unlabelled test-list videos.
        fps_options: frame rates; each appears at least once when ``n_videos`` allows,
            the remaining videos draw from the first two.
        overwrite: replace an existing corpus in ``root``.
        progress: show a tqdm bar over videos.

    Returns:
        :class:`SynthCorpus` with one :class:`SynthVideo` per id, sorted by id.
    """
    _check_arguments(
        n_videos=n_videos,
        seconds=seconds,
        crop_size=crop_size,
        frame_size=frame_size,
        sample_rate=sample_rate,
        validation_fraction=validation_fraction,
        n_test=n_test,
        fps_options=fps_options,
    )
    root = prepare_root(root, overwrite)
    plans = plan_corpus(
        n_videos=n_videos,
        seconds=seconds,
        seed=seed,
        frame_size=frame_size,
        validation_fraction=validation_fraction,
        n_test=n_test,
        fps_options=fps_options,
    )
    iterator: Any = plans
    if progress:
        from tqdm import tqdm

        iterator = tqdm(plans, desc="synth videos", unit="video")
    jpeg = BackgroundWriter()
    try:
        for plan in iterator:
            render_video(plan, root, crop_size, frame_size, sample_rate, jpeg)
    finally:
        jpeg.close()

    videos = sorted((v for plan in plans for v in _to_synth_videos(plan)), key=lambda v: v.id)
    test_list = write_test_list(root, [v.id for v in videos if v.partition == "test"])
    return SynthCorpus(root=root, videos=videos, test_list=test_list)
