"""The package's layering: the cache contract stands alone, stage 2 never needs stage 1's dependencies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vafusion"

# (folder or module, packages it must not import) — README, "For contributors"
RULES = [
    ("cache", ("vafusion.extract", "vafusion.fusion", "vafusion.cli")),
    ("fusion", ("vafusion.extract", "vafusion.cli", "torchvision", "av")),
    ("synth", ("vafusion.extract", "vafusion.fusion", "vafusion.cli")),
    ("affwild2.py", ("vafusion",)),
    ("plugins.py", ("vafusion.cache", "vafusion.extract", "vafusion.fusion", "vafusion.cli", "torch")),
]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("where, forbidden", RULES, ids=[r[0] for r in RULES])
def test_layers_import_only_what_they_may(where: str, forbidden: tuple[str, ...]) -> None:
    target = PACKAGE / where
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    bad = [
        f"{f.relative_to(PACKAGE.parent)}: {name}"
        for f in files
        for name in sorted(_imports(f))
        if any(name == x or name.startswith(x + ".") for x in forbidden)
    ]
    assert not bad, "imports across the layering:\n" + "\n".join(bad)
