"""The local executor: a sweep's points one after another, in this process.

Each point is what ``aaf run`` does (``pipeline.execute``) written into ``points/<NNN>/``: an
ordinary run folder. One point trains at a time, with the thread count its config asks for
(``threads: auto`` counts the cores free when the point starts), so the sweep never runs more
threads than one run would. Everything is checked before the sweep folder is made: each
point's config, its target and device (``checks.preflight``), and the size of the whole sweep
against the soft limits.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aaf_cli.budget import MAX_HOURS, Estimate, _bytes, _duration
from aaf_cli.config import ExperimentConfig, load_config
from aaf_cli.errors import AafError, ConfigError, UsageError
from aaf_cli.problems import facts_of, problem_title
from aaf_cli.runs import SWEEP_FILE, new_run_dir
from aaf_cli.sweeps import records
from aaf_cli.sweeps.records import DONE, FIGURE_FILE, PointEntry, SweepRecord
from aaf_cli.sweeps.spec import Axis, Point, SweepPlan, build_configs, parse_distribution

if TYPE_CHECKING:
    from aaf_cli.experiment import ExperimentResult
    from aaf_cli.sweeps.packing import Pack
    from aaf_cli.sweeps.writing import Item, Written
    from aaf_cli.train import LogRecord

METRICS = ("final", "best")


@dataclass(frozen=True)
class SweepCheck:
    """The size of a sweep: each point's estimate, the total, the jobs packing makes of the
    points (``packing.plan_packs``) and their time, and the soft limits passed."""

    estimates: list[Estimate]
    over_limits: list[str]
    packs: list[Pack] = field(default_factory=list)
    packed_seconds: float | None = None  # the jobs one after another; None: not packed

    @property
    def seconds(self) -> float:
        """Training time of the whole sweep on a quiet machine, jobs one after another."""
        alone = sum(e.seconds for e in self.estimates)
        return alone if self.packed_seconds is None else self.packed_seconds

    @property
    def models(self) -> int:
        return sum(e.models for e in self.estimates)

    def describe(self) -> str:
        largest = max(self.estimates, key=lambda e: e.memory_bytes)
        alone = sum(e.seconds for e in self.estimates)
        jobs = ""
        if self.packs and len(self.packs) < len(self.estimates):
            jobs = (
                f" in {len(self.packs)} packed job{'s' if len(self.packs) > 1 else ''}: about "
                f"{_duration(self.seconds)} of training ({_duration(alone)} one point after "
                "another)"
            )
        else:
            jobs = f": about {_duration(alone)} of training one point after another"
        return (
            f"{len(self.estimates)} points, {self.models} models in all{jobs} on a quiet "
            f"machine (the largest point needs about {_bytes(largest.memory_bytes)} of memory)"
        )


def pack_estimate(configs: Sequence[ExperimentConfig]) -> Estimate:
    """The size of one packed job: its first point's network with every point's models."""
    from aaf_cli.budget import estimate

    cfg = configs[0]
    models = sum(len(c.variants) * len(c.seed_list) for c in configs)
    seeds = max(1, round(models / len(cfg.variants)))
    return estimate(cfg.model_copy(update={"seeds": list(range(seeds))}))


@dataclass(frozen=True)
class PointEvent:
    """What ``on_point`` is told: a point starts (``phase`` ``start``) or ends (``done``)."""

    phase: str
    index: int
    count: int  # points in the sweep
    label: str  # the swept values
    folder: Path
    status: str = "running"
    seconds: float = 0.0
    comparisons: tuple[dict[str, Any], ...] = ()
    error: str | None = None
    packed: int = 1  # points trained in its job (``seconds`` is then the job's, shared)
    done_before: int = 0  # points of the sweep done before it started (a resumed sweep)


def plan_jobs(
    plan: SweepPlan,
    pending: Sequence[int] | None,
    pack: bool,
    parts: int,
    memory: int | None = None,
) -> list[Pack]:
    """The jobs of the ``pending`` points (default: all): packed (``packing.plan_packs``),
    each pack small enough that its estimated memory stays under the soft limit of
    ``memory`` bytes (default: this machine's; a GPU's where the jobs train on GPUs)."""
    from aaf_cli.budget import MAX_MEMORY_FRACTION, physical_memory
    from aaf_cli.sweeps.packing import plan_packs

    memory = memory or physical_memory()

    def fits(points: Sequence[int]) -> bool:
        if not memory:
            return True
        size = pack_estimate([plan.configs[i] for i in points]).memory_bytes
        return size <= MAX_MEMORY_FRACTION * memory

    return plan_packs(plan.configs, pending, pack=pack, parts=parts, fits=fits)


def packed_seconds(plan: SweepPlan, packs: Sequence[Pack], points: int) -> float | None:
    """The training time of ``points`` points run as ``packs`` (one after another), or None
    when packing made no job of several points."""
    if len(packs) >= points:
        return None
    return sum(pack_estimate([plan.configs[i] for i in p.points]).seconds for p in packs)


def check_plan(
    plan: SweepPlan, force: bool = False, pack: bool = True, device_here: bool = True
) -> SweepCheck:
    """Every check ``aaf run`` makes before training, for every point, and the soft limits
    applied to the whole sweep (its total time, packed as it will run; each point's own
    size). ``device_here`` False: the points train elsewhere (Ray nodes, which check their
    devices themselves), so a ``device`` this machine lacks is no error here."""
    from aaf_cli.checks import preflight

    estimates: list[Estimate] = []
    over: list[str] = []
    for point, cfg in zip(plan.points, plan.configs):
        if not device_here and cfg.device != "cpu":
            cfg = cfg.model_copy(update={"device": "cpu"})
        checked = preflight(cfg, plan.where(point), force=True)  # errors name the point
        estimates.append(checked.estimate)
        over += [f"point {point.index}: {o}" for o in checked.over_limits]
    if plan.evaluation is not None:
        checked = preflight(plan.evaluation, f"{plan.source}: evaluation run", force=True)
        estimates.append(checked.estimate)
        over += [f"evaluation run: {o}" for o in checked.over_limits]
    packs = plan_jobs(plan, None, pack, 1)
    packed = packed_seconds(plan, packs, len(plan.points)) if pack else None
    if packed is not None and plan.evaluation is not None:
        packed += estimates[-1].seconds
    check = SweepCheck(estimates, over, packs, packed)
    if check.seconds > MAX_HOURS * 3600:
        over.append(f"estimated total time over {MAX_HOURS:g} h")
    if over and not force:
        shown = "; ".join(over[:3]) + (f"; +{len(over) - 3} more" if len(over) > 3 else "")
        raise UsageError(
            f"{plan.source}: too large ({shown}): {check.describe()}; run it anyway with --force"
        )
    return check


def new_record(plan: SweepPlan, metric: str) -> SweepRecord:
    from aaf_cli.pipeline import baseline_of

    count = len(plan.points)
    return SweepRecord(
        name=plan.name,
        created=datetime.now().isoformat(timespec="seconds"),
        source=plan.source,
        base={
            "source": plan.base_source,
            "overrides": list(plan.overrides),
            "given": plan.base_data,
            "resolved": plan.base.model_dump(mode="json"),
        },
        axes=[a.record() for a in plan.axes],
        samples=plan.samples,
        sweep_seed=plan.sweep_seed,
        points=[
            PointEntry(
                index=p.index,
                folder=records.point_folder(p.index, count),
                values=p.values,
                overrides=p.overrides,
                variants=[v.name for v in cfg.variants],
                baseline=baseline_of(cfg),
            )
            for p, cfg in zip(plan.points, plan.configs)
        ],
        metric=metric,
        extra={"protocol": plan.protocol.record()} if plan.protocol is not None else {},
    )


def plan_of(folder: Path) -> tuple[SweepPlan, SweepRecord]:
    """The plan of an existing sweep folder (for ``--resume``), every point rebuilt and
    validated from its ``sweep.yaml``.

    Raises:
        RunError: not a sweep folder, or its ``sweep.yaml`` is corrupt.
        ConfigError: a point no longer validates.
    """
    record = records.read_record(folder)
    source = str(folder / SWEEP_FILE)
    try:
        base = record.base
        given, overrides = dict(base["given"] or {}), [str(o) for o in base["overrides"] or []]
        axes = [
            Axis(str(a["key"]), "random", distribution=parse_distribution(
                str(a["distribution"]), source, f"axes.{a['key']}"))
            if a.get("kind") == "random"
            else Axis(str(a["key"]), "grid", tuple(a["values"]))
            for a in record.axes
        ]  # fmt: skip
        base_source = str(base["source"])
        protocol = None
        if record.extra.get("protocol"):
            from aaf_cli.sweeps.tuned import Protocol

            given_protocol = record.extra["protocol"]
            protocol = Protocol(
                str(given_protocol["tune"]),
                len(given_protocol["tune_seeds"]),
                len(given_protocol["eval_seeds"]),
            )
    except (KeyError, TypeError) as exc:
        raise ConfigError(source, "", f"corrupt (missing or bad {exc})") from None
    plan = SweepPlan(
        source=record.source,
        name=record.name,
        base_source=base_source,
        base_data=given,
        overrides=overrides,
        axes=axes,
        samples=record.samples,
        sweep_seed=record.sweep_seed,
        base=load_config(dict(given), overrides),
        points=[Point(p.index, dict(p.values)) for p in record.points],
        configs=[],
        protocol=protocol,
    )
    plan.configs = build_configs(plan)
    return plan, record


@dataclass(frozen=True)
class Job:
    """One pack of points to train (``packing.plan_packs``): one ``train_pack`` call, in this
    process or as one task of a parallel executor."""

    pack: Pack
    configs: tuple[ExperimentConfig, ...]
    labels: tuple[str, ...]
    folders: tuple[Path, ...]
    finished: float | None = None  # when its results came (``time.monotonic``), if not now


#: What an executor reports for a job: its points' results, or the one-line error that failed it.
Outcome = Callable[[Job, "list[ExperimentResult] | None", "str | None"], None]


class Executor(Protocol):
    """Trains jobs and reports each one's outcome through ``done`` as it finishes; the driver
    (``run_sweep``) writes every folder. ``run`` returns True when ``stop`` ended it early.
    ``begin(job)`` is called when a job starts where the driver can see it (in this process);
    ``done`` calls it itself for a job it has not seen start. ``parallel``: how many jobs run
    at once; ``parts``: the packs are split into at least that many jobs (where the points
    allow it), so that a pack can train on several machines at once."""

    parallel: int
    parts: int
    memory: int | None  # what sizes the packs (a GPU's bytes); None: this machine's memory
    notes: list[str]  # what the user should know of where the jobs run (no error)

    def run(
        self,
        jobs: Sequence[Job],
        begin: Callable[[Job], None],
        done: Outcome,
        stop: Callable[[], bool] | None,
    ) -> bool: ...

    def write(self, items: Sequence[Item]) -> list[Written]:
        """Write a finished job's folders (``writing.write_points``'s items and answers), as
        the executor can best afford while other jobs train."""

    def close(self) -> None:
        """Release what the executor holds (a Ray instance it started); called once."""


class LocalExecutor:
    """Job after job in this process, with each job's metrics flushed to its folders as it
    trains (a killed sweep keeps them) and, with ``progress``, a bar per job on stderr."""

    parallel = 1
    parts = 1
    memory: int | None = None

    def __init__(self, progress: bool = False) -> None:
        self.progress = progress
        self.notes: list[str] = []

    def close(self) -> None:
        pass

    def write(self, items: Sequence[Item]) -> list[Written]:
        from aaf_cli.sweeps.writing import write_points

        return write_points(items)  # one job at a time: every core is free for it

    def run(
        self,
        jobs: Sequence[Job],
        begin: Callable[[Job], None],
        done: Outcome,
        stop: Callable[[], bool] | None,
    ) -> bool:
        for job in jobs:
            if stop is not None and stop():
                return True
            begin(job)
            try:
                results = self._train(job, stop)
            except AafError as exc:
                done(job, None, str(exc))
                continue
            except Exception as exc:  # torch out of memory, a bug: this job fails, not the sweep
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                done(job, None, f"training failed: {type(exc).__name__}: {first}")
                continue
            done(job, results, None)
            if results and results[0].result.interrupted:
                return True
        return False

    def _train(self, job: Job, stop: Callable[[], bool] | None) -> list[ExperimentResult]:
        from aaf_cli.experiment import members
        from aaf_cli.pipeline import FLUSH_SECONDS, Flusher

        flushers = [
            Flusher(cfg, folder, members(cfg), FLUSH_SECONDS, None)
            for folder, cfg in zip(job.folders, job.configs)
        ]
        bar: Any = nullcontext(None)
        if self.progress:
            from aaf_cli.progress import live_progress

            shown = job.configs[0]
            if len(job.configs) > 1:
                shown = shown.model_copy(update={"name": f"{len(job.configs)} points packed"})
            bar = live_progress(shown)
        with bar as callbacks:

            def on_log(records: list[LogRecord]) -> None:
                for flusher, record in zip(flushers, records):
                    flusher(record)
                if callbacks is not None:
                    callbacks.on_log(records[0])

            def on_tuning_log(records: list[LogRecord]) -> None:
                if callbacks is not None:
                    callbacks.on_log(records[0])

            from aaf_cli.sweeps.packing import train_pack

            return train_pack(
                job.configs,
                labels=job.labels,
                on_log=on_log,
                stop=stop,
                on_tuning_log=on_tuning_log,
                on_phase=callbacks.on_phase if callbacks is not None else None,
            )


def make_executor(
    executor: str,
    *,
    progress: bool = False,
    ray_address: str | None = None,
    max_parallel: int | None = None,
    ray_ship_code: bool = False,
    devices: Sequence[str] = ("cpu",),
) -> Executor:
    """``local`` (in this process) or ``ray`` (``aaf[ray]``; ``devices``: the points'
    ``device`` settings, checked on the nodes); a bad choice is a UsageError."""
    if executor == "local":
        if ray_address is not None:
            raise UsageError("--ray-address needs --executor ray")
        if max_parallel is not None:
            raise UsageError("--max-parallel needs --executor ray")
        if ray_ship_code:
            raise UsageError("--ray-ship-code needs --executor ray")
        return LocalExecutor(progress)
    if executor == "ray":
        from aaf_cli.sweeps.cluster import RayExecutor

        return RayExecutor(ray_address, max_parallel, ship=ray_ship_code, devices=devices)
    raise UsageError(f"--executor must be local or ray (got {executor!r})")


def run_sweep(
    plan: SweepPlan,
    runs_dir: Path,
    *,
    metric: str | None = None,
    force: bool = False,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
    on_point: Callable[[PointEvent], None] | None = None,
    resume: tuple[Path, SweepRecord] | None = None,
    pack: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
    max_parallel: int | None = None,
    ray_ship_code: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> Path:
    """Run the points that are not done; return the sweep folder.

    Points that differ only in per-model settings train as one ensemble (``packing``; ``pack``
    False trains each alone), job after job in this process (``executor`` ``local``) or as
    parallel Ray tasks (``ray``, ``sweeps.cluster``). A new sweep's folder is made only after
    every point passed every check and the executor started. ``sweep.yaml`` and ``points.csv``
    are rewritten after each job; ``sweep.png`` at the end. ``stop`` (polled every step, as
    ``aaf run`` does) ends the current job after its current step and leaves the rest pending.
    A job that raises one of aaf's errors marks its points ``failed`` (their folders removed)
    and the sweep goes on. ``on_note`` is told what the user should know but is no error (a
    cluster without the GPUs ``device: auto`` would use). The driver holds the folder's
    ``sweep.lock`` (``sweeps.lock``) from before anything in it changes (a resumed sweep: before
    the checks) to the end: a second driver of the folder is refused, and taking over the lock
    of a driver that died is a note (with no ``on_note``, a ``SweepLockWarning``).
    """
    if metric is not None and metric not in METRICS:
        raise UsageError(f"--metric must be final or best (got {metric!r})")
    if max_parallel is not None and max_parallel < 1:
        raise UsageError(f"--max-parallel must be at least 1 (got {max_parallel})")
    from aaf_cli.sweeps.lock import SweepLock

    lock = SweepLock(resume[0], on_note) if resume is not None else None
    try:
        if lock is not None:  # a resumed sweep: before anything in its folder changes
            lock.acquire()
        check_plan(plan, force, pack, device_here=executor != "ray")
        runner = make_executor(
            executor,
            progress=progress,
            ray_address=ray_address,
            max_parallel=max_parallel,
            ray_ship_code=ray_ship_code,
            devices=sorted({c.device for c in plan.configs}),
        )
        if stop is not None and stop():  # Ctrl-C while the executor started: nothing is made
            runner.close()
            raise KeyboardInterrupt
        for note in runner.notes:
            if on_note is not None:
                on_note(note)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if resume is None:
        try:
            folder = new_run_dir(Path(runs_dir), plan.name)
            lock = SweepLock(folder, on_note).acquire()
        except BaseException:
            runner.close()
            raise
        record = new_record(plan, metric or "final")
        # sweep.yaml at once: it marks the folder as a sweep for aaf list.
        records.write_state(folder, record)
    else:
        folder, record = resume
        record.metric = metric or record.metric  # a resumed sweep keeps its figure's metric
    count = len(record.points)
    entries = {e.index: e for e in record.points}
    pending = [
        e.index for e in record.points if records.point_status(folder / e.folder) not in DONE
    ]
    done_before = count - len(pending)
    from aaf_cli.sweeps.packing import Pack

    parts = runner.parts
    jobs = [
        Job(
            p,
            tuple(plan.configs[i] for i in p.points),
            tuple(plan.points[i].label for i in p.points),
            tuple(folder / entries[i].folder for i in p.points),
        )
        for p in plan_jobs(plan, pending, pack, parts, runner.memory)
    ]
    started: dict[int, tuple[datetime, float]] = {}

    # The record and the progress callbacks are shared by the executor's loop (``begin``) and
    # its writer thread (``done``): one at a time. A job's folders are written outside it.
    state = threading.RLock()

    def begin(job: Job) -> None:
        from aaf_cli.pipeline import start_run

        with state:
            for i, path, cfg, label in zip(job.pack.points, job.folders, job.configs, job.labels):
                if path.exists():
                    shutil.rmtree(path)  # a run cut off before its summary: it starts again
                path.mkdir(parents=True)
                start_run(path, cfg, plan.base_source, plan.point_overrides(i))
                entries[i].status, entries[i].error = "running", None
                started[i] = (datetime.now(), time.monotonic())
                if on_point is not None:
                    on_point(PointEvent("start", i, count, label, path, done_before=done_before))

    def done(job: Job, results: list[ExperimentResult] | None, error: str | None) -> None:
        with state:
            for k, (i, path, label) in enumerate(zip(job.pack.points, job.folders, job.labels)):
                if i not in started:  # finished by a worker before the driver saw it start
                    begin(replace(job, pack=Pack((i,), 0), configs=(job.configs[k],),
                                  labels=(label,), folders=(path,)))  # fmt: skip
            # The job's time, from its first point's start to its results: one for a pack.
            end = job.finished if job.finished is not None else time.monotonic()
            trained = end - min(started[i][1] for i in job.pack.points)
        if results is None:
            written: list[Written] = [(None, error or "failed")] * len(job.folders)
        else:  # as the executor affords it while its other jobs train
            written = runner.write(
                [
                    (path, r, started[i][0])
                    for i, path, r in zip(job.pack.points, job.folders, results)
                ]
            )
        with state:
            for i, path, label, (summary, failure) in zip(
                job.pack.points, job.folders, job.labels, written
            ):
                entry = entries[i]
                if summary is None:
                    shutil.rmtree(path, ignore_errors=True)
                    entry.status, entry.error = "failed", failure
                else:
                    entry.status, entry.error = str(summary.get("status", "completed")), None
                if on_point is not None:
                    on_point(
                        PointEvent(
                            "done", i, count, label, path, entry.status, trained,
                            tuple((summary or {}).get("comparisons", [])), entry.error,
                            len(job.pack.points), done_before,
                        )
                    )  # fmt: skip
            records.write_state(folder, record)

    stopped = False
    try:
        try:
            stopped = runner.run(jobs, begin, done, stop)
        finally:
            runner.close()
        if plan.protocol is not None and not stopped:
            stopped = _tuned_phase(plan, folder, record, stop, progress)
    except KeyboardInterrupt:
        stopped = True  # a second Ctrl-C aborts at once: the sweep was still interrupted
        raise
    finally:
        statuses = [records.point_status(folder / p.folder) for p in record.points]
        if plan.protocol is not None:
            statuses.append(records.point_status(folder / "tuned"))
        if all(s in DONE for s in statuses):
            record.status = "completed"
        elif stopped:
            record.status = "interrupted"
        elif any(p.status == "failed" for p in record.points) or (
            (record.extra.get("tuned") or {}).get("status") == "failed"
        ):
            record.status = "failed"
        else:
            record.status = "partial"
        try:
            rows = records.write_state(folder, record)
            _figures(folder, record, rows)
        finally:
            if lock is not None:
                lock.release()
    return folder


def quantity_of(record: SweepRecord) -> str:
    """What the sweep's test metric is (its problem's: a PDE run's relative L2 error, a
    regression's test MSE)."""
    return facts_of(record.base.get("resolved") or {}).metric


def _figures(folder: Path, record: SweepRecord, rows: list[dict[str, Any]]) -> None:
    """``sweep.png``, and the heat maps of a two-key grid. A figure that cannot be drawn
    (matplotlib's own limits) is left out with a warning: every point is already written, and
    a drawing never changes a sweep's outcome."""
    import warnings

    from aaf_cli.sweeps.figure import HEATMAP_FILE, draw, draw_heatmap

    grid = [a["key"] for a in record.axes if a.get("kind", "grid") == "grid"]
    heat_keys = record.keys if grid == record.keys else []
    title = _title(record)
    quantity = quantity_of(record)
    # A tuned sweep: each variant's choice marked, the evaluation's verdict under the title.
    protocol, tuned = record.extra.get("protocol") or {}, record.extra.get("tuned") or {}
    chosen = tuned.get("chosen") if record.keys and protocol.get("tune") == record.keys[0] else None
    try:
        draw(
            rows, record.keys, folder / FIGURE_FILE, title, record.metric, quantity,
            chosen, tuned.get("verdict") or (),
        )  # fmt: skip
    except (ValueError, MemoryError, OverflowError) as exc:
        warnings.warn(f"{folder / FIGURE_FILE}: not drawn ({exc})", stacklevel=2)
    try:
        draw_heatmap(rows, heat_keys, folder / HEATMAP_FILE, title, record.metric, quantity)
    except (ValueError, MemoryError, OverflowError) as exc:
        warnings.warn(f"{folder / HEATMAP_FILE}: not drawn ({exc})", stacklevel=2)


def _tuned_phase(
    plan: SweepPlan,
    folder: Path,
    record: SweepRecord,
    stop: Callable[[], bool] | None,
    progress: bool,
) -> bool:
    """The protocol's phase 2 once every tuning point is done: each variant's choice, then the
    evaluation run in ``tuned/`` (rerun unless complete); ``tuned.csv`` and sweep.yaml's
    ``tuned`` entry. True when the run was interrupted."""
    from aaf_cli.pipeline import execute
    from aaf_cli.runs import RunFolder
    from aaf_cli.sweeps import tuned

    protocol = plan.protocol
    assert protocol is not None
    paths = [folder / p.folder for p in record.points]
    if not all(records.point_status(p) in DONE for p in paths):
        return False  # a failed tuning point: no choice can be made
    values = [p.values[protocol.key] for p in plan.points]
    summaries = [RunFolder(p).summary or {} for p in paths]
    choice = tuned.choose(protocol.key, values, summaries)
    names = [v.name for v in plan.base.variants]
    cfg, sets = tuned.eval_config(plan.base_data, plan.overrides, protocol, names, choice.chosen)
    path = folder / tuned.TUNED_DIR
    interrupted = False
    if records.point_status(path) not in DONE:
        if stop is not None and stop():
            return True
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        bar: Any = nullcontext(None)
        if progress:
            from aaf_cli.progress import live_progress

            bar = live_progress(cfg)
        try:
            with bar as callbacks:
                execute(
                    cfg, folder, plan.base_source, sets,
                    on_log=callbacks.on_log if callbacks is not None else None,
                    stop=stop, force=True, folder=path,
                )  # fmt: skip
        except AafError as exc:
            shutil.rmtree(path, ignore_errors=True)
            record.extra["tuned"] = {"status": "failed", "error": str(exc)}
            return False
        interrupted = records.point_status(path) == "interrupted"
    record.extra["tuned"] = tuned.write_tuned(folder, protocol, values, choice, sets)
    return interrupted


def _title(record: SweepRecord) -> str:
    resolved = record.base.get("resolved") or {}
    what = problem_title(resolved)
    layers = "x".join(str(w) for w in (resolved.get("model") or {}).get("layers", []))
    activation = (resolved.get("model") or {}).get("activation", "")
    steps = (resolved.get("train") or {}).get("steps")
    return f"sweep {record.name}: {what} · [{layers}] {activation} · {steps} steps"
