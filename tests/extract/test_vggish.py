"""VGGish frontend, network, PCA and frame alignment against the reference port.

The reference (``torchvggish`` 0.2, a test-only dependency) is used without any
network access: its numpy log-mel, its module layout built from ``make_layers``
and its Postprocessor with parameters injected by hand.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from vafusion.errors import VafusionError
from vafusion.extract import vggish as V

pytest.importorskip("torchvggish", reason="the reference VGGish port is a test-only dependency (pip install -e .[dev])")
from torchvggish import mel_features, vggish_params  # noqa: E402
from torchvggish import torchvggish as ref_vggish  # noqa: E402

SR = 16000


def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """The VGGish reference preprocessing (vggish_input.waveform_to_examples, before framing)."""
    return mel_features.log_mel_spectrogram(
        np.asarray(x, dtype=np.float64),
        audio_sample_rate=vggish_params.SAMPLE_RATE,
        log_offset=vggish_params.LOG_OFFSET,
        window_length_secs=vggish_params.STFT_WINDOW_LENGTH_SECONDS,
        hop_length_secs=vggish_params.STFT_HOP_LENGTH_SECONDS,
        num_mel_bins=vggish_params.NUM_MEL_BINS,
        lower_edge_hertz=vggish_params.MEL_MIN_HZ,
        upper_edge_hertz=vggish_params.MEL_MAX_HZ,
    )


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = SR + 123  # odd length: last partial frame dropped
    t = np.arange(n) / SR
    chirp = 0.5 * np.sin(2 * np.pi * (50 * t + 0.5 * 7900 * t**2))  # 50 Hz -> ~8 kHz
    # Speech-like: a 120 Hz glottal harmonic series, syllable-rate envelope, some noise.
    f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(h * phase) / h for h in range(1, 30))
    speech = 0.2 * voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(n)
    return {
        "noise": 0.3 * rng.standard_normal(n),
        "chirp": chirp,
        "speech": speech,
        "silence": np.zeros(n),
        "faint": 1e-4 * rng.standard_normal(n),
        "loud_square": np.sign(np.sin(2 * np.pi * 440 * t)),
        "one_frame": rng.uniform(-1, 1, 400),
        "two_frames_minus_one": rng.uniform(-1, 1, 559),
        "two_frames": rng.uniform(-1, 1, 560),
    }


# ------------------------------------------------------------------ log-mel ---


@pytest.mark.parametrize("name", list(_signals()))
def test_log_mel_matches_reference(name: str) -> None:
    x = _signals()[name].astype(np.float32)  # both sides see the same float32 samples
    ref = reference_log_mel(x)
    ours = V.log_mel(x)
    assert ours.dtype == torch.float32
    assert ours.shape == ref.shape
    assert np.abs(ours.numpy().astype(np.float64) - ref).max() < 1e-4


def test_log_mel_chunks_and_float64_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    # Noise, then a pure tone (needs the float64 fallback), then speech-like,
    # then beeps in digital silence, over many small chunks: fast path, partial
    # and whole-chunk fallback, and the switch back must all agree.
    monkeypatch.setattr(V, "_LOG_MEL_CHUNK", 64)
    sig = _signals()
    rng = np.random.default_rng(1)
    t = np.arange(3 * SR) / SR
    x = np.concatenate(
        [
            0.1 * rng.standard_normal(3 * SR),
            0.9 * np.sin(2 * np.pi * 440 * t),
            sig["speech"],
            np.where(np.abs(t % 0.5 - 0.25) < 0.01, 0.8 * np.sin(2 * np.pi * 1000 * t), 0.0),
            sig["noise"][:777],
        ]
    ).astype(np.float32)
    ref = reference_log_mel(x)
    ours = V.log_mel(torch.from_numpy(x))
    assert ours.shape == ref.shape
    assert np.abs(ours.numpy() - ref).max() < 1e-4


def test_log_mel_fast_path_precision() -> None:
    sig = _signals()
    noise = sig["noise"].astype(np.float32)
    assert np.abs(V.log_mel(noise, precise=False).numpy() - reference_log_mel(noise)).max() < 1e-4
    # A pure tone beside empty bands is where float32 rounding shows; the
    # default path must not, the fast path may (that is why the check exists).
    tone = (0.9 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    ref = reference_log_mel(tone)
    assert np.abs(V.log_mel(tone).numpy() - ref).max() < 1e-5
    assert np.abs(V.log_mel(tone, precise=False).numpy() - ref).max() < 3e-3


def test_mel_matrix_equals_reference() -> None:
    ref = mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=16000, lower_edge_hertz=125, upper_edge_hertz=7500
    )
    assert np.abs(V.mel_matrix() - ref).max() < 1e-12


def test_log_mel_too_short_and_resampled() -> None:
    assert V.log_mel(np.zeros(399, np.float32)).shape == (0, 64)
    assert V.log_mel(np.zeros(0, np.float32)).shape == (0, 64)
    x8k = np.random.default_rng(2).standard_normal(8000).astype(np.float32)
    import torchaudio.functional as AF

    expected = V.log_mel(AF.resample(torch.from_numpy(x8k), 8000, 16000))
    assert torch.equal(V.log_mel(x8k, sample_rate=8000), expected)
    with pytest.raises(ValueError):
        V.log_mel(np.zeros((2, 1000), np.float32))


def test_frame_centre_constants() -> None:
    assert V.LOG_MEL_HOP_S == pytest.approx(0.010)
    assert V.LOG_MEL_CENTRE_OFFSET_S == pytest.approx(0.0125)
    assert V.frame_centre_seconds(0) == pytest.approx(0.0125)
    assert V.frame_centre_seconds(3) == pytest.approx((160 * 3 + 200) / 16000)


# ------------------------------------------------------------------ network ---


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory: pytest.TempPathFactory):
    """A randomly initialised reference VGG (torchvggish layout) and its saved state_dict."""
    torch.manual_seed(123)
    ref = ref_vggish.VGG(ref_vggish.make_layers(), postprocess=False).eval()
    path = tmp_path_factory.mktemp("vggish") / "vggish-test.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def test_vggish_loads_reference_state_dict_and_matches(reference_weights) -> None:
    ref, path = reference_weights
    model, prov = V.load_vggish(path)
    assert list(model.state_dict()) == list(ref.state_dict())
    assert prov["model"] == "vggish" and prov["weights"] == path.name
    assert prov["sha256"] == V.sha256_file(path) and len(prov["sha256"]) == 64
    assert not model.training
    x = torch.randn(3, 1, 96, 64, generator=torch.Generator().manual_seed(5)) * 3
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    assert ours.shape == (3, 128)
    assert (theirs > 0).any()  # the comparison is not between two all-zero outputs
    assert (ours - theirs).abs().max() < 1e-5


def test_vggish_state_dict_keys() -> None:
    expected = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")}
    expected |= {f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    with torch.device("meta"):
        assert set(V.VGGish().state_dict()) == expected


def test_vggish_random_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, prov = V.load_vggish("random")
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = V.load_vggish("random")
    assert prov == {"model": "vggish", "weights": "random", "sha256": None}
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_vggish_rejects_wrong_files(tmp_path) -> None:
    resnet_like = {
        "conv1.weight": torch.zeros(64, 3, 7, 7),
        "bn1.weight": torch.zeros(64),
        "fc.weight": torch.zeros(1000, 512),
        "fc.bias": torch.zeros(1000),
    }
    p = tmp_path / "resnet.pth"
    torch.save(resnet_like, p)
    with pytest.raises(VafusionError) as err:
        V.load_vggish(p)
    msg = str(err.value)
    assert "resnet.pth" in msg and "missing" in msg and "unexpected" in msg and "conv1.weight" in msg
    assert "\n" not in msg

    with torch.device("meta"):
        keys = list(V.VGGish().state_dict())
    wrong_shape = {k: torch.zeros(1) for k in keys}
    p2 = tmp_path / "shapes.pth"
    torch.save(wrong_shape, p2)
    with pytest.raises(VafusionError, match=r"shapes.pth: .*features.0.weight has shape \(1,\), VGGish needs \(64, 1, 3, 3\)"):
        V.load_vggish(p2)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 100)
    with pytest.raises(VafusionError, match="garbage.pth"):
        V.load_vggish(garbage)

    with pytest.raises(VafusionError, match="nope.pth"):
        V.load_vggish(tmp_path / "nope.pth")


# ---------------------------------------------------------------------- PCA ---


def _pca_params(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    eig = rng.standard_normal((128, 128)) / 8.0
    means = rng.standard_normal(128) * 0.5
    return eig, means


def _numpy_postprocess(emb: np.ndarray, eig: np.ndarray, means: np.ndarray) -> np.ndarray:
    """The AudioSet release's vggish_postprocess.Postprocessor.postprocess, in numpy."""
    pca = np.dot(eig, (emb.T - means.reshape(-1, 1))).T
    clipped = np.clip(pca, -2.0, 2.0)
    return np.round((clipped - -2.0) * (255.0 / 4.0))


def test_pca_from_npz_equals_numpy_reference(tmp_path) -> None:
    eig, means = _pca_params()
    path = tmp_path / "vggish_pca_params.npz"
    np.savez(path, pca_eigen_vectors=eig, pca_means=means)
    pca = V.VGGishPCA.from_file(path)
    assert pca.provenance == {"pca": path.name, "pca_sha256": V.sha256_file(path)}
    emb = torch.rand(50, 128, generator=torch.Generator().manual_seed(0)) * 2
    out = pca(emb)
    assert out.dtype == torch.float32 and out.shape == (50, 128)
    expected = _numpy_postprocess(emb.double().numpy(), eig, means)
    assert np.array_equal(out.numpy(), expected)
    assert out.min() >= 0 and out.max() <= 255
    assert (out == 0).any() and (out == 255).any()  # clipping exercised at both ends

    # The PyTorch port's Postprocessor (float32), without its download.
    post = object.__new__(ref_vggish.Postprocessor)
    post._pca_matrix = torch.as_tensor(eig).float()
    post._pca_means = torch.as_tensor(means.reshape(-1, 1)).float()
    theirs = post.postprocess(emb)
    diff = (out - theirs).abs()
    assert diff.max() <= 1  # float32 vs float64 may flip a rounding at a .5 boundary
    assert (diff == 0).float().mean() > 0.99


def test_pca_from_pth_numpy_and_tensor_dicts(tmp_path) -> None:
    eig, means = _pca_params(1)
    emb = torch.rand(4, 128, generator=torch.Generator().manual_seed(1))
    expected = _numpy_postprocess(emb.double().numpy(), eig, means)
    # The published .pth holds numpy arrays (means (128, 1)); also accept tensors.
    for name, params in {
        "np.pth": {"pca_eigen_vectors": eig, "pca_means": means.reshape(-1, 1)},
        "t.pth": {"pca_eigen_vectors": torch.from_numpy(eig), "pca_means": torch.from_numpy(means)},
    }.items():
        torch.save(params, tmp_path / name)
        pca = V.VGGishPCA.from_file(tmp_path / name)
        assert np.array_equal(pca(emb).numpy(), expected)
        assert pca.provenance["pca_sha256"] == V.sha256_file(tmp_path / name)


def test_pca_rejects_bad_files(tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, pca_eigen_vectors=np.zeros((10, 10)), pca_means=np.zeros(10))
    with pytest.raises(VafusionError, match="bad.npz"):
        V.VGGishPCA.from_file(bad)
    keys = tmp_path / "keys.npz"
    np.savez(keys, something=np.zeros(3))
    with pytest.raises(VafusionError, match="keys.npz.*pca_eigen_vectors"):
        V.VGGishPCA.from_file(keys)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"garbage")
    with pytest.raises(VafusionError, match="garbage.pth"):
        V.VGGishPCA.from_file(garbage)


# ---------------------------------------------------------------- alignment ---


def beeps(instants: list[float], duration_s: float, half_width_s: float = 0.005) -> np.ndarray:
    """Silence with Hann-windowed 1 kHz bursts centred exactly at ``instants``."""
    n = int(round(duration_s * SR))
    x = np.zeros(n, np.float32)
    t = np.arange(n) / SR
    for c in instants:
        d = t - c
        m = np.abs(d) < half_width_s
        env = 0.5 + 0.5 * np.cos(np.pi * d[m] / half_width_s)
        x[m] += (0.8 * env * np.sin(2 * np.pi * 1000 * d[m])).astype(np.float32)
    return x


@pytest.mark.parametrize("fps,frames", [(25.0, [11, 37, 64, 90]), (30.0, [11, 40, 77, 108]), (30000 / 1001, [5, 50, 99])])
def test_beeps_peak_at_their_frames(fps: float, frames: list[int]) -> None:
    n_frames = int(4.0 * fps)
    instants = [(k - 1) / fps for k in frames]
    lm = V.log_mel(beeps(instants, 4.0))
    energy = V.pooled_log_mel(lm, fps, n_frames).mean(dim=1).numpy()
    silence = math.log(0.01)
    for k in frames:
        row = k - 1
        window = energy[row - 3 : row + 4]
        assert int(np.argmax(window)) == 3, (k, window)
    far = np.ones(n_frames, bool)
    for k in frames:
        far[max(k - 4, 0) : k + 3] = False
    assert np.allclose(energy[far], silence, atol=1e-5)

    patches = V.vggish_patches(lm, fps, n_frames)
    assert patches.shape == (n_frames, 1, 96, 64)
    for k in frames:
        rows = patches[k - 1, 0].mean(dim=1)
        assert int(torch.argmax(rows)) == 48  # row 48 = log-mel frame nearest the instant
        assert rows[48] > silence + 1
        assert rows[47] > silence + 0.1 and rows[49] > silence + 0.1  # neighbours overlap the beep
        assert torch.allclose(rows[:40], torch.tensor(silence), atol=1e-5)
        assert torch.allclose(rows[56:], torch.tensor(silence), atol=1e-5)


def _centre(j: int) -> Fraction:
    return Fraction(1, 80) + Fraction(j, 100)  # 0.0125 + 0.010 j, exactly


def _candidates(lo: Fraction, hi: Fraction) -> range:
    """A range of log-mel indices surely containing every centre in [lo, hi] (plus neighbours)."""
    return range(math.floor((lo - Fraction(1, 80)) * 100) - 2, math.ceil((hi - Fraction(1, 80)) * 100) + 3)


def _nearest(t: Fraction) -> int:
    # Exact arithmetic; ties go to the later frame.
    return min(_candidates(t, t), key=lambda j: (abs(_centre(j) - t), -j))


def _brute_force_patches(lm: torch.Tensor, fps: float, n_frames: int) -> torch.Tensor:
    out = torch.empty(n_frames, 1, 96, 64)
    for k in range(1, n_frames + 1):
        c = _nearest((k - 1) / Fraction(fps))
        for r, j in enumerate(range(c - 48, c + 48)):
            out[k - 1, 0, r] = lm[min(max(j, 0), lm.shape[0] - 1)]
    return out


def _brute_force_pooled(lm: torch.Tensor, fps: float, n_frames: int) -> torch.Tensor:
    out = torch.empty(n_frames, 64, dtype=torch.float64)
    lm64 = lm.double()
    half = 1 / (2 * Fraction(fps))
    for k in range(1, n_frames + 1):
        t = (k - 1) / Fraction(fps)
        js = [j for j in _candidates(t - half, t + half) if t - half <= _centre(j) < t + half]
        if not js:
            js = [_nearest(t)]
        out[k - 1] = torch.stack([lm64[min(max(j, 0), lm.shape[0] - 1)] for j in js]).mean(0)
    return out.float()


@pytest.mark.parametrize("fps", [25.0, 30.0, 30000 / 1001, 40.0, 60.0, 7.5, 240.0])
def test_alignment_matches_brute_force(fps: float) -> None:
    lm = torch.randn(130, 64, generator=torch.Generator().manual_seed(3))  # 1.3 s of log-mel
    n_frames = int(1.6 * fps) + 2  # runs past the end of the track
    assert torch.equal(V.vggish_patches(lm, fps, n_frames), _brute_force_patches(lm, fps, n_frames))
    assert torch.allclose(V.pooled_log_mel(lm, fps, n_frames), _brute_force_pooled(lm, fps, n_frames), atol=1e-5)


def test_alignment_edges_are_padded() -> None:
    lm = torch.randn(100, 64, generator=torch.Generator().manual_seed(4))
    fps, n_frames = 25.0, 60  # 2.4 s of frames, 1 s of log-mel
    patches = V.vggish_patches(lm, fps, n_frames)
    # Frame 1 (t = 0): c = round(-1.25) = -1, rows are frames -49..46 -> rows 0..49 repeat frame 0.
    assert torch.equal(patches[0, 0, :50], lm[0].expand(50, 64))
    assert torch.equal(patches[0, 0, 50:], lm[1:47])
    assert torch.equal(patches[-1, 0], lm[-1].expand(96, 64))
    pooled = V.pooled_log_mel(lm, fps, n_frames)
    assert torch.allclose(pooled[-1], lm[-1])
    const = torch.full((10, 64), 2.5)
    assert torch.allclose(V.pooled_log_mel(const, 30.0, 40), torch.tensor(2.5))
    # No log-mel frame at all: digital silence rather than an error.
    empty = torch.zeros(0, 64)
    assert torch.allclose(V.vggish_patches(empty, 25.0, 3), torch.tensor(V.SILENCE_LOG_MEL))
    assert torch.allclose(V.pooled_log_mel(empty, 25.0, 3), torch.tensor(V.SILENCE_LOG_MEL))
    assert torch.equal(V.pooled_log_mel(empty, 25.0, 3), torch.full((3, 64), V.SILENCE_LOG_MEL))
    assert torch.equal(V.vggish_patches(empty, 240.0, 5), torch.full((5, 1, 96, 64), V.SILENCE_LOG_MEL))


def test_audio_coverage_mask() -> None:
    mask = V.audio_coverage_mask(SR, 25.0, 30)  # 1 s of audio: frames at 0.00 .. 0.96 s
    assert mask.dtype == bool and mask.shape == (30,)
    assert mask[:25].all() and not mask[25:].any()
    assert not V.audio_coverage_mask(0, 25.0, 3).any()
