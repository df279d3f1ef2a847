"""`vafusion demo`: both stages on a generated corpus, in minutes, on a laptop CPU.

Generates a corpus (vafusion.synth), extracts resnet18, VGGish and log-mel features with
RANDOM backbone weights (no download; the generator puts valence in the faces and arousal
in the voice, so even random features carry them), then compares the paper's model (imf)
and the ridge baseline on all features and on each single stream, through the same
:func:`vafusion.fusion.experiments.compare.compare` as ``vafusion compare``, on the held-out
validation ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vafusion.errors import VafusionError
from vafusion.extract.run import ExtractOptions, extract
from vafusion.fusion.experiments.compare import compare
from vafusion.fusion.reports.run import write_report
from vafusion.fusion.runs.config import DataConfig, TrainingConfig
from vafusion.synth import SIZES, make_corpus

VISUAL, AUDIO = "resnet18", ("vggish", "logmel")
MODELS = ("imf", "ridge")
FEATURE_SETS = ((VISUAL, *AUDIO), (VISUAL,), ("vggish",), ("logmel",))
# Small windows and model: the demo corpus holds a few thousand frames, not Aff-Wild2's millions.
DEMO_DATA: dict[str, Any] = dict(window=100, hop=50)
DEMO_TRAINING: dict[str, Any] = dict(epochs=15, batch_size=8, patience=15)
DEMO_MODEL_OPTIONS = dict(d_model=64, heads=4, head_hidden=64)


def run_demo(
    out: str | Path,
    size: str = "demo",
    device: str = "auto",
    image_size: int = 48,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run the whole demo into ``out``; returns the comparison (``out/runs/compare.json``'s content)."""
    if size not in SIZES:
        raise VafusionError(f"--size {size!r}: choose one of {', '.join(SIZES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise VafusionError(f"{out}: not empty; pass another --out directory, or delete this one")
    started = time.perf_counter()

    def step(msg: str) -> None:
        echo(f"[{time.perf_counter() - started:5.0f}s] {msg}")

    step(f"1/4 generating a '{size}' corpus in {out / 'corpus'}")
    corpus = make_corpus(out / "corpus", seed=seed, progress=progress, **SIZES[size])
    frames = sum(v.n_frames for v in corpus.videos)
    step(f"    {len(corpus.videos)} ids, {frames} frames (valence drawn in the faces, arousal in the voice)")
    step("2/4 extracting resnet18, vggish, logmel features")
    echo(
        "    NOTE: resnet18 and VGGish use RANDOM weights here (no download needed); for real data use\n"
        "    --visual-weights imagenet (or a face-trained checkpoint) and --vggish-weights vggish-10086976.pth (README)"
    )
    opts = ExtractOptions(
        features=(VISUAL, *AUDIO),
        visual_weights="random",
        vggish_weights="random",
        image_size=image_size,
        batch_size=64,
        device=device,
        progress=progress,
    )
    report = extract(corpus.root, out / "cache", opts)
    if not report.ok:
        raise VafusionError(
            f"{out / 'cache'}: extraction failed: {'; '.join(map(str, [*report.failures, *report.problems]))}"
        )
    step(f"3/4 comparing {', '.join(MODELS)} on all features and on each stream alone (vafusion compare)")
    result = compare(
        out / "cache",
        out / "runs",
        MODELS,
        FEATURE_SETS,
        data=DataConfig(**DEMO_DATA),
        training=TrainingConfig(seed=seed, device=device, **DEMO_TRAINING),
        model_options=DEMO_MODEL_OPTIONS,
        progress=progress,
    )
    for row in result["summary"]:
        step(f"    {row['model']} on {row['features']}: P {row['p']['mean']:.3f}")
    step("4/4 writing the report")
    rows = [
        {"name": f"{r['model']} ({r['features']})", **{k: r[k] for k in ("ccc_v", "ccc_a", "p")}, "run": r["run"]}
        for r in result["runs"]
    ]
    report_path = write_report(Path(rows[0]["run"]), out / "cache", comparison=rows, device=device)
    step(f"    {report_path} and {out / 'runs' / 'compare.html'} (open them in a browser)")
    return result
