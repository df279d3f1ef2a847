"""Speech activity (``vad``): the real Silero VAD weights that silero-vad ships, on a generated track
of speech-like sound and digital silence (the corpus voice of make_corpus does not fire Silero;
vafusion.synth.speech's formant synthesis does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import SPEECH_SPANS
from vafusion.cache.reader import open_feature_file
from vafusion.errors import VafusionError
from vafusion.extract import align, registry, vad
from vafusion.extract.options import ExtractOptions
from vafusion.synth.speech import speech_like


def vad_rows(cache) -> tuple[np.ndarray, np.ndarray]:
    with open_feature_file(cache, "vad") as ff:
        rows, mask = ff.read("align")
    return rows[:, 0].astype(np.float64), mask


def test_high_in_voice_rows_low_in_silent_rows(speech_cache):
    """Voice rows (a 0.2 s margin inside each span) mostly near 1; silent rows (0.4 s after a span:
    the model's state still hears the speech for a moment) near 0."""
    _, cache = speech_cache
    p, mask = vad_rows(cache)
    assert mask.all() and p.shape == (250,) and ((0 <= p) & (p <= 1)).all()
    voice = np.concatenate([np.arange(first + 4, last - 4) for first, last in SPEECH_SPANS]) - 1
    silent = np.concatenate([np.arange(1, 20), np.arange(110, 146), np.arange(235, 251)]) - 1
    assert np.median(p[voice]) > 0.8 and (p[voice] > 0.5).mean() > 0.7, np.round(p[voice], 2)
    assert p[silent].max() < 0.1, np.round(p[silent], 2)


def test_windows_sit_at_their_centres_and_the_state_runs_through_the_track():
    ext = registry.build("vad", ExtractOptions(features=("vad",)).extractor_settings()).extractor
    prov = ext.provenance()
    assert prov["weights_sha256"] == vad.sha256_file(vad.model_file()) and prov["version"] and ext.dim == 1
    np.testing.assert_allclose(vad.window_steps(3).times, [0.016, 0.048, 0.08], rtol=0, atol=1e-15)
    wave = torch.from_numpy(np.concatenate([np.zeros(8000, np.float32), speech_like(32000, seed=4)]))
    probs = ext.probabilities(wave)
    assert probs.shape == (int(np.ceil(len(wave) / 512)),)  # the last window padded
    before = torch.get_num_threads()
    rows = ext(wave, align.frame_instants(25.0, 62))
    assert torch.get_num_threads() == before  # one thread inside, restored after
    torch.testing.assert_close(
        rows[:, 0], align.span_mean(probs[:, None], vad.window_steps(len(probs)), align.frame_instants(25.0, 62))[:, 0]
    )
    assert float(probs[:12].max()) < 0.1 < float(probs[20:].mean())  # silence first, then speech


def test_weights_are_the_shipped_ones():
    with pytest.raises(VafusionError, match=r"--weights vad=random: vad uses the weights silero-vad ships"):
        ExtractOptions(features=("vad",), weights={"vad": "random"})
