"""Which ids a shard owns: parts of equal frames, groups whole, deterministic; shard sets split by vafusion
0.1.0's rule (every N-th sorted id) still merge, and continuing one with this version's rule is a clear error."""

from __future__ import annotations

import functools
import operator
import random

import numpy as np
import pytest

from vafusion.cache import schema
from vafusion.cache.corpus_index import CorpusIndex, VideoEntry, write_corpus_index
from vafusion.cache.merge import merge_shards
from vafusion.cache.reader import FeatureFile, open_feature_file
from vafusion.cache.split import balanced_shards, shard_ids
from vafusion.cache.writer import FeatureWriter
from vafusion.errors import VafusionError

DIM = 3
EXTRACTOR = {"model": "toy-split", "dim": DIM}


def _legacy(ids: list[str], shard: tuple[int, int]) -> list[str]:
    """vafusion 0.1.0's split: every N-th of the sorted ids."""
    k, n = shard
    return sorted(ids)[k - 1 :: n]


def _index() -> CorpusIndex:
    """Ten ids of very different lengths; a and b are the two people of one video."""
    frames = {"a_left": 900, "a_right": 900, "c": 50, "d": 1200, "e": 60, "f": 40, "g": 700, "h": 30, "i": 20, "j": 10}
    return CorpusIndex(tuple(VideoEntry(vid, 30.0, n, "train", vid.split("_")[0], None) for vid, n in frames.items()))


def test_balanced_shards_balance_frames_keep_groups_and_do_not_depend_on_order():
    index = _index()
    ids, frames, groups = index.ids, [e.n_frames for e in index], [e.group for e in index]
    parts = balanced_shards(ids, frames, 3, groups)
    assert sorted(functools.reduce(operator.iadd, parts, [])) == sorted(ids)  # every id exactly once
    assert all(p == sorted(p) for p in parts)
    assert any({"a_left", "a_right"} <= set(p) for p in parts)  # one video's two people together
    loads = [sum(index[v].n_frames for v in p) for p in parts]
    assert max(loads) <= 4 / 3 * max(sum(frames) / 3, 1800)  # LPT's bound over the best possible split
    old = [sum(index[v].n_frames for v in _legacy(ids, (k, 3))) for k in (1, 2, 3)]
    assert max(loads) < max(old)  # the id-count split leaves one shard with far more work
    shuffled = list(zip(ids, frames, groups))
    random.Random(0).shuffle(shuffled)
    again = balanced_shards([s[0] for s in shuffled], [s[1] for s in shuffled], 3, [s[2] for s in shuffled])
    assert again == parts
    assert [shard_ids(index, (k, 3)) for k in (1, 2, 3)] == parts
    assert shard_ids(index, (1, 1)) == sorted(ids)
    assert balanced_shards(["x", "y"], [5, 5], 4) == [["x"], ["y"], [], []]  # more shards than ids: some empty
    with pytest.raises(VafusionError, match="need 1 <= K <= N"):
        shard_ids(index, (4, 3))


def _write_shard(cache, index: CorpusIndex, shard: tuple[int, int], ids: list[str], split: str | None) -> None:
    writer = FeatureWriter(cache, "toy", DIM, EXTRACTOR, index.fingerprint, shard=shard, split=split)
    for vid in ids:
        n = index[vid].n_frames
        writer.write(vid, np.full((n, DIM), len(vid), np.float32), np.ones(n, bool))
    writer.finalize()


def test_a_shard_set_of_the_old_rule_merges_and_mixing_rules_is_an_error(tmp_path):
    index = _index()
    old, new = tmp_path / "old", tmp_path / "mixed"
    for cache in (old, new):
        write_corpus_index(cache, index)
    for k in (1, 2):
        _write_shard(old, index, (k, 2), _legacy(index.ids, (k, 2)), split=None)  # files as 0.1.0 wrote them
    (_merged,) = merge_shards(old)
    with open_feature_file(old, "toy") as ff:
        assert ff.ids == sorted(index.ids) and ff.read("d")[0].shape == (1200, DIM)  # merged by ids, not by rule

    _write_shard(new, index, (1, 2), _legacy(index.ids, (1, 2)), split=None)
    _write_shard(new, index, (2, 2), shard_ids(index, (2, 2)), split=schema.SPLIT_RULE)
    assert set(_legacy(index.ids, (1, 2))) & set(shard_ids(index, (2, 2)))
    with pytest.raises(
        VafusionError,
        match=r"shards overlap \(they were split by different rules: every-nth: "
        r"toy.shard-1-of-2.h5; frames: toy.shard-2-of-2.h5; every-nth is vafusion "
        r"0.1.0's: extract every shard of the set with one vafusion",
    ):
        merge_shards(new)

    same = tmp_path / "same"  # shards merge by their ids: an old file holding exactly its part merges with new ones
    write_corpus_index(same, index)
    _write_shard(same, index, (1, 2), shard_ids(index, (1, 2)), split=None)
    _write_shard(same, index, (2, 2), shard_ids(index, (2, 2)), split=schema.SPLIT_RULE)
    merge_shards(same)
    with open_feature_file(same, "toy") as ff:
        assert ff.ids == sorted(index.ids)


def test_continuing_an_old_shard_with_the_new_rule_is_a_clear_error(tmp_path):
    index = _index()
    write_corpus_index(tmp_path, index)
    shard = (1, 2)
    old_ids, new_ids = _legacy(index.ids, shard), shard_ids(index, shard)
    assert set(old_ids) - set(new_ids)
    _write_shard(tmp_path, index, shard, old_ids, split=None)  # a shard of 0.1.0
    writer = FeatureWriter(tmp_path, "toy", DIM, EXTRACTOR, index.fingerprint, shard=shard, split=schema.SPLIT_RULE)
    stray = sorted(set(old_ids) - set(new_ids))
    with pytest.raises(
        VafusionError,
        match=rf"toy.shard-1-of-2.h5: holds {len(stray)} id\(s\) that shard 1/2 does "
        rf"not own \(e.g. '{stray[0]}'\): the shard set was split by another rule",
    ):
        writer.require_owned(new_ids)
    writer.close()

    fresh = tmp_path / "fresh"  # a shard of this rule, interrupted: its parts are its own, it continues
    write_corpus_index(fresh, index)
    writer = FeatureWriter(fresh, "toy", DIM, EXTRACTOR, index.fingerprint, shard=shard, split=schema.SPLIT_RULE)
    writer.write(
        new_ids[0], np.zeros((index[new_ids[0]].n_frames, DIM), np.float32), np.ones(index[new_ids[0]].n_frames, bool)
    )
    writer.require_owned(new_ids)
    assert writer.pending(new_ids) == new_ids[1:]
    for vid in new_ids[1:]:
        writer.write(vid, np.zeros((index[vid].n_frames, DIM), np.float32), np.ones(index[vid].n_frames, bool))
    writer.finalize()
    with FeatureFile(fresh / "toy.shard-1-of-2.h5") as ff:
        assert ff.ids == new_ids and ff.attrs[schema.SPLIT_ATTR] == schema.SPLIT_RULE
