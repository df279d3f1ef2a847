"""Choosing the compute device, shared by both stages (neither may import the other)."""

from __future__ import annotations

import contextlib
import os

import torch

from vafusion.errors import VafusionError


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; an unusable explicit choice is a one-line error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise VafusionError(f"--device {device!r}: use auto, cpu, cuda or cuda:K") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VafusionError(f"--device {device}: CUDA is not available here; use --device cpu")
    return dev


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that have it, fp16 on older ones; exact fp32 on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_process(processes: int, cores: int | None = None) -> int:
    """Torch threads for each of ``processes`` working side by side: an equal share of the cores, at least one.

    The one place that splits the cores between processes (``cv --jobs N``, torchrun ranks on
    one machine), so a global thread policy can take over here.
    """
    return max(1, (cores or available_cores()) // max(1, processes))
