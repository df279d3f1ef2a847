"""Helpers shared by the benchmark scripts (not a benchmark itself: `make bench` runs bench_*.py).

Conventions every script follows: print the machine and its load first (these machines are
shared and noisy), measure a baseline and the thing under test side by side in the same
process, interleaved, repeat, and compare medians; end every target with one line

    RESULT name=<name> value=<number> target=<op><number> pass=<true|false>
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

# Realistic cache dims: resnet50 pooled embedding, VGGish embedding, 64-band pooled log-mel.
REAL_DIMS = {"resnet50": 2048, "vggish": 128, "logmel": 64}


def result(name: str, value: float, op: str, target: float) -> bool:
    """Print the one-line verdict of a target; returns whether it passed."""
    if op not in (">=", "<="):
        raise ValueError(f"op must be >= or <=, got {op}")
    ok = value >= target if op == ">=" else value <= target
    print(f"RESULT name={name} value={value:.4g} target={op}{target:g} pass={'true' if ok else 'false'}", flush=True)
    return ok


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def header(title: str) -> None:
    """The machine, its load, and the software versions: the context every number needs."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"# {title}")
    print(
        f"# {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}; {cpu_model()}, "
        f"{os.cpu_count()} logical CPUs, {ram_gib():.1f} GiB RAM, GPU {gpu}"
    )
    print(
        f"# python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"numpy {np.__version__}; load average {load_average()}",
        flush=True,
    )


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def loglog_exponent(sizes: Sequence[float], times: Sequence[float]) -> float:
    """k of time ~ size^k by least squares on log-log."""
    k, _ = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(times, float)), 1)
    return float(k)


def growth_exponent(sizes: Sequence[float], times: Sequence[float]) -> tuple[float, float, float]:
    """``(k, a, b)`` of ``time = a + b * size^k`` by least squares (k on a 0.0005 grid in [0.3, 3]).

    ``a`` absorbs costs that do not grow with the size, so k is the exponent of the part that
    does; with three sizes in a geometric series the fit is exact.
    """
    n = np.asarray(sizes, float) / float(min(sizes))
    t = np.asarray(times, float)
    best = (np.inf, 1.0, 0.0, 0.0)
    for k in np.arange(0.3, 3.0, 0.0005):
        design = np.stack([np.ones_like(n), n**k], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, t, rcond=None)
        sse = float(np.sum((design @ (a, b) - t) ** 2))
        if sse < best[0]:
            best = (sse, float(k), float(a), float(b))
    _, k, a, b = best
    return k, a, b / float(min(sizes)) ** k


def drop_page_cache() -> bool:
    """Try to empty the OS page cache (needs root and a writable /proc/sys); True if it worked."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def vm_status_kib(field: str = "VmHWM") -> int:
    """A field of /proc/self/status in KiB (VmHWM: peak RSS, VmRSS: current RSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def smooth_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 2) float32 valence/arousal curves in [-1, 1], a few missing (NaN) rows."""
    t = np.arange(n) / 30.0
    cols = []
    for _ in range(2):
        x = sum(
            rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * rng.uniform(0.02, 0.3) * t + rng.uniform(0, 6.3))
            for _ in range(3)
        )
        cols.append(np.clip(x, -1, 1))
    labels = np.stack(cols, axis=1).astype(np.float32)
    gap = int(rng.integers(0, max(1, n - 50)))
    labels[gap : gap + 50] = np.nan
    return labels


def video_lengths(total_frames: int, n_videos: int, seed: int = 0) -> list[int]:
    """Frame counts of ``n_videos`` videos summing to ``total_frames`` (lengths vary +-50%)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, n_videos)
    lengths = np.maximum(1, np.floor(w / w.sum() * total_frames)).astype(int)
    lengths[-1] += total_frames - int(lengths.sum())
    return [int(x) for x in lengths]


def write_random_cache(
    cache: Path,
    total_frames: int,
    n_videos: int,
    dims: dict[str, int] | None = None,
    seed: int = 0,
    validation_every: int = 5,
    lengths: Sequence[int] | None = None,
) -> dict:
    """A feature cache written through the real writer API with random float16 features.

    ``write_corpus_index`` + one ``FeatureWriter`` per feature set (per-video part files,
    then ``finalize``), exactly the files ``vafusion extract`` leaves. Every
    ``validation_every``-th video is in the validation partition, the rest train. Features
    are N(0, 1) float16 with per-dimension offsets; masks have a few absent runs. ``lengths``
    (optional) fixes the frame count of every video instead of drawing them.
    Returns ``{"ids", "lengths", "feature_bytes", "index"}``.
    """
    from vafusion.cache.corpus_index import CorpusIndex, VideoEntry, write_corpus_index
    from vafusion.cache.writer import FeatureWriter

    dims = dict(REAL_DIMS if dims is None else dims)
    rng = np.random.default_rng(seed)
    lengths = video_lengths(total_frames, n_videos, seed) if lengths is None else [int(x) for x in lengths]
    n_videos = len(lengths)
    ids = [f"video{i:04d}" for i in range(n_videos)]
    entries = []
    for i, (vid, n) in enumerate(zip(ids, lengths)):
        partition = "validation" if i % validation_every == validation_every - 1 else "train"
        entries.append(VideoEntry(vid, 30.0, n, partition, vid, smooth_labels(rng, n)))
    index = CorpusIndex(tuple(entries))
    write_corpus_index(cache, index, source="benchmarks (random features)")
    feature_bytes = 0
    for k, (name, dim) in enumerate(dims.items()):
        writer = FeatureWriter(cache, name, dim, {"model": f"random-{name}", "seed": seed + k}, index.fingerprint)
        offset = rng.normal(size=dim).astype(np.float32)
        for vid, n in zip(ids, lengths):
            feats = (rng.standard_normal((n, dim), dtype=np.float32) + offset).astype(np.float16)
            mask = np.ones(n, bool)
            a = int(rng.integers(0, n))
            mask[a : a + 20] = False
            feats[~mask] = 0
            writer.write(vid, feats, mask)
            feature_bytes += feats.nbytes
        writer.finalize()
    return {"ids": ids, "lengths": lengths, "feature_bytes": feature_bytes, "index": index}


def cache_files(cache: Path, features: Sequence[str]) -> list[Path]:
    """The files ``load_cache`` reads for ``features``: corpus.h5 and one .h5 per feature."""
    from vafusion.cache import schema

    return [cache / schema.CORPUS_FILE] + [schema.feature_path(cache, f) for f in features]


def demo_cache(corpus_dir: Path, cache_dir: Path) -> Path:
    """The `vafusion demo` corpus and its cache as the demo makes them (random backbone weights, 48 px crops),
    extracted on the CPU; returns ``cache_dir``."""
    from vafusion.demo import AUDIO, VISUAL
    from vafusion.extract.run import ExtractOptions, extract
    from vafusion.synth import SIZES, make_corpus

    corpus = make_corpus(corpus_dir, seed=0, progress=False, **SIZES["demo"])
    opts = ExtractOptions(
        features=(VISUAL, *AUDIO),
        visual_weights="random",
        vggish_weights="random",
        image_size=48,
        batch_size=64,
        device="cpu",
        progress=False,
    )
    report = extract(corpus.root, cache_dir, opts)
    if not report.ok:
        raise RuntimeError(f"demo extraction failed: {report.failures} {report.problems}")
    return cache_dir
