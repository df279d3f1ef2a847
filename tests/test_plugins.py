"""The one plug-in loader (vafusion/plugins.py): module:attr, entry points, unknown names, typed options.

The registries' own tests (tests/extract/test_plugins.py, tests/fusion/test_plugins.py) run real plug-ins
end to end; here each rule is held once, for a kind no registry uses yet (face detectors) as well.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from vafusion import plugins
from vafusion.errors import VafusionError
from vafusion.plugins import DETECTORS, EXTRACTORS, MODELS, POST_STEPS, Declared, Option

MODULES = {
    "plug_a": """
        import json

        class Outer:
            class Inner:
                pass

        def detector(threshold: float = 0.5, sizes: tuple[int, ...] = (1, 2), mode: int | str = "auto",
                     limit: int | None = None, flip=False, *, name: str = "a"):
            return dict(threshold=threshold, sizes=sizes, mode=mode, limit=limit, flip=flip, name=name)

        def needs(size: int, **rest):
            return size, rest

        def bad_default(size: int = "big"):
            pass
    """,
    "plug_needs": "import not_installed_anywhere_xyz\n",
    "plug_raises": "raise RuntimeError('broken on import')\n",
    "plug_name": "from json import no_such_name\n",
}


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Modules on sys.path, and installed distributions declaring entry points (found by importlib.metadata)."""
    for name, source in MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    for dist, declared in {
        "dist-one": "[vafusion.detectors]\nfast = plug_a:detector\nsame = plug_a:detector\ntwice = plug_a:detector\n"
        "retina = plug_a:Outer\n",
        "dist-two": "[vafusion.detectors]\nsame = plug_a:detector\ntwice = plug_a:needs\n",
    }.items():
        info = tmp_path / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(declared)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("plug_")]:
        del sys.modules[name]


def test_module_attribute_references(site):
    assert plugins.import_object("plug_a:Outer.Inner", DETECTORS).__qualname__ == "Outer.Inner"
    cases = {
        "plug_a:Missing": r"face detector 'plug_a:Missing': module 'plug_a' has no attribute 'Missing'; check the name",
        "plug_a:": r"face detector 'plug_a:': write package.module:attribute",
        "plug_nowhere.sub:X": r"cannot import module 'plug_nowhere.sub' \(.*\); make 'plug_nowhere.sub' importable",
        "plug_needs:X": r"importing 'plug_needs' failed \(.*not_installed_anywhere_xyz.*\); install what it needs",
        "plug_raises:X": r"importing 'plug_raises' raised RuntimeError: broken on import",
        "plug_name:X": r"importing 'plug_name' raised ImportError: cannot import name 'no_such_name'",
    }
    for ref, message in cases.items():
        with pytest.raises(VafusionError, match=message) as caught:
            plugins.import_object(ref, DETECTORS)
        assert "\n" not in str(caught.value)
    with pytest.raises(VafusionError) as caught:
        plugins.import_object("plug_raises:X", POST_STEPS)
    assert isinstance(caught.value.__cause__, RuntimeError)  # the plug-in author sees the cause


def test_a_module_in_the_current_directory_is_found(tmp_path, monkeypatch):
    (tmp_path / "plug_here.py").write_text("VALUE = 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert plugins.import_object("plug_here:VALUE", EXTRACTORS) == 3
        assert sys.path[-1] == str(tmp_path)  # appended: never shadows an installed module
    finally:
        sys.modules.pop("plug_here", None)


def test_entry_points_builtins_and_duplicates(site):
    builtins = {"retina": "a built-in", "mtcnn": "another"}
    assert plugins.find(DETECTORS, "retina", builtins).obj == "a built-in"  # a built-in wins
    found = plugins.find(DETECTORS, "fast", builtins)
    assert (found.name, found.ref, found.origin) == ("fast", "plug_a:detector", "entry point of dist-one")
    assert plugins.find(DETECTORS, "same", builtins).ref == "plug_a:detector"  # one target, two declarations
    with pytest.raises(
        VafusionError,
        match=r"face detector 'twice': entry point declared by two distributions "
        r"\(plug_a:detector \(dist-one\), plug_a:needs \(dist-two\)\).*name the one you mean",
    ):
        plugins.find(DETECTORS, "twice", builtins)
    usable, problems = plugins.entry_point_names(DETECTORS, builtins)
    assert usable == ["fast", "same"]
    assert [name for name, _ in problems] == ["retina", "twice"]
    assert "hidden by the built-in of that name" in problems[0][1]
    assert plugins.find(DETECTORS, "plug_a:detector", builtins).origin == "module"


def test_unknown_names_suggest_the_closest(site):
    with pytest.raises(VafusionError) as caught:
        plugins.find(DETECTORS, "fats", {"retina": 1}, flag="--detector")
    assert str(caught.value) == (
        "--detector fats: unknown face detector (did you mean fast?); built-ins: retina; "
        "installed plug-ins: fast, same; or give package.module:attribute for your own"
    )
    with pytest.raises(VafusionError, match=r"unknown model \(did you mean fusion\?\).*`vafusion models` lists"):
        plugins.find(MODELS, "fusio", {"imf": 1}, {"fusion": "imf"}, flag="--model")


def test_options_are_typed_by_the_signature(site):
    detector = plugins.import_object("plug_a:detector", DETECTORS)
    declared = plugins.declared_options(detector, "face detector 'x'")
    assert not declared.extra
    assert [(o.name, o.type_name, o.default) for o in declared.options.values()] == [
        ("threshold", "float", 0.5),
        ("sizes", "tuple[int, ...]", (1, 2)),
        ("mode", "int | str", "auto"),
        ("limit", "int | None", None),
        ("flip", "bool", False),
        ("name", "str", "a"),
    ]
    given = {"threshold": "1", "sizes": "3, 4", "mode": "7", "limit": "2", "flip": "TRUE", "name": "12"}
    typed = plugins.typed_options("face detector 'x'", declared, given, "--detector-option ")
    assert typed == {"threshold": 1.0, "sizes": (3, 4), "mode": 7, "limit": 2, "flip": True, "name": "12"}
    assert isinstance(typed["threshold"], float)
    assert plugins.typed_options("d", declared, {"mode": "auto", "limit": None}, "") == {"mode": "auto", "limit": None}
    errors = {
        "threshold=fast": "--detector-option threshold=fast: expected float, got 'fast'",
        "limit=lots": "--detector-option limit=lots: expected int | None, got 'lots'",
        "flip=1": "--detector-option flip=1: expected bool, got 1",
        "size=3": "--detector-option size: face detector 'x' has no such option; its options: threshold, sizes",
    }
    for pair, message in errors.items():
        key, _, value = pair.partition("=")
        with pytest.raises(VafusionError, match=message.replace("(", r"\(").replace("|", r"\|")):
            plugins.typed_options("face detector 'x'", declared, {key: value}, "--detector-option ")


def test_kwargs_receive_text_and_required_options_are_named(site):
    needs = plugins.declared_options(plugins.import_object("plug_a:needs", DETECTORS), "face detector 'n'")
    assert needs.extra and needs.options["size"].required
    assert plugins.typed_options("n", needs, {"size": "3", "other": "4"}, "") == {"size": 3, "other": "4"}
    with pytest.raises(VafusionError, match=r"face detector 'n': option 'size' has no default; give -o size=VALUE"):
        plugins.typed_options("face detector 'n'", needs, {}, "-o ")
    with pytest.raises(VafusionError, match=r"option 'size' has default 'big', not a int; fix its annotation"):
        plugins.declared_options(plugins.import_object("plug_a:bad_default", DETECTORS), "face detector 'b'")
    assert plugins.declared_options(dict, "d") == Declared({}, True)  # no readable signature: takes anything


def test_calling_foreign_code_is_one_line_with_the_cause():
    def factory(**kwargs):
        raise RuntimeError("first line\nsecond")

    with pytest.raises(VafusionError) as caught:
        plugins.call("extractor 'f'", factory, {"b": 1, "a": 2}, VafusionError)
    assert str(caught.value) == "extractor 'f': building it with a, b raised RuntimeError: first line"
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_the_untyped_rule():
    assert [plugins.parse_value(t) for t in ("3", "-2.5", "TRUE", "false", "gelu", "1,2")] == [
        3,
        -2.5,
        True,
        False,
        "gelu",
        "1,2",
    ]
    assert Option("x", None, None).coerce("7") == 7
    assert Option("x", int, 0).coerce("2.0") == 2 and Option("x", str, "").coerce("1") == "1"
    assert Option("x", float, 0.0).coerce(3) == 3.0 and Option("x", bool | str, "").coerce("no") == "no"


def test_every_kind_has_its_own_group():
    assert {k.group for k in plugins.KINDS} == {
        "vafusion.extractors",
        "vafusion.models",
        "vafusion.detectors",
        "vafusion.post",
    }
