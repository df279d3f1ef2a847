"""Numbers written as text: the one rule for a plain decimal number in a file a user gives us.

Why not ``float()``: it also takes ``1_000``, ``0.0_1``, digits of other scripts (``١٫٥``),
surrounding spaces and ``infinity``, none of which a CSV writer produces; a file holding them
was made by hand or by mistake, and reading it silently hides the mistake. The rule is the
decimal numbers every CSV writer writes: an optional sign, ASCII digits with an optional
point, an optional exponent (``-0.25``, ``3``, ``.5``, ``1e-3``, ``2.5E+04``).
"""

from __future__ import annotations

import re

DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A plain decimal number (ASCII only), matched whole."""

SPECIAL = {"nan": float("nan"), "inf": float("inf"), "+inf": float("inf"), "-inf": float("-inf")}
"""What numpy and pandas write for a missing or infinite value (any case), where a file may hold them."""


def decimal(text: str, special: bool = False) -> float | None:
    """``text`` as a float if it is a plain decimal number (``special``: also nan/inf), else None."""
    if DECIMAL.fullmatch(text):
        return float(text)
    if special:
        return SPECIAL.get(text.lower())
    return None


__all__ = ["DECIMAL", "SPECIAL", "decimal"]
