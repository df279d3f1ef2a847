"""The ``vafusion`` group, its error handling and the README's generated CLI reference."""

from __future__ import annotations

import os

import click

from vafusion import __version__
from vafusion.errors import VafusionError, chain, tracebacks_wanted


class _Group(click.Group):
    """A click group that turns VafusionError into ``error: <message>`` and exit code 1 (with
    ``VAFUSION_TRACEBACK=1``, after the chain of exceptions that led to it), and a bad option or
    argument into one ``error: ...`` line (exit code 2, click's code for usage errors)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VafusionError as e:
            if tracebacks_wanted():
                click.echo(chain(e), err=True, nl=False)
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            if e.ctx is None:
                raise
            click.echo(f"error: {e.format_message()} (see '{e.ctx.command_path} -h')", err=True)
            ctx.exit(e.exit_code)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100, "terminal_width": 100},
)
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


def reference_markdown() -> str:
    """Every command's ``--help``, as the README's CLI reference (a test keeps them equal)."""
    sections = []

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(command, info_name=path[-1], parent=parent, **command.context_settings)
        sections.append(f"### `{' '.join(path)}`\n\n```\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name], ctx)

    walk(cli, ["vafusion"], None)
    return "\n".join(sections)


def main() -> None:
    # Before torch loads OpenMP: idle threads sleep instead of spinning, so a core another process
    # needs is not taken from it (BENCHMARKS.md, section 8). A value set by the user is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cli(prog_name="vafusion")
