"""README.md stays true: its CLI reference is the commands' --help, its Quickstart the Makefile's."""

import warnings
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


def test_python_api_imports_work_without_warnings() -> None:
    """The README's Python API names the current paths: each import runs, and none is a deprecated old path."""
    text = README.read_text()
    block = text[text.index("### Python API") :]
    block = block[block.index("```python\n") + len("```python\n") :]
    block = block[: block.index("```")]
    imports = [line.split("#")[0].rstrip() for line in block.splitlines() if line.startswith("from vafusion")]
    assert len(imports) > 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for line in imports:
            exec(line, {})
