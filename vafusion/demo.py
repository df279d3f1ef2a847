"""`vafusion demo`: both stages on a generated corpus, in minutes, on a laptop CPU.

Generates a corpus (vafusion.synth), extracts resnet18, VGGish and log-mel features with
RANDOM backbone weights (no download; the generator puts valence in the faces and arousal
in the voice, so even random features carry them), trains the fusion model, each unimodal
variant and the ridge baseline, and compares them on the held-out validation ids.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vafusion.errors import VafusionError
from vafusion.extract.run import ExtractOptions, extract
from vafusion.fusion.config import FusionConfig
from vafusion.fusion.report import write_report
from vafusion.fusion.train import train
from vafusion.synth import SIZES, make_corpus

VISUAL, AUDIO = "resnet18", ("vggish", "logmel")
# Small windows and model: the demo corpus holds a few thousand frames, not Aff-Wild2's millions.
DEMO_TRAINING = dict(window=100, hop=50, epochs=15, batch_size=8, d_model=64, heads=4, head_hidden=64, patience=15)


@dataclass(frozen=True)
class Variant:
    name: str
    features: tuple[str, ...]
    model: str = "fusion"


VARIANTS = (
    Variant("fusion (resnet18 + vggish + logmel)", (VISUAL, *AUDIO)),
    Variant("visual only (resnet18)", (VISUAL,)),
    Variant("audio only (vggish)", ("vggish",)),
    Variant("audio only (logmel)", ("logmel",)),
    Variant("ridge baseline (all features)", (VISUAL, *AUDIO), "ridge"),
)


def run_demo(out: str | Path, size: str = "demo", device: str = "auto", image_size: int = 48, seed: int = 0,
             progress: bool = True, echo: Callable[[str], None] = print) -> list[dict]:
    """Run the whole demo into ``out``; returns one row per variant (name, ccc_v, ccc_a, p, run)."""
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
    echo("    NOTE: resnet18 and VGGish use RANDOM weights here (no download needed); for real data use\n"
         "    --visual-weights imagenet (or a face-trained checkpoint) and --vggish-weights vggish-10086976.pth (README)")
    opts = ExtractOptions(features=(VISUAL, *AUDIO), visual_weights="random", vggish_weights="random",
                          image_size=image_size, batch_size=64, device=device, progress=progress)
    report = extract(corpus.root, out / "cache", opts)
    if not report.ok:
        raise VafusionError(f"{out / 'cache'}: extraction failed: {'; '.join(map(str, report.failures + report.problems))}")
    step("3/4 training the fusion model, the unimodal variants and the ridge baseline")
    rows = []
    for variant in VARIANTS:
        run = out / "runs" / variant.name.split(" (")[0].replace(" ", "-") / "-".join(variant.features)
        config = FusionConfig(features=variant.features, model=variant.model, seed=seed, device=device, **DEMO_TRAINING)
        result = train(out / "cache", run, config, progress=progress, report=False)
        rows.append({"name": variant.name, **{k: result.best[k] for k in ("ccc_v", "ccc_a", "p")}, "run": str(run)})
        step(f"    {variant.name}: P {result.best['p']:.3f}")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    step("4/4 writing the report")
    report_path = write_report(Path(rows[0]["run"]), out / "cache", comparison=rows, device=device)
    step(f"    {report_path} (open it in a browser)")
    return rows


def format_table(rows: list[dict]) -> str:
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'model':<{width}}  {'CCC_V':>7}  {'CCC_A':>7}  {'P':>7}"]
    lines += [f"{r['name']:<{width}}  {r['ccc_v']:>7.3f}  {r['ccc_a']:>7.3f}  {r['p']:>7.3f}" for r in rows]
    return "\n".join(lines)
