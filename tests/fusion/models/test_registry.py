"""The model registry: names, module:Class references, declared options and their typing, the errors a
user or a plug-in author sees, and `vafusion models`."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from click.testing import CliRunner

from vafusion import plugins
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.models import BUILTINS, parse_model_options, resolve_model
from vafusion.fusion.models.registry import Option, parse_value

from ..conftest import BUILTIN_MODELS


def test_builtins_and_the_old_name():
    for name in BUILTIN_MODELS:
        spec = resolve_model(name)
        assert spec.name == spec.ref == name and spec.origin == "built-in"
        assert spec.description and not spec.description.startswith("(no description")
        assert all(o.help for o in spec.options.values()), name  # every built-in option is explained
    assert resolve_model("fusion").ref == "imf"
    assert resolve_model("ridge").closed_form and not resolve_model("imf").closed_form
    assert not resolve_model("ridge").can_be_causal and resolve_model("late").can_be_causal
    with pytest.raises(
        VafusionError,
        match=r"--model imff: unknown model \(did you mean imf\?\); built-ins: imf, interactive, transformer, "
        r"concat, late, ridge; or give package.module:Class",
    ):
        resolve_model("imff")


def test_options_are_typed_by_the_declaration():
    spec = resolve_model("imf")
    given = parse_model_options(["d_model=64", "tcn_dilations=1,2, 4", "causal=true", "dropout=0", "heads= 2"])
    assert given == {"d_model": "64", "tcn_dilations": "1,2, 4", "causal": "true", "dropout": "0", "heads": "2"}
    options = spec.with_defaults(given)
    assert options["d_model"] == 64 and options["tcn_dilations"] == (1, 2, 4) and options["causal"] is True
    assert options["dropout"] == 0.0 and isinstance(options["dropout"], float) and options["heads"] == 2
    assert options["head_hidden"] == 64  # the default of an option not given
    assert spec.with_defaults({"tcn_dilations": [1, 2]})["tcn_dilations"] == (1, 2)  # as JSON stores it
    with pytest.raises(VafusionError, match=r"--model-option d_model=abc: expected int, got 'abc'"):
        spec.with_defaults({"d_model": "abc"})
    with pytest.raises(VafusionError, match=r"expected bool, got 1"):
        spec.with_defaults({"causal": "1"})
    with pytest.raises(VafusionError, match=r"model 'imf' has no such option; its options: d_model, tcn_kernel"):
        spec.with_defaults({"alpha": "1"})
    with pytest.raises(VafusionError, match=r"model 'ridge' cannot run causally.*imf, interactive, transformer"):
        resolve_model("ridge").with_defaults({"causal": True})
    with pytest.raises(VafusionError, match="write KEY=VALUE"):
        parse_model_options(["d_model"])
    with pytest.raises(VafusionError, match="given twice"):
        parse_model_options(["d_model=1", "d_model=2"])
    with pytest.raises(VafusionError, match=r"model 'imf': d_model \(30\) must be divisible by heads \(4\)"):
        spec.build([8, 4], {"d_model": 30})


def test_unannotated_options_follow_the_generic_rule():
    assert [parse_value(t) for t in ("3", "-2.5", "1e-3", "TRUE", "false", "gelu", "1,2")] == [
        3,
        -2.5,
        1e-3,
        True,
        False,
        "gelu",
        "1,2",
    ]
    untyped = Option("x", None, None)
    assert untyped.coerce("7") == 7 and untyped.coerce("relu") == "relu"
    assert Option("act", str, "gelu").coerce("1") == "1"  # a text option keeps the text


def _write_module(folder, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for throw-away plug-in modules (forgotten again afterwards)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("plug_"):
            del sys.modules[name]


def test_module_class_references_and_plugin_author_errors(plugin_dir):
    _write_module(
        plugin_dir,
        "plug_ok",
        '''
        from torch import nn

        class Fine(nn.Module):
            """First line is the description.

            More text is not.
            """
            option_help = {"width": "how wide"}

            def __init__(self, dims, *, width: int = 3, act="gelu", scale=0.5, **extra):
                super().__init__()

        class NoDefault(nn.Module):
            def __init__(self, dims, size): ...

        class BadHelp(nn.Module):
            option_help = {"widht": "typo"}
            def __init__(self, dims, *, width: int = 3): ...

        class NotAModel:
            def __init__(self, dims): ...

        class Closed:
            """Fitted in closed form."""
            def __init__(self, dims, *, alpha: float = 1.0): ...
            def fit(self, streams, present, labels, *, seed): ...
            def predict(self, streams, present): ...
            def state_dict(self): ...
            def load_state_dict(self, state): ...

        class Unstorable(nn.Module):
            def __init__(self, dims, *, act=nn.GELU): ...

        thing = 3
    ''',
    )
    _write_module(plugin_dir, "plug_needs", "import not_installed_anywhere_xyz\n")
    spec = resolve_model("plug_ok:Fine")
    assert spec.ref == spec.name == "plug_ok:Fine" and spec.origin == "module"
    assert spec.description == "First line is the description."
    assert [(o.name, o.type_name, o.default, o.help) for o in spec.options.values()] == [
        ("width", "int", 3, "how wide"),
        ("act", "str", "gelu", ""),
        ("scale", "float", 0.5, ""),
    ]
    assert resolve_model("plug_ok:Closed").closed_form
    cases = {
        "plug_ok:NoDefault": "constructor argument 'size' has no default",
        "plug_ok:BadHelp": r"option_help names \['widht'\]",
        "plug_ok:NotAModel": "neither a torch.nn.Module nor fitted in closed form",
        "plug_ok:Unstorable": "options are stored in config.json",
        "plug_ok:thing": "is a int, not a class",
        "plug_ok:Missing": "module 'plug_ok' has no attribute 'Missing'; check the name",
        "plug_needs:X": "importing 'plug_needs' failed .*not_installed_anywhere_xyz.*install what it needs",
        "plug_nowhere.sub:X": r"cannot import module 'plug_nowhere.sub' .*make 'plug_nowhere.sub' importable",
        "plug_ok:": "write package.module:Class",
    }
    for ref, message in cases.items():
        with pytest.raises(VafusionError, match=message):
            resolve_model(ref)


def test_models_command_lists_every_builtin_with_options_and_defaults():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    for name in BUILTINS:
        spec = resolve_model(name)
        assert f"{name}  (built-in" in result.output and spec.description in result.output
        for option in spec.options.values():
            assert f"{option.name}={plugins.shown(option.default)}" in result.output
    assert "tcn_dilations=1,2,4,8" in result.output and "also 'fusion'" in result.output
    listed = json.loads(CliRunner().invoke(cli, ["models", "--json"]).output)
    assert [m["name"] for m in listed] == list(BUILTINS)
    ridge = next(m for m in listed if m["name"] == "ridge")
    assert ridge["closed_form"] and [o["name"] for o in ridge["options"]] == ["alpha", "context", "max_frames"]


def test_cli_model_errors_are_one_line(toy_cache, tmp_path):
    def fails(*args: str) -> str:
        result = CliRunner().invoke(
            cli, ["train", str(toy_cache), "--run", str(tmp_path / "r"), "--features", "visual,audio", *args]
        )
        assert result.exit_code == 1 and result.output.startswith("error: ") and "Traceback" not in result.output
        assert not (tmp_path / "r").exists()  # checked before anything is written
        return result.output

    assert "cannot run causally" in fails("--model", "ridge", "--causal")
    assert "its options: alpha, context, max_frames" in fails("--model", "ridge", "--model-option", "d_model=8")
    assert "expected int" in fails("--model-option", "d_model=wide")
    assert "unknown model" in fails("--model", "nope")
    assert "cannot import module 'nowhere_xyz'" in fails("--model", "nowhere_xyz:Model")
    assert "give it once" in fails("--d-model", "8", "--model-option", "d_model=8")


def test_deprecated_flags_still_work_with_a_note(toy_cache, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "train",
            str(toy_cache),
            "--run",
            str(tmp_path / "r"),
            "--features",
            "visual",
            "--d-model",
            "8",
            "--heads",
            "2",
            "--epochs",
            "1",
            "--window",
            "48",
            "--hop",
            "32",
            "--no-report",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "note: --d-model is deprecated; use --model-option d_model=8" in result.output
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"]["name"] == "imf" and config["model"]["options"]["d_model"] == 8
    ridge = CliRunner().invoke(
        cli,
        [
            "train",
            str(toy_cache),
            "--run",
            str(tmp_path / "ridge"),
            "--features",
            "visual",
            "--model",
            "ridge",
            "--ridge-context",
            "3",
            "--no-report",
        ],
    )
    assert ridge.exit_code == 0, ridge.output
    assert json.loads((tmp_path / "ridge" / "config.json").read_text())["model"]["options"]["context"] == 3


def test_readme_models_table_matches_the_declarations():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Models") : readme.index("## Writing your own model")]
    cells = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            parts = [p.strip() for p in line.strip("|").split("|")]
            cells[parts[0].strip("`")] = parts[2]
    assert list(cells) == list(BUILTINS)
    for name, text in cells.items():
        if text.startswith("same as `"):
            text = cells[text.split("`")[1]]
        declared = {f"{o.name}={plugins.shown(o.default)}" for o in resolve_model(name).options.values()}
        assert set(text.strip("`").split()) == declared, name
