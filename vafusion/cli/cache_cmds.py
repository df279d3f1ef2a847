"""``vafusion cache ...``: inspect, verify, merge, import into and derive from feature caches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from vafusion.cli.main import _Group, cli
from vafusion.cli.options import _compute_options, _warn_beside_bars, json_only_on_stdout


@cli.group(cls=_Group)
def cache() -> None:
    """Inspect, check, merge and import into feature caches."""


@cache.command("info")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
def cache_info_cmd(cache_dir: Path, as_json: bool) -> None:
    """Describe CACHE: corpus summary, and per feature file its dim, dtype, ids, frames,
    extractor, fingerprint, checksums, linked shards and size on disk; unfinished extractions
    and temporary files left by writers."""
    from vafusion.cache.inspect import cache_info, format_info

    with json_only_on_stdout(as_json):
        info = cache_info(cache_dir)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@cache.command("verify")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(path_type=Path))
def cache_verify_cmd(cache_dir: Path) -> None:
    """Check every id of every feature file against corpus.h5 and read all its data: shape
    (T, dim), float16 features, 1-byte bool mask of T rows, stored checksums, finite values,
    completion marker, matching corpus fingerprint, merged shards that are the ones merged.
    Run it after copying a cache to another machine. Exits 0 only if the cache is whole;
    each problem is printed with its file (and id and dataset); notes (e.g. no checksums in
    files of an older vafusion, temporary files) do not fail it."""
    from vafusion.cache.inspect import verify_cache

    report = verify_cache(cache_dir)
    for p in report:
        click.echo(f"problem: {p}", err=True)
    for n in report.notes:
        click.echo(f"note: {n}", err=True)
    if report:
        click.echo(f"{cache_dir}: {len(report)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{cache_dir}: ok" + (f" ({len(report.notes)} note(s))" if report.notes else ""))


@cache.command("merge")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--copy",
    is_flag=True,
    help="Copy the shards' data into one self-contained file per feature "
    "instead of linking to the shard files (the default: instant, no extra disk).",
)
@click.option("--feature", "features", multiple=True, help="Merge only this feature (repeatable).")
def cache_merge_cmd(cache_dir: Path, copy: bool, features: tuple[str, ...]) -> None:
    """Combine the shard files written by `extract --shard K/N` (all N copied into CACHE)
    into whole <feature>.h5 files. A missing shard is an error. A linked file records which
    shard files it links to and reads only those, from CACHE; a merge already done is not
    rewritten."""
    from vafusion.cache.merge import merge_shards

    for merged in merge_shards(cache_dir, copy=copy, features=list(features) or None):
        click.echo(f"{'wrote' if merged.written else 'up to date'} {merged.path}")


@cache.command("import")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("feature", metavar="FEATURE_NAME")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--timestamps",
    is_flag=True,
    help="The first column of every file is the time in seconds of its row; "
    "rows are averaged over each frame's span (the aligner of the built-in audio features). "
    "Without it, row k of a file is frame k.",
)
@click.option(
    "--header",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    show_default=True,
    help="Whether line 1 of each CSV file names the columns. auto: it does when one of its fields is not a "
    "number; a line 1 of only column numbers 0,1,... (pandas' unnamed columns) is refused until you say which.",
)
@click.option(
    "--tolerance",
    default=5,
    show_default=True,
    type=click.IntRange(0),
    help="Frames by which a file may be shorter or longer than its video (missing rows are masked).",
)
@click.option(
    "--kind",
    type=click.Choice(["frame", "track"]),
    help="What the rows come from, recorded in the file: frame (face crops) or track (the audio track; "
    "then --audio-where-speech treats them as audio).",
)
@click.option("--overwrite", is_flag=True, help="Replace FEATURE_NAME if the cache has it from other files.")
def cache_import_cmd(
    cache_dir: Path,
    feature: str,
    folder: Path,
    timestamps: bool,
    header: str,
    tolerance: int,
    kind: str | None,
    overwrite: bool,
) -> None:
    """Import features computed elsewhere as CACHE/FEATURE_NAME.h5: DIR holds one <video_id>.npy
    (2-D array) or <video_id>.csv (plain decimal numbers, optional header, one line per row: blank
    or ragged lines are refused; pandas' index column is dropped) per video id. NaN rows (or empty
    fields) become masked rows; the files' sha256 go into the provenance. Resumable like extract."""
    from vafusion.extract.importer import import_features

    report = import_features(
        cache_dir,
        feature,
        folder,
        timestamps=timestamps,
        header=header,
        tolerance=tolerance,
        kind=kind,
        overwrite=overwrite,
        warn=_warn_beside_bars,
    )
    click.echo(f"{feature}: {report.imported} imported, {report.skipped} already there -> {report.path}")


@cache.command("derive")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--from", "source", required=True, metavar="FEATURE", help="The feature set to derive from, e.g. resnet50."
)
@click.option(
    "--pca",
    "k",
    required=True,
    type=click.IntRange(1),
    metavar="K",
    help="Keep the first K principal components (K <= the feature's dim).",
)
@click.option("--name", default=None, help="Name of the new feature set  [default: FEATURE-pcaK]")
@click.option("--overwrite", is_flag=True, help="Replace an existing file of that name made from another fit.")
@_compute_options(precision=False, stream=False)
def cache_derive_cmd(cache_dir: Path, source: str, k: int, name: str | None, overwrite: bool) -> None:
    """Write CACHE/NAME.h5: FEATURE projected on its first K principal components, float16, masks
    kept. The PCA is fitted on the present frames of the training ids of corpus.h5 only (validation
    and test ids are never read for the fit) and applied to every id; the file holds the fitted
    transform (transform/components, transform/mean) and names its parent's fingerprint. Written
    like an extraction: resumable, checksummed, one writer at a time."""
    from vafusion.cache.derive import derive_pca

    done = derive_pca(cache_dir, source, k, name=name, overwrite=overwrite)
    click.echo(
        f"{done.path}: {done.k} of {source}'s {done.source_dim} dims keep "
        f"{100 * done.explained_variance_ratio:.1f}% of the variance of {done.fit_frames} training frames "
        f"({done.fit_ids} ids); {done.written} videos written"
    )
