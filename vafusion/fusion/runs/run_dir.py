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
``train --resume``, ``cv`` and ``compare`` finish whatever is there, if it is the same experiment:
every setting its ``config.json`` records must agree. Settings it predates (a run of an earlier
version has no ``windows``, say; :attr:`~vafusion.fusion.config.FusionConfig.implied`) are the
run's own and continue as it used them.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from enum import Enum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from vafusion.cache.lock import WriteLock
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, write_error
from vafusion.fusion.runs.checkpoint import BEST, LAST, METRICS, SUMMARY
from vafusion.fusion.runs.config import CONFIG_FILE, FusionConfig
from vafusion.plugins import shown

METRIC_KEYS = ("ccc_v", "ccc_a", "p")
T = TypeVar("T")
P = ParamSpec("P")


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
    saved = FusionConfig.load(run_dir)
    changed = [k for k in saved.differences(config) if k not in saved.implied]
    if changed:
        ran, given = saved.flat(), config.flat()
        listed = ", ".join(f"{k} {shown(ran.get(k))} in the run, {shown(given.get(k))} now" for k in changed)
        hint = " (a run made before the fast recipe: add --recipe v1)" if "training.windows" in saved.implied else ""
        raise VafusionError(
            f"{run_dir}: holds a run with other settings ({listed}); rerun with the "
            f"same options to continue it{hint}, or use another directory (or delete this one)"
        )
    if read_summary(run_dir) is not None:
        return RunState.FINISHED
    return RunState.RESUMABLE if LAST in checkpoints else RunState.NEW


LOCK = ".lock"
"""The run directory's lock file: held (flock) by the one process training it."""


@contextmanager
def lock_run(run_dir: Path) -> Iterator[None]:
    """Make ``run_dir`` and hold its lock while this process trains it; a second process training the
    same directory at once (two identical ``compare`` or ``cv`` commands, ``train --resume``) fails with
    one line naming it, before it reads or writes anything there. A killed holder's lock is released by
    the kernel. A finished run in a folder that cannot be written (read-only media) is read back without
    a lock: nothing will be written there. A directory made here and left empty is removed again (a
    training refused at once leaves nothing behind)."""
    made = not run_dir.exists()
    make_dir(run_dir, "run directory")
    lock = WriteLock(
        run_dir,
        run_dir / LOCK,
        doing="trained",
        advice="wait for it to finish (a rerun then reads its result back), or use another directory",
    )
    try:
        lock.acquire()
    except OSError as e:
        if read_summary(run_dir) is None:
            raise write_error(run_dir / LOCK, e) from e
        yield
        return
    try:
        yield
    finally:
        lock.release()
        if made:
            with suppress(OSError):  # only if empty: nothing was written
                run_dir.rmdir()


def one_trainer_at_a_time(train: Callable[P, T]) -> Callable[P, T]:
    """``train(cache_dir, run_dir, ...)`` run while holding ``run_dir``'s lock (:func:`lock_run`).

    Why a decorator on the trainer: every command that trains (``train``, ``train --resume``, ``cv``,
    ``compare``, a tuner's trials) goes through that one function, and the lock must span all of it,
    from deciding what the directory holds to writing ``summary.json``.
    """
    signature = inspect.signature(train)

    @functools.wraps(train)
    def locked(*args: P.args, **kwargs: P.kwargs) -> T:
        run_dir = Path(signature.bind(*args, **kwargs).arguments["run_dir"])
        with lock_run(run_dir):
            return train(*args, **kwargs)

    return locked


def clear_partial(run_dir: Path) -> None:
    """Remove what an attempt that cannot be resumed left (before starting again)."""
    for name in (BEST, LAST, METRICS, SUMMARY):
        (run_dir / name).unlink(missing_ok=True)


__all__ = [
    "LOCK",
    "METRIC_KEYS",
    "RunState",
    "clear_partial",
    "lock_run",
    "one_trainer_at_a_time",
    "read_summary",
    "run_state",
]
