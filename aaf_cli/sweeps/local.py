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
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aaf_cli.budget import MAX_HOURS, Estimate, _bytes, _duration
from aaf_cli.config import load_config
from aaf_cli.errors import AafError, ConfigError, UsageError
from aaf_cli.runs import SWEEP_FILE, new_run_dir
from aaf_cli.sweeps import records
from aaf_cli.sweeps.records import DONE, FIGURE_FILE, PointEntry, SweepRecord
from aaf_cli.sweeps.spec import Axis, Point, SweepPlan, build_configs, parse_distribution

METRICS = ("final", "best")


@dataclass(frozen=True)
class SweepCheck:
    """The size of a sweep: each point's estimate, the total, and the soft limits passed."""

    estimates: list[Estimate]
    over_limits: list[str]

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.estimates)

    @property
    def models(self) -> int:
        return sum(e.models for e in self.estimates)

    def describe(self) -> str:
        largest = max(self.estimates, key=lambda e: e.memory_bytes)
        return (
            f"{len(self.estimates)} points, {self.models} models in all: about "
            f"{_duration(self.seconds)} of training one point after another on a quiet machine "
            f"(the largest point needs about {_bytes(largest.memory_bytes)} of memory)"
        )


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


def check_plan(plan: SweepPlan, force: bool = False) -> SweepCheck:
    """Every check ``aaf run`` makes before training, for every point, and the soft limits
    applied to the whole sweep (its total time; each point's own size)."""
    from aaf_cli.checks import preflight

    estimates: list[Estimate] = []
    over: list[str] = []
    for point, cfg in zip(plan.points, plan.configs):
        checked = preflight(cfg, plan.where(point), force=True)  # errors name the point
        estimates.append(checked.estimate)
        over += [f"point {point.index}: {o}" for o in checked.over_limits]
    if plan.evaluation is not None:
        checked = preflight(plan.evaluation, f"{plan.source}: evaluation run", force=True)
        estimates.append(checked.estimate)
        over += [f"evaluation run: {o}" for o in checked.over_limits]
    check = SweepCheck(estimates, over)
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


def _run_point(
    plan: SweepPlan, index: int, path: Path, stop: Callable[[], bool] | None, progress: bool
) -> dict[str, Any]:
    from aaf_cli.pipeline import execute

    cfg = plan.configs[index]
    bar: Any = nullcontext(None)
    if progress:
        from aaf_cli.progress import live_progress

        bar = live_progress(cfg)
    with bar as callbacks:
        report = execute(
            cfg,
            path.parent,
            plan.base_source,
            plan.point_overrides(index),
            on_log=callbacks.on_log if callbacks is not None else None,
            stop=stop,
            force=True,  # the sweep's size was checked as a whole
            folder=path,
        )
    return report.summary


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
) -> Path:
    """Run the points that are not done, one after another; return the sweep folder.

    A new sweep's folder is made only after every point passed every check. ``sweep.yaml``
    and ``points.csv`` are rewritten after each point; ``sweep.png`` at the end. ``stop``
    (polled every step, as ``aaf run`` does) ends the current point after its current step
    and leaves the rest pending. A point whose run raises one of aaf's errors is marked
    ``failed`` (its folder removed) and the sweep goes on.
    """
    if metric is not None and metric not in METRICS:
        raise UsageError(f"--metric must be final or best (got {metric!r})")
    check_plan(plan, force)
    if resume is None:
        folder = new_run_dir(Path(runs_dir), plan.name)
        record = new_record(plan, metric or "final")
        # sweep.yaml at once: it marks the folder as a sweep for aaf list.
        records.write_state(folder, record)
    else:
        folder, record = resume
        record.metric = metric or record.metric  # a resumed sweep keeps its figure's metric
    count = len(record.points)
    stopped = False
    try:
        for entry in record.points:
            path = folder / entry.folder
            if records.point_status(path) in DONE:
                continue
            if stop is not None and stop():
                stopped = True
                break
            if path.exists():
                shutil.rmtree(path)  # a run cut off before its summary: it starts again
            path.mkdir(parents=True)
            label = plan.points[entry.index].label
            entry.status, entry.error = "running", None
            if on_point is not None:
                on_point(PointEvent("start", entry.index, count, label, path))
            started = time.monotonic()
            try:
                summary = _run_point(plan, entry.index, path, stop, progress)
            except AafError as exc:
                shutil.rmtree(path, ignore_errors=True)
                entry.status, entry.error = "failed", str(exc)
                summary = {}
            seconds = time.monotonic() - started
            records.write_state(folder, record)
            if on_point is not None:
                on_point(
                    PointEvent(
                        "done",
                        entry.index,
                        count,
                        label,
                        path,
                        entry.status,
                        seconds,
                        tuple(summary.get("comparisons", [])),
                        entry.error,
                    )
                )
            if entry.status == "interrupted":
                stopped = True
                break
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
        rows = records.write_state(folder, record)
        from aaf_cli.sweeps.figure import draw

        draw(rows, record.keys, folder / FIGURE_FILE, _title(record), record.metric)
    return folder


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
    target = resolved.get("target") or {}
    what = target.get("name") or target.get("expr") or ""
    layers = "x".join(str(w) for w in (resolved.get("model") or {}).get("layers", []))
    activation = (resolved.get("model") or {}).get("activation", "")
    steps = (resolved.get("train") or {}).get("steps")
    return f"sweep {record.name}: {what} · [{layers}] {activation} · {steps} steps"
