"""``vafusion tune``: hyperparameter search on Optuna, every trial a run directory.

A study folder ``DIR`` holds the study (journal file, unless ``--storage`` names an RDB), one
run directory per trial (``DIR/trials/NNNN``: config.json, metrics.jsonl, best.pt, summary.json,
so ``evaluate``, ``predict``, ``report`` and ``cv`` work on it) and the results: ``tune.json``
(best trial, every trial's state, P, epochs, seconds), ``best.json`` (the best trial's whole
configuration, which ``train --params`` and ``cv --params`` take) and ``tune.html``.

A trial samples its settings from the :class:`~vafusion.fusion.experiments.space.Space`, trains
through :func:`~vafusion.fusion.runs.train.train` (its ``on_epoch`` hook reports the validation P
after every epoch, and a pruned trial stops there, its run finished like an early stop), and
its value is the best epoch's P. Sharing, kills and retries: :mod:`.study`. ``--jobs J`` runs J
such loops in worker processes (:mod:`.parallel`), exactly as J ``vafusion tune`` commands on
the same folder would.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vafusion.atomic import atomic_path
from vafusion.cache.corpus_index import read_corpus_index
from vafusion.cache.reader import open_feature_file
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, read_text
from vafusion.fusion.data.folds import split_ids
from vafusion.fusion.data.loading import LoadedCache, load_cache
from vafusion.fusion.experiments import study as st
from vafusion.fusion.experiments.parallel import run_in_workers
from vafusion.fusion.experiments.space import Space
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.config import FusionConfig, replace
from vafusion.fusion.runs.run_dir import LOCK as RUN_LOCK
from vafusion.fusion.runs.train import PauseTraining, train

TRIALS = "trials"
TUNE_JSON = "tune.json"
BEST_JSON = "best.json"
BEST_FORMAT = "vafusion-tune-best"
FAILURES_IN_A_ROW = 3  # trials of one process failing with an error, one after the other, end it


@dataclass(frozen=True)
class Tuning:
    """Everything a tune process needs, as plain data (a worker of ``--jobs`` gets it as a dict)."""

    cache_dir: Path
    study_dir: Path
    base: FusionConfig  # the fixed settings; each trial replaces the searched ones
    space: Space
    trials: int
    pruner: str = "median"
    storage: str | None = None
    deadline: float | None = None  # time.time() after which no trial starts and a running one pauses
    report: bool = False  # report.html in each trial's run
    corpus: str = ""  # the cache's corpus fingerprint: every process of a study trains on the same data

    @property
    def name(self) -> str:
        return self.study_dir.resolve().name

    @property
    def seed(self) -> int:
        return self.base.training.seed

    def identity(self) -> dict[str, Any]:
        """What makes two commands the same study (checked when a process joins one)."""
        base = self.base.to_dict()
        base["training"].pop("device", None)
        return {"base": base, "space": self.space.to_dict(), "pruner": self.pruner, "corpus": self.corpus}

    def to_dict(self) -> dict[str, Any]:
        return {
            "cache_dir": str(self.cache_dir),
            "study_dir": str(self.study_dir),
            "base": self.base.to_dict(),
            "space": self.space.dump(),
            "trials": self.trials,
            "pruner": self.pruner,
            "storage": self.storage,
            "deadline": self.deadline,
            "report": self.report,
            "corpus": self.corpus,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tuning:
        return cls(
            Path(d["cache_dir"]),
            Path(d["study_dir"]),
            FusionConfig.from_dict(d["base"]),
            Space.load(d["space"]),
            int(d["trials"]),
            str(d["pruner"]),
            d["storage"],
            d["deadline"],
            bool(d["report"]),
            str(d["corpus"]),
        )


def trial_dir(study_dir: Path, number: int) -> Path:
    """``DIR/trials/0007``: four digits (more past 9999), so folders sort in trial order."""
    return study_dir / TRIALS / f"{number:04d}"


def open_study(tuning: Tuning, *, create: bool) -> Any:
    """The study in its storage (created if ``create``); a study made by another command is an error."""
    optuna = st.optuna_module()
    make_dir(tuning.study_dir, "--study folder")
    pruner = st.make_pruner(tuning.pruner, tuning.base.training.epochs)
    sampler = st.trial_sampler(tuning.seed, 0)
    where = st.shown_storage(tuning.study_dir, tuning.storage)
    with st.folder_lock(tuning.study_dir):  # one process at a time creates a new database's tables
        storage = st.open_storage(tuning.study_dir, tuning.storage)
        if create:
            study = optuna.create_study(
                storage=storage,
                study_name=tuning.name,
                direction="maximize",
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(study_name=tuning.name, storage=storage, sampler=sampler, pruner=pruner)
        _check_identity(study, tuning, where, create)
    return study


def _check_identity(study: Any, tuning: Tuning, where: str, create: bool) -> None:
    """The first process writes what the study is; a later one must describe the same study."""
    mine = json.loads(json.dumps(tuning.identity()))
    theirs = study.user_attrs.get("vafusion")
    if theirs is None and create:
        study.set_user_attr("vafusion", mine)
        return
    if theirs != mine:
        differ = sorted(_differences(theirs or {}, mine))
        raise VafusionError(
            f"--study {tuning.study_dir}: the study {tuning.name!r} in {where} was started with other settings "
            f"({', '.join(differ) or 'unknown'}); rerun with the same options and --space, or use a new --study folder"
        )


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


def _claim(study: Any, tuning: Tuning, owner: st.Owner, log: Callable[[str], None]) -> Any | None:
    """Under the folder lock: fail killed trials, enqueue their retries, then ask for a trial if one is needed."""
    if _past(tuning.deadline):
        return None
    with st.folder_lock(tuning.study_dir):
        dead = st.fail_dead_trials(study, tuning.study_dir, owner.token)
        for number in dead:
            log(f"trial {number}: its process was killed; marked failed")
        for number in st.retry_interrupted(study):
            log(f"trial {number}: interrupted; its configuration is tried once more (from its last.pt if it has one)")
        n = st.counts(study)
        if n["finished"] >= tuning.trials or n["finished"] + n["running"] >= tuning.trials:
            return None
        trial = study.ask()
        trial.set_user_attr("owner", owner.token)
    if st.is_surplus(study, trial.number, tuning.trials):  # processes of another folder (machine) got there first
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=st.optuna_module().trial.TrialState.FAIL)
        return None
    return trial


def tune_loop(tuning: Tuning, log: Callable[[str], None], progress: bool = False) -> int:
    """One process's share of the study: trials until it has ``tuning.trials`` finished ones; how many it ran."""
    study = open_study(tuning, create=False)
    ran, failed_in_a_row = 0, 0
    data = functools.cache(lambda: load_trial_data(tuning, progress))  # at the first trial; a failed read is retried
    with st.Owner.hold(tuning.study_dir) as owner:
        while (trial := _claim(study, tuning, owner, log)) is not None:
            study.sampler = st.trial_sampler(tuning.seed, trial.number)
            error = run_trial(study, trial, tuning, log, progress, data)
            ran += 1
            failed_in_a_row = failed_in_a_row + 1 if error else 0
            if failed_in_a_row >= FAILURES_IN_A_ROW:
                raise VafusionError(
                    f"{FAILURES_IN_A_ROW} trials in a row failed, the last with: {error}; fix the cause (or narrow "
                    f"the space with --space) and rerun the same command"
                )
    return ran


def load_trial_data(tuning: Tuning, progress: bool = False) -> LoadedCache:
    """The ids and features every trial trains on (audio gated by --audio-where-speech), read once per tune
    process (features, split and the gate are not searched)."""
    index = read_corpus_index(tuning.cache_dir)
    train_ids, val_ids = split_ids(index, tuning.base.data)
    data = tuning.base.data
    ids = train_ids + val_ids
    return load_cache(
        tuning.cache_dir, data.features, ids, index=index, progress=progress, audio_where_speech=data.audio_where_speech
    )


def run_trial(
    study: Any,
    trial: Any,
    tuning: Tuning,
    log: Callable[[str], None],
    progress: bool,
    data: Callable[[], LoadedCache],
) -> str:
    """Sample, train, tell; the error that failed the trial ("" if it completed, was pruned or was paused at
    the deadline).

    ``data()``: the process's one read of the cache (:func:`load_trial_data`), shared by its trials.
    """
    states = st.optuna_module().trial.TrialState
    run = trial_dir(tuning.study_dir, trial.number)
    trial.set_user_attr("run", str(run.resolve()))
    hook = _EpochHook(trial, run, tuning.deadline)
    started = time.perf_counter()
    try:
        values = {name: param.suggest(trial) for name, param in tuning.space.params.items()}
        config = tuning.space.config(tuning.base, values)
        resumed = _resume_from(trial, tuning, config, run)
        with st.heartbeat(study, trial):
            result = train(
                tuning.cache_dir,
                run,
                config,
                resume=resumed is not None,
                progress=progress,
                on_trained=_report_hook(tuning),
                on_epoch=hook,
                loaded=data(),
            )
        _mark_summary(run, tuning, trial.number, values, hook.pruned is not None)
    except PauseTraining:
        trial.set_user_attr("timeout", True)
        study.tell(trial, state=states.FAIL)
        log(f"trial {trial.number}: stopped by --timeout after epoch {hook.reported}; the same command resumes it")
        return ""
    except VafusionError as e:
        trial.set_user_attr("error", str(e))
        study.tell(trial, state=states.FAIL)
        log(f"trial {trial.number}: failed: {e}")
        return str(e)
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=states.FAIL)
        raise
    except BaseException as e:  # a bug: the trial is failed (not retried), and the error goes on
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
        study.tell(trial, state=states.FAIL)
        raise
    _tell(study, trial, result, hook.pruned, _shown(values), time.perf_counter() - started, log)
    return ""


def _tell(
    study: Any, trial: Any, result: Any, pruned: int | None, shown: str, seconds: float, log: Callable[[str], None]
) -> None:
    """The trained trial's end: its seconds (this session's) and epochs (the run's), then pruned or its P."""
    trial.set_user_attr("seconds", seconds)
    trial.set_user_attr("epochs", int(result.epochs_run))
    if pruned is not None:
        study.tell(trial, state=st.optuna_module().trial.TrialState.PRUNED)
        log(f"trial {trial.number}: pruned after epoch {pruned} (best P {result.best['p']:.4f}), {seconds:.1f} s")
    else:
        study.tell(trial, float(result.best["p"]))
        log(f"trial {trial.number}: P {result.best['p']:.4f} ({shown}), {seconds:.1f} s")


class _EpochHook:
    """A trial's ``on_epoch``: report each epoch's P to Optuna (a resumed run's earlier epochs first, so the
    pruner compares whole curves), stop a pruned trial (its run finished), pause at the deadline (its run
    left to resume: :class:`~vafusion.fusion.runs.train.PauseTraining`)."""

    def __init__(self, trial: Any, run: Path, deadline: float | None) -> None:
        self.trial, self.run, self.deadline = trial, run, deadline
        self.pruned: int | None = None  # the epoch after which the pruner stopped the trial
        self.reported = 0  # the last epoch reported

    def __call__(self, row: dict[str, Any]) -> bool:
        epoch = int(row["epoch"])
        if self.reported == 0 and epoch > 1:  # resumed: the epochs of the run it continues
            for earlier in ckpt_mod.read_metrics(self.run):
                if int(earlier["epoch"]) < epoch:
                    self._report(earlier)
        self._report(row)
        if self.trial.should_prune():
            self.pruned = epoch
            return True
        if _past(self.deadline):
            raise PauseTraining(f"the --timeout deadline passed during epoch {epoch}")
        return False

    def _report(self, row: dict[str, Any]) -> None:
        p = row["p"]
        self.trial.report(float("nan") if p is None else float(p), int(row["epoch"]))
        self.reported = int(row["epoch"])


def _past(deadline: float | None) -> bool:
    """``--timeout`` has run out (checked before a trial starts and after each epoch)."""
    return deadline is not None and time.time() >= deadline


def _resume_from(trial: Any, tuning: Tuning, config: FusionConfig, run: Path) -> int | None:
    """A retry continues the run of the trial it retries (killed, Ctrl-C, stopped by --timeout) from that run's
    last.pt, in a copy (the failed trial's folder stays as it was), when that run holds this same configuration
    (it does unless the folder was edited); the retried trial's number, or None: trained from the start."""
    of = trial.user_attrs.get("retry_of")
    if of is None or run.exists():
        return None
    source = trial_dir(tuning.study_dir, int(of))  # absent when that trial ran on a machine with another folder
    if not (source / ckpt_mod.LAST).is_file():
        return None
    try:
        if FusionConfig.load(source).differences(config):
            return None
    except VafusionError:
        return None
    shutil.copytree(source, run, ignore=shutil.ignore_patterns(RUN_LOCK))
    trial.set_user_attr("resumed_from", int(of))
    return int(of)


def _report_hook(tuning: Tuning) -> Callable[[Path, Any], None] | None:
    """With ``--report``, the hook that writes each trial's report.html (matplotlib only then)."""
    if not tuning.report:
        return None
    from vafusion.fusion.reports.run import report_on_trained

    return report_on_trained(tuning.base.training.device)


def _shown(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "defaults"


def _mark_summary(run: Path, tuning: Tuning, number: int, values: dict[str, Any], pruned: bool) -> None:
    """The trial's number and parameters into its run's summary.json (written again, atomically)."""
    path = run / ckpt_mod.SUMMARY
    summary = json.loads(path.read_text())
    summary["tune"] = {"study": tuning.name, "trial": number, "params": values, "pruned": pruned}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")


def _tune_task(spec: dict[str, Any], device: str | None, log: Callable[[str], None]) -> int:
    """A ``--jobs`` worker: one tune loop, on ``device`` when given."""
    tuning = Tuning.from_dict(spec)
    if device is not None:
        tuning = dataclasses.replace(tuning, base=replace(tuning.base, device=device))
    return tune_loop(tuning, log)


def run_tune(
    tuning: Tuning,
    *,
    workers: int | None = None,
    devices: list[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the study to ``tuning.trials`` finished trials (or its deadline); write and return tune.json's content.

    ``workers`` > 1 or ``devices``: that many tune loops in worker processes (:mod:`.parallel`),
    each on its device; otherwise one loop here. Rerunning the same command continues the study.
    """
    log = log or (lambda msg: None)
    index = read_corpus_index(tuning.cache_dir)
    split_ids(index, tuning.base.data)  # a split that cannot work is one line now, not in every trial
    _check_features(tuning)
    tuning = dataclasses.replace(tuning, corpus=index.fingerprint)
    study = open_study(tuning, create=True)
    n = st.counts(study)
    log(
        f"study {tuning.name!r} in {st.shown_storage(tuning.study_dir, tuning.storage)}: {n['finished']} of "
        f"{tuning.trials} trials finished, {len(tuning.space.params)} settings searched"
    )
    workers = workers or len(devices or ()) or 1
    problems: list[str] = []
    if workers > 1 or devices:
        names = [f"tune worker {k + 1}" for k in range(workers)]
        _, failures = run_in_workers(
            _tune_task, [tuning.to_dict()] * workers, workers=workers, devices=devices, names=names, log=log
        )
        problems = [f"{names[f.index]}: {f.message}" for f in failures]
    else:
        tune_loop(tuning, log, progress)
    with st.folder_lock(tuning.study_dir):  # processes ending together: the last to write saw every trial
        summary = write_results(study, tuning, log)
    if problems:
        raise VafusionError(
            f"{len(problems)} of {workers} tune workers failed (their finished trials are kept; rerun the same "
            f"command to continue): " + "; ".join(problems)
        )
    return summary


def _check_features(tuning: Tuning) -> None:
    """Every feature set is in the cache: one line now, before a study that no trial could train is created
    (a study's settings are fixed, so it would hold the --study folder)."""
    features = tuning.base.data.features
    for name in features:
        try:
            open_feature_file(tuning.cache_dir, name).close()
        except VafusionError as e:
            raise VafusionError(f"--features {','.join(features)}: {e}; name those it has") from e


def _trial_row(t: Any) -> dict[str, Any]:
    attrs = t.user_attrs
    seconds = attrs.get("seconds")
    if seconds is None and t.datetime_start is not None and t.datetime_complete is not None:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
    p = t.value if t.value is not None and math.isfinite(t.value) else None
    return {
        "trial": t.number,
        "state": t.state.name.lower(),
        "p": p,
        "epochs": attrs.get("epochs", len(t.intermediate_values) or None),
        "seconds": seconds,
        "params": dict(t.params),
        "run": attrs.get("run"),
        "retry_of": attrs.get("retry_of"),
        "resumed_from": attrs.get("resumed_from"),
        "timeout": bool(attrs.get("timeout")),
        "error": attrs.get("error"),
    }


def summarize(study: Any, tuning: Tuning) -> dict[str, Any]:
    """tune.json's content: the study, the space, the best complete trial, every trial."""
    trials = [_trial_row(t) for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    complete = [r for r in trials if r["state"] == "complete" and r["p"] is not None]
    best = max(complete, key=lambda r: r["p"]) if complete else None
    return {
        "study": tuning.name,
        "storage": st.shown_storage(tuning.study_dir, tuning.storage),
        "cache": str(tuning.cache_dir),
        "model": tuning.base.model.name,
        "metric": "p",
        "direction": "maximize",
        "goal": tuning.trials,
        "pruner": tuning.pruner,
        "seed": tuning.seed,
        "space": tuning.space.to_dict(),
        "counts": {k: v for k, v in st.counts(study).items() if k != "finished"},
        "best": best,
        "importances": st.param_importances(study),
        "trials": trials,
    }


def write_results(study: Any, tuning: Tuning, log: Callable[[str], None]) -> dict[str, Any]:
    """DIR/tune.json, DIR/best.json (when a trial completed) and DIR/tune.html."""
    from vafusion.fusion.reports.tune import write_tune_page  # here: tuning itself needs no matplotlib

    summary = summarize(study, tuning)
    with atomic_path(tuning.study_dir / TUNE_JSON) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    best = summary["best"]
    if best is not None:
        config = tuning.space.config(tuning.base, best["params"])
        content = {
            "format": BEST_FORMAT,
            "study": tuning.name,
            "trial": best["trial"],
            "p": best["p"],
            "params": best["params"],
            "run": best["run"],
            "config": config.to_dict(),
        }
        with atomic_path(tuning.study_dir / BEST_JSON) as tmp:
            tmp.write_text(json.dumps(content, indent=2) + "\n")
    log(f"tuning page: {write_tune_page(tuning.study_dir, summary)}")
    return summary


def read_params(path: Path) -> FusionConfig:
    """The configuration in a best.json of ``vafusion tune`` (``--params``); not one: a line naming the file."""
    try:
        content = json.loads(read_text(path, "--params file"))
    except json.JSONDecodeError as e:
        raise VafusionError(f"--params {path}: not valid JSON ({e})") from e
    if not isinstance(content, dict) or content.get("format") != BEST_FORMAT or "config" not in content:
        raise VafusionError(f"--params {path}: not a {BEST_JSON} of `vafusion tune` (DIR/{BEST_JSON})")
    try:
        return FusionConfig.from_dict(content["config"])
    except VafusionError as e:
        raise VafusionError(f"--params {path}: {e}") from e


__all__ = [
    "BEST_JSON",
    "TRIALS",
    "TUNE_JSON",
    "Tuning",
    "open_study",
    "read_params",
    "run_trial",
    "run_tune",
    "summarize",
    "trial_dir",
    "tune_loop",
    "write_results",
]
