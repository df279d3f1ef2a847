"""The ``vafusion`` command line: parse options, call the library, print results.

Every user-fixable problem arrives here as a :class:`~vafusion.errors.VafusionError` and
leaves as one line on stderr with exit code 1: no tracebacks for bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from vafusion import __version__
from vafusion.errors import VafusionError


class _Group(click.Group):
    """A click group that turns VafusionError into ``error: <message>`` and exit code 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except VafusionError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vafusion")
def cli() -> None:
    """Audio-visual valence/arousal estimation from in-the-wild video.

    \b
    Stage 1 (GPU box, once):   vafusion extract CORPUS --cache CACHE
    Stage 2 (laptop, often):   vafusion train CACHE --run RUN
                               vafusion predict RUN --cache CACHE --out DIR
    The feature cache (a directory of HDF5 files) is the contract between them:
    `vafusion cache info CACHE` describes one, `vafusion cache verify CACHE` checks it.
    """


@cli.group(cls=_Group)
def cache() -> None:
    """Inspect, check and merge feature caches."""


@cache.command("info")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
def cache_info_cmd(cache_dir: Path, as_json: bool) -> None:
    """Describe CACHE: corpus summary, and per feature file its dim, dtype, ids, frames,
    extractor, fingerprint and size on disk."""
    from vafusion.cache.inspect import cache_info, format_info

    info = cache_info(cache_dir)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@cache.command("verify")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(path_type=Path))
def cache_verify_cmd(cache_dir: Path) -> None:
    """Check every id of every feature file against corpus.h5: shape (T, dim), float16,
    finite values, mask length, completion marker, matching corpus fingerprint.
    Exits 0 only if the cache is whole; each problem is printed with its file."""
    from vafusion.cache.inspect import verify_cache

    problems = verify_cache(cache_dir)
    for p in problems:
        click.echo(f"problem: {p}", err=True)
    if problems:
        click.echo(f"{cache_dir}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    click.echo(f"{cache_dir}: ok")


@cache.command("merge")
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--copy", is_flag=True, help="Copy the shards' data into one self-contained file per feature "
              "instead of linking to the shard files (the default: instant, no extra disk).")
@click.option("--feature", "features", multiple=True, help="Merge only this feature (repeatable).")
def cache_merge_cmd(cache_dir: Path, copy: bool, features: tuple[str, ...]) -> None:
    """Combine the shard files written by `extract --shard K/N` (all N copied into CACHE)
    into whole <feature>.h5 files. A missing shard is an error."""
    from vafusion.cache.merge import merge_shards

    for path in merge_shards(cache_dir, copy=copy, features=list(features) or None):
        click.echo(f"wrote {path}")


# ---- stage 1 commands -------------------------------------------------------------------

# ---- stage 2 commands -------------------------------------------------------------------


def main() -> None:
    cli(prog_name="vafusion")


if __name__ == "__main__":
    sys.exit(main())
