"""Faults of stage 2 outside the cache: diverging trainings, interrupted runs, outputs that cannot be
written (a path below a regular file, a full disk), met through the CLI.

Each case asserts a one-line error naming the file or option, exit code 1, no traceback, nothing
finished lost, and a rerun of the same command (``train --resume``) that finishes the job.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import untimed_metrics
from tests.faults.conftest import invoke, one_line_error, small_disk
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.checkpoint import read_metrics

FEATURES = ["--features", "visual,audio"]
TINY_IMF = [
    "--model",
    "imf",
    "--model-option",
    "d_model=8",
    "--model-option",
    "heads=2",
    "--model-option",
    "tcn_dilations=1,2",
    "--model-option",
    "head_hidden=8",
    "--window",
    "48",
    "--hop",
    "32",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--no-report",
]


def _train(cache, run, *extra):
    return invoke("train", cache, "--run", run, *FEATURES, *TINY_IMF, *extra)


def test_a_diverging_training_ends_with_a_clear_message(toy_cache, tmp_path):
    run = tmp_path / "run"
    error = one_line_error(
        _train(toy_cache, run, "--lr", "1000", "--epochs", "3"),
        str(run),
        "no epoch gave a finite validation score",
        "--lr (now 1000)",
    )
    assert "diverged" in error
    assert not (run / ckpt_mod.BEST).exists() and not (run / ckpt_mod.SUMMARY).exists()
    rows = read_metrics(run)
    assert rows and len(rows) < 3  # stopped at the first NaN loss: no epochs wasted on NaN weights
    one_line_error(_train(toy_cache, run, "--lr", "1000", "--epochs", "3", "--resume"), "no epoch gave a finite")


def test_resume_of_an_early_stopped_run_trains_no_more_epochs(toy_cache, tmp_path):
    run = tmp_path / "run"
    settings = ["--epochs", "12", "--patience", "1", "--lr", "0.03", "--stride", "1"]  # these stop early at stride 1
    assert _train(toy_cache, run, *settings).exit_code == 0
    rows = read_metrics(run)
    assert len(rows) < 12, "did not stop early; pick settings that do"
    summary = json.loads((run / ckpt_mod.SUMMARY).read_text())
    (run / ckpt_mod.SUMMARY).unlink()  # as if killed while writing the report
    resumed = _train(toy_cache, run, *settings, "--resume")
    assert resumed.exit_code == 0 and "no more epochs" in resumed.output
    assert read_metrics(run) == rows and json.loads((run / ckpt_mod.SUMMARY).read_text()) == summary
    again = _train(toy_cache, run, *settings, "--resume")  # finished: nothing to do, the same result
    assert again.exit_code == 0 and "finished before" in again.output and read_metrics(run) == rows
    one_line_error(_train(toy_cache, run, *settings), str(run), "already holds a finished run")


def test_a_run_killed_while_writing_its_first_last_pt_is_finished_by_resume(toy_cache, tmp_path):
    run, clean = tmp_path / "run", tmp_path / "clean"
    assert _train(toy_cache, clean, "--epochs", "2").exit_code == 0
    shutil.copytree(clean, run)
    for name in (ckpt_mod.LAST, ckpt_mod.SUMMARY):  # best.pt of epoch 1 written, last.pt not yet
        (run / name).unlink()
    (run / ".last.pt.tmp-999999").write_bytes(b"half a checkpoint")
    one_line_error(_train(toy_cache, run, "--epochs", "2"), str(run), "did not finish; add --resume")
    one_line_error(
        _train(toy_cache, run, "--epochs", "3", "--resume"), "other settings (training.epochs 2 in the run, 3 now)"
    )
    assert _train(toy_cache, run, "--epochs", "2", "--resume").exit_code == 0
    assert untimed_metrics(run) == untimed_metrics(clean)
    assert not list(run.glob(".*.tmp-*"))  # the killed writer's temporary file was removed


@pytest.mark.parametrize("command", ["train", "cv", "compare", "report", "predict", "predict --sample"])
def test_an_output_below_a_regular_file_is_one_line(command, toy_cache, toy_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    out = blocker / "out"
    args = {
        "train": ["train", toy_cache, "--run", out, "--model", "ridge", *FEATURES, "--no-report"],
        "cv": ["cv", toy_cache, "--runs", out, "--model", "ridge", *FEATURES, "--folds", "2", "--no-report"],
        "compare": ["compare", toy_cache, "--runs", out, "--models", "ridge", "--features", "visual"],
        "predict": ["predict", toy_run, "--cache", toy_cache, "--out", out, "--ids", "all"],
        "predict --sample": ["predict", toy_run, "--cache", toy_cache, "--out", out / "s.txt", "--sample", "SAMPLE"],
    }.get(command)
    if command == "report":
        run = shutil.copytree(toy_run, tmp_path / "run")
        (run / "figures").write_text("a file where the figures folder goes")
        one_line_error(invoke("report", run, "--device", "cpu"), str(run / "figures"), "is a file")
        return
    if command == "predict --sample":
        sample = tmp_path / "sample.txt"
        sample.write_text("image_location,valence,arousal\nvid05/00001.jpg\n")
        args[args.index("SAMPLE")] = sample
    one_line_error(invoke(*args, "--device", "cpu"), str(blocker), "is a file")
    assert blocker.read_text() == "in the way"


def test_disk_full_during_train_is_one_line_and_resume_finishes(toy_cache, tmp_path):
    run = tmp_path / "disk" / "run"
    with small_disk(tmp_path / "disk", disk_kib=24, file_kib=8) as grow:
        error = one_line_error(_train(toy_cache, run, "--epochs", "2"), "could not be written")
        assert str(run) in error and ("no space left" in error or "ulimit -f" in error)
        assert (run / "config.json").is_file() and not list(run.glob(".*.tmp-*"))  # no half-written file left
        grow()
        assert _train(toy_cache, run, "--epochs", "2", "--resume").exit_code == 0
        assert (run / ckpt_mod.SUMMARY).is_file() and len(read_metrics(run)) == 2
