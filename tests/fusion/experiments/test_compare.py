"""`vafusion compare` and the job loop under it (shared with cv): the grid of runs, resuming an interrupted
comparison (finished runs skipped, the interrupted one continued from last.pt), compare.json / compare.html."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import vafusion.fusion.runs.train as train_mod
from tests.conftest import untimed, untimed_metrics
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.experiments.compare import COMPARE_JSON, compare
from vafusion.fusion.experiments.cv import cross_validate
from vafusion.fusion.reports.compare import COMPARE_HTML
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.config import DataConfig, FusionConfig, ModelConfig, TrainingConfig, make_config
from vafusion.fusion.runs.run_dir import RunState
from vafusion.fusion.runs.train import train

from ..pages import check_page

DATA = DataConfig(window=48, hop=32)
TRAINING = TrainingConfig(epochs=2, batch_size=4, lr=3e-3, patience=10, device="cpu")
OPTIONS = {"d_model": 16, "heads": 2, "head_hidden": 16, "tcn_kernel": 3, "tcn_dilations": (1, 2)}
SETS = [("visual", "audio"), ("visual",)]


@pytest.fixture
def trainings(monkeypatch) -> list[tuple[str, bool]]:
    """(run directory relative to its comparison, resumed from last.pt) of every training the job loop
    starts or continues (a finished run, read back, is not one)."""
    calls: list[tuple[str, bool]] = []
    real = train_mod._prepare_run_dir

    def spy(run_dir, *args):
        state, config = real(run_dir, *args)
        if state is not RunState.FINISHED:
            calls.append(("/".join(Path(run_dir).parts[-3:]), state is RunState.RESUMABLE))
        return state, config

    monkeypatch.setattr(train_mod, "_prepare_run_dir", spy)
    return calls


def test_compare_trains_the_grid_and_an_interrupted_comparison_continues(
    toy_cache, tmp_path, trainings, kill_after_last_save
):
    runs = tmp_path / "cmp"
    kwargs = dict(data=DATA, training=TRAINING, seeds=2, model_options=OPTIONS, progress=False)
    kill_after_last_save(3)  # killed right after the second imf run's first epoch
    with pytest.raises(KeyboardInterrupt):
        compare(toy_cache, runs, ["imf", "ridge"], SETS, **kwargs)
    first, second = "imf/visual+audio/seed-0", "imf/visual+audio/seed-1"
    assert trainings == [(first, False), (second, False)]
    trainings.clear()

    result = compare(toy_cache, runs, ["imf", "ridge"], SETS, **kwargs)
    expected = [f"{m}/{'+'.join(f)}/seed-{s}" for m in ("imf", "ridge") for f in SETS for s in (0, 1)]
    assert [r["run"] for r in result["runs"]] == [str(runs / e) for e in expected]
    assert trainings == [(second, True)] + [(e, False) for e in expected[2:]]  # the finished one is not retrained
    straight = FusionConfig(replace(DATA, features=SETS[0]), ModelConfig("imf", OPTIONS), replace(TRAINING, seed=1))
    train(toy_cache, tmp_path / "straight", straight, progress=False)
    assert untimed_metrics(runs / second) == untimed_metrics(tmp_path / "straight")  # resumed exactly

    assert [(r["model"], r["features"], r["n"]) for r in result["summary"]] == [
        ("imf", "visual,audio", 2),
        ("imf", "visual", 2),
        ("ridge", "visual,audio", 2),
        ("ridge", "visual", 2),
    ]
    for row in result["summary"]:
        ps = [r["p"] for r in result["runs"] if (r["model"], r["features"]) == (row["model"], row["features"])]
        assert row["p"]["mean"] == pytest.approx(sum(ps) / 2) and row["p"]["std"] == pytest.approx(
            abs(ps[0] - ps[1]) / 2
        )
    ridge = next(r for r in result["summary"] if r["model"] == "ridge" and r["features"] == "visual,audio")
    assert ridge["p"]["mean"] > 0.8 and ridge["p"]["std"] == 0.0  # the seed does not change a full ridge fit
    assert json.loads((runs / COMPARE_JSON).read_text()) == json.loads(json.dumps(result))
    page = check_page(runs / COMPARE_HTML, COMPARE_HTML)
    text = " ".join(page.text)
    assert [Path(src).name for src in page.images] == ["compare.png"]
    assert "mean ± std over seeds" in text and f"{ridge['p']['mean']:.4f} ± 0.0000" in text

    trainings.clear()  # a third time: nothing left to train, the same results
    again = compare(toy_cache, runs, ["imf", "ridge"], SETS, **kwargs)
    assert trainings == [] and again["runs"] == result["runs"]
    with pytest.raises(
        VafusionError, match=r"holds a run with other settings \(training.epochs \d+ in the run, \d+ now\)"
    ):
        compare(toy_cache, runs, ["imf"], SETS, **{**kwargs, "training": replace(TRAINING, epochs=3)})


def test_compare_cli_folds_json_and_errors(toy_cache, tmp_path):
    runner = CliRunner()
    base = ["compare", str(toy_cache), "--runs", str(tmp_path / "cv"), "--window", "48", "--hop", "32"]
    result = runner.invoke(cli, [*base, "--models", "ridge", "--features", "visual", "--folds", "2", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((tmp_path / "cv" / COMPARE_JSON).read_text())
    assert printed["split"] == "folds" and printed["folds"] == 2
    assert [r["run"] for r in printed["runs"]] == [
        str(tmp_path / "cv" / "ridge" / "visual" / "seed-0" / f"fold-{k}") for k in (1, 2)
    ]
    assert printed["summary"][0]["n"] == 2
    table = runner.invoke(cli, [*base, "--models", "ridge", "--features", "visual", "--folds", "2"])
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["model", "features", "runs", "CCC_V", "CCC_A", "P", "time/run"]
    assert lines[1].split()[:3] == ["ridge", "visual", "2"] and "±" in lines[1] and lines[1].endswith(" s")

    def fails(*args: str) -> str:
        out = runner.invoke(cli, base + list(args))
        assert out.exit_code == 1 and out.output.startswith("error: ") and "Traceback" not in out.output
        return out.output

    assert "none of the models ridge has this option" in fails("--models", "ridge", "--model-option", "d_model=8")
    assert "'ridge' cannot run causally" in fails("--models", "imf,ridge", "--causal")
    assert "imf is named twice" in fails("--models", "imf,fusion")
    assert "a feature set is named twice" in fails("--models", "ridge", "--features", "visual;visual")
    assert "unknown model" in fails("--models", "ridge,nope")


def test_cv_continues_and_keeps_finished_folds(toy_cache, tmp_path, trainings):
    config = make_config(features=("visual",), model="ridge", folds=3)
    first = cross_validate(toy_cache, tmp_path / "cv", config, progress=False, report=False)
    assert [t for t, _ in trainings] == [f"{tmp_path.name}/cv/fold-{k}" for k in (1, 2, 3)]
    (tmp_path / "cv" / "fold-2" / ckpt_mod.SUMMARY).unlink()  # as if stopped before fold 2 finished
    trainings.clear()
    again = cross_validate(toy_cache, tmp_path / "cv", config, progress=False, report=False)
    assert untimed(again) == untimed(first) and again["seconds"] > 0 and all(f["seconds"] > 0 for f in again["folds"])
    assert trainings == [(f"{tmp_path.name}/cv/fold-2", False)]  # a closed-form fit has no last.pt: fitted again
