"""Moved to :mod:`vafusion.fusion.experiments.compare` (the comparison) and :mod:`vafusion.fusion.reports.compare`
(its page and table); this old path re-exports both through 0.2, removed in 0.3."""

from vafusion.fusion._moved import warn_moved

warn_moved(__name__, "vafusion.fusion.experiments.compare and vafusion.fusion.reports.compare")

from vafusion.fusion.experiments.compare import COMPARE_JSON, compare, compare_jobs, summarise  # noqa: E402
from vafusion.fusion.reports.compare import COMPARE_HTML, format_table, write_compare_page  # noqa: E402

__all__ = ["COMPARE_HTML", "COMPARE_JSON", "compare", "compare_jobs", "format_table", "summarise", "write_compare_page"]
