"""Models from outside vafusion: the README's example (examples/my_model.py) by module:Class and from the
current directory, and an installed plug-in found through a real entry point (a dist-info on sys.path).
Each trains, evaluates, predicts, reports and resumes like a built-in; a run whose plug-in is gone says
which module to make importable."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import untimed_metrics
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.models import list_models, resolve_model
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.checkpoint import load_run
from vafusion.fusion.runs.config import make_config
from vafusion.fusion.runs.train import train

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "my_model.py"
SETTINGS = [
    "--features",
    "visual,audio",
    "--window",
    "48",
    "--hop",
    "32",
    "--batch-size",
    "4",
    "--lr",
    "0.003",
    "--device",
    "cpu",
    "--patience",
    "10",
]


def _cli(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _forget(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


def test_readme_shows_the_example_that_runs():
    readme = (ROOT / "README.md").read_text()
    source = EXAMPLE.read_text()
    assert source[source.index("class MyFusion") :].strip() in readme


def test_example_model_trains_evaluates_predicts_reports_and_resumes(toy_cache, tmp_path, kill_after_last_save):
    ref = "examples.my_model:MyFusion"
    model = ["--model", ref, "--model-option", "hidden=16"]
    _cli("train", toy_cache, "--run", tmp_path / "straight", *model, *SETTINGS, "--epochs", "6", "--no-report")
    kill_after_last_save(2)  # as if killed after epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(
            toy_cache,
            tmp_path / "run",
            make_config(
                model=ref,
                features=("visual", "audio"),
                window=48,
                hop=32,
                epochs=6,
                batch_size=4,
                lr=3e-3,
                patience=10,
                device="cpu",
                hidden=16,
            ),
            progress=False,
        )
    _cli("train", toy_cache, "--run", tmp_path / "run", *model, *SETTINGS, "--epochs", "6", "--resume")
    assert untimed_metrics(tmp_path / "straight") == untimed_metrics(tmp_path / "run")  # resumed exactly
    summary = json.loads((tmp_path / "run" / ckpt_mod.SUMMARY).read_text())
    assert summary["model"] == ref and summary["best"]["p"] > 0.5  # it learns the toy task

    ckpt = torch.load(tmp_path / "run" / ckpt_mod.BEST, weights_only=True)
    assert json.loads(ckpt["config"])["model"] == {"name": ref, "options": {"hidden": 16, "layers": 1, "dropout": 0.0}}
    scores = json.loads(_cli("evaluate", tmp_path / "run", "--json"))
    assert scores["p"] == pytest.approx(summary["best"]["p"], abs=1e-6)
    _cli("predict", tmp_path / "run", "--cache", toy_cache, "--out", tmp_path / "pred")
    files = sorted((tmp_path / "pred").glob("*.txt"))
    assert files and all(np.abs(np.loadtxt(f, delimiter=",", skiprows=1)).max() <= 1 for f in files)
    report = (tmp_path / "run" / "report.html").read_text()  # train wrote it
    assert "A GRU over all streams" in report and "options.hidden" in report and "curves.png" in report


def test_example_model_from_the_current_directory(toy_cache, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(EXAMPLE, work / "my_model.py")
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(work))])
    _cli(
        "train",
        toy_cache,
        "--run",
        tmp_path / "run",
        "--model",
        "my_model:MyFusion",
        *SETTINGS,
        "--epochs",
        "1",
        "--no-report",
    )
    assert str(work) in sys.path  # found in the current directory
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(work)])
    _forget("my_model")
    with pytest.raises(
        VafusionError,
        match=r"run: model 'my_model:MyFusion': cannot import module 'my_model' .*"
        r"make 'my_model' importable",
    ):
        load_run(tmp_path / "run")
    _forget("my_model")


PLUGIN = '''
    import torch
    from torch import nn


    class Gain(nn.Module):
        """A per-frame linear map of all streams (an installed test plug-in)."""

        def __init__(self, dims, *, gain: float = 1.0):
            super().__init__()
            self.gain = gain
            self.linear = nn.Linear(sum(dims), 2)

        def forward(self, streams, present, valid):
            x = torch.cat([torch.where(p[..., None], s, torch.zeros_like(s)) for s, p in zip(streams, present)], -1)
            return torch.tanh(self.gain * self.linear(x))
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch) -> Path:
    """A distribution 'vafusion-gain' installed in a folder on sys.path: its module and its dist-info, whose
    entry_points.txt declares models in group vafusion.models (found by importlib.metadata itself)."""
    site = tmp_path / "site"
    (site / "vafusion_gain-0.1.dist-info").mkdir(parents=True)
    (site / "vafusion_gain.py").write_text(textwrap.dedent(PLUGIN))
    (site / "vafusion_gain-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vafusion-gain\nVersion: 0.1\n"
    )
    (site / "vafusion_gain-0.1.dist-info" / "entry_points.txt").write_text(
        "[vafusion.models]\ngain = vafusion_gain:Gain\nbroken = vafusion_gain:Missing\nridge = vafusion_gain:Gain\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    _forget("vafusion_gain")


def test_entry_point_plugin_is_listed_trained_and_needed_to_load(installed_plugin, toy_cache, tmp_path, monkeypatch):
    spec = resolve_model("gain")
    assert (spec.name, spec.ref, spec.origin) == ("gain", "vafusion_gain:Gain", "entry point of vafusion-gain")
    specs, problems = list_models()
    assert [s.name for s in specs][-1] == "gain" and spec.options["gain"].default == 1.0
    assert any("'broken'" in p and "has no attribute 'Missing'" in p for p in problems)
    assert any("'ridge'" in p and "hidden by the built-in" in p for p in problems)
    listing = CliRunner().invoke(cli, ["models"])
    assert "gain  (entry point of vafusion-gain)" in listing.output and "gain=1.0" in listing.output

    _cli(
        "train",
        toy_cache,
        "--run",
        tmp_path / "run",
        "--model",
        "gain",
        "--model-option",
        "gain=2",
        *SETTINGS,
        "--epochs",
        "2",
        "--no-report",
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"] == {"name": "vafusion_gain:Gain", "options": {"gain": 2.0}}
    assert json.loads(_cli("evaluate", tmp_path / "run", "--json"))["p"] == pytest.approx(
        json.loads((tmp_path / "run" / ckpt_mod.SUMMARY).read_text())["best"]["p"], abs=1e-6
    )

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(installed_plugin)])
    _forget("vafusion_gain")
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "run")])
    assert result.exit_code == 1 and "make 'vafusion_gain' importable" in result.output
    assert "Traceback" not in result.output
