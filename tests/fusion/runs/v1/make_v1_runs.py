"""How the v1 run directories beside this file were made (kept for the record; not a test).

They were written by vafusion at commit 7abc68d (config_version 1, flat FusionConfig with
``model: "fusion"``, checkpoint format_version 1), against the toy cache of
``tests/toy_cache.write_toy_cache()`` with its defaults (what the ``toy_cache`` fixture
builds), so tests can check that this version loads, evaluates, predicts, reports and
resumes them unchanged. To remake them, run this file from the root of a checkout of that
commit (``git worktree add /tmp/v1 7abc68d``, copy this file in, ``python -m`` it from there
with that tree installed).

``imf/``: interrupted after epoch 2 of 3 (best.pt, last.pt, two metric rows, no summary);
``ridge/``: a finished ridge baseline with ridge_context 3. ``expected.json``: what that
version computed from them (evaluation scores, the metric rows of an uninterrupted run, the
predictions for the test ids).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tests.toy_cache import write_toy_cache
from vafusion.fusion import checkpoint as ckpt_mod
from vafusion.fusion.config import FusionConfig
from vafusion.fusion.predict import evaluate_run, predict_to_dir
from vafusion.fusion.train import train

HERE = Path(__file__).resolve().parent
IMF = dict(
    features=("visual", "audio"),
    window=48,
    hop=32,
    epochs=3,
    batch_size=4,
    d_model=16,
    heads=2,
    head_hidden=16,
    tcn_kernel=3,
    tcn_dilations=(1, 2),
    patience=10,
    lr=3e-3,
    device="cpu",
)
RIDGE = dict(features=("visual", "audio"), model="ridge", ridge_context=3, ridge_alpha=2.0, device="cpu")


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    cache = tmp / "cache"
    write_toy_cache(cache)
    expected: dict = {}
    train(cache, tmp / "straight", FusionConfig(**IMF), progress=False, report=False)
    expected["imf_straight_metrics"] = [
        json.loads(x) for x in (tmp / "straight" / "metrics.jsonl").read_text().splitlines()
    ]

    real_save, saves = ckpt_mod.save_atomic, {"n": 0}

    def dying_save(obj, path):
        real_save(obj, path)
        if path.name == ckpt_mod.LAST:
            saves["n"] += 1
            if saves["n"] == 2:
                raise KeyboardInterrupt

    ckpt_mod.save_atomic = dying_save
    try:
        train(cache, tmp / "imf", FusionConfig(**IMF), progress=False, report=False)
    except KeyboardInterrupt:
        pass
    ckpt_mod.save_atomic = real_save
    train(cache, tmp / "ridge", FusionConfig(**RIDGE), progress=False, report=False)

    for name in ("imf", "ridge"):
        scores = evaluate_run(tmp / name, cache, device="cpu")
        expected[f"{name}_evaluate"] = {k: scores[k] for k in ("ccc_v", "ccc_a", "p")}
        written = predict_to_dir([tmp / name], cache, tmp / f"pred-{name}", ids="test", device="cpu")
        expected[f"{name}_test_predictions"] = {
            p.stem: np.loadtxt(p, delimiter=",", skiprows=1).tolist() for p in written
        }
        dest = HERE / name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(tmp / name, dest)
    (HERE / "expected.json").write_text(json.dumps(expected) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
