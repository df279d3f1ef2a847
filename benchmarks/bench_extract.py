"""Extraction efficiency: end-to-end `extract` frames/s against the backbone alone.

Both are measured in this process, on the same device, batch size and image size, and
repeated; the medians' ratio is the result (machines here are shared and noisy, so only
ratios measured side by side mean anything).

    python benchmarks/bench_extract.py [--device cpu|cuda] [--model resnet18] [--image-size 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vafusion.extract import resnet as resnet_mod  # noqa: E402
from vafusion.extract import vggish as vggish_mod  # noqa: E402
from vafusion.extract.corpus import discover_corpus  # noqa: E402
from vafusion.device import autocast, resolve_device  # noqa: E402
from vafusion.extract.run import ExtractOptions, _pad_batch, extract  # noqa: E402
from vafusion.synth import make_corpus  # noqa: E402


def result(name: str, value: float, op: str, target: float) -> None:
    ok = value >= target if op == ">=" else value <= target
    print(f"RESULT name={name} value={value:.4g} target={op}{target} pass={'true' if ok else 'false'}")


def backbone_fps(model: torch.nn.Module, make_batch, n_frames: int, batch: int, device: torch.device, prep) -> float:
    """Frames/s of preprocessing + forward on batches already in memory (no decoding, no writing)."""
    x = make_batch(batch).to(device)
    with torch.inference_mode():
        with autocast(device):
            model(prep(x))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(max(1, n_frames // batch)):
            with autocast(device):
                out = model(prep(_pad_batch(x, batch)))
            out.float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return max(1, n_frames // batch) * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--audio", action="store_true", help="also measure VGGish end to end against VGGish alone")
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        synth = make_corpus(Path(tmp) / "corpus", n_videos=args.videos, seconds=args.seconds, seed=0)
        corpus = discover_corpus(synth.root)
        crops = sum(int((~v.crop_missing).sum()) for v in synth.videos)
        frames = sum(v.n_frames for v in synth.videos)
        print(f"device {device}, {torch.get_num_threads()} threads; corpus {len(synth.videos)} ids, {frames} frames, "
              f"{crops} crops; {args.model} at {args.image_size}px, batch {args.batch_size}, workers {args.workers}")
        model, _ = resnet_mod.build_resnet(args.model, "random")
        model = model.to(device).eval().to(memory_format=torch.channels_last)

        def prep(x: torch.Tensor) -> torch.Tensor:
            return resnet_mod.preprocess_batch(x, args.image_size).contiguous(memory_format=torch.channels_last)

        def images(n: int) -> torch.Tensor:
            return torch.randint(0, 256, (n, 3, args.image_size, args.image_size), dtype=torch.uint8)

        base, e2e = [], []
        for r in range(args.repeats):
            base.append(backbone_fps(model, images, crops, args.batch_size, device, prep))
            opts = ExtractOptions(features=(args.model,), visual_weights="random", image_size=args.image_size,
                                  batch_size=args.batch_size, workers=args.workers, device=str(device), progress=False)
            start = time.perf_counter()
            extract(corpus, Path(tmp) / f"cache{r}", opts)
            e2e.append(crops / (time.perf_counter() - start))
            print(f"  repeat {r + 1}: backbone {base[-1]:.1f} frames/s, end to end {e2e[-1]:.1f} frames/s")
        b, e = statistics.median(base), statistics.median(e2e)
        print(f"visual: backbone-only {b:.1f} frames/s, end-to-end {e:.1f} frames/s (medians of {args.repeats})")
        result("visual_extraction_efficiency", e / b, ">=", 0.85)

        if args.audio:
            vgg, _ = vggish_mod.load_vggish("random")
            vgg = vgg.to(device).eval().to(memory_format=torch.channels_last)

            def patches(n: int) -> torch.Tensor:
                return torch.randn(n, 1, 96, 64)

            def prep_a(x: torch.Tensor) -> torch.Tensor:
                return x.contiguous(memory_format=torch.channels_last)

            audible = sum(v.n_frames for v in synth.videos if v.has_audio)
            base, e2e = [], []
            for r in range(args.repeats):
                base.append(backbone_fps(vgg, patches, audible, args.batch_size, device, prep_a))
                opts = ExtractOptions(features=("vggish",), vggish_weights="random", batch_size=args.batch_size,
                                      workers=args.workers, device=str(device), progress=False)
                start = time.perf_counter()
                extract(corpus, Path(tmp) / f"acache{r}", opts)
                e2e.append(audible / (time.perf_counter() - start))
                print(f"  repeat {r + 1}: VGGish alone {base[-1]:.1f} frames/s, end to end {e2e[-1]:.1f} frames/s")
            b, e = statistics.median(base), statistics.median(e2e)
            print(f"audio: VGGish-only {b:.1f} frames/s, end-to-end {e:.1f} frames/s (medians of {args.repeats})")
            result("audio_extraction_efficiency", e / b, ">=", 0.85)


if __name__ == "__main__":
    main()
