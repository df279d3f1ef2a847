"""``vafusion tune``: hyperparameter search on a cache (the library: vafusion.fusion.experiments.tune)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from vafusion.cli.fusion_options import (
    _config,
    _data_options,
    _given,
    _model_options,
    _parallel_options,
    _split_options,
    _training_options,
)
from vafusion.cli.main import cli
from vafusion.cli.options import _compute_options, json_only_on_stdout
from vafusion.errors import VafusionError


@cli.command()
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--study",
    "study_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Study folder: the study (journal file, unless --storage), one run per trial (DIR/trials/NNNN), "
    "tune.json, best.json, tune.html. Rerun the same command to continue; several commands may share it.",
)
@click.option(
    "--trials",
    default=20,
    show_default=True,
    type=click.IntRange(1),
    help="Finished trials (complete or pruned) the study should hold; killed and failed ones do not count.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stop after this many seconds: no trial starts, and a running one stops at the end of its epoch, its "
    "run kept (failed, 'stopped by --timeout'); the same command continues it from there.",
)
@click.option(
    "--space",
    "space_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help='JSON changes to the search space, per key: {"low": L, "high": H, "log": true, "step": S}, '
    '{"choices": [...]}, a value (fixed) or null (not searched). See --print-space.',
)
@click.option("--print-space", is_flag=True, help="Print the effective search space and exit (no --study needed).")
@click.option(
    "--pruner",
    type=click.Choice(["median", "hyperband", "none"]),
    default="median",
    show_default=True,
    help="Stop a trial after an epoch whose validation P is poor: median (below the median of earlier trials at "
    "that epoch, after max(1, epochs/5) warm-up epochs and 3 finished trials), hyperband, or none.",
)
@click.option(
    "--storage",
    metavar="URL",
    help="An Optuna RDB URL (sqlite:///tune.db, postgresql://..., mysql+pymysql://...) holding the study, so "
    "that tune processes on several machines share it (each with a --study folder of the same name)  "
    "[default: a journal file in --study]",
)
@click.option("--report/--no-report", default=False, show_default=True, help="Write report.html in each trial's run.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print tune.json as JSON (with --print-space: the space as --space FILE takes it).",
)
@_split_options
@_parallel_options
@_model_options()
@_data_options()
@_training_options
@_compute_options()
def tune(
    cache_dir: Path,
    study_dir: Path | None,
    trials: int,
    timeout: float | None,
    space_file: Path | None,
    print_space: bool,
    pruner: str,
    storage: str | None,
    report: bool,
    as_json: bool,
    split: str | None,
    folds: int,
    fold: int | None,
    workers: int | None,
    devices: list[str] | None,
    **kw,
) -> None:
    """Search hyperparameters of a model on CACHE with Optuna (TPE seeded by --seed; bad trials pruned after
    an epoch). The space: the model's declared options and the training settings that matter (learning
    rate, weight decay, batch size, window); options given here are fixed, --space changes the rest.

    Every trial is a run directory (DIR/trials/NNNN) that evaluate, predict and report take. Killed
    (Ctrl-C, kill -9) or stopped by --timeout, the same command continues: finished trials are kept,
    interrupted ones are tried once more, their runs continued from their last epoch. Then `vafusion
    train CACHE --run RUN --params DIR/best.json` retrains the best (`cv --params` cross-validates it).
    """
    from vafusion.fusion.experiments.space import build_space, read_space_file
    from vafusion.fusion.experiments.tune import Tuning, run_tune

    if split == "official" and fold is not None:
        raise VafusionError(f"--fold {fold} and --split official: the official split has no folds; drop one")
    split = split or ("folds" if fold is not None else "official")
    with json_only_on_stdout(as_json):  # a model plug-in's prints (import, build, forward): not into the JSON
        given = _given(kw)
        base = _config(split=split, folds=folds, fold=1 if fold is None else fold, **kw)
        entries = read_space_file(space_file) if space_file is not None else None
        space = build_space(base, given, entries, where=f"--space {space_file}" if space_file else "--space")
    if print_space:
        click.echo(json.dumps(space.as_space_file(), indent=2) if as_json else "\n".join(space.describe()))
        return
    if study_dir is None:
        raise click.UsageError("--study DIR is required (the folder of the study)")
    deadline = None if timeout is None else time.time() + timeout
    tuning = Tuning(cache_dir, study_dir, base, space, trials, pruner, storage, deadline, report)
    with json_only_on_stdout(as_json):
        summary = run_tune(tuning, workers=workers, devices=devices, log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    n, best = summary["counts"], summary["best"]
    click.echo(f"{n['complete']} complete, {n['pruned']} pruned, {n['fail']} failed trials in {study_dir}")
    if best is not None:
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
        click.echo(f"best: trial {best['trial']}, P {best['p']:.4f}: {params}")
        click.echo(f"wrote {study_dir / 'tune.json'}, {study_dir / 'best.json'}, {study_dir / 'tune.html'}")
