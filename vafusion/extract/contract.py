"""The public extractor contract, and the checks vafusion applies to every extractor.

Two kinds (documented in the README, "Writing your own extractor"):

* a **frame extractor** maps face crops to vectors: ``__call__(crops)`` with crops a
  ``(B, 3, S, S)`` uint8 RGB tensor on the device (``S = image_size``) returns ``(B, dim)``;
* a **track extractor** maps a video's audio track to one row per video frame:
  ``__call__(wave, frame_times)`` with wave a ``(n,)`` float32 tensor on the device (mono,
  in [-1, 1], at ``sample_rate``) and frame_times the ``(T,)`` float64 numpy instants
  (k - 1) / fps returns ``(T, dim)``.

vafusion does the decoding, batching, alignment, masking, writing and resuming; it calls
extractors under ``torch.inference_mode()`` and never shows them an absent crop or a
track without audio. Built-ins may have extra optional hooks (see :mod:`.track_pass`);
a user's extractor needs nothing beyond the protocols below.

Why the checks live here: a plug-in is code vafusion did not write. Anything it declares
or returns that would corrupt a cache (wrong shape, dtype, row count, NaN, a dim other
than declared) becomes one :class:`ExtractorError` line naming the plug-in, and the run
stops that feature only.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from vafusion.bounds import FEATURE_DIM, IMAGE_SIZE, SAMPLE_RATE
from vafusion.cache.schema import FEATURE_NAME, RESERVED_NAMES  # the feature names' rule (a file name in the cache)
from vafusion.errors import VafusionError
from vafusion.plugins import FOREIGN, failure

_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def file_safe(prefix: str, text: str) -> str:
    """A feature name from ``prefix`` and free text (a model name, a repository id): every run of
    characters a feature name may not hold becomes one ``-`` (``hf``, ``openai/whisper-base`` ->
    ``hf-openai-whisper-base``)."""
    return f"{prefix}-" + _UNSAFE.sub("-", text).strip("-.")


FLOAT16_MAX = float(np.finfo(np.float16).max)
"""Largest value a cache (float16) can hold; larger outputs would be stored as inf."""


@runtime_checkable
class FrameExtractor(Protocol):
    """One vector per face crop."""

    kind: Literal["frame"]
    name: str
    dim: int
    image_size: int

    def provenance(self) -> dict: ...

    def to(self, device: torch.device) -> FrameExtractor: ...

    def __call__(self, crops: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class TrackExtractor(Protocol):
    """One row per video frame from the audio track."""

    kind: Literal["track"]
    name: str
    dim: int
    sample_rate: int

    def provenance(self) -> dict: ...

    def to(self, device: torch.device) -> TrackExtractor: ...

    def __call__(self, wave: torch.Tensor, frame_times: np.ndarray) -> torch.Tensor: ...


Extractor = FrameExtractor | TrackExtractor

KIND_ATTRIBUTES = {"frame": "image_size", "track": "sample_rate"}


class ExtractorError(VafusionError):
    """An extractor broke the contract (or raised): the feature stops, the run goes on."""


DECLARED_RANGES = {"dim": FEATURE_DIM, "image_size": IMAGE_SIZE, "sample_rate": SAMPLE_RATE}
"""The numbers an extractor declares, checked before anything is sized by them (a crop batch, a
whole track at ``sample_rate``, a video's rows): one absurd number must not exhaust the memory."""


def _declared_number(ext: object, attr: str, source: str) -> None:
    value = getattr(ext, attr, None)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or int(value) <= 0:
        raise ExtractorError(f"extractor {source}: {attr} must be a positive int, got {value!r}")
    problem = DECLARED_RANGES[attr].problem(int(value))
    if problem:
        raise ExtractorError(f"extractor {source}: {attr} {problem}; declare a value in that range")


def check_declaration(ext: Any, source: str) -> Extractor:
    """Check what ``ext`` declares (kind, name, dim, size/rate, methods, JSON provenance).

    ``source`` names the plug-in in every message (e.g. ``pkg.mod:MyExtractor``).
    """
    kind = getattr(ext, "kind", None)
    if kind not in KIND_ATTRIBUTES:
        raise ExtractorError(f"extractor {source}: kind must be 'frame' or 'track', got {kind!r}")
    name = getattr(ext, "name", None)
    if not isinstance(name, str) or not FEATURE_NAME.match(name) or name in RESERVED_NAMES:
        raise ExtractorError(
            f"extractor {source}: name {name!r} is not a usable feature (file) name; use letters, digits, _ . + -"
        )
    for attr in ("dim", KIND_ATTRIBUTES[kind]):
        _declared_number(ext, attr, source)
    for method in ("provenance", "to", "__call__"):
        if not callable(getattr(ext, method, None)):
            raise ExtractorError(
                f"extractor {source}: has no {method}() method (see README, Writing your own extractor)"
            )
    checked_provenance(ext, source)
    return ext  # foreign code (Any), now checked: an Extractor


def checked_provenance(ext: Any, source: str) -> dict:
    """``ext.provenance()``, checked: a plain-JSON dict, the same on every call.

    Why twice: the provenance is hashed into the file's fingerprint; one that holds a time, a
    random number or an object id differs on the next run, and the rerun would refuse the
    finished work as "made by another extractor".
    """
    first, again = (guarded_call(ext.provenance, source, name_of(ext)) for _ in range(2))
    if not isinstance(first, dict):
        raise ExtractorError(f"extractor {source}: provenance() must return a dict, got {type(first).__name__}")
    try:
        json.dumps(first, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ExtractorError(f"extractor {source}: provenance() is not plain JSON ({e})") from e
    if again != first:
        other = again if isinstance(again, dict) else {}
        keys = sorted(str(k) for k in {*first, *other} if first.get(k) != other.get(k))
        raise ExtractorError(
            f"extractor {source}: provenance() changes between calls ({', '.join(map(repr, keys[:3])) or 'its type'}); "
            "return the same dict every time (no times, random numbers or object ids): it fingerprints the file"
        )
    return first


def name_of(ext: Any) -> str:
    """The feature name an extractor declares, for messages (``?`` before the declaration is checked)."""
    name = getattr(ext, "name", None)
    return name if isinstance(name, str) else "?"


def to_device(ext: Extractor, device: torch.device, source: str) -> Extractor:
    """``ext.to(device)``, checked: the contract says it returns the extractor."""
    moved = guarded_call(ext.to, source, ext.name, device)
    if moved is None:
        raise ExtractorError(f"extractor {source}: to(device) returned None; return the extractor (e.g. `return self`)")
    return check_declaration(moved, source)


def check_rows(ext: Any, out: object, n_rows: int, what: str, source: str) -> np.ndarray:
    """Check one output of ``ext`` (``n_rows`` expected) and return it as float32 numpy.

    ``what`` says what the rows were for (``"64 crops"``, ``"video X (250 frames)"``).
    """
    if isinstance(out, torch.Tensor):
        if out.is_meta or out.layout != torch.strided:
            where = "on the meta device" if out.is_meta else f"with layout {out.layout}"
            raise ExtractorError(
                f"extractor {source} ({ext.name}): returned a tensor {where} for {what}; "
                "return a dense tensor holding values (e.g. .to_dense(), or compute on the device it was given)"
            )
        if not out.is_floating_point():
            raise ExtractorError(
                f"extractor {source} ({ext.name}): returned dtype {out.dtype} for {what}; "
                "return a floating-point tensor"
            )
        arr = guarded_call(lambda: out.detach().float().cpu().numpy(), source, ext.name)
    elif isinstance(out, np.ndarray):
        if out.dtype.kind != "f":
            raise ExtractorError(
                f"extractor {source} ({ext.name}): returned dtype {out.dtype} for {what}; "
                "return a floating-point tensor"
            )
        arr = out
    else:
        raise ExtractorError(
            f"extractor {source} ({ext.name}): returned {type(out).__name__} for {what}; return a torch.Tensor"
        )
    arr = np.array(arr, dtype=np.float32)  # our own copy: the extractor may reuse (and change) its buffer
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise ExtractorError(
            f"extractor {source} ({ext.name}): returned shape {tuple(arr.shape)} for {what}; "
            f"expected ({n_rows}, {ext.dim})"
        )
    if arr.shape[1] != ext.dim:
        raise ExtractorError(
            f"extractor {source} ({ext.name}): returned {arr.shape[1]} columns for {what} but declares dim = {ext.dim}"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ExtractorError(f"extractor {source} ({ext.name}): returned NaN or inf in {bad} row(s) for {what}")
    if arr.size and float(np.abs(arr).max()) > FLOAT16_MAX:
        raise ExtractorError(
            f"extractor {source} ({ext.name}): returned values beyond +-{FLOAT16_MAX:g} for {what}; "
            "the cache stores float16: scale the output"
        )
    return arr


def guarded_call(fn: Any, source: str, name: str, *args: Any) -> Any:
    """Call into an extractor; anything it raises (or a ``sys.exit()``) becomes one :class:`ExtractorError` line."""
    try:
        return fn(*args)
    except ExtractorError:
        raise
    except FOREIGN as e:  # foreign code: any failure stops this feature only
        raise ExtractorError(f"extractor {source} ({name}) {failure(e)}") from e
