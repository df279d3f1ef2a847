"""The issue-22 families end to end against their model alone: timm, Hugging Face speech, vad.

timm: ``extract`` of ``timm:vit_small_patch16_224.augreg_in21k_ft_in1k`` (ViT-S/16 at 224 px,
random weights; the model's own preprocessing: 112 px face crops resized to 248 px bicubic in
the decoding workers, the centre 224 px cut and normalised on the device) over a generated
corpus (JPEG decoding in workers, batches across videos, writing) against the same
extractor on batches of the same crops already decoded and resized in memory (centre cut,
normalisation, forward, copy out: the model alone); unit: frames.

hf speech: ``extract`` of ``hf:FOLDER`` holding a Whisper-tiny-sized model (d_model 384, 4
encoder layers, 6 heads, 80 mel bins; random weights written with save_pretrained) against
the same extractor's ``step_features`` (feature extractor + encoder in 30 s windows) on the
same tracks already decoded in memory; unit: seconds of audio.

vad: ``extract`` of ``vad`` (the shipped Silero weights), reported as video frames per second
end to end and for the model alone on decoded tracks (no target).

Interleaved (model-alone half before and half after each end-to-end run), repeated, medians;
start-up costs (imports, model build, worker start, index, finalize) are part of every
end-to-end run and measured apart on a tiny corpus, as in bench_extract.py. Run as the
``vafusion`` command runs: OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE, set before
torch loads unless the caller set it).

    python benchmarks/bench_features.py [--repeats 3] [--workers N] [--timm-videos 8] [--timm-seconds 8]
        [--hf-videos 8] [--hf-seconds 120] [--vad-videos 8] [--vad-seconds 20] [--no-timm] [--no-hf] [--no-vad]
"""

from __future__ import annotations

import os

# As `vafusion` sets it before torch loads OpenMP (vafusion/cli/main.py): the end-to-end runs are
# in-process calls of extract(), and with OpenMP's default spinning its decode worker and the two
# compute threads fight for 2 cores (BENCHMARKS.md, sections 8 and 11). A value set by the caller is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import tempfile
import time
from pathlib import Path

import _common as C
import torch
from bench_extract import compare, make, timed_extract

from vafusion.device import resolve_device
from vafusion.extract.audio import load_audio
from vafusion.extract.batching import default_workers, pad_batch
from vafusion.extract.frame_pass import decode_crop
from vafusion.extract.registry import build
from vafusion.extract.run import ExtractOptions

VIT_S = "timm:vit_small_patch16_224.augreg_in21k_ft_in1k"


def tracks(synth) -> list[torch.Tensor]:
    names = sorted({v.video_name for v in synth.videos if v.has_audio})
    return [torch.from_numpy(load_audio(synth.root / "videos" / f"{n}.mp4")) for n in names]


def alternating(run, items: list) -> callable:
    """A baseline that measures one half of ``items`` per call, alternating: the whole set per repeat."""
    halves, state = (items[::2], items[1::2]), {"half": 0}

    def baseline():
        state["half"] ^= 1
        return run(halves[state["half"]])

    return baseline


def timm_row(args, tmp: Path, device: torch.device) -> float:
    corpus, synth, crops, _ = make(tmp / "timm", args.timm_videos, args.timm_seconds, crop_size=112)
    tiny, _, tiny_crops, _ = make(tmp / "timm-tiny", 2, 0.5, crop_size=112)
    opts = ExtractOptions(
        features=(VIT_S,),
        weights={VIT_S: "random"},
        batch_size=args.batch_size,
        workers=args.workers,
        device=str(device),
        progress=False,
    )
    ext = build(VIT_S, opts.extractor_settings()).extractor.to(device)
    paths = sorted(synth.root.glob("cropped_aligned/*/*.jpg"))[: 2 * args.batch_size]
    batch = torch.stack([decode_crop(p, ext.image_size, ext.interpolation) for p in paths])
    batches = [
        pad_batch(batch[i : i + args.batch_size], args.batch_size) for i in range(0, len(batch), args.batch_size)
    ]
    print(
        f"timm row: {VIT_S} random, input {ext.prep.size} px from {ext.image_size} px ({ext.interpolation}); "
        f"corpus {len(synth.videos)} ids, {crops} crops of 112 px; batch {args.batch_size}",
        flush=True,
    )

    def alone(n_frames: int) -> tuple[int, float]:
        with torch.inference_mode():
            ext(batches[0].to(device)).float().cpu()  # warm-up
            start = time.perf_counter()
            done = 0
            while done < n_frames:
                for x in batches:
                    ext(x.to(device)).float().cpu()
                    done += len(x)
        return done, time.perf_counter() - start

    *_, ratio = compare(
        f"{VIT_S.split(':')[1]} {device.type}",
        "frames",
        lambda: alone(args.baseline_frames // 2),
        crops,
        tiny_crops,
        lambda r: timed_extract(corpus, tmp / f"timm-cache{r}", opts),
        lambda: timed_extract(tiny, tmp / "timm-tiny-cache", opts),
        args.repeats,
    )
    return ratio


def whisper_tiny_folder(folder: Path) -> Path:
    """A Whisper-tiny-sized model (random weights) and its feature extractor, as save_pretrained writes them."""
    from transformers import WhisperFeatureExtractor, WhisperModel
    from transformers.utils import logging

    from tests.hf_models import whisper_config

    logging.disable_progress_bar()  # save_pretrained's bar

    config = whisper_config(width=384, layers=4, heads=6, ffn=1536)
    torch.manual_seed(0)
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def per_track(model) -> callable:
    """The model alone over decoded tracks: ``alone(waves)`` -> (seconds of audio, seconds taken)."""

    def alone(waves: list[torch.Tensor]) -> tuple[float, float]:
        start = time.perf_counter()
        with torch.inference_mode():
            for w in waves:
                model(w)
        return sum(len(w) for w in waves) / 16000, time.perf_counter() - start

    return alone


def track_row(label: str, entry: str, opts: ExtractOptions, corpus, synth, tiny, tiny_synth, alone, args, tmp: Path):
    """One audio row by ``compare``: seconds of audio end to end against ``alone(waves)``."""
    waves = tracks(synth)
    seconds = sum(len(w) for w in waves) / 16000
    tiny_waves = tracks(tiny_synth)
    tiny_seconds = sum(len(w) for w in tiny_waves) / 16000
    alone(waves[:1])  # warm-up
    return compare(
        label,
        "audio s",
        alternating(alone, waves),
        seconds,
        tiny_seconds,
        lambda r: timed_extract(corpus, tmp / f"{label}-cache{r}", opts),
        lambda: timed_extract(tiny, tmp / f"{label}-tiny-cache", opts),
        args.repeats,
        tiny_alone=lambda: alone(tiny_waves)[1],
    )


def hf_row(args, tmp: Path, device: torch.device) -> float:
    entry = f"hf:{whisper_tiny_folder(tmp / 'whisper-tiny-sized')}"
    corpus, synth, _, _ = make(tmp / "hf", args.hf_videos, args.hf_seconds, crop_size=32)
    tiny, tiny_synth, _, _ = make(tmp / "hf-tiny", 2, 0.5, crop_size=32)
    opts = ExtractOptions(features=(entry,), workers=args.workers, device=str(device), progress=False)
    ext = build(entry, opts.extractor_settings()).extractor.to(device)
    print(f"hf row: Whisper-tiny-sized encoder (random, from a folder); corpus {len(synth.videos)} ids", flush=True)

    alone = per_track(ext.step_features)

    *_, ratio = track_row("whisper-tiny-sized", entry, opts, corpus, synth, tiny, tiny_synth, alone, args, tmp)
    return ratio


def vad_row(args, tmp: Path, device: torch.device) -> tuple[float, float]:
    corpus, synth, _, frames = make(tmp / "vad", args.vad_videos, args.vad_seconds, crop_size=32)
    tiny, tiny_synth, _, _ = make(tmp / "vad-tiny", 2, 0.5, crop_size=32)
    opts = ExtractOptions(features=("vad",), workers=args.workers, device=str(device), progress=False)
    ext = build("vad", opts.extractor_settings()).extractor.to(device)
    audio_s = sum(len(w) for w in tracks(synth)) / 16000
    print(f"vad row: corpus {len(synth.videos)} ids, {frames} frames with audio, {audio_s:.0f} s of audio", flush=True)

    alone = per_track(ext.probabilities)

    b, e, _ = track_row("vad", "vad", opts, corpus, synth, tiny, tiny_synth, alone, args, tmp)
    per_s = frames / audio_s  # video frames (of each audio track once: _left/_right share theirs) per audio second
    return e * per_s, b * per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: the package default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-frames", type=int, default=256, help="model-alone frames per repeat (timm)")
    ap.add_argument("--timm-videos", type=int, default=8)
    ap.add_argument("--timm-seconds", type=float, default=8.0)
    ap.add_argument("--hf-videos", type=int, default=8)
    ap.add_argument("--hf-seconds", type=float, default=120.0)
    ap.add_argument("--vad-videos", type=int, default=8)
    ap.add_argument("--vad-seconds", type=float, default=20.0)
    ap.add_argument("--no-timm", action="store_true")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--no-vad", action="store_true")
    args = ap.parse_args()
    C.header("issue-22 feature families: end-to-end extract vs the model alone")
    device = resolve_device(args.device)
    workers = args.workers if args.workers is not None else default_workers()
    print(f"device {device}, {torch.get_num_threads()} threads, {workers} decode worker(s)", flush=True)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if not args.no_timm:
            C.result("timm_extraction_efficiency", timm_row(args, tmp, device), ">=", 0.85)
        if not args.no_hf:
            C.result("hf_speech_extraction_efficiency", hf_row(args, tmp, device), ">=", 0.85)
        if not args.no_vad:
            e2e, alone = vad_row(args, tmp, device)
            print(f"vad: model alone {alone:.0f} frames/s")
            print(f"RESULT name=vad_frames_per_second value={e2e:.4g} target=none pass=true", flush=True)
    print(f"load average at end {C.load_average()}")


if __name__ == "__main__":
    main()
