"""`cache derive --pca` on the demo corpus: validation CCC with the derived visual feature against the full one.

The README's trade-off table comes from this script. It builds what ``vafusion demo`` builds
(the 'demo' corpus: 15 ids; resnet18 with random weights at 48 px, VGGish, log-mel), derives
``resnet18-pcaK`` for each ``--k`` (fitted on the training ids), and trains the paper's model
(imf, the demo's configuration) on resnet18 + VGGish + log-mel with the full resnet18 and with
each derived one, ``--seeds`` seeds each, through the same ``compare`` as ``vafusion compare``
(official split: validation CCC). Baseline and variants run in the same process on the same cache.

- ``pca_p_ratio_k<K>``: mean validation P with resnet18-pcaK / mean P with resnet18 (no target:
  a measurement of the trade-off, 1.0 = no loss).
- ``pca_file_ratio_k<K>``: resnet18.h5 bytes / resnet18-pcaK.h5 bytes.

    python benchmarks/bench_pca.py [--k 64 512] [--seeds 3] [--visual-only] [--threads N] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common as C
import torch

from vafusion.cache.derive import derive_pca
from vafusion.demo import AUDIO, DEMO_DATA, DEMO_MODEL_OPTIONS, DEMO_TRAINING, VISUAL
from vafusion.fusion.experiments.compare import compare
from vafusion.fusion.runs.config import DataConfig, training_recipe


def build_cache(tmp: Path) -> Path:
    """The demo's corpus and cache (random backbone weights, as `vafusion demo`)."""
    return C.demo_cache(tmp / "corpus", tmp / "cache")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[64, 512], help="components (512 = all: a rotation)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--visual-only", action="store_true", help="also train on the visual feature alone")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    C.header("cache derive --pca: validation CCC on the demo corpus, derived visual feature against the full one")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        cache = build_cache(tmp)
        print(f"demo corpus and cache built in {time.perf_counter() - start:.0f} s", flush=True)
        sizes = {VISUAL: (cache / f"{VISUAL}.h5").stat().st_size}
        for k in args.k:
            done = derive_pca(cache, VISUAL, k, progress=False)
            sizes[done.feature] = done.path.stat().st_size
            print(
                f"{done.feature}: {100 * done.explained_variance_ratio:.1f}% of the variance of {done.fit_frames} "
                f"training frames ({done.fit_ids} ids); file {sizes[done.feature] / 2**20:.2f} MiB "
                f"(resnet18.h5 {sizes[VISUAL] / 2**20:.2f} MiB)",
                flush=True,
            )
        visuals = [VISUAL, *(f"{VISUAL}-pca{k}" for k in args.k)]
        sets = [(v, *AUDIO) for v in visuals] + ([(v,) for v in visuals] if args.visual_only else [])
        start = time.perf_counter()
        result = compare(
            cache,
            tmp / "runs",
            ["imf"],
            sets,
            data=DataConfig(**DEMO_DATA),
            training=training_recipe("v1", seed=0, device="cpu", **DEMO_TRAINING),
            seeds=args.seeds,
            model_options=DEMO_MODEL_OPTIONS,
            progress=False,
        )
        print(f"{len(result['runs'])} imf runs in {time.perf_counter() - start:.0f} s; load average {C.load_average()}")
    print("| features (imf) | visual file | CCC_V | CCC_A | P |")
    print("|---|---|---|---|---|")
    by_features = {row["features"]: row for row in result["summary"]}
    for row in result["summary"]:
        visual = row["features"].split(",")[0]
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in ("ccc_v", "ccc_a", "p")]
        print(f"| {row['features']} (n={row['n']}) | {sizes[visual] / 2**20:.2f} MiB | " + " | ".join(cells) + " |")
    full = by_features[",".join((VISUAL, *AUDIO))]["p"]["mean"]
    for k in args.k:
        derived = by_features[",".join((f"{VISUAL}-pca{k}", *AUDIO))]["p"]["mean"]
        print(f"RESULT name=pca_p_ratio_k{k} value={derived / full:.4g} target=none pass=true")
        print(
            f"RESULT name=pca_file_ratio_k{k} value={sizes[VISUAL] / sizes[f'{VISUAL}-pca{k}']:.4g} target=none "
            f"pass=true",
            flush=True,
        )


if __name__ == "__main__":
    main()
