"""The ResNet backbone: every accepted weights form loads exactly, every bad one fails clearly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from vafusion.errors import VafusionError
from vafusion.extract import resnet
from vafusion.extract.resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_resnet,
    decode_crop,
    preprocess_batch,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny forwards gain nothing from intra-op threads, and on a loaded 2-core box OpenMP
    barriers make them ~20x slower; restore the setting for the rest of the session."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def source() -> torchvision.models.ResNet:
    """A resnet18 with seeded random weights and non-trivial BatchNorm statistics."""
    gen = torch.Generator().manual_seed(123)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=gen)
                # running_var must stay positive; everything else may take any value
                tensor.copy_(noise + 0.5 if name.endswith("running_var") else (noise - 0.5) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def expected(source: torchvision.models.ResNet, inputs: torch.Tensor) -> torch.Tensor:
    """The source model's trunk output: its forward with the classifier removed."""
    trunk = torchvision.models.resnet18(weights=None)
    trunk.load_state_dict(source.state_dict())
    trunk.fc = torch.nn.Identity()
    with torch.no_grad():
        return trunk.eval()(inputs)


def _forms(state: dict[str, torch.Tensor]) -> dict[str, object]:
    trunk_only = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return {
        "plain_with_fc": state,
        "plain_without_fc": trunk_only,
        "nested_state_dict": {"epoch": 3, "state_dict": state, "optimizer_name": "sgd"},
        "nested_model": {"model": trunk_only, "step": torch.tensor(5)},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
        "nested_module_prefix": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
        "half_precision": {k: (v.half() if v.is_floating_point() else v) for k, v in trunk_only.items()},
    }


FORM_NAMES = list(_forms({}).keys())


@pytest.mark.parametrize("form", FORM_NAMES)
def test_checkpoint_forms_load_exactly(form, source, inputs, expected, tmp_path: Path):
    path = tmp_path / f"{form}.pth"
    torch.save(_forms(source.state_dict())[form], path)
    model, prov = build_resnet("resnet18", str(path))
    assert not model.training
    with torch.no_grad():
        out = model(inputs)
    assert out.shape == (2, 512)
    if form == "half_precision":
        assert torch.allclose(out, expected, atol=5e-2, rtol=5e-2)
    else:
        assert torch.equal(out, expected)
    assert prov == {
        "model": "resnet18",
        "weights": f"file:{path.name}",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "dim": 512,
    }
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_checkpoint_without_num_batches_tracked_loads(source, inputs, expected, tmp_path: Path):
    """Checkpoints from old torchvision versions lack BatchNorm's counter buffer."""
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}, path)
    model, _ = build_resnet("resnet18", path)
    with torch.no_grad():
        assert torch.equal(model(inputs), expected)


def test_resnet18_file_for_resnet50_is_rejected(source, tmp_path: Path):
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(VafusionError) as err:
        build_resnet("resnet50", str(path))
    message = str(err.value)
    assert "r18.pth" in message and "resnet50" in message
    assert "missing keys" in message and "layer1.0.conv3.weight" in message
    assert "\n" not in message


def test_shape_mismatch_is_named(source, tmp_path: Path):
    state = dict(source.state_dict())
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a grey-scale stem
    path = tmp_path / "grey.pth"
    torch.save(state, path)
    with pytest.raises(VafusionError, match=r"grey\.pth: .*conv1\.weight has shape \(64, 1, 7, 7\).*\(64, 3, 7, 7\)"):
        build_resnet("resnet18", str(path))


def test_unexpected_keys_are_named(source, tmp_path: Path):
    state = dict(source.state_dict())
    state["projector.weight"] = torch.zeros(4, 4)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(VafusionError, match=r"extra\.pth: .*1 unexpected keys \(e\.g\. projector\.weight\)"):
        build_resnet("resnet18", str(path))


def test_non_torch_file_is_rejected(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not weights\n")
    with pytest.raises(VafusionError) as err:
        build_resnet("resnet18", str(path))
    assert "notes.txt" in str(err.value) and "\n" not in str(err.value)


def test_dict_without_tensors_is_rejected(tmp_path: Path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "model": {"name": "resnet18"}, "lr": 0.1}, path)
    with pytest.raises(VafusionError, match=r"meta\.pth: holds no tensors"):
        build_resnet("resnet18", str(path))


def test_missing_file_and_unknown_model(tmp_path: Path):
    with pytest.raises(VafusionError, match="nothere.pth: no such weights file"):
        build_resnet("resnet18", str(tmp_path / "nothere.pth"))
    with pytest.raises(VafusionError, match="resnet152: unknown ResNet"):
        build_resnet("resnet152", "random")


def test_imagenet_weights_from_the_hub_cache_offline(source, inputs, expected, tmp_path: Path, monkeypatch):
    """The enum path, without network: a file already in the hub cache is used as is."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir()
    torch.save(source.state_dict(), cached)
    model, prov = build_resnet("resnet18", "imagenet")
    with torch.no_grad():
        assert torch.equal(model(inputs), expected)
    assert prov == {
        "model": "resnet18",
        "weights": "imagenet:IMAGENET1K_V1",
        "url": url,
        "sha256": hashlib.sha256(cached.read_bytes()).hexdigest(),
        "dim": 512,
    }


def test_imagenet_download_failure_is_one_line(tmp_path: Path, monkeypatch):
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(VafusionError) as err:
        build_resnet("resnet50", "imagenet")
    message = str(err.value)
    assert message.startswith("https://download.pytorch.org/models/resnet50-11ad3fa6.pth: could not get")
    assert str(tmp_path / "checkpoints") in message and "\n" not in message


def test_random_is_deterministic_and_leaves_global_rng_alone(inputs):
    torch.manual_seed(99)
    before = torch.rand(3)
    torch.manual_seed(99)
    a, prov = build_resnet("resnet18", "random")
    after = torch.rand(3)
    b, _ = build_resnet("resnet18", "random")
    assert torch.equal(before, after)  # the caller's RNG stream is untouched
    assert prov == {"model": "resnet18", "weights": "random", "sha256": None, "dim": 512}
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    with torch.no_grad():
        assert torch.equal(a(inputs), b(inputs))


@pytest.mark.parametrize("name", resnet.RESNETS)
def test_output_dims(name, inputs):
    model, prov = build_resnet(name, "random")  # resnet50/101 built once each, here only
    with torch.no_grad():
        out = model(inputs)
    assert out.shape == (2, resnet.EMBED_DIMS[name]) == (2, prov["dim"])
    assert prov["model"] == name


def test_preprocess_normalisation():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = preprocess_batch(images, 8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = (images.double() / 255.0 - mean.double()) / std.double()
    assert out.dtype == torch.float32 and out.shape == (2, 3, 8, 8)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    # a constant grey image resizes to the same constant; only then normalised
    grey = torch.full((1, 3, 6, 6), 128, dtype=torch.uint8)
    resized = preprocess_batch(grey, 12)
    assert resized.shape == (1, 3, 12, 12)
    assert torch.allclose(resized, ((128 / 255.0 - mean) / std).expand(1, 3, 12, 12), atol=1e-5)
    assert preprocess_batch(images, 8, dtype=torch.float16).dtype == torch.float16


def test_decode_crop_jpeg_png_and_corrupt(tmp_path: Path):
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb).save(tmp_path / "00001.jpg", quality=95)
    img = decode_crop(tmp_path / "00001.jpg", 16)
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 16)
    assert abs(int(img[0].float().mean()) - 200) <= 4 and int(img[1:].max()) <= 12

    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "00002.png")  # grey-scale PNG -> RGB
    grey = decode_crop(tmp_path / "00002.png", 16)
    assert grey.shape == (3, 16, 16) and int(grey.min()) == int(grey.max()) == 200

    square = np.ascontiguousarray(rgb[:, :20])
    square[5, 7] = (1, 2, 3)
    Image.fromarray(square).save(tmp_path / "00003.png")  # already the right size: untouched
    same = decode_crop(tmp_path / "00003.png", 20)
    assert torch.equal(same, torch.from_numpy(square).permute(2, 0, 1))

    bad = tmp_path / "00004.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(VafusionError, match="00004.jpg: unreadable face crop") as err:
        decode_crop(bad, 16)
    assert "\n" not in str(err.value)
    with pytest.raises(VafusionError, match="00009.jpg"):
        decode_crop(tmp_path / "00009.jpg", 16)
