"""Growth: extraction and training time at 1x, 2x, 4x corpus size must grow linearly.

Extraction: one synthetic corpus (default 3 videos of ~4 s: a two-person video, a video
without audio, mixed frame rates, a test id) replicated 1x, 2x, 4x under new names (hard
links; same composition at every size, so the work per frame is the same), each extracted
end to end with resnet18 (64 px, random weights) + VGGish (random weights) + logmel in one
``extract`` call on CPU.
Training: caches of realistic dims (resnet50 2048 + vggish 128 + logmel 64, random float16,
written with the real writer API) of 1x, 2x, 4x frames (default 20k, 40k, 80k: the same 4
videos, 3 train + 1 validation, repeated 1, 2, 4 times), each trained for one epoch by the real ``vafusion.fusion.train.train`` (load,
standardise, train, validate, checkpoint; default FusionConfig, CPU).

Sizes run interleaved (1x, 2x, 4x, 1x, ...), repeated; medians. The exponent k of
time ~ size^k comes from least squares on log-log. Fixed start-up costs (model build,
worker start, checkpoint writes) make the raw k look better than the per-frame work is,
so each repeat also times the same job on a tiny corpus/cache and the script fits k again
on (time - that fixed cost): the targets are on that stricter k, k <= 1.15 (linear within
noise; 1.15 over a 4x range means at most ~23% more time per frame at 4x than at 1x).

    python benchmarks/bench_growth.py [--videos 3] [--seconds 4] [--frames 20000]
        [--scales 1,2,4] [--repeats 3] [--skip-extract] [--skip-train]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import _common as C  # noqa: I001  (puts the repository root on sys.path)
import torch

from vafusion.extract.corpus import discover_corpus
from vafusion.extract.run import ExtractOptions, extract
from vafusion.fusion.config import FusionConfig
from vafusion.fusion.train import train
from vafusion.synth import make_corpus

K_MAX = 1.15


def fit_and_report(what: str, sizes: list[int], times: dict[int, list[float]], fixed: list[float], unit: str) -> float:
    med = [C.median(times[s]) for s in sizes]
    f = C.median(fixed)
    for s, t in zip(sizes, med):
        print(f"  {what} {s:>7} {unit}: {t:6.2f} s (median of {len(times[s])}), {1e3 * t / s:.3f} ms/{unit[:-1]}, "
              f"without start-up {1e3 * (t - f) / s:.3f} ms/{unit[:-1]}")
    k_raw = C.loglog_exponent(sizes, med)
    k = C.loglog_exponent(sizes, [max(1e-3, t - f) for t in med])
    print(f"  {what}: fixed start-up ~{f:.2f} s (median, tiny job); exponent k of time ~ size^k: "
          f"{k_raw:.3f} on total time, {k:.3f} with the start-up subtracted", flush=True)
    return k


def _renamed(video_id: str, tag: str) -> str:
    """``name_left`` -> ``name_TAG_left`` (the id still names its video), ``name`` -> ``name_TAG``."""
    for side in ("_left", "_right"):
        if video_id.endswith(side):
            return f"{video_id[: -len(side)]}_{tag}{side}"
    return f"{video_id}_{tag}"


def replicate_corpus(src: Path, dst: Path, copies: int) -> None:
    """``copies`` copies of an Aff-Wild2-layout corpus under new names, files hard-linked."""
    test_ids: list[str] = []
    for c in range(copies):
        tag = f"r{c}"
        for path in src.rglob("*"):
            if path.is_dir() or path.name == "test_set.txt":
                continue
            rel = path.relative_to(src)
            parts = list(rel.parts)
            if parts[0] == "videos":
                parts[-1] = _renamed(path.stem, tag) + path.suffix
            elif parts[0] == "cropped_aligned":
                parts[1] = _renamed(parts[1], tag)
            elif parts[0] == "annotations":
                parts[-1] = _renamed(path.stem, tag) + path.suffix
            target = dst.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
        test_ids += [_renamed(i, tag) for i in (src / "test_set.txt").read_text().split()]
    (dst / "test_set.txt").write_text("".join(f"{i}\n" for i in test_ids))


def extraction(args, tmp: Path, scales: list[int]) -> None:
    base = make_corpus(tmp / "base", n_videos=args.videos, seconds=args.seconds, seed=0)
    corpora, sizes = {}, []
    for s in scales:
        replicate_corpus(base.root, tmp / f"corpus{s}", s)
        corpus = discover_corpus(tmp / f"corpus{s}")
        frames = sum(v.entry.n_frames for v in corpus.videos)
        corpora[frames] = corpus
        sizes.append(frames)
        print(f"corpus {s}x: {args.videos * s} videos, {len(corpus.videos)} ids, {frames} frames", flush=True)
    tiny = discover_corpus(make_corpus(tmp / "tiny", n_videos=2, seconds=0.5, seed=99).root)
    opts = ExtractOptions(features=("resnet18", "vggish", "logmel"), visual_weights="random", vggish_weights="random",
                          image_size=64, batch_size=64, device="cpu", progress=False)
    times: dict[int, list[float]] = {s: [] for s in sizes}
    fixed = []
    n = 0
    for r in range(args.repeats):
        fixed.append(C.timed(lambda: extract(tiny, tmp / f"tiny-cache{r}", opts)))
        for s in sizes:
            n += 1
            times[s].append(C.timed(lambda: extract(corpora[s], tmp / f"cache{n}", opts)))
        print(f"  repeat {r + 1}: " + ", ".join(f"{s} frames {times[s][-1]:.2f} s" for s in sizes)
              + f"; tiny {fixed[-1]:.2f} s", flush=True)
    k = fit_and_report("extract", sizes, times, fixed, "frames")
    C.result("growth_extract_exponent", k, "<=", K_MAX)


def training(args, tmp: Path, scales: list[int]) -> None:
    caches, sizes = {}, []
    base = C.video_lengths(args.frames, args.train_videos)  # the 1x videos, repeated s times at s x
    for s in scales:
        frames = args.frames * s
        info = C.write_random_cache(tmp / f"tcache{s}", frames, args.train_videos * s, seed=s,
                                    validation_every=args.train_videos, lengths=base * s)
        caches[frames] = tmp / f"tcache{s}"
        sizes.append(frames)
        print(f"cache {s}x: {args.train_videos * s} videos, {frames} frames, "
              f"{info['feature_bytes'] / 1e6:.0f} MB float16", flush=True)
    C.write_random_cache(tmp / "tiny-tcache", 1200, 2, validation_every=2)
    config = FusionConfig(epochs=1, device="cpu")
    times: dict[int, list[float]] = {s: [] for s in sizes}
    fixed = []
    n = 0
    for r in range(args.repeats):
        n += 1
        fixed.append(C.timed(lambda: train(tmp / "tiny-tcache", tmp / f"run{n}", config, progress=False, report=False)))
        for s in sizes:
            n += 1
            times[s].append(C.timed(lambda: train(caches[s], tmp / f"run{n}", config, progress=False, report=False)))
        print(f"  repeat {r + 1}: " + ", ".join(f"{s} frames {times[s][-1]:.2f} s" for s in sizes)
              + f"; tiny {fixed[-1]:.2f} s", flush=True)
    k = fit_and_report("train 1 epoch", sizes, times, fixed, "frames")
    C.result("growth_train_exponent", k, "<=", K_MAX)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=3, help="videos of the 1x synthetic corpus")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--frames", type=int, default=20_000, help="frames of the 1x training cache")
    ap.add_argument("--train-videos", type=int, default=4, help="videos of the 1x training cache")
    ap.add_argument("--scales", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-extract", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    C.header("growth: extraction and training time against corpus size")
    scales = [int(x) for x in args.scales.split(",")]
    print(f"torch {torch.get_num_threads()} threads; scales {scales}; target k <= {K_MAX}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_extract:
            extraction(args, tmp, scales)
        if not args.skip_train:
            training(args, tmp, scales)
    print(f"load average at end {C.load_average()}")


if __name__ == "__main__":
    main()
