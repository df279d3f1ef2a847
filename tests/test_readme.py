"""README.md stays true: its CLI reference is the commands' --help, its Quickstart the Makefile's."""

from pathlib import Path

from vafusion.cli import reference_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_cli_reference_matches_help():
    text = README.read_text()
    start, end = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
    block = text[text.index(start) + len(start) : text.index(end)]
    assert block.strip() == reference_markdown().strip(), "README CLI reference is stale: run `make readme`"


def test_quickstart_commands_exist_in_makefile():
    makefile = (README.parent / "Makefile").read_text()
    text = README.read_text()
    for target in ("demo", "test", "bench", "readme"):
        assert f"make {target}" in text
        assert f"\n{target}:" in makefile
