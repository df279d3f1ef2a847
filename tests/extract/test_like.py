"""``vafusion extract --like CACHE``: the same features and settings as CACHE, checked by fingerprint."""

from __future__ import annotations

import shutil

import pytest
import torch
import torchvision

from tests.faults.conftest import invoke, one_line_error
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.reader import open_feature_file
from vafusion.errors import VafusionError
from vafusion.extract.like import like_settings
from vafusion.extract.options import ExtractOptions
from vafusion.extract.run import extract

QUICK = ["--workers", "0", "--device", "cpu", "--threads", "1"]


def _fingerprints(cache) -> dict[str, str]:
    out = {"corpus": read_corpus_index(cache).fingerprint}
    for feature in ("resnet18", "vggish", "logmel"):
        if (cache / f"{feature}.h5").exists():
            with open_feature_file(cache, feature) as ff:
                out[feature] = ff.fingerprint
    return out


def test_like_reproduces_the_fingerprints_of_a_cache_for_the_same_corpus(tiny_extracted, tmp_path):
    corpus, cache, _ = tiny_extracted
    model = tmp_path / "model"
    model.mkdir()
    for name in ("corpus.h5", "resnet18.h5", "logmel.h5"):  # two of its features keep the test quick
        shutil.copy(cache / name, model / name)
    result = invoke("extract", corpus.root, "--cache", tmp_path / "new", "--like", model, *QUICK)
    assert result.exit_code == 0, result.output
    assert _fingerprints(tmp_path / "new") == _fingerprints(model)
    assert set(_fingerprints(tmp_path / "new")) == {"corpus", "resnet18", "logmel"}


@pytest.fixture(scope="module")
def weights_cache(face_corpus, tmp_path_factory):
    """``face_corpus`` extracted with resnet18 from a local weights file (beside the cache), at 32 px."""
    root = tmp_path_factory.mktemp("like")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), root / "mine.pt")
    opts = ExtractOptions(
        features=("resnet18",), weights={"resnet18": str(root / "mine.pt")}, image_size=32, workers=0, progress=False
    )
    assert extract(face_corpus.root, root / "cache", opts).ok
    return root


def test_like_finds_the_weights_file_by_name_and_sha256_or_asks_for_it(face_corpus, weights_cache, tmp_path):
    elsewhere = tmp_path / "model"
    shutil.copytree(weights_cache / "cache", elsewhere)
    with pytest.raises(VafusionError, match=r"weights file mine\.pt .*--weights resnet18=PATH"):
        like_settings(elsewhere, {}, {})
    settings = like_settings(weights_cache / "cache", {}, {})  # found beside the cache
    assert settings["weights"] == {"resnet18": str(weights_cache / "mine.pt")} and settings["image_size"] == 32
    result = invoke(
        "extract", face_corpus.root, "--cache", tmp_path / "new", "--like", elsewhere, "--weights",
        f"resnet18={weights_cache / 'mine.pt'}", *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _fingerprints(tmp_path / "new") == _fingerprints(weights_cache / "cache")


def test_like_refuses_a_feature_that_would_come_out_otherwise(face_corpus, weights_cache, tmp_path):
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "other.pt")
    result = invoke(
        "extract", face_corpus.root, "--cache", tmp_path / "new", "--like", weights_cache / "cache", "--weights",
        f"resnet18={tmp_path / 'other.pt'}", *QUICK,
    )  # fmt: skip
    one_line_error(result, "--like", "resnet18", "sha256", "--weights resnet18=PATH")
    assert not (tmp_path / "new" / "resnet18.h5").exists()


def test_like_reads_back_timm_and_vad_features(alignment_corpus, tmp_path):
    """Families of open-ended names: the entry (timm:NAME) and the options given come from the provenance."""
    vit = "timm:test_vit.r160_in1k"
    opts = ExtractOptions(
        features=(vit, "vad"),
        weights={vit: "random"},
        extractor_options={vit: {"image_size": "48", "crop_pct": "1"}},
        workers=0,
        progress=False,
    )
    assert extract(alignment_corpus, tmp_path / "model", opts).ok
    settings = like_settings(tmp_path / "model", {}, {})
    assert settings["features"] == (vit, "vad") and settings["weights"] == {vit: "random", "vad": "default"}
    assert settings["extractor_options"] == {vit: {"crop_pct": "1", "image_size": "48"}}
    assert extract(alignment_corpus, tmp_path / "new", ExtractOptions(**settings, workers=0, progress=False)).ok
    for name in ("timm-test_vit.r160_in1k", "vad"):
        with open_feature_file(tmp_path / "model", name) as a, open_feature_file(tmp_path / "new", name) as b:
            assert a.fingerprint == b.fingerprint, name
