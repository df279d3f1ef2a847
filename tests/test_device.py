"""Precision and threads: bf16 refused where the CPU only emulates it, forced bf16 close to fp32, --threads obeyed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import vafusion.device as device
from vafusion.cli import cli
from vafusion.errors import VafusionError
from vafusion.fusion.data import sources
from vafusion.fusion.runs.checkpoint import load_run
from vafusion.fusion.runs.config import make_config
from vafusion.fusion.runs.evaluate import predict_partition
from vafusion.fusion.runs.train import train

TOY = dict(
    features=("visual", "audio"),
    window=48,
    hop=32,
    epochs=3,
    batch_size=4,
    d_model=16,
    heads=2,
    head_hidden=16,
    tcn_dilations=(1, 2),
    patience=10,
    lr=3e-3,
    device="cpu",
)
BF16_TOLERANCE = 0.05
"""Stated tolerance: a bf16 run's validation P and predictions within 0.05 of the fp32 run's (toy task)."""

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bf16_is_refused_on_a_cpu_without_it(monkeypatch, toy_cache, tmp_path):
    monkeypatch.setattr(device, "cpu_bf16_native", lambda: False)
    monkeypatch.delenv(device.EMULATED_BF16_ENV, raising=False)
    with pytest.raises(VafusionError, match=r"--precision bf16: this CPU .* no native bfloat16.* use --precision fp32"):
        with device.compute(1, "bf16"):
            pass
    result = CliRunner().invoke(
        cli, ["train", str(toy_cache), "--run", str(tmp_path / "r"), "--features", "visual", "--precision", "bf16"]
    )
    assert (
        result.exit_code == 1
        and result.output.startswith("error: --precision bf16")
        and "Traceback" not in result.output
    )
    assert result.output.count("\n") == 1 and not (tmp_path / "r").exists()
    monkeypatch.setenv(device.EMULATED_BF16_ENV, "1")  # forced: runs emulated
    with device.compute(1, "bf16") as (threads, precision):
        assert (threads, precision) == (1, "bf16") and device.precision() == "bf16"
    assert device.precision() == "fp32"  # restored
    monkeypatch.setattr(device, "cpu_bf16_native", lambda: True)
    monkeypatch.delenv(device.EMULATED_BF16_ENV)
    with device.compute(1, "bf16"):  # a CPU that has it needs nothing forced
        pass


def test_cpu_autocast_follows_the_precision():
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    cpu = torch.device("cpu")
    with device.autocast(cpu):
        assert layer(x).dtype == torch.float32
    with device.compute(1, "bf16", allow_emulated=True), device.autocast(cpu):
        assert layer(x).dtype == torch.bfloat16
    with device.compute(1, "bf16", allow_emulated=True), device.autocast(cpu, enabled=False):  # amp is CUDA's knob
        assert layer(x).dtype == torch.bfloat16


def test_bf16_training_runs_and_stays_within_tolerance_of_fp32(toy_cache, tmp_path):
    # the v1 recipe: this tolerance was calibrated on its 3 epochs (a grid of windows, the v1 schedule)
    fp32 = train(toy_cache, tmp_path / "fp32", make_config(recipe="v1", **TOY), progress=False)
    with device.compute(1, "bf16", allow_emulated=True):
        bf16 = train(toy_cache, tmp_path / "bf16", make_config(recipe="v1", **TOY), progress=False)
        bf16_preds = predict_partition(load_run(tmp_path / "bf16"), toy_cache, device="cpu").predictions
    assert json.loads((tmp_path / "bf16" / "summary.json").read_text())["precision"] == "bf16"
    assert json.loads((tmp_path / "fp32" / "summary.json").read_text())["precision"] == "fp32"
    assert fp32.best["p"] > 0.3  # both learn the toy task
    assert abs(bf16.best["p"] - fp32.best["p"]) < BF16_TOLERANCE
    # the same bf16 weights predicted in fp32: bf16 rounding moves the outputs by less than the tolerance
    fp32_preds = predict_partition(load_run(tmp_path / "bf16"), toy_cache, device="cpu").predictions
    worst = max(float(np.abs(bf16_preds[v] - fp32_preds[v]).max()) for v in fp32_preds)
    assert 0 < worst < BF16_TOLERANCE


def test_default_threads_leave_the_busy_cores_to_others(monkeypatch):
    real_busy_cpus = device.busy_cpus
    monkeypatch.setattr(device, "physical_cores", lambda: 4)
    for busy, expected in ((0.0, 4), (0.4, 4), (1.0, 3), (2.6, 1), (7.0, 1)):
        monkeypatch.setattr(device, "busy_cpus", lambda sample_s=0.1, b=busy: b)
        assert device.default_threads() == expected
    times = iter([(100, 1000), (150, 1100)])  # half of the jiffies busy
    monkeypatch.setattr(device, "_cpu_times", lambda: next(times))
    monkeypatch.setattr(device.os, "cpu_count", lambda: 2)
    assert real_busy_cpus(0.0) == pytest.approx(1.0)


def test_commands_run_with_the_threads_precision_and_loading_asked_for(monkeypatch, toy_cache, tmp_path):
    import vafusion.fusion.runs.train as train_mod

    seen = []

    def fake_train(*args, **kwargs):
        seen.append((torch.get_num_threads(), device.precision(), sources.loading_choice()))
        raise VafusionError("stop here")

    monkeypatch.setattr(train_mod, "train", fake_train)
    monkeypatch.setattr(device, "default_threads", lambda: 2)
    monkeypatch.setenv(device.EMULATED_BF16_ENV, "1")
    runner = CliRunner()
    base = ["train", str(toy_cache), "--run", str(tmp_path / "r"), "--features", "visual"]
    for extra in (["--threads", "3", "--stream"], ["--precision", "bf16", "--in-memory"], []):
        result = runner.invoke(cli, base + extra)
        assert result.output == "error: stop here\n"
    assert seen == [(3, "fp32", True), (2, "bf16", False), (2, "fp32", None)]
    assert (
        torch.get_num_threads() == 1 and device.precision() == "fp32" and sources.loading_choice() is None
    )  # restored


def test_every_computing_command_takes_threads():
    for name in ("train", "cv", "compare", "evaluate", "predict", "report"):
        params = {p.name for p in cli.commands[name].params}
        assert {"threads", "precision", "in_memory"} <= params, name
    assert {"threads", "precision"} <= {p.name for p in cli.commands["extract"].params}
    assert "threads" in {p.name for p in cli.commands["cache"].commands["derive"].params}
