"""Training: full step against the model-only step, peak RSS against the cache, frames/s.

A cache of realistic dims (resnet50 2048 + vggish 128 + logmel 64, float16, random data,
~100k frames in 20 videos of Aff-Wild2's mean length ~5000 frames) is written with the real
writer API; the configuration of the v1 recipe (imf, window 300, hop 200, batch 16, d_model 128; the
one sections 4 and 8 of BENCHMARKS.md were measured with; ``bench_fast_training.py`` measures the fast
recipe's step against it) trains on it.

1. Step efficiency, interleaved and repeated: the trainer's full step (``iterate_batches``
   batch assembly + forward + 1 - CCC loss + backward + clip + AdamW + schedule, the code of
   ``vafusion.fusion.runs.train``) against the same step on one pre-built batch. Result:
   model-only seconds / full seconds (medians), target >= 0.9.
2. Peak RSS, in a subprocess running the real ``vafusion.fusion.runs.train.train`` for one epoch
   (load, standardise, train, validate, checkpoint) on a second, larger cache (``--rss-frames``,
   default 1M frames = 4.3 GiB of features, a third of Aff-Wild2; ~9 GB of temporary disk and
   ~6 GB of RAM while it runs): VmHWM minus the VmHWM after importing python + torch +
   vafusion, divided by the float16 feature bytes; target <= 1.3. The ratio depends on the
   cache size, because the model's working set (~0.9 GiB) does not grow with the cache: on the
   100k-frame cache it would be ~3. The
   subprocess also records VmHWM around ``load_cache``, which splits the peak into the part
   that grows with the cache (bytes held per feature byte) and a fixed working set of the
   model (activations, gradients, optimiser state, batch buffers, allocator slack); from the
   two the script extrapolates the ratio to Aff-Wild2 scale.
3. Training frames/s on this machine and the extrapolated epoch time at Aff-Wild2 scale
   (~2.8M frames in ~564 videos, same dims and config).
4. ``train_step_busy_machine_ratio``: the training step (default config, one pre-built batch) on
   a quiet machine against the same step while one competing process spins on a core, each
   in a fresh process, with the threads the CLI chooses by default (``vafusion.device``:
   physical cores minus the busy ones, OpenMP waiting passively): quiet seconds / busy
   seconds, target >= 0.4. The same for torch's own default (as many threads as cores, OpenMP
   spinning: what every command did before) is printed beside it, and so is all cores with
   passive waiting (what the default gives when the competitor starts after the command).
   Quiet and busy runs are interleaved; ``--busy-only`` runs just this.

    python benchmarks/bench_train.py [--frames 100000] [--videos 20] [--steps 8] [--repeats 3]
                                     [--rss-frames 1000000] [--rss-videos 200] [--busy-only | --skip-busy]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import numpy as np
import torch

from vafusion.device import resolve_device
from vafusion.fusion.data.batches import build_batch, iterate_batches
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import make_windows, windows_with_labels
from vafusion.fusion.models import count_parameters
from vafusion.fusion.runs.config import FusionConfig, make_config
from vafusion.fusion.runs.train import gradient_step

AFFWILD2_FRAMES = 2_800_000
AFFWILD2_VIDEOS = 564


class Trainer:
    """The trainer's set-up and its step (``vafusion.fusion.runs.train.gradient_step``), one step at a time."""

    def __init__(self, config: FusionConfig, dims: list[int], device: torch.device, total_steps: int):
        tc = config.training
        torch.manual_seed(tc.seed)
        self.config, self.device = config, device
        self.model = config.build_model(dims).to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 + 0.5 * math.cos(s / total_steps)
        )
        scaler_enabled = device.type == "cuda" and tc.amp and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaler_enabled)
        self.losses: list[float] = []

    def step(self, batch) -> None:
        batch = batch.to(self.device, non_blocking=True)
        self.losses.append(
            gradient_step(
                self.model, self.optimizer, self.scheduler, self.scaler, batch, self.config.training, self.device
            )
        )


def full_steps(trainer: Trainer, loaded, standardizer, windows, n: int, seed: int) -> float:
    """Seconds per step of n steps fed by iterate_batches (shuffled), as the trainer does."""
    rng = np.random.default_rng(seed)
    it = iterate_batches(
        loaded,
        standardizer,
        windows,
        trainer.config.training.batch_size,
        shuffle=True,
        generator=rng,
        window=trainer.config.data.window,
    )
    start = time.perf_counter()
    for _ in range(n):
        trainer.step(next(it))
    return (time.perf_counter() - start) / n


def model_steps(trainer: Trainer, batch, n: int) -> float:
    """Seconds per step of n steps on one pre-built batch (no assembly)."""
    start = time.perf_counter()
    for _ in range(n):
        trainer.step(batch)
    return (time.perf_counter() - start) / n


# ------------------------------------------------------------------- RSS subprocess ---


def rss_child(cache: str, run_dir: str) -> None:
    """Runs in a fresh interpreter: one epoch of the real trainer; prints one JSON line."""
    import vafusion.fusion.runs.train as train_mod

    baseline = C.vm_status_kib("VmHWM")  # python + torch + vafusion (+ h5py, numpy) imported
    marks: dict[str, int] = {}
    real_load = train_mod.load_cache

    def load_and_mark(*args, **kwargs):
        marks["before_load"] = C.vm_status_kib("VmHWM")
        loaded = real_load(*args, **kwargs)
        marks["after_load"] = C.vm_status_kib("VmHWM")
        marks["feature_bytes"] = loaded.feature_bytes
        return loaded

    train_mod.load_cache = load_and_mark
    start = time.perf_counter()
    train_mod.train(cache, run_dir, make_config(recipe="v1", epochs=1, device="cpu"), progress=False)
    print(
        json.dumps(
            {
                "baseline_kib": baseline,
                "peak_kib": C.vm_status_kib("VmHWM"),
                "seconds": time.perf_counter() - start,
                **marks,
            }
        )
    )


def measure_rss(cache: Path, tmp: Path) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", str(cache), str(tmp / "rss-run")]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------- busy-machine ratio ---

_THREAD_MODES = {
    # name: (environment changes, use vafusion's default threads)
    "torch default": ({"OMP_WAIT_POLICY": None}, False),
    "all cores, passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, False),  # load that arrives after the start
    "vafusion default": ({"OMP_WAIT_POLICY": "PASSIVE"}, True),
}


def step_child(mode: str, steps: int) -> None:
    """In a fresh interpreter (the OpenMP wait policy is read when torch loads): median seconds per model step."""
    from vafusion.device import set_threads
    from vafusion.fusion.data.batches import Batch

    if _THREAD_MODES[mode][1]:
        set_threads(None)
    config = make_config(recipe="v1", device="cpu")
    dims = list(C.REAL_DIMS.values())
    trainer = Trainer(config, dims, torch.device("cpu"), total_steps=10_000)
    g = torch.Generator().manual_seed(0)
    b, w = config.training.batch_size, config.data.window
    batch = Batch(
        streams=[torch.randn(b, w, d, generator=g) for d in dims],
        present=[torch.ones(b, w, dtype=torch.bool) for _ in dims],
        valid=torch.ones(b, w, dtype=torch.bool),
        labels=torch.rand(b, w, 2, generator=g) * 2 - 1,
        windows=torch.zeros(b, 3, dtype=torch.long),
    )
    trainer.step(batch)
    times = [C.timed(lambda: trainer.step(batch)) for _ in range(steps)]
    print(json.dumps({"seconds": C.median(times), "threads": torch.get_num_threads()}))


def timed_child(mode: str, steps: int) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for key, value in _THREAD_MODES[mode][0].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    out = subprocess.run(
        [sys.executable, __file__, "--step-child", mode, str(steps)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy_machine(steps: int, repeats: int) -> None:
    print(
        f"busy machine: default config, one pre-built batch, {steps} steps per run (median), each run a fresh "
        f"process; competitor: one process spinning on a core; load average {C.load_average()}",
        flush=True,
    )
    quiet: dict[str, list[float]] = {m: [] for m in _THREAD_MODES}
    busy: dict[str, list[float]] = {m: [] for m in _THREAD_MODES}
    threads: dict[str, set] = {m: set() for m in _THREAD_MODES}
    for r in range(repeats):
        for mode in _THREAD_MODES:
            q = timed_child(mode, steps)
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.5)
                bz = timed_child(mode, steps)
            finally:
                spinner.kill()
                spinner.wait()
            quiet[mode].append(q["seconds"])
            busy[mode].append(bz["seconds"])
            threads[mode] |= {f"quiet {q['threads']}", f"busy {bz['threads']}"}
            print(
                f"  repeat {r + 1}, {mode}: quiet {q['seconds'] * 1e3:.0f} ms ({q['threads']} threads), busy "
                f"{bz['seconds'] * 1e3:.0f} ms ({bz['threads']} threads): ratio {q['seconds'] / bz['seconds']:.3f}",
                flush=True,
            )
    for mode in _THREAD_MODES:
        q, bz = C.median(quiet[mode]), C.median(busy[mode])
        print(
            f"{mode} ({', '.join(sorted(threads[mode]))} threads): quiet {q * 1e3:.0f} ms, busy {bz * 1e3:.0f} ms, "
            f"ratio {q / bz:.3f}"
        )
    print(
        f"quiet step, vafusion default / torch default: "
        f"{C.median(quiet['vafusion default']) / C.median(quiet['torch default']):.3f}; load average {C.load_average()}"
    )
    for mode, name in (("torch default", "torch_default"), ("all cores, passive", "passive_all_cores")):
        print(
            f"RESULT name=train_step_busy_machine_ratio_{name} "
            f"value={C.median(quiet[mode]) / C.median(busy[mode]):.4g} target=none pass=true"
        )
    C.result(
        "train_step_busy_machine_ratio",
        C.median(quiet["vafusion default"]) / C.median(busy["vafusion default"]),
        ">=",
        0.4,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--rss-frames", type=int, default=1_000_000, help="frames of the cache of the peak-RSS run")
    ap.add_argument("--rss-videos", type=int, default=200)
    ap.add_argument("--steps", type=int, default=8, help="steps per timing block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--busy-only", action="store_true", help="only section 4 (busy machine)")
    ap.add_argument("--skip-busy", action="store_true", help="skip section 4")
    ap.add_argument("--busy-steps", type=int, default=4)
    ap.add_argument("--rss-child", nargs=2, metavar=("CACHE", "RUN_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--step-child", nargs=2, metavar=("MODE", "STEPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    if args.step_child:
        step_child(args.step_child[0], int(args.step_child[1]))
        return
    if args.busy_only:
        C.header("training step on a busy machine: default threads against torch's")
        busy_machine(args.busy_steps, args.repeats)
        return
    C.header("training: full step vs model-only step; peak RSS; frames/s")
    device = resolve_device(args.device)
    config = make_config(recipe="v1", device=str(device))
    data, tc = config.data, config.training
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "cache"
        start = time.perf_counter()
        info = C.write_random_cache(cache, args.frames, args.videos)
        print(
            f"cache: {args.videos} videos, {args.frames} frames, dims {C.REAL_DIMS}, "
            f"{info['feature_bytes'] / 1e6:.0f} MB float16 features; written in {time.perf_counter() - start:.1f} s"
        )

        # 1. step efficiency
        loaded = load_cache(cache, data.features, progress=False)
        train_ids = [e.id for e in loaded.index.by_partition("train")]
        standardizer = Standardizer.fit(loaded, train_ids)
        windows = windows_with_labels(
            loaded,
            make_windows(offsets=loaded.offsets, window=data.window, hop=data.hop, videos=loaded.positions(train_ids)),
        )
        trainer = Trainer(config, list(loaded.dims), device, total_steps=10_000)
        print(
            f"model: {count_parameters(trainer.model):,} parameters; device {device}, {torch.get_num_threads()} "
            f"threads; batch {tc.batch_size} x window {data.window}; {len(windows)} training windows"
        )
        fixed_batch = build_batch(loaded, standardizer, windows[: tc.batch_size], window=data.window)
        model_steps(trainer, fixed_batch, 2)  # warm-up (allocator, oneDNN kernels)
        full_steps(trainer, loaded, standardizer, windows, 2, seed=99)
        full, model = [], []
        for r in range(args.repeats):
            full.append(full_steps(trainer, loaded, standardizer, windows, args.steps, seed=r))
            model.append(model_steps(trainer, fixed_batch, args.steps))
            print(
                f"  repeat {r + 1}: full step {full[-1] * 1e3:.0f} ms, model-only step {model[-1] * 1e3:.0f} ms "
                f"(ratio {model[-1] / full[-1]:.3f})",
                flush=True,
            )
        assembly = [
            C.timed(lambda: build_batch(loaded, standardizer, windows[: tc.batch_size], window=data.window))  # noqa: F821
            for _ in range(10)
        ]
        f, m = C.median(full), C.median(model)
        print(
            f"full step {f * 1e3:.0f} ms, model-only step {m * 1e3:.0f} ms (medians of {args.repeats} x "
            f"{args.steps} steps); one build_batch alone {C.median(assembly) * 1e3:.1f} ms; "
            f"load average {C.load_average()}"
        )
        C.result("train_step_efficiency", m / f, ">=", 0.9)

        # 3. throughput and extrapolation (printed before the RSS child so it shows up early)
        window_frames_per_s = tc.batch_size * data.window / f
        lengths = C.video_lengths(AFFWILD2_FRAMES, AFFWILD2_VIDEOS)
        aw_windows = len(make_windows(lengths, window=data.window, hop=data.hop))
        aw_steps = math.ceil(aw_windows / tc.batch_size)
        epoch_s = aw_steps * f
        print(
            f"training throughput on {device}: {window_frames_per_s:.0f} window frames/s "
            f"({tc.batch_size * data.window} per step; with hop {data.hop} each frame is seen "
            f"~{data.window / data.hop:.1f}x per epoch, so {window_frames_per_s * data.hop / data.window:.0f} "
            f"corpus frames/s)"
        )
        print(
            f"Aff-Wild2 scale ({AFFWILD2_FRAMES / 1e6:.1f}M training frames in {AFFWILD2_VIDEOS} videos): "
            f"{aw_windows} windows, {aw_steps} steps/epoch -> {epoch_s:.0f} s = {epoch_s / 60:.1f} min per epoch "
            f"(training steps only; the validation pass comes on top)"
        )
        del loaded, trainer, fixed_batch
        shutil.rmtree(cache)

        # 2. peak RSS of the real trainer in a fresh process, on a cache of realistic size
        rss_cache = tmp / "rss-cache"
        start = time.perf_counter()
        info = C.write_random_cache(rss_cache, args.rss_frames, args.rss_videos)
        print(
            f"peak-RSS cache: {args.rss_videos} videos, {args.rss_frames} frames, "
            f"{info['feature_bytes'] / 1e6:.0f} MB float16 features; written in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        rss = measure_rss(rss_cache, tmp)
        mib = 1 / 1024
        feature_bytes = rss["feature_bytes"]
        peak_over = (rss["peak_kib"] - rss["baseline_kib"]) * 1024
        load_slope = (rss["after_load"] - rss["before_load"]) * 1024 / feature_bytes
        fixed = (rss["peak_kib"] - rss["after_load"]) * 1024
        print(
            f"peak RSS of one epoch of vafusion.fusion.runs.train.train ({rss['seconds']:.0f} s): "
            f"{rss['peak_kib'] * mib:.0f} MiB; after importing python+torch+vafusion {rss['baseline_kib'] * mib:.0f} "
            "MiB; "
            f"float16 features {feature_bytes / 2**20:.0f} MiB"
        )
        print(
            f"  load_cache added {(rss['after_load'] - rss['before_load']) * mib:.0f} MiB "
            f"({load_slope:.3f} bytes per feature byte); training added {fixed / 2**20:.0f} MiB on top "
            f"(model working set, independent of the cache size)"
        )
        print(
            f"  peak - baseline = {peak_over / feature_bytes:.2f} x feature bytes here; "
            f"peak / feature bytes without subtracting = {rss['peak_kib'] * 1024 / feature_bytes:.2f}"
        )
        C.result("train_peak_rss_ratio", peak_over / feature_bytes, "<=", 1.3)
        aw_bytes = AFFWILD2_FRAMES * sum(C.REAL_DIMS.values()) * 2
        extrapolated = (load_slope * aw_bytes + fixed) / aw_bytes
        print(
            f"  extrapolated to Aff-Wild2 scale ({aw_bytes / 2**30:.1f} GiB of features): "
            f"({load_slope:.3f} x features + {fixed / 2**20:.0f} MiB) / features = {extrapolated:.3f}"
        )
        C.result("train_peak_rss_ratio_affwild2_extrapolated", extrapolated, "<=", 1.3)
        print(f"load average at end {C.load_average()}")
    if not args.skip_busy:
        busy_machine(args.busy_steps, args.repeats)


if __name__ == "__main__":
    main()
