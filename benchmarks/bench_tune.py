"""vafusion tune: --jobs 2 against --jobs 1, its overhead over the trainings it runs, and what pruning saves.

A random cache of realistic dims (resnet50 2048 + vggish 128 + logmel 64, float16; ``--frames``
frames in ``--videos`` videos), the default model (imf) and the default search space less the
window (fixed at ``--window``, so trials take comparable time), through
``vafusion.fusion.experiments.tune.run_tune`` as ``vafusion tune`` calls it; a fresh study folder
every time.

tune_jobs2_speedup: ``--trials`` unpruned trials of ``--epochs`` epochs three ways, interleaved,
``--repeats`` times, as cv_jobs_speedup does (benchmarks/bench_parallel.py): jobs 1 (this process,
torch on every core: the baseline), jobs 1 at 1 thread (the control: how much is a second
thread), jobs 2 (two worker processes, one core's share each). The trials are the same in all
three (TPE's random start draws each trial from (seed, trial number)). Result: median(jobs 1) /
median(jobs 2), target >= 1.3.

tune_overhead: a tune of ``--overhead-trials`` unpruned trials of ``--overhead-epochs`` epochs (several values,
comma-separated: one RESULT each, ``tune_overhead_epochsE`` after the first) in this process at 1 torch thread: its
wall time (opening the study, the one read of the cache, every trial, tune.json/best.json/tune.html)
/ the sum of the wall times of the ``train`` calls of its trials (each timed around the call);
median over ``--repeats``. Target <= 1.1. Also printed: the fixed seconds (wall - trainings) and how
many trials of this length a tune needs for the ratio to reach 1.1 (fixed / (0.1 x mean training)),
since the ratio depends on that, not on vafusion alone.

tune_pruning_saving: the same ``--prune-trials`` trials of ``--prune-epochs`` epochs (same seed) with
the median pruner and without, on a learnable cache (tests/toy_cache.py, ``--videos`` videos of
200-500 frames: its labels are in its features, so trials differ in P) and a small imf (``SMALL``):
epochs trained with / epochs trained without. Target <= 0.8.

    python benchmarks/bench_tune.py [--only overhead|jobs|pruning] [--frames 3000] [--videos 12] [--window 150]
        [--trials 4] [--epochs 2] [--overhead-trials 8] [--overhead-epochs 2[,10]] [--prune-trials 8]
        [--prune-epochs 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C
import torch

from vafusion.fusion.experiments import tune as tune_mod
from vafusion.fusion.experiments.space import build_space
from vafusion.fusion.runs.config import make_config

OVERHEAD_MAX = 1.1
SPEEDUP_MIN = 1.3
PRUNING_MAX = 0.8
REAL = tuple(C.REAL_DIMS)
SMALL = {
    "d_model": {"choices": [16, 32]},
    "heads": 2,
    "head_hidden": 16,
    "tcn_dilations": {"choices": [[1, 2], [1, 2, 4]]},
}
"""The pruning comparison's model space: small (the toy cache's 36 dims), so its 2 x N trials take minutes."""


def _tuning(
    cache: Path,
    study: Path,
    args: argparse.Namespace,
    trials: int,
    epochs: int,
    pruner: str,
    features: tuple,
    space: dict[str, Any] | None = None,
) -> Any:
    base = make_config(
        features=features, window=args.window, hop=args.window * 2 // 3, epochs=epochs, patience=epochs, device="cpu"
    )
    return tune_mod.Tuning(cache, study, base, build_space(base, {"window", "hop"}, space), trials, pruner)


def _run(tuning: Any, workers: int = 1) -> tuple[float, float, dict[str, Any]]:
    """Wall seconds of the tune, seconds inside its train calls (in this process), and tune.json."""
    inside = [0.0]
    real = tune_mod.train

    def timed_train(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            inside[0] += time.perf_counter() - start

    tune_mod.train = timed_train
    try:
        start = time.perf_counter()
        summary = tune_mod.run_tune(tuning, workers=workers, progress=False)
        wall = time.perf_counter() - start
    finally:
        tune_mod.train = real
    return wall, inside[0], summary


def _epochs(summary: dict[str, Any]) -> int:
    return sum(int(t["epochs"] or 0) for t in summary["trials"] if t["state"] in ("complete", "pruned"))


def overhead(args: argparse.Namespace, cache: Path, tmp: Path) -> None:
    """Once per ``--overhead-epochs`` value (trial length): the first is ``tune_overhead``, the others
    ``tune_overhead_epochsE`` (the ratio depends on the trials' length: both short and realistic ones)."""
    for k, epochs in enumerate(args.overhead_epochs):
        overhead_at(
            args, cache, tmp / f"overhead-e{epochs}", epochs, "tune_overhead" + (f"_epochs{epochs}" if k else "")
        )


def overhead_at(args: argparse.Namespace, cache: Path, tmp: Path, epochs: int, name: str) -> None:
    """In this process at 1 torch thread (the jobs-1 control's setting: the trainings' own time is stable)."""
    ratios, fixed, per_trial = [], [], []
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print(f"{name}: {args.overhead_trials} trials of {epochs} epochs", flush=True)
    try:
        for r in range(args.repeats):
            tuning = _tuning(cache, tmp / f"overhead{r}", args, args.overhead_trials, epochs, "none", REAL)
            wall, inside, summary = _run(tuning)
            n = len(summary["trials"])
            ratios.append(wall / inside)
            fixed.append(wall - inside)
            per_trial.append(inside / n)
            print(
                f"  repeat {r + 1}: tune {wall:.1f} s, its {n} trainings {inside:.1f} s ({per_trial[-1]:.1f} s each): "
                f"{ratios[-1]:.3f}; outside the trainings {fixed[-1]:.1f} s; load {C.load_average()}",
                flush=True,
            )
    finally:
        torch.set_num_threads(default_threads)
    needed = C.median(fixed) / (OVERHEAD_MAX - 1) / C.median(per_trial)
    print(
        f"median outside the trainings {C.median(fixed):.1f} s, training {C.median(per_trial):.1f} s per trial: "
        f"{OVERHEAD_MAX} is reached from about {needed:.0f} trials of this length"
    )
    C.result(name, C.median(ratios), "<=", OVERHEAD_MAX)


def jobs(args: argparse.Namespace, cache: Path, tmp: Path) -> None:
    ways = {"jobs 1": (1, None), "jobs 1, 1 thread": (1, 1), "jobs 2": (2, None)}
    times: dict[str, list[float]] = {w: [] for w in ways}
    default_threads, n = torch.get_num_threads(), 0
    for r in range(args.repeats):
        for way, (workers, threads) in ways.items():
            n += 1
            torch.set_num_threads(threads or default_threads)
            try:
                wall, _, summary = _run(
                    _tuning(cache, tmp / f"jobs{n}", args, args.trials, args.epochs, "none", REAL), workers
                )
            finally:
                torch.set_num_threads(default_threads)
            times[way].append(wall)
            best = summary["best"]["p"] if summary["best"] else float("nan")
        print(
            f"  repeat {r + 1}: " + ", ".join(f"{w} {times[w][-1]:.1f} s" for w in ways) + f" (best P {best:.4f}); "
            f"load {C.load_average()}",
            flush=True,
        )
    med = {w: C.median(t) for w, t in times.items()}
    print("median wall time: " + ", ".join(f"{w} {t:.1f} s" for w, t in med.items()))
    print(f"jobs 1 at 1 thread / jobs 2: {med['jobs 1, 1 thread'] / med['jobs 2']:.3f} (processes alone)")
    C.result("tune_jobs2_speedup", med["jobs 1"] / med["jobs 2"], ">=", SPEEDUP_MIN)


def pruning(args: argparse.Namespace, _: Path, tmp: Path) -> None:
    """On a learnable cache (tests/toy_cache.py: the labels are in the features), where P tells trials apart."""
    from tests.toy_cache import write_toy_cache

    cache = tmp / "learnable"
    write_toy_cache(cache, n_videos=args.videos, frames=(200, 500))
    epochs = {}
    for pruner in ("median", "none"):
        tuning = _tuning(
            cache,
            tmp / f"prune-{pruner}",
            args,
            args.prune_trials,
            args.prune_epochs,
            pruner,
            ("visual", "audio"),
            SMALL,
        )
        wall, _, summary = _run(tuning)
        epochs[pruner] = _epochs(summary)
        n = summary["counts"]
        print(
            f"  {pruner}: {epochs[pruner]} epochs in {wall:.1f} s; {n['complete']} complete, {n['pruned']} pruned; "
            f"best P {summary['best']['p']:.4f} (trial {summary['best']['trial']}); load {C.load_average()}",
            flush=True,
        )
    C.result("tune_pruning_saving", epochs["median"] / epochs["none"], "<=", PRUNING_MAX)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--window", type=int, default=150)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--overhead-trials", type=int, default=8)
    ap.add_argument(
        "--overhead-epochs",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[2],
        help="epochs per trial of the overhead tunes, comma-separated: one RESULT per value (default 2)",
    )
    ap.add_argument("--prune-trials", type=int, default=8)
    ap.add_argument("--prune-epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", choices=["overhead", "jobs", "pruning"], default=None)
    args = ap.parse_args()
    C.header("vafusion tune: overhead, --jobs 2, pruning")
    with tempfile.TemporaryDirectory(prefix="vafusion-bench-tune-") as tmp:
        info = C.write_random_cache(Path(tmp) / "cache", args.frames, args.videos, validation_every=4)
        print(
            f"cache: {args.videos} videos, {args.frames} frames, {info['feature_bytes'] / 1e6:.0f} MB float16; imf, "
            f"default space less the window ({args.window}); torch threads here: {torch.get_num_threads()}",
            flush=True,
        )
        cache = Path(tmp) / "cache"
        for name, bench in (("overhead", overhead), ("jobs", jobs), ("pruning", pruning)):
            if args.only in (None, name):
                bench(args, cache, Path(tmp))
        print(f"# load average at the end {C.load_average()}")


if __name__ == "__main__":
    main()
