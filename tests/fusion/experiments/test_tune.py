"""vafusion tune on the toy cache: the study in its storage, trials as run directories that evaluate to
what the study recorded, pruning, reruns, --params, the space (plug-ins, --space errors), Ctrl-C and
concurrent processes on one journal and on one SQLite database. (SIGKILL: tests/faults/test_tune_kills.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from tests.conftest import untimed_metrics
from tests.faults.conftest import run_children_at_once
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.experiments import tune as tune_mod
from vafusion.fusion.experiments.space import build_space
from vafusion.fusion.runs import train as train_mod
from vafusion.fusion.runs.config import FusionConfig, make_config
from vafusion.fusion.runs.evaluate import evaluate_run

# --stride 1: the pruning below (which trial learns nothing) was constructed on every frame
DATA = [
    "--features",
    "visual,audio",
    "--window",
    "48",
    "--hop",
    "32",
    "--stride",
    "1",
    "--device",
    "cpu",
    "--threads",
    "1",
]
TINY_SPACE = {
    "d_model": {"choices": [8, 16]},
    "heads": 2,
    "head_hidden": 8,
    "tcn_dilations": [1, 2],
    "tcn_kernel": 3,
    "dropout": None,
    "weight_decay": None,
    "batch_size": 8,
    # constructed for pruning: a learning rate that learns nothing against two that learn
    "lr": {"choices": [0.003, 0.01, 1e-7]},
}


def _cli(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _ok(*args: object) -> str:
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


def _journal(study: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(study / "study.journal")))
    return optuna.load_study(study_name=study.name, storage=storage)


READS: list[str] = []  # who read the cache during the tune of ``tuned``


@pytest.fixture(scope="module")
def tuned(toy_cache, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """6 trials x 3 epochs of a tiny imf with the median pruner; the study folder and the command."""
    root = tmp_path_factory.mktemp("tune")
    (root / "space.json").write_text(json.dumps(TINY_SPACE))
    study = root / "study"
    args = ["tune", toy_cache, "--study", study, "--trials", "6", "--epochs", "3", "--space", root / "space.json"]
    args += [*DATA, "--seed", "0"]  # TPE's random start draws lr 0.003, 0.01, 0.003, 1e-7, ...: trial 3 is pruned
    with pytest.MonkeyPatch.context() as mp:
        for module, name in ((tune_mod, "tune"), (train_mod, "train")):
            mp.setattr(module, "load_cache", _counted(module.load_cache, name))
        _ok(*args)
    return toy_cache, study, [str(a) for a in args]


def _counted(load, name: str):
    def counted(*a, **k):
        READS.append(name)
        return load(*a, **k)

    return counted


def test_the_study_loads_from_its_storage_and_every_trial_is_a_run(tuned):
    _, study, _ = tuned
    trials = _journal(study).trials
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 6 and sorted(t.number for t in trials) == list(range(len(trials)))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert complete and pruned  # lr 1e-7 learns nothing: the median pruner stops it after its warm-up
    for t in complete:
        run = Path(t.user_attrs["run"])
        assert run == (study / "trials" / f"{t.number:04d}").resolve()
        assert evaluate_run(run)["p"] == pytest.approx(t.value, abs=1e-5)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["tune"] == {"study": "study", "trial": t.number, "params": t.params, "pruned": False}
    for t in pruned:
        rows = (Path(t.user_attrs["run"]) / "metrics.jsonl").read_text().splitlines()
        assert len(rows) == max(t.intermediate_values) < 3  # stopped at once, its run finished there
        assert t.params["lr"] == 1e-7
    result = json.loads((study / "tune.json").read_text())
    assert result["best"]["p"] == pytest.approx(max(t.value for t in complete))
    assert result["counts"]["complete"] == len(complete) and result["counts"]["pruned"] == len(pruned)
    assert {r["trial"] for r in result["trials"]} == {t.number for t in trials}
    assert set(result["importances"]) == {"d_model", "lr"}  # the searched settings (PED-ANOVA, sums to 1)
    assert sum(result["importances"].values()) == pytest.approx(1.0)
    assert (study / "tune.html").is_file()
    for figure in ("tune-history.png", "tune-importances.png", "tune-slices.png"):
        assert (study / "figures" / figure).is_file()
    assert READS == ["tune"]  # features and split are not searched: one read serves every trial


def test_rerun_adds_no_trial_and_other_settings_are_refused(tuned):
    _, study, args = tuned
    before = len(_journal(study).trials)
    _ok(*args)
    assert len(_journal(study).trials) == before
    result = _cli(*[a if a != "3" else "4" for a in args])  # --epochs 4: another study
    assert result.exit_code == 1 and "other settings (base.training.epochs)" in result.output


def test_params_retrains_the_best_configuration(tuned, tmp_path):
    cache, study, _ = tuned
    best = json.loads((study / "best.json").read_text())
    run = tmp_path / "retrained"
    _ok("train", cache, "--run", run, "--params", study / "best.json", "--epochs", "1", "--no-report", "--threads", "1")
    config = FusionConfig.load(run)
    tuned_config = FusionConfig.from_dict(best["config"])
    assert config.model == tuned_config.model and config.data == tuned_config.data
    assert config.training.lr == best["params"]["lr"] and config.training.epochs == 1  # given here: wins
    bad = _cli("train", cache, "--run", tmp_path / "x", "--params", study / "tune.json")
    assert bad.exit_code == 1 and "--params" in bad.output and "best.json" in bad.output


def test_a_trials_run_works_with_predict_and_report_and_cv_takes_the_params(tuned, tmp_path):
    """What the issue promises of a trial's run directory beyond evaluate (tested above), and `cv --params`."""
    cache, study, _ = tuned
    best = json.loads((study / "best.json").read_text())
    run = tmp_path / "run"
    shutil.copytree(best["run"], run)  # a copy: report writes into the run
    _ok("predict", run, "--cache", cache, "--ids", "all", "--out", tmp_path / "pred", "--device", "cpu")
    assert sorted(tmp_path.joinpath("pred").glob("*.txt"))
    _ok("report", run, "--device", "cpu", "--ids", "1")
    assert (run / "report.html").is_file()
    _ok(
        "cv",
        cache,
        "--runs",
        tmp_path / "cv",
        "--params",
        study / "best.json",
        "--folds",
        "2",
        "--epochs",
        "1",
        "--no-report",
    )
    tuned_config = FusionConfig.from_dict(best["config"])
    for fold in ("fold-1", "fold-2"):
        config = FusionConfig.load(tmp_path / "cv" / fold)
        assert config.model == tuned_config.model and config.training.lr == best["params"]["lr"]


def test_a_plugin_models_options_become_the_space(tmp_path, monkeypatch):
    (tmp_path / "tunable.py").write_text(
        textwrap.dedent(
            '''
            from torch import nn

            class Declared(nn.Module):
                """A plug-in declaring its ranges."""
                option_space = {"width": {"low": 8, "high": 64, "log": True}, "act": {"choices": ["relu", "gelu"]}}

                def __init__(self, dims, *, width: int = 16, act: str = "relu", rate: float = 0.1, flag: bool = True):
                    super().__init__()

            class Derived(nn.Module):
                """A plug-in declaring nothing: ranges around its defaults."""

                def __init__(self, dims, *, width: int = 16, rate: float = 0.1, alpha: float = 10.0, flag: bool = True):
                    super().__init__()
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tunable", raising=False)
    declared = build_space(make_config(model="tunable:Declared"), set())
    assert {n: p.part for n, p in declared.params.items()} == {
        "width": "model",
        "act": "model",
        "lr": "training",
        "weight_decay": "training",
        "batch_size": "training",
        "window": "data",
    }
    assert declared.params["width"].log and declared.params["act"].choices == ("relu", "gelu")
    derived = build_space(make_config(model="tunable:Derived"), {"lr", "window"})
    assert {n: (p.low, p.high) for n, p in derived.params.items() if p.part == "model"} == {
        "width": (8, 32),
        "rate": pytest.approx((0.01, 0.55)),
        "alpha": pytest.approx((1.0, 100.0)),
    }
    assert "lr" not in derived.params and "window" not in derived.params  # given: fixed
    printed = _ok("tune", tmp_path, "--model", "tunable:Declared", "--model-option", "width=32", "--print-space")
    assert "act" in printed and "width" not in printed and "lr" in printed


def test_print_space_json_is_a_space_file_that_gives_the_same_space(toy_cache, tmp_path):
    (tmp_path / "space.json").write_text(json.dumps(TINY_SPACE))
    args = ["tune", toy_cache, "--print-space", *DATA]
    printed = _ok(*args, "--space", tmp_path / "space.json", "--json")
    assert json.loads(printed)["dropout"] is None and json.loads(printed)["heads"] == 2  # dropped, fixed
    (tmp_path / "printed.json").write_text(printed)
    assert _ok(*args, "--space", tmp_path / "printed.json") == _ok(*args, "--space", tmp_path / "space.json")


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        ({"lrr": {"low": 1e-4, "high": 1e-2}}, "lrr"),
        ({"lr": {"low": -1, "high": 1e-2}}, "lr"),
        ({"lr": {"low": 1e-2, "high": 1e-4}}, "lr"),
        ({"weight_decay": {"low": 0, "high": 1e-2, "log": True}}, "weight_decay"),
        ({"causal": {"low": 0, "high": 1}}, "causal"),
        ({"d_model": {"choices": [32, "wide"]}}, "d_model"),
        ({"window": {"low": 8, "high": 64, "step": 8}}, "window"),  # below --hop 32
        ({"batch_size": {"low": 4, "high": 16.5}}, "batch_size"),
        ({"dropout": {"min": 0.1}}, "dropout"),
        ({"epochs": 3}, "epochs"),  # also given on the command line
    ],
)
def test_space_errors_name_the_key(toy_cache, tmp_path, entries, named):
    space = tmp_path / "space.json"
    space.write_text(json.dumps(entries))
    result = _cli("tune", toy_cache, "--print-space", "--space", space, "--epochs", "2", *DATA)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert f"--space {space} {named}" in errors[0]


def test_ctrl_c_fails_the_trial_and_the_rerun_retries_it_once(toy_cache, tmp_path, monkeypatch):
    args = ["tune", toy_cache, "--study", tmp_path / "s", "--model", "ridge", "--trials", "2", *DATA]
    real = tune_mod.train

    def interrupted(*a, **k):
        monkeypatch.setattr(tune_mod, "train", real)
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_mod, "train", interrupted)
    assert _cli(*args).exit_code != 0
    _ok(*args)
    trials = {t.number: t for t in _journal(tmp_path / "s").trials}
    assert trials[0].state == optuna.trial.TrialState.FAIL and trials[0].user_attrs["interrupted"]
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].params == trials[0].params
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials.values()) == 2


def test_timeout_stops_a_running_trial_and_the_rerun_resumes_it(toy_cache, tmp_path, monkeypatch):
    """--timeout during a trial: it stops as its epoch ends (failed, its run resumable); the same command retries it,
    continuing that run from its last.pt, and ends with the P of the same configuration trained straight."""
    study = tmp_path / "s"
    model = ["--model-option", "d_model=8", "--model-option", "heads=2", "--model-option", "head_hidden=8"]
    args = ["tune", toy_cache, "--study", study, "--trials", "1", "--epochs", "3", "--pruner", "none", *model, *DATA]
    deadline = iter([False, False, True])  # before trial 0, after its epoch 1: not yet; after its epoch 2: passed
    monkeypatch.setattr(tune_mod, "_past", lambda when: next(deadline, True))
    out = _ok(*args, "--timeout", "1000")
    assert "trial 0: stopped by --timeout after epoch 2" in out
    paused = study / "trials" / "0000"
    assert (paused / "last.pt").is_file() and not (paused / "summary.json").exists()
    row = json.loads((study / "tune.json").read_text())["trials"][0]
    assert row["state"] == "fail" and row["timeout"] and row["error"] is None
    monkeypatch.undo()
    out = _ok(*args, "--timeout", "1000")
    trials = {t.number: t for t in _journal(study).trials}
    retry = trials[1]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == trials[0].params
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["resumed_from"] == 0
    assert sorted(retry.intermediate_values) == [1, 2, 3]  # the paused epochs reported too: the pruner sees them
    rows = untimed_metrics(study / "trials" / "0001")
    assert len(rows) == 3 and rows[:2] == untimed_metrics(paused)
    assert not (paused / "summary.json").exists()  # the paused trial's folder stays as it was
    straight = train_mod.train(toy_cache, tmp_path / "straight", FusionConfig.load(paused), progress=False)
    assert retry.value == pytest.approx(straight.best["p"], abs=1e-6)


def test_importances_are_ped_anova_and_import_no_scikit_learn(tmp_path):
    """tune.json's importances: Optuna's PED-ANOVA, computed without importing scikit-learn (2-3 s of a short tune
    command otherwise; a process of its own, where nothing imported it before); optuna.importance is whole after."""
    code = textwrap.dedent(
        """
        import sys
        import optuna
        from vafusion.fusion.experiments import study as st
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.01 * t.suggest_float("y", 0, 1), n_trials=12)
        ours = st.param_importances(study)
        assert "sklearn" not in sys.modules, "scikit-learn was imported"
        import optuna.importance as imp
        assert ours == imp.get_param_importances(study, evaluator=imp.PedAnovaImportanceEvaluator()), ours
        assert list(ours) == ["x", "y"] and ours["x"] > 0.5
        imp.FanovaImportanceEvaluator()  # needs scikit-learn: importable again
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_folds_and_the_seed_reach_every_trial(toy_cache, tmp_path):
    """--folds K --fold F: every trial trains and validates that fold; the same --seed draws the same trials."""

    def tune(name: str) -> list:
        args = ["--model", "ridge", "--trials", "3", "--folds", "3", "--fold", "2", "--seed", "5", *DATA]
        _ok("tune", toy_cache, "--study", tmp_path / name, *args)
        return sorted(_journal(tmp_path / name).trials, key=lambda t: t.number)

    first, again = tune("a"), tune("b")
    assert [t.params for t in first] == [t.params for t in again] and len({str(t.params) for t in first}) == 3
    for t in first:
        data = FusionConfig.load(Path(t.user_attrs["run"])).data
        assert (data.split, data.folds, data.fold) == ("folds", 3, 2)


def _distinct_complete(trials: list, n: int) -> None:
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n and len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["run"] for t in complete}) == n
    assert all((Path(t.user_attrs["run"]) / "summary.json").is_file() for t in complete)


def test_two_processes_share_one_journal(toy_cache, tmp_path):
    args = ["tune", toy_cache, "--study", tmp_path / "shared", "--model", "ridge", "--trials", "6", *DATA]
    runs = run_children_at_once([args, args], [tmp_path / "a.log", tmp_path / "b.log"])
    assert all(r.exit_code == 0 for r in runs), [r.output for r in runs]
    _distinct_complete(_journal(tmp_path / "shared").trials, 6)


def test_two_processes_share_one_sqlite_database(toy_cache, tmp_path):
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    args = ["tune", toy_cache, "--study", tmp_path / "sq", "--storage", url, "--model", "ridge", "--trials", "6", *DATA]
    runs = run_children_at_once([args, args], [tmp_path / "a.log", tmp_path / "b.log"])
    assert all(r.exit_code == 0 for r in runs), [r.output for r in runs]
    _distinct_complete(optuna.load_study(study_name="sq", storage=url).trials, 6)


def test_a_jobs_worker_runs_the_tuning_it_is_sent(toy_cache, tmp_path):
    """What a --jobs worker process does, here in-process: the tuning travels as plain data, the device is its own."""
    base = make_config(model="ridge", features=("visual", "audio"), window=48, hop=32)
    tuning = tune_mod.Tuning(toy_cache, tmp_path / "w", base, build_space(base, {"window", "hop"}), trials=2)
    spec = json.loads(json.dumps(tuning.to_dict()))
    assert tune_mod.Tuning.from_dict(spec) == tuning
    tune_mod.open_study(tuning, create=True)
    assert tune_mod._tune_task(spec, "cpu", lambda m: None) == 2
    _distinct_complete(_journal(tmp_path / "w").trials, 2)
    assert FusionConfig.load(tmp_path / "w" / "trials" / "0000").training.device == "cpu"


def test_bad_storage_and_missing_study_are_one_line(toy_cache, tmp_path):
    result = _cli("tune", toy_cache, "--study", tmp_path / "s", "--storage", "redis://x", *DATA)
    assert result.exit_code == 1 and "--storage redis://x" in result.output
    result = _cli("tune", toy_cache, "--study", tmp_path / "f", *DATA, "--features", "visual,resnet50")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "--features visual,resnet50" in result.output and "available: audio, visual" in result.output
    assert not (tmp_path / "f" / "study.journal").exists()  # no study holds the folder: fix --features, rerun
    with pytest.raises(VafusionError, match="--params"):
        tune_mod.read_params(tmp_path / "missing.json")
