"""The temporal stride (``--stride K``): windows of every K-th frame, one phase per video and epoch in
training, every phase interleaved back to every frame in validation, evaluate and predict; stride 1 is
every earlier run's behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vafusion.cli import cli
from vafusion.fusion.data.batches import build_batch
from vafusion.fusion.data.folds import split_ids
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import (
    frame_indices,
    make_windows,
    overlap_average,
    phase_lengths,
    phase_windows,
    random_windows,
)
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.config import FusionConfig, make_config, training_recipe
from vafusion.fusion.runs.evaluate import evaluate_run
from vafusion.fusion.runs.train import _GradientRun, train

TINY = dict(features=("visual", "audio"), window=24, hop=16, d_model=16, heads=2, head_hidden=16, tcn_dilations=(1, 2))
LENGTHS = np.array([0, 1, 5, 23, 24, 50, 97, 130])
OFFSETS = np.concatenate([[0], np.cumsum(LENGTHS)])


def test_stride_one_gives_the_windows_of_before():
    videos = np.array([7, 2, 5, 0, 6])
    assert np.array_equal(
        phase_windows(OFFSETS, 24, 16, videos, 1), make_windows(offsets=OFFSETS, window=24, hop=16, videos=videos)
    )
    drawn = phase_windows(OFFSETS, 24, 16, videos, 1, np.zeros(5, int), np.random.default_rng([0, 3]))
    assert np.array_equal(drawn, random_windows(OFFSETS, 24, 16, videos, np.random.default_rng([0, 3])))


@pytest.mark.parametrize("stride", [2, 3])
def test_the_phases_interleave_to_exactly_every_frame(stride):
    """All phases together: each frame predicted, and only by windows of its own phase (the window's value
    here is its phase, so a frame's average is its phase exactly), never outside its video."""
    videos = np.arange(len(LENGTHS))
    for t in LENGTHS:
        assert phase_lengths(np.full(stride, t), np.arange(stride), stride).sum() == t
    rows = phase_windows(OFFSETS, 24, 16, videos, stride)
    assert (rows[:, 2] >= 1).all() and (rows[:, 2] <= 24).all()
    idx, valid = frame_indices(OFFSETS, rows, 24, stride)
    for (video, _, _), frames, ok in zip(rows, idx, valid):
        assert (frames[ok] >= OFFSETS[video]).all() and (frames[ok] < OFFSETS[video + 1]).all()
    phase_of_window = (rows[:, 1] % stride).astype(np.float32)
    preds = np.broadcast_to(phase_of_window[:, None, None], (len(rows), 24, 2))
    per_video = overlap_average(preds, rows, LENGTHS, stride)
    for t, got in zip(LENGTHS, per_video):
        assert got.shape == (t, 2)
        assert np.array_equal(got[:, 0], (np.arange(t) % stride).astype(np.float32))


def _toy(toy_cache, stream=False):
    loaded = load_cache(toy_cache, ("visual", "audio"), progress=False, stream=stream)
    train_ids, _ = split_ids(loaded.index, make_config(**TINY).data)
    return loaded, Standardizer.fit(loaded, train_ids), train_ids


@pytest.mark.parametrize("stream", [False, True])
def test_a_strided_batch_holds_every_kth_frame_and_its_masks(toy_cache, stream):
    loaded, std, _ = _toy(toy_cache, stream)
    rows = phase_windows(loaded.offsets, 10, 7, np.arange(3), 3)
    batch = build_batch(loaded, std, rows, window=10, stride=3)
    plain = build_batch(
        loaded, std, np.array([[v, 0, loaded.lengths[v]] for v in range(3)]), window=int(loaded.lengths[:3].max())
    )
    for j, (video, start, length) in enumerate(rows):
        frames = start + 3 * np.arange(length)
        for k in range(2):
            assert np.array_equal(batch.streams[k][j, :length].numpy(), plain.streams[k][video, frames].numpy())
            assert np.array_equal(batch.present[k][j, :length].numpy(), plain.present[k][video, frames].numpy())
            assert not batch.present[k][j, length:].any()
        assert np.array_equal(batch.labels[j, :length].numpy(), plain.labels[video, frames].numpy(), equal_nan=True)
    assert not batch.present[0].all()  # the toy cache's faces are missing somewhere: masks are really tested


@pytest.mark.parametrize("windows", ["random", "grid"])
def test_training_rotates_the_phases_so_every_labelled_frame_is_trained_on(toy_cache, tmp_path, windows):
    """One phase per video and epoch (an epoch is a third of the frames), and any 3 epochs in a row train
    every labelled training frame, nothing of other videos."""
    loaded, std, train_ids = _toy(toy_cache)
    run = _GradientRun.start(loaded, std, make_config(**TINY, stride=3, windows=windows), tmp_path, train_ids)
    seen = np.zeros(loaded.n_frames, bool)
    for epoch in range(4, 7):
        rows = run.epoch_windows(np.random.default_rng([0, epoch]), epoch)
        assert set(rows[:, 0]) <= set(loaded.positions(train_ids)) and len(rows) < len(run.windows)
        for video in np.unique(rows[:, 0]):
            assert len(set(rows[rows[:, 0] == video, 1] % 3)) == 1
        idx, valid = frame_indices(loaded.offsets, rows, 24, 3)
        seen[idx[valid]] = True
    labelled = np.isfinite(loaded.labels).any(axis=1)
    in_train = np.zeros(loaded.n_frames, bool)
    for p in loaded.positions(train_ids):
        in_train[loaded.offsets[p] : loaded.offsets[p + 1]] = True
    assert seen[labelled & in_train].all() and not seen[~in_train].any()


def test_a_strided_run_is_recorded_and_evaluate_agrees_with_its_validation(toy_cache, tmp_path):
    run = tmp_path / "r"
    result = train(toy_cache, run, make_config(**TINY, stride=2, epochs=3, min_epochs=3), progress=False)
    assert json.loads((run / "config.json").read_text())["training"]["stride"] == 2
    assert result.best["p"] > 0.3  # it learns at stride 2
    rows = [json.loads(line) for line in (run / ckpt_mod.METRICS).read_text().splitlines()]
    best = next(r for r in rows if r["epoch"] == result.best["epoch"])
    assert evaluate_run(run, toy_cache, device="cpu")["p"] == pytest.approx(best["p"], abs=1e-6)


def test_old_configurations_read_as_stride_one(tmp_path):
    """A run made before the stride used 1, whatever the default recipe's stride: it is implied, and a resume
    keeps it."""
    saved = make_config(**TINY).to_dict()
    del saved["training"]["stride"]
    old = FusionConfig.from_dict(saved)
    assert old.training.stride == 1 and old.implied == ("training.stride",)
    assert not [k for k in old.differences(make_config(**TINY, stride=3)) if k not in old.implied]
    assert FusionConfig.load(Path(__file__).parent / "v1" / "imf").training.stride == 1


def test_cli_stride_reaches_the_configuration(toy_cache, tmp_path, monkeypatch):
    import vafusion.fusion.runs.train as train_mod

    seen = []
    monkeypatch.setattr(train_mod, "train", lambda cache, run, config, **kw: seen.append(config) or 1 / 0)
    base = ["train", str(toy_cache), "--run", str(tmp_path / "r"), "--features", "visual"]
    CliRunner().invoke(cli, [*base, "--stride", "3"])
    CliRunner().invoke(cli, base)
    assert [c.training.stride for c in seen] == [3, training_recipe().stride]
    bad = CliRunner().invoke(cli, [*base, "--stride", "0"])
    assert bad.exit_code != 0 and "--stride" in bad.output
