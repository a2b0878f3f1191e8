"""Run folders: naming, atomic writing, reading back.

Layout of ``runs/<YYYY-MM-DD_HH-MM-SS>_<name>[-N]/``: ``config.yaml``, ``metrics.csv``,
``aggregates.csv``, ``timing.csv``, ``fit.csv``, ``summary.json``, ``loss_curves.png``, ``fit.png``,
``slopes.png`` and ``checkpoints/<variant>.pt``. Every file is written under a temporary name and
renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aaf_cli.results import Band, Series

SUMMARY_FORMAT = 1
METRICS_FORMAT = 1
METRICS_HEADER = f"# aaf metrics format {METRICS_FORMAT}"
METRICS_COLUMNS = [
    "step",
    "variant",
    "seed",
    "train_loss",
    "test_loss",
    "slope",
    "diverged",
]
TIMING_COLUMNS = ["step", "variant", "seconds"]
AGGREGATE_COLUMNS = ["variant", "metric", "step", "median", "low", "high", "band", "seeds"]


def new_run_dir(runs_dir: Path, name: str, now: datetime | None = None) -> Path:
    """Create and return a fresh run folder; a clash gets ``-2``, ``-3``... (race-free mkdir)."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    base = f"{stamp}_{name}"
    for k in range(1, 10_000):
        folder = runs_dir / (base if k == 1 else f"{base}-{k}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RuntimeError(f"could not find a free run folder name for {base} in {runs_dir}")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _num(value: float) -> str:
    """Shortest text that reads back as the same float (repr), 'nan'/'inf' as such."""
    return repr(float(value))


def metrics_csv(series: Iterable[Series]) -> str:
    """Long format, one row per (step, variant, seed), in step order.

    Deterministic: the same config and seeds give the same file byte for byte on one machine.
    Wall-clock times, which never repeat, go to ``timing.csv``.
    """
    out = io.StringIO()
    out.write(METRICS_HEADER + "\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(METRICS_COLUMNS)
    rows = []
    for s in series:
        for i, step in enumerate(s.steps):
            diverged = int(s.diverged_at is not None and step >= s.diverged_at)
            rows.append((step, s.variant, s.seed, s.train[i], s.test[i], s.slope[i], diverged))
    order = {name: k for k, name in enumerate(dict.fromkeys(s.variant for s in series))}
    rows.sort(key=lambda r: (r[0], order[r[1]], r[2]))
    for step, variant, seed, train, test, slope, diverged in rows:
        writer.writerow([step, variant, seed, _num(train), _num(test), _num(slope), diverged])
    return out.getvalue()


def timing_csv(series: Iterable[Series]) -> str:
    """Seconds since training started at every logged step, per variant."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TIMING_COLUMNS)
    seen: set[str] = set()
    for s in series:
        if s.variant in seen:
            continue
        seen.add(s.variant)
        for step, t in zip(s.steps, s.time):
            writer.writerow([step, s.variant, f"{t:.6f}"])
    return out.getvalue()


def read_metrics(path: Path) -> list[Series]:
    """Parse ``metrics.csv`` back into per-model series (in first-appearance order)."""
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as fh:
        first = fh.readline().strip()
        if first != METRICS_HEADER:
            raise ValueError(f"unknown metrics format (first line {first[:40]!r})")
        reader = csv.DictReader(fh)
        if reader.fieldnames != METRICS_COLUMNS:
            raise ValueError(f"unexpected columns {reader.fieldnames}")
        series: dict[tuple[str, int], Series] = {}
        for row in reader:
            key = (row["variant"], int(row["seed"]))
            s = series.get(key)
            if s is None:
                s = series[key] = Series(*key)
            step = int(row["step"])
            s.steps.append(step)
            s.train.append(float(row["train_loss"]))
            s.test.append(float(row["test_loss"]))
            s.slope.append(float(row["slope"]))
            if row["diverged"] == "1" and s.diverged_at is None:
                s.diverged_at = step
    return list(series.values())


def aggregates_csv(bands: Mapping[str, Mapping[str, Band]]) -> str:
    """Exactly the lines and bands the loss figure draws."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(AGGREGATE_COLUMNS)
    for variant, metrics in bands.items():
        for metric, band in metrics.items():
            for step, med, low, high in zip(band.steps, band.median, band.low, band.high):
                writer.writerow(
                    [variant, metric, step, _num(med), _num(low), _num(high), band.kind, band.seeds]
                )
    return out.getvalue()


def table_csv(columns: Mapping[str, Sequence[float]]) -> str:
    """Columns of equal length as CSV (used for ``fit.csv``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(columns))
    for row in zip(*columns.values()):
        writer.writerow([_num(v) for v in row])
    return out.getvalue()


def jsonable(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")
