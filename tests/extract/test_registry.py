"""The registry: built-in names, how entries and options resolve, and the README's Features table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vafusion.errors import VafusionError
from vafusion.extract import registry, speech
from vafusion.extract.options import ExtractOptions, parse_extractor_options, parse_weights
from vafusion.extract.torchvision_backbones import _architecture, model_names


def test_built_ins_are_every_family_name_once():
    table = registry.builtins()
    assert set(model_names()) | set(speech.MODELS) | {"vggish", "logmel", "vad"} == set(table)
    assert len(table) == len(model_names()) + len(speech.MODELS) + 3
    assert {table["resnet50"].key, table["vggish"].key, table["logmel"].key, table["hubert_base"].key} == {
        "torchvision",
        "vggish",
        "logmel",
        "speech",
    }
    assert {p: f.key for p, f in registry.prefixes().items()} == {"timm": "timm", "hf": "hf"}


def test_family_prefixes_are_told_from_plugin_paths():
    """The rule: the text before the first colon exactly a family prefix -> that family; any other
    colon -> package.module:attribute (so a plug-in path that merely contains 'timm' or 'hf' stays one)."""
    timm_family, hf_family = registry.prefixes()["timm"], registry.prefixes()["hf"]
    assert registry.prefixed("timm:resnet50") is timm_family
    assert registry.prefixed("timm:vit_base_patch14_dinov2.lvd142m") is timm_family
    assert registry.prefixed("hf:openai/whisper-base") is hf_family
    assert registry.prefixed("hf:C:/models/wavlm") is hf_family  # only the first colon counts
    for plugin in ("timm_tools:Extractor", "my.timm:Extractor", "hf.models:Make", "pkg.hf:X", "mymod:timm"):
        assert registry.prefixed(plugin) is None, plugin
        assert not registry.is_builtin(plugin)
    assert registry.is_builtin("timm:resnet50") and registry.is_builtin("resnet50") and registry.is_builtin("vad")
    assert registry.find("timm:resnet50") is timm_family
    with pytest.raises(VafusionError, match=r"cannot import module 'timm_tools'"):  # a plug-in path, imported as such
        registry.find("timm_tools:Extractor")
    with pytest.raises(VafusionError, match=r"timm has no model 'no_such_net'"):
        ExtractOptions(features=("timm:no_such_net",))
    with pytest.raises(VafusionError, match=r"name a timm model after timm:"):
        ExtractOptions(features=("timm:",))
    with pytest.raises(VafusionError, match=r"built-ins: .*, hf:<name>, timm:<name>;"):
        ExtractOptions(features=("resnet5",))


def test_legacy_and_per_feature_weights():
    opts = ExtractOptions(
        features=("resnet18", "vggish", "efficientnet_b0", "logmel"),
        visual_weights="v.pt",
        vggish_weights="g.pt",
        vggish_pca="pca.npz",
        weights={"efficientnet_b0": "random"},
    )
    requests = {f: registry._request(f, registry.builtins()[f], opts.extractor_settings()) for f in opts.features}
    assert requests["resnet18"].weights == "v.pt" and requests["efficientnet_b0"].weights == "random"
    assert requests["vggish"].weights == "g.pt" and requests["vggish"].options == {"pca": "pca.npz"}
    assert requests["logmel"].weights is None
    assert (
        registry._request(
            "hubert_base",
            registry.builtins()["hubert_base"],
            ExtractOptions(features=("hubert_base",)).extractor_settings(),
        ).weights
        == "default"
    )
    with pytest.raises(VafusionError, match="vggish needs weights: --vggish-weights PATH"):
        ExtractOptions(features=("vggish",))
    with pytest.raises(VafusionError, match="logmel has no weights"):
        ExtractOptions(features=("logmel",), weights={"logmel": "random"})


def test_option_syntax_and_names_are_checked_early():
    assert parse_weights(["resnet50=random", "x.y:Z=/w.pt"]) == {"resnet50": "random", "x.y:Z": "/w.pt"}
    assert parse_extractor_options(["wav2vec2_base.layer=6", "a.b:C.bins=4"]) == {
        "wav2vec2_base": {"layer": "6"},
        "a.b:C": {"bins": "4"},
    }
    for bad, match in ((["resnet50"], "FEATURE=SPEC"), (["a=1", "a=2"], "given twice")):
        with pytest.raises(VafusionError, match=match):
            parse_weights(bad)
    with pytest.raises(VafusionError, match=r"FEATURE.KEY=VALUE"):
        parse_extractor_options(["layer=6"])
    with pytest.raises(VafusionError, match=r"--features resnet5: unknown extractor \(did you mean resnet50"):
        ExtractOptions(features=("resnet5",))
    with pytest.raises(VafusionError, match="--weights vggish: vggish is not in --features"):
        ExtractOptions(features=("logmel",), weights={"vggish": "random"})
    with pytest.raises(VafusionError, match="logmel has no option 'bins'"):
        ExtractOptions(features=("logmel",), extractor_options={"logmel": {"bins": "3"}})
    with pytest.raises(VafusionError, match=r"write package.module:attribute"):
        ExtractOptions(features=("module_only:",))


def test_readme_features_table_is_true():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("## Features") : readme.index("## Writing your own extractor")]
    for name in [*speech.MODELS, "vggish", "logmel", "vad", "timm:MODEL", "hf:REPO_OR_FOLDER"]:
        assert f"`{name}`" in table, name
    for prefix in registry.prefixes():
        assert f"`{prefix}:" in table, prefix
    dims = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}
    dims |= {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"\b([a-z0-9_]+) (\d{3,4})\b", table)
        if m.group(1) in model_names()
    }
    assert len(dims) >= 8
    for name, dim in dims.items():
        assert _architecture(name, "meta")[2] == dim, name
    widths = {
        name: speech.architecture(name, "meta").encoder.feature_projection.projection.out_features
        for name in speech.MODELS
    }
    assert "768 base, 1024 large / lv60k / xlsr53, 1280 xlarge" in table
    assert {w for n, w in widths.items() if "base" in n} == {768} and widths["hubert_xlarge"] == 1280
    assert {w for n, w in widths.items() if "base" not in n and n != "hubert_xlarge"} == {1024}
