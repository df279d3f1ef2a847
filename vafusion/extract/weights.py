"""Loading local weight files for any backbone: one safe reader, one strict checker.

torchvision, VGGish and speech-model checkpoints come from third parties in assorted
wrappers; every rule about them (no pickle execution, ``state_dict``/``model`` nesting,
``module.`` prefixes, shape checks, one-line errors that name the file) lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vafusion.errors import VafusionError

_SHOWN_KEYS = 3  # how many offending keys an error message names


def torch_load_plain(path: Path) -> object:
    """``torch.load(weights_only=True)``; numpy arrays allowed (older ports pickled them).

    The allow-list adds only numpy's array-rebuilding helpers, so a file still cannot run
    code on load.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - torch raises many types here
        try:
            from numpy._core.multiarray import _reconstruct  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # numpy 1.x: its old home
        allowed: list = [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype]
        allowed += [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64)]
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - the allow-list did not help: the first failure says why
            raise first from None


def _unwrap(obj: Any) -> Mapping[str, Any] | None:
    """Find the state_dict in common wrappers (``state_dict``/``model`` keys, nested)."""
    for _ in range(4):  # e.g. {"model": {"state_dict": {...}}} from some trainers
        if not isinstance(obj, Mapping):
            return None
        inner = next((obj[k] for k in ("state_dict", "model") if isinstance(obj.get(k), Mapping)), None)
        if inner is not None:
            obj = inner
            continue
        return obj if any(isinstance(v, torch.Tensor) for v in obj.values()) else None
    return None


def _safetensors(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file (no code in it by design); safetensors comes with timm and transformers."""
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise VafusionError(
            f"{path}: reading .safetensors needs the safetensors package (pip install safetensors)"
        ) from e
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError, OSError ...
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise VafusionError(f"{path}: not a readable safetensors file ({reason}); {fix}") from e


def read_state_dict(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (``torch.save``'d, or ``.safetensors``), unwrapped,
    ``module.`` prefixes stripped.

    ``fix`` ends every error message: what the user should pass instead.
    """
    if not path.is_file():
        raise VafusionError(f"{path}: no such weights file; {fix}")
    if path.suffix == ".safetensors":
        return _strip_module(_safetensors(path, fix))
    try:
        obj = torch_load_plain(path)
    except Exception as e:  # UnpicklingError, RuntimeError (not a zip), EOFError ...
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise VafusionError(
            f"{path}: not a PyTorch checkpoint readable with weights_only=True ({reason}); {fix}"
        ) from e
    state = _unwrap(obj)
    if state is None:
        raise VafusionError(f"{path}: holds no tensors (nor a 'state_dict'/'model' entry with tensors); {fix}")
    return _strip_module(state)


def _strip_module(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of ``state``, the ``module.`` prefix of DataParallel checkpoints removed."""
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            key = str(key)
            cleaned[key[len("module.") :] if key.startswith("module.") else key] = value
    return cleaned


def assign_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: object, what: str, fix: str) -> None:
    """Check ``state`` against the (meta-device) model's keys and shapes, then assign it.

    Every mismatch is a one-line VafusionError naming ``source``, a few offending keys (or the
    first mismatching shape) and ``fix``. BatchNorm's ``num_batches_tracked`` may be absent
    (old checkpoints; unused in eval mode). Half-precision weights become float32.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:_SHOWN_KEYS])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:_SHOWN_KEYS])})")
        raise VafusionError(f"{source}: not {what} weights: {'; '.join(parts)}; {fix}")
    full: dict[str, torch.Tensor] = {}
    for key, target in expected.items():
        value = state.get(key)
        if value is None:  # a missing num_batches_tracked
            full[key] = torch.zeros((), dtype=target.dtype)
            continue
        if tuple(value.shape) != tuple(target.shape):
            raise VafusionError(
                f"{source}: not {what} weights: {key} has shape {tuple(value.shape)}, "
                f"{what} needs {tuple(target.shape)}; {fix}"
            )
        full[key] = value.detach().to(device="cpu", dtype=target.dtype).contiguous()
    try:
        model.load_state_dict(full, strict=True, assign=True)
    except RuntimeError as e:  # not expected after the checks above; keep it one line
        raise VafusionError(f"{source}: cannot load into {what} ({str(e).splitlines()[0]}); {fix}") from e
