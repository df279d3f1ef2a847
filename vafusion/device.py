"""The compute device, its precision and its threads, shared by both stages (neither may import the other).

Why precision and threads live here, beside the device: they change how fast a command runs,
not which experiment it is, and every command that computes (extract, train, cv, compare,
predict, evaluate, cache derive) takes the same ``--threads`` and ``--precision``;
:func:`compute` sets both for a block of work, and :func:`autocast` is the one place a forward
pass asks for its precision. The precision and the ``--threads`` given are context variables of
:mod:`vafusion.runtime` (scoped to the block and its thread, handed whole to worker processes);
torch's thread count itself is process-wide, as torch keeps it.

- Precision: ``auto`` (the commands' default), ``fp32`` or ``bf16`` (CPU autocast to bfloat16).
  ``auto`` is bf16 where the CPU has native bfloat16 arithmetic (x86 AVX512-BF16 or AMX, ARM's
  BF16 extension), else fp32. An explicit bf16 is refused on a CPU without it: there oneDNN
  emulates it, measured 1.4-1.7x slower than fp32 on an AVX2 CPU (BENCHMARKS.md, section 8).
  ``VAFUSION_ALLOW_EMULATED_BF16=1`` (or ``allow_emulated=True``) runs it anyway: for tests,
  and for checking results on a machine without it. On CUDA, autocast is always on (``amp``:
  bf16 where the GPU has it, else fp16). Outside a :func:`compute` block (a library caller
  that sets nothing) the precision is fp32.
- Threads: by default the physical cores this process may use, minus the cores other
  processes keep busy right now (sampled from /proc/stat for 0.1 s), at least 1. Two
  spinning threads on two cores while other processes hold them made a training step 3-4x
  slower than one thread here (14x on another machine; BENCHMARKS.md, section 8).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from vafusion.errors import VafusionError
from vafusion.runtime import PRECISION, PRECISION_ASKED, THREADS_GIVEN

PRECISIONS = ("auto", "fp32", "bf16")
EMULATED_BF16_ENV = "VAFUSION_ALLOW_EMULATED_BF16"
_BUSY_SAMPLE_S = 0.1


def _cuda_problem(dev: torch.device) -> str | None:
    if not torch.cuda.is_available():
        return "CUDA is not available here (no GPU, or a CPU-only PyTorch); use --device cpu"
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        return f"this machine has {count} CUDA device(s): cuda:0 .. cuda:{count - 1}"
    return None


def _mps_problem(dev: torch.device) -> str | None:
    mps = getattr(torch.backends, "mps", None)
    return (
        None
        if mps is not None and mps.is_available()
        else "this PyTorch build has no MPS (Apple GPU); use --device cpu"
    )


_DEVICE_KINDS = {"cpu": lambda dev: None, "cuda": _cuda_problem, "mps": _mps_problem}
"""The device kinds vafusion runs on, each with the check that this machine has it."""


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here (one line), or None: checked at the CLI boundary, before any work."""
    if device == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return f"{device!r} is not a device; use auto, cpu, cuda or cuda:K"
    check = _DEVICE_KINDS.get(dev.type)
    if check is None:
        return f"{dev.type} devices are not supported by vafusion; use auto, cpu, cuda or cuda:K"
    return check(dev)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; an unusable explicit choice is a one-line error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(device)
    if problem:
        raise VafusionError(f"--device {device}: {problem}")
    return torch.device(device)


# ---------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------


def _cpu_flags() -> set[str]:
    """Feature flags of the CPU from /proc/cpuinfo (x86 ``flags``, ARM ``Features``); empty if unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def cpu_bf16_native() -> bool:
    """Whether this CPU has bfloat16 arithmetic in hardware (AVX512-BF16, AMX-BF16, or ARM BF16)."""
    probes = getattr(torch._C, "_cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(probes, name, None)
        if probe is not None and probe():
            return True
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & _cpu_flags())


def check_precision(precision: str, allow_emulated: bool | None = None) -> None:
    """A one-line error for an unknown precision, or bf16 on a CPU that would only emulate it."""
    if precision not in PRECISIONS:
        raise VafusionError(f"--precision {precision!r}: use {', '.join(PRECISIONS)}")
    if allow_emulated is None:
        allow_emulated = os.environ.get(EMULATED_BF16_ENV, "") not in ("", "0")
    if precision == "bf16" and not (allow_emulated or cpu_bf16_native()):
        raise VafusionError(
            f"--precision bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bfloat16 "
            f"(AVX512-BF16, AMX or ARM BF16): emulated, bf16 runs slower than fp32; use --precision fp32 or auto "
            f"(or set {EMULATED_BF16_ENV}=1 to run it emulated anyway)"
        )


def resolve_precision(precision: str) -> str:
    """``auto`` as this CPU's precision (bf16 where it is native, else fp32); fp32 and bf16 as they are."""
    if precision == "auto":
        return "bf16" if cpu_bf16_native() else "fp32"
    return precision


def precision() -> str:
    """The precision of CPU forward passes in force, fp32 or bf16 (see :func:`compute`)."""
    return PRECISION.get()


def precision_asked() -> str:
    """What the enclosing :func:`compute` block was asked for: ``auto``, ``fp32`` or ``bf16``.

    A resumed training follows the precision its run recorded where the choice was ``auto``
    (and fp32 for a run that recorded none), so one run never mixes precisions.
    """
    return PRECISION_ASKED.get()


@contextlib.contextmanager
def precision_in_force(precision: str) -> Iterator[str]:
    """Within the block: CPU forward passes in ``precision`` (fp32 or bf16, already checked); restored after."""
    token = PRECISION.set(precision)
    try:
        yield precision
    finally:
        PRECISION.reset(token)


def device_precision(device: torch.device, amp: bool = True) -> str:
    """The precision a forward pass on ``device`` computes in: :func:`precision` on the CPU, the autocast
    dtype on CUDA (``amp``), fp32 elsewhere. Recorded in a run's summary."""
    if device.type == "cuda":
        if not amp:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision() if device.type == "cpu" else "fp32"


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """The forward pass's precision: bf16 autocast on GPUs that have it, fp16 on older ones (``enabled``:
    the config's ``amp``); on the CPU, bf16 autocast under ``--precision bf16``, else exact fp32."""
    if device.type == "cuda":
        if not enabled:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "cpu" and precision() == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------


def _usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(_usable_cpus())


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyperthreads of one core count once)."""
    cpus = _usable_cpus()
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                (topology / "physical_package_id").read_text().strip()
                + ":"
                + (topology / "core_id").read_text().strip()
            )
        except OSError:
            return len(cpus)
    return max(1, len(cores))


def _cpu_times() -> tuple[int, int] | None:
    """``(busy, total)`` jiffies of all CPUs from /proc/stat (idle and iowait are not busy)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - values[3] - values[4], total


def busy_cpus(sample_s: float = _BUSY_SAMPLE_S) -> float:
    """How many CPUs other processes keep busy now: /proc/stat over ``sample_s`` (this process sleeps).

    Falls back to the 1-minute load average where /proc/stat is missing. (The load average
    alone lags by a minute and also counts tasks waiting on I/O: on the benchmark VM it read
    1.5-1.9 while every CPU was idle.)
    """
    before = _cpu_times()
    if before is None:
        try:
            return float(os.getloadavg()[0])
        except OSError:
            return 0.0
    time.sleep(sample_s)
    after = _cpu_times()
    if after is None or after[1] <= before[1]:
        return 0.0
    return (after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1)


def default_threads() -> int:
    """Physical cores minus the CPUs other processes keep busy now (rounded), at least 1."""
    return max(1, physical_cores() - int(busy_cpus() + 0.5))


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` (default: :func:`default_threads`) for torch and the BLAS libraries; returns how many."""
    n = default_threads() if threads is None else int(threads)
    if n < 1:
        raise VafusionError(f"--threads {threads}: must be >= 1")
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits  # numpy's BLAS (cache derive's PCA)
    except ImportError:  # pragma: no cover - a dependency of scikit-learn, installed with vafusion
        return n
    threadpool_limits(limits=n, user_api="blas")
    return n


def threads_given() -> int | None:
    """The ``--threads`` of the enclosing :func:`compute` block, None where it chose the default.

    Code that splits the cores itself (torchrun ranks on one machine) follows an explicit choice.
    """
    return THREADS_GIVEN.get()


def threads_per_process(processes: int, cores: int | None = None) -> int:
    """Torch threads for each of ``processes`` working side by side: an equal share of the cores, at least one.

    The one place that splits the cores between processes (``cv --jobs N``, torchrun ranks on
    one machine), so a global thread policy can take over here.
    """
    return max(1, (cores or available_cores()) // max(1, processes))


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def trim_heap() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``; elsewhere nothing).

    Why: glibc keeps the blocks freed by a pass over windows of many widths (validation), so a
    streamed training's anonymous memory would depend on the order of its allocations rather
    than on what it holds (BENCHMARKS.md, section 8).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def compute(
    threads: int | None = None, precision: str = "auto", *, allow_emulated: bool | None = None
) -> Iterator[tuple[int, str]]:
    """Within the block: ``threads`` (default :func:`default_threads`) and ``precision``; yields both
    (the precision resolved: ``auto`` becomes fp32 or bf16, :func:`resolve_precision`).

    Both are restored afterwards. bf16 on a CPU without native support is an error unless
    ``allow_emulated`` (default: the ``VAFUSION_ALLOW_EMULATED_BF16`` environment variable).
    """
    check_precision(precision, allow_emulated)
    resolved = resolve_precision(precision)
    before = torch.get_num_threads()
    n = set_threads(threads)
    tokens = PRECISION.set(resolved), PRECISION_ASKED.set(precision), THREADS_GIVEN.set(threads)
    try:
        yield n, resolved
    finally:
        THREADS_GIVEN.reset(tokens[2])
        PRECISION_ASKED.reset(tokens[1])
        PRECISION.reset(tokens[0])
        set_threads(before)


__all__ = [
    "EMULATED_BF16_ENV",
    "PRECISIONS",
    "autocast",
    "available_cores",
    "busy_cpus",
    "check_precision",
    "compute",
    "cpu_bf16_native",
    "default_threads",
    "device_precision",
    "physical_cores",
    "precision",
    "precision_asked",
    "precision_in_force",
    "resolve_device",
    "resolve_precision",
    "set_threads",
    "threads_given",
    "threads_per_process",
    "trim_heap",
]
