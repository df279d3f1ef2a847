"""Training speed (issue 19): time to quality, quality on the demo corpus, step throughput, a cv estimate.

Every figure is measured in one run against "today's code", a second checkout of vafusion
(``--baseline DIR``, default: ``git archive`` of commit ``--baseline-commit`` into a temporary
folder). Both trees run as subprocesses of the same interpreter with ``PYTHONPATH`` set to
their checkout, alternating (baseline, new, baseline, new ...), each with its own defaults;
the tables give medians. ``--parallel N`` runs N trainings side by side (in that alternating
order), so both trees meet the same load. On a shared machine wall seconds depend on what
else runs; every training therefore also reports its CPU seconds (user + system of the
process, read from /proc when each metrics row appears), which at ``--run-threads 1`` is the
work itself. Parts (``--parts``, default all):

- ``ttq``: ``vafusion train`` of each tree on a hard cache of our own
  (``benchmarks/_hard_cache.py``: >= 30k training frames at dims 2048/128/64, labels that need a
  0.6 s lag and a visual x audio product), seeds 0..R-1. The script watches each run's
  metrics.jsonl and notes when each epoch's row appears (wall seconds from the start of the
  subprocess: start-up included). The quality bar is 0.99 x the median best P of today's
  runs; ``time_to_quality_speedup`` = median time of today's runs to reach it / median time
  of the new runs (target >= 4; ``..._cpu``: the same in CPU seconds); ``ttq_best_p_delta`` = new
  median best P - today's (>= -0.01).
- ``demo``: the `vafusion demo` corpus and cache (15 ids, resnet18 with random weights, VGGish,
  log-mel; built once) and the demo's imf configuration trained by each tree, seeds 0..R-1:
  ``demo_best_p_delta`` = |new median best P - today's| (<= 0.01).
- ``throughput``: frames per second of the default training step (the trainer's own epoch:
  batch assembly, forward, backward, AdamW; validation not included) on a random cache of
  real dims, ``--threads`` (default 2), each tree in a fresh process per repeat:
  ``train_throughput_ratio`` (target >= 1.7 on a CPU without native bf16, fp32; ``..._cpu``: frames
  per CPU second; ``..._d128``: the new recipe at imf's width before it, d_model 128;
  ``train_epoch_speedup``: today's seconds of an epoch per training frame of the corpus / the new
  default's, whose stride 2 trains half the frames per epoch; ``..._stride1``: the same at stride 1).
- ``cv``: a 6-fold `cv` of each tree's default recipe at Aff-Wild2 scale (2.8M frames, 5/6 train
  each fold), estimated from the throughput part's measured seconds per training and
  validation frame, times the epochs: for the new recipe the median epochs to quality and the
  median epochs run (early stop) from the ``ttq`` part; for today's, its 30 epochs.
  ``cv_affwild2_hours`` (target <= 2 h on a CPU without native bf16, <= 1 h with it).
- ``step`` (not in the default parts): one training step of the new tree (``gradient_step``: forward,
  1 - CCC, backward, clipping, AdamW) on one batch of 8 x 300 random frames at dims 2048/128/64, per
  variant of imf (:data:`STEP_VARIANTS`: widths, kernel 3, and a depthwise-separable TCN that exists
  only here, as a prototype), interleaved, medians of ``--repeats``, at ``--threads``; then the
  profile of the step at d_model 128 and the cost of a dropout mask drawn as floats (what
  ``layers.Dropout`` does) against one 32-bit draw per 4 frames. Why the default width is 64.
- ``bf16`` (not in the default parts): the new tree's recipe in fp32 and in bf16, seeds 0..R-1, on
  the hard and the demo cache: ``bf16_best_p_delta_{hard,demo}`` = |median best P bf16 - fp32|
  (<= 0.01). Where the CPU has no native bf16 the bf16 runs are emulated
  (``VAFUSION_ALLOW_EMULATED_BF16=1``; the names end in ``_emulated``): quality only.

Printed with every figure: CPU model, bf16 capability (``amx_bf16``/``avx512_bf16`` flags),
threads, the precision each run recorded, load average.

    python benchmarks/bench_fast_training.py [--parts ttq,demo,throughput,cv] [--repeats 3]
        [--baseline DIR | --baseline-commit 494c1e4] [--threads 2] [--run-threads 1] [--parallel 1]
        [--ttq-repeats N] [--frames 60000] [--hard-frames 36000] [--keep DIR] [--lever 'NAME=ARGS' ...]
        [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common as C

AFFWILD2_FRAMES = 2_800_000
FOLDS = 6
DEMO_ARGS = [
    "--features",
    "resnet18,vggish,logmel",
    "--window",
    "100",
    "--hop",
    "50",
    "--epochs",
    "15",
    "--batch-size",
    "8",
    "--patience",
    "15",
    *("--model-option", "d_model=64", "--model-option", "heads=4", "--model-option", "head_hidden=64"),
]


def bf16_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    found = sorted(flags & {"amx_bf16", "avx512_bf16"})
    return ", ".join(found) if found else "none (no amx_bf16 / avx512_bf16: no native bf16)"


def context(threads: int) -> str:
    return f"[{C.cpu_model()}; bf16 flags: {bf16_flags()}; {threads} threads; load average {C.load_average()}]"


# ----------------------------------------------------------------- runs of `vafusion train` ---


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads), from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


def train_run(
    tree: Path, cache: Path, run_dir: Path, args: list[str], threads: int, env_extra: dict | None = None
) -> dict:
    """``vafusion train`` of ``tree`` in a subprocess; when each metrics row appeared (wall seconds since the
    start, and the process's CPU seconds then), and the summary."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONWARNINGS="ignore", **(env_extra or {}))
    # -P and cwd: the tree's vafusion, never the one of the current directory (python -m puts it first)
    cmd = [sys.executable, "-P", "-m", "vafusion", "train", str(cache), "--run", str(run_dir), "--device", "cpu"]
    cmd += ["--threads", str(threads), "--no-report", *args]
    metrics = run_dir / "metrics.jsonl"
    seen: list[tuple[float, float, dict]] = []
    start = time.perf_counter()
    cpu = 0.0
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tree)
        while True:
            done = proc.poll() is not None
            cpu = cpu_seconds(proc.pid) if not done else cpu
            if metrics.is_file():
                lines = metrics.read_text().splitlines()
                now = time.perf_counter() - start
                for line in lines[len(seen) :]:
                    try:
                        seen.append((now, cpu, json.loads(line)))
                    except json.JSONDecodeError:
                        break  # a row being written: read it at the next look
            if done:
                break
            time.sleep(0.05)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}); see {run_dir.parent / (run_dir.name + '.log')}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"rows": seen, "wall": wall, "cpu": cpu, "summary": summary}


def first_reaching(rows: list[tuple[float, float, dict]], bar: float) -> tuple[float, float, int] | None:
    """(wall, CPU seconds, epoch) of the first row with P >= ``bar``."""
    for wall, cpu, row in rows:
        if row.get("p") is not None and row["p"] >= bar:
            return wall, cpu, int(row["epoch"])
    return None


def runs_side_by_side(jobs: list[tuple[str, int, object]], parallel: int) -> dict[tuple[str, int], dict]:
    """``jobs`` of ``(tree name, seed, thunk)``, ``parallel`` at a time in the given (alternating) order."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = {(name, seed): pool.submit(fn) for name, seed, fn in jobs}
        return {key: f.result() for key, f in futures.items()}


def _trained(
    trees: dict[str, Path], cache: Path, folder: Path, repeats: int, threads: int, parallel: int, args, extra=None
):
    """Every tree x seed trained on ``cache`` (alternating tree order, ``parallel`` at a time); runs per tree.
    ``extra``: ``{name: args}`` more runs of the new tree with those options added (a lever alone)."""
    ways = {name: (tree, []) for name, tree in trees.items()}
    ways.update({name: (trees["new"], more) for name, more in (extra or {}).items()})
    jobs = []
    for seed in range(repeats):
        for name, (tree, more) in ways.items():
            run_dir = folder / f"{name.replace(' ', '-')}-seed{seed}"
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [*args, *more, "--seed", str(seed)]
            jobs.append((name, seed, lambda t=tree, r=run_dir, c=cmd: train_run(t, cache, r, c, threads)))
    done = runs_side_by_side(jobs, parallel)
    for (name, seed), r in done.items():
        best = r["summary"]["best"]
        print(
            f"  {folder.name}, {name} seed {seed}: best P {best['p']:.4f} at epoch {best['epoch']} of "
            f"{len(r['rows'])}, {r['wall']:.1f} s wall, {r['cpu']:.1f} s CPU, precision "
            f"{r['summary'].get('precision')} {context(threads)}",
            flush=True,
        )
    return {name: [done[(name, s)] for s in range(repeats)] for name in ways}


def hard_cache(work: Path, train_frames: int) -> Path:
    """The hard cache of ``train_frames`` training frames (and a quarter as many validation frames), built once."""
    from _hard_cache import write_hard_cache

    cache = work / f"hard-cache-{train_frames}"
    if not (cache / "corpus.h5").is_file():
        info = write_hard_cache(cache, train_frames=train_frames, val_frames=train_frames // 4)
        print(f"hard cache: {info['train_frames']} training, {info['val_frames']} validation frames", flush=True)
    return cache


def part_ttq(
    trees: dict[str, Path], work: Path, repeats: int, threads: int, parallel: int, frames: int, levers: dict
) -> dict:
    cache = hard_cache(work, frames)
    extra = {f"new, {name}": more for name, more in levers.items()}
    runs = _trained(trees, cache, work / "ttq", repeats, threads, parallel, [], extra)
    base_best = C.median([r["summary"]["best"]["p"] for r in runs["today"]])
    bar = 0.99 * base_best
    out: dict = {"bar": bar}
    for name, rs in runs.items():
        hits = [first_reaching(r["rows"], bar) for r in rs]
        walls = [h[0] if h else float("inf") for h in hits]
        cpus = [h[1] if h else float("inf") for h in hits]
        epochs = [h[2] if h else float("inf") for h in hits]
        out[name] = {
            "time": C.median(walls),
            "cpu": C.median(cpus),
            "epochs_to_quality": C.median(epochs),
            "epochs_run": C.median([len(r["rows"]) for r in rs]),
            "best_p": C.median([r["summary"]["best"]["p"] for r in rs]),
            "wall": C.median([r["wall"] for r in rs]),
            "curves": [[(round(w, 1), round(c, 1), round(row["p"], 4)) for w, c, row in r["rows"]] for r in rs],
        }
        print(
            f"{name}: reaches P >= {bar:.4f} (0.99 x today's median best {base_best:.4f}) after "
            f"{', '.join(f'{t:.1f}' for t in walls)} s wall (median {out[name]['time']:.1f}), "
            f"{', '.join(f'{t:.1f}' for t in cpus)} s CPU (median {out[name]['cpu']:.1f}), epochs {epochs}; "
            f"best P median {out[name]['best_p']:.4f}; whole run {out[name]['wall']:.1f} s wall, "
            f"{out[name]['epochs_run']} epochs",
            flush=True,
        )
    print(f"curves (wall s, CPU s, P): {json.dumps({n: out[n]['curves'] for n in runs})}")
    (work / "ttq.json").write_text(json.dumps(out) + "\n")  # for a later `--parts cv` with the same --keep
    C.result("time_to_quality_speedup", out["today"]["time"] / out["new"]["time"], ">=", 4)
    C.result("time_to_quality_speedup_cpu", out["today"]["cpu"] / out["new"]["cpu"], ">=", 4)
    C.result("ttq_best_p_delta", out["new"]["best_p"] - out["today"]["best_p"], ">=", -0.01)
    for name in extra:
        tag = lever_tag(name)
        C.result(f"time_to_quality_speedup_{tag}", out["today"]["time"] / out[name]["time"], ">=", 4)
        C.result(f"ttq_best_p_delta_{tag}", out[name]["best_p"] - out["today"]["best_p"], ">=", -0.01)
    print(context(threads), flush=True)
    return out


# ------------------------------------------------------------------------------ demo ---


def demo_cache(work: Path) -> Path:
    """The `vafusion demo` corpus and cache (as the demo makes them), built once with the new tree."""
    cache = work / "demo-cache"
    if not (cache / "corpus.h5").is_file():
        C.demo_cache(work / "demo-corpus", cache)
    return cache


def part_demo(trees: dict[str, Path], work: Path, repeats: int, threads: int, parallel: int, levers: dict) -> dict:
    cache = demo_cache(work)
    extra = {f"new, {name}": more for name, more in levers.items()}
    runs = _trained(trees, cache, work / "demo", repeats, threads, parallel, DEMO_ARGS, extra)
    out = {}
    for name, rs in runs.items():
        best = [r["summary"]["best"]["p"] for r in rs]
        out[name] = {"best_p": C.median(best), "wall": C.median([r["wall"] for r in rs])}
        print(
            f"demo {name}: best P median {out[name]['best_p']:.4f} ({', '.join(f'{p:.4f}' for p in best)}), run "
            f"{out[name]['wall']:.1f} s wall, {C.median([r['cpu'] for r in rs]):.1f} s CPU"
        )
    C.result("demo_best_p_delta", abs(out["new"]["best_p"] - out["today"]["best_p"]), "<=", 0.01)
    for name in extra:
        tag = lever_tag(name)
        C.result(f"demo_best_p_delta_{tag}", abs(out[name]["best_p"] - out["today"]["best_p"]), "<=", 0.01)
    print(context(threads), flush=True)
    return out


# ------------------------------------------------------------------------ throughput ---

_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
import torch
cache, threads, epochs, settings = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
try:
    from vafusion.fusion.runs import train as T
    from vafusion.fusion.runs.config import make_config
    from vafusion.fusion.data.standardize import Standardizer
    from vafusion.fusion.data.loading import load_cache
    from vafusion.fusion.data.folds import split_ids
except ImportError:
    import vafusion.fusion.train as T
    from vafusion.fusion.config import make_config
    from vafusion.fusion.data import Standardizer, load_cache
    from vafusion.fusion.folds import split_ids
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.device import compute, precision
with compute(threads) as (n, _):
    config = make_config(device="cpu", **settings)
    index = read_corpus_index(cache)
    train_ids, val_ids = split_ids(index, config.data)
    loaded = load_cache(cache, config.data.features, train_ids + val_ids, index=index, progress=False)
    std = Standardizer.fit(loaded, train_ids)
    run = T._GradientRun.start(loaded, std, config, Path(tempfile.mkdtemp()), train_ids)
    frames = [0]
    step = run._step
    def counted(batch):
        frames[0] += batch.valid.numel()
        return step(batch)
    run._step = counted
    out = []
    for epoch in range(1, epochs + 2):
        frames[0] = 0
        t, c = time.perf_counter(), time.process_time()
        loss = run.train_epoch(epoch)
        train_s, train_cpu = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        run.validate(epoch, loss, val_ids)
        val_s, val_cpu = time.perf_counter() - t, time.process_time() - c
        if epoch > 1:  # the first epoch warms up allocators and kernels
            out.append({"train_s": train_s, "train_cpu": train_cpu, "frames": frames[0], "val_s": val_s,
                        "val_cpu": val_cpu})
    train_frames = int(loaded.lengths[loaded.positions(train_ids)].sum())
    val_frames = int(loaded.lengths[loaded.positions(val_ids)].sum())
    print(json.dumps({"epochs": out, "train_frames": train_frames, "val_frames": val_frames,
                      "threads": n, "precision": precision()}))
"""


def throughput_child(tree: Path, cache: Path, threads: int, epochs: int, settings: dict | None = None) -> dict:
    """One epoch (after a warm-up epoch) of ``tree``'s trainer in a fresh process; ``settings``: make_config's."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, "-P", "-c", _CHILD, str(cache), str(threads), str(epochs), json.dumps(settings or {})],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# the new tree's levers measured alone, beside its default (batch 8, stride 2, imf d_model 64): imf's width before
# the fast recipe (d_model 128), and stride 1 (the same step per frame, twice the frames per epoch: compare their
# epoch seconds per frame)
LEVERS = {"new, d_model 128": {"d_model": 128}, "new, stride 1": {"stride": 1}}


def part_throughput(trees: dict[str, Path], work: Path, repeats: int, threads: int, frames: int) -> dict:
    """Each tree's default step, and the new tree with each of :data:`LEVERS`; wall clock at ``threads`` and CPU
    seconds, the ways interleaved per repeat."""
    cache = work / "random-cache"
    if not (cache / "corpus.h5").is_file():
        C.write_random_cache(cache, frames, max(5, frames // 5000))
    ways = {"today": (trees["today"], {}), "new": (trees["new"], {})}
    ways.update({name: (trees["new"], settings) for name, settings in LEVERS.items()})
    results: dict[str, list[dict]] = {name: [] for name in ways}
    for r in range(repeats):
        for name, (tree, settings) in ways.items():
            res = throughput_child(tree, cache, threads, epochs=1, settings=settings)
            results[name].append(res)
            e = res["epochs"][0]
            print(
                f"  repeat {r + 1}, {name}: {e['frames']} frames in {e['train_s']:.1f} s wall, {e['train_cpu']:.1f} s "
                f"CPU = {e['frames'] / e['train_s']:.0f} frames/s ({e['frames'] / e['train_cpu']:.0f} per CPU s); "
                f"validation {res['val_frames']} frames in {e['val_s']:.1f} s; precision {res['precision']} "
                f"{context(res['threads'])}",
                flush=True,
            )
    out = {}
    for name, rs in results.items():
        ep = [x["epochs"][0] for x in rs]
        out[name] = {
            "fps": C.median([e["frames"] / e["train_s"] for e in ep]),
            "fps_cpu": C.median([e["frames"] / e["train_cpu"] for e in ep]),
            # seconds of one epoch per training frame of the corpus (the recipe's windows per epoch included)
            "epoch_s_per_frame": C.median([e["train_s"] / x["train_frames"] for e, x in zip(ep, rs)]),
            "val_s_per_frame": C.median([e["val_s"] / x["val_frames"] for e, x in zip(ep, rs)]),
            "epoch_cpu_per_frame": C.median([e["train_cpu"] / x["train_frames"] for e, x in zip(ep, rs)]),
            "val_cpu_per_frame": C.median([e["val_cpu"] / x["val_frames"] for e, x in zip(ep, rs)]),
        }
        o = out[name]
        print(
            f"{name}: {o['fps']:.0f} frames/s of the training step ({o['fps_cpu']:.0f} per CPU second); an epoch "
            f"costs {o['epoch_s_per_frame'] * 1e3:.3f} ms per training frame of the corpus, validation "
            f"{o['val_s_per_frame'] * 1e3:.3f} ms per frame"
        )
    C.result("train_throughput_ratio", out["new"]["fps"] / out["today"]["fps"], ">=", 1.7)
    C.result("train_throughput_ratio_cpu", out["new"]["fps_cpu"] / out["today"]["fps_cpu"], ">=", 1.7)
    C.result("train_throughput_ratio_d128", out["new, d_model 128"]["fps"] / out["today"]["fps"], ">=", 1.7)
    epoch = out["today"]["epoch_s_per_frame"]
    C.result("train_epoch_speedup", epoch / out["new"]["epoch_s_per_frame"], ">=", 1.7)
    C.result("train_epoch_speedup_stride1", epoch / out["new, stride 1"]["epoch_s_per_frame"], ">=", 1.7)
    print(context(threads), flush=True)
    return out


SEPARABLE = "separable"
STEP_VARIANTS: dict[str, dict] = {
    "d_model 128": {"d_model": 128},
    "d_model 96": {"d_model": 96},
    "d_model 80": {"d_model": 80},
    "d_model 64 (the default)": {},
    "d_model 128, kernel 3, dilations 1,2,4,8,16": {"d_model": 128, "tcn_kernel": 3, "tcn_dilations": (1, 2, 4, 8, 16)},
    "d_model 128, kernel 3, dilations 1,2,4,8": {"d_model": 128, "tcn_kernel": 3, "tcn_dilations": (1, 2, 4, 8)},
    "d_model 128, depthwise-separable TCN (prototype)": {"d_model": 128, SEPARABLE: True},
}
"""Name -> imf options of each step variant (``separable``: :func:`_separable` applied to the built model)."""


def _separable(model) -> None:
    """Each TCN convolution of ``model`` replaced by a depthwise one (same kernel and dilation) and a pointwise one
    (both weight-normalised): the prototype of a cheaper TCN, measured here and not kept (BENCHMARKS.md s12)."""
    from torch import nn
    from torch.nn.utils.parametrizations import weight_norm

    for block in (b for tcn in model.tcns for b in tcn.blocks):
        for name in ("conv1", "conv2"):
            conv = getattr(block, name)
            c_in, c_out = conv.in_channels, conv.out_channels
            depthwise = nn.Conv1d(
                c_in, c_in, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, groups=c_in
            )
            setattr(block, name, nn.Sequential(weight_norm(depthwise), weight_norm(nn.Conv1d(c_in, c_out, 1))))


def _step_setup(options: dict):
    """A model of ``options`` with its optimiser, a constant schedule, a disabled scaler and one random batch."""
    import torch

    from vafusion.fusion.data.batches import Batch
    from vafusion.fusion.runs.config import make_config

    options = dict(options)
    separable = options.pop(SEPARABLE, False)
    config = make_config(device="cpu", **options)
    dims, B, W = [2048, 128, 64], 8, 300
    model = config.build_model(dims)
    if separable:
        _separable(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.training.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    gen = torch.Generator().manual_seed(0)
    batch = Batch(
        streams=[torch.randn(B, W, d, generator=gen) for d in dims],
        present=[torch.ones(B, W, dtype=torch.bool) for _ in dims],
        valid=torch.ones(B, W, dtype=torch.bool),
        labels=torch.rand(B, W, 2, generator=gen) * 2 - 1,
        windows=torch.zeros(B, 3, dtype=torch.long),
    )
    return model, (model, optimizer, scheduler, scaler, batch, config.training, torch.device("cpu"))


def part_step(repeats: int, threads: int, steps: int) -> None:
    """ms per training step of each :data:`STEP_VARIANTS` (interleaved), the profile at d_model 128, the dropout
    draws."""
    import torch

    from vafusion.fusion.runs.train import gradient_step

    torch.set_num_threads(threads)
    setups = {name: _step_setup(options) for name, options in STEP_VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _, args in setups.values():  # warm-up: allocator, oneDNN kernels
        for _ in range(2):
            gradient_step(*args)
    for _ in range(repeats):
        for name, (_, args) in setups.items():
            start = time.perf_counter()
            for _ in range(steps):
                gradient_step(*args)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    base = C.median(times["d_model 128"])
    for name, ms in times.items():
        params = sum(p.numel() for p in setups[name][0].parameters())
        print(
            f"  {name}: {C.median(ms):.1f} ms per step ({', '.join(f'{t:.1f}' for t in ms)}), "
            f"{base / C.median(ms):.2f}x d_model 128's speed, {params / 1e6:.2f}M parameters",
            flush=True,
        )
    C.result("step_speedup_d_model64", base / C.median(times["d_model 64 (the default)"]), ">=", 1.7)
    _step_profile(setups["d_model 128"][1], steps)
    _dropout_draws()
    print(context(threads), flush=True)


def _step_profile(args: tuple, steps: int) -> None:
    """Shares of the step's self CPU time by operator (the top ones)."""
    from torch.profiler import profile

    from vafusion.fusion.runs.train import gradient_step

    with profile() as prof:
        for _ in range(steps):
            gradient_step(*args)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    shares = ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}" for e in ops[:8])
    print(f"  profile of the d_model 128 step (self CPU time): {shares}", flush=True)
    # every TCN convolution of the d_model 128 model is 128 -> 128 channels, kernel 5, over the batch's 8 x 300 frames
    flops = 2 * 8 * 300 * 128 * 128 * 5
    by_name = {e.key: e for e in ops}
    for key, times in (("aten::mkldnn_convolution", 1), ("aten::convolution_backward", 2)):
        if key in by_name:
            ms = by_name[key].self_cpu_time_total / by_name[key].count / 1e3
            print(f"  {key}: {ms:.2f} ms per call, {times * flops / ms / 1e6:.0f} GFLOP/s", flush=True)


def _dropout_draws(repeats: int = 50) -> None:
    """A dropout mask for (8, 80, 300) drawn as floats against one 32-bit draw per 4 values (ms)."""
    import torch

    x = torch.randn(8, 80, 300)

    def timed(draw) -> float:
        draw()
        start = time.perf_counter()
        for _ in range(repeats):
            draw()
        return (time.perf_counter() - start) / repeats * 1e3

    floats = timed(lambda: torch.rand_like(x).ge_(0.2))
    words = timed(lambda: torch.empty(x.numel() // 4, dtype=torch.int32).random_())
    print(
        f"  a dropout mask of {x.numel()} values: {floats:.3f} ms as floats, {words:.3f} ms as 32-bit words", flush=True
    )


def part_bf16(trees: dict[str, Path], work: Path, repeats: int, threads: int, parallel: int, frames: int) -> None:
    """Quality of the new recipe in bf16 against fp32 (best P, ``repeats`` seeds) on the hard cache and on the
    demo cache. On a CPU without native bf16 the bf16 runs are EMULATED (VAFUSION_ALLOW_EMULATED_BF16=1): a
    check of correctness and quality only, their times mean nothing."""
    emulated = "none" in bf16_flags()
    env = {"VAFUSION_ALLOW_EMULATED_BF16": "1"} if emulated else {}
    hard = hard_cache(work, frames)
    for label, cache, args in (("hard", hard, []), ("demo", demo_cache(work), DEMO_ARGS)):
        jobs = []
        for seed in range(repeats):
            for precision in ("fp32", "bf16"):
                run_dir = work / f"bf16-{label}" / f"{precision}-seed{seed}"
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(run_dir, ignore_errors=True)
                extra = [*args, "--seed", str(seed), "--precision", precision]
                jobs.append(
                    (
                        precision,
                        seed,
                        lambda r=run_dir, e=extra, c=cache: train_run(trees["new"], c, r, e, threads, env),
                    )
                )
        done = runs_side_by_side(jobs, parallel)
        best = {p: [done[(p, s)]["summary"]["best"]["p"] for s in range(repeats)] for p in ("fp32", "bf16")}
        recorded = {done[("bf16", s)]["summary"]["precision"] for s in range(repeats)}
        print(
            f"{label}: best P fp32 {', '.join(f'{p:.4f}' for p in best['fp32'])}; bf16"
            f"{' (EMULATED: no native bf16 here)' if emulated else ''} {', '.join(f'{p:.4f}' for p in best['bf16'])}; "
            f"recorded precision {sorted(recorded)} {context(threads)}",
            flush=True,
        )
        name = f"bf16_best_p_delta_{label}" + ("_emulated" if emulated else "")
        C.result(name, abs(C.median(best["bf16"]) - C.median(best["fp32"])), "<=", 0.01)


def part_cv(throughput: dict, ttq: dict | None, threads: int) -> None:
    """Hours of a 6-fold cv at Aff-Wild2 scale: from wall seconds at ``threads`` (what this machine gave
    now, load included) and from CPU seconds (the work itself: one thread of a quiet core)."""
    train_frames, val_frames = AFFWILD2_FRAMES * (FOLDS - 1) / FOLDS, AFFWILD2_FRAMES / FOLDS

    def hours(name: str, epochs: float, clock: str) -> float:
        t = throughput[name]
        epoch = t[f"epoch_{clock}_per_frame"] * train_frames + t[f"val_{clock}_per_frame"] * val_frames
        return FOLDS * epochs * epoch / 3600

    today_epochs = 30
    print(
        f"cv estimate, 6 folds of {train_frames / 1e6:.2f}M training + {val_frames / 1e6:.2f}M validation frames "
        f"(dims 2048/128/64): today's default, {today_epochs} epochs: {hours('today', today_epochs, 's'):.1f} h "
        f"(wall, {threads} threads), {hours('today', today_epochs, 'cpu'):.1f} h (CPU)"
    )
    if ttq is None:
        print("no ttq results (run --parts ttq with this --keep first): no estimate for the new recipe")
        return
    eq, er = ttq["new"]["epochs_to_quality"], ttq["new"]["epochs_run"]
    for clock, label in (("s", f"wall, {threads} threads"), ("cpu", "CPU")):
        print(
            f"new recipe ({label}): to quality ({eq} epochs, median on the hard corpus) {hours('new', eq, clock):.2f} "
            f"h; whole runs ({er} epochs, early stop) {hours('new', er, clock):.2f} h"
        )
    C.result("cv_affwild2_hours", hours("new", eq, "s"), "<=", 2)
    C.result("cv_affwild2_hours_cpu", hours("new", eq, "cpu"), "<=", 2)
    C.result("cv_affwild2_hours_whole_runs_cpu", hours("new", er, "cpu"), "<=", 2)
    print(context(threads), flush=True)


def parse_levers(given: list[str]) -> dict[str, list[str]]:
    """``["NAME=ARGS", ...]`` -> ``{NAME: [arg, ...]}`` (ARGS split as a shell would)."""
    levers = {}
    for text in given:
        name, sep, args = text.partition("=")
        if not sep or not name.strip() or not args.strip():
            raise SystemExit(f"--lever {text!r}: write NAME=ARGS, e.g. 'stride 1=--stride 1'")
        levers[name.strip()] = shlex.split(args)
    return levers


def lever_tag(name: str) -> str:
    """The RESULT-name suffix of a lever's run (``new, d_model 128`` -> ``d_model128``)."""
    return re.sub(r"[^A-Za-z0-9_]", "", name.split(", ", 1)[1])


def baseline_tree(args: argparse.Namespace, work: Path) -> Path:
    if args.baseline:
        return Path(args.baseline).resolve()
    out = work / f"baseline-{args.baseline_commit}"
    if not (out / "vafusion").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(C.ROOT), "archive", args.baseline_commit], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="ttq,demo,throughput,cv")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--ttq-repeats", type=int, help="seeds of the ttq part (default --repeats): its runs are the longest"
    )
    ap.add_argument("--threads", type=int, default=2, help="threads of the throughput part")
    ap.add_argument("--run-threads", type=int, default=1, help="threads of each `vafusion train` (ttq, demo)")
    ap.add_argument("--parallel", type=int, default=1, help="`vafusion train` runs at a time (ttq, demo)")
    ap.add_argument("--baseline", help="a checkout of today's code (default: git archive of --baseline-commit)")
    ap.add_argument("--baseline-commit", default="494c1e4")
    ap.add_argument("--frames", type=int, default=60_000, help="frames of the random cache (throughput)")
    ap.add_argument("--hard-frames", type=int, default=36_000, help="training frames of the hard cache (ttq, bf16)")
    ap.add_argument("--steps", type=int, default=8, help="steps per timing block (step)")
    ap.add_argument("--keep", help="work folder to keep (caches, runs); default a temporary one")
    ap.add_argument(
        "--lever",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="also run the new default with these `vafusion train` options (ttq, demo), a lever alone; e.g. "
        "'stride 1=--stride 1' or 'd_model 128=--model-option d_model=128' (repeatable)",
    )
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    levers = parse_levers(args.lever)
    C.header("training speed: time to quality, demo quality, throughput, cv estimate (issue 19)")
    print(f"# {context(args.threads)}", flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-fast-"))
    work.mkdir(parents=True, exist_ok=True)
    trees = {"today": baseline_tree(args, work), "new": C.ROOT}
    print(f"# trees: today = {trees['today']}, new = {trees['new']}; work folder {work}", flush=True)
    for name, tree in trees.items():
        where = subprocess.run(
            [sys.executable, "-P", "-c", "import vafusion; print(vafusion.__file__)"],
            cwd=tree,
            env=dict(os.environ, PYTHONPATH=str(tree)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not where.startswith(str(tree)):
            raise SystemExit(f"{name}: imports vafusion from {where}, not from {tree}")
        print(f"# {name} runs {where}", flush=True)
    try:
        ttq = (
            part_ttq(
                trees,
                work,
                args.ttq_repeats or args.repeats,
                args.run_threads,
                args.parallel,
                args.hard_frames,
                levers,
            )
            if "ttq" in parts
            else None
        )
        if "demo" in parts:
            part_demo(trees, work, args.repeats, args.run_threads, args.parallel, levers)
        if "step" in parts:
            part_step(args.repeats, args.threads, args.steps)
        if "bf16" in parts:
            part_bf16(trees, work, args.repeats, args.run_threads, args.parallel, args.hard_frames)
        if "throughput" in parts or "cv" in parts:
            tp = part_throughput(trees, work, args.repeats, args.threads, args.frames)
            if "cv" in parts:
                saved = work / "ttq.json"
                part_cv(tp, ttq or (json.loads(saved.read_text()) if saved.is_file() else None), args.threads)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
