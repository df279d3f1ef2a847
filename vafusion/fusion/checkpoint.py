"""Moved to :mod:`vafusion.fusion.runs.checkpoint`; this old path is an alias of it through 0.2, removed in 0.3."""

from vafusion.fusion._moved import alias

alias(__name__, "vafusion.fusion.runs.checkpoint")
