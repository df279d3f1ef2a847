"""Choosing the compute device, shared by both stages (neither may import the other)."""

from __future__ import annotations

import contextlib

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
