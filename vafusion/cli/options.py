"""Options several commands share: checked numeric types, devices, threads and precision."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Iterator

import click


def _ranged(cls: type, name: str) -> click.ParamType:
    """The click type of setting ``name`` of dataclass ``cls``: its type and its declared range
    (:mod:`vafusion.bounds`), NaN and inf refused, shown in --help as click shows a range."""
    from vafusion.bounds import bound_of

    declared = bound_of(cls, name)
    if declared is None:
        raise TypeError(f"{cls.__name__}.{name} declares no range (vafusion.bounds.bound)")
    (setting,) = [f for f in dataclasses.fields(cls) if f.name == name]
    base = click.IntRange if str(setting.type).startswith("int") else click.FloatRange

    class Ranged(base):  # type: ignore[misc, valid-type]  # a base chosen at run time
        name = "integer" if base is click.IntRange else "float"

        def convert(self, value, param, ctx):
            number = super().convert(value, param, ctx)
            problem = declared.problem(number)
            if problem:
                self.fail(problem, param, ctx)
            return number

    return Ranged(declared.low, declared.high, min_open=declared.low_open)


def _setting(cls: type, name: str, help: str) -> Callable:
    """``--<name>`` for setting ``name`` of dataclass ``cls``: its default (shown) and its checked range
    come from the dataclass, so the option, the library and a saved config cannot disagree."""
    return click.option(
        f"--{name.replace('_', '-')}",
        default=getattr(cls(), name),
        show_default=True,
        type=_ranged(cls, name),
        help=help,
    )


class _Device(click.ParamType):
    """A --device this machine has (vafusion.device.device_problem), checked before any work."""

    name = "text"

    def convert(self, value, param, ctx):
        from vafusion.device import device_problem

        problem = device_problem(str(value))
        if problem:
            self.fail(problem, param, ctx)
        return str(value)


def _warn_beside_bars(message: str) -> None:
    """``warning: ...`` on a line of its own, even while a progress bar is drawn (tqdm clears and redraws it)."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


DEVICE = _Device()
DEVICE_HELP = "auto, cpu, cuda or cuda:K (mps on Apple GPUs)."


def _device_option(default: str = "auto") -> Callable:
    """``--device`` as every command that computes declares it: one check (this machine's devices, before any
    work) and one help text."""
    return click.option("--device", default=default, show_default=True, type=DEVICE, help=DEVICE_HELP)


def _weights_option(metavar: str, help: str) -> Callable:
    """``--weights FEATURE=...`` (repeatable), declared alike by extract and analyze; each says what SPEC means."""
    return click.option("--weights", "weights", multiple=True, metavar=metavar, help=help)


@contextlib.contextmanager
def json_only_on_stdout(active: bool) -> Iterator[None]:
    """While a command that prints JSON does its work, everything else printed goes to stderr.

    Why: a plug-in's ``print`` (at import or while it runs), a library's C-level output or a
    ``--jobs`` worker would otherwise land in the JSON a script parses. Both ``sys.stdout`` and
    file descriptor 1 (inherited by worker processes) point at stderr until the block ends;
    the command prints its JSON after it.
    """
    if not active:
        yield
        return
    sys.stdout.flush()
    saved_fd, saved_stream = os.dup(1), sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = saved_stream
        os.dup2(saved_fd, 1)
        os.close(saved_fd)


def _stacked(options: list) -> Callable:
    """One decorator applying ``options`` (click options) in order."""

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _compute_options(precision: bool = True, stream: bool = True):
    """--threads, --precision and (for commands that read a cache's features) --in-memory/--stream.

    The command body runs inside :func:`vafusion.device.compute` (threads, precision) and
    :func:`vafusion.fusion.data.sources.loading` (how caches load), which the library reads.
    """
    options = [
        click.option(
            "--threads",
            type=click.IntRange(1),
            default=None,
            help="Compute threads (torch and BLAS; cv and compare --jobs N share them among their workers; "
            "under torchrun, "
            "per rank, by default each rank's share of its machine's cores)  [default: "
            "the physical cores minus those other processes keep busy "
            "now (sampled for 0.1 s), at least 1, so a busy laptop is not oversubscribed; OpenMP threads wait "
            "passively]",
        )
    ]
    if precision:
        from vafusion.device import EMULATED_BF16_ENV

        options.append(
            click.option(
                "--precision",
                type=click.Choice(["auto", "fp32", "bf16"]),
                default="auto",
                show_default=True,
                help="CPU forward passes in fp32 or under bfloat16 autocast. auto: bf16 where the CPU has native "
                "bfloat16 (AVX512-BF16, AMX or ARM BF16), else fp32; a resumed run keeps the precision it started "
                f"with. bf16 elsewhere is an error ({EMULATED_BF16_ENV}=1 emulates it, 1.4-1.7x slower on an AVX2 "
                "CPU). On a GPU, autocast is always on.",
            )
        )
    if stream:
        options.append(
            click.option(
                "--in-memory/--stream",
                "in_memory",
                default=None,
                help="Load the features into RAM (fastest), or stream them from the cache files (only masks and labels "
                "in RAM; for caches larger than memory)  [default: in RAM if the features take at most half of "
                "the memory available now (MemAvailable), else streamed]",
            )
        )

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def run(*args, threads: int | None, precision: str = "auto", in_memory: bool | None = None, **kw):
            from vafusion.device import compute

            with contextlib.ExitStack() as stack:
                stack.enter_context(compute(threads, precision))
                if stream:
                    from vafusion.fusion.data.sources import loading

                    stack.enter_context(loading(None if in_memory is None else not in_memory))
                return f(*args, **kw)

        return _stacked(options)(run)

    return decorate
