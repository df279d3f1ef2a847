"""``extract --precision bf16``: recorded in the provenance (so bf16 and fp32 features never mix), close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vafusion import device
from vafusion.cache.reader import open_feature_file
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.extract.run import ExtractOptions, extract
from vafusion.synth import make_corpus

FAST = dict(features=("resnet18",), visual_weights="random", image_size=32, batch_size=16, workers=0, progress=False)


def test_bf16_extraction_is_recorded_and_never_mixes_with_fp32(tmp_path: Path, monkeypatch, one_thread) -> None:
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_videos=2, seconds=1.0, seed=5)
    with device.compute(1, "fp32"):
        extract(corpus, tmp_path / "fp32", ExtractOptions(**FAST))
    monkeypatch.setenv(device.EMULATED_BF16_ENV, "1")  # this CPU may only emulate bf16
    result = CliRunner().invoke(
        cli,
        [
            "extract",
            str(corpus),
            "--cache",
            str(tmp_path / "bf16"),
            "--features",
            "resnet18",
            "--visual-weights",
            "random",
            "--image-size",
            "32",
            "--workers",
            "0",
            "--batch-size",
            "16",
            "--precision",
            "bf16",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    with open_feature_file(tmp_path / "fp32", "resnet18") as a, open_feature_file(tmp_path / "bf16", "resnet18") as b:
        assert "precision" not in a.extractor  # fp32 provenance as it always was (golden fingerprints: test_golden)
        assert b.extractor == dict(a.extractor, precision="bf16") and b.fingerprint != a.fingerprint
        for vid in a.ids:
            x, m = a.read(vid)
            y, _ = b.read(vid)
            x, y = x[m].astype(np.float64), y[m].astype(np.float64)
            cosine = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
            assert cosine.min() > 0.99  # bf16 rounding, not other numbers
    with device.compute(1, "bf16", allow_emulated=True), pytest.raises(VafusionError, match="another extractor"):
        extract(corpus, tmp_path / "fp32", ExtractOptions(**FAST))  # into the fp32 file: refused, not mixed
