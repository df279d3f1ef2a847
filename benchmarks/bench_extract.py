"""Extraction efficiency: end-to-end `extract` frames/s against the backbone alone.

Visual: ``vafusion.extract.run.extract`` of one ResNet feature over a synthetic corpus (JPEG
decoding in DataLoader workers, batching across videos, the backbone, per-video part files
written by a thread, finalize) against the backbone alone on batches already in memory
(uint8 -> preprocessing -> forward -> copy out: same model, device, batch size, image size,
channels_last). Audio: frame-aligned VGGish end to end (audio decoding and one log-mel per
track in workers, 0.96 s patches per video frame, VGGish, writing) against VGGish alone on
patches already in memory, over the same examples (one per video frame of every id with
audio). Speech: a speech model (default wav2vec2_base, random weights) end to end (decoding
in workers, the model in 30 s chunks, the aligner, writing) against the same extractor's
model on the same tracks already decoded in memory; unit: seconds of audio.

All are measured in this process, interleaved (backbone half before and half after each
end-to-end run), repeated; the medians' ratio is the result, target >= 0.85 on CPU.

Start-up costs (worker start, model build, corpus index write, finalize) are part of every
end-to-end run; a real run amortises them over hours of video. The default corpora (~6000
frames for the visual row, ~1900 for the slower VGGish row) make them a few percent of a
run; the script measures them (an extract of a tiny corpus) and prints their share and the
ratio without them. --videos/--seconds (visual) and --audio-videos/--audio-seconds for more.

When CUDA is available (and not --no-gpu) it adds the GPU row: resnet50 at 224 px, bf16
autocast, channels_last, 112 px crops (Aff-Wild2's size) resized in the workers, package
default workers: absolute frames/s end to end and backbone-only.

    python benchmarks/bench_extract.py [--model resnet18] [--image-size 64] [--workers N]
        [--videos 24] [--seconds 8] [--audio-videos 10] [--audio-seconds 7] [--repeats 3]
        [--no-visual] [--no-audio] [--no-speech] [--speech-model wav2vec2_base] [--speech-videos 8] [--speech-seconds 8]
        [--no-gpu | --only-gpu] [--gpu-videos 24] [--gpu-seconds 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common as C
import torch

from vafusion.device import autocast, resolve_device
from vafusion.extract import torchvision_backbones as tv
from vafusion.extract import vggish as vggish_mod
from vafusion.extract.audio import load_audio
from vafusion.extract.batching import default_workers, pad_batch
from vafusion.extract.corpus import discover_corpus
from vafusion.extract.registry import build
from vafusion.extract.run import ExtractOptions, extract
from vafusion.synth import make_corpus


def backbone_run(
    model: torch.nn.Module, make_batch, n_frames: int, batch: int, device: torch.device, prep
) -> tuple[int, float]:
    """(frames, seconds) of preprocessing + forward + copy out on a batch already in memory."""
    x = make_batch(batch).to(device)
    n_batches = max(1, n_frames // batch)
    with torch.inference_mode():
        with autocast(device):
            model(prep(x)).float().cpu()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n_batches):
            with autocast(device):
                out = model(prep(pad_batch(x, batch)))
            out.float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return n_batches * batch, time.perf_counter() - start


def timed_extract(corpus, cache: Path, opts: ExtractOptions) -> float:
    start = time.perf_counter()
    report = extract(corpus, cache, opts)
    elapsed = time.perf_counter() - start
    if not report.ok:
        raise SystemExit(f"extract failed: {report.failures[:3]} {report.problems[:3]}")
    return elapsed


def compare(
    label: str,
    unit: str,
    baseline,
    amount: float,
    tiny_amount: float,
    run_e2e,
    run_tiny,
    repeats: int,
    tiny_alone=None,
) -> tuple[float, float, float]:
    """Interleaved repeats (``baseline()`` -> (units, seconds), once before and once after each
    end-to-end run); prints the table row; returns (alone rate, e2e rate, ratio).

    ``tiny_alone()`` -> the model-alone seconds of the tiny corpus, where that is not its amount
    at the alone rate (Whisper pads every track to a 30 s window: a 0.3 s track costs a window).
    """
    base, e2e, e2e_t = [], [], []
    for r in range(repeats):
        f1, t1 = baseline()
        t = run_e2e(r)
        f2, t2 = baseline()
        base.append((f1 + f2) / (t1 + t2))
        e2e.append(amount / t)
        e2e_t.append(t)
        print(
            f"  repeat {r + 1}: {label} alone {base[-1]:.1f} {unit}/s, end to end {e2e[-1]:.1f} {unit}/s "
            f"({t:.1f} s; ratio {e2e[-1] / base[-1]:.3f})",
            flush=True,
        )
    b, e = C.median(base), C.median(e2e)
    t_tiny = run_tiny()
    fixed = max(0.0, t_tiny - (tiny_alone() if tiny_alone else tiny_amount / b))
    steady = amount / max(1e-9, C.median(e2e_t) - fixed)
    print(
        f"{label}: alone {b:.1f} {unit}/s, end to end {e:.1f} {unit}/s over {amount:g} {unit} (medians of "
        f"{repeats}): {e / b:.3f}"
    )
    print(
        f"  start-up costs: an extract of {tiny_amount:g} {unit} took {t_tiny:.2f} s, i.e. ~{fixed:.2f} s fixed "
        f"= {100 * fixed / C.median(e2e_t):.1f}% of an end-to-end run here; without them end to end is "
        f"{steady:.1f} {unit}/s ({steady / b:.3f} of {label} alone)",
        flush=True,
    )
    return b, e, e / b


def visual(
    corpus,
    tiny,
    frames: int,
    tiny_frames: int,
    model_name: str,
    image_size: int,
    device: torch.device,
    args,
    tmp: Path,
    base_frames: int,
    tag: str,
) -> tuple[float, float, float]:
    model = tv.build_backbone(model_name, "random").model
    model = model.to(device).eval().to(memory_format=torch.channels_last)

    def prep(x: torch.Tensor) -> torch.Tensor:
        return tv.preprocess_batch(x, image_size).contiguous(memory_format=torch.channels_last)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8)

    opts = ExtractOptions(
        features=(model_name,),
        visual_weights="random",
        image_size=image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        device=str(device),
        progress=False,
    )
    return compare(
        f"{model_name} {image_size}px {device.type}",
        "frames",
        lambda: backbone_run(model, images, base_frames // 2, args.batch_size, device, prep),
        frames,
        tiny_frames,
        lambda r: timed_extract(corpus, tmp / f"{tag}cache{r}", opts),
        lambda: timed_extract(tiny, tmp / f"{tag}tiny", opts),
        args.repeats,
    )


def audio(
    corpus, tiny, frames: int, tiny_frames: int, device: torch.device, args, tmp: Path, base_frames: int
) -> tuple[float, float, float]:
    vgg, _ = vggish_mod.load_vggish("random")
    vgg = vgg.to(device).eval().to(memory_format=torch.channels_last)

    def patches(n: int) -> torch.Tensor:
        return torch.randn(n, 1, 96, 64)

    def prep(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    opts = ExtractOptions(
        features=("vggish",),
        vggish_weights="random",
        batch_size=args.batch_size,
        workers=args.workers,
        device=str(device),
        progress=False,
    )
    return compare(
        f"VGGish {device.type}",
        "frames",
        lambda: backbone_run(vgg, patches, base_frames // 2, args.batch_size, device, prep),
        frames,
        tiny_frames,
        lambda r: timed_extract(corpus, tmp / f"acache{r}", opts),
        lambda: timed_extract(tiny, tmp / "atiny", opts),
        args.repeats,
    )


def speech_alone(ext, waves: list[torch.Tensor], device: torch.device) -> tuple[float, float]:
    """(audio seconds, wall seconds) of the speech model on tracks already in memory (chunking included)."""
    start = time.perf_counter()
    with torch.inference_mode():
        for w in waves:
            ext.step_features(w)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(len(w) for w in waves) / 16000, time.perf_counter() - start


def speech(
    corpus, synth, tiny, tiny_synth, model: str, device: torch.device, args, tmp: Path
) -> tuple[float, float, float]:
    """The speech model end to end (decoding in workers, the model, the aligner, writing) against
    the same model on the same decoded tracks in memory; unit: seconds of audio."""
    opts = ExtractOptions(
        features=(model,), weights={model: "random"}, workers=args.workers, device=str(device), progress=False
    )
    ext = build(model, opts.extractor_settings()).extractor.to(device)

    def tracks(s) -> list[torch.Tensor]:
        names = sorted({v.video_name for v in s.videos if v.has_audio})
        return [torch.from_numpy(load_audio(s.root / "videos" / f"{n}.mp4")) for n in names]

    waves = tracks(synth)
    seconds = sum(len(w) for w in waves) / 16000
    tiny_seconds = sum(len(w) for w in tracks(tiny_synth)) / 16000
    halves = (waves[::2], waves[1::2])
    state = {"half": 0}

    def baseline() -> tuple[float, float]:  # alternate halves: the whole corpus once per repeat
        state["half"] ^= 1
        return speech_alone(ext, halves[state["half"]], device)

    speech_alone(ext, waves[:1], device)  # warm-up
    return compare(
        f"{model} {device.type}",
        "audio s",
        baseline,
        seconds,
        tiny_seconds,
        lambda r: timed_extract(corpus, tmp / f"scache{r}", opts),
        lambda: timed_extract(tiny, tmp / "stiny", opts),
        args.repeats,
    )


def make(root: Path, videos: int, seconds: float, crop_size: int):
    synth = make_corpus(root, n_videos=videos, seconds=seconds, seed=0, crop_size=crop_size)
    crops = sum(int((~v.crop_missing).sum()) for v in synth.videos)
    # VGGish examples computed: one per frame of each audio track; the _left/_right ids of a
    # two-person video share one track and its examples (extract computes them once).
    audible = sum({v.video_name: v.n_frames for v in synth.videos if v.has_audio}.values())
    return discover_corpus(synth.root), synth, crops, audible


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="device of the main (targeted) rows; default cpu")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: the package default)")
    ap.add_argument("--videos", type=int, default=24, help="videos of the visual corpus")
    ap.add_argument("--seconds", type=float, default=8.0, help="mean seconds per video of the visual corpus")
    ap.add_argument("--audio-videos", type=int, default=10)
    ap.add_argument("--audio-seconds", type=float, default=7.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-frames", type=int, default=640, help="backbone-only frames per repeat")
    ap.add_argument("--no-visual", action="store_true")
    ap.add_argument("--no-audio", action="store_true")
    ap.add_argument("--speech-model", default="wav2vec2_base", help="speech row model (random weights)")
    ap.add_argument("--speech-videos", type=int, default=8)
    ap.add_argument("--speech-seconds", type=float, default=8.0)
    ap.add_argument("--no-speech", action="store_true")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU row even when CUDA is available")
    ap.add_argument("--only-gpu", action="store_true", help="only the GPU row (skips the CPU rows and their targets)")
    ap.add_argument("--gpu-videos", type=int, default=24)
    ap.add_argument("--gpu-seconds", type=float, default=40.0)
    ap.add_argument("--gpu-row-device", default="cuda", help=argparse.SUPPRESS)  # to dry-run the GPU row on CPU
    args = ap.parse_args()
    C.header("extraction: end-to-end extract vs backbone alone")
    device = resolve_device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        workers = args.workers if args.workers is not None else default_workers()
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        tiny, _, tiny_crops, tiny_audible = make(tmp / "tiny", 2, 0.5, crop_size=args.image_size)
        if not args.only_gpu and not args.no_visual:
            corpus, synth, crops, _ = make(tmp / "corpus", args.videos, args.seconds, crop_size=args.image_size)
            print(
                f"device {device}, {torch.get_num_threads()} threads, {workers} decode worker(s); visual corpus "
                f"{len(synth.videos)} ids, {sum(v.n_frames for v in synth.videos)} frames, {crops} crops; "
                f"{args.model} at {args.image_size}px, batch {args.batch_size}",
                flush=True,
            )
            *_, ratio = visual(
                corpus,
                tiny,
                crops,
                tiny_crops,
                args.model,
                args.image_size,
                device,
                args,
                tmp,
                args.baseline_frames,
                "v",
            )
            C.result("visual_extraction_efficiency", ratio, ">=", 0.85)
        if not args.no_audio and not args.only_gpu:
            acorpus, asynth, _, audible = make(
                tmp / "audio-corpus", args.audio_videos, args.audio_seconds, crop_size=args.image_size
            )
            print(
                f"audio corpus {len(asynth.videos)} ids, {sum(v.n_frames for v in asynth.videos)} frames, "
                f"{audible} VGGish examples (one per frame of each audio track)",
                flush=True,
            )
            *_, ratio = audio(acorpus, tiny, audible, tiny_audible, device, args, tmp, args.baseline_frames)
            C.result("audio_extraction_efficiency", ratio, ">=", 0.85)
        if not args.no_speech and not args.only_gpu:
            scorpus, ssynth, _, _ = make(tmp / "speech-corpus", args.speech_videos, args.speech_seconds, crop_size=32)
            stiny, stiny_synth, _, _ = make(tmp / "speech-tiny", 2, 0.5, crop_size=32)
            print(
                f"speech corpus {len(ssynth.videos)} ids; {args.speech_model} (random weights) on {device}", flush=True
            )
            *_, ratio = speech(scorpus, ssynth, stiny, stiny_synth, args.speech_model, device, args, tmp)
            C.result("speech_extraction_efficiency", ratio, ">=", 0.85)

        gpu = torch.device(args.gpu_row_device)
        if (gpu.type != "cuda" or torch.cuda.is_available()) and not args.no_gpu:
            if gpu.type == "cuda":
                torch.backends.cudnn.benchmark = True
            name = torch.cuda.get_device_name(0) if gpu.type == "cuda" else str(gpu)
            gcorpus, gsynth, gcrops, _ = make(tmp / "gpu-corpus", args.gpu_videos, args.gpu_seconds, crop_size=112)
            gtiny, _, gtiny_crops, _ = make(tmp / "gpu-tiny", 2, 0.5, crop_size=112)
            print(
                f"GPU row: {name}; corpus {len(gsynth.videos)} ids, {gcrops} crops of "
                f"112 px; resnet50 at 224 px, bf16 autocast, channels_last, batch {args.batch_size}, "
                f"{workers} decode worker(s)",
                flush=True,
            )
            b, e, ratio = visual(
                gcorpus,
                gtiny,
                gcrops,
                gtiny_crops,
                "resnet50",
                224,
                gpu,
                args,
                tmp,
                max(args.baseline_frames, 50 * args.batch_size),
                "g",
            )
            print(
                f"GPU resnet50 224px bf16 channels_last: end to end {e:.0f} frames/s, backbone alone {b:.0f} "
                f"frames/s, ratio {ratio:.3f}"
            )
        elif not args.no_gpu:
            print(
                "GPU row: not measured (no CUDA device here); on a GPU box run: "
                "python benchmarks/bench_extract.py --only-gpu"
            )
        print(f"load average at end {C.load_average()}")


if __name__ == "__main__":
    main()
