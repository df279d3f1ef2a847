"""A feature cache in RAM or streamed, standardised, cut into windows (the module data.py, moved here whole)."""

from vafusion.fusion.data.loading import *  # noqa: F403
from vafusion.fusion.data.loading import __all__  # noqa: F401
