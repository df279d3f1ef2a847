"""What a run directory holds, and what training into it again does: the one set of rules for
``train``, ``train --resume``, ``cv`` and ``compare``.

Why one place: a kill can stop a training at any instant, and the rerun must finish the job,
never refuse it and never mix two experiments. A training writes, each file atomically and in
this order: ``config.json`` first; per epoch a ``metrics.jsonl`` row, ``best.pt`` (when P
improved) and ``last.pt``; after the last epoch what its caller adds (``report.html``: the
trainer's ``on_trained``); ``summary.json`` last. So the
files present say how far it got:

- nothing (or only ``config.json``): nothing to keep, start;
- ``summary.json``: finished;
- ``last.pt``: resumable exactly from its epoch (which may be the last: then only the report
  and the summary are left to write);
- ``best.pt`` without ``last.pt`` (killed while writing the first ``last.pt``, or a model fitted
  in closed form killed before its summary): cannot resume, starts again.

``train`` without ``--resume`` refuses a directory that holds checkpoints (it names the flag);
``train --resume``, ``cv`` and ``compare`` finish whatever is there, if it is the same experiment.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from vafusion.errors import VafusionError
from vafusion.fusion.runs.checkpoint import BEST, LAST, METRICS, SUMMARY
from vafusion.fusion.runs.config import CONFIG_FILE, FusionConfig

METRIC_KEYS = ("ccc_v", "ccc_a", "p")


class RunState(Enum):
    NEW = "new"  # start (again): nothing finished is there
    RESUMABLE = "resumable"  # last.pt of the same experiment
    FINISHED = "finished"  # summary.json of the same experiment


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` of a finished run (with a best epoch's ccc_v, ccc_a, p), else None."""
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    best = summary.get("best") if isinstance(summary, dict) else None
    ok = isinstance(best, dict) and all(k in best for k in METRIC_KEYS) and (run_dir / BEST).is_file()
    return summary if ok else None


def run_state(run_dir: Path, config: FusionConfig, resume: bool) -> RunState:
    """What training ``config`` into ``run_dir`` does; a VafusionError where it must not write there."""
    checkpoints = [n for n in (BEST, LAST) if (run_dir / n).is_file()]
    if not (run_dir / CONFIG_FILE).is_file():
        if checkpoints:
            raise VafusionError(
                f"{run_dir}: holds checkpoints but no {CONFIG_FILE}, so it cannot be continued; "
                f"delete it to train it again, or use another directory"
            )
        return RunState.NEW
    if not resume:
        if not checkpoints:
            return RunState.NEW  # stopped before its first checkpoint: nothing finished to keep
        what = (
            "a finished run (summary.json); use another --run directory"
            if read_summary(run_dir)
            else "a run that did not finish; add --resume to finish it, or use another --run directory"
        )
        raise VafusionError(f"{run_dir}: already holds {what}")
    changed = FusionConfig.load(run_dir).differences(config)
    if changed:
        raise VafusionError(
            f"{run_dir}: holds a run with other settings ({', '.join(changed)}); rerun with the "
            f"same options to continue it, or use another directory (or delete this one)"
        )
    if read_summary(run_dir) is not None:
        return RunState.FINISHED
    return RunState.RESUMABLE if LAST in checkpoints else RunState.NEW


def clear_partial(run_dir: Path) -> None:
    """Remove what an attempt that cannot be resumed left (before starting again)."""
    for name in (BEST, LAST, METRICS, SUMMARY):
        (run_dir / name).unlink(missing_ok=True)


__all__ = ["METRIC_KEYS", "RunState", "clear_partial", "read_summary", "run_state"]
