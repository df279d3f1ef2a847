"""From `cv --seeds` to the file to upload: the fold/seed layout, kept out-of-fold predictions, post.json,
cv.json and cv.html; predict averaging every seed of every fold (and refusing a run named twice), applying
post.json, and writing the single submission file that check-submission accepts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vafusion.fusion.runs.train as train_mod
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.data.folds import split_ids
from vafusion.fusion.experiments.cv import cross_validate, cv_jobs
from vafusion.fusion.post.apply import DimPost, Post, read_post, write_post
from vafusion.fusion.post.oof import OOF_FILE, read_oof
from vafusion.fusion.post.steps import smooth
from vafusion.fusion.predict.ensemble import ensemble_predict, predict_to_dir
from vafusion.fusion.runs.checkpoint import load_run
from vafusion.fusion.runs.config import make_config
from vafusion.fusion.runs.evaluate import predict_partition
from vafusion.fusion.runs.layout import find_post, find_runs

from ..conftest import tiny_options
from ..pages import check_page
from .test_submission import write_sample

CONFIG = make_config(
    features=("visual", "audio"),
    window=48,
    hop=32,
    epochs=1,
    batch_size=4,
    folds=2,
    device="cpu",
    **tiny_options("imf"),
)
UNCHANGED = {"steps": [{"step": "smooth", "method": "mean", "window_s": 0.0}, {"step": "shift", "shift_s": 0.0}]}
RUNS = [("fold-1", "seed-0"), ("fold-1", "seed-1"), ("fold-2", "seed-0"), ("fold-2", "seed-1")]


@pytest.fixture(scope="module")
def cv_runs(toy_cache, tmp_path_factory) -> tuple[Path, dict]:
    """Two folds x two seeds of a tiny imf on the toy cache: (RUNS, cv.json's content)."""
    runs = tmp_path_factory.mktemp("cv") / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the function-scoped one_thread fixture does, which a module fixture precedes
    try:
        return runs, cross_validate(toy_cache, runs, CONFIG, seeds=2, progress=False, report=False)
    finally:
        torch.set_num_threads(threads)


def test_cv_seeds_layout_oof_predictions_and_summary(cv_runs, toy_cache):
    runs, summary = cv_runs
    index = read_corpus_index(toy_cache)
    validated = []
    for fold, seed in RUNS:
        run = runs / fold / seed
        with np.load(run / OOF_FILE, allow_pickle=False) as z:  # plain arrays, no pickle
            assert set(z.files) == {"ids", "fps", "lengths", "predictions", "labels", "checkpoint_sha256"}
        kept = read_oof(run)
        trained = load_run(run)
        assert trained.config.training.seed == int(seed[-1]) and trained.config.data.fold == int(fold[-1])
        assert kept.ids == split_ids(index, trained.config.data)[1]
        if seed == "seed-0":
            validated += kept.ids
        again = predict_partition(trained, toy_cache, device="cpu")
        for vid, pred in zip(kept.ids, kept.predictions):
            np.testing.assert_array_equal(pred, again.predictions[vid])
    labelled = {e.id for e in index if e.partition != "test"}
    assert sorted(validated) == sorted(labelled)  # every labelled id out of fold exactly once, no test id

    assert summary == json.loads((runs / "cv.json").read_text())
    assert summary["seeds"] == [0, 1]
    assert [(r["fold"], r["seed"]) for r in summary["runs"]] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for row in summary["folds"]:
        mine = [r for r in summary["runs"] if r["fold"] == row["fold"]]
        assert row["seeds"] == 2 and row["p"] == pytest.approx(np.mean([r["p"] for r in mine]))
    assert summary["p"]["mean"] == pytest.approx(np.mean([r["p"] for r in summary["folds"]]))
    post = json.loads((runs / "post.json").read_text())
    assert post["format"] == "vafusion-post" and {k: post[k] for k in summary["post"]} == summary["post"]
    for name in ("valence", "arousal"):
        fit = post["fit"][name]
        assert [f["fold"] for f in fit["per_fold"]] == [1, 2]
        assert post[name] == (fit["best"] if fit["applied"] else UNCHANGED)
    page = check_page(runs / "cv.html", "cv.html")
    text = " ".join(page.text)
    assert "Post-processing" in text and "nested gain" in text and "figures/post_shift.png" in page.images


def test_cv_rerun_trains_nothing_and_predicts_a_changed_run_again(cv_runs, toy_cache, tmp_path, monkeypatch):
    runs = Path(shutil.copytree(cv_runs[0], tmp_path / "runs"))
    for fit in ("_train_by_gradient", "_fit_closed_form"):
        monkeypatch.setattr(train_mod, fit, lambda *a, **k: pytest.fail("a finished run was trained again"))
    kept = {(f, s): (runs / f / s / OOF_FILE).stat().st_mtime_ns for f, s in RUNS}
    # fold-2/seed-1's checkpoint replaced (as if retrained): its kept predictions are stale
    shutil.copy(runs / "fold-2" / "seed-0" / "best.pt", runs / "fold-2" / "seed-1" / "best.pt")
    assert read_oof(runs / "fold-2" / "seed-1") is None
    again = cross_validate(toy_cache, runs, CONFIG, seeds=2, progress=False, report=False)
    assert (runs / "fold-1" / "seed-0" / OOF_FILE).stat().st_mtime_ns == kept[("fold-1", "seed-0")]
    refreshed = read_oof(runs / "fold-2" / "seed-1")
    for a, b in zip(refreshed.predictions, read_oof(runs / "fold-2" / "seed-0").predictions):
        np.testing.assert_array_equal(a, b)
    drop_dir = lambda rows: [{k: v for k, v in r.items() if k != "run"} for r in rows]  # noqa: E731
    assert drop_dir(again["runs"]) == drop_dir(cv_runs[1]["runs"])  # scores read back from summary.json


def test_cv_in_two_worker_processes_equals_the_sequential_run(cv_runs, toy_cache, tmp_path):
    seq_runs, sequential = cv_runs
    parallel = cross_validate(toy_cache, tmp_path / "runs", CONFIG, seeds=2, progress=False, report=False, workers=2)
    key = lambda rows: [(r["fold"], r["seed"], r["epoch"]) for r in rows]  # noqa: E731
    assert key(parallel["runs"]) == key(sequential["runs"])  # same rows, same order
    for a, b in zip(parallel["runs"] + parallel["folds"], sequential["runs"] + sequential["folds"]):
        assert [a[m] for m in ("ccc_v", "ccc_a", "p")] == pytest.approx(
            [b[m] for m in ("ccc_v", "ccc_a", "p")], abs=1e-5
        )
    assert parallel["out_of_fold"] == pytest.approx(sequential["out_of_fold"], abs=1e-5)
    for fold, seed in RUNS:
        mine, theirs = read_oof(tmp_path / "runs" / fold / seed), read_oof(seq_runs / fold / seed)
        assert mine.ids == theirs.ids
        for a, b in zip(mine.predictions, theirs.predictions):
            np.testing.assert_allclose(a, b, atol=1e-4)  # up to floating-point reduction order


def test_cv_refuses_runs_it_would_not_include(tmp_path, toy_cache):
    (tmp_path / "one" / "fold-1").mkdir(parents=True)
    CONFIG.save(tmp_path / "one" / "fold-1")  # a one-seed cv's run
    with pytest.raises(VafusionError, match="fold-1: holds a one-seed run; rerun without --seeds"):
        cv_jobs(toy_cache, tmp_path / "one", CONFIG, seeds=2)
    (tmp_path / "many" / "fold-2" / "seed-3").mkdir(parents=True)
    with pytest.raises(VafusionError, match="fold-2: holds seed-3, not among this cross-validation's seeds"):
        cv_jobs(toy_cache, tmp_path / "many", CONFIG, seeds=2)
    with pytest.raises(VafusionError, match="seed-3, not among"):
        cv_jobs(toy_cache, tmp_path / "many", CONFIG, seeds=1)
    jobs = cv_jobs(toy_cache, tmp_path / "fresh", CONFIG, seeds=1)
    assert [j.run_dir.name for j in jobs] == ["fold-1", "fold-2"]  # one seed: the layout of earlier versions
    (tmp_path / "odd" / "fold-1").mkdir(parents=True)
    (tmp_path / "odd" / "fold-1" / "best.pt").write_bytes(b"")  # checkpoints without a config: cannot continue
    with pytest.raises(VafusionError, match=r"fold-1: holds checkpoints but no config.json") as e:
        cross_validate(toy_cache, tmp_path / "odd", CONFIG, progress=False, report=False)
    assert "--resume" not in str(e.value)  # cv has no --resume to offer


def test_predict_averages_every_seed_of_every_fold(cv_runs, toy_cache):
    runs = cv_runs[0]
    index = read_corpus_index(toy_cache)
    ids = index.ids
    singles = [ensemble_predict([runs / f / s], toy_cache, ids, index, "cpu") for f, s in RUNS]
    ensemble = ensemble_predict(find_runs([runs / "fold-1", runs / "fold-2"]), toy_cache, ids, index, "cpu")
    for vid in ids:
        np.testing.assert_allclose(ensemble[vid], np.mean([s[vid] for s in singles], axis=0), atol=1e-6)
    expected = [runs / f / s for f, s in RUNS]
    assert find_runs([runs]) == expected == find_runs([runs / f / s for f, s in RUNS])
    assert find_post(expected) == find_post([runs / "fold-2" / "seed-1"]) == runs / "post.json"


def test_a_run_named_twice_is_an_error(cv_runs, tmp_path):
    runs = cv_runs[0]
    with pytest.raises(VafusionError, match=r"seed-0: named twice \(through .*runs and .*fold-1\)"):
        find_runs([runs, runs / "fold-1"])
    with pytest.raises(VafusionError, match="given twice"):
        find_runs([runs / "fold-1", runs / "fold-1"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(VafusionError, match="neither a run"):
        find_runs([tmp_path / "empty"])


def _read_dir(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2) for p in sorted(folder.glob("*.txt"))}


def test_predict_applies_post_json_unless_told_otherwise(cv_runs, toy_cache, tmp_path):
    runs = cv_runs[0]
    index = read_corpus_index(toy_cache)
    folds = [runs / "fold-1", runs / "fold-2"]
    raw = _read_dir(Path(*predict_to_dir(folds, toy_cache, tmp_path / "raw", ids="all", post="none")[0].parts[:-1]))
    mine = Post(DimPost.smooth_then_shift("median", 0.2, 0.1), DimPost.smooth_then_shift("mean", 0.4, -0.2))
    write_post(tmp_path / "mine.json", mine, {})
    cases = {
        "auto": (dict(post="auto"), read_post(runs / "post.json").apply),
        "file": (dict(post=str(tmp_path / "mine.json")), mine.apply),
        "smooth": (dict(smooth=5), lambda p, fps: smooth(p, 5, "mean")),
    }
    for name, (kwargs, step) in cases.items():
        got = _read_dir(predict_to_dir(folds, toy_cache, tmp_path / name, ids="all", **kwargs)[0].parent)
        for vid, values in got.items():
            np.testing.assert_allclose(
                values,
                np.clip(step(raw[vid].astype(np.float32), index[vid].fps), -1, 1),
                atol=2e-6,
                err_msg=f"{name} {vid}",
            )
    assert not np.allclose(_read_dir(tmp_path / "file")["vid01"], raw["vid01"])
    with pytest.raises(VafusionError, match="give one of them"):
        predict_to_dir(folds, toy_cache, tmp_path / "x", smooth=3, post=str(tmp_path / "mine.json"))


def _invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_predict_writes_the_submission_file_that_check_submission_accepts(cv_runs, toy_cache, tmp_path):
    runs = cv_runs[0]
    index = read_corpus_index(toy_cache)
    # the sample's order is not alphabetical; counts differ by +3 and -3; the _left/_right pair included
    counts = {
        e.id: e.n_frames + (3 if e.id.endswith("_left") else -3 if e.id == "vid03" else 0)
        for e in sorted(index, key=lambda e: e.id, reverse=True)
    }
    sample = write_sample(tmp_path / "VA_test_set_sample.txt", counts)
    out = tmp_path / "upload" / "predictions.txt"
    result = _invoke(
        "predict",
        runs / "fold-1",
        runs / "fold-2",
        "--cache",
        toy_cache,
        "--sample",
        sample,
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "2 video(s) whose sample row count differs" in result.stderr
    assert "vid03: sample" in result.stderr and "vid00_left: sample" in result.stderr
    assert "post-processing from" in result.stderr and f"check-submission {out}" in result.stdout
    check = _invoke("check-submission", out, "--sample", sample)
    assert check.exit_code == 0, check.output
    lines = out.read_text().splitlines()
    assert lines[1].startswith("vid07/00001.jpg,") and len(lines) == 1 + sum(counts.values())
    per_video = _read_dir(Path(*predict_to_dir([runs], toy_cache, tmp_path / "dir", ids="all")[0].parts[:-1]))
    left = [line.split(",") for line in lines if line.startswith("vid00_left/")]
    values = np.array([[float(v), float(a)] for _, v, a in left])
    expected = per_video["vid00_left"]
    np.testing.assert_allclose(values, np.concatenate([expected, expected[-1:].repeat(3, axis=0)]), atol=2e-6)


def test_a_sample_naming_a_video_the_cache_lacks_leaves_no_file(cv_runs, toy_cache, tmp_path):
    runs = cv_runs[0]
    sample = write_sample(tmp_path / "sample.txt", {"vid01": 4, "ghost_left": 3})
    out = tmp_path / "out" / "predictions.txt"
    result = _invoke("predict", runs, "--cache", toy_cache, "--sample", sample, "--out", out, "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[-1] == (
        f"error: {sample} line 6: video ghost_left is not in the cache "
        f"{toy_cache}; extract it into the cache (e.g. with --test-list), or "
        f"give the cache that has it"
    )
    assert not out.parent.exists()
    result = _invoke("predict", runs, "--cache", toy_cache, "--sample", sample, "--out", out, "--ids", "all")
    assert result.exit_code == 1 and "--ids all and --sample" in result.output
    result = _invoke("predict", runs, runs / "fold-1", "--cache", toy_cache, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "named twice" in result.output and not (tmp_path / "o").exists()
    result = _invoke("predict", runs, "--cache", toy_cache, "--sample", sample, "--out", tmp_path)
    assert result.exit_code == 1 and "a directory; with --sample give the path" in result.output
    result = _invoke("predict", runs, "--cache", toy_cache, "--out", sample)
    assert result.exit_code == 1 and "a file; give a directory" in result.output
