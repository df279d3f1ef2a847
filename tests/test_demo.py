"""`vafusion demo` runs end to end through `compare` (quality is checked at full size by hand and in
test_end_to_end)."""

import json

from click.testing import CliRunner

import vafusion.demo
from vafusion.cli import cli
from vafusion.demo import DEMO_DATA, DEMO_TRAINING, FEATURE_SETS, MODELS
from vafusion.synth import SIZES


def test_demo_tiny_prints_the_table_and_writes_the_reports(tmp_path, monkeypatch):
    # The table, the reports and the refusal are what this test checks, not quality: two epochs, not fifteen,
    # and the tiny corpus at 10-12 fps (the same seconds in 40 % of the frames; 4 s windows of 40 frames, as
    # 100 frames are at 25 fps). Full-size training was half the test's time, VGGish on every frame a third.
    monkeypatch.setattr(vafusion.demo, "DEMO_TRAINING", {**DEMO_TRAINING, "epochs": 2, "patience": 2})
    monkeypatch.setattr(vafusion.demo, "DEMO_DATA", {**DEMO_DATA, "window": 40, "hop": 20})
    monkeypatch.setitem(vafusion.demo.SIZES, "tiny", {**SIZES["tiny"], "fps_options": (10.0, 12.0)})
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--size", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["model", "features", "runs", "CCC_V", "CCC_A", "P", "time/run"]
    assert [tuple(line.split()[:3]) for line in lines[1:]] == [
        (m, ",".join(f), "1") for m in MODELS for f in FEATURE_SETS
    ]
    compared = json.loads((out / "runs" / "compare.json").read_text())
    assert len(compared["runs"]) == len(MODELS) * len(FEATURE_SETS)
    assert (out / "runs" / "compare.html").is_file() and (out / "runs" / "figures" / "compare.png").is_file()
    assert (out / "runs" / "imf" / "+".join(FEATURE_SETS[0]) / "seed-0" / "report.html").is_file()
    again = CliRunner().invoke(cli, ["demo", "--size", "tiny", "--out", str(out)])
    assert again.exit_code == 1 and "not empty" in again.output
