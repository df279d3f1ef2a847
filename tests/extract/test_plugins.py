"""User extractors: by import path (class and factory forms), by entry point, and broken ones.

The README's example (examples/my_extractors.py) is extracted on a generated corpus,
verified and trained on; an installed package's entry point is discovered through
importlib.metadata; a plug-in that breaks the contract fails its own feature with one
line naming it, and the run still writes the other features.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vafusion.cache.inspect import verify_cache
from vafusion.cache.reader import open_feature_file
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.extract import registry
from vafusion.extract.options import ExtractOptions
from vafusion.extract.run import extract
from vafusion.fusion.runs.config import make_config
from vafusion.fusion.runs.train import train

FAST = dict(workers=0, progress=False, batch_size=32)
HIST = "examples.my_extractors:ColourHistogram"
LOUDNESS = "examples.my_extractors:loudness"


@pytest.fixture(scope="module")
def corpus(tiny_extracted) -> Path:
    return tiny_extracted[0].root


def test_readme_example_extracts_verifies_and_trains(corpus, tiny_extracted, tmp_path):
    cache = tmp_path / "cache"
    opts = ExtractOptions(features=(HIST, LOUDNESS), extractor_options={HIST: {"bins": "4"}}, **FAST)
    report = extract(corpus, cache, opts)
    assert report.ok, report.failures
    assert sorted(report.written) == ["colour_hist", "loudness"]
    assert verify_cache(cache) == []
    truth = {v.id: v for v in tiny_extracted[0].videos}
    with open_feature_file(cache, "colour_hist") as ff:
        assert ff.dim == 12 and ff.extractor["plugin"] == {"source": HIST, "options": {"bins": "4"}}
        assert ff.extractor["bins"] == 4
        for vid in ff.ids:
            feats, mask = ff.read(vid)
            np.testing.assert_array_equal(mask, ~truth[vid].crop_missing)  # vafusion masked the missing crops
            np.testing.assert_allclose(feats[mask].astype(np.float32).reshape(-1, 3, 4).sum(axis=2), 1.0, atol=1e-2)
    with open_feature_file(cache, "loudness") as ff:
        assert ff.extractor["plugin"] == {"source": LOUDNESS}
        for vid in ff.ids:
            feats, mask = ff.read(vid)
            assert mask.any() == truth[vid].has_audio and feats.shape == (truth[vid].n_frames, 2)
    config = make_config(
        features=("colour_hist", "loudness"),
        window=50,
        hop=25,
        epochs=2,
        batch_size=4,
        d_model=16,
        heads=2,
        device="cpu",
    )
    result = train(cache, tmp_path / "run", config, progress=False)
    assert np.isfinite(result.best["p"])


def test_entry_point_plugin_is_discovered(corpus, tmp_path, monkeypatch):
    """A package installed with an entry point in group vafusion.extractors (a real dist-info on
    sys.path, found by importlib.metadata) is usable by its name."""
    site = tmp_path / "site"
    (site / "edgeplug").mkdir(parents=True)
    (site / "edgeplug" / "__init__.py").write_text(
        textwrap.dedent("""
        import torch

        class Edges:
            kind = "frame"; name = "edges"; dim = 1; image_size = 16
            def provenance(self): return {"model": "edges"}
            def to(self, device): return self
            def __call__(self, crops):
                x = crops.float()
                return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))[:, None]
    """)
    )
    dist = site / "edgeplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edgeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vafusion.extractors]\nedges = edgeplug:Edges\n")
    monkeypatch.syspath_prepend(str(site))
    report = extract(corpus, tmp_path / "cache", ExtractOptions(features=("edges",), **FAST))
    assert report.ok, report.failures
    with open_feature_file(tmp_path / "cache", "edges") as ff:
        assert ff.dim == 1 and ff.extractor["plugin"] == {"source": "edgeplug:Edges"}
    with pytest.raises(
        VafusionError, match=r"--features edgez: unknown extractor \(did you mean edges\?\).*installed plug-ins: edges"
    ):
        ExtractOptions(features=("edgez",))


BAD = {  # --features entry -> what its one-line error must say
    "tests.extract.no_such_module:Thing": "cannot import module 'tests.extract.no_such_module'.* importable",
    "tests.extract.bad_plugins:Missing": "module 'tests.extract.bad_plugins' has no attribute 'Missing'",
    "tests.extract.bad_plugins:no_kind": "kind must be 'frame' or 'track'",
    "tests.extract.bad_plugins:WrongShape": r"returned shape \(32,\) for a batch of 32 crops; expected \(32, 4\)",
    "tests.extract.bad_plugins:WrongDtype": "returned dtype torch.int64",
    "tests.extract.bad_plugins:NaNs": "returned NaN or inf in 32 row",
    "tests.extract.bad_plugins:WrongDim": "returned 5 columns for a batch of 32 crops but declares dim = 4",
    "tests.extract.bad_plugins:Raises": "raised RuntimeError: boom",
    "tests.extract.bad_plugins:MissingRows": r"returned shape \(\d+, 3\) for a track of \d+ frames; expected",
}


def test_broken_plugins_fail_alone_with_one_line_each(corpus, tiny_extracted, tmp_path):
    report = extract(corpus, tmp_path / "cache", ExtractOptions(features=("logmel", *BAD), image_size=16, **FAST))
    assert sorted(report.written) == ["logmel"] and report.extracted["logmel"] == len(tiny_extracted[0].videos)
    # Features broken from their first batch leave nothing; bad_rows wrote its no-audio videos
    # (no call needed) before its first call failed: kept for a resume, and verify says so.
    assert [(Path(p.path).name, p.message) for p in verify_cache(tmp_path / "cache")] == [
        ("bad_rows", "unfinished extraction; rerun `vafusion extract` to resume")
    ]
    assert all(f.video_id is None for f in report.failures) and len(report.failures) == len(BAD)
    for entry, message in BAD.items():
        (failure,) = [f for f in report.failures if re.search(re.escape(entry) + r"\b", f.reason)]
        assert "\n" not in failure.reason
        assert re.search(message, failure.reason), failure.reason


def test_cli_reports_a_broken_plugin_and_exits_1(corpus, tmp_path):
    r = CliRunner().invoke(
        cli,
        [
            "extract",
            str(corpus),
            "--cache",
            str(tmp_path / "c"),
            "--workers",
            "0",
            "--features",
            "logmel,tests.extract.bad_plugins:NaNs",
        ],
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "failed: [bad_nan]: extractor tests.extract.bad_plugins:NaNs (bad_nan): returned NaN" in r.output
    assert "logmel: 7 extracted" in r.output


def test_plugin_options_and_weights_are_checked_against_the_declaration(corpus, tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"some weights")
    opts = ExtractOptions(features=(HIST,), extractor_options={HIST: {"colours": "3"}}, **FAST)
    (failure,) = extract(corpus, tmp_path / "c1", opts).failures
    assert failure.reason == (
        f"--extractor-option {HIST}.colours: extractor '{HIST}' has no such option; its options: bins"
    )
    opts = ExtractOptions(features=(HIST,), extractor_options={HIST: {"bins": "many"}}, **FAST)
    (failure,) = extract(corpus, tmp_path / "c2", opts).failures
    assert failure.reason == f"--extractor-option {HIST}.bins=many: expected int, got 'many'"
    opts = ExtractOptions(features=(LOUDNESS,), weights={LOUDNESS: str(weights)}, **FAST)
    (failure,) = extract(corpus, tmp_path / "c3", opts).failures
    assert (
        failure.reason
        == f"--weights {LOUDNESS}: extractor '{LOUDNESS}' takes no weights (no `weights` argument); drop it"
    )


OLD = "tests.extract.old_plugins"


@pytest.mark.parametrize(
    "attribute, given, received",
    [
        ("IntOrText", {"bins": "4"}, {"bins": 4}),  # `int | str` as the README once advised: a number ...
        ("IntOrText", {"bins": "auto"}, {"bins": "auto"}),  # ... or the text it also accepts
        ("Unannotated", {"bins": "4", "name": "x"}, {"bins": 4, "name": "x"}),  # typed by the defaults
        ("Anything", {"bins": "4"}, {"bins": "4"}),  # **kwargs: text, as before options were typed
        ("factory", {"scale": "0.5", "flip": "true"}, {"scale": 0.5, "flip": True}),  # a factory's signature
    ],
)
def test_plugin_options_are_typed_and_old_plugins_still_build(attribute, given, received, tmp_path):
    entry = f"{OLD}:{attribute}"
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"w")
    opts = ExtractOptions(features=(entry,), extractor_options={entry: given}, weights={entry: str(weights)})
    resolved = registry.build(entry, opts.extractor_settings())
    assert resolved.extractor.received == {**received, "weights": str(weights)}
    assert resolved.plugin["options"] == given  # the provenance records what was given: fingerprints stay
    assert resolved.plugin["sha256"] == hashlib.sha256(b"w").hexdigest()


def test_a_required_plugin_option_is_named():
    entry = f"{OLD}:Required"
    with pytest.raises(VafusionError, match=rf"extractor '{entry}': option 'size' has no default; give "):
        registry.build(entry, ExtractOptions(features=(entry,)).extractor_settings())


def test_readme_shows_the_example_file_verbatim():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = (Path(__file__).parents[2] / "examples" / "my_extractors.py").read_text()
    assert f"```python\n{example}```" in readme
