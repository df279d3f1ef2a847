"""From trained runs to predictions and prediction files (the module predict.py, moved here whole)."""

from vafusion.fusion.predict.ensemble import *  # noqa: F403
