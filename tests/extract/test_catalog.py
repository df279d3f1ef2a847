"""`vafusion features`: every built-in family and every installed extractor plug-in, with what
--features takes, the options, the default weights, what to install for an optional family, and
a warning for an entry point that cannot be used (hidden by a built-in, or not importable)."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap

import pytest
from click.testing import CliRunner

from vafusion.cli import cli
from vafusion.extract import catalog as catalog_mod
from vafusion.extract.registry import builtins, families

PLUGIN = '''
"""Edge strength: the mean absolute horizontal difference of each crop."""
import torch

class Edges:
    """Edge strength per crop (a test plug-in)."""
    kind = "frame"; name = "edges"; dim = 1; image_size = 16
    def __init__(self, scale: float = 1.0, weights: str = "none"):
        self.scale = scale
    def provenance(self): return {"model": "edges"}
    def to(self, device): return self
    def __call__(self, crops):
        return self.scale * (crops[..., 1:].float() - crops[..., :-1].float()).abs().mean(dim=(1, 2, 3))[:, None]
'''


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A distribution on sys.path declaring three extractors: one usable, one hidden by the built-in
    resnet50, one pointing at an attribute its module lacks."""
    site = tmp_path / "site"
    dist = site / "edgeplug-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "edgeplug.py").write_text(textwrap.dedent(PLUGIN))
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[vafusion.extractors]\nedges = edgeplug:Edges\nresnet50 = edgeplug:Edges\nbroken = edgeplug:Missing\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("edgeplug", None)


def test_every_family_is_listed_with_what_features_takes():
    rows, problems = catalog_mod.catalog()
    assert [r.name for r in rows] == [f.key for f in families()] and problems == []
    by_name = {r.name: r for r in rows}
    named = {e for r in rows for e in r.entries if ":" not in e}
    assert named == set(builtins())  # every built-in name, each under its family
    assert by_name["timm"].entries == ("timm:NAME",) and by_name["hf"].entries == ("hf:NAME",)
    assert by_name["hf"].options == ("layer", "chunk", "context") and by_name["torchvision"].weights == "default"
    assert by_name["hf"].about.startswith("Hugging Face speech encoders") and all(r.about for r in rows)
    assert all(r.install is None for r in rows)  # [dev] installs every optional family


def test_a_missing_optional_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    rows, _ = catalog_mod.catalog()
    assert {r.name: r.install for r in rows}["timm"] == "pip install 'vafusion[timm]'"
    assert {r.name: r.install for r in rows}["hf"] is None
    out = CliRunner().invoke(cli, ["features"]).output
    assert "timm  (built-in; pip install 'vafusion[timm]')" in out


def test_plugins_are_listed_and_unusable_entry_points_are_warnings(installed):
    rows, problems = catalog_mod.catalog()
    (edges,) = [r for r in rows if r.name == "edges"]
    assert edges.origin == "entry point of edgeplug" and edges.entries == ("edges",)
    assert edges.options == ("scale=1.0 (float)",) and edges.weights == "none"
    assert edges.about == "Edge strength per crop (a test plug-in)."
    assert len(problems) == 2
    assert "'broken'" in problems[0] and "has no attribute 'Missing'" in problems[0]
    assert "'resnet50'" in problems[1] and "hidden by the built-in" in problems[1]
    result = CliRunner().invoke(cli, ["features"])
    assert result.exit_code == 0
    assert "edges  (entry point of edgeplug)\n  Edge strength per crop (a test plug-in).\n  --features edges\n" in (
        result.output
    )
    assert "  options: scale=1.0 (float); weights: none" in result.output
    assert "warning: " in result.stderr and "hidden by the built-in" in result.stderr


def test_json_is_the_same_listing(installed):
    result = CliRunner().invoke(cli, ["features", "--json"])
    listed = json.loads(result.stdout)
    rows, _ = catalog_mod.catalog()
    assert listed == [r.as_json() | {"entries": list(r.entries), "options": list(r.options)} for r in rows]
    assert listed[-1]["name"] == "edges"


def test_an_unknown_feature_points_at_the_listing():
    result = CliRunner().invoke(cli, ["extract", ".", "--cache", "c", "--features", "resnt50"])
    assert result.exit_code == 1 and "(did you mean resnet50" in result.output
    assert "`vafusion features` lists them" in result.output
