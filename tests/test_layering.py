"""The package's layering: the cache contract stands alone, stage 2 never needs stage 1's dependencies,
stage 2's rooms import only the rooms before them, and no two modules import each other, even through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vafusion"
FUSION = PACKAGE / "fusion"

# (folder or module, packages it must not import) — README, "For contributors"
RULES = [
    ("cache", ("vafusion.extract", "vafusion.fusion", "vafusion.analyze", "vafusion.cli")),
    ("extract", ("vafusion.fusion", "vafusion.analyze", "vafusion.cli")),
    ("fusion", ("vafusion.extract", "vafusion.analyze", "vafusion.cli", "torchvision", "av")),
    ("synth", ("vafusion.extract", "vafusion.fusion", "vafusion.cli")),
    ("affwild2.py", ("vafusion",)),
    ("hashing.py", ("vafusion",)),
    ("runtime.py", ("vafusion",)),
    ("plugins.py", ("vafusion.cache", "vafusion.extract", "vafusion.fusion", "vafusion.cli", "torch")),
]

# Stage 2's rooms, in the order of the data flow: each may import the rooms it lists (and the
# leaves), never a later one, so no two rooms import each other — README, "For contributors".
ROOMS = {
    "data": (),
    "models": (),
    "runs": ("data", "models"),
    "post": ("data", "models", "runs"),
    "predict": ("data", "models", "runs", "post"),
    "reports": ("data", "models", "runs", "post"),
    "experiments": ("data", "models", "runs", "post", "predict", "reports"),
}
LEAVES = ("metrics", "signal")  # fusion/<leaf>.py: any room may import them; they import no room
OLD_PATHS = ("checkpoint", "compare", "config", "cv", "sources", "submission", "train")  # aliases kept through 0.2
MOVED = "_moved"  # the old paths' helper: any room's __init__ may use it


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, relative: bool = False) -> set[str]:
    names: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # a submodule imported by name
        elif isinstance(node, ast.ImportFrom) and relative:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            names.add(f"{base}.{node.module}" if node.module else base)
            names.update(f"{base}.{node.module or ''}.{alias.name}".replace("..", ".") for alias in node.names)
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


def _fusion_part(name: str) -> str | None:
    """The room, leaf or old path a ``vafusion.fusion.X...`` import reaches (None: outside stage 2)."""
    if not name.startswith("vafusion.fusion."):
        return None
    return name.split(".")[2]


def test_every_module_of_stage_2_lives_in_a_room() -> None:
    """A new module goes into a room (or is a deliberate leaf): fusion/ does not grow back into one folder."""
    loose = {p.stem for p in FUSION.glob("*.py")} - {"__init__", MOVED, *LEAVES, *OLD_PATHS}
    rooms = {p.name for p in FUSION.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert not loose, f"modules of vafusion/fusion outside the rooms: {sorted(loose)}"
    assert rooms == set(ROOMS), f"rooms on disk {sorted(rooms)} != rooms of the rule {sorted(ROOMS)}"


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_rooms_import_only_the_rooms_before_them(room: str) -> None:
    may = {room, *ROOMS[room], *LEAVES, MOVED}
    bad = []
    for f in sorted((FUSION / room).rglob("*.py")):
        where = f.relative_to(FUSION).as_posix()
        for name in sorted(_imports(f, relative=True)):
            part = _fusion_part(name)
            if part is not None and part not in may:
                bad.append(f"vafusion/fusion/{where}: {name}")
    assert not bad, f"room {room} may import {sorted(may - {MOVED})} only:\n" + "\n".join(bad)


def test_leaves_import_no_room() -> None:
    bad = [
        f"{leaf}.py: {name}"
        for leaf in LEAVES
        for name in _imports(FUSION / f"{leaf}.py", relative=True)
        if _fusion_part(name) is not None
    ]
    assert not bad, "\n".join(bad)


def test_the_rooms_form_no_cycle() -> None:
    """Each room lists only rooms listed before it, so the allowed imports can never close a circle."""
    order = list(ROOMS)
    later = [(room, dep) for room, deps in ROOMS.items() for dep in deps if order.index(dep) >= order.index(room)]
    assert not later, f"rooms allowed to import a room at or after them: {later}"


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements run on import, and those under ``if TYPE_CHECKING:``, ``try`` and the like: an import
    for type hints only is still a dependency; imports inside functions (deferred ones) are not."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        found.append(node)
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]
    return found


def _import_graph() -> dict[str, set[str]]:
    """vafusion module -> the vafusion modules it imports at module level (``from pkg import mod`` names mod)."""
    files = {_module_name(f): f for f in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in _module_level(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                    base = ".".join([*package, *([node.module] if node.module else [])])
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    if target in files:
                        targets.add(target)
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = _import_graph()
    assert {"vafusion.cache.reader", "vafusion.extract.registry", "vafusion.plugins"} <= set(graph)
    assert "vafusion.cache.check" in graph["vafusion.cache.reader"]  # the graph sees from-imports of modules
    cycles = _cycles(graph)
    assert not cycles, "modules that import each other (move the responsibility, not the import):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
