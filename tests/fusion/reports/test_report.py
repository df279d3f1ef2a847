"""The run report: a well-formed offline HTML page whose figures exist and are real PNGs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.toy_cache import write_toy_cache
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.reports.run import pick_ids, report_on_trained, write_report
from vafusion.fusion.runs.config import make_config
from vafusion.fusion.runs.train import train

from ..pages import PNG_SIGNATURE
from ..pages import check_page as _check_page

FAST = dict(
    features=("visual", "audio"),
    window=48,
    hop=32,
    epochs=2,
    batch_size=4,
    d_model=16,
    heads=2,
    head_hidden=16,
    tcn_dilations=(1, 2),
)


def _shown(page) -> set[str]:
    return {Path(src).name for src in page.images}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    write_toy_cache(root / "cache")
    train(root / "cache", root / "fusion", make_config(**FAST), progress=False, on_trained=report_on_trained())
    assert (root / "fusion" / "report.html").is_file()
    train(
        root / "cache",
        root / "ridge",
        make_config(features=("visual", "audio"), model="ridge"),
        progress=False,
    )
    assert not (root / "ridge" / "report.html").exists()  # train itself writes no report
    return {"cache": root / "cache", "fusion": root / "fusion", "ridge": root / "ridge"}


def _best(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["best"]


def test_fusion_report_with_comparison(runs):
    run = runs["fusion"]
    comparison = [
        {"name": "fusion", "ccc_v": 0.51, "ccc_a": 0.62, "p": 0.565, "run": str(run)},
        {"name": "visual only <v>", "ccc_v": 0.4, "ccc_a": 0.1, "p": 0.25},
        {"name": "ridge", "ccc_v": 0.3, "ccc_a": 0.35, "p": 0.325},
    ]
    path = write_report(run, comparison=comparison, device="cpu")
    assert path == run / "report.html"
    page = _check_page(path)
    source = path.read_text()
    best = _best(run)
    assert f"{best['p']:.4f}" in source and f"{best['ccc_v']:.4f}" in source
    # two validation ids in the toy cache: best and worst by P
    assert _shown(page) == {
        "curves.png",
        "series-1.png",
        "series-2.png",
        "va_scatter.png",
        "per_id_ccc.png",
        "comparison.png",
    }
    text = " ".join(page.text)
    assert "Comparison" in text and "0.5650" in text and "visual only <v>" in text  # escaped in the source
    assert "visual only &lt;v&gt;" in source
    assert 'class="this"' in source  # the row naming this run is highlighted
    assert "window" in text and "tcn_dilations" in text  # the configuration table


def test_ridge_report_has_no_curves_and_no_comparison_by_default(runs):
    path = write_report(runs["ridge"], device="cpu", n_ids=1)
    page = _check_page(path)
    assert _shown(page) == {"series-1.png", "va_scatter.png", "per_id_ccc.png"}
    text = " ".join(page.text)
    assert "closed form" in text and "Comparison" not in text
    assert f"{_best(runs['ridge'])['p']:.4f}" in text


def test_cli_report_prints_the_path_and_drops_stale_figures(runs):
    run = runs["fusion"]
    stale = run / "figures" / "series-7.png"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(PNG_SIGNATURE)
    result = CliRunner().invoke(cli, ["report", str(run), "--ids", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(run / "report.html")
    page = _check_page(run / "report.html")
    assert "series-1.png" in _shown(page) and "series-2.png" not in _shown(page)
    assert not stale.exists()


def test_report_when_the_cache_moved(runs, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(runs["cache"], cache)
    train(cache, tmp_path / "run", make_config(features=("visual", "audio"), model="ridge"), progress=False)
    moved = tmp_path / "moved-cache"
    cache.rename(moved)
    page = _check_page(write_report(tmp_path / "run", device="cpu"))
    text = " ".join(page.text)
    assert "is not here" in text and "--cache" in text
    assert not {"series-1.png", "va_scatter.png", "per_id_ccc.png"} & _shown(page)
    assert f"{_best(tmp_path / 'run')['p']:.4f}" in text  # the header is still there
    # pointing at the new place brings the figures back; CLI too
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "run"), "--cache", str(moved), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert {"series-1.png", "va_scatter.png", "per_id_ccc.png"} <= _shown(_check_page(tmp_path / "run" / "report.html"))


def test_bad_input_is_a_vafusion_error(runs, tmp_path):
    with pytest.raises(VafusionError, match="missing ccc_a"):
        write_report(runs["ridge"], comparison=[{"name": "x", "ccc_v": 0.1, "p": 0.1}])
    with pytest.raises(VafusionError, match="no such run directory"):
        write_report(tmp_path / "nowhere")
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output


def test_trainer_report_reuses_the_cache_in_ram(runs, tmp_path, monkeypatch):
    import vafusion.fusion.runs.evaluate as evaluate_mod

    def no_second_read(*args, **kwargs):
        raise AssertionError("the report read the cache again")

    monkeypatch.setattr(evaluate_mod, "load_cache", no_second_read)
    logged = []
    hook = report_on_trained(log=logged.append)
    train(runs["cache"], tmp_path / "run", make_config(**dict(FAST, epochs=1)), progress=False, on_trained=hook)
    assert logged == [f"report: {tmp_path / 'run' / 'report.html'}"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "validation" in html and (tmp_path / "run" / "figures").is_dir()
    # the same report from disk (vafusion report) scores the same
    monkeypatch.undo()
    again = write_report(tmp_path / "run", runs["cache"]).read_text()
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")  # when the page was written
    assert stamp.sub("", again) == stamp.sub("", html)


def test_pick_ids_spreads_over_the_ranking():
    per_id = [{"id": f"v{i}", "p": p, "frames": 10} for i, p in enumerate([0.1, 0.9, 0.5, 0.3, 0.7])]
    per_id.append({"id": "empty", "p": 0.0, "frames": 0})  # no label: never shown
    assert pick_ids(per_id, 3) == [("v1", "best of 5 by P"), ("v2", "median of 5 by P"), ("v0", "worst of 5 by P")]
    assert [vid for vid, _ in pick_ids(per_id, 1)] == ["v1"]
    assert [vid for vid, _ in pick_ids(per_id, 10)] == ["v1", "v4", "v2", "v3", "v0"]
    assert pick_ids(per_id, 0) == [] and pick_ids([], 3) == []
