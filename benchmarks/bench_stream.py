"""Streaming training from the cache files, and `cache derive --pca`: memory, speed against the in-RAM path.

1. ``train_stream_anon_rss_mib_<N>gib``: anonymous RSS (RssAnon: the process's own memory, not
   the page cache) of the real ``vafusion.fusion.runs.train.train`` with the features streamed, in a
   fresh subprocess, on random caches of realistic dims (2048 + 128 + 64, float16) of 4 GiB
   and 8 GiB of features (``--rss-gib``). The child samples RssAnon at every batch (training and
   validation) and reports the highest value; it trains on ``--rss-train-windows`` windows of
   the training ids (a full epoch would add minutes and nothing to the bound) and validates
   on all validation ids. Targets: each < 1536 MiB, and the two differ by < 10%
   (``train_stream_anon_rss_growth``: larger / smaller - 1).
   The caches take 4.3 + 8.6 GB of temporary disk (plus the same again while each is written)
   and are deleted at the end.
2. ``train_stream_speed_ratio_warm``: training steps fed from a streamed cache against the same
   steps fed from the cache in RAM (interleaved, same model, same shuffled windows), on a 100k
   frame cache whose files are in the page cache: in-RAM seconds / streamed seconds
   (1.0 = as fast), target >= 0.95. ``..._cold``: the same with the cache files evicted from
   the page cache before each streamed block (``posix_fadvise(DONTNEED)``, a fresh mapping), no
   target.
3. ``derive_pca_speed``: frames/s of ``derive_pca`` (resnet50 -> 256 components: fit on the
   training ids, project every id, write) against reading the parent feature alone (every id,
   ``FeatureFile.read``): reading seconds / derive seconds.

    python benchmarks/bench_stream.py [--rss-gib 4 8] [--rss-train-windows 800] [--frames 100000]
                                      [--steps 6] [--repeats 3] [--threads N] [--skip-rss] [--skip-speed]
"""

from __future__ import annotations

import argparse
import gc
import json
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
from bench_train import Trainer, full_steps

from vafusion.cache.reader import open_feature_file
from vafusion.fusion.data.batches import build_batch
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import make_windows, windows_with_labels
from vafusion.fusion.runs.config import make_config

BYTES_PER_FRAME = sum(C.REAL_DIMS.values()) * 2
RSS_TARGET_MIB = 1536


def rss_kib(field: str) -> int:
    return C.vm_status_kib(field)


def rss_child(cache: str, run_dir: str, train_windows: int) -> None:
    """In a fresh interpreter: the real trainer, features streamed; prints one JSON line."""
    import vafusion.fusion.data.batches as batches
    import vafusion.fusion.runs.train as train_mod
    from vafusion.fusion.data.sources import loading
    from vafusion.fusion.runs.train import train

    base = rss_kib("RssAnon")
    peak = {"anon": base, "file": 0, "batches": 0}
    trace: list[tuple[str, int]] = []  # (when, RssAnon KiB): where memory grows, if it does
    real_build, real_windows = batches.build_batch, train_mod.windows_with_labels
    real_fit, real_predict = train_mod.Standardizer.fit, train_mod.predict_loaded

    def sampled(*args, **kwargs):
        batch = real_build(*args, **kwargs)
        peak["anon"] = max(peak["anon"], rss_kib("RssAnon"))
        peak["file"] = max(peak["file"], rss_kib("RssFile"))
        peak["batches"] += 1
        if peak["batches"] % 20 == 0:
            trace.append((f"batch {peak['batches']}", rss_kib("RssAnon")))
        return batch

    def fit(*args, **kwargs):
        trace.append(("before statistics", rss_kib("RssAnon")))
        result = real_fit(*args, **kwargs)
        trace.append(("after statistics", rss_kib("RssAnon")))
        return result

    def predict(*args, **kwargs):
        trace.append(("validation starts", rss_kib("RssAnon")))
        result = real_predict(*args, **kwargs)
        trace.append(("validation ends", rss_kib("RssAnon")))
        return result

    def fewer_windows(loaded, windows):
        chosen = real_windows(loaded, windows)
        keep = np.random.default_rng(0).permutation(len(chosen))[:train_windows]
        return chosen[np.sort(keep)]

    batches.build_batch = sampled  # what iterate_batches calls
    train_mod.Standardizer.fit, train_mod.predict_loaded = fit, predict
    if train_windows > 0:
        train_mod.windows_with_labels = fewer_windows
    start = time.perf_counter()
    with loading(True):
        train(cache, run_dir, make_config(recipe="v1", epochs=1, device="cpu"), progress=False)
    print(
        json.dumps(
            {
                "base_kib": base,
                "peak_anon_kib": max(peak["anon"], rss_kib("RssAnon")),
                "peak_file_kib": peak["file"],
                "batches": peak["batches"],
                "trace": trace,
                "seconds": time.perf_counter() - start,
            }
        )
    )


def measure_rss(tmp: Path, gib: float, train_windows: int) -> dict:
    cache = tmp / f"rss-{gib:g}gib"
    frames = int(gib * 2**30 / BYTES_PER_FRAME)
    videos = max(10, frames // 4800)  # Aff-Wild2's mean video length
    start = time.perf_counter()
    info = C.write_random_cache(cache, frames, videos)
    print(
        f"{gib:g} GiB cache: {videos} videos, {frames} frames, {info['feature_bytes'] / 2**30:.2f} GiB of float16 "
        f"features; written in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    cmd = [sys.executable, __file__, "--rss-child", str(cache), str(tmp / f"run-{gib:g}"), str(train_windows)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(cache)
    result["feature_bytes"] = info["feature_bytes"]
    mib = 1 / 1024
    print(
        f"  streamed train ({result['batches']} batches, {result['seconds']:.0f} s): peak RssAnon "
        f"{result['peak_anon_kib'] * mib:.0f} MiB (after imports {result['base_kib'] * mib:.0f} MiB); peak RssFile "
        f"(mapped cache pages, the OS's to drop) {result['peak_file_kib'] * mib:.0f} MiB; load average "
        f"{C.load_average()}",
        flush=True,
    )
    print("  RssAnon (MiB) along the run: " + ", ".join(f"{when} {kib * mib:.0f}" for when, kib in result["trace"]))
    return result


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (unmapped pages only; needs no privileges)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def speed(tmp: Path, frames: int, steps: int, repeats: int) -> None:
    cache = tmp / "speed-cache"
    C.write_random_cache(cache, frames, max(4, frames // 5000))
    config = make_config(recipe="v1", device="cpu")
    data, tc = config.data, config.training
    ram = load_cache(cache, data.features, progress=False, stream=False)
    train_ids = [e.id for e in ram.index.by_partition("train")]
    standardizer = Standardizer.fit(ram, train_ids)
    windows = windows_with_labels(
        ram, make_windows(offsets=ram.offsets, window=data.window, hop=data.hop, videos=ram.positions(train_ids))
    )
    trainer = Trainer(config, list(ram.dims), torch.device("cpu"), total_steps=10_000)
    print(
        f"speed cache: {frames} frames, {ram.feature_bytes / 1e6:.0f} MB; default config, batch {tc.batch_size}, "
        f"{torch.get_num_threads()} threads; {steps} steps per block, {repeats} repeats",
        flush=True,
    )

    def fresh_stream():
        gc.collect()
        return load_cache(cache, data.features, progress=False, stream=True)

    stream = fresh_stream()
    rows = windows[: tc.batch_size]
    build = {"ram": [], "stream": []}
    for _ in range(repeats * 10):  # batch assembly alone: the only work that differs
        build["ram"].append(C.timed(lambda: build_batch(ram, standardizer, rows, window=data.window)))  # noqa: F821
        build["stream"].append(C.timed(lambda: build_batch(stream, standardizer, rows, window=data.window)))  # noqa: F821
    b_ram, b_stream = C.median(build["ram"]), C.median(build["stream"])
    print(
        f"one batch assembled (build_batch, {tc.batch_size} windows, warm): in RAM {b_ram * 1e3:.2f} ms, streamed "
        f"{b_stream * 1e3:.2f} ms",
        flush=True,
    )
    full_steps(trainer, ram, standardizer, windows, 2, seed=99)  # warm-up
    full_steps(trainer, stream, standardizer, windows, 2, seed=98)
    in_ram, warm, cold = [], [], []
    files = C.cache_files(cache, data.features)
    for r in range(repeats):
        in_ram.append(full_steps(trainer, ram, standardizer, windows, steps, seed=r))
        warm.append(full_steps(trainer, stream, standardizer, windows, steps, seed=r))
        stream.close()
        del stream
        gc.collect()
        evict(files)
        stream = fresh_stream()
        cold.append(full_steps(trainer, stream, standardizer, windows, steps, seed=r))
        print(
            f"  repeat {r + 1}: in RAM {in_ram[-1] * 1e3:.0f} ms/step, streamed warm {warm[-1] * 1e3:.0f}, "
            f"streamed cold {cold[-1] * 1e3:.0f}",
            flush=True,
        )
    m_ram, m_warm, m_cold = C.median(in_ram), C.median(warm), C.median(cold)
    print(
        f"medians: in RAM {m_ram * 1e3:.0f} ms/step, streamed warm {m_warm * 1e3:.0f}, cold {m_cold * 1e3:.0f}; "
        f"load average {C.load_average()}"
    )
    C.result("train_stream_speed_ratio_warm", m_ram / m_warm, ">=", 0.95)
    print(f"RESULT name=train_stream_speed_ratio_cold value={m_ram / m_cold:.4g} target=none pass=true", flush=True)
    stream.close()
    del ram, stream
    gc.collect()
    derive_speed(cache, repeats)
    shutil.rmtree(cache)


def derive_speed(cache: Path, repeats: int) -> None:
    from vafusion.cache.derive import derive_pca

    with open_feature_file(cache, "resnet50") as ff:
        ids = ff.ids
        frames = sum(ff.n_frames(v) for v in ids)

    def read_all() -> None:
        with open_feature_file(cache, "resnet50") as ff:
            for vid in ids:
                ff.read(vid)

    def derive() -> None:
        derive_pca(cache, "resnet50", 256, name="resnet50-pca256", overwrite=True, progress=False)

    read_all()
    reads, derives = [], []
    for _ in range(repeats):
        reads.append(C.timed(read_all))
        derives.append(C.timed(derive))
    r, d = C.median(reads), C.median(derives)
    print(
        f"cache derive --pca 256 of resnet50 ({frames} frames, {len(ids)} ids, fit on the training ids): "
        f"{d:.2f} s = {frames / d:.0f} frames/s; reading resnet50 alone {r:.2f} s = {frames / r:.0f} frames/s "
        f"({torch.get_num_threads()} threads); Aff-Wild2 scale (2.8M frames): ~{2.8e6 / (frames / d) / 60:.1f} min"
    )
    print(f"RESULT name=derive_pca_speed value={frames / d:.4g} target=none pass=true")
    print(f"RESULT name=derive_pca_speed_vs_read value={r / d:.4g} target=none pass=true", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rss-gib", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--rss-train-windows", type=int, default=800, help="training windows of the RSS runs (0: all)")
    ap.add_argument("--frames", type=int, default=100_000, help="frames of the speed and derive cache")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-speed", action="store_true", help="also skips derive")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--rss-child", nargs=3, metavar=("CACHE", "RUN_DIR", "WINDOWS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], args.rss_child[1], int(args.rss_child[2]))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    C.header("streaming: anonymous RSS on 4 and 8 GiB caches, step speed against RAM; cache derive --pca")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_speed:
            speed(tmp, args.frames, args.steps, args.repeats)
        if not args.skip_rss:
            results = [measure_rss(tmp, gib, args.rss_train_windows) for gib in args.rss_gib]
            for gib, r in zip(args.rss_gib, results):
                C.result(f"train_stream_anon_rss_mib_{gib:g}gib", r["peak_anon_kib"] / 1024, "<=", RSS_TARGET_MIB)
            if len(results) > 1:
                peaks = [r["peak_anon_kib"] for r in results]
                C.result("train_stream_anon_rss_growth", max(peaks) / min(peaks) - 1, "<=", 0.10)


if __name__ == "__main__":
    main()
