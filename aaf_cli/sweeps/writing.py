"""Writing the run folders of a packed job's points, several at once.

A packed job trains many points in seconds, and then each point's folder needs its figures:
about a second of matplotlib per point, all of it single-threaded Python. After training the
cores are free, so the points are written by forked worker processes, one per usable core.
The workers inherit the results through ``fork`` (nothing is pickled on the way in) and send
back only each summary. Where ``fork`` is not the platform's safe default (anything but Linux)
or there is one core or one point, they are written here, one after another.

A process connected to Ray (the driver of ``--executor ray``) is not forked: Ray's client runs
gRPC threads, and a fork taken while one of them holds a lock leaves that lock held in the child
(Ray and gRPC both say not to fork after ``ray.init``). A sweep on Ray lost a task's worker
request that way, once in a few runs, and waited forever. There the workers come from a fork
server (a fresh process that imported the writing code once, started by fork and exec) and the
results are pickled to them, as they came back from Ray. A sweep on Ray keeps one pool of them
for all its jobs (``WriterPool``), started with the first jobs and warmed up (a first figure
loads the fonts) while they train: a point then costs its figures only (10 points on one
process: 11.7 s from a fresh pool, 10.3 s in a warm process).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aaf_cli.errors import AafError

if TYPE_CHECKING:
    from aaf_cli.experiment import ExperimentResult

#: A point to write: its folder, its result, when it started.
Item = tuple[Path, "ExperimentResult", datetime]
#: What writing it gave: its summary, or the one-line error that stopped it.
Written = tuple["dict[str, Any] | None", "str | None"]

#: What a forked worker inherits: the points to write (set just before the pool forks).
_PENDING: list[Item] = []


def _child(driver: int) -> None:
    """A worker's start: the default signal handling, not the command's. The parent handles
    Ctrl-C (a stop request lets the points being written finish); the pool ends its workers
    with SIGTERM, which must end them, not ask them to stop after a training step. A worker
    also ends, within a second, when the ``driver`` process (the one that made the pool) is
    gone: a driver killed outright must leave no writer waiting on its queue forever (nor,
    through them, the fork server, which stays as long as any process it made)."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_end_with, args=(driver,), daemon=True).start()


def _end_with(driver: int) -> None:
    """Exit this process once process ``driver`` has ended (checked every second)."""
    import time

    while _running(driver):
        time.sleep(1.0)
    os._exit(1)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists and is no zombie (a killed process stays one
    until its parent reaps it, which may wait for the pipes its children hold)."""
    from aaf_cli.sweeps.lock import proc_stat

    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone (its pid another user's now)
        return False
    fields = proc_stat(pid)
    return fields is None or fields[:1] != ["Z"]  # None: no /proc, and it exists


def _write_one(index: int) -> Written:
    """Write point ``index`` of ``_PENDING`` (a forked worker's inheritance)."""
    return _write(_PENDING[index])


def _write(item: Item) -> Written:
    """Write one ``(folder, result, started)``: (its summary, None) or (None, aaf's one-line
    error)."""
    import torch

    from aaf_cli.pipeline import write_run

    torch.set_num_threads(1)  # a forked child never enters the parent's OpenMP pool
    path, exp, started = item
    try:
        return write_run(path, exp, started).summary, None
    except AafError as exc:
        return None, str(exc)
    except Exception as exc:  # a bug or the machine (disk full): still one line, per point
        return None, f"writing the run folder failed: {type(exc).__name__}: {exc}"


def write_points(items: Sequence[Item]) -> list[Written]:
    """Write each ``(folder, result, started)`` as ``pipeline.write_run`` does; for each, its
    summary or the one-line error that stopped it, in order. ``items``: the points; their
    folders hold their config already (``pipeline.start_run``). At most one process per
    usable core writes them."""
    from aaf_cli.budget import usable_cores

    workers = min(len(items), usable_cores())
    ray = _connected_to_ray()
    # Here, one after another: one writer, or no fork (not Linux). Not on Ray's driver, whose
    # writer threads may write two jobs at once (matplotlib's figures are not thread-safe).
    if (workers < 2 and not ray) or not sys.platform.startswith("linux"):
        return [_write(item) for item in items]
    if ray:
        writers = WriterPool(workers, warm=False)
        try:
            return writers.write(items)
        finally:
            writers.close()
    try:
        _PENDING[:] = list(items)  # set before the pool forks its workers
        with _pool(workers, multiprocessing.get_context("fork")) as pool:
            return _collect([pool.submit(_write_one, i) for i in range(len(items))])
    finally:
        _PENDING.clear()


def _collect(futures: Sequence[Future[Written]]) -> list[Written]:
    """The writers' answers, in order. A writer that died (killed, out of memory) fails its
    point and those not written yet with one line; a resume writes them again."""
    out: list[Written] = []
    for future in futures:
        try:
            out.append(future.result())
        except BrokenProcessPool:
            out.append((None, "its writer process died before the folder was written"))
    return out


def _pool(workers: int, context: Any) -> ProcessPoolExecutor:
    """``workers`` writer processes of ``context`` (``_child`` starts each)."""
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=_child, initargs=(os.getpid(),)
    )


def _server() -> Any:
    """The fork server's context (its server imports the writing code once): what a process
    connected to Ray takes its writer processes from, never a fork of itself."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["aaf_cli.pipeline"])
    return context


def _warm() -> None:
    """A fresh writer's first figure, drawn before any point needs it (fonts loaded)."""
    from aaf_cli import plots

    plots.warm_up()


class WriterPool:
    """Processes from a fork server that write the points of every job of a sweep on Ray, as
    they finish (``write``, from any thread; the points of jobs that finish together share the
    processes). Started with the first jobs, so its processes (the writing code imported,
    fonts loaded) are ready when their results come; ``workers`` processes (default: one per
    usable core). ``warm`` False: no first figure ahead (the points are there already)."""

    def __init__(self, workers: int | None = None, warm: bool = True) -> None:
        from aaf_cli.budget import usable_cores

        self.workers = workers or usable_cores()
        self.pool = _pool(self.workers, _server())
        if warm:  # starts the processes now, in the background
            for _ in range(self.workers):
                self.pool.submit(_warm)

    def write(self, items: Sequence[Item]) -> list[Written]:
        """``write_points`` of ``items`` on the pool's processes."""
        return _collect([self.pool.submit(_write, item) for item in items])

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _connected_to_ray() -> bool:
    """Whether this process holds a Ray connection (and so Ray's gRPC threads)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())
