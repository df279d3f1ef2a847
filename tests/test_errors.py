"""Errors keep their cause: a library caller sees it in __cause__, the CLI prints one line, and
VAFUSION_TRACEBACK=1 prints the whole chain before that line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vafusion.cache.reader import FeatureFile
from vafusion.cli import cli
from vafusion.errors import TRACEBACK_ENV, VafusionError
from vafusion.fs import read_text
from vafusion.fusion.runs.checkpoint import load_run


def test_a_library_error_has_its_cause(tmp_path):
    with pytest.raises(VafusionError, match="no such file") as caught:
        read_text(tmp_path / "missing.txt", "test list")
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(VafusionError, match="not a readable HDF5 file") as caught:
        FeatureFile(tmp_path / "garbage.h5")
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(VafusionError, match="no checkpoint") as caught:
        load_run(tmp_path)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def _train_with_a_missing_module(toy_cache, tmp_path, env: dict[str, str]) -> str:
    result = CliRunner(env=env).invoke(
        cli, ["train", str(toy_cache), "--run", str(tmp_path / "r"), "--model", "nowhere_xyz:Model"]
    )
    assert result.exit_code == 1
    return result.output


def test_the_cli_prints_one_line_or_with_the_variable_the_chain(toy_cache, tmp_path, monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    output = _train_with_a_missing_module(toy_cache, tmp_path, {})
    assert output.startswith("error: model 'nowhere_xyz:Model': cannot import module 'nowhere_xyz'")
    assert output.count("\n") == 1 and "Traceback" not in output
    assert _train_with_a_missing_module(toy_cache, tmp_path, {TRACEBACK_ENV: "0"}) == output
    chained = _train_with_a_missing_module(toy_cache, tmp_path, {TRACEBACK_ENV: "1"})
    assert chained.startswith("Traceback (most recent call last):")
    assert "ModuleNotFoundError: No module named 'nowhere_xyz'" in chained  # the original exception and type
    assert "The above exception was the direct cause of the following exception:" in chained
    assert "vafusion.errors.VafusionError: model 'nowhere_xyz:Model'" in chained
    assert chained.endswith("\n" + output)  # and the one line, last
