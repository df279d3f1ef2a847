"""How a command runs, as opposed to what it computes: its precision, its ``--threads`` and how it loads caches.

Why one module and context variables: these settings change the speed of a run, never its
experiment, and they reach code deep inside (every forward pass asks for its precision, every
cache load for streamed or in RAM). Held in :class:`contextvars.ContextVar` objects they are
scoped to a ``with`` block (:func:`vafusion.device.compute`,
:func:`vafusion.fusion.data.sources.loading`) and to the thread or task that set them, never to
the whole process; and :class:`RuntimeOptions` takes all of them at once, so a worker process
(``cv``/``compare --jobs``) receives the command's settings whole and enters them with
:meth:`RuntimeOptions.applied`: a setting added here reaches the workers with nothing else to
change. This module imports nothing of vafusion: both stages use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

PRECISION: ContextVar[str] = ContextVar("vafusion.precision", default="fp32")
"""The precision of CPU forward passes (``fp32`` or ``bf16``): :func:`vafusion.device.compute` sets it."""
PRECISION_ASKED: ContextVar[str] = ContextVar("vafusion.precision_asked", default="fp32")
"""What ``--precision`` asked for (``auto``, ``fp32`` or ``bf16``) before :func:`vafusion.device.resolve_precision`:
a resumed run under ``auto`` keeps the precision it recorded."""
THREADS_GIVEN: ContextVar[int | None] = ContextVar("vafusion.threads_given", default=None)
"""The ``--threads`` of the enclosing :func:`vafusion.device.compute` block, None where it chose the default."""
STREAM: ContextVar[bool | None] = ContextVar("vafusion.stream", default=None)
"""How caches load: streamed (True), in RAM (False), by available memory (None): ``loading()`` sets it."""


@dataclass(frozen=True)
class RuntimeOptions:
    """Every runtime setting at once: what a worker process needs to run as its parent runs (picklable)."""

    precision: str = "fp32"
    precision_asked: str = "fp32"
    threads_given: int | None = None
    stream: bool | None = None

    @classmethod
    def current(cls) -> RuntimeOptions:
        """The settings in force here."""
        return cls(**{name: var.get() for name, var in _VARIABLES.items()})

    @contextlib.contextmanager
    def applied(self) -> Iterator[RuntimeOptions]:
        """Within the block, these settings (restored afterwards)."""
        tokens = [(var, var.set(getattr(self, name))) for name, var in _VARIABLES.items()]
        try:
            yield self
        finally:
            for var, token in reversed(tokens):
                var.reset(token)


_VARIABLES: dict[str, ContextVar[Any]] = {
    "precision": PRECISION,
    "precision_asked": PRECISION_ASKED,
    "threads_given": THREADS_GIVEN,
    "stream": STREAM,
}
"""One variable per field of :class:`RuntimeOptions` (a test holds them equal)."""

__all__ = ["PRECISION", "PRECISION_ASKED", "STREAM", "THREADS_GIVEN", "RuntimeOptions"]
