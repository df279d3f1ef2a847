"""torchvision backbones: every accepted weights form loads exactly, every bad one fails clearly,
and every torchvision classification model gives the input of its final classifier."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from vafusion.errors import VafusionError
from vafusion.extract.frame_pass import decode_crop
from vafusion.extract.torchvision_backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_backbone,
    preprocess_batch,
)

RESNET_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


def build_resnet(name: str, weights) -> tuple[torch.nn.Module, dict]:
    backbone = build_backbone(name, weights)
    return backbone.model, backbone.provenance


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
    with pytest.raises(VafusionError, match=r"nothere.pth: no such weights file"):
        build_resnet("resnet18", str(tmp_path / "nothere.pth"))
    with pytest.raises(VafusionError, match="resnet99: not a torchvision classification model"):
        build_resnet("resnet99", "random")


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


@pytest.mark.parametrize("name", list(RESNET_DIMS))
def test_output_dims(name, inputs):
    model, prov = build_resnet(name, "random")  # resnet50/101 built once each, here only
    with torch.no_grad():
        out = model(inputs)
    assert out.shape == (2, RESNET_DIMS[name]) == (2, prov["dim"])
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
    with pytest.raises(VafusionError, match=r"00004.jpg: unreadable face crop") as err:
        decode_crop(bad, 16)
    assert "\n" not in str(err.value)
    with pytest.raises(VafusionError, match=r"00009.jpg"):
        decode_crop(tmp_path / "00009.jpg", 16)


# ------------------------------------------------------- any torchvision model ---

REPRESENTATIVES = {  # torchvision module -> one of its models (the head is defined once per module)
    "alexnet": "alexnet",
    "convnext": "convnext_tiny",
    "densenet": "densenet121",
    "efficientnet": "efficientnet_b0",
    "googlenet": "googlenet",
    "inception": "inception_v3",
    "maxvit": "maxvit_t",
    "mnasnet": "mnasnet0_5",
    "mobilenetv2": "mobilenet_v2",
    "mobilenetv3": "mobilenet_v3_small",
    "regnet": "regnet_x_400mf",
    "resnet": "resnet18",
    "shufflenetv2": "shufflenet_v2_x0_5",
    "squeezenet": "squeezenet1_1",
    "swin_transformer": "swin_t",
    "vgg": "vgg11",
    "vision_transformer": "vit_b_32",
}


def test_every_torchvision_family_gives_the_input_of_its_classifier():
    from vafusion.extract.torchvision_backbones import _architecture, classifier_layer, model_names

    modules = {torchvision.models.get_model_builder(n).__module__.rsplit(".", 1)[1] for n in model_names()}
    assert modules == set(REPRESENTATIVES), "a new torchvision model family: add a representative"
    for name in REPRESENTATIVES.values():
        with warnings.catch_warnings(), torch.device("cpu" if name.startswith("regnet") else "meta"):
            warnings.simplefilter("ignore", FutureWarning)  # googlenet/inception: "init will change" notices
            full = torchvision.models.get_model(name, weights=None)  # regnet computes while building: CPU
        _, layer = classifier_layer(full)
        assert (getattr(layer, "out_features", None) or layer.out_channels) == 1000, name  # the logits layer
        trunk, _prefix, dim = _architecture(name, "meta")
        device = next(trunk.parameters()).device
        with torch.no_grad():
            emb = trunk.eval()(torch.zeros(1, 3, 224, 224, device=device))
        assert emb.shape == (1, dim), name
        assert dim == (layer.in_features if isinstance(layer, torch.nn.Linear) else layer.in_channels)


def test_non_resnet_checkpoint_ignores_its_classifier(tmp_path: Path, inputs):
    """efficientnet_b0 (classifier.1) and regnet (built on the CPU, not meta): a checkpoint with
    another number of classes loads into the trunk, and gives that trunk's embedding exactly."""
    for name, head in (("efficientnet_b0", "classifier.1"), ("regnet_x_400mf", "fc")):
        source = torchvision.models.get_model(name, weights=None, num_classes=7).eval()
        path = tmp_path / f"{name}.pth"
        torch.save({"state_dict": source.state_dict()}, path)
        backbone = build_backbone(name, path)
        source.set_submodule(head, torch.nn.Identity())
        with torch.no_grad():
            assert torch.equal(backbone.model(inputs), source(inputs))
        assert (
            backbone.provenance["weights"] == f"file:{path.name}"
            and backbone.provenance["dim"] == source(inputs).shape[1]
        )


def test_mobilenet_frame_extractor_random_and_default_offline(tmp_path: Path, monkeypatch):
    from vafusion.extract.options import ExtractOptions
    from vafusion.extract.registry import build

    opts = ExtractOptions(features=("mobilenet_v3_small",), visual_weights="random", image_size=32)
    ext = build("mobilenet_v3_small", opts.extractor_settings()).extractor.to(torch.device("cpu"))
    crops = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = ext(crops)
    assert ext.kind == "frame" and ext.dim == 1024 and ext.image_size == 32 and out.shape == (3, 1024)
    prov = ext.provenance()
    assert prov["model"] == "mobilenet_v3_small" and prov["weights"] == "random" and prov["dim"] == 1024
    assert (
        prov["preprocessing"]["mean"] == list(IMAGENET_MEAN) and prov["timing"] == "frame k <-> instant (k - 1) / fps"
    )

    # default weights: torchvision's builder reads them from the hub cache (no network here)
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    cached = tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[1]
    cached.parent.mkdir()
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), cached)
    opts = ExtractOptions(features=("mobilenet_v3_small",), weights={"mobilenet_v3_small": "default"}, image_size=32)
    prov = build("mobilenet_v3_small", opts.extractor_settings()).provenance()
    assert prov["weights"] == f"imagenet:{weights.name}" and prov["url"] == weights.url
    assert prov["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert prov["preprocessing"]["mean"] == list(weights.transforms().mean)
    assert prov["preprocessing"]["std"] == list(weights.transforms().std)
