"""The old import paths of the README's Python API still work (through 0.2), and say where things are now."""

from __future__ import annotations

import importlib
import sys

import pytest

# old module -> (the module it is now, a name the README imports from it)
MODULES = {
    "vafusion.fusion.checkpoint": ("vafusion.fusion.runs.checkpoint", "load_run"),
    "vafusion.fusion.config": ("vafusion.fusion.runs.config", "make_config"),
    "vafusion.fusion.train": ("vafusion.fusion.runs.train", "train"),
    "vafusion.fusion.cv": ("vafusion.fusion.experiments.cv", "cross_validate"),
    "vafusion.fusion.submission": ("vafusion.fusion.predict.submission", "check_submission"),
    "vafusion.fusion.sources": ("vafusion.fusion.data.sources", "loading"),
}
# names of the old modules whose paths are rooms now -> the module that holds them
NAMES = {
    ("vafusion.fusion.data", "load_cache"): "vafusion.fusion.data.loading",
    ("vafusion.fusion.data", "Standardizer"): "vafusion.fusion.data.standardize",
    ("vafusion.fusion.data", "build_batch"): "vafusion.fusion.data.batches",
    ("vafusion.fusion.data", "partition_score"): "vafusion.fusion.data.scores",
    ("vafusion.fusion.predict", "predict_submission"): "vafusion.fusion.predict.ensemble",
    ("vafusion.fusion.predict", "evaluate_run"): "vafusion.fusion.runs.evaluate",
    ("vafusion.fusion.predict", "predict_loaded"): "vafusion.fusion.runs.infer",
    ("vafusion.fusion.compare", "compare"): "vafusion.fusion.experiments.compare",
    ("vafusion.fusion.compare", "format_table"): "vafusion.fusion.reports.compare",
}


@pytest.mark.parametrize("old", sorted(MODULES))
def test_an_old_module_path_is_the_new_module(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new, name = MODULES[old]
    monkeypatch.delitem(sys.modules, old, raising=False)  # import it afresh, as a caller's first import does
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}; .* removed in vafusion 0\.3"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("old, name", sorted(NAMES))
def test_a_name_of_an_old_module_comes_from_where_it_is_now(old: str, name: str, monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "vafusion.fusion.compare", raising=False)
    new = NAMES[(old, name)]
    with pytest.warns(DeprecationWarning, match="moved to"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)


def test_a_name_that_never_existed_is_still_an_attribute_error() -> None:
    import vafusion.fusion.data as data

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        data.nothing  # noqa: B018
