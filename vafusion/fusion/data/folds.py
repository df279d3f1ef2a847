"""Which labelled ids train and which validate: the official split, or K folds by group.

Why groups: a video with two annotated people gives two ids (``<name>_left``,
``<name>_right``) that share the audio track and the scene. Splitting such a pair across
train and validation leaks the audio features into validation, so folds are made of whole
groups (``VideoEntry.group``), never of single ids.

Fold assignment is a pure function of the corpus index: groups sorted by labelled-frame
count (largest first, ties by name) go greedily to the fold with the fewest labelled frames
so far (ties to the lowest fold). No random numbers, so every machine and every run gives
the same folds, and folds hold similar amounts of labelled data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vafusion.cache import schema
from vafusion.cache.corpus_index import CorpusIndex, VideoEntry
from vafusion.errors import VafusionError

LABELLED_PARTITIONS = ("train", "validation")


def labelled_frames(entry: VideoEntry) -> int:
    """Frames with at least one finite label (valence or arousal); 0 for an unlabelled id."""
    if entry.labels is None or entry.n_frames == 0:
        return 0
    return int(np.isfinite(entry.labels).any(axis=1).sum())


def _labelled_entries(index: CorpusIndex, partitions: tuple[str, ...]) -> list[VideoEntry]:
    return [e for e in index if e.partition in partitions and labelled_frames(e) > 0]


def fold_of_groups(index: CorpusIndex, folds: int) -> dict[str, int]:
    """``{group: fold}`` (1-based) for every group holding a labelled train/validation id.

    Deterministic greedy balancing by labelled frames (see the module docstring).
    """
    if folds < 2:
        raise VafusionError(f"--folds {folds}: need at least 2 folds; use --split official for one split")
    weights: dict[str, int] = {}
    for e in _labelled_entries(index, LABELLED_PARTITIONS):
        weights[e.group] = weights.get(e.group, 0) + labelled_frames(e)
    if not weights:
        raise VafusionError(
            f"{schema.CORPUS_FILE}: labels all missing in partitions train and validation; "
            f"cross-validation needs annotated ids: extract a cache from a corpus with VA annotations"
        )
    if len(weights) < folds:
        raise VafusionError(
            f"--folds {folds}: more folds than groups of labelled videos ({len(weights)}); "
            f"use --folds {len(weights)} or fewer"
        )
    load = [0] * folds
    assignment: dict[str, int] = {}
    for group in sorted(weights, key=lambda g: (-weights[g], g)):
        k = min(range(folds), key=lambda i: (load[i], i))
        assignment[group] = k + 1
        load[k] += weights[group]
    return assignment


def split_ids(index: CorpusIndex, config: Any) -> tuple[list[str], list[str]]:
    """``(train_ids, validation_ids)`` (sorted) for a DataConfig's ``split``, ``folds`` and ``fold``.

    ``split="official"``: the cache's train and validation partitions. ``split="folds"``: both
    merged, grouped, fold ``config.fold`` of ``config.folds`` validates. Only ids with at least
    one finite label are returned (unlabelled ids cannot train or be scored).
    """
    split = getattr(config, "split", "official")
    if split == "official":
        result = []
        for partition in LABELLED_PARTITIONS:
            ids = sorted(e.id for e in _labelled_entries(index, (partition,)))
            if not ids:
                raise VafusionError(
                    f"{schema.CORPUS_FILE}: labels all missing in partition {partition!r} "
                    f"({len(index.by_partition(partition))} ids, none with a finite label); use "
                    f"--split folds, or a cache extracted with the {partition} annotations"
                )
            result.append(ids)
        return result[0], result[1]
    if split == "folds":
        folds, fold = int(config.folds), int(config.fold)
        if not 1 <= fold <= folds:
            raise VafusionError(f"--fold {fold}: out of range; choose 1 <= fold <= {folds} (--folds)")
        assignment = fold_of_groups(index, folds)
        train: list[str] = []
        validation: list[str] = []
        for e in _labelled_entries(index, LABELLED_PARTITIONS):
            (validation if assignment[e.group] == fold else train).append(e.id)
        return sorted(train), sorted(validation)
    raise VafusionError(f"--split {split!r}: unknown; use 'official' or 'folds'")


__all__ = ["fold_of_groups", "labelled_frames", "split_ids"]
