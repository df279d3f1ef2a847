"""``--audio-where-speech P``: the audio streams' masks False exactly where the cache's ``vad`` is
below P (visual streams untouched), in loaded caches and training batches; recorded in the run's
configuration and applied again by evaluate and predict; feature files say their kind."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import FAST_EXTRACT
from vafusion.cache.reader import kind_of, open_feature_file
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.extract.importer import import_features
from vafusion.extract.run import ExtractOptions, extract
from vafusion.fusion.data.batches import iterate_batches
from vafusion.fusion.data.loading import load_cache
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import frame_indices, make_windows
from vafusion.fusion.predict.ensemble import ensemble_predict
from vafusion.fusion.runs.checkpoint import load_run
from vafusion.fusion.runs.config import make_config
from vafusion.fusion.runs.evaluate import evaluate_run
from vafusion.fusion.runs.train import train


def test_audio_masks_follow_the_speech_probability_in_batches(speech_cache):
    _, cache = speech_cache
    with open_feature_file(cache, "vad") as ff:
        vad, vad_mask = ff.read("align")
    plain = load_cache(cache, ["resnet18", "logmel"], progress=False)
    gated = load_cache(cache, ["resnet18", "logmel"], progress=False, audio_where_speech=0.5)
    speech = vad_mask & (vad[:, 0].astype(np.float32) >= 0.5)
    assert 50 < speech.sum() < 200  # the spans speak, the rest is silent: the test can tell
    np.testing.assert_array_equal(gated.masks[0], plain.masks[0])  # visual: untouched
    np.testing.assert_array_equal(gated.masks[1], plain.masks[1] & speech)
    assert gated.feature_fingerprints["vad"] == ff.fingerprint and gated.audio_where_speech == 0.5
    windows = make_windows(gated.lengths, window=60, hop=40)
    standardizer = Standardizer.fit(gated, gated.ids)
    seen = 0
    for batch in iterate_batches(gated, standardizer, windows, batch_size=3):
        idx, valid = frame_indices(gated.offsets, batch.windows.numpy(), batch.present[1].shape[1])
        expected = torch.from_numpy(speech[idx] & plain.masks[1][idx] & valid)
        assert torch.equal(batch.present[1], expected)
        assert torch.equal(batch.present[0], torch.from_numpy(plain.masks[0][idx] & valid))
        assert (batch.streams[1][~batch.present[1]] == 0).all()
        seen += int(valid.sum())
    assert seen >= gated.n_frames


def test_the_kind_of_each_file_is_recorded_or_inferred(speech_cache, tmp_path):
    _, cache = speech_cache
    for name, kind in (("vad", "track"), ("logmel", "track"), ("resnet18", "frame")):
        with h5py.File(cache / f"{name}.h5") as f:
            assert f.attrs["kind"] == kind
    # files written before vafusion recorded it: the built-ins' own descriptions tell
    assert kind_of(None, {"model": "resnet18", "input": "face crops", "timing": "..."}) == "frame"
    assert kind_of(None, {"model": "vggish", "timing": "..."}) == "track"
    assert kind_of(None, {"model": "imported", "timing": "..."}) is None
    assert kind_of(None, {"model": "x", "timing": "...", "plugin": {"source": "m:X"}}) is None


def test_missing_vad_and_features_that_do_not_say(speech_cache, tiny_extracted, copy_cache, tmp_path):
    _, shared, _ = tiny_extracted
    with pytest.raises(VafusionError, match=r"--audio-where-speech 0.5: .*vad.h5 missing; extract it first"):
        load_cache(shared, ["resnet18", "vggish"], progress=False, audio_where_speech=0.5)
    _, speech_shared = speech_cache
    cache = copy_cache(speech_shared)
    rows = np.random.default_rng(0).standard_normal((250, 3)).astype(np.float32)
    (tmp_path / "feats").mkdir()
    np.save(tmp_path / "feats" / "align.npy", rows)
    import_features(cache, "external", tmp_path / "feats", progress=False)
    with pytest.raises(VafusionError, match=r"external.h5 does not say whether its rows come from the audio track"):
        load_cache(cache, ["resnet18", "external"], progress=False, audio_where_speech=0.5)
    import_features(cache, "external", tmp_path / "feats", progress=False, kind="track", overwrite=True)
    gated = load_cache(cache, ["resnet18", "external"], progress=False, audio_where_speech=0.5)
    assert gated.masks[1].sum() < 250


@pytest.fixture(scope="module")
def tiny_with_vad(tiny_extracted, tmp_path_factory):
    """The shared tiny cache (6 ids, train and validation) plus its vad feature, copied."""
    corpus, shared, _ = tiny_extracted
    cache = tmp_path_factory.mktemp("tiny-vad") / "cache"
    shutil.copytree(shared, cache)
    report = extract(corpus.root, cache, ExtractOptions(features=("vad",), **FAST_EXTRACT))
    assert report.ok, report.failures
    return cache


def test_a_run_records_the_threshold_and_evaluate_and_predict_apply_it(tiny_with_vad, tmp_path):
    config = make_config(features=("resnet18", "vggish"), model="ridge", audio_where_speech=0.05)
    train(tiny_with_vad, tmp_path / "run", config, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["audio_where_speech"] == 0.05
    run = load_run(tmp_path / "run")
    assert run.config.data.audio_where_speech == 0.05 and "vad" in run.fingerprints["features"]
    scores = evaluate_run(tmp_path / "run", tiny_with_vad)
    assert np.isfinite(scores["p"])
    index_ids = load_cache(tiny_with_vad, ["resnet18"], progress=False).ids
    from vafusion.cache.corpus_index import read_corpus_index

    preds = ensemble_predict([tmp_path / "run"], tiny_with_vad, index_ids, read_corpus_index(tiny_with_vad), "cpu")
    assert set(preds) == set(index_ids)


def test_tune_trains_every_trial_with_the_threshold(tiny_with_vad, tmp_path):
    study = tmp_path / "study"
    args = ["tune", tiny_with_vad, "--study", study, "--trials", "1", "--model", "ridge"]
    args += ["--features", "resnet18,vggish", "--audio-where-speech", "0.05", "--device", "cpu", "--threads", "1"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    run = load_run(study / "trials" / "0000")
    assert run.config.data.audio_where_speech == 0.05 and "vad" in run.fingerprints["features"]
