"""The ``vafusion`` command line: parse options, call the library, print results.

Every user-fixable problem arrives here as a :class:`~vafusion.errors.VafusionError` and
leaves as one line on stderr with exit code 1: no tracebacks for bad input. One module per
group of commands registers them on :data:`cli` (main.py); the options several commands
share live in options.py (both stages) and fusion_options.py (stage 2).
"""

from vafusion.cli import (  # noqa: F401  (register the commands)
    analyze_cmd,
    cache_cmds,
    extract_cmd,
    faces_cmd,
    fusion_cmds,
    predict_cmds,
    tune_cmd,
)
from vafusion.cli.main import cli, main, reference_markdown

__all__ = ["cli", "main", "reference_markdown"]
