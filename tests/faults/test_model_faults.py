"""Stage-2 faults of issue 20: model plug-ins that break the contract, prints that would corrupt --json,
two processes training one run directory, a feature file changed under a streamed training.

Through the command line: one ``error:`` line naming the model (or the run directory, or the file) and
the rule, a non-zero exit (never the plug-in's own exit code), the other runs intact, nothing trained twice.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.faults.conftest import invoke, one_line_error, run_in_child
from vafusion.cache.lock import WriteLock
from vafusion.fusion.runs.run_dir import LOCK

M = "tests.faults.misbehaving_models"
FAST = ["--features", "visual,audio", "--window", "32", "--hop", "16", "--batch-size", "4", "--device", "cpu"]
TRAIN = [*FAST, "--epochs", "1", "--no-report"]

BROKEN = {  # model -> what its one error line says
    "RaisesInInit": "building it raised RuntimeError: needs a GPU",
    "ExitsInInit": "building it called sys.exit(0) (a plug-in must raise an exception, not end the process)",
    "TypeErrorInForward": "its forward raised TypeError: forward() takes 2 positional arguments",
    "ExitsInForward": "its forward called sys.exit(3)",
    "Wide": "forward returned torch.float32 of shape (4, 32, 3) for a batch of 4 windows of 32 frames",
    "Flat": "forward returned torch.float32 of shape (4, 32) for a batch",
    "TimeFirst": "forward returned torch.float32 of shape (32, 4, 2) for a batch",
    "WrongWhenScoring": "3) for a batch of",  # in eval mode only: the check where vafusion predicts
    "NoGrad": "forward returned an output that does not depend on its parameters (no grad)",
    "NoParameters": "has no trainable parameters",
    "TextInState": "state_dict() entry 'note' is a str; a checkpoint holds tensors and arrays of numbers only",
    "ClosedTooFew": "predict returned 1 prediction(s) for 2 videos",
    "ClosedShort": "predict returned float32 of shape (124, 2) for video 1 of 2 (125 frames)",
}


@pytest.mark.parametrize("model", sorted(BROKEN))
def test_a_model_that_breaks_the_contract_is_one_line_naming_it(toy_cache, tmp_path, model):
    """Each was a traceback from inside torch or the scorer; the sys.exit ones ended train with exit 0 or 3."""
    result = invoke("train", toy_cache, "--run", tmp_path / "run", "--model", f"{M}:{model}", *TRAIN)
    line = one_line_error(result, f"model '{M}:{model}'")
    assert BROKEN[model] in line, line
    assert not (tmp_path / "run" / "summary.json").exists() and not (tmp_path / "run" / "best.pt").exists()


def test_a_closed_form_model_predicting_nan_fails_like_a_diverged_training(toy_cache, tmp_path):
    """It 'finished' with P nan, exit 0, and a best.pt that predict would use."""
    result = invoke("train", toy_cache, "--run", tmp_path / "run", "--model", f"{M}:ClosedNaN", *TRAIN)
    line = one_line_error(result, str(tmp_path / "run"), "no epoch gave a finite validation score")
    assert f"model '{M}:ClosedNaN' predicted non-finite values" in line and "fix its fit or predict" in line
    assert not (tmp_path / "run" / "best.pt").exists() and not (tmp_path / "run" / "summary.json").exists()


def test_compare_with_a_model_that_exits_ends_with_one_line_and_keeps_the_other_runs(toy_cache, tmp_path):
    """compare ended with the plug-in's exit code 3, no message and no compare.json."""
    runs = tmp_path / "runs"
    result = invoke(
        "compare", toy_cache, "--runs", runs, "--models", f"ridge,{M}:ExitsInForward", *FAST, "--epochs", "1"
    )
    one_line_error(result, f"model '{M}:ExitsInForward'", "its forward called sys.exit(3)")
    assert [p.parent.name for p in runs.rglob("summary.json")] == ["seed-0"]  # ridge's run, finished and kept
    assert "ridge" in str(next(runs.rglob("summary.json")))


def test_plugin_prints_never_reach_the_json_on_stdout(toy_cache, tmp_path):
    """A model printing while built and on every forward put its lines into compare --json's stdout."""
    runs = tmp_path / "runs"
    result = invoke("compare", toy_cache, "--runs", runs, "--models", f"{M}:Chatty", *FAST, "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]  # stdout is the JSON alone
    assert "Chatty: forward" in result.stderr
    (run,) = [p.parent for p in runs.rglob("summary.json")]
    scores = invoke("evaluate", run, "--device", "cpu", "--json")
    assert scores.exit_code == 0 and json.loads(scores.stdout)["p"] == pytest.approx(json.loads(scores.stdout)["p"])
    assert "Chatty: building" in scores.stderr


def test_tune_json_keeps_a_models_prints_off_stdout(toy_cache, tmp_path):
    """tune --json (added after the other --json commands were mended) printed a model's lines into stdout."""
    args = ["tune", toy_cache, "--study", tmp_path / "study", "--trials", "1", "--model", f"{M}:Chatty", *FAST]
    result = invoke(*args, "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["complete"] == 1  # stdout is the JSON alone
    assert "Chatty: forward" in result.stderr


def test_a_run_directory_trained_by_another_process_is_refused(toy_cache, tmp_path):
    """Two identical compare (or cv, or train --resume) commands trained one run at once: every epoch twice in
    metrics.jsonl. The second now stops at once, naming the directory, before it writes anything there."""
    runs = tmp_path / "runs"
    compare = ["compare", toy_cache, "--runs", runs, "--models", "ridge", *FAST]
    assert invoke(*compare).exit_code == 0
    (run,) = [p.parent for p in runs.rglob("summary.json")]
    for name in ("summary.json", "best.pt", "metrics.jsonl"):  # as if its training had not finished yet
        (run / name).unlink()
    held = WriteLock(run, run / LOCK)  # another process's lock (flock: another open file description)
    held.acquire()
    try:
        one_line_error(invoke(*compare), str(run), "is being trained by another process", "wait for it to finish")
        assert not (run / "metrics.jsonl").exists()
        train = ["train", toy_cache, "--run", run, "--model", "ridge", *FAST, "--resume", "--no-report"]
        one_line_error(invoke(*train), str(run), "is being trained by another process")
    finally:
        held.release()
    assert invoke(*compare).exit_code == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0]
    assert not (run / LOCK).exists()  # released when its training ended


def test_a_training_refused_at_once_leaves_no_run_directory(tmp_path):
    """The run directory is made to hold its lock before the cache is read: a folder that is not a cache
    must not leave an empty run directory behind."""
    (tmp_path / "not-a-cache").mkdir()
    result = invoke("train", tmp_path / "not-a-cache", "--run", tmp_path / "run", "--model", "ridge", *TRAIN)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["rewrite", "truncate"])
def test_a_feature_file_changed_under_a_streamed_training_stops_it(toy_cache, copy_cache, tmp_path, monkeypatch, how):
    """Rewritten in place, the training went on silently on other numbers (exit 0); truncated, it died of
    SIGBUS with no message. Now it stops with one line naming the file, and resumes once the file is back.
    In a forked child: a SIGBUS there would not take pytest down."""
    cache = copy_cache(toy_cache)
    original = tmp_path / "visual.h5.orig"
    shutil.copy2(cache / "visual.h5", original)
    monkeypatch.setenv("CHANGE_CACHE", f"{how}:{cache / 'visual.h5'}")
    run = tmp_path / "run"
    args = ["train", cache, "--run", run, "--model", f"{M}:ChangesTheCache", *FAST, "--epochs", "3", "--stream"]
    args += ["--threads", "1"]  # a forked child on more threads can wait for ever on the OpenMP pool the fork left
    child = run_in_child([*args, "--no-report"], tmp_path / "log")
    assert child.exit_code == 1, child.output
    errors = [line for line in child.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in child.output, child.output
    assert f"{cache / 'visual.h5'}: changed while it was being read" in errors[0]
    assert ("truncated" if how == "truncate" else "rewritten in place") in errors[0]
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1]  # epoch 2 stopped before it was scored or saved
    shutil.copy2(original, cache / "visual.h5")
    monkeypatch.delenv("CHANGE_CACHE")
    resumed = invoke(*args, "--no-report", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming after epoch 1" in resumed.output
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
