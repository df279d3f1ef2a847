"""Every numeric and choice option of every command is checked at the boundary, before any work.

A bad value is one ``error:`` line naming the option (click's exit code 2 for a value outside its
declared range; 1 for a combination the configuration refuses), never a traceback, a silent
fallback or a NaN reaching an optimiser. The ranges are declared once, on the configuration
fields (:mod:`vafusion.bounds`), so library callers meet the same checks.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import invoke, one_line_error, usage_error
from vafusion.errors import VafusionError
from vafusion.extract.options import ExtractOptions
from vafusion.fusion.runs.config import FusionConfig, make_config

TRAINING_VALUES = [
    ("--lr", "-1"),
    ("--lr", "0"),
    ("--lr", "nan"),
    ("--lr", "inf"),
    ("--weight-decay", "-1"),
    ("--weight-decay", "nan"),
    ("--mse-weight", "-0.5"),
    ("--epochs", "0"),
    ("--batch-size", "0"),
    ("--window", "0"),
    ("--hop", "0"),
    ("--audio-where-speech", "1.5"),
    ("--audio-where-speech", "-0.1"),
    ("--audio-where-speech", "nan"),
    ("--patience", "0"),
    ("--seed", "-1"),
    ("--seed", "2.5"),
    ("--device", "mps"),
    ("--device", "xla"),
    ("--device", "cuda:99"),
    ("--device", "banana"),
]
"""Options every training command (train, cv, compare) shares."""

COMMAND_VALUES = {
    "train": [("--fold", "0"), ("--folds", "1"), ("--split", "random")],
    "cv": [("--folds", "1"), ("--seeds", "0"), ("--jobs", "0")],
    "compare": [("--folds", "1"), ("--seeds", "0"), ("--split", "random"), ("--jobs", "0")],
    "predict": [("--smooth", "0"), ("--device", "xla")],
    "evaluate": [("--partition", "test"), ("--device", "mps")],
    "report": [("--ids", "-1"), ("--device", "xla")],
    "extract": [
        ("--image-size", "8"),
        ("--image-size", "4096"),
        ("--batch-size", "0"),
        ("--workers", "-1"),
        ("--shard", "3/2"),
        ("--shard", "x"),
        ("--compression", "zip"),
        ("--device", "xla"),
    ],
    "demo": [("--seed", "-1"), ("--size", "huge"), ("--device", "mps")],
    "cache import": [("--tolerance", "-1")],
}


def _args(command: str, cache, tmp_path) -> list[object]:
    """The command with valid positional arguments and required options, so only the option under test is bad."""
    return {
        "train": ["train", cache, "--run", tmp_path / "run"],
        "cv": ["cv", cache, "--runs", tmp_path / "run"],
        "compare": ["compare", cache, "--runs", tmp_path / "run", "--models", "ridge"],
        "predict": ["predict", tmp_path, "--cache", cache, "--out", tmp_path / "run"],
        "evaluate": ["evaluate", tmp_path],
        "report": ["report", tmp_path],
        "extract": ["extract", tmp_path, "--cache", tmp_path / "run"],
        "demo": ["demo", "--out", tmp_path / "run"],
        "cache import": ["cache", "import", cache, "visual2", tmp_path],
    }[command]


CASES = [(c, o, v) for c in ("train", "cv", "compare") for o, v in TRAINING_VALUES] + [
    (c, o, v) for c, pairs in COMMAND_VALUES.items() for o, v in pairs
]


@pytest.mark.parametrize(("command", "option", "value"), CASES, ids=[f"{c}-{o}={v}" for c, o, v in CASES])
def test_a_bad_value_is_one_line_naming_the_option(command, option, value, toy_cache, tmp_path):
    usage_error(invoke(*_args(command, toy_cache, tmp_path), option, value), option)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("command", "extra", "named"),
    [
        ("train", ["--features", ""], "--features"),
        ("train", ["--features", " , "], "--features"),
        ("train", ["--fold", "9"], "--fold 9: there are only 6 folds"),
        ("train", ["--fold", "2", "--split", "official"], "--fold 2 and --split official"),
        ("train", ["--window", "100", "--hop", "200"], "--hop 200: more than --window 100"),
        ("cv", ["--features", ","], "--features"),
        ("compare", ["--features", ";"], "--features"),
        ("compare", ["--models", ","], "--models"),
        ("cv", ["--devices", "cpu,xla"], "--devices xla"),
        ("compare", ["--devices", "cuda:7"], "--devices cuda:7"),
        ("extract", ["--features", ""], "--features"),
    ],
)
def test_a_bad_combination_is_one_line_naming_the_option(command, extra, named, toy_cache, tmp_path):
    one_line_error(invoke(*_args(command, toy_cache, tmp_path), *extra), named)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (dict(lr=-1.0), "--lr -1"),
        (dict(lr=float("nan")), "--lr nan"),
        (dict(weight_decay=-1e-4), "--weight-decay"),
        (dict(mse_weight=-1.0), "--mse-weight"),
        (dict(epochs=0), "--epochs 0"),
        (dict(epochs=2.5), "--epochs 2.5"),
        (dict(seed=-3), "--seed -3"),
        (dict(fold=0, split="folds"), "--fold 0"),
        (dict(features=()), "--features"),
        (dict(grad_clip=float("inf")), "--grad-clip inf"),
    ],
)
def test_library_callers_meet_the_same_ranges(settings, named):
    with pytest.raises(VafusionError, match="invalid configuration: .*" + named.replace("-", r"\-")):
        make_config(**settings)


def test_a_saved_configuration_out_of_range_is_refused_when_read():
    data = make_config().to_dict()
    data["training"]["lr"] = -1.0
    with pytest.raises(VafusionError, match="--lr -1"):
        FusionConfig.from_dict(data)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (dict(batch_size=0), "--batch-size 0"),
        (dict(image_size=8), "--image-size 8"),
        (dict(workers=-1), "--workers -1"),
        (dict(features=("",)), "--features"),
    ],
)
def test_extraction_options_of_library_callers(settings, named):
    with pytest.raises(VafusionError, match=named):
        ExtractOptions(**{"features": ("logmel",), **settings})


def test_cv_folds_has_help(toy_cache):
    help_text = invoke("cv", "--help").output
    start = help_text.index("  --folds ")
    folds = " ".join(help_text[start : help_text.index("  --seeds ", start)].split())
    assert "split by video" in folds and "[default: 6; x>=2]" in folds
