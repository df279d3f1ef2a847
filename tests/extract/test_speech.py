"""Speech models (wav2vec 2.0 / HuBERT / WavLM): the built-in table, step timing, chunking,
layer options, and extraction on a generated corpus (random weights; tiny models where the
test is about plumbing, wav2vec2_base where it is about the real architecture)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from vafusion.cache.inspect import verify_cache
from vafusion.cache.reader import open_feature_file
from vafusion.errors import VafusionError
from vafusion.extract import align, speech
from vafusion.extract.options import ExtractOptions
from vafusion.extract.run import extract

SR = 16000
TINY_CONV = [(16, 10, 5), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 3, 2), (16, 2, 2), (16, 2, 2)]  # base's strides


def tiny_model(seed: int = 0, layers: int = 2) -> torch.nn.Module:
    """A wav2vec2 with base's conv strides (400-sample field, 320 stride) but 16/32-wide layers."""
    torch.manual_seed(seed)
    return torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm",
        extractor_conv_layer_config=TINY_CONV,
        extractor_conv_bias=False,
        encoder_embed_dim=32,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=16,
        encoder_pos_conv_groups=4,
        encoder_num_layers=layers,
        encoder_num_heads=2,
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=64,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=False,
        encoder_layer_drop=0.0,
        aux_num_out=None,
    ).eval()


def localized_speech_extractor() -> speech.SpeechExtractor:
    """A plug-in factory (used by import path below): a tiny model whose transformer cannot mix
    steps (positional convolution, attention and feed-forward outputs zeroed), so step j hears
    only samples [320 j, 320 j + 400): a beep must show in the steps around its instant."""
    model = tiny_model(seed=3, layers=1)
    with torch.no_grad():
        for name, p in model.encoder.transformer.pos_conv_embed.named_parameters():
            if "original1" not in name:  # weight-normed: a zero magnitude (original0) zeroes the weight
                p.zero_()
        for layer in model.encoder.transformer.layers:
            for p in (*layer.attention.out_proj.parameters(), *layer.feed_forward.output_dense.parameters()):
                p.zero_()
    return speech.SpeechExtractor("localized_speech", model, {"model": "tiny", "weights": "random"}, False, layer="1")


def test_built_in_table_matches_torchaudio_bundles():
    """Each name builds torchaudio's factory architecture; it must equal the pipeline bundle's
    (same parameter names and shapes), with the bundle's weights file and input normalisation."""
    from torchaudio.pipelines._wav2vec2.utils import _get_model

    bundles = {
        "wav2vec2_base": "WAV2VEC2_BASE",
        "wav2vec2_large": "WAV2VEC2_LARGE",
        "wav2vec2_large_lv60k": "WAV2VEC2_LARGE_LV60K",
        "wav2vec2_xlsr53": "WAV2VEC2_XLSR53",
        "hubert_base": "HUBERT_BASE",
        "hubert_large": "HUBERT_LARGE",
        "hubert_xlarge": "HUBERT_XLARGE",
        "wavlm_base": "WAVLM_BASE",
        "wavlm_base_plus": "WAVLM_BASE_PLUS",
        "wavlm_large": "WAVLM_LARGE",
    }
    assert set(bundles) == set(speech.MODELS)
    for name, attr in bundles.items():
        bundle = getattr(torchaudio.pipelines, attr)
        with torch.device("meta"):
            theirs = _get_model(bundle._model_type, bundle._params)
        ours = speech.architecture(name, "meta")
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in theirs.state_dict().items()
        }
        assert speech.MODELS[name].weights_file == bundle._path, name
        assert speech.MODELS[name].normalize_waveform == bundle._normalize_waveform, name
        assert speech.StepGeometry.of(ours) == speech.StepGeometry(400, 320)


def test_step_timing_matches_the_model():
    """Step j covers samples [320 j, 320 j + 400): centre (320 j + 200) / 16000 s, and the count
    the geometry predicts is the count wav2vec2_base gives (shapes on the meta device)."""
    model = speech.architecture("wav2vec2_base", "meta").eval()
    geometry = speech.StepGeometry.of(model)
    for n in (400, 719, 720, 1040, 16000, 16123, 48000):
        with torch.no_grad():
            out, _ = model.extract_features(torch.zeros(1, n, device="meta"), num_layers=1)
        assert out[0].shape[1] == geometry.n_steps(n) == 1 + (n - 400) // 320, n
    assert geometry.n_steps(399) == 0
    np.testing.assert_allclose(geometry.steps(5).times, [(320 * j + 200) / SR for j in range(5)], rtol=0, atol=1e-15)


def test_chunk_plan_covers_every_step_once_with_context():
    for n_steps, chunk, context in ((10, 20, 3), (20, 20, 3), (21, 20, 3), (137, 20, 3), (1000, 50, 10)):
        plan = speech.chunk_plan(n_steps, chunk, context)
        owned = np.concatenate([np.arange(lo, hi) for _, lo, hi in plan])
        np.testing.assert_array_equal(owned, np.arange(n_steps))  # each step once, in order
        for start, lo, hi in plan:
            assert 0 <= start and start + min(chunk, n_steps) <= n_steps  # chunks are whole and inside the track
            assert lo - start >= (context if start > 0 else 0) and start + chunk - hi >= (
                context if hi < n_steps else 0
            )


def test_chunked_rows_are_their_chunks_rows_and_memory_is_bounded(monkeypatch):
    ext = speech.SpeechExtractor(
        "tiny", tiny_model(), {"weights": "random"}, False, layer="mean", chunk_s=1.0, context_s=0.2
    )
    wave = torch.randn(int(5.3 * SR), generator=torch.Generator().manual_seed(1)) * 0.1
    calls = []
    real_run = ext._run
    monkeypatch.setattr(ext, "_run", lambda x: (calls.append(x.numel()), real_run(x))[1])
    with torch.inference_mode():
        rows = ext.step_features(wave)
    g = ext.geometry
    assert rows.shape == (g.n_steps(len(wave)), 32)
    assert len(calls) > 4 and max(calls) <= SR  # never more than one chunk (1 s) at once
    plan = speech.chunk_plan(len(rows), ext.chunk_steps, ext.context_steps)
    with torch.inference_mode():
        for start, lo, hi in plan:
            alone = real_run(wave[start * g.stride : start * g.stride + (ext.chunk_steps - 1) * g.stride + 400])
            torch.testing.assert_close(rows[lo:hi], alone[lo - start : hi - start], rtol=0, atol=0)


def test_one_chunk_is_the_whole_track_and_layers_are_selected():
    model = tiny_model()
    wave = torch.randn(int(0.9 * SR), generator=torch.Generator().manual_seed(2)) * 0.1
    with torch.inference_mode():
        layers, _ = model.extract_features(wave[None])
        for option, expected in (
            ("1", layers[0]),
            ("2", layers[1]),
            ("1-2", (layers[0] + layers[1]) / 2),
            ("mean", (layers[0] + layers[1]) / 2),
        ):
            ext = speech.SpeechExtractor("tiny", model, {}, False, layer=option)
            torch.testing.assert_close(ext.step_features(wave), expected[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(VafusionError, match=r"tiny.layer=3: use a layer 1..2"):
        speech.SpeechExtractor("tiny", model, {}, False, layer="3")


def test_options_are_checked_before_any_work():
    for option, match in (
        ({"layer": "13"}, r"wav2vec2_base.layer=13: use a layer 1..12"),
        ({"layer": "x"}, "layer=x"),
        ({"chunk": "-1"}, "chunk=-1: give a positive"),
        ({"depth": "3"}, r"wav2vec2_base has no option 'depth' \(its options: layer, chunk, context\)"),
    ):
        with pytest.raises(VafusionError, match=match):
            ExtractOptions(features=("wav2vec2_base",), extractor_options={"wav2vec2_base": option})


def test_a_speech_extractors_steps_land_on_the_beeps_frames(alignment_corpus, tmp_path):
    """Through the real track pass and aligner, by import path: the frames whose rows differ
    from silence are the beeps' own frames and their neighbours, the beep's frame strongest."""
    opts = ExtractOptions(features=("tests.extract.test_speech:localized_speech_extractor",), workers=0, progress=False)
    report = extract(alignment_corpus, tmp_path / "cache", opts)
    assert report.ok, report.failures
    with open_feature_file(tmp_path / "cache", "localized_speech") as ff:
        rows, mask = ff.read("align")
    assert mask.all()
    rows = rows.astype(np.float32)
    dist = np.linalg.norm(rows - np.median(rows, axis=0), axis=1)
    hears = set(np.flatnonzero(dist > 0.2 * dist.max()) + 1)
    for beep in (25, 70):
        assert beep in hears and int(np.argmax(dist[beep - 3 : beep + 2])) == 2  # row of frame `beep` is the peak
    assert all(min(abs(k - b) for b in (25, 70)) <= 1 for k in hears), sorted(hears)


def test_wav2vec2_base_random_end_to_end(alignment_corpus, tmp_path):
    opts = ExtractOptions(
        features=("wav2vec2_base", "logmel"),
        weights={"wav2vec2_base": "random"},
        extractor_options={"wav2vec2_base": {"layer": "6"}},
        workers=0,
        progress=False,
    )
    report = extract(alignment_corpus, tmp_path / "cache", opts)
    assert report.ok and report.extracted == {"wav2vec2_base": 1, "logmel": 1}
    assert verify_cache(tmp_path / "cache") == []
    with open_feature_file(tmp_path / "cache", "wav2vec2_base") as ff:
        prov = ff.extractor
        rows, mask = ff.read("align")
    assert rows.shape == (100, 768) and mask.all() and np.isfinite(rows).all()
    assert prov["layer"] == "6" and prov["weights"] == "random" and prov["step"].startswith("20 ms (320 samples)")
    assert prov["timing"] == align.GRID_TIMING


def test_default_weights_come_from_torchaudios_url_and_failures_are_one_line(tmp_path, monkeypatch):
    from urllib.error import URLError

    shapes = speech.architecture("hubert_base", "meta").state_dict()
    seen = []

    def fake_download(url, **kwargs):  # what torch.hub would return, without the network
        seen.append((url, kwargs.get("weights_only")))
        return {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    model, prov = speech._load_weights("hubert_base", "default")
    url = "https://download.pytorch.org/torchaudio/models/hubert_fairseq_base_ls960.pth"
    assert seen == [(url, True)] and prov == {
        "model": "hubert_base",
        "weights": "torchaudio:default",
        "url": url,
        "sha256": None,
    }
    assert all(not p.is_meta and not p.any() for p in model.parameters())

    def offline(url, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(VafusionError, match=f"{url}: could not get hubert_base weights") as err:
        speech._load_weights("hubert_base", "default")
    assert str(tmp_path / "checkpoints") in str(err.value) and "\n" not in str(err.value)
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3)}, wrong)
    with pytest.raises(VafusionError, match=r"resnet.pth: not hubert_base weights"):
        speech._load_weights("hubert_base", str(wrong))
