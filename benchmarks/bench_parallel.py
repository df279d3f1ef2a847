"""Parallel work: `cv --jobs 2` against `--jobs 1`, and torchrun extraction on 2 ranks against 1.

cv_jobs_speedup: a random cache of realistic dims (resnet50 2048 + vggish 128 + logmel 64,
float16; ``--frames`` frames in ``--videos`` videos) cross-validated over ``--folds`` folds
with the default model (imf, window 300, hop 200, batch 16) for ``--epochs`` epochs, through
``vafusion.fusion.experiments.cv.cross_validate``, three ways, interleaved, ``--repeats`` times, fresh run
directories every time:

- jobs 1: the runs one after the other in this process, torch on every core (what
  ``cv`` does without ``--jobs``), the baseline;
- jobs 1, 1 thread: the same with ``torch.set_num_threads(1)``, to tell how much of the gain
  is processes and how much is a small model's poor use of a second thread;
- jobs 2: 2 worker processes, one core's share of threads each (``cv --jobs 2``).

The whole call is timed (worker start-up, training, out-of-fold predictions, post-processing),
as a user waits for it. Result: median(jobs 1) / median(jobs 2), target >= 1.3.

extract_torchrun_scaling: a generated corpus (``--corpus-videos`` videos of ``--seconds`` s)
extracted (``--model``, default resnet18, with random weights at ``--image-size`` px, and
logmel; ``--device``, default cpu) by
``python -m torch.distributed.run --standalone --nproc_per_node G -m vafusion extract`` for
G = 1 and 2, and (the control) by one plain ``vafusion extract --workers 0`` at 1 torch
thread (what each of the 2 ranks gets), interleaved, ``--repeats`` times, each into a new
cache; timed from launch to exit (start-up, discovery, extraction, rank 0's merge). Result:
frames/s with 2 ranks / frames/s with 1 rank, target >= 0.9 on a CPU box (the ranks share its
cores: expect ~1, not 2; on a machine with one GPU per rank the ratio is the real scaling).

    python benchmarks/bench_parallel.py [--only cv|extract] [--frames 12000] [--videos 24] [--folds 4]
        [--epochs 1] [--corpus-videos 12] [--seconds 8] [--image-size 64] [--model resnet18] [--device cpu]
        [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import torch

from vafusion.fusion.experiments.cv import cross_validate
from vafusion.fusion.runs.config import make_config
from vafusion.synth import make_corpus

SPEEDUP_MIN = 1.3
SCALING_MIN = 0.9


def cv_jobs_speedup(args: argparse.Namespace, tmp: Path) -> None:
    info = C.write_random_cache(tmp / "cache", args.frames, args.videos, validation_every=4)
    print(
        f"cache: {args.videos} videos, {args.frames} frames, {info['feature_bytes'] / 1e6:.0f} MB float16; "
        f"cv over {args.folds} folds, {args.epochs} epoch(s) each, default imf; torch threads in this process: "
        f"{torch.get_num_threads()}",
        flush=True,
    )
    config = make_config(  # the v1 recipe: the one BENCHMARKS.md section 7 was measured with
        recipe="v1",
        features=tuple(C.REAL_DIMS),
        folds=args.folds,
        epochs=args.epochs,
        patience=args.epochs,
        device="cpu",
    )
    ways = {"jobs 1": (1, None), "jobs 1, 1 thread": (1, 1), "jobs 2": (2, None)}
    times: dict[str, list[float]] = {w: [] for w in ways}
    scores: dict[str, float] = {}
    default_threads, n = torch.get_num_threads(), 0
    for r in range(args.repeats):
        for way, (workers, threads) in ways.items():
            n += 1
            out: dict = {}
            torch.set_num_threads(threads or default_threads)
            times[way].append(
                C.timed(
                    lambda out=out, n=n, workers=workers: out.update(
                        cross_validate(
                            tmp / "cache",
                            tmp / f"runs{n}",
                            config,
                            progress=False,
                            report=False,
                            workers=workers,
                        )
                    )
                )
            )
            torch.set_num_threads(default_threads)
            scores[way] = out["p"]["mean"]
        print(
            f"  repeat {r + 1}: " + ", ".join(f"{w} {times[w][-1]:.1f} s (mean P {scores[w]:.4f})" for w in ways),
            flush=True,
        )
    med = {w: C.median(t) for w, t in times.items()}
    print("median wall time: " + ", ".join(f"{w} {t:.1f} s" for w, t in med.items()))
    print(
        f"jobs 1 at 1 thread / jobs 2: {med['jobs 1, 1 thread'] / med['jobs 2']:.3f} (processes alone); "
        f"jobs 1 / jobs 1 at 1 thread: {med['jobs 1'] / med['jobs 1, 1 thread']:.3f} (the second thread)"
    )
    C.result("cv_jobs_speedup", med["jobs 1"] / med["jobs 2"], ">=", SPEEDUP_MIN)


def _timed_extract(corpus: Path, cache: Path, ranks: int, args: argparse.Namespace) -> float:
    """Wall seconds of one extraction: torchrun with ``ranks`` processes, or (0) one plain process at 1 thread."""
    options = [
        "extract",
        str(corpus),
        "--cache",
        str(cache),
        "--features",
        f"{args.model},logmel",
        "--visual-weights",
        "random",
        "--image-size",
        str(args.image_size),
        "--device",
        args.device,
    ]
    env = dict(os.environ)
    if ranks:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(ranks),
            "-m",
            "vafusion",
            *options,
        ]
    else:  # the control: what each of 2 ranks gets (1 torch thread, decoding in the process), alone
        command = [sys.executable, "-m", "vafusion", *options, "--workers", "0"]
        env["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    done = subprocess.run(command, cwd=C.ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"extraction ({ranks} rank(s)) failed:\n{done.stderr[-3000:]}")
    return seconds


def extract_torchrun_scaling(args: argparse.Namespace, tmp: Path) -> None:
    corpus = make_corpus(tmp / "corpus", n_videos=args.corpus_videos, seconds=args.seconds, seed=0)
    frames = sum(v.n_frames for v in corpus.videos)
    print(
        f"corpus: {len(corpus.videos)} ids, {frames} frames; {args.model} (random) at {args.image_size} px + logmel, "
        f"--device {args.device}, {os.cpu_count()} cores",
        flush=True,
    )
    ways = {1: "1 rank", 2: "2 ranks", 0: "1 process, 1 thread, no decoding worker"}
    times: dict[int, list[float]] = {w: [] for w in ways}
    n = 0
    for r in range(args.repeats):
        for way in ways:
            n += 1
            times[way].append(_timed_extract(corpus.root, tmp / f"cache{n}", way, args))
        print(
            f"  repeat {r + 1}: "
            + ", ".join(
                f"{name} {times[w][-1]:.1f} s ({frames / times[w][-1]:.0f} frames/s)" for w, name in ways.items()
            ),
            flush=True,
        )
    med = {w: C.median(t) for w, t in times.items()}
    print("median: " + ", ".join(f"{name} {frames / med[w]:.0f} frames/s" for w, name in ways.items()))
    print(f"2 ranks / 1 process at 1 thread: {med[0] / med[2]:.3f} (processes alone)")
    C.result("extract_torchrun_scaling", med[1] / med[2], ">=", SCALING_MIN)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12000)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--corpus-videos", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--model", default="resnet18", help="the visual extractor (with logmel)")
    ap.add_argument("--device", default="cpu", help="extraction device; auto: rank R on cuda:R where there are GPUs")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", choices=["cv", "extract"], default=None)
    args = ap.parse_args()
    C.header("parallel work: cv --jobs, torchrun extraction")
    with tempfile.TemporaryDirectory(prefix="vafusion-bench-parallel-") as tmp:
        if args.only in (None, "cv"):
            cv_jobs_speedup(args, Path(tmp))
        if args.only in (None, "extract"):
            extract_torchrun_scaling(args, Path(tmp))


if __name__ == "__main__":
    main()
