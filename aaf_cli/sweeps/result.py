"""``Sweep``: what ``aaf_cli.sweep`` returns, and what ``aaf show SWEEP`` prints.

Read from the sweep folder (``sweep.yaml``, the point folders), so a sweep opened later reads
the same as the one just run; a dry run's ``Sweep`` has no folder and every point ``planned``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aaf_cli.errors import UsageError
from aaf_cli.sweeps import records
from aaf_cli.sweeps.records import DONE, FIGURE_FILE, POINTS_FILE
from aaf_cli.sweeps.spec import Point, short_text

if TYPE_CHECKING:
    from aaf_cli.api import Run
    from aaf_cli.sweeps.local import SweepCheck
    from aaf_cli.sweeps.spec import SweepPlan


@dataclass(frozen=True)
class SweepPoint:
    """One point: its swept values, its status and its run folder (None in a dry run)."""

    index: int
    values: dict[str, Any]
    status: str  # completed, diverged, interrupted, incomplete, failed, pending or planned
    folder: Path | None
    error: str | None = None

    @property
    def label(self) -> str:
        return Point(self.index, self.values).label

    @property
    def run(self) -> Run | None:
        """The point's run (``aaf_cli.Run``), or None while it has none."""
        if self.folder is None or self.status in ("pending", "failed", "planned"):
            return None
        from aaf_cli.api import Run
        from aaf_cli.runs import RunFolder

        return Run(RunFolder(self.folder))


@dataclass(frozen=True)
class Tuned:
    """The tuned-baseline protocol's outcome (``sweeps.tuned``).

    Attributes:
        key: the tuned key (``train.lr``).
        tune_seeds, eval_seeds: the seeds of each phase (disjoint).
        criterion: how each variant chose, in words.
        chosen: each tuned variant's chosen value.
        criteria: per variant, the criterion at each candidate value (its text).
        status: the evaluation run's status (``pending`` before it ran, ``failed``).
        folder: the evaluation run's folder (``<sweep>/tuned``).
        verdict: the headline sentences, one per compared variant (empty until it ran).
        notes: warnings, e.g. a choice at the edge of the grid.
    """

    key: str
    tune_seeds: list[int]
    eval_seeds: list[int]
    criterion: str
    chosen: dict[str, Any]
    criteria: dict[str, dict[str, float]]
    status: str
    folder: Path | None
    verdict: list[str]
    error: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def run(self) -> Run | None:
        """The evaluation run (``aaf_cli.Run``), or None until it is done."""
        if self.folder is None or self.status not in DONE:
            return None
        from aaf_cli.api import Run
        from aaf_cli.runs import RunFolder

        return Run(RunFolder(self.folder))

    @classmethod
    def of(cls, folder: Path, extra: dict[str, Any]) -> Tuned | None:
        protocol = extra.get("protocol")
        if not protocol:
            return None
        entry = extra.get("tuned") or {}
        status = entry.get("status", "pending")
        path = folder / str(entry.get("folder", "tuned"))
        if status != "failed":
            status = records.point_status(path)
        return cls(
            key=str(protocol["tune"]),
            tune_seeds=list(protocol["tune_seeds"]),
            eval_seeds=list(protocol["eval_seeds"]),
            criterion=str(protocol.get("criterion", "")),
            chosen=dict(entry.get("chosen") or {}),
            criteria={k: dict(v) for k, v in (entry.get("criterion") or {}).items()},
            status=status,
            folder=path,
            verdict=list(entry.get("verdict") or []) if status in DONE else [],
            error=entry.get("error"),
            notes=tuple(str(n) for n in entry.get("notes") or ()),
        )


class Sweep:
    """A sweep: its points, the table of ``points.csv`` and its figure.

    Attributes:
        folder: the sweep folder (None for a dry run).
        name: the sweep's name.
        keys: the swept config keys, in order.
        points: every point, in order.
        table: the rows of ``points.csv`` as dicts (numbers as floats, None where empty).
        status: ``completed``, ``interrupted``, ``failed``, ``partial`` or ``planned``.
        check: the size estimate of the whole sweep (a dry run's; None otherwise).
        tuned: the tuned-baseline protocol's choices, evaluation run and verdict (``Tuned``;
            None for a sweep without ``--tune``).
    """

    def __init__(
        self,
        folder: Path | None,
        name: str,
        keys: list[str],
        points: list[SweepPoint],
        table: list[dict[str, Any]],
        status: str,
        check: SweepCheck | None = None,
        source: str = "",
        base: dict[str, Any] | None = None,
        tuned: Tuned | None = None,
    ) -> None:
        self.folder = folder
        self.name = name
        self.keys = keys
        self.points = points
        self.table = table
        self.status = status
        self.check = check
        self.source = source
        self.base = base or {}
        self.tuned = tuned

    def __repr__(self) -> str:
        return f"Sweep({str(self.folder)!r}, points={len(self.points)}, status={self.status!r})"

    @classmethod
    def open(cls, folder: str | Path) -> Sweep:
        """Read a sweep folder.

        Raises:
            RunError: not a sweep folder, or its files are unreadable.
        """
        folder = Path(folder)
        record = records.read_record(folder)
        rows = records.point_rows(folder, record)
        status_of = {int(r["point"]): str(r["status"]) for r in rows}
        points = [
            SweepPoint(
                p.index,
                p.values,
                status_of.get(p.index, records.point_status(folder / p.folder)),
                folder / p.folder,
                p.error,
            )
            for p in record.points
        ]
        tuned = Tuned.of(folder, record.extra)
        done = all(p.status in DONE for p in points)
        if record.extra.get("protocol"):  # a tuned sweep is done when its evaluation run is
            done = done and tuned is not None and tuned.status in DONE
        status = records.overall_status(record.status, done)
        return cls(
            folder, record.name, record.keys, points, rows, status, None, record.source,
            record.base, tuned,
        )  # fmt: skip

    @classmethod
    def planned(cls, plan: SweepPlan, check: SweepCheck) -> Sweep:
        """A dry run: the points as planned, nothing written."""
        from aaf_cli.pipeline import baseline_of

        points = [SweepPoint(p.index, p.values, "planned", None) for p in plan.points]
        table = [
            {"point": p.index, **p.values, "variant": v.name, "status": "planned",
             "baseline": baseline_of(cfg)}
            for p, cfg in zip(plan.points, plan.configs)
            for v in cfg.variants
        ]  # fmt: skip
        base = {"source": plan.base_source, "overrides": plan.overrides}
        return cls(None, plan.name, plan.keys, points, table, "planned", check, plan.source, base)

    @property
    def figure(self) -> Path | None:
        """``sweep.png`` (None before any point is done, and in a dry run)."""
        if self.folder is None or not (self.folder / FIGURE_FILE).is_file():
            return None
        return self.folder / FIGURE_FILE

    @property
    def points_csv(self) -> Path | None:
        return None if self.folder is None else self.folder / POINTS_FILE

    @property
    def verdicts(self) -> list[str]:
        """Each point's verdict sentences, e.g. 'point 2 (variants.1.n=5): adaptive beats...'."""
        labels = {p.index: p.label for p in self.points}
        return [
            f"point {r['point']} ({labels[int(r['point'])]}): {r['verdict']}"
            for r in self.table
            if r.get("verdict")
        ]

    @property
    def failed(self) -> list[SweepPoint]:
        return [p for p in self.points if p.status == "failed"]

    def describe_values(self) -> list[str]:
        """The axes in words: 'variants.1.n: 1, 2, 5' per key."""
        out = []
        for key in self.keys:
            values = list(dict.fromkeys(short_text(p.values.get(key)) for p in self.points))
            shown = ", ".join(values[:8]) + (
                f", ... ({len(values)} values)" if len(values) > 8 else ""
            )
            out.append(f"{key}: {shown}")
        return out

    def to_pandas(self) -> Any:
        """``table`` as a pandas DataFrame (needs pandas: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame.from_records(self.table)
