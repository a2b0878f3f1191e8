"""The sweep folder: ``runs/<YYYY-MM-DD_HH-MM-SS>_<name>/``.

- ``sweep.yaml``: the resolved sweep: the base config (as given and resolved), the axes, and
  every point's values, overrides, variants and status;
- ``points.csv``: one row per point x variant: the swept values, status, folder, seeds,
  medians and intervals, steps to threshold, the paired result against the point's baseline;
- ``sweep.png``: the metric against the first swept key (``figure.py``);
- ``points/<NNN>/``: each point's ordinary run folder (``aaf show``/``compare`` read it).

``sweep.yaml`` and ``points.csv`` are rewritten atomically after every point, so a killed sweep
keeps its finished points; a point is done when its folder has a ``summary.json`` of a run that
was not interrupted. Torch-free: listing and showing sweeps stays light.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from aaf_cli.errors import RunError
from aaf_cli.problems import problem_label
from aaf_cli.runs import (
    FOLDER_PATTERN,
    SWEEP_FILE,
    RunFolder,
    csv_buffer,
    find_runs,
    is_sweep_folder,
    num_text,
    write_atomic,
)
from aaf_cli.stats import reported_p, t_mean_ci, tail_rule
from aaf_cli.sweeps.spec import value_text

SWEEP_FORMAT = 1
POINTS_FILE = "points.csv"
FIGURE_FILE = "sweep.png"
POINTS_DIR = "points"
POINTS_FORMAT = 1
#: Point statuses that count as done (a run that diverged finished: divergence is a result).
DONE = ("completed", "diverged")
INTERVAL_RULE = (
    "geomean and ci: geometric mean over the non-diverged seeds and its 95% Student t interval "
    "(t on log10 of the per-seed values)"
)
#: The paired result against the baseline, in points.csv and tuned.csv.
PAIRED_COLUMNS = [
    "baseline",
    "wins",
    "pairs",
    "ratio",
    "ratio_ci_low",
    "ratio_ci_high",
    "p",
    "verdict",
]
#: The test metric each sweep metric reads: ``final`` the tail value, ``best`` the value at
#: the step of the lowest validation loss (early stopping chosen on validation data).
METRIC_PREFIX = {"final": "final_test", "best": "test_at_best_val"}
METRIC_COLUMNS = [
    "seeds",
    "diverged",
    "final_test_geomean",
    "final_test_ci_low",
    "final_test_ci_high",
    "test_at_best_val_geomean",
    "test_at_best_val_ci_low",
    "test_at_best_val_ci_high",
    "steps_to_threshold",
    "never_reached",
    *PAIRED_COLUMNS,
    "error",
]


@dataclass
class PointEntry:
    """One point as ``sweep.yaml`` records it."""

    index: int
    folder: str  # relative to the sweep folder: points/003
    values: dict[str, Any]
    overrides: list[str]
    variants: list[str]
    baseline: str
    status: str = "pending"
    error: str | None = None

    def record(self) -> dict[str, Any]:
        out = {
            "index": self.index,
            "folder": self.folder,
            "values": self.values,
            "overrides": self.overrides,
            "variants": self.variants,
            "baseline": self.baseline,
            "status": self.status,
        }
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class SweepRecord:
    """``sweep.yaml``: everything needed to read the sweep back and to resume it."""

    name: str
    created: str
    source: str
    base: dict[str, Any]  # source, overrides, given (the mapping as given), resolved
    axes: list[dict[str, Any]]
    samples: int | None
    sweep_seed: int
    points: list[PointEntry]
    status: str = "running"
    metric: str = "final"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return [str(a["key"]) for a in self.axes]

    def to_yaml(self) -> str:
        data = {
            "format_version": SWEEP_FORMAT,
            "name": self.name,
            "status": self.status,
            "created": self.created,
            "source": self.source,
            "metric": self.metric,
            "axes": self.axes,
            "samples": self.samples,
            "sweep_seed": self.sweep_seed,
            "base": self.base,
            "points": [p.record() for p in self.points],
            **self.extra,
        }
        head = (
            "# aaf sweep, resolved: the base config, the axes and every point.\n"
            "# aaf sweep --resume <this folder> runs the points that are not done.\n"
        )
        return head + yaml.safe_dump(data, sort_keys=False, width=100)


def point_folder(index: int, count: int) -> str:
    """``points/003``: zero-padded to three digits, or more for large sweeps."""
    return f"{POINTS_DIR}/{index:0{max(3, len(str(max(count - 1, 0))))}d}"


def point_status(path: Path) -> str:
    """``pending`` (no folder yet), ``incomplete`` (a run cut off before its summary), else the
    run's own status: ``completed``, ``diverged`` or ``interrupted``."""
    if not path.is_dir() or not any(path.iterdir()):
        return "pending"
    try:
        return RunFolder(path).status
    except RunError:
        return "unreadable"


def read_record(path: Path) -> SweepRecord:
    """Read ``sweep.yaml`` of a sweep folder.

    Raises:
        RunError: not a sweep folder, or its ``sweep.yaml`` is corrupt or of an unknown format.
    """
    path = Path(path)
    file = path / SWEEP_FILE
    if not path.is_dir():
        raise RunError(f"{path}: no such sweep folder")
    if not file.is_file():
        raise RunError(f"{path}: not a sweep folder (no {SWEEP_FILE})")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise RunError(f"{path}: {SWEEP_FILE} is corrupt (not readable YAML)") from None
    if not isinstance(data, dict) or data.get("format_version") != SWEEP_FORMAT:
        version = data.get("format_version") if isinstance(data, dict) else None
        raise RunError(
            f"{path}: {SWEEP_FILE} has unknown format version {version!r} "
            f"(this aaf reads {SWEEP_FORMAT})"
        )
    try:
        points = [
            PointEntry(
                index=int(p["index"]),
                folder=str(p["folder"]),
                values=dict(p["values"]),
                overrides=[str(o) for o in p["overrides"]],
                variants=[str(v) for v in p["variants"]],
                baseline=str(p["baseline"]),
                status=str(p.get("status", "pending")),
                error=p.get("error"),
            )
            for p in data["points"]
        ]
        known = {
            "format_version", "name", "status", "created", "source", "metric", "axes",
            "samples", "sweep_seed", "base", "points",
        }  # fmt: skip
        return SweepRecord(
            name=str(data["name"]),
            created=str(data["created"]),
            source=str(data["source"]),
            base=dict(data["base"]),
            axes=[dict(a) for a in data["axes"]],
            samples=data.get("samples"),
            sweep_seed=int(data.get("sweep_seed") or 0),
            points=points,
            status=str(data.get("status", "running")),
            metric=str(data.get("metric", "final")),
            extra={k: v for k, v in data.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{path}: {SWEEP_FILE} is corrupt (missing or bad {exc})") from None


# --------------------------------------------------------------------------------------------
# points.csv


def _log_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Geometric mean and the 95% t interval of the mean log10 (NaN where undefined)."""
    logs = [math.log10(v) for v in values if math.isfinite(v) and v > 0]
    if not logs:
        return math.nan, math.nan, math.nan
    mean = sum(logs) / len(logs)
    lo, hi = t_mean_ci(logs)
    if not math.isfinite(lo):
        return 10**mean, math.nan, math.nan
    return 10**mean, 10**lo, 10**hi


def _stat(value: Any) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def point_rows(sweep: Path, record: SweepRecord) -> list[dict[str, Any]]:
    """The rows of ``points.csv``, typed: one per point and variant, read from the point
    folders (``status`` is what is on disk now; ``error`` what the sweep recorded)."""
    rows = []
    for p in record.points:
        folder = sweep / p.folder
        status = point_status(folder)
        if status == "pending" and p.status == "failed":
            status = "failed"
        summary: dict[str, Any] | None = None
        if status in (*DONE, "interrupted"):
            summary = RunFolder(folder).summary
        variants = list(summary["variants"]) if summary else p.variants
        comparisons = {c["variant"]: c for c in (summary or {}).get("comparisons", [])}
        for name in variants:
            row: dict[str, Any] = {"point": p.index, **{k: p.values.get(k) for k in record.keys}}
            row.update({"variant": name, "status": status, "folder": p.folder})
            row.update({c: None for c in METRIC_COLUMNS})
            row["baseline"] = summary["baseline"] if summary else p.baseline
            row["error"] = p.error
            if summary is not None:
                _fill(row, summary, name, comparisons.get(name))
            rows.append(row)
    return rows


def _fill(
    row: dict[str, Any], summary: Mapping[str, Any], name: str, c: Mapping[str, Any] | None
) -> None:
    v = summary["variants"][name]
    kept = [o for o in v.get("per_seed", []) if o.get("diverged_at") is None]
    row["seeds"] = int(v["seeds"])
    row["diverged"] = int(v.get("diverged") or 0)
    for metric in METRIC_PREFIX.values():
        values = [float(o[metric]) for o in kept if _stat(o.get(metric)) is not None]
        geomean, lo, hi = _log_interval(values)
        row[f"{metric}_geomean"] = _stat(geomean)
        row[f"{metric}_ci_low"] = _stat(lo)
        row[f"{metric}_ci_high"] = _stat(hi)
    reach = v.get("steps_to_threshold") or {}
    row["steps_to_threshold"] = _stat(reach.get("median"))
    row["never_reached"] = reach.get("never")
    if c is not None and name != summary["baseline"]:
        row["wins"], row["pairs"] = c.get("wins"), c.get("pairs")
        row["ratio"] = _stat(c.get("ratio_geomean"))
        row["ratio_ci_low"] = _stat(c.get("ratio_ci_low"))
        row["ratio_ci_high"] = _stat(c.get("ratio_ci_high"))
        row["p"] = _stat(reported_p(c))
        row["verdict"] = c.get("verdict")


def _csv_cell(value: Any, swept: bool) -> str:
    if value is None:
        return ""
    if swept:
        return value_text(value)
    if isinstance(value, float):
        return num_text(value) if math.isfinite(value) else ""
    return str(value)


def points_csv(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """``points.csv``: a format line (with the rules behind the numbers), then the rows."""
    columns = ["point", *keys, "variant", "status", "folder", *METRIC_COLUMNS]
    line = (
        f"# aaf sweep points format {POINTS_FORMAT}; final: {tail_rule()}; best: the minimum "
        f"over logged points; median: over the non-diverged seeds; {INTERVAL_RULE}; ratio and "
        "p: the point's variant against its baseline, paired by seed (t interval on log "
        "ratios; Wilcoxon p, Holm-adjusted over the point's variants)"
    )
    out, writer = csv_buffer(line, columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c), c in keys) for c in columns])
    return out.getvalue()


def write_state(sweep: Path, record: SweepRecord) -> list[dict[str, Any]]:
    """Rewrite ``sweep.yaml`` (statuses from the point folders) and ``points.csv`` atomically;
    return the rows."""
    for p in record.points:
        status = point_status(sweep / p.folder)
        p.status = "failed" if status == "pending" and p.status == "failed" else status
    write_atomic(sweep / SWEEP_FILE, record.to_yaml())
    rows = point_rows(sweep, record)
    write_atomic(sweep / POINTS_FILE, points_csv(rows, record.keys))
    return rows


# --------------------------------------------------------------------------------------------
# Finding and listing sweeps


def find_sweeps(runs_dir: Path) -> list[Path]:
    """Every sweep folder directly under ``runs_dir``, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted((p for p in runs_dir.iterdir() if is_sweep_folder(p)), key=_key, reverse=True)


def _key(path: Path) -> tuple[str, int, str]:
    match = FOLDER_PATTERN.match(path.name)
    suffix = re.search(r"-(\d+)$", path.name)
    return (match.group(1) if match else "", int(suffix.group(1)) if suffix else 1, path.name)


def find_sweep(spec: str, runs_dir: Path) -> Path | None:
    """The sweep folder a RUN argument names, or None when it names no sweep: a sweep folder's
    path, a folder name under ``runs_dir``, or a sweep name there (its newest sweep) that no
    run also has."""
    for path in (Path(spec), Path(runs_dir) / spec):
        if is_sweep_folder(path):
            return path
    if Path(spec).exists() or any(c in spec for c in "*?[/"):
        return None
    pattern = re.compile(re.escape(spec) + r"(-\d+)?")

    def name(path: Path) -> str:
        match = FOLDER_PATTERN.match(path.name)
        return match.group(2) if match else path.name

    if any(pattern.fullmatch(name(r.path)) for r in find_runs(Path(runs_dir))):
        return None
    named = [p for p in find_sweeps(Path(runs_dir)) if pattern.fullmatch(name(p))]
    return named[0] if named else None


def overall_status(recorded: str, done: bool) -> str:
    """A sweep's status, one rule for ``aaf list``, ``aaf show`` and the API: ``completed``
    when every point (and a tuned evaluation run) is done, else what the sweep recorded when it
    stopped (``interrupted``, ``failed``), else ``partial``."""
    if done:
        return "completed"
    return recorded if recorded in ("interrupted", "failed") else "partial"


def describe_sweep(path: Path) -> dict[str, Any]:
    """One entry of ``aaf list`` for a sweep: its name, point count and status (``completed``
    when every point is done, else ``partial``), per variant the lowest final test metric
    (geometric mean over seeds) of its points."""
    record = read_record(path)
    statuses = [point_status(path / p.folder) for p in record.points]
    done = sum(1 for s in statuses if s in DONE)
    all_done = done == len(record.points)
    if record.extra.get("protocol"):  # a tuned sweep is done when its evaluation run is
        all_done = all_done and point_status(path / "tuned") in DONE
    resolved = record.base.get("resolved") or {}
    seeds = resolved.get("seeds")
    best: dict[str, float] = {}
    duration = 0.0
    for p, status in zip(record.points, statuses):
        if status not in DONE:
            continue
        summary = RunFolder(path / p.folder).summary or {}
        duration += float(summary.get("duration_s") or 0.0)
        for name, v in summary.get("variants", {}).items():
            value = _stat((v.get("final_test") or {}).get("geomean"))
            if value is not None:
                best[name] = min(best.get(name, value), value)
    match = FOLDER_PATTERN.match(path.name)
    started = datetime.strptime(match.group(1), "%Y-%m-%d_%H-%M-%S") if match else None
    variants = list(dict.fromkeys(v for p in record.points for v in p.variants))
    return {
        "folder": str(path),
        "kind": "sweep",
        "name": record.name,
        "started": started.isoformat() if started else None,
        "target": problem_label(resolved),
        "variants": variants,
        "seeds": len(seeds) if isinstance(seeds, list) else seeds,
        "steps": (resolved.get("train") or {}).get("steps"),  # of each point
        "steps_done": (resolved.get("train") or {}).get("steps"),
        "points": len(record.points),
        "points_done": done,
        "keys": record.keys,
        "status": overall_status(record.status, all_done),
        "final_test": best,
        "duration_s": duration if done else None,
    }


def newest_first(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``aaf list`` entries (runs and sweeps) newest first by their folder's timestamp; the
    order given is kept among equal ones."""

    def stamp(entry: Mapping[str, Any]) -> str:
        match = FOLDER_PATTERN.match(Path(str(entry.get("folder", ""))).name)
        return match.group(1) if match else ""

    return sorted((dict(e) for e in entries), key=stamp, reverse=True)
