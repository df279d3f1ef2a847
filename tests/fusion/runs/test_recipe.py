"""The training recipe: schedules, windows at random offsets, early stopping on a plateau, time in every
record, the epoch hook, precision ``auto``, and the v1 recipe of earlier runs."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vafusion.device as device
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.data.windows import make_windows, random_windows, windows_with_labels
from vafusion.fusion.reports.run import report_on_trained
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.config import LEGACY_TRAINING, RECIPES, FusionConfig, make_config, training_recipe
from vafusion.fusion.runs.schedule import lr_factor, stop_reason
from vafusion.fusion.runs.train import train

V1 = Path(__file__).parent / "v1"
TINY = dict(features=("visual", "audio"), window=48, hop=32, d_model=16, heads=2, head_hidden=16, tcn_dilations=(1, 2))


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / ckpt_mod.METRICS).read_text().splitlines()]


# ---------------------------------------------------------------------------- schedules ---


def test_v1_schedule_is_the_old_formula():
    """Warm-up over min(10% of the steps, 200), cosine to 5%: the rule of every run before the fast recipe."""
    for total in (12, 330, 5000):
        warm = max(1, min(total // 10, 200))
        f = lr_factor("v1", total, steps_per_epoch=total // 3)
        for step in (0, warm - 1, warm, total // 2, total - 1, total + 5):
            if step < warm:
                expected = (step + 1) / warm
            else:
                progress = min(1.0, (step - warm) / max(1, total - warm))
                expected = 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))
            assert f(step) == expected


def test_cosine_schedule_warms_up_for_half_an_epoch_then_decays_to_five_percent():
    f = lr_factor("cosine", total=240, steps_per_epoch=24)  # 10 epochs of 24 steps: warm-up 12 steps
    assert [f(s) for s in (0, 5, 11)] == pytest.approx([1 / 12, 6 / 12, 1.0])
    decay = [f(s) for s in range(12, 240)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert decay[-1] == pytest.approx(0.05, abs=1e-3) and f(1000) == pytest.approx(0.05)
    assert lr_factor("cosine", total=100_000, steps_per_epoch=5000)(199) == 1.0  # warm-up at most 200 steps
    assert lr_factor("cosine", total=2, steps_per_epoch=2)(0) == 1.0  # tiny runs: at least one step


# ------------------------------------------------------------------------------ windows ---


def test_random_windows_cover_every_frame_each_epoch_and_move_between_epochs():
    lengths = np.array([0, 5, 300, 301, 650, 1000, 1234])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    starts = []
    for epoch in range(20):
        rows = random_windows(offsets, 300, 200, np.arange(len(lengths)), np.random.default_rng([0, epoch]))
        for v, t in enumerate(lengths):
            mine = rows[rows[:, 0] == v]
            covered = np.zeros(t, bool)
            for _, start, length in mine:
                assert 0 <= start and start + length <= t and length == min(t, 300)  # inside its own video
                covered[start : start + length] = True
            assert covered.all()
            assert len(np.unique(mine[:, 1])) == len(mine)
        starts.append(rows[rows[:, 0] == 5, 1].tolist())
    assert len({tuple(s) for s in starts}) > 10  # the grid moves from epoch to epoch
    same = random_windows(offsets, 300, 200, np.arange(len(lengths)), np.random.default_rng([0, 3]))
    assert np.array_equal(
        same, random_windows(offsets, 300, 200, np.arange(len(lengths)), np.random.default_rng([0, 3]))
    )
    with pytest.raises(ValueError, match="hop <= window"):
        random_windows(offsets, 100, 200, np.arange(2), np.random.default_rng(0))


def test_random_windows_keep_to_labelled_training_frames(toy_cache):
    """Across epochs every labelled frame of the training videos is trained on, and nothing of other videos."""
    loaded = load_cache(toy_cache, ("visual", "audio"), progress=False)
    train_pos = np.array([i for i, v in enumerate(loaded.ids) if loaded.index[v].partition == "train"])
    grid = windows_with_labels(loaded, make_windows(offsets=loaded.offsets, window=48, hop=32, videos=train_pos))
    seen = np.zeros(loaded.n_frames, bool)
    for epoch in range(1, 6):
        rows = windows_with_labels(
            loaded, random_windows(loaded.offsets, 48, 32, np.unique(grid[:, 0]), np.random.default_rng([0, epoch]))
        )
        assert set(rows[:, 0]) <= set(train_pos)
        for video, start, length in rows:
            seen[loaded.offsets[video] + start : loaded.offsets[video] + start + length] = True
    labelled = np.isfinite(loaded.labels).any(axis=1)
    in_train = np.zeros(loaded.n_frames, bool)
    for p in train_pos:
        in_train[loaded.offsets[p] : loaded.offsets[p + 1]] = True
    assert seen[labelled & in_train].all() and not seen[~in_train].any()


# ----------------------------------------------------------------------- early stopping ---


def test_stop_reason_waits_for_patience_and_min_epochs():
    assert stop_reason(0.5, epoch=2, stale=3, patience=3, min_epochs=4) == ""  # a plateau, but too early
    assert stop_reason(0.5, epoch=4, stale=3, patience=3, min_epochs=4).startswith("early stop")
    assert stop_reason(0.5, epoch=9, stale=2, patience=3, min_epochs=1) == ""
    assert "diverged" in stop_reason(float("nan"), epoch=1, stale=0, patience=3, min_epochs=4)


def test_a_run_stops_on_a_plateau_not_before_min_epochs(toy_cache, tmp_path):
    cfg = make_config(**TINY, epochs=12, patience=1, min_epochs=5, lr=1e-9)  # P barely moves: a plateau at once
    result = train(toy_cache, tmp_path / "r", cfg, progress=False)
    assert 5 <= result.epochs_run < 12
    last = torch.load(tmp_path / "r" / ckpt_mod.LAST, weights_only=True)
    assert last["stop"].startswith("early stop")


# ----------------------------------------------------------------- the default recipe ---


def test_the_toy_task_learns_with_the_default_recipe(toy_cache, tmp_path):
    cfg = make_config(**TINY)  # every training setting the fast recipe's
    assert cfg.training == training_recipe("fast", seed=0)
    result = train(toy_cache, tmp_path / "r", cfg, progress=False)
    assert result.best["p"] > 0.5


def test_time_is_recorded_per_epoch_in_the_summary_and_in_the_report(toy_cache, tmp_path):
    config = make_config(**TINY, epochs=3, min_epochs=3)
    result = train(toy_cache, tmp_path / "r", config, progress=False, on_trained=report_on_trained("cpu"))
    rows = _rows(tmp_path / "r")
    assert all(r["seconds"] > 0 for r in rows)
    elapsed = [r["elapsed"] for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[0] >= rows[0]["seconds"]  # start-up included
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["train_seconds"] == pytest.approx(elapsed[-1]) == pytest.approx(result.seconds)
    best = next(r for r in rows if r["epoch"] == summary["best"]["epoch"])
    assert summary["seconds_to_best"] == pytest.approx(best["elapsed"])
    page = (tmp_path / "r" / "report.html").read_text()
    assert "validation against time" in page or "against the run&#x27;s wall-clock seconds" in page
    assert f"{rows[-1]['seconds']:.1f}" in page and f"{elapsed[-1]:.1f}" in page
    assert "training time" in page


def test_the_epoch_hook_sees_every_epoch_and_can_stop_the_run(toy_cache, tmp_path):
    seen = []

    def hook(row):
        seen.append(row)
        return row["epoch"] == 2  # a pruner's verdict

    cfg = make_config(**TINY, epochs=6)
    result = train(toy_cache, tmp_path / "r", cfg, progress=False, on_epoch=hook)
    assert [r["epoch"] for r in seen] == [1, 2] and result.epochs_run == 2
    assert {"p", "ccc_v", "ccc_a", "loss", "seconds", "elapsed"} <= set(seen[-1])
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["epochs_run"] == 2
    (tmp_path / "r" / "summary.json").unlink()  # as if killed before the summary: the stop is kept in last.pt
    again = train(toy_cache, tmp_path / "r", cfg, resume=True, progress=False, on_epoch=hook)
    assert again.epochs_run == 2 and len(seen) == 2


# -------------------------------------------------------------------------- precision ---


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_cpu_and_is_recorded(monkeypatch, toy_cache, tmp_path, native):
    monkeypatch.setattr(device, "cpu_bf16_native", lambda: native)
    monkeypatch.delenv(device.EMULATED_BF16_ENV, raising=False)
    with device.compute(1, "auto") as (_, resolved):
        assert resolved == ("bf16" if native else "fp32") == device.precision()
        assert device.precision_asked() == "auto"
        train(toy_cache, tmp_path / "r", make_config(**TINY, epochs=1, min_epochs=1), progress=False)
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["precision"] == resolved
    assert torch.load(tmp_path / "r" / ckpt_mod.LAST, weights_only=True)["precision"] == resolved


def test_an_old_run_resumes_in_fp32_under_auto_even_where_bf16_is_native(monkeypatch, toy_cache, tmp_path):
    """The v1 fixture (no precision recorded, killed after epoch 2 of 3) on a CPU with native bf16: auto keeps it
    in fp32, so its third epoch is what vafusion computed then."""
    monkeypatch.setattr(device, "cpu_bf16_native", lambda: True)
    shutil.copytree(V1 / "imf", tmp_path / "imf")
    assert "precision" not in torch.load(tmp_path / "imf" / ckpt_mod.LAST, weights_only=True)
    config = FusionConfig.load(tmp_path / "imf")
    with device.compute(1, "auto"):
        result = train(toy_cache, tmp_path / "imf", config, resume=True, progress=False)
    assert result.precision == "fp32"
    expected = json.loads((V1 / "expected.json").read_text())["imf_straight_metrics"][2]
    assert _rows(tmp_path / "imf")[2]["p"] == pytest.approx(expected["p"], abs=1e-4)


# ------------------------------------------------------------------ the v1 recipe, old runs ---


def test_the_v1_recipe_is_todays_recipe_before_it():
    v1 = training_recipe("v1")
    assert (v1.epochs, v1.batch_size, v1.lr, v1.patience) == (30, 16, 1e-3, 8)
    assert (v1.schedule, v1.windows, v1.min_epochs) == ("v1", "grid", 1)
    assert make_config(recipe="v1", epochs=5).training == training_recipe("v1", epochs=5)
    assert set(LEGACY_TRAINING) <= set(RECIPES["v1"])
    with pytest.raises(VafusionError, match="--recipe 'v9'"):
        training_recipe("v9")


def test_a_configuration_that_predates_the_recipe_settings_gets_the_v1_values(tmp_path):
    saved = make_config(**TINY).to_dict()
    for key in LEGACY_TRAINING:
        del saved["training"][key]
    old = FusionConfig.from_dict(saved)
    assert {k: getattr(old.training, k) for k in LEGACY_TRAINING} == LEGACY_TRAINING
    assert set(old.implied) == {f"training.{k}" for k in LEGACY_TRAINING}
    assert FusionConfig.load(V1 / "imf").training.windows == "grid"  # config_version 1 too


def test_cli_recipe_option_and_its_defaults(toy_cache, tmp_path, monkeypatch):
    import vafusion.fusion.runs.train as train_mod

    seen = []
    monkeypatch.setattr(train_mod, "train", lambda cache, run, config, **kw: seen.append(config) or 1 / 0)
    base = ["train", str(toy_cache), "--run", str(tmp_path / "r"), "--features", "visual"]
    for extra in ([], ["--recipe", "v1"], ["--recipe", "v1", "--epochs", "7", "--windows", "random"]):
        CliRunner().invoke(cli, base + extra)
    fast, v1, mixed = (c.training for c in seen)
    assert fast == training_recipe("fast") and v1 == training_recipe("v1")
    assert mixed == training_recipe("v1", epochs=7, windows="random")
    help_text = CliRunner().invoke(cli, ["train", "--help"]).output
    assert "--recipe" in help_text and "v1: 30" in help_text
