"""Training, checkpoints, resume, evaluation, prediction files and bad input, on a toy cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import untimed_metrics
from tests.toy_cache import write_toy_cache
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.data.folds import split_ids
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.experiments.cv import cross_validate
from vafusion.fusion.post.steps import smooth
from vafusion.fusion.predict.ensemble import predict_to_dir
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.config import FusionConfig, make_config
from vafusion.fusion.runs.evaluate import evaluate_run
from vafusion.fusion.runs.train import PauseTraining, train

FAST = dict(
    features=("visual", "audio"),
    window=48,
    hop=32,
    epochs=4,
    batch_size=4,
    d_model=16,
    heads=2,
    head_hidden=16,
    tcn_dilations=(1, 2),
    patience=10,
)


@pytest.fixture(scope="module")
def cache(toy_cache) -> Path:
    return toy_cache


def test_training_learns_and_writes_a_run(cache, tmp_path):
    result = train(cache, tmp_path / "run", make_config(**dict(FAST, epochs=8, lr=3e-3)), progress=False)
    assert result.best["p"] > 0.5  # the toy cache is easy: a broken loop cannot get here
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "best.pt", "last.pt", "metrics.jsonl", "summary.json"} <= names
    rows = untimed_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert max(r["p"] for r in rows) == pytest.approx(result.best["p"])
    # evaluate recomputes the best epoch's validation score from the checkpoint alone
    scores = evaluate_run(tmp_path / "run")
    assert scores["p"] == pytest.approx(result.best["p"], abs=1e-6)
    assert {r["id"] for r in scores["per_id"]} == {
        e.id for e in read_corpus_index(cache) if e.partition == "validation"
    }


def test_checkpoint_is_plain_data(cache, tmp_path):
    train(cache, tmp_path / "run", make_config(**dict(FAST, epochs=1)), progress=False)
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(tmp_path / "run" / name, weights_only=True)  # no pickle allowed
        assert ckpt["format"] == "vafusion-run"
        assert FusionConfig.from_dict(json.loads(ckpt["config"])).data.features == ("visual", "audio")
        assert set(ckpt["standardizer"]) == {"visual.mean", "visual.std", "audio.mean", "audio.std"}


def test_same_seed_same_metrics_and_other_seed_differs(cache, tmp_path):
    cfg = make_config(**dict(FAST, epochs=2))
    train(cache, tmp_path / "a", cfg, progress=False)
    train(cache, tmp_path / "b", cfg, progress=False)
    train(cache, tmp_path / "c", make_config(**dict(FAST, epochs=2, seed=1)), progress=False)
    assert untimed_metrics(tmp_path / "a") == untimed_metrics(tmp_path / "b")
    assert untimed_metrics(tmp_path / "a") != untimed_metrics(tmp_path / "c")


def test_resume_continues_exactly(cache, tmp_path, kill_after_last_save):
    cfg = make_config(**dict(FAST, epochs=4))
    train(cache, tmp_path / "straight", cfg, progress=False)
    kill_after_last_save(2)  # as if killed after epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(cache, tmp_path / "resumed", cfg, progress=False)
    with pytest.raises(VafusionError, match="already holds a run"):
        train(cache, tmp_path / "resumed", cfg, progress=False)
    with pytest.raises(VafusionError, match="other settings"):
        train(cache, tmp_path / "resumed", make_config(**dict(FAST, epochs=5)), resume=True, progress=False)
    train(cache, tmp_path / "resumed", cfg, resume=True, progress=False)
    assert untimed_metrics(tmp_path / "resumed") == untimed_metrics(tmp_path / "straight")


def test_on_epoch_sees_every_row_and_stops_the_run(cache, tmp_path):
    seen = []

    def hook(row: dict) -> bool:
        seen.append(row)
        return row["epoch"] == 2  # a pruner's "stop here"

    cfg = make_config(**dict(FAST, epochs=4))
    result = train(cache, tmp_path / "run", cfg, progress=False, on_epoch=hook)
    assert [r["epoch"] for r in seen] == [1, 2] and seen == ckpt_mod.read_metrics(tmp_path / "run")
    assert result.epochs_run == 2 and (tmp_path / "run" / ckpt_mod.SUMMARY).is_file()
    # finished like an early stop: a resume trains no more epochs
    again = train(cache, tmp_path / "run", cfg, resume=True, progress=False)
    assert again.best == result.best and len(untimed_metrics(tmp_path / "run")) == 2


def test_a_hook_pauses_the_run_resumably_and_a_last_epoch_finishes_it(cache, tmp_path):
    """PauseTraining from on_epoch: the epoch is kept, the run is left to resume (no summary); at the run's last
    epoch the pause is moot: the run finishes and nothing is raised."""

    def pause(row: dict) -> bool:
        raise PauseTraining("deadline")

    cfg = make_config(**dict(FAST, epochs=2))
    with pytest.raises(PauseTraining):
        train(cache, tmp_path / "run", cfg, progress=False, on_epoch=pause)
    assert not (tmp_path / "run" / ckpt_mod.SUMMARY).exists()
    assert ckpt_mod.read_checkpoint(tmp_path / "run" / ckpt_mod.LAST)["stop"] == ""  # no stop of the caller's
    result = train(cache, tmp_path / "run", cfg, resume=True, progress=False, on_epoch=pause)
    straight = train(cache, tmp_path / "straight", cfg, progress=False)
    assert result.epochs_run == 2 and result.best == straight.best
    assert untimed_metrics(tmp_path / "run") == untimed_metrics(tmp_path / "straight")


def test_a_cache_read_by_the_caller_trains_the_same_and_must_match(cache, tmp_path):
    cfg = make_config(**dict(FAST, epochs=1))
    index = read_corpus_index(cache)
    train_ids, val_ids = split_ids(index, cfg.data)
    loaded = load_cache(cache, cfg.data.features, train_ids + val_ids, index=index, progress=False)
    given = train(cache, tmp_path / "given", cfg, progress=False, loaded=loaded)
    read = train(cache, tmp_path / "read", cfg, progress=False)
    assert given.best == read.best  # a tuner's trials share one read and train exactly as alone
    with pytest.raises(ValueError, match="not this run's ids and features"):
        train(cache, tmp_path / "other", make_config(**dict(FAST, features=("visual",))), loaded=loaded)


def test_ridge_baseline_run(cache, tmp_path):
    result = train(
        cache,
        tmp_path / "ridge",
        make_config(features=("visual", "audio"), model="ridge"),
        progress=False,
    )
    assert result.best["p"] > 0.5
    assert evaluate_run(tmp_path / "ridge")["p"] == pytest.approx(result.best["p"])


def test_folds_and_cv_summary(cache, tmp_path):
    summary = cross_validate(
        cache, tmp_path / "cv", make_config(**dict(FAST, epochs=1, folds=3)), progress=False, report=False
    )
    assert [r["fold"] for r in summary["folds"]] == [1, 2, 3]
    ps = np.array([r["p"] for r in summary["folds"]])
    assert summary["p"]["mean"] == pytest.approx(ps.mean()) and summary["p"]["std"] == pytest.approx(ps.std())
    assert json.loads((tmp_path / "cv" / "cv.json").read_text()) == summary


def test_predict_files_ensemble_and_smoothing(cache, tmp_path):
    for name, seed in (("r1", 0), ("r2", 1)):
        train(cache, tmp_path / name, make_config(**dict(FAST, epochs=1, seed=seed)), progress=False)
    index = read_corpus_index(cache)
    test_ids = [e.id for e in index if e.partition == "test"]
    outs = {}
    for name, runs in (("one", ["r1"]), ("two", ["r2"]), ("both", ["r1", "r2"])):
        written = predict_to_dir([tmp_path / r for r in runs], cache, tmp_path / name, ids="test")
        assert sorted(p.stem for p in written) == sorted(test_ids)
        outs[name] = {}
        for path in written:
            lines = path.read_text().splitlines()
            assert lines[0] == "valence,arousal"
            assert len(lines) - 1 == index[path.stem].n_frames
            values = np.loadtxt(path, delimiter=",", skiprows=1)
            assert values.shape == (index[path.stem].n_frames, 2) and np.abs(values).max() <= 1.0
            outs[name][path.stem] = values
    for vid in test_ids:
        np.testing.assert_allclose(outs["both"][vid], (outs["one"][vid] + outs["two"][vid]) / 2, atol=2e-6)
    written = predict_to_dir([tmp_path / "r1"], cache, tmp_path / "all", ids="all", smooth=5)
    assert len(written) == len(index)


def test_moving_average_is_centred():
    x = np.arange(6, dtype=np.float32)[:, None].repeat(2, axis=1)
    np.testing.assert_allclose(smooth(x, 3)[:, 0], [0.5, 1, 2, 3, 4, 4.5])
    np.testing.assert_array_equal(smooth(x, 1), x)


def test_bad_input_is_one_line_and_writes_nothing(cache, tmp_path):
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, [str(a) for a in args])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and result.output.startswith("error: ")
        return result.output

    assert "available: audio, visual" in run("train", cache, "--run", tmp_path / "r", "--features", "resnet50")
    assert "fold" in run(
        "train", cache, "--run", tmp_path / "r2", "--features", "visual", "--fold", "9", "--folds", "3"
    )
    assert "no such run directory" in run("evaluate", tmp_path / "nowhere")
    train(cache, tmp_path / "ok", make_config(**dict(FAST, epochs=1)), progress=False)
    out = run("predict", tmp_path / "ok", "--cache", cache, "--out", tmp_path / "pred", "--ids", tmp_path / "nofile")
    assert "nofile" in out and not (tmp_path / "pred").exists()
    some_id = read_corpus_index(cache).ids[0]
    (tmp_path / "twice.txt").write_text(f"{some_id}\n{some_id}\n")
    out = run("predict", tmp_path / "ok", "--cache", cache, "--out", tmp_path / "pred", "--ids", tmp_path / "twice.txt")
    assert "more than once" in out and some_id in out and not (tmp_path / "pred").exists()
    # a run from an incompatible version
    ckpt = torch.load(tmp_path / "ok" / "best.pt", weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, tmp_path / "ok" / "best.pt")
    assert "format_version 99" in run("evaluate", tmp_path / "ok")
    # a cache with a feature file missing
    (tmp_path / "broken").mkdir()
    for f in ("corpus.h5", "visual.h5"):
        (tmp_path / "broken" / f).write_bytes((cache / f).read_bytes())
    assert "available: visual" in run(
        "train", tmp_path / "broken", "--run", tmp_path / "r3", "--features", "visual,audio"
    )
    # labels all missing in a partition
    (tmp_path / "nolabels").mkdir()
    write_toy_cache(tmp_path / "nolabels", n_videos=3, n_test=3, pairs=0)
    assert "labels all missing" in run("train", tmp_path / "nolabels", "--run", tmp_path / "r4", "--features", "visual")
