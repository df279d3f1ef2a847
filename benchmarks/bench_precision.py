"""bf16 on the CPU: the training step and a stage-1 backbone under bf16 autocast, against fp32.

- ``train_step_bf16_speedup``: the default training step (imf, batch 16 x window 300, dims
  2048/128/64, one pre-built batch) in fp32 against the same step under ``--precision bf16``
  (``vafusion.device.compute``/``autocast``), interleaved, medians.
- ``extract_cpu_bf16_speedup``: the resnet50 trunk at 224 px (random weights, channels_last,
  batch 16) in fp32 against bf16 autocast, as extraction runs it.

Both are measured only on a CPU with native bfloat16 (AVX512-BF16, AMX, ARM BF16); elsewhere
the script says "not supported on this CPU" (``vafusion`` refuses bf16 there). ``--emulated``
measures the emulated figures anyway, on smaller batches (``--emulated-batch``), labelled as such.

    python benchmarks/bench_precision.py [--steps 4] [--repeats 3] [--emulated] [--emulated-batch 2]
"""

from __future__ import annotations

import argparse

import _common as C
import torch
from bench_train import Trainer

from vafusion.device import compute, cpu_bf16_native
from vafusion.fusion.data.batches import Batch
from vafusion.fusion.runs.config import make_config


def _batch(b: int, w: int, dims: list[int]) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(
        streams=[torch.randn(b, w, d, generator=g) for d in dims],
        present=[torch.ones(b, w, dtype=torch.bool) for _ in dims],
        valid=torch.ones(b, w, dtype=torch.bool),
        labels=torch.rand(b, w, 2, generator=g) * 2 - 1,
        windows=torch.zeros(b, 3, dtype=torch.long),
    )


def interleaved(run: dict, steps: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each ``run[name]()``, blocks of ``steps`` calls interleaved ``repeats`` times."""
    times: dict[str, list[float]] = {name: [] for name in run}
    for fn in run.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in run.items():
            times[name].append(C.timed(lambda: [fn() for _ in range(steps)]) / steps)  # noqa: B023
    return {name: C.median(t) for name, t in times.items()}


def train_step(batch_size: int, steps: int, repeats: int) -> float:
    config = make_config(recipe="v1", device="cpu", batch_size=batch_size)
    dims = list(C.REAL_DIMS.values())
    trainers = {p: Trainer(config, dims, torch.device("cpu"), total_steps=10_000) for p in ("fp32", "bf16")}
    batch = _batch(batch_size, config.data.window, dims)

    def step(precision: str):
        def run():
            with compute(torch.get_num_threads(), precision, allow_emulated=True):
                trainers[precision].step(batch)

        return run

    t = interleaved({"fp32": step("fp32"), "bf16": step("bf16")}, steps, repeats)
    print(
        f"training step, batch {batch_size}: fp32 {t['fp32'] * 1e3:.0f} ms, bf16 {t['bf16'] * 1e3:.0f} ms; "
        f"losses after the runs fp32 {trainers['fp32'].losses[-1]:.4f}, bf16 {trainers['bf16'].losses[-1]:.4f}"
    )
    return t["fp32"] / t["bf16"]


def backbone(batch_size: int, steps: int, repeats: int) -> float:
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Identity()
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, 224, 224).to(memory_format=torch.channels_last)

    def run(precision: str):
        def forward():
            with torch.inference_mode(), compute(torch.get_num_threads(), precision, allow_emulated=True):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    return model(x)

        return forward

    t = interleaved({"fp32": run("fp32"), "bf16": run("bf16")}, steps, repeats)
    a, b = run("fp32")().float(), run("bf16")().float()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1).min()
    print(
        f"resnet50 224 px, batch {batch_size}: fp32 {batch_size / t['fp32']:.1f} frames/s, bf16 "
        f"{batch_size / t['bf16']:.1f} frames/s; lowest cosine(bf16, fp32) {float(cosine):.6f}"
    )
    return t["fp32"] / t["bf16"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--emulated", action="store_true", help="measure even where bf16 is only emulated")
    ap.add_argument("--emulated-batch", type=int, default=2)
    args = ap.parse_args()
    C.header("bf16 autocast on the CPU: training step and resnet50 trunk against fp32")
    native = cpu_bf16_native()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}; native bf16: {native}")
    if not native and not args.emulated:
        for name in ("train_step_bf16_speedup", "extract_cpu_bf16_speedup"):
            print(
                f"{name}: not supported on this CPU (no AVX512-BF16, AMX or ARM BF16; vafusion refuses "
                f"--precision bf16 here); --emulated measures the emulated figure"
            )
        return
    suffix = "" if native else "_emulated"
    train_batch = 16 if native else args.emulated_batch
    steps, repeats = (args.steps, args.repeats) if native else (1, 1)
    C.result(f"train_step_bf16_speedup{suffix}", train_step(train_batch, steps, repeats), ">=", 1.0)
    C.result(
        f"extract_cpu_bf16_speedup{suffix}", backbone(16 if native else args.emulated_batch, steps, repeats), ">=", 1.0
    )


if __name__ == "__main__":
    main()
