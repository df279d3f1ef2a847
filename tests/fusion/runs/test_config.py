"""The run configuration: its three parts, config.json both ways, version 1 converted, flat settings routed."""

from __future__ import annotations

import json

import pytest

from vafusion.errors import VafusionError
from vafusion.fusion.runs.config import (
    CONFIG_FILE,
    DataConfig,
    FusionConfig,
    ModelConfig,
    TrainingConfig,
    make_config,
    replace,
)


def test_parts_round_trip_through_config_json(tmp_path):
    config = make_config(
        features=("a", "b"), window=64, hop=32, epochs=3, model="imf", d_model=32, tcn_dilations=[1, 2]
    )
    assert config.data == DataConfig(features=("a", "b"), window=64, hop=32)
    assert config.training == TrainingConfig(epochs=3)
    assert config.model.name == "imf" and config.model.options["d_model"] == 32
    assert config.model.options["tcn_dilations"] == (1, 2) and config.model.options["heads"] == 4  # all options
    config.save(tmp_path)
    stored = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert stored["config_version"] == 2 and set(stored) == {"config_version", "data", "model", "training"}
    assert stored["model"]["options"]["tcn_dilations"] == [1, 2]
    again = FusionConfig.load(tmp_path)
    assert again == config and again.to_dict() == config.to_dict() and not again.differences(config)


def test_differences_name_the_settings_and_ignore_the_device():
    base = make_config(features=("a",), epochs=3)
    assert base.differences(replace(base, device="cpu")) == []
    assert base.differences(replace(base, epochs=4, d_model=32)) == ["model.options.d_model", "training.epochs"]
    assert base.differences(replace(base, model="concat")) == [
        "model.name",
        "model.options.attn_distance_bias",
        "model.options.d_model",  # concat's default width is 128, imf's 64
        "model.options.heads",
    ]
    assert replace(base, model="ridge").model.options == {"alpha": 10.0, "context": 1, "max_frames": 200_000}


def test_version_1_configurations_are_converted():
    flat = {
        "features": ["v", "a"],
        "window": 48,
        "hop": 32,
        "split": "folds",
        "folds": 3,
        "fold": 2,
        "model": "fusion",
        "d_model": 16,
        "tcn_kernel": 3,
        "tcn_dilations": [1, 2],
        "causal": True,
        "dropout": 0.1,
        "heads": 2,
        "head_hidden": 16,
        "attn_distance_bias": False,
        "ridge_alpha": 10.0,
        "ridge_context": 1,
        "ridge_max_frames": 200000,
        "epochs": 3,
        "batch_size": 4,
        "lr": 0.003,
        "weight_decay": 0.0001,
        "mse_weight": 0.0,
        "patience": 10,
        "grad_clip": 1.0,
        "seed": 5,
        "device": "cpu",
        "amp": True,
        "config_version": 1,
    }
    config = FusionConfig.from_dict(flat)
    assert config.data == DataConfig(("v", "a"), 48, 32, "folds", 3, 2)
    assert config.model == ModelConfig(
        "imf",
        {
            "d_model": 16,
            "tcn_kernel": 3,
            "tcn_dilations": (1, 2),
            "causal": True,
            "dropout": 0.1,
            "heads": 2,
            "head_hidden": 16,
            "attn_distance_bias": False,
        },
    )
    # and the recipe settings it predates as that version trained: the v1 schedule, a fixed grid of windows,
    # every frame
    assert config.training == TrainingConfig(
        3, 4, 0.003, 0.0001, 0.0, 10, 1.0, 5, "cpu", True, schedule="v1", windows="grid", min_epochs=1, stride=1
    )
    ridge = FusionConfig.from_dict({**flat, "model": "ridge", "ridge_alpha": 2.0, "ridge_context": 5})
    assert ridge.model == ModelConfig("ridge", {"alpha": 2.0, "context": 5, "max_frames": 200000})
    with pytest.raises(VafusionError, match=r"unknown keys \['colour'\]"):
        FusionConfig.from_dict({**flat, "colour": "red"})
    with pytest.raises(VafusionError, match="version 1 names model 'svm'"):
        FusionConfig.from_dict({**flat, "model": "svm"})


def test_bad_configurations_are_one_line_errors(tmp_path):
    with pytest.raises(VafusionError, match="version 7, this vafusion reads 1 and 2"):
        FusionConfig.from_dict({"config_version": 7})
    with pytest.raises(VafusionError, match="does not fit this version"):
        FusionConfig.from_dict({"config_version": 2, "data": {"colour": 1}})
    with pytest.raises(VafusionError, match="--hop 20: more than --window 10"):
        make_config(window=10, hop=20)
    with pytest.raises(VafusionError, match="has no such option"):
        make_config(colour="red")  # neither data, training nor an option of imf
    with pytest.raises(VafusionError, match="no run configuration"):
        FusionConfig.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{")
    with pytest.raises(VafusionError, match="not valid JSON"):
        FusionConfig.load(tmp_path)
