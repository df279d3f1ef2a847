"""The one exception type for problems a user can cause and fix, and how their causes are shown.

The CLI prints ``str(error)`` on one line and exits non-zero, so the message must
name the file (or option) at fault and say what to do about it. The exception that
led to it is chained (``raise VafusionError(...) from e``): a library caller or a
plug-in author finds it in ``__cause__``, and ``VAFUSION_TRACEBACK=1`` makes the CLI
(and a run that goes on past a failed feature) print the whole chain as well.
"""

from __future__ import annotations

import os
import sys
import traceback

TRACEBACK_ENV = "VAFUSION_TRACEBACK"


class VafusionError(Exception):
    """A user-fixable problem: bad path, malformed input, incompatible cache."""


def tracebacks_wanted() -> bool:
    """``VAFUSION_TRACEBACK`` is set to anything but empty or 0."""
    return os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def chain(error: BaseException) -> str:
    """The traceback of ``error`` and of every exception it was raised from, oldest first."""
    return "".join(traceback.format_exception(error))


def show_chain(error: BaseException) -> None:
    """Print ``error``'s chain to stderr when tracebacks are wanted (for errors a run records and goes on)."""
    if tracebacks_wanted():
        print(chain(error), file=sys.stderr, end="", flush=True)
