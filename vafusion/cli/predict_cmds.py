"""``vafusion predict`` and ``vafusion check-submission``: prediction files and the challenge's submission."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vafusion.cli.main import cli
from vafusion.cli.options import _compute_options, _device_option
from vafusion.errors import VafusionError


@cli.command()
@click.argument("run_dirs", metavar="RUN [RUN ...]", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--cache", "cache_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory for the <video_id>.txt prediction files and predictions.json (what made them), "
    "which appear together once all are written (a set there before is replaced); with --sample, "
    "the one submission file.",
)
@click.option(
    "--sample",
    type=click.Path(path_type=Path),
    help="The organisers' *_ABAW_VA_test_set_sample.txt: write the single file the challenge takes "
    "(image_location,valence,arousal; its rows, in its order) for its videos.",
)
@click.option(
    "--ids",
    default=None,
    help="test (the cache's test ids), all, or a FILE of ids  [default: test; with --sample: the sample's videos].",
)
@click.option(
    "--post",
    default="auto",
    show_default=True,
    metavar="auto|none|FILE",
    help="Post-processing: auto applies the post.json that `vafusion cv` wrote beside the runs (in their "
    "common folder, above fold-K/seed-S folders), if there is one; none: raw predictions; FILE: that "
    "post.json.",
)
@click.option(
    "--smooth",
    default=None,
    type=click.IntRange(1),
    help="Overrides --post: a centred moving average over N frames of both dimensions (1 = none).",
)
@_device_option()
@_compute_options()
def predict(
    run_dirs: tuple[Path, ...],
    cache_dir: Path,
    out: Path,
    sample: Path | None,
    ids: str | None,
    post: str,
    smooth: int | None,
    device: str,
) -> None:
    """Write ABAW-format predictions, clipped to [-1, 1]: one <video_id>.txt per id (header
    valence,arousal; one row per frame), or with --sample the single submission file.

    Every RUN is averaged, each weighing the same: give run directories or directories holding
    runs (RUNS, RUNS/fold-*, RUNS/fold-*/seed-* of `vafusion cv` all mean every seed of every
    fold); a run named twice is an error. With --sample, a video's rows past its last frame
    repeat its last prediction and frames the sample does not list are dropped; each video
    whose count differs is listed. Check the file with `vafusion check-submission`.
    """
    from vafusion.fusion.predict.ensemble import predict_submission, predict_to_dir
    from vafusion.fusion.predict.files import MANIFEST

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if sample is None:
        written = predict_to_dir(
            list(run_dirs), cache_dir, out, ids=ids or "test", smooth=smooth, post=post, device=device, log=log
        )
        click.echo(f"wrote {len(written)} prediction files and {MANIFEST} to {out}")
        return
    if ids is not None:
        raise VafusionError(f"--ids {ids} and --sample: the sample names the videos; give one of them")
    differences = predict_submission(
        list(run_dirs), cache_dir, sample, out, smooth=smooth, post=post, device=device, log=log
    )
    if differences:
        click.echo(f"{len(differences)} video(s) whose sample row count differs from the cache's frames:", err=True)
        for d in differences:
            click.echo(f"  {d.describe()}", err=True)
    click.echo(f"wrote {out}; check it with: vafusion check-submission {out} --sample {sample}")


@cli.command("check-submission")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--sample",
    required=True,
    type=click.Path(path_type=Path),
    help="The organisers' *_ABAW_VA_test_set_sample.txt the file must match.",
)
def check_submission_cmd(file: Path, sample: Path) -> None:
    """Check a submission FILE against the organisers' sample: header image_location,valence,arousal;
    exactly the sample's rows, in its order, each once; two plain decimal numbers per row (-0.25, 1e-3;
    not 0.0_1 or non-ASCII digits), finite, in [-1, 1].
    Every problem is listed with its line (the first 10 of each kind, then a count); exit code 1
    on any."""
    from vafusion.fusion.predict.submission import check_submission, read_sample

    parsed = read_sample(sample)
    result = check_submission(file, parsed)
    for line in result.lines():
        click.echo(f"problem: {line}", err=True)
    if not result.ok:
        click.echo(f"{file}: {result.total} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{file}: ok ({result.rows} rows, {len(parsed.videos)} videos, as in {sample})")
