"""vafusion tune killed (SIGKILL) in the middle of a trial: the same command afterwards marks that trial
failed, tries its configuration once more (continuing the killed run from its last.pt), and ends with the
trials asked for, numbered without duplicates."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from tests.conftest import untimed_metrics
from tests.faults.conftest import run_in_child

TINY = ["--model-option", "d_model=8", "--model-option", "heads=2", "--model-option", "head_hidden=8"]
TINY += ["--model-option", "tcn_dilations=1,2", "--model-option", "tcn_kernel=3", "--model-option", "dropout=0.1"]
TINY += ["--features", "visual,audio", "--window", "48", "--hop", "32", "--batch-size", "8", "--weight-decay", "0"]
TINY += ["--epochs", "2", "--device", "cpu", "--threads", "1"]


def test_tune_killed_inside_a_trial_retries_it_and_finishes(toy_cache, tmp_path):
    study = tmp_path / "study"
    command = ["tune", toy_cache, "--study", study, "--trials", "3", "--pruner", "none", *TINY]
    # writes of trial 0: config.json, best.pt and last.pt of epoch 1, then best.pt or last.pt of epoch 2: killed
    # just before that fourth write, in epoch 2's checkpoints
    killed = run_in_child(command, tmp_path / "killed.log", kill_at=4)
    assert killed.killed, killed.output
    again = run_in_child(command, tmp_path / "again.log")
    assert again.exit_code == 0 and "Traceback" not in again.output, again.output
    assert "trial 0: its process was killed" in again.output
    storage = JournalStorage(JournalFileBackend(str(study / "study.journal")))
    trials = optuna.load_study(study_name="study", storage=storage).trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    states = {t.number: t.state for t in trials}
    assert states[0] == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retries) == 1 and retries[0].params == trials[0].params
    assert retries[0].state == optuna.trial.TrialState.COMPLETE
    # the retry continued the killed run from its last.pt (epoch 1) in its own folder, reporting both epochs
    assert retries[0].user_attrs["resumed_from"] == 0 and sorted(retries[0].intermediate_values) == [1, 2]
    killed_rows = untimed_metrics(study / "trials" / "0000")
    assert untimed_metrics(Path(retries[0].user_attrs["run"]))[:1] == killed_rows[:1]
    assert sum(s == optuna.trial.TrialState.COMPLETE for s in states.values()) == 3
    result = json.loads((study / "tune.json").read_text())
    assert result["counts"] == {"complete": 3, "pruned": 0, "fail": 1, "running": 0, "waiting": 0}
    assert Path(result["best"]["run"]).is_dir()
