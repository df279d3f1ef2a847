"""The Optuna side of ``vafusion tune``: storage, sampler, pruner, and the bookkeeping that lets many
processes share one study and survive kills.

Why this module: everything here is about several processes (one machine or many) meeting in
one storage, and about what a killed one leaves behind; :mod:`.tune` only runs trials.

- **Storage.** By default Optuna's journal file in the study folder (``DIR/study.journal``: many
  processes on one machine or on a shared filesystem); ``--storage URL`` any Optuna RDB URL
  (sqlite, postgresql, mysql) for processes on several machines. The study is named after
  the folder (``DIR``'s last component), so a second machine joins it with a folder of the
  same name.
- **Sampler.** TPE, seeded per trial from ``(seed, trial number)``: a single process is
  reproducible, and processes started at the same instant still draw different trials.
- **Who runs a trial.** Each tune process holds a lock file ``DIR/owners/<token>.lock`` (an
  ``flock``, dropped by the kernel when the process dies however it dies) and writes its
  token into the user attributes of the trials it runs. A running trial whose owner's lock
  can be taken was killed: it is marked failed. With an RDB storage a heartbeat covers the
  processes of other machines (their trials fail once they miss it for ``GRACE_S`` seconds).
- **Retry.** A trial that failed because it was interrupted (killed, Ctrl-C, paused by
  ``--timeout``) is enqueued once more with the same parameters (user attribute ``retry_of``),
  and the retry continues the interrupted run from its last.pt (:mod:`.tune`); a trial that
  failed with an error (its own ``error`` attribute) is not retried, nor is a retry, unless it
  was paused by ``--timeout`` (each pause is continued once).
- **How many.** ``--trials N`` counts finished trials (complete or pruned). A new trial is asked
  for only while finished + running trials are fewer than N, under ``DIR/tune.lock``, so the
  processes sharing a folder never start more than N; one that finds it would be the
  N+1-th all the same (processes of other machines) gives its trial up (``surplus``).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vafusion.errors import VafusionError
from vafusion.fs import make_dir

if TYPE_CHECKING:
    import optuna

JOURNAL = "study.journal"
LOCK = "tune.lock"
OWNERS = "owners"
PRUNERS = ("median", "hyperband", "none")
HEARTBEAT_S = 30
GRACE_S = 120
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")


def optuna_module() -> Any:
    """Optuna, imported on use (with its logging quiet: vafusion prints one line per trial itself)."""
    try:
        import optuna
    except ImportError as e:
        raise VafusionError(f"vafusion tune needs Optuna ({e}); pip install 'optuna>=4.0,<6'") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def param_importances(study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA importances of the parameters over the complete trials (sum 1); {} when Optuna cannot tell
    the parameters apart (too few trials: it would give them all the same share).

    Why PED-ANOVA, named: it is Optuna's default since 5.0 and needs no scikit-learn (Optuna 4's
    default, fANOVA, fits a random forest). Why the import below: ``optuna.importance`` imports its
    fANOVA and MDI evaluators, and they import scikit-learn (2-3 s, most of what a short tune
    command spent outside its trainings) although neither is used; scikit-learn is hidden while it
    is imported (their optional import fails as if it were absent) and the package is dropped from
    ``sys.modules`` afterwards, so a later ``import optuna.importance`` in this process is whole.
    """
    optuna = optuna_module()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.params for t in complete):
        return {}
    with _importance_module() as importance, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            found = importance.get_param_importances(study, evaluator=importance.PedAnovaImportanceEvaluator())
        except (RuntimeError, ValueError):  # e.g. every complete trial has the same parameters
            return {}
    if any("will be equal" in str(w.message) for w in warned):
        return {}
    return {k: float(v) for k, v in found.items()}


@contextmanager
def _importance_module() -> Iterator[Any]:
    """``optuna.importance`` imported without scikit-learn unless either is imported already (see
    :func:`param_importances`); dropped again on leaving if it was imported here."""
    if "optuna.importance" in sys.modules or "sklearn" in sys.modules:
        import optuna.importance

        yield optuna.importance
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # "import sklearn" raises ImportError
    try:
        import optuna.importance
    finally:
        del sys.modules["sklearn"]
    try:
        yield optuna.importance
    finally:
        for name in [n for n in sys.modules if n == "optuna.importance" or n.startswith("optuna.importance.")]:
            del sys.modules[name]
        vars(sys.modules["optuna"]).pop("importance", None)


def shown_storage(study_dir: Path, url: str | None) -> str:
    """Where the study lives, for logs and tune.json (an RDB URL without its password)."""
    if url is None:
        return str(study_dir / JOURNAL)
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is refused by open_storage, shown as given
        return url


def open_storage(study_dir: Path, url: str | None) -> Any:
    """The study's storage: the journal file in ``study_dir``, or the RDB at ``url`` (with a heartbeat)."""
    optuna = optuna_module()
    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in SQL_SCHEMES or "://" not in url:
        raise VafusionError(
            f"--storage {shown_storage(study_dir, url)}: give an Optuna RDB URL (sqlite:///study.db, "
            f"postgresql://user@host/db, mysql://user@host/db), or leave it out for a journal file in --study"
        )
    try:
        return _rdb_storage(optuna, url, scheme)
    except ImportError as e:
        raise VafusionError(
            f"--storage {shown_storage(study_dir, url)}: its database driver is not installed ({e}); "
            f"e.g. pip install psycopg2-binary (postgresql) or pymysql (mysql+pymysql://)"
        ) from e
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VafusionError(f"--storage {shown_storage(study_dir, url)}: cannot open it ({first})") from e


def _rdb_storage(optuna: Any, url: str, scheme: str, attempts: int = 5) -> Any:
    """Optuna's RDBStorage with a heartbeat. Processes of several machines that open a new database at
    once race to create its tables (the loser sees an IntegrityError): the loser tries again."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    engine = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else {}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9; its own loop uses it
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def make_pruner(name: str, epochs: int) -> Any:
    """``median`` (after max(1, epochs // 5) warm-up epochs and 3 finished trials), ``hyperband``, ``none``."""
    optuna = optuna_module()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=max(1, epochs // 5) + 1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise VafusionError(f"--pruner {name}: use one of {', '.join(PRUNERS)}")


def trial_sampler(seed: int, number: int) -> Any:
    """TPE whose random draws depend only on ``(seed, number)`` (constant liar: running trials count)."""
    optuna = optuna_module()
    mixed = (seed * 1_000_003 + number) % (2**32)
    return optuna.samplers.TPESampler(seed=mixed, constant_liar=True)


@contextmanager
def folder_lock(study_dir: Path) -> Iterator[None]:
    """``DIR/tune.lock`` held (blocking) for a short bookkeeping step shared by the processes of one folder."""
    fd = os.open(study_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


@dataclass
class Owner:
    """This process, as the trials it runs name it: a token and the lock file that says it is alive."""

    token: str
    path: Path
    fd: int

    @classmethod
    @contextmanager
    def hold(cls, study_dir: Path) -> Iterator[Owner]:
        """Take the lock for this process's life. The file stays when the process ends (its lock does not):
        a trial it left running is still known as its; :func:`fail_dead_trials` removes the file later."""
        folder = make_dir(study_dir / OWNERS, "tune owners folder")
        token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path = folder / f"{token}.lock"
        with folder_lock(study_dir):  # never swept between its creation and its lock
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield cls(token, path, fd)
        finally:
            os.close(fd)


def owner_is_dead(study_dir: Path, token: str) -> bool:
    """The process of ``token`` held its lock file in this folder and holds it no more (it ended)."""
    path = study_dir / OWNERS / f"{token}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False  # not of this folder: another machine's (its heartbeat tells)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _sweep_owners(study_dir: Path, keep: set[str]) -> None:
    """Remove the lock files of processes that ended and own no running trial (under :func:`folder_lock`)."""
    for path in (study_dir / OWNERS).glob("*.lock"):
        if path.stem not in keep and owner_is_dead(study_dir, path.stem):
            path.unlink(missing_ok=True)


def fail_dead_trials(study: optuna.Study, study_dir: Path, me: str) -> list[int]:
    """Mark failed every running trial whose process was killed; their numbers (call under :func:`folder_lock`)."""
    optuna = optuna_module()
    running = optuna.trial.TrialState.RUNNING
    dead: list[int] = []
    alive: set[str] = set()
    for t in study.get_trials(deepcopy=False, states=(running,)):
        token = str(t.user_attrs.get("owner", ""))
        if token and token != me and owner_is_dead(study_dir, token):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            dead.append(t.number)
        elif token:
            alive.add(token)
    _sweep_owners(study_dir, alive | {me})
    if getattr(study._storage, "get_heartbeat_interval", lambda: None)():  # an RDB storage (see heartbeat())
        with warnings.catch_warnings():  # Optuna calls it experimental since 2.9; it is what its own loop uses
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # RDB: trials of processes that missed their heartbeat
    return dead


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue once more each trial that failed by interruption (not by an error); the retried numbers."""
    optuna = optuna_module()
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    again = []
    for t in trials:
        attrs = t.user_attrs
        interrupted = t.state == optuna.trial.TrialState.FAIL and not attrs.get("error") and not attrs.get("surplus")
        once = "retry_of" not in attrs or attrs.get("timeout")  # a retry paused by --timeout goes on again
        if interrupted and once and t.number not in retried:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
            again.append(t.number)
    return again


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state: complete, pruned, fail, running, waiting (``finished`` = complete + pruned)."""
    out = {"complete": 0, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        key = t.state.name.lower()
        out[key] = out.get(key, 0) + 1
    out["finished"] = out["complete"] + out["pruned"]
    return out


def is_surplus(study: optuna.Study, number: int, goal: int) -> bool:
    """``goal`` trials numbered before ``number`` are finished, running or waiting: this one is not needed."""
    optuna = optuna_module()
    states = optuna.trial.TrialState
    live = (states.COMPLETE, states.PRUNED, states.RUNNING, states.WAITING)
    return sum(1 for t in study.get_trials(deepcopy=False, states=live) if t.number < number) >= goal


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """While a trial runs, record its heartbeat (RDB storages; the journal needs none: see the module doc)."""
    storage: Any = study._storage  # Optuna has no public handle on a study's storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial._trial_id)  # the id Optuna's own heartbeat thread uses
            stop.wait(interval)

    thread = threading.Thread(target=beat, name="vafusion-tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


__all__ = [
    "JOURNAL",
    "PRUNERS",
    "Owner",
    "counts",
    "fail_dead_trials",
    "folder_lock",
    "heartbeat",
    "is_surplus",
    "make_pruner",
    "open_storage",
    "optuna_module",
    "param_importances",
    "retry_interrupted",
    "shown_storage",
    "trial_sampler",
]
