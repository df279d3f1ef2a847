"""`vafusion demo` runs end to end (quality is checked at full size by hand and in test_end_to_end)."""

from click.testing import CliRunner

from vafusion.cli import cli
from vafusion.demo import VARIANTS


def test_demo_tiny_prints_the_table_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--size", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model") and "CCC_V" in line)
    assert [line.split("  ")[0] for line in lines[header + 1 : header + 1 + len(VARIANTS)]] == [v.name for v in VARIANTS]
    assert list(out.glob("runs/fusion/*/report.html"))
    again = CliRunner().invoke(cli, ["demo", "--size", "tiny", "--out", str(out)])
    assert again.exit_code == 1 and "not empty" in again.output
