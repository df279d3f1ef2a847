"""Independent tasks in worker processes: how ``cv --jobs N`` and ``compare --jobs N`` spread their trainings.

Why processes and not DDP: the fusion model is small; the parallel work of an experiment is
across folds, seeds and variants, each a whole training of its own. Why 'spawn': forking a
process after torch has started its thread pools can deadlock, and a spawned worker starts
with its own, sized by :func:`vafusion.device.threads_per_process` from the command's threads
(``--threads``, or the default policy of :mod:`vafusion.device`), and with the command's
runtime settings (precision, cache loading: :class:`vafusion.runtime.RuntimeOptions`, which a
spawned process does not inherit), handed over whole.

Each worker is pinned to one device for its life (worker ``w`` gets ``devices[w % len(devices)]``,
so workers go round-robin over the GPUs) and takes the next task from a shared queue when
it is free, so a slow task never holds up the ones behind it. Tasks travel as plain data (a
task is a JSON-able dict; results too); the function run is a module-level one, imported by
name in the worker. Messages a task logs come back to the parent, which prints them.

A worker dies with its parent: killed at any moment, the parent leaves no worker training on
alone (which would race the trainings of a rerun in the same run directories).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, cast

import torch

from vafusion.device import compute, device_problem, threads_per_process
from vafusion.errors import VafusionError
from vafusion.runtime import RuntimeOptions

Task = Callable[[dict[str, Any], "str | None", Callable[[str], None]], Any]
"""``fn(spec, device, log) -> result``: a module-level function (workers import it by name)."""


def parse_devices(text: str) -> list[str]:
    """``"cuda:0,cuda:1"`` -> ``["cuda:0", "cuda:1"]``; each must be a device torch knows."""
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise VafusionError(f"--devices {text!r}: name at least one device, e.g. cuda:0,cuda:1")
    for d in devices:
        if d == "auto":
            raise VafusionError("--devices: name each device (cpu, cuda:K), not auto")
        problem = device_problem(d)  # an unknown device, or one this machine lacks
        if problem:
            raise VafusionError(f"--devices {d}: {problem}")
    return devices


def worker_devices(workers: int, devices: Sequence[str] | None) -> list[str | None]:
    """The device of each worker: round-robin over ``devices`` (None: each task keeps its own)."""
    if workers < 1:
        raise VafusionError(f"--jobs {workers}: must be >= 1")
    return [devices[w % len(devices)] if devices else None for w in range(workers)]


@dataclass(frozen=True)
class TaskFailure:
    """A task that raised (or whose worker died): its position in the task list and why."""

    index: int
    message: str


def _die_with_parent() -> None:
    """Exit as soon as the parent process is gone (its sentinel pipe closes), whatever this one is doing."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="vafusion-parent-watch", daemon=True).start()


def _worker(
    slot: int,
    device: str | None,
    threads: int,
    fn: Task,
    tasks: Any,
    conn: Any,
    runtime: RuntimeOptions,
) -> None:
    """A worker's life: take tasks until the ``None`` that ends the queue; report each back on ``conn``.

    ``runtime``: the parent's runtime settings (``--precision``, ``--stream``/``--in-memory`` ...),
    entered whole; then ``threads``, the worker's share (the parent checked the precision).

    ``conn.send`` writes before it returns, so what a worker reported is with the parent even
    if the worker dies the next instant.
    """
    _die_with_parent()
    with runtime.applied(), compute(threads, runtime.precision_asked, allow_emulated=True):
        _take_tasks(device, fn, tasks, conn)


def _logger(conn: Any, index: int) -> Callable[[str], None]:
    """What a task calls to log a line: it reaches the parent, tagged with the task's index."""
    return lambda msg: conn.send(("log", index, msg))


def _take_tasks(device: str | None, fn: Task, tasks: Any, conn: Any) -> None:
    try:
        while (item := tasks.get()) is not None:
            index, spec = item
            conn.send(("start", index, device))
            try:
                value = fn(spec, device, _logger(conn, index))
            except VafusionError as e:
                conn.send(("failed", index, str(e)))
            except Exception as e:  # noqa: BLE001 - a bug or a resource error (e.g. out of GPU memory): this task fails alone
                conn.send(("log", index, traceback.format_exc().rstrip()))
                conn.send(("failed", index, f"{type(e).__name__}: {e}"))
            else:
                conn.send(("done", index, value))
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal: stop quietly, the parent reports
        return


class _Pool:
    """Spawned worker processes sharing one task queue, each reporting on its own pipe."""

    def __init__(
        self,
        fn: Task,
        specs: Sequence[dict[str, Any]],
        devices: Sequence[str | None],
        threads: int,
        runtime: RuntimeOptions,
    ):
        ctx = mp.get_context("spawn")
        self.tasks = ctx.Queue()
        for item in enumerate(specs):
            self.tasks.put(item)
        for _ in devices:
            self.tasks.put(None)
        self.procs: list[Any] = []  # spawned processes
        self.conns: dict[Connection, int] = {}  # reading end of a worker's pipe -> its slot
        for slot, device in enumerate(devices):
            reader, writer = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=_worker,
                args=(slot, device, threads, fn, self.tasks, writer, runtime),
                name=f"vafusion-worker-{slot}",
                daemon=True,
            )
            p.start()
            writer.close()  # the worker holds the only writing end: it closes (EOF here) when the worker ends
            self.procs.append(p)
            self.conns[reader] = slot
        self.running: dict[int, int] = {}  # worker slot -> index of the task it runs

    def events(self) -> Iterator[tuple[str, int, int, Any]]:
        """``(kind, slot, index, payload)`` as workers report: start, log, done, failed; ends when all have ended.

        A worker that ends inside a task (killed, out of memory) fails that task.
        """
        while self.conns:
            for reader in cast("list[Connection]", wait(list(self.conns))):  # the ones given, that are ready
                slot = self.conns[reader]
                try:
                    kind, index, payload = reader.recv()
                except EOFError:
                    del self.conns[reader]
                    reader.close()
                    if slot in self.running:
                        self.procs[slot].join(timeout=5)
                        yield (
                            "failed",
                            slot,
                            self.running.pop(slot),
                            f"its worker process ended (exit code {self.procs[slot].exitcode}) inside the task",
                        )
                    continue
                if kind == "start":
                    self.running[slot] = index
                elif kind in ("done", "failed"):
                    self.running.pop(slot, None)
                yield kind, slot, index, payload

    def close(self, terminate: bool) -> None:
        if terminate:
            self.tasks.cancel_join_thread()  # tasks nobody will take must not hold this process at exit
            for p in self.procs:
                if p.is_alive():
                    p.terminate()
        for p in self.procs:
            p.join(timeout=30)
        for reader in self.conns:
            reader.close()


def run_in_workers(
    fn: Task,
    specs: Sequence[dict[str, Any]],
    *,
    workers: int,
    names: Sequence[str],
    devices: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
    on_end: Callable[[int], None] | None = None,
) -> tuple[dict[int, Any], list[TaskFailure]]:
    """Run ``fn(spec, device, log)`` for every spec in ``workers`` processes; ``({index: result}, failures)``.

    A task that raises fails alone (the others run on); ``names[i]`` prefixes what task ``i``
    logs; ``on_end(i)`` is called in this process as each task ends, done or failed.
    Interrupted (Ctrl-C, an error here), the workers are stopped before this returns.
    """
    log, on_end = log or (lambda msg: None), on_end or (lambda i: None)
    if not specs:
        return {}, []
    slots = worker_devices(min(workers, len(specs)), devices)
    values: dict[int, Any] = {}
    failures: list[TaskFailure] = []
    # the command's threads (--threads, or vafusion.device's default policy) shared among the workers
    threads = threads_per_process(len(slots), cores=torch.get_num_threads())
    pool, finished = _Pool(fn, specs, slots, threads, RuntimeOptions.current()), False
    try:
        for kind, slot, index, payload in pool.events():
            if kind == "start":
                log(f"[{names[index]}] started in worker {slot}" + (f" on {payload}" if payload else ""))
            elif kind == "log":
                log(f"[{names[index]}] {payload}")
            else:
                if kind == "done":
                    values[index] = payload
                else:
                    failures.append(TaskFailure(index, payload))
                on_end(index)
        ended = set(values) | {f.index for f in failures}
        failures += [
            TaskFailure(i, "not run: every worker process had ended") for i in range(len(specs)) if i not in ended
        ]  # only when workers died
        finished = True
    finally:
        pool.close(terminate=not finished)
    return values, sorted(failures, key=lambda f: f.index)


__all__ = ["TaskFailure", "parse_devices", "run_in_workers", "worker_devices"]
