"""Hugging Face speech encoders (``hf:<folder>``): tiny Whisper and wav2vec2 models written into a
temporary folder with ``save_pretrained`` (no hub), their step timing, chunks, layers, padding
and provenance, and beeps landing on their frames through the real track pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WhisperFeatureExtractor,
    WhisperModel,
)

from tests.hf_models import whisper_config
from vafusion.cache.reader import open_feature_file
from vafusion.errors import VafusionError
from vafusion.extract import hf_audio, registry, speech
from vafusion.extract.options import ExtractOptions
from vafusion.extract.run import extract

SR = 16000


def save(folder: Path, model: torch.nn.Module, features) -> Path:
    model.save_pretrained(folder)
    features.save_pretrained(folder)
    return folder


def tiny_whisper(localized: bool = False, layers: int = 2) -> WhisperModel:
    """Whisper with 16-wide layers (80 mel bins, 30 s windows as the real ones). ``localized``: the
    layers' attention and feed-forward outputs and the position embedding zeroed, so step j hears
    only the mel frames around 2 j (a beep must show on its own frame's steps)."""
    torch.manual_seed(0)
    config = whisper_config(width=16, layers=layers, heads=2, ffn=32)
    model = WhisperModel(config).eval()
    if localized:
        with torch.no_grad():
            model.encoder.embed_positions.weight.zero_()
            for layer in model.encoder.layers:
                for p in (*layer.self_attn.out_proj.parameters(), *layer.fc2.parameters()):
                    p.zero_()
    return model


def tiny_wav2vec2(localized: bool = False, layers: int = 2) -> Wav2Vec2Model:
    """wav2vec2 with base's conv strides (400-sample field, 320 stride), 16/32-wide. ``localized``:
    layer norm in the conv frontend (not group norm over time), and the positional convolution,
    attention and feed-forward outputs zeroed: step j hears only samples [320 j, 320 j + 400)."""
    torch.manual_seed(1)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer" if localized else "group",
        vocab_size=8,
    )
    model = Wav2Vec2Model(config).eval()
    if localized:
        with torch.no_grad():
            for name, p in model.encoder.pos_conv_embed.named_parameters():
                if "original1" not in name:  # weight-normed: a zero magnitude (original0) zeroes the weight
                    p.zero_()
            for layer in model.encoder.layers:
                for p in (*layer.attention.out_proj.parameters(), *layer.feed_forward.output_dense.parameters()):
                    p.zero_()
    return model


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    whisper_features = WhisperFeatureExtractor(feature_size=80)
    return {
        "whisper": save(root / "tiny-whisper", tiny_whisper(), whisper_features),
        "whisper-local": save(root / "local-whisper", tiny_whisper(localized=True), whisper_features),
        "w2v": save(root / "tiny-w2v", tiny_wav2vec2(), Wav2Vec2FeatureExtractor()),
        "w2v-4": save(root / "w2v-4", tiny_wav2vec2(layers=4), Wav2Vec2FeatureExtractor()),
        "whisper-4": save(root / "whisper-4", tiny_whisper(layers=4), whisper_features),
        "w2v-local": save(
            root / "local-w2v", tiny_wav2vec2(localized=True), Wav2Vec2FeatureExtractor(do_normalize=False)
        ),
    }


def built(folder: Path, weights: str = "default", **options: str) -> hf_audio.HfSpeechExtractor:
    entry = f"hf:{folder}"
    opts = ExtractOptions(features=(entry,), weights={entry: weights}, extractor_options={entry: options})
    return registry.build(entry, opts.extractor_settings()).extractor


def noise(seconds: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(int(seconds * SR), generator=torch.Generator().manual_seed(seed)) * 0.1


def test_whisper_steps_windows_and_padding(folders):
    """20 ms steps centred at 0.02 j; a short track is one padded 30 s window whose steps past the
    audio are dropped; the rows kept are the encoder's own for that window."""
    ext = built(folders["whisper"], layer="2")
    assert (ext.name, ext.dim, ext.sample_rate, ext.encoder.stride) == ("hf-tiny-whisper", 16, SR, 320)
    np.testing.assert_allclose(ext.encoder.steps(4).times, [0.0, 0.02, 0.04, 0.06], rtol=0, atol=1e-15)
    wave = noise(5.01)
    with torch.inference_mode():
        rows = ext.step_features(wave)
        features = WhisperFeatureExtractor(feature_size=80)(wave.numpy(), sampling_rate=SR, return_tensors="pt")
        full = ext.encoder.model(features["input_features"], output_hidden_states=True).hidden_states[2][0]
    assert full.shape[0] == 1500 and rows.shape == (int(np.ceil(len(wave) / 320)), 16) == (251, 16)
    torch.testing.assert_close(rows, full[:251])


def test_whisper_chunks_are_30_s_windows_with_context(folders, monkeypatch):
    ext = built(folders["whisper"], context="2")
    wave = noise(41.0, seed=1)
    calls = []
    real = ext._run
    monkeypatch.setattr(ext, "_run", lambda x: (calls.append(x.numel()), real(x))[1])
    with torch.inference_mode():
        rows = ext.step_features(wave)
    assert rows.shape == (2050, 16) and calls == [30 * SR, 30 * SR]  # two windows: 0-30 s and 11-41 s
    plan = speech.chunk_plan(2050, 1500, 100)
    assert plan == [(0, 0, 1400), (550, 1400, 2050)]  # each step from the window where it sits far from a cut
    with torch.inference_mode():
        second = real(wave[550 * 320 :])
    torch.testing.assert_close(rows[1400:], second[850:])
    with pytest.raises(VafusionError, match=r"chunk=40: Whisper's windows are at most 30 s"):
        built(folders["whisper"], chunk="40")


def test_wav2vec2_chunked_equals_unchunked_away_from_the_cuts(folders):
    """A model whose steps hear only their own samples: chunked rows equal whole-track rows
    (chunks start on the step grid); a model with attention: each row is its own chunk's row."""
    wave = noise(3.3, seed=2)
    whole, chunked = built(folders["w2v-local"], chunk="60"), built(folders["w2v-local"], chunk="1", context="0.2")
    with torch.inference_mode():
        a, b = whole.step_features(wave), chunked.step_features(wave)
    assert a.shape == b.shape == (speech.StepGeometry(400, 320).n_steps(len(wave)), 32)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    ext = built(folders["w2v"], chunk="1", context="0.2")
    with torch.inference_mode():
        rows = ext.step_features(wave)
        for start, lo, hi in speech.chunk_plan(len(rows), ext.chunk_steps, ext.context_steps):
            alone = ext._run(wave[start * 320 : start * 320 + ext.encoder.chunk_samples(ext.chunk_steps)])
            torch.testing.assert_close(rows[lo:hi], alone[lo - start : hi - start], rtol=0, atol=0)


def test_layers_are_hidden_states(folders):
    model = Wav2Vec2Model.from_pretrained(folders["w2v"]).eval()
    wave = noise(1.5, seed=3)
    inputs = Wav2Vec2FeatureExtractor()(wave.numpy(), sampling_rate=SR, return_tensors="pt")["input_values"]
    with torch.inference_mode():
        states = model(inputs, output_hidden_states=True).hidden_states
        for option, expected in (("1", states[1]), ("2", states[2]), ("1-2", (states[1] + states[2]) / 2)):
            torch.testing.assert_close(built(folders["w2v"], layer=option).step_features(wave), expected[0])
    with pytest.raises(VafusionError, match=r"tiny-w2v.layer=3: use a layer 1..2"):
        built(folders["w2v"], layer="3")
    with pytest.raises(VafusionError, match=r"layer=x: use a layer number"):
        ExtractOptions(features=(f"hf:{folders['w2v']}",), extractor_options={f"hf:{folders['w2v']}": {"layer": "x"}})


@pytest.mark.parametrize("kind", ["w2v-4", "whisper-4"])
def test_layers_after_the_chosen_ones_are_not_computed(kind, folders):
    """layer=k keeps k+1 of 4 layers (the next one keeps hidden_states[k] free of the final norm):
    the rows equal the whole model's hidden states, and the layers after are gone."""
    whole = built(folders[kind], layer="4")
    wave = noise(1.5, seed=4)
    with torch.inference_mode():
        states = whole.encoder.hidden_states(wave, torch.device("cpu"))
        for option, expected, kept in (
            ("1", states[1], 2),
            ("2-3", (states[2] + states[3]) / 2, 4),
            ("4", states[4], 4),
        ):
            ext = built(folders[kind], layer=option)
            torch.testing.assert_close(ext.step_features(wave), expected[0])
            model = ext.encoder.model
            assert len(model.layers if kind.startswith("whisper") else model.encoder.layers) == kept


@pytest.mark.parametrize("kind", ["whisper-local", "w2v-local"])
def test_a_beep_lands_on_its_frame(kind, folders, alignment_corpus, tmp_path):
    """Through the real track pass and aligner: rows that differ from silence are the beeps'
    frames and their neighbours, each beep's own frame the strongest."""
    entry = f"hf:{folders[kind]}"
    report = extract(alignment_corpus, tmp_path / "cache", ExtractOptions(features=(entry,), workers=0, progress=False))
    assert report.ok, report.failures
    with open_feature_file(tmp_path / "cache", f"hf-{folders[kind].name}") as ff:
        rows, mask = ff.read("align")
    assert mask.all()
    dist = np.linalg.norm(rows.astype(np.float32) - np.median(rows.astype(np.float32), axis=0), axis=1)
    hears = set(np.flatnonzero(dist > 0.2 * dist.max()) + 1)
    for beep in (25, 70):
        assert beep in hears and int(np.argmax(dist[beep - 3 : beep + 2])) == 2, sorted(hears)
    # Whisper's first step also differs from silence: its convolutions pad the window with zeros,
    # and the log-mel of silence is not zero (frame 1 is that step alone).
    edge = {1} if kind.startswith("whisper") else set()
    assert all(min(abs(k - b) for b in (25, 70)) <= 1 for k in hears - edge), sorted(hears)


def test_provenance_names_the_files_and_settings(folders):
    prov = built(folders["whisper"]).provenance()
    assert prov["model"] == "folder tiny-whisper" and prov["encoder"] == "whisper" and prov["weights"] == "default"
    assert prov["files"] == {"model.safetensors": hf_audio.sha256_file(folders["whisper"] / "model.safetensors")}
    assert prov["preprocessing"]["feature_size"] == 80 and prov["layer"] == "mean of 1-2 (of 2)"
    assert prov["step"].startswith("20 ms (320 samples), 30 s windows")
    random = built(folders["whisper"], "random").provenance()
    assert random["weights"] == "random" and "files" not in random and random["config_sha256"] == prov["config_sha256"]


def test_sources_and_options_are_checked_before_any_work(tmp_path):
    assert hf_audio.Source.of("hf:openai/whisper-base") == hf_audio.Source("openai/whisper-base", None)
    assert hf_audio.Source.of("hf:openai/whisper-base").feature == "hf-openai-whisper-base"
    assert hf_audio.Source.of(f"hf:{tmp_path}").folder == tmp_path
    for entry, match in (
        ("hf:./no/such/folder", r"is neither a folder .* nor a Hugging Face hub id"),
        ("hf:", r"is neither a folder"),
    ):
        with pytest.raises(VafusionError, match=match):
            ExtractOptions(features=(entry,))
    entry = f"hf:{tmp_path}"
    with pytest.raises(VafusionError, match=r"--weights hf:.*=w.pt: use default .* or random"):
        ExtractOptions(features=(entry,), weights={entry: "w.pt"})
    with pytest.raises(VafusionError, match=r"has no option 'bins' \(its options: layer, chunk, context\)"):
        ExtractOptions(features=(entry,), extractor_options={entry: {"bins": "3"}})
    with pytest.raises(VafusionError, match=r"could not load it .*config.json, preprocessor_config.json"):
        registry.build(entry, ExtractOptions(features=(entry,)).extractor_settings())


def test_a_hub_id_that_cannot_be_fetched_is_one_line(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nmore")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    entry = "hf:openai/whisper-base"
    with pytest.raises(VafusionError) as caught:
        registry.build(entry, ExtractOptions(features=(entry,)).extractor_settings())
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{entry}: could not load it (We couldn't connect")
    assert "downloads into the Hugging Face cache" in message
