"""Runs in worker processes (`cv`/`compare --jobs N --devices ...`): the pool itself (a failing or dying task
fails alone, logs come back prefixed), the device and thread split, a failing run reported at the end with its
directory, and a parallel cv killed midway that stops its workers and resumes without retraining what had
finished."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from vafusion.cli import cli
from vafusion.device import threads_per_process
from vafusion.errors import VafusionError
from vafusion.fusion.experiments.parallel import parse_devices, run_in_workers, worker_devices
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.config import make_config

ROOT = Path(__file__).resolve().parents[3]
TINY = ["--window", "48", "--hop", "32", "--batch-size", "4", "--device", "cpu", "--no-report"]
IMF = [
    "--model-option",
    "d_model=16",
    "--model-option",
    "heads=2",
    "--model-option",
    "tcn_kernel=3",
    "--model-option",
    "tcn_dilations=1,2",
    "--model-option",
    "head_hidden=16",
]


def task(spec: dict, device: str | None, log) -> int:
    """A task for the pool test (module level: workers import it by name)."""
    log(f"x={spec['x']} on {device}")
    if spec["x"] == 1:
        raise VafusionError("one is bad")
    if spec["x"] == 2:
        os._exit(3)  # the worker dies inside the task
    if spec["x"] == 3:
        raise ValueError("three")
    return spec["x"] * 10


def context_task(spec: dict, device: str | None, log) -> list:
    """What a worker runs under: threads, precision, how caches load (the parent's, which spawn does not inherit)."""
    import torch

    from vafusion import device as dev
    from vafusion.fusion.data import sources

    return [torch.get_num_threads(), dev.precision(), sources.loading_choice()]


def test_workers_run_with_the_commands_thread_share_precision_and_loading():
    from vafusion.device import compute
    from vafusion.fusion.data.sources import loading

    with compute(4, "bf16", allow_emulated=True), loading(True):  # what --threads 4 --precision bf16 --stream set
        values, failures = run_in_workers(context_task, [{}, {}], workers=2, names=["a", "b"])
    assert not failures and list(values.values()) == [[2, "bf16", True]] * 2
    values, _ = run_in_workers(context_task, [{}], workers=1, names=["c"])
    assert values[0][1:] == ["fp32", None]


def test_a_failing_or_dying_task_fails_alone_and_logs_come_back_named():
    logged, ended = [], []
    values, failures = run_in_workers(
        task,
        [{"x": i} for i in range(6)],
        workers=2,
        names=[f"t{i}" for i in range(6)],
        devices=["cpu", "cpu"],
        log=logged.append,
        on_end=ended.append,
    )
    assert values == {0: 0, 4: 40, 5: 50}
    assert [(f.index, f.message) for f in failures] == [
        (1, "one is bad"),
        (2, "its worker process ended (exit code 3) inside the task"),
        (3, "ValueError: three"),
    ]
    assert sorted(ended) == list(range(6))
    for i in range(6):
        assert f"[t{i}] x={i} on cpu" in logged
        assert any(re.fullmatch(rf"\[t{i}\] started in worker [01] on cpu", m) for m in logged)
    assert any(m.startswith("[t3] Traceback") and "ValueError: three" in m for m in logged)


def test_devices_go_round_robin_over_workers_and_threads_are_shared():
    assert worker_devices(5, ["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices(2, None) == [None, None]
    assert [threads_per_process(n, cores=16) for n in (1, 3, 16, 40)] == [16, 5, 1, 1]
    assert parse_devices(" cpu, cpu ") == ["cpu", "cpu"]
    for text, message in (("auto", "not auto"), (",", "name at least one device"), ("gpu", "use auto, cpu, cuda")):
        with pytest.raises(VafusionError, match=message):
            parse_devices(text)


def _group_alive(pgid: int) -> list[int]:
    """Processes of group ``pgid`` still running (zombies waiting to be reaped do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_killed_parallel_cv_stops_its_workers_resumes_and_reports_a_failing_run_at_the_end(toy_cache, tmp_path):
    """Killed midway, then rerun with one run made to fail: the finished runs are kept, the others finish."""
    runs = tmp_path / "runs"
    args = [
        "cv",
        str(toy_cache),
        "--runs",
        str(runs),
        "--folds",
        "3",
        "--features",
        "visual,audio",
        "--epochs",
        "4",
        "--patience",
        "4",
        *TINY,
        *IMF,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vafusion", *args, "--jobs", "2"],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    summaries = lambda: sorted(p.parent.name for p in runs.glob(f"fold-*/{ckpt_mod.SUMMARY}"))  # noqa: E731
    try:
        _wait_for(lambda: summaries() or proc.poll() is not None, 120, "a first finished run")
        assert proc.poll() is None, "the cv ended before it could be killed midway"
        os.kill(proc.pid, signal.SIGKILL)  # the parent only: its workers must notice and stop
        proc.wait()
        _wait_for(lambda: not _group_alive(proc.pid), 30, "the workers to die with their parent")
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    finished = summaries()
    assert 1 <= len(finished) < 3
    metrics = {f: (runs / f / ckpt_mod.METRICS).read_text() for f in finished}
    odd = next(runs / f"fold-{k}" for k in (1, 2, 3) if f"fold-{k}" not in finished)
    odd.mkdir(exist_ok=True)
    make_config(features=("visual",), model="ridge").save(odd)  # a run of other settings there: that run fails

    again = CliRunner().invoke(cli, [*args, "--devices", "cpu,cpu"])  # two workers, each given the CPU
    assert again.exit_code == 1 and "Traceback" not in again.output
    error, failed = again.stderr.splitlines()[-2:]
    assert error == (
        "error: 1 of 3 runs failed (the others are finished and kept; fix the cause and rerun the same "
        "command to continue):"
    )
    assert failed.startswith(f"  {odd}: holds a run with other settings (data.features visual in the run, ")
    assert failed.endswith(
        "; rerun with the same options to continue it, or use another directory (or delete this one)"
    )
    for fold in finished:
        assert f"[fold {fold[-1]}] {runs / fold}: finished before, not trained again" in again.stderr
    assert summaries() == sorted({"fold-1", "fold-2", "fold-3"} - {odd.name})  # the others finished
    started = re.findall(r"\[fold (\d)\] started in worker ([01]) on cpu$", again.stderr, flags=re.M)
    assert sorted(f for f, _ in started) == ["1", "2", "3"]

    for fold in finished:
        assert (runs / fold / ckpt_mod.METRICS).read_text() == metrics[fold]  # never trained again
