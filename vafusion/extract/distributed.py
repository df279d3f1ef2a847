"""``torchrun ... -m vafusion extract``: every rank extracts its shard, then rank 0 merges the shards.

Why torchrun: it already starts G processes per machine (and across machines with
``--nnodes``/``--rdzv-*``) and tells each its place in the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``), so
vafusion needs no cluster code of its own. Rank R extracts shard ``R+1`` of ``WORLD_SIZE``,
the same frame-balanced split as ``--shard K/N`` (:mod:`vafusion.cache.split`), into its own
``<feature>.shard-K-of-N.h5`` files, on ``cuda:LOCAL_RANK`` when CUDA is there (CPU
otherwise). The ranks then exchange what they did (a gloo all-gather, which is also the
barrier), rank 0 merges every feature that each rank finished (links, or copies), and the
ranks wait for the merge before they exit, so torchrun sees every exit code only at the end.

Failures: a video that fails is reported (by rank 0, for every rank, with its id); its
rank's other videos and the other ranks' shards are kept and merged. A rank that dies
(killed, out of memory) makes torchrun stop the others; whatever each had finished is on
disk. Either way, rerunning the same command resumes every rank: finished videos are not
extracted again and the merge is redone only if a shard changed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vafusion.cache import schema
from vafusion.cache.corpus_index import write_corpus_index
from vafusion.cache.merge import Merged, merge_shards
from vafusion.device import set_threads, threads_given, threads_per_process
from vafusion.errors import VafusionError
from vafusion.extract.assembly import Failure
from vafusion.extract.corpus import Corpus
from vafusion.extract.run import ExtractOptions, ExtractReport, extract

BARRIER_TIMEOUT = _dt.timedelta(hours=72)
"""How long a rank waits for the others at the end: the slowest shard may take hours."""


@dataclass(frozen=True)
class Rank:
    """This process's place among torchrun's: global rank, world size, rank and count on this machine."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def torchrun_rank(environ: Mapping[str, str] | None = None) -> Rank | None:
    """The :class:`Rank` torchrun gave this process (from its environment), or None without torchrun."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError as e:
        raise VafusionError(
            "RANK/WORLD_SIZE/LOCAL_RANK must be integers (as torchrun sets them); unset them to run without torchrun"
        ) from e
    if not (0 <= rank < world and 0 <= local < local_world):
        raise VafusionError(
            f"RANK {rank} of WORLD_SIZE {world} (LOCAL_RANK {local} of {local_world}): not a valid "
            f"place; start vafusion with torchrun, or unset these variables"
        )
    return Rank(rank, world, local, local_world)


def rank_device(device: str, rank: Rank) -> str:
    """``auto``/``cuda`` -> ``cuda:LOCAL_RANK`` where CUDA is (``auto``: else ``cpu``); an explicit device stays."""
    if device not in ("auto", "cuda"):
        return device
    if not torch.cuda.is_available():
        if device == "cuda":
            raise VafusionError("--device cuda: CUDA is not available here; use --device cpu")
        return "cpu"
    if rank.local_rank >= torch.cuda.device_count():
        raise VafusionError(
            f"LOCAL_RANK {rank.local_rank}: this machine has {torch.cuda.device_count()} GPU(s); "
            f"start at most that many processes per node (torchrun --nproc_per_node)"
        )
    return f"cuda:{rank.local_rank}"


def rank_threads(rank: Rank) -> int:
    """This rank's compute threads: ``--threads`` where given (per rank), else its share of the machine's cores."""
    return threads_given() or threads_per_process(rank.local_world_size)


def rank_options(opts: ExtractOptions, rank: Rank) -> ExtractOptions:
    """``opts`` for this rank: its shard and device, its share of the machine's decoding workers; bars on rank 0."""
    if opts.shard != (1, 1):
        raise VafusionError(
            f"--shard {opts.shard[0]}/{opts.shard[1]} under torchrun: torchrun splits the ids "
            f"itself (rank R extracts shard R+1 of WORLD_SIZE); drop --shard"
        )
    workers = opts.workers
    if workers is None:  # the single-process default, min(8, cores - 1), shared by the ranks of a machine
        workers = max(0, min(8, threads_per_process(rank.local_world_size) - 1))
    return dataclasses.replace(
        opts,
        shard=(rank.rank + 1, rank.world_size),
        device=rank_device(opts.device, rank),
        workers=workers,
        progress=opts.progress and rank.rank == 0,
    )


@dataclass
class DistributedReport:
    """What a torchrun extraction did: this rank's own report, every rank's summary, rank 0's merge."""

    rank: Rank
    report: ExtractReport
    ranks: list[dict[str, Any]] = field(default_factory=list)  # per rank: written, counts, failures, warnings
    merged: list[Merged] = field(default_factory=list)  # rank 0 only
    not_merged: dict[str, str] = field(default_factory=dict)  # feature -> why (rank 0 only)
    merge_ok: bool = True  # on every rank: whether rank 0 merged every feature

    @property
    def ok(self) -> bool:
        """Every rank extracted every video and every feature was merged."""
        return all(r["ok"] for r in self.ranks) and self.merge_ok


def _summary(report: ExtractReport, rank: Rank) -> dict[str, Any]:
    return {
        "rank": rank.rank,
        "ok": report.ok,
        "written": sorted(report.written),
        "extracted": dict(report.extracted),
        "skipped": dict(report.skipped),
        "failures": [str(f) for f in report.failures],
        "problems": list(report.problems),
        "warnings": list(report.warnings),
    }


def _all_gather_json(obj: Any, world_size: int) -> list[Any]:
    """Every rank's ``obj`` (JSON-able), in rank order; a collective, so also a barrier. No pickle.

    A rank that ended without taking part (killed, out of memory) is one line, not gloo's traceback.
    """
    try:
        return _gather(obj, world_size)
    except RuntimeError as e:  # gloo: "Connection closed by peer" and the like
        said = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise VafusionError(
            f"rank {dist.get_rank()}: another rank ended without reporting ({said}); its own output says why; "
            "rerun the same command to resume"
        ) from e


def _gather(obj: Any, world_size: int) -> list[Any]:
    data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: data.numel()] = data
    gathered = [torch.zeros(longest, dtype=torch.uint8) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return [json.loads(bytes(g[: int(s.item())].tolist()).decode()) for g, s in zip(gathered, sizes)]


def _merge_finished(cache: Path, ranks: list[dict[str, Any]], copy: bool) -> tuple[list[Merged], dict[str, str]]:
    """Rank 0's part: merge each feature that every rank finished; say why the others are not merged."""
    features = sorted({f for r in ranks for f in r["written"]})
    done = [f for f in features if all(f in r["written"] for r in ranks)]
    not_merged = {
        f: "not finished by rank(s) " + ", ".join(str(r["rank"]) for r in ranks if f not in r["written"])
        for f in features
        if f not in done
    }
    try:
        merged = merge_shards(cache, copy=copy, features=done) if done else []
    except VafusionError as e:
        return [], {**not_merged, **{f: f"merge failed: {e}" for f in done}}
    return merged, not_merged


def extract_distributed(
    corpus: Corpus,
    cache: str | Path,
    opts: ExtractOptions,
    rank: Rank,
    *,
    copy: bool = False,
    warn: Callable[[str], None] | None = None,
) -> DistributedReport:
    """This rank's shard of ``corpus`` into ``cache``, then (rank 0) the merge; see the module docstring.

    ``copy``: the merged files copy the shards' data (self-contained) instead of linking to them.
    Only rank 0 calls ``warn``, with the warnings of every rank, once each.
    """
    cache = Path(cache)
    mine = rank_options(opts, rank)
    set_threads(rank_threads(rank))
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        if rank.rank == 0 and not (cache / schema.CORPUS_FILE).exists():  # one writer, before the others read it
            write_corpus_index(cache, corpus.index(), source=str(corpus.root or ""))
        dist.barrier()
        try:
            report = extract(corpus, cache, mine)
        except VafusionError as e:  # this rank stops; the others still hear why (not a closed connection)
            report = ExtractReport(cache=cache, failures=[Failure(None, ",".join(opts.features), str(e))])
        result = DistributedReport(rank, report, ranks=_all_gather_json(_summary(report, rank), rank.world_size))
        if rank.rank == 0 and rank.world_size > 1:  # one rank wrote whole files: nothing to merge
            result.merged, result.not_merged = _merge_finished(cache, result.ranks, copy)
        if rank.rank == 0:
            for message in dict.fromkeys(m for r in result.ranks for m in r["warnings"]):
                (warn or (lambda m: None))(message)
        result.merge_ok = _all_gather_json(not result.not_merged, rank.world_size)[0]  # the others wait for it
        return result
    finally:
        dist.destroy_process_group()


__all__ = [
    "BARRIER_TIMEOUT",
    "DistributedReport",
    "Rank",
    "extract_distributed",
    "rank_device",
    "rank_options",
    "rank_threads",
    "torchrun_rank",
]
