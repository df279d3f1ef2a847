"""`torchrun ... -m vafusion extract` on CPU (gloo): two ranks give the cache one process gives, id by id; a rank
killed midway makes the run fail, and the same command resumes every rank without extracting a finished video
again. Also what each rank reads from torchrun's environment."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vafusion.cache.reader import FeatureFile, open_feature_file
from vafusion.cli import cli
from vafusion.device import compute, threads_per_process
from vafusion.errors import VafusionError
from vafusion.extract.distributed import Rank, rank_device, rank_options, rank_threads, torchrun_rank
from vafusion.extract.run import ExtractOptions
from vafusion.synth import make_corpus

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ("resnet18", "logmel")
OPTIONS = [
    "--features",
    ",".join(FEATURES),
    "--visual-weights",
    "random",
    "--image-size",
    "32",
    "--batch-size",
    "48",
    "--workers",
    "0",
    "--device",
    "cpu",
]  # as tiny_extracted's FAST_EXTRACT


def test_each_rank_reads_its_place_from_torchrun_and_takes_its_shard_and_share():
    assert torchrun_rank({}) is None
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert torchrun_rank(env) == Rank(3, 4, 1, 2)
    for bad, message in (
        ({"RANK": "x", "WORLD_SIZE": "2"}, "must be integers"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "not a valid place"),
    ):
        with pytest.raises(VafusionError, match=message):
            torchrun_rank(bad)
    rank = Rank(3, 4, 1, 2)
    assert rank_device("cpu", rank) == "cpu"
    if not __import__("torch").cuda.is_available():
        assert rank_device("auto", rank) == "cpu"
    opts = rank_options(ExtractOptions(features=("logmel",), device="cpu"), rank)
    assert opts.shard == (4, 4) and opts.device == "cpu" and opts.workers >= 0 and not opts.progress
    with compute(threads=None):  # each rank's share of the cores, unless --threads says how many per rank
        assert rank_threads(rank) == threads_per_process(2)
    with compute(threads=3):
        assert rank_threads(rank) == 3
    with pytest.raises(VafusionError, match="torchrun splits the ids itself"):
        rank_options(ExtractOptions(features=("logmel",), shard=(1, 2)), rank)
    result = CliRunner().invoke(cli, ["extract", "nowhere", "--cache", "c", "--features", "logmel", "--copy"])
    assert result.exit_code == 1 and "error: --copy: only under torchrun" in result.output


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker ``rank`` (a child of ``parent`` whose environment says RANK=rank)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != parent:
                continue
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    return None


def _done(cache: Path, feature: str, k: int) -> set[str]:
    """Ids shard k of 2 has on disk: its finished file's and its parts'."""
    name = f"{feature}.shard-{k}-of-2"
    ids = {p.stem for p in (cache / ".parts" / name).glob("*.h5")}
    if (cache / f"{name}.h5").is_file():
        with FeatureFile(cache / f"{name}.h5") as ff:
            ids |= set(ff.ids)
    return ids


def test_two_ranks_equal_one_process_and_a_killed_rank_resumes(tiny_extracted, tmp_path):
    corpus, reference, _ = tiny_extracted
    cache = tmp_path / "cache"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--standalone",
        "-m",
        "vafusion",
        "extract",
        str(corpus.root),
        "--cache",
        str(cache),
        *OPTIONS,
    ]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = cache / ".parts" / "resnet18.shard-2-of-2"
    end = time.monotonic() + 120
    while not any(parts.glob("*.h5")) and first.poll() is None and time.monotonic() < end:
        time.sleep(0.02)
    victim = _rank_pid(first.pid, 1)
    assert victim is not None and first.poll() is None, "rank 1 ended before it could be killed midway"
    os.kill(victim, signal.SIGKILL)  # rank 1 dies midway through its shard; torchrun stops rank 0
    assert first.wait(timeout=120) != 0
    before = {(f, k): _done(cache, f, k) for f in FEATURES for k in (1, 2)}
    assert before[("resnet18", 2)] and not (cache / "resnet18.h5").exists()

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for f in FEATURES:
        for k in (1, 2):  # what was on disk is not extracted again
            extracted, there = map(
                int, re.search(rf"rank {k - 1}: {f}: (\d+) extracted, (\d+) already there", again.stdout).groups()
            )
            assert there == len(before[(f, k)]) and extracted + there == len(_done(cache, f, k))
        assert f"wrote {cache / f}.h5" in again.stdout
        with open_feature_file(cache, f) as mine, open_feature_file(reference, f) as theirs:
            assert [p.name for p in mine.sources] == [f"{f}.shard-1-of-2.h5", f"{f}.shard-2-of-2.h5"]  # linked
            assert mine.ids == theirs.ids and mine.fingerprint == theirs.fingerprint
            for vid in mine.ids:
                (a, a_mask), (b, b_mask) = mine.read(vid), theirs.read(vid)
                np.testing.assert_array_equal(a_mask, b_mask)
                np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=1e-3, atol=1e-3)


def test_a_failing_video_is_reported_with_its_rank_and_id_and_the_rerun_fills_it_in(tmp_path, monkeypatch):
    import socket

    import torch

    corpus = make_corpus(tmp_path / "corpus", n_videos=3, seconds=1.5, seed=5)
    victim = next(v for v in corpus.videos if not v.id.endswith(("_left", "_right")))
    crop = sorted((corpus.root / "cropped_aligned" / victim.id).glob("*.jpg"))[3]
    crop.write_bytes(b"not a jpeg at all")
    with socket.socket() as s:  # a free port for this process's one-rank gloo group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        monkeypatch.setenv(key, value)
    threads = torch.get_num_threads()
    args = ["extract", str(corpus.root), "--cache", str(tmp_path / "cache"), *OPTIONS]
    try:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"rank 0 failed: {victim.id} [resnet18]" in result.stderr and crop.name in result.stderr
        assert "rerun the same command to resume" in result.stderr
        crop.unlink()
        again = CliRunner().invoke(cli, args)
    finally:
        torch.set_num_threads(threads)
    assert again.exit_code == 0, again.output
    assert "rank 0: resnet18: 1 extracted" in again.stdout and "rank 0: logmel: 0 extracted" in again.stdout
    with open_feature_file(tmp_path / "cache", "resnet18") as ff:  # one rank: whole files, nothing to merge
        assert victim.id in ff.ids and not ff.sources
