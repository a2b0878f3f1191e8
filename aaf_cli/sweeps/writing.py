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
results are pickled to them, as they came back from Ray.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
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


def _child() -> None:
    """A worker's start: the default signal handling, not the command's. The parent handles
    Ctrl-C (a stop request lets the points being written finish); the pool ends its workers
    with SIGTERM, which must end them, not ask them to stop after a training step."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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


def write_points(items: Sequence[Item], workers: int | None = None) -> list[Written]:
    """Write each ``(folder, result, started)`` as ``pipeline.write_run`` does; for each, its
    summary or the one-line error that stopped it, in order.

    Args:
        items: the points; their folders hold their config already (``pipeline.start_run``).
        workers: most processes at once (default: the usable cores).
    """
    from aaf_cli.budget import usable_cores

    workers = min(len(items), workers or usable_cores())
    if workers < 2 or not sys.platform.startswith("linux"):
        return [_write(item) for item in items]
    out: list[Written] = []
    try:
        if _connected_to_ray():
            server = multiprocessing.get_context("forkserver")
            server.set_forkserver_preload(["aaf_cli.pipeline"])
            pool = ProcessPoolExecutor(workers, mp_context=server, initializer=_child)
            futures = [pool.submit(_write, item) for item in items]
        else:
            _PENDING[:] = list(items)  # set before the pool forks its workers
            fork = multiprocessing.get_context("fork")
            pool = ProcessPoolExecutor(workers, mp_context=fork, initializer=_child)
            futures = [pool.submit(_write_one, i) for i in range(len(items))]
        with pool:
            for future in futures:
                try:
                    out.append(future.result())
                except BrokenProcessPool:
                    # A writer died (killed, out of memory): this point and the ones not
                    # written yet fail with one line; a resume writes them again.
                    out.append((None, "its writer process died before the folder was written"))
        return out
    finally:
        _PENDING.clear()


def _connected_to_ray() -> bool:
    """Whether this process holds a Ray connection (and so Ray's gRPC threads)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())
