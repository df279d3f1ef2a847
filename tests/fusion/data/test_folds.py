"""Train/validation splits: official partitions, or K folds that never split a video's people."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from vafusion.cache.corpus_index import CorpusIndex, VideoEntry
from vafusion.errors import VafusionError
from vafusion.fusion.data.folds import fold_of_groups, split_ids
from vafusion.fusion.runs.config import DataConfig


def _entry(vid: str, partition: str, group: str, n: int, labelled: str = "yes") -> VideoEntry:
    labels = None
    if labelled != "none":
        labels = np.random.default_rng(len(vid) + n).uniform(-1, 1, (n, 2)).astype(np.float32)
        if labelled == "nan":
            labels[:] = np.nan
    return VideoEntry(vid, 30.0, n, partition, group, labels)


def _index() -> CorpusIndex:
    """Pairs (_left/_right) and singles across train/validation, plus ids that cannot count."""
    entries = [
        _entry("a_left", "train", "a", 120),
        _entry("a_right", "train", "a", 120),
        _entry("b", "train", "b", 300),
        _entry("c_left", "validation", "c", 90),
        _entry("c_right", "validation", "c", 90),
        _entry("d", "train", "d", 50),
        _entry("e_left", "train", "e", 200),
        _entry("e_right", "train", "e", 200, labelled="nan"),  # no finite label: never used
        _entry("f", "validation", "f", 150),
        _entry("g_left", "validation", "g", 60),
        _entry("g_right", "validation", "g", 60),
        _entry("h", "train", "h", 80),
        _entry("t1", "test", "t1", 100, labelled="none"),
        _entry("u1", "unlabelled", "u1", 100, labelled="none"),
    ]
    return CorpusIndex(tuple(entries))


LABELLED = {"a_left", "a_right", "b", "c_left", "c_right", "d", "e_left", "f", "g_left", "g_right", "h"}


def _group(vid: str) -> str:
    return vid.split("_")[0]


def test_official_split_uses_partitions_and_labelled_ids_only() -> None:
    train, val = split_ids(_index(), DataConfig(split="official"))
    assert train == ["a_left", "a_right", "b", "d", "e_left", "h"]
    assert val == ["c_left", "c_right", "f", "g_left", "g_right"]


@pytest.mark.parametrize("folds", [2, 3, 4])
def test_folds_partition_labelled_ids_and_keep_groups_together(folds: int) -> None:
    index = _index()
    seen: list[str] = []
    for fold in range(1, folds + 1):
        train, val = split_ids(index, DataConfig(split="folds", folds=folds, fold=fold))
        assert val, f"fold {fold} is empty"
        assert not set(train) & set(val)
        assert set(train) | set(val) == LABELLED
        # a group is entirely on one side
        assert not {_group(v) for v in train} & {_group(v) for v in val}
        seen += val
    assert sorted(seen) == sorted(LABELLED)  # every labelled id validates exactly once


def test_folds_are_deterministic_and_balanced() -> None:
    index = _index()
    shuffled = list(index.entries)
    random.Random(5).shuffle(shuffled)
    again = CorpusIndex(tuple(shuffled))
    for fold in (1, 2, 3):
        config = DataConfig(split="folds", folds=3, fold=fold)
        assert split_ids(index, config) == split_ids(again, config)
    assignment = fold_of_groups(index, 3)
    assert fold_of_groups(index, 3) == assignment
    assert set(assignment) == {"a", "b", "c", "d", "e", "f", "g", "h"}
    load = {k: 0 for k in (1, 2, 3)}
    for entry in index:
        if entry.id in LABELLED:
            load[assignment[entry.group]] += entry.n_frames
    # greedy balancing: the heaviest fold exceeds the lightest by at most the largest group (300)
    assert max(load.values()) - min(load.values()) <= 300


def test_fold_out_of_range_and_too_many_folds() -> None:
    index = _index()
    with pytest.raises(VafusionError, match="--fold 4: out of range"):
        split_ids(index, SimpleNamespace(split="folds", folds=3, fold=4))
    with pytest.raises(VafusionError, match="--fold 0: out of range"):
        split_ids(index, SimpleNamespace(split="folds", folds=3, fold=0))
    with pytest.raises(VafusionError, match="more folds than groups"):
        split_ids(index, SimpleNamespace(split="folds", folds=9, fold=1))
    with pytest.raises(VafusionError, match="unknown"):
        split_ids(index, SimpleNamespace(split="random", folds=3, fold=1))


def test_partition_without_labels_is_an_error() -> None:
    entries = [
        _entry("a", "train", "a", 50),
        _entry("b", "train", "b", 50),
        _entry("v1", "validation", "v1", 40, labelled="nan"),
        _entry("v2", "validation", "v2", 40, labelled="none"),
    ]
    index = CorpusIndex(tuple(entries))
    with pytest.raises(VafusionError, match="labels all missing in partition 'validation'"):
        split_ids(index, DataConfig(split="official"))
    # folds still work: only the labelled train groups count
    train, val = split_ids(index, DataConfig(split="folds", folds=2, fold=1))
    assert sorted(train + val) == ["a", "b"]
    nothing = CorpusIndex(
        (_entry("t", "test", "t", 10, labelled="none"), _entry("x", "train", "x", 10, labelled="nan"))
    )
    with pytest.raises(VafusionError, match="labels all missing"):
        split_ids(nothing, DataConfig(split="folds", folds=2, fold=1))
    with pytest.raises(VafusionError, match="labels all missing in partition 'train'"):
        split_ids(nothing, DataConfig(split="official"))
