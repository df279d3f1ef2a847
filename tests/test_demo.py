"""`vafusion demo` runs end to end through `compare` (quality is checked at full size by hand and in
test_end_to_end)."""

import json

from click.testing import CliRunner

import vafusion.demo
from vafusion.cli import cli
from vafusion.demo import DEMO_TRAINING, FEATURE_SETS, MODELS


def test_demo_tiny_prints_the_table_and_writes_the_reports(tmp_path, monkeypatch):
    # Two epochs, not fifteen: the table, the reports and the refusal are what this test checks, and the eight
    # trainings of the comparison were four fifths of its time.
    monkeypatch.setattr(vafusion.demo, "DEMO_TRAINING", {**DEMO_TRAINING, "epochs": 2, "patience": 2})
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
