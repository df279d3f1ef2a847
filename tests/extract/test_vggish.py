"""VGGish network and PCA against the reference port (``torchvggish`` 0.2, a test-only
dependency), used without any network access: its module layout built from ``make_layers``
and its Postprocessor with parameters injected by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

# the reference port is a test-only dependency (setup.cfg [dev]): missing, these tests fail, never skip
from torchvggish import torchvggish as ref_vggish

from vafusion.errors import VafusionError
from vafusion.extract import vggish as V

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
    with pytest.raises(
        VafusionError, match=r"shapes.pth: .*features.0.weight has shape \(1,\), VGGish needs \(64, 1, 3, 3\)"
    ):
        V.load_vggish(p2)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01not a checkpoint" * 100)
    with pytest.raises(VafusionError, match=r"garbage.pth"):
        V.load_vggish(garbage)

    with pytest.raises(VafusionError, match=r"nope.pth"):
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
    with pytest.raises(VafusionError, match=r"bad.npz"):
        V.VGGishPCA.from_file(bad)
    keys = tmp_path / "keys.npz"
    np.savez(keys, something=np.zeros(3))
    with pytest.raises(VafusionError, match=r"keys.npz.*pca_eigen_vectors"):
        V.VGGishPCA.from_file(keys)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"garbage")
    with pytest.raises(VafusionError, match=r"garbage.pth"):
        V.VGGishPCA.from_file(garbage)
