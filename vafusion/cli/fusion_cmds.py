"""Stage 2's commands: train, cv, compare, models, evaluate, report, and the demo."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vafusion import plugins
from vafusion.cli.fusion_options import (
    _config,
    _data_options,
    _model_option_values,
    _model_options,
    _parallel_options,
    _params_option,
    _parts,
    _print_scores,
    _report_option,
    _runs_option,
    _seeds_option,
    _split_options,
    _training_options,
)
from vafusion.cli.main import cli
from vafusion.cli.options import _compute_options, _device_option, _ranged, json_only_on_stdout
from vafusion.errors import VafusionError
from vafusion.fusion.runs.config import DataConfig, TrainingConfig


def _log(message: str) -> None:
    click.echo(message, err=True)


@cli.command()
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory to create (config.json, best.pt, last.pt, metrics.jsonl, summary.json).",
)
@_split_options
@click.option("--resume", is_flag=True, help="Continue an interrupted run in RUN with the same options.")
@_report_option(True, "Write RUN/report.html at the end.")
@_params_option
@_model_options()
@_data_options()
@_training_options
@_compute_options()
def train(
    cache_dir: Path, run_dir: Path, split: str | None, folds: int, fold: int | None, resume: bool, report: bool, **kw
) -> None:
    """Train a model (by default imf, the paper's) on the features of CACHE.

    Needs only the cache: no corpus, no GPU, no extraction backbones. The best epoch by
    validation P = (CCC_V + CCC_A) / 2 is kept in RUN/best.pt.
    """
    from vafusion.fusion.runs.train import train as run_train

    if split == "official" and fold is not None:
        raise VafusionError(f"--fold {fold} and --split official: the official split has no folds; drop one")
    split = split or ("folds" if fold is not None else "official")
    config = _config(split=split, folds=folds, fold=1 if fold is None else fold, **kw)
    on_trained = None
    if report:  # the report is written by its room, before train writes summary.json
        from vafusion.fusion.reports.run import report_on_trained

        on_trained = report_on_trained(config.training.device, _log)
    result = run_train(cache_dir, run_dir, config, resume=resume, log=_log, on_trained=on_trained)
    _print_scores(f"best epoch {result.best['epoch']} ({run_dir})", result.best)


@cli.command()
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_runs_option(
    "Directory for the fold runs (RUNS/fold-1 ... fold-N; with --seeds K > 1 RUNS/fold-K/seed-S), "
    "cv.json, post.json and cv.html. Rerun the same command to continue: finished runs are kept, an "
    "interrupted one resumes.",
)
@click.option(
    "--folds",
    default=6,
    show_default=True,
    type=_ranged(DataConfig, "folds"),
    help="Folds: train and validation ids merged and split by video (a video's _left/_right ids stay "
    "together) into N parts; each validates once.",
)
@_seeds_option(
    "Runs per fold: seeds --seed, --seed + 1, ...; `predict RUNS/fold-*` averages them all.",
)
@_report_option(True, "Write report.html in each fold's run.")
@click.option(
    "--post-steps",
    default="smooth,shift",
    show_default=True,
    help="Post-processing steps chosen out of fold per dimension, applied in this order: built-ins smooth "
    "(mean or median over a window) and shift, package.module:Class of your own, or an installed plug-in "
    "(README, Post-processing steps).",
)
@_params_option
@_parallel_options
@_model_options()
@_data_options()
@_training_options
@_compute_options()
def cv(
    cache_dir: Path,
    runs_dir: Path,
    folds: int,
    seeds: int,
    report: bool,
    post_steps: str,
    workers: int | None,
    devices: list[str] | None,
    **kw,
) -> None:
    """Cross-validate: train every fold (train and validation ids merged, split by video)
    and report each fold's CCC_V, CCC_A, P and their mean ± std.

    Each run's validation predictions are kept (RUN/val_predictions.npz). On these out-of-fold
    predictions cv chooses, per dimension, a setting of each --post-steps step (by default a
    smoothing, mean or median up to 3 s, and a shift within ±1 s of the predictions), and writes
    the choice to RUNS/post.json, which `predict` applies. The gain it prints is nested (each fold
    scored with the choice made on the other folds); a dimension is post-processed only where that
    gain is positive. RUNS/cv.html shows it all.
    """
    from vafusion.fusion.experiments.cv import cross_validate
    from vafusion.fusion.post.apply import DimPost
    from vafusion.fusion.reports.pages import seconds_text

    config = _config(split="folds", folds=folds, fold=1, **kw)
    summary = cross_validate(
        cache_dir,
        runs_dir,
        config,
        seeds=seeds,
        report=report,
        workers=workers,
        devices=devices,
        log=lambda m: click.echo(m, err=True),
        post_steps=[s.strip() for s in post_steps.split(",") if s.strip()],
    )
    click.echo(
        f"{'fold':>6} {'CCC_V':>8} {'CCC_A':>8} {'P':>8} {'time':>9}" + ("  (mean over seeds)" if seeds > 1 else "")
    )
    for row in summary["folds"]:
        time = seconds_text(row.get("seconds"))
        click.echo(f"{row['fold']:>6} {row['ccc_v']:>8.4f} {row['ccc_a']:>8.4f} {row['p']:>8.4f} {time:>9}")
    total = seconds_text(summary.get("seconds"))
    click.echo(" ".join([f"{'mean':>6}"] + [f"{summary[m]['mean']:>8.4f}" for m in ("ccc_v", "ccc_a", "p")] + [total]))
    click.echo(" ".join([f"{'± std':>6}"] + [f"{summary[m]['std']:>8.4f}" for m in ("ccc_v", "ccc_a", "p")]))
    oof = summary["out_of_fold"]
    click.echo(f"out-of-fold (all folds pooled): CCC_V {oof['ccc_v']:.4f}  CCC_A {oof['ccc_a']:.4f}  P {oof['p']:.4f}")
    for name in ("valence", "arousal"):
        d = summary["post"]["fit"][name]
        click.echo(
            f"post-processing {name}: {DimPost.from_dict(d['best']).describe()}: CCC {d['ccc_before']:.4f} -> "
            f"{d['ccc_nested']:.4f} nested ({d['gain_nested']:+.4f}; in-sample {d['gain_in_sample']:+.4f})"
            + ("" if d["applied"] else "; not applied (no nested gain)")
        )
    click.echo(f"wrote {runs_dir / 'post.json'}, {runs_dir / 'cv.json'}, {runs_dir / 'cv.html'}")


@cli.command()
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_runs_option(
    "Directory for the runs (RUNS/<model>/<features>/seed-<s>[/fold-<k>]), compare.json and "
    "compare.html. Rerun the same command to continue: finished runs are kept, an interrupted "
    "one resumes from its last.pt.",
)
@_seeds_option(
    "Seeds per model and feature set: --seed, --seed + 1, ...",
)
@click.option(
    "--split",
    type=click.Choice(["official", "folds"]),
    default=None,
    help="official: Train_Set trains, Validation_Set validates [default]. folds: every fold of --folds.",
)
@click.option(
    "--folds",
    type=_ranged(DataConfig, "folds"),
    default=None,
    help="Cross-validate every run over N folds (implies --split folds)  [default with --split folds: 6].",
)
@click.option("--json", "as_json", is_flag=True, help="Print compare.json instead of the table.")
@_report_option(False, "Also write each run's report.html.")
@_parallel_options
@_model_options(several=True)
@_data_options(feature_sets=True)
@_training_options
@_compute_options()
def compare(
    cache_dir: Path,
    runs_dir: Path,
    seeds: int,
    split: str | None,
    folds: int | None,
    as_json: bool,
    report: bool,
    workers: int | None,
    devices: list[str] | None,
    models: str,
    model_options: tuple[str, ...],
    causal: bool,
    features: tuple[str, ...],
    **kw,
) -> None:
    """Train every model x feature set x seed (x fold) on CACHE with the same data, and compare them:
    CCC_V, CCC_A, P as mean ± std over seeds and folds, in RUNS/compare.json and RUNS/compare.html
    (table and bar chart). Prints the table."""
    from vafusion.fusion.experiments.compare import compare as run_compare
    from vafusion.fusion.reports.compare import format_table

    options = _model_option_values(model_options, causal=False, kw=kw)
    data, training = _parts(kw)
    split = split or ("folds" if folds is not None else "official")
    sets = [
        tuple(f.strip() for f in s.split(",") if f.strip()) for group in features for s in group.split(";") if s.strip()
    ]
    with json_only_on_stdout(as_json):
        result = run_compare(
            cache_dir,
            runs_dir,
            [m.strip() for m in models.split(",") if m.strip()],
            sets,
            data=DataConfig(split=split, folds=folds or 6, **data),
            training=training,
            seeds=seeds,
            model_options=options,
            causal=causal,
            report=report,
            workers=workers,
            devices=devices,
            log=lambda m: click.echo(m, err=True),
        )
    click.echo(json.dumps(result, indent=2) if as_json else format_table(result["summary"]))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def models(as_json: bool) -> None:
    """List every model (built-ins and installed plug-ins) with its options, defaults and a
    line of description. Choose one with --model NAME and set options with --model-option KEY=VALUE."""
    from vafusion.fusion.models import ALIASES, list_models

    with json_only_on_stdout(as_json):
        specs, problems = list_models()
    aliases = {target: [a for a, t in ALIASES.items() if t == target] for target in set(ALIASES.values())}
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "ref": s.ref,
                        "origin": s.origin,
                        "description": s.description,
                        "aliases": aliases.get(s.name, []),
                        "closed_form": s.closed_form,
                        "options": [
                            {"name": o.name, "type": o.type_name, "default": o.default, "help": o.help}
                            for o in s.options.values()
                        ],
                    }
                    for s in specs
                ],
                indent=2,
            )
        )
    else:
        for spec in specs:
            also = f", also '{', '.join(aliases[spec.name])}'" if spec.name in aliases else ""
            click.echo(f"{spec.name}  ({spec.origin}{also})\n  {spec.description}")
            width = max([len(f"{o.name}={plugins.shown(o.default)}") for o in spec.options.values()] or [0])
            for o in spec.options.values():
                about = f"{o.help} ({o.type_name})" if o.help else f"({o.type_name})"
                click.echo(f"    {f'{o.name}={plugins.shown(o.default)}':<{width}}  {about}")
            click.echo("")
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Cache to evaluate on [default: the one RUN was trained on].",
)
@click.option(
    "--partition",
    type=click.Choice(["validation", "train"]),
    default="validation",
    show_default=True,
    help="The run's own validation (or training) ids.",
)
@_device_option()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@_compute_options()
def evaluate(run_dir: Path, cache_dir: Path | None, partition: str, device: str, as_json: bool) -> None:
    """Score RUN on a partition the challenge way: CCC_V, CCC_A, P over all its frames,
    plus a per-id table."""
    from vafusion.fusion.runs.evaluate import evaluate_run

    with json_only_on_stdout(as_json):
        scores = evaluate_run(run_dir, cache_dir, partition, device)
    if as_json:
        click.echo(json.dumps(scores, indent=2))
        return
    click.echo(f"{'id':<28} {'frames':>7} {'CCC_V':>8} {'CCC_A':>8} {'P':>8}")
    for row in scores["per_id"]:
        click.echo(f"{row['id']:<28} {row['frames']:>7} {row['ccc_v']:>8.4f} {row['ccc_a']:>8.4f} {row['p']:>8.4f}")
    _print_scores(f"{partition} ({scores['ids']} ids)", scores)


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Cache to predict the validation ids from [default: the one RUN was trained on].",
)
@click.option(
    "--ids",
    "n_ids",
    default=3,
    show_default=True,
    type=click.IntRange(0),
    help="Validation ids shown over time (spread over the ranking by P: best, median, worst).",
)
@_device_option()
@_compute_options()
def report(run_dir: Path, cache_dir: Path | None, n_ids: int, device: str) -> None:
    """Write RUN/report.html (with figures in RUN/figures/): configuration, learning curves,
    predictions against labels over time and in the valence-arousal plane, per-id CCC.
    Opens offline in any browser."""
    from vafusion.fusion.reports.run import write_report

    click.echo(write_report(run_dir, cache_dir, n_ids=n_ids, device=device))


@cli.command()
@click.option(
    "--out",
    default="demo-out",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Empty or new directory for the corpus, cache, runs and report.",
)
@click.option(
    "--size",
    default="demo",
    show_default=True,
    type=click.Choice(["tiny", "small", "demo", "large"]),
    help="Corpus size preset (vafusion.synth.SIZES).",
)
@_device_option()
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=_ranged(TrainingConfig, "seed"),
    help="Seed of the corpus and of every run.",
)
def demo(out: Path, size: str, device: str, seed: int) -> None:
    """Generate a corpus, extract features (random backbone weights), and compare the paper's
    model (imf) with the ridge baseline on all features and on each stream alone, on held-out ids."""
    from vafusion.demo import run_demo
    from vafusion.fusion.reports.compare import format_table

    result = run_demo(out, size=size, device=device, seed=seed, echo=lambda m: click.echo(m, err=True))
    click.echo(format_table(result["summary"]))
