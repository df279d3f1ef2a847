"""Which ids each shard of an extraction owns: parts of equal work, the same on every machine.

Why by frames: extraction time grows with a video's frames, and Aff-Wild2's videos run from a
few hundred to tens of thousands of frames, so equal id counts can leave one GPU working long
after the others. Why by group: the ``_left``/``_right`` ids of one video share its audio
track, which a shard decodes once for both when they stay together.

The rule is a pure function of (id, frames, group), so ``--shard K/N`` on N machines and the N
ranks of ``torchrun`` agree on the split without talking to each other. A shard file records
the rule it was split by (:data:`~vafusion.cache.schema.SPLIT_ATTR`): files from before the
rule (every N-th sorted id) record none, and a merge refuses to mix the two.
"""

from __future__ import annotations

from collections.abc import Sequence

from vafusion.cache.corpus_index import CorpusIndex
from vafusion.errors import VafusionError


def balanced_shards(
    ids: Sequence[str], frames: Sequence[int], n: int, groups: Sequence[str] | None = None
) -> list[list[str]]:
    """``n`` lists of sorted ids whose frame totals are about equal; ids of one group stay together.

    Greedy longest-first: the groups, largest first (ties by their first id), each go to the
    shard with the fewest frames so far (ties to the lowest shard); at worst 4/3 of the best
    possible largest shard. Deterministic; the order of ``ids`` does not matter.
    """
    if n < 1:
        raise VafusionError(f"shards: need N >= 1, got {n}")
    if len(frames) != len(ids) or (groups is not None and len(groups) != len(ids)):
        raise ValueError("ids, frames and groups must have one entry per id")
    units: dict[str, list[str]] = {}
    size: dict[str, int] = {}
    for i, vid in enumerate(ids):
        key = groups[i] if groups is not None else vid
        units.setdefault(key, []).append(vid)
        size[key] = size.get(key, 0) + int(frames[i])
    order = sorted(units, key=lambda key: (-size[key], min(units[key])))
    shards: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for key in order:
        k = min(range(n), key=lambda j: (load[j], j))
        shards[k] += units[key]
        load[k] += size[key]
    return [sorted(s) for s in shards]


def shard_ids(index: CorpusIndex, shard: tuple[int, int]) -> list[str]:
    """The sorted ids shard ``K/N`` of ``index`` owns (:func:`balanced_shards` over frames and groups)."""
    k, n = shard
    if not 1 <= k <= n:
        raise VafusionError(f"shard {k}/{n}: need 1 <= K <= N")
    if n == 1:
        return sorted(index.ids)
    entries = list(index)
    return balanced_shards([e.id for e in entries], [e.n_frames for e in entries], n, [e.group for e in entries])[k - 1]


__all__ = ["balanced_shards", "shard_ids"]
