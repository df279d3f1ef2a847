"""timm models as frame extractors (``timm:<model>``): their own preprocessing, the embedding
before the classifier, local checkpoints, provenance; tiny timm models with random weights."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config

from vafusion import device
from vafusion.cache.reader import open_feature_file
from vafusion.errors import VafusionError
from vafusion.extract import registry, timm_models
from vafusion.extract.frame_pass import decode_crop
from vafusion.extract.options import ExtractOptions
from vafusion.extract.run import extract

VIT = "timm:test_vit.r160_in1k"  # 160 px, crop 0.95, mean/std 0.5, 64-d
NET = "timm:tinynet_e.in1k"  # 106 px, crop 0.875, ImageNet mean/std, 1280-d
SMALL = {VIT: {"image_size": "48"}}  # test_vit built for 48 px (9 patches): cheap enough for a corpus


def built(entry: str, weights: str = "random", **options: str) -> timm_models.TimmExtractor:
    opts = ExtractOptions(features=(entry,), weights={entry: weights}, extractor_options={entry: options})
    return registry.build(entry, opts.extractor_settings()).extractor


def test_each_model_gets_its_own_preprocessing():
    vit, net = built(VIT), built(NET)
    assert (vit.prep.size, vit.prep.crop_pct, vit.prep.mean, vit.prep.std) == (160, 0.95, (0.5,) * 3, (0.5,) * 3)
    assert (net.prep.size, net.prep.crop_pct) == (106, 0.875)
    np.testing.assert_allclose(net.prep.mean, (0.485, 0.456, 0.406))
    assert (vit.image_size, net.image_size) == (168, 121)  # the workers resize to floor(S / crop_pct)
    assert vit.interpolation == net.interpolation == "bicubic"
    assert (vit.name, vit.dim, net.name, net.dim) == ("timm-test_vit.r160_in1k", 64, "timm-tinynet_e.in1k", 1280)
    over = built(NET, crop_pct="1", interpolation="bilinear", mean="0.5,0.5,0.5", std="0.25,0.25,0.25")
    assert (over.image_size, over.interpolation, over.prep.mean, over.prep.std) == (
        106,
        "bilinear",
        (0.5,) * 3,
        (0.25,) * 3,
    )
    prov = over.provenance()["preprocessing"]
    assert prov["input_size"] == 106 and prov["resize"] == "106 px, bilinear-antialias" and prov["std"] == [0.25] * 3


def test_preprocessing_matches_timms_own_transform(tmp_path):
    """Our pipeline (resize in the worker, centre cut and normalisation on the device) against
    timm's evaluation transform on the same JPEG (PIL resize vs torchvision's: within ~2 levels)."""
    yy, xx = np.mgrid[0:112, 0:112]
    img = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).clip(0, 255).astype(np.uint8)  # smooth ramps
    path = tmp_path / "00001.png"
    Image.fromarray(img).save(path)
    for entry in (VIT, NET):
        ext = built(entry)
        crops = decode_crop(path, ext.image_size, ext.interpolation)[None]
        edge = (ext.image_size - ext.prep.size) // 2
        centre = crops[..., edge : edge + ext.prep.size, edge : edge + ext.prep.size].float()
        ours = (centre / 255 - torch.tensor(ext.prep.mean).view(1, 3, 1, 1)) / torch.tensor(ext.prep.std).view(
            1, 3, 1, 1
        )
        theirs = create_transform(**resolve_model_data_config(ext.model))(Image.open(path).convert("RGB"))[None]
        assert ours.shape == theirs.shape
        scale = 2.5 / 255 / min(ext.prep.std)
        assert float((ours - theirs).abs().mean()) < scale, entry
        with torch.inference_mode():  # and the extractor computes the model on exactly that
            torch.testing.assert_close(ext(crops), ext.model(theirs), atol=0.2, rtol=0.05)


def test_extraction_on_the_generated_corpus(tiny_extracted, tmp_path):
    corpus, shared_cache, _ = tiny_extracted
    opts = ExtractOptions(
        features=(VIT,), weights={VIT: "random"}, extractor_options=SMALL, batch_size=16, workers=0, progress=False
    )
    report = extract(corpus.root, tmp_path / "cache", opts)
    assert report.ok, report.failures
    with h5py.File(tmp_path / "cache" / "timm-test_vit.r160_in1k.h5") as f:
        assert f.attrs["dim"] == 64
    with open_feature_file(tmp_path / "cache", "timm-test_vit.r160_in1k") as ours:
        with open_feature_file(shared_cache, "resnet18") as theirs:
            for video in corpus.videos:
                rows, mask = ours.read(video.id)
                np.testing.assert_array_equal(mask, theirs.read(video.id)[1])  # the same crops are missing
                np.testing.assert_array_equal(mask, ~video.crop_missing)
                assert rows.shape == (video.n_frames, 64) and not rows[~mask].any() and np.isfinite(rows).all()
                assert rows[mask].std(axis=0).mean() > 0  # crops differ, so do their rows


def test_a_marked_crop_lands_on_its_frame(alignment_corpus, tmp_path):
    opts = ExtractOptions(features=(VIT,), weights={VIT: "random"}, extractor_options=SMALL, workers=0, progress=False)
    report = extract(alignment_corpus, tmp_path / "cache", opts)
    assert report.ok, report.failures
    with open_feature_file(tmp_path / "cache", "timm-test_vit.r160_in1k") as ff:
        rows, mask = ff.read("align")
    assert mask.all()
    rows = rows.astype(np.float32)
    dist = np.linalg.norm(rows - np.median(rows, axis=0), axis=1)
    assert dist.max() > 0.1 and np.flatnonzero(dist > 1e-3).tolist() == [9]  # frame 10 (white) alone


def test_a_local_checkpoint_loads_and_its_sha256_is_recorded(tmp_path):
    """A state_dict of the whole classifier (as a training script saves it, with `module.` from
    DataParallel): the classifier is ignored, the rest must match; .safetensors too."""
    torch.manual_seed(5)
    trained = timm.create_model("tinynet_e.in1k", pretrained=False, num_classes=8).eval()
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    assert any(k.startswith("module.classifier.") for k in state)
    pth = tmp_path / "affect.pth"
    torch.save({"state_dict": state}, pth)
    from safetensors.torch import save_file

    safe = tmp_path / "affect.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(safe))
    x = torch.randint(0, 256, (2, 3, 121, 121), dtype=torch.uint8)
    for path in (pth, safe):
        ext = built(NET, str(path))
        prov = ext.provenance()
        assert prov["weights"] == f"file:{path.name}"
        assert prov["sha256"] == timm_models.sha256_file(path)
        with torch.inference_mode():
            expected = trained.forward_head(trained.forward_features(ext_input(ext, x)), pre_logits=True)
            torch.testing.assert_close(ext(x), expected)
    bad = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet.r160_in1k", num_classes=0).state_dict(), bad)
    with pytest.raises(VafusionError, match=r"other.pth: not timm tinynet_e.in1k weights: .*missing keys"):
        built(NET, str(bad))


def ext_input(ext: timm_models.TimmExtractor, crops: torch.Tensor) -> torch.Tensor:
    """What the extractor feeds its model: the centre S x S of the resized crops, normalised."""
    edge = (crops.shape[-1] - ext.prep.size) // 2
    x = crops[..., edge : edge + ext.prep.size, edge : edge + ext.prep.size].float() / 255
    return (x - torch.tensor(ext.prep.mean).view(1, 3, 1, 1)) / torch.tensor(ext.prep.std).view(1, 3, 1, 1)


def test_two_settings_never_share_a_cache_file(alignment_corpus, tmp_path):
    """Weights and preprocessing are in the fingerprint: another setting is refused, not mixed."""
    torch.save(timm.create_model("tinynet_e.in1k", num_classes=0).state_dict(), tmp_path / "w.pth")
    fingerprints = {
        (weights, crop): built(NET, weights, **({"crop_pct": crop} if crop else {})).provenance()
        for weights, crop in (("random", None), (str(tmp_path / "w.pth"), None), ("random", "1"))
    }
    assert len({repr(sorted(p.items())) for p in fingerprints.values()}) == 3
    cache = tmp_path / "cache"
    small = {"image_size": "48"}
    opts = ExtractOptions(features=(VIT,), weights={VIT: "random"}, extractor_options={VIT: small}, workers=0)
    assert extract(alignment_corpus, cache, opts).ok
    other = ExtractOptions(
        features=(VIT,), weights={VIT: "random"}, extractor_options={VIT: {**small, "crop_pct": "1"}}, workers=0
    )
    with pytest.raises(VafusionError, match=r"timm-test_vit.r160_in1k.h5: made by another extractor"):
        extract(alignment_corpus, cache, other)


def test_options_and_weights_are_checked_before_any_work():
    for options, match in (
        ({"crop_pct": "0"}, r"timm:tinynet_e.in1k.crop_pct=0: give a fraction in \(0, 1\]"),
        ({"interpolation": "lanczos"}, r"interpolation=lanczos: use bilinear, bicubic, nearest"),
        ({"mean": "0.5,0.5"}, r"mean=0.5,0.5: give three comma-separated numbers"),
        ({"image_size": "8"}, r"image_size=8: give a size in pixels, 16..2048"),
        ({"layer": "3"}, r"has no option 'layer' \(its options: image_size, crop_pct, interpolation, mean, std\)"),
    ):
        with pytest.raises(VafusionError, match=match):
            ExtractOptions(features=(NET,), weights={NET: "random"}, extractor_options={NET: options})
    with pytest.raises(VafusionError, match=r"nope.pth: no such weights file"):
        built(NET, "nope.pth")


def test_image_size_builds_a_vit_for_it():
    ext = built(VIT, image_size="96")
    assert (ext.prep.size, ext.image_size) == (96, 101)
    with torch.inference_mode():
        assert ext(torch.zeros(2, 3, 101, 101, dtype=torch.uint8)).shape == (2, 64)


def test_bf16_runs_the_model_under_autocast_as_the_torchvision_family():
    """``--precision bf16`` on a CPU: the forward pass in bfloat16 (close to fp32, not equal to it)."""
    ext = built(VIT, image_size="48")
    crops = torch.randint(0, 256, (4, 3, ext.image_size, ext.image_size), dtype=torch.uint8)
    with torch.inference_mode():
        with device.compute(1, "fp32"):
            fp32 = ext(crops).float()
        with device.compute(1, "bf16", allow_emulated=True):
            bf16 = ext(crops).float()
    assert not torch.equal(bf16, fp32)  # autocast engaged
    assert float(torch.nn.functional.cosine_similarity(bf16, fp32).min()) > 0.99  # bf16 rounding only


def test_published_weights_that_cannot_be_fetched_are_one_line(monkeypatch):
    """No network here: timm's download failing becomes one line naming the feature and the way out."""

    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'\nmore lines")
        return real(*args, pretrained=pretrained, **kwargs)

    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(VafusionError) as caught:
        built(NET, "default")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("timm:tinynet_e.in1k: could not get its published weights")
    assert "--weights timm:tinynet_e.in1k=PATH" in message
