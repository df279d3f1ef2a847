"""Run directories written before the model registry (config_version 1, ``model: "fusion"``, checkpoint
format_version 1) load, evaluate, predict, report and resume unchanged.

The fixtures in v1/ were written by vafusion 7abc68d against the toy cache (how: v1/make_v1_runs.py),
and expected.json holds what that version computed from them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vafusion.cli import cli
from vafusion.fusion.models.imf import IMF
from vafusion.fusion.models.ridge import RidgeBaseline
from vafusion.fusion.predict.ensemble import predict_to_dir
from vafusion.fusion.runs.checkpoint import load_run
from vafusion.fusion.runs.config import FusionConfig
from vafusion.fusion.runs.evaluate import evaluate_run

V1 = Path(__file__).parent / "v1"
EXPECTED = json.loads((V1 / "expected.json").read_text())


@pytest.fixture
def runs(tmp_path) -> Path:
    """A private copy of the v1 run directories (reports and resumes write into them)."""
    for name in ("imf", "ridge"):
        shutil.copytree(V1 / name, tmp_path / name)
    return tmp_path


def test_fixtures_are_the_old_format():
    assert json.loads((V1 / "imf" / "config.json").read_text())["model"] == "fusion"
    ckpt = torch.load(V1 / "imf" / "best.pt", weights_only=True)
    assert ckpt["format_version"] == 1 and json.loads(ckpt["config"])["config_version"] == 1


def test_load_and_evaluate_unchanged(toy_cache, runs):
    imf, ridge = load_run(runs / "imf"), load_run(runs / "ridge")
    assert isinstance(imf.model, IMF) and imf.config.model.name == "imf"
    assert imf.config.model.options["d_model"] == 16 and imf.config.model.options["tcn_dilations"] == (1, 2)
    assert isinstance(ridge.model, RidgeBaseline) and ridge.config.model.options["context"] == 3
    assert FusionConfig.load(runs / "imf") == imf.config  # config.json (version 1) reads the same
    for name in ("imf", "ridge"):
        scores = evaluate_run(runs / name, toy_cache, device="cpu")
        for key, value in EXPECTED[f"{name}_evaluate"].items():
            assert scores[key] == pytest.approx(value, abs=1e-6), (name, key)


def test_predict_unchanged(toy_cache, runs, tmp_path):
    for name in ("imf", "ridge"):
        written = predict_to_dir([runs / name], toy_cache, tmp_path / f"pred-{name}", ids="test", device="cpu")
        expected = EXPECTED[f"{name}_test_predictions"]
        assert sorted(p.stem for p in written) == sorted(expected)
        for path in written:
            np.testing.assert_allclose(np.loadtxt(path, delimiter=",", skiprows=1), expected[path.stem], atol=2e-6)


def test_report_of_old_runs(toy_cache, runs):
    for name in ("imf", "ridge"):
        result = CliRunner().invoke(cli, ["report", str(runs / name), "--cache", str(toy_cache), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        page = (runs / name / "report.html").read_text()
        assert (
            f"{EXPECTED[f'{name}_evaluate']['p']:.4f}" in page
            and (runs / name / "figures" / "va_scatter.png").is_file()
        )
    assert "imf — The paper&#x27;s model" in (runs / "imf" / "report.html").read_text()


def test_an_interrupted_old_run_resumes_to_the_old_result(toy_cache, runs):
    """The v1 run stopped after epoch 2 of 3; resumed with the old flags, epoch 3 is what v1 computed."""
    options = ["d_model=16", "heads=2", "head_hidden=16", "tcn_kernel=3", "tcn_dilations=1,2"]
    args = [
        "train",
        str(toy_cache),
        "--run",
        str(runs / "imf"),
        "--resume",
        "--model",
        "fusion",
        "--features",
        "visual,audio",
        "--window",
        "48",
        "--hop",
        "32",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--patience",
        "10",
        "--lr",
        "0.003",
        "--device",
        "cpu",
        "--no-report",
        *[a for o in options for a in ("--model-option", o)],
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (runs / "imf" / "metrics.jsonl").read_text().splitlines()]
    expected = EXPECTED["imf_straight_metrics"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row, old in zip(rows, expected):
        for key in ("loss", "ccc_v", "ccc_a", "p", "lr"):
            assert row[key] == pytest.approx(old[key], abs=1e-4), (row["epoch"], key)
    other = CliRunner().invoke(cli, [*args[:-10], "--model-option", "d_model=32"])
    assert other.exit_code == 1 and "other settings (model.options.d_model 16 in the run, 32 now, " in other.output
