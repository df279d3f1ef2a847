"""Golden constants recorded with the extraction code before extractors became plug-ins
(commit 7abc68d): existing caches must stay valid and resumable, so the built-ins' provenance
(hence fingerprints) and numbers may not move.

Fingerprints and the log-mel / patch-index hashes are exact; network outputs are compared
with a tolerance (oneDNN may round differently on another CPU).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from vafusion.cache import schema
from vafusion.cache.reader import open_feature_file
from vafusion.extract import align, logmel, vggish
from vafusion.extract.options import ExtractOptions
from vafusion.extract.registry import build

FINGERPRINTS = {  # (feature, image size) -> fingerprint, weights "random"
    ("resnet18", 32): "401122b7b8ba85ddd53469df9abba7ba9c36288c77827d58463f67445e075622",
    ("resnet34", 32): "164fa59307eb8b756279a0903c8f6aab24287897de5ab99c06c098d059e19216",
    ("resnet50", 32): "4e9a20c263e51456a90780b9a1d9f4c171cb106486c6ce102d2938a100e73260",
    ("resnet101", 32): "5ae0ac9462623d13bb215227ea4dc95525d30f831100a665a80c55a0af67e031",
    ("resnet50", 224): "d487e24931b30586b20d187474b24400148bf91b18b3340ef971730490b6b384",
    ("vggish", None): "90626c247912ee8754d65423d649f110f26dc2a8dd4483cc0bc6d3bbbbe3c0a8",
    ("logmel", None): "b430efef35b842a64f0006b80911857c35efc9fa5c8ddd69b7fb5e0c401d5bef",
}

PROVENANCE = {  # the canonical JSON behind three of them, so a failure shows what moved
    "resnet18": '{"dim":512,"input":"face crops","missing":"no crop: zero row, mask False","model":"resnet18",'
    '"preprocessing":{"color":"RGB","image_size":32,"mean":[0.485,0.456,0.406],"resize":"bilinear-antialias",'
    '"scale":"1/255","std":[0.229,0.224,0.225]},"sha256":null,"timing":"frame k <-> instant (k - 1) / fps",'
    '"weights":"random"}',
    "vggish": '{"frontend":{"dc_bin":"zeroed","fmax":7500.0,"fmin":125.0,"hop":"10 ms (160)","log":"log(x + 0.01)",'
    '"mel_bands":64,"mel_scale":"htk","n_fft":512,"sample_rate":16000,"window":"periodic-hann 25 ms (400)"},'
    '"model":"vggish","patch":"0.96 s (96 log-mel frames) centred on each frame\'s instant, edge-padded",'
    '"postprocess":null,"sha256":null,"timing":"frame k <-> instant (k - 1) / fps","weights":"random"}',
    "logmel": '{"frontend":{"dc_bin":"zeroed","fmax":7500.0,"fmin":125.0,"hop":"10 ms (160)","log":"log(x + 0.01)",'
    '"mel_bands":64,"mel_scale":"htk","n_fft":512,"sample_rate":16000,"window":"periodic-hann 25 ms (400)"},'
    '"model":"logmel","pooling":"mean over [t - 0.5/fps, t + 0.5/fps)","timing":"frame k <-> instant (k - 1) / fps"}',
}

LOG_MEL_HASHES = {  # fps -> (sha256 of pooled_log_mel float32 bytes, sha256 of the VGGish patch indices int64 bytes)
    25.0: (
        "92ff46949f5bd8703882f04eda3ea3c5332b8827826e176cbd7deb17f91261d9",
        "29fc010ca499d022299c273600ed77d45cc3a8f0e0faf2896c243c269112fe5d",
    ),
    30.0: (
        "40414a211385705eca644471fa94aadf1106b38865f47850d2bd5ea440b404eb",
        "d8342b38462a5beec01995d929d8b0d3aee54b284e8a7849d82bec0756f432f9",
    ),
    30000 / 1001: (
        "e9d639256b9a9e4792262424ea9bf4e388515a90dab950ea9b98afdc1a936c80",
        "f804796846360dbb728a199a83446dde3da6579adb44bef08b7b128ffc3248a4",
    ),
    40.0: (
        "fd394ca7de43f164499c07b7aeda791b955806b633d75c46723f76b7ab3d94e8",
        "65aafacfc0933084c8136e2fd527631d23caae668eef59c52721822c2b819abb",
    ),
    60.0: (
        "234ca789a2d8a6ad86395336d5a16f387f771006f3ecff75a9a947a2b947d78a",
        "04c7ae49ae7bd572ee5b996d77331df420172fa9e8c01ecf87a0d568aa95d5c3",
    ),
    7.5: (
        "f09a64d7bed02ce6db0046e7dd8c0d266bc1fd3a70cfc148fe42b8cd7fec059f",
        "3d7b40201b5533e5d212e63f68353a97f06b797fb5174bd75b02bba129148aa6",
    ),
    240.0: (
        "4887d96beab229cbddde71789c49d9c518d40c04cefb40ef234c30bba94c1aa1",
        "8df7ebccfd951b20824d405a9d471154bef6d4720ce5a5a7f2f6392271895912",
    ),
}

OUTPUTS = {  # random-weight networks on fixed inputs: (sum, sum |x|, first 4 values of row 0)
    "resnet18": (
        551.9728279897245,
        551.9728279897245,
        [0.12044624984264374, 1.7638369798660278, 0.13209901750087738, 0.19776082038879395],
    ),
    "vggish": (2.4262573693704326, 2.4262573693704326, [0.0, 0.0, 0.0, 0.0016195218777284026]),
}

TINY_CACHE = {  # the tiny_extracted fixture's cache: (sum, sum |x|, mask True rows, rows) over all ids
    "resnet18": (47289.19514334202, 47289.19514334202, 350, 384),
    "vggish": (199.63545924425125, 199.63545924425125, 343, 384),
    "logmel": (-24683.575139403343, 28916.433107972145, 343, 384),
}


def _provenance(feature: str, image_size: int | None) -> dict:
    opts = ExtractOptions(
        features=(feature,), visual_weights="random", vggish_weights="random", image_size=image_size or 224
    )
    return build(feature, opts.extractor_settings()).provenance()


@pytest.mark.parametrize("feature,image_size", [k for k in FINGERPRINTS if k[0] not in ("resnet34", "resnet101")])
def test_built_in_fingerprints_unchanged(feature, image_size):
    prov = _provenance(feature, image_size)
    if feature in PROVENANCE and image_size in (32, None):
        assert schema.canonical_json(prov) == PROVENANCE[feature]
    assert schema.fingerprint(prov) == FINGERPRINTS[(feature, image_size)]


def test_resnet34_101_fingerprints_unchanged():
    """Their provenance is resnet18's with another name and dim (built on meta: no 1 s init)."""
    for name, dim in (("resnet34", 512), ("resnet101", 2048)):
        prov = json.loads(PROVENANCE["resnet18"])
        prov.update(model=name, dim=dim)
        assert schema.fingerprint(prov) == FINGERPRINTS[(name, 32)]
    from vafusion.extract.torchvision_backbones import _architecture

    assert [_architecture(n, "meta")[2] for n in ("resnet34", "resnet101")] == [512, 2048]


@pytest.mark.parametrize("fps", list(LOG_MEL_HASHES))
def test_log_mel_pooling_and_patch_indices_unchanged(fps):
    lm = torch.randn(130, 64, generator=torch.Generator().manual_seed(3))
    n = int(1.6 * fps) + 2
    t = align.frame_instants(fps, n)
    pooled, patches = LOG_MEL_HASHES[fps]
    assert hashlib.sha256(logmel.pooled_log_mel(lm, t).numpy().tobytes()).hexdigest() == pooled
    assert hashlib.sha256(vggish.vggish_patch_indices(t, 130).numpy().tobytes()).hexdigest() == patches


def _check_output(y: torch.Tensor, expected) -> None:
    total, absolute, head = expected
    assert float(y.double().sum()) == pytest.approx(total, rel=1e-4)
    assert float(y.double().abs().sum()) == pytest.approx(absolute, rel=1e-4)
    np.testing.assert_allclose(y[0, :4].numpy(), head, rtol=1e-3, atol=1e-6)


def test_network_outputs_unchanged():
    opts = ExtractOptions(
        features=("resnet18", "vggish"), visual_weights="random", vggish_weights="random", image_size=32
    )
    x = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    resnet = build("resnet18", opts.extractor_settings()).extractor.to(torch.device("cpu"))
    net = build("vggish", opts.extractor_settings()).extractor.to(torch.device("cpu"))
    patches = torch.randn(4, 1, 96, 64, generator=torch.Generator().manual_seed(5)) * 3
    with torch.inference_mode():
        _check_output(resnet(x), OUTPUTS["resnet18"])
        _check_output(net.run_batch(patches), OUTPUTS["vggish"])


def test_extracted_cache_unchanged(tiny_extracted):
    _, cache, report = tiny_extracted
    assert report.ok
    for feature, (total, absolute, valid, rows) in TINY_CACHE.items():
        with open_feature_file(cache, feature) as ff:
            assert ff.fingerprint == FINGERPRINTS[(feature, 32 if feature == "resnet18" else None)]
            data = [ff.read(v) for v in sorted(ff.ids)]
        values = [f.astype(np.float64) for f, _ in data]
        assert sum(int(m.sum()) for _, m in data) == valid and sum(len(m) for _, m in data) == rows
        assert sum(v.sum() for v in values) == pytest.approx(total, rel=1e-3)
        assert sum(np.abs(v).sum() for v in values) == pytest.approx(absolute, rel=1e-3)
