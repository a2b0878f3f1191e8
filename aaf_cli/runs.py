"""Run folders: naming, atomic writing, reading back.

Layout of ``runs/<YYYY-MM-DD_HH-MM-SS>_<name>[-N]/``: ``config.yaml``, ``metrics.csv``,
``aggregates.csv``, ``timing.csv``, ``fit.csv``, ``summary.json``, ``loss_curves.png``, ``fit.png``,
``slopes.png`` and ``checkpoints/<variant>.pt``. Every file is written under a temporary name and
renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import glob as globmod
import io
import json
import math
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from aaf_cli.errors import RunError, UsageError
from aaf_cli.results import Band, Series

# 2: "final" values are tail medians (stats.tail_value), "last" values added, comparisons carry
# Holm-adjusted p-values and their interval method. Format 1 (final = last logged point) is
# still read: its tables are recomputed from metrics.csv under the current rules.
# 3: validation losses, the tuning phase, geometric means across seeds, split seeds, verdicts by
# the count of wins and losses. Formats 1 and 2 are read, their tables recomputed from
# metrics.csv under the current rules.
SUMMARY_FORMAT = 3
SUMMARY_FORMATS_READ = (1, 2, 3)
METRICS_FORMAT = 4
METRICS_HEADER = f"# aaf metrics format {METRICS_FORMAT}"
# Format 1 (aaf 0.1 before the adaptive families) had a `slope` column and no `recovery`;
# format 2 had no `val_loss` (read back as NaN); format 3 no `evals` (read back as the step: one
# evaluation per step, as every run before L-BFGS made).
METRICS_READABLE = (1, 2, 3, 4)
METRICS_COLUMNS = [
    "step",
    "variant",
    "seed",
    "train_loss",
    "val_loss",
    "test_loss",
    "recovery",
    "diverged",
    "evals",
]
PARAMETERS_HEADER = "# aaf parameters format 1"
PARAMETERS_COLUMNS = ["step", "variant", "seed", "parameter", "value"]
#: A PDE run's ``terms.csv``: each loss term and identified parameter, long format.
TERMS_HEADER = "# aaf terms format 1"
TERMS_COLUMNS = ("step", "variant", "seed", "name", "value")
TIMING_COLUMNS = ["step", "variant", "seconds"]
AGGREGATE_COLUMNS = ["variant", "metric", "step", "geomean", "low", "high", "band", "seeds"]


def new_run_dir(runs_dir: Path, name: str, now: datetime | None = None) -> Path:
    """Create and return a fresh run folder; a clash gets ``-2``, ``-3``... (race-free mkdir)."""
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--runs-dir {runs_dir}: is a file, expected a folder") from None
    except OSError as exc:
        raise UsageError(f"--runs-dir {runs_dir}: cannot make it ({exc.strerror or exc})") from None
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
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    The temporary name is chosen before anything exists on disk, and the file is created inside
    the ``try``: an exception at any point, a ``KeyboardInterrupt`` raised by a signal handler
    included, leaves the old file or the new one, and never the temporary file.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        # O_EXCL: never reuse a file that is already there; 0o666 less the umask, the mode a
        # plain open() gives.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        # After a successful rename there is nothing left to remove.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def num_text(value: float) -> str:
    """Shortest text that reads back as the same float (repr), 'nan'/'inf' as such."""
    return repr(float(value))


def _cell(value: float) -> str:
    """Empty for "not applicable" (NaN), else the shortest exact text."""
    return "" if math.isnan(value) else num_text(value)


def csv_buffer(version_line: str, columns: Sequence[str]) -> tuple[io.StringIO, Any]:
    """A text buffer and a CSV writer on it, with the format line and column names first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    out.write(version_line + "\n")
    writer.writerow(columns)
    return out, writer


def _variant_order(series: Sequence[Series]) -> dict[str, int]:
    return {name: k for k, name in enumerate(dict.fromkeys(s.variant for s in series))}


def metrics_csv(series: Sequence[Series]) -> str:
    """Long format, one row per (step, variant, seed), in step order.

    ``train_loss`` is the data term (MSE) alone; ``val_loss`` the loss on the validation
    points (what choices read); ``recovery`` is S(a) for variants with slope recovery (empty
    otherwise); ``evals`` the function evaluations that reached the step (the step itself for
    first-order optimisers; L-BFGS's line search takes one or more an iteration).
    Deterministic: the same config and seeds give the same file byte for byte on
    one machine. Wall-clock times, which never repeat, go to ``timing.csv``.
    """
    out, writer = csv_buffer(METRICS_HEADER, METRICS_COLUMNS)
    rows = []
    for s in series:
        for i, step in enumerate(s.steps):
            diverged = int(s.diverged_at is not None and step >= s.diverged_at)
            recovery = s.recovery[i] if i < len(s.recovery) else math.nan
            val = s.val[i] if i < len(s.val) else math.nan
            evals = s.evals[i] if i < len(s.evals) else step
            rows.append(
                (step, s.variant, s.seed, s.train[i], val, s.test[i], recovery, diverged, evals)
            )
    order = _variant_order(series)
    rows.sort(key=lambda r: (r[0], order[r[1]], r[2]))
    for step, variant, seed, train, val, test, recovery, diverged, evals in rows:
        writer.writerow(
            [step, variant, seed, num_text(train), _cell(val), num_text(test), _cell(recovery),
             diverged, evals]
        )  # fmt: skip
    return out.getvalue()


def parameters_csv(series: Sequence[Series]) -> str:
    """The logged activation parameters in long format: step, variant, seed, parameter, value."""
    return long_csv(series, "params", PARAMETERS_HEADER, PARAMETERS_COLUMNS)


def long_csv(series: Sequence[Series], field: str, header: str, columns: Sequence[str]) -> str:
    """A series' name -> values mapping ``field`` (``params``, a PDE run's ``terms``) in long
    format: step, variant, seed, name, value; rows by step, variant (in run order), seed."""
    out, writer = csv_buffer(header, list(columns))
    rows = []
    order = _variant_order(series)
    for s in series:
        for name, values in getattr(s, field).items():
            for step, value in zip(s.steps, values):
                rows.append((step, order[s.variant], s.seed, name, s.variant, value))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    for step, _, seed, name, variant, value in rows:
        writer.writerow([step, variant, seed, name, num_text(value)])
    return out.getvalue()


def read_parameters(path: Path, series: Sequence[Series]) -> None:
    """Fill each series' ``params`` from ``parameters.csv`` (rows of unknown models ignored)."""
    read_long(path, series, "params", PARAMETERS_HEADER, "parameter")


def read_terms(path: Path, series: Sequence[Series]) -> None:
    """Fill each series' ``terms`` from a PDE run's ``terms.csv`` (rows of unknown models
    ignored)."""
    read_long(path, series, "terms", TERMS_HEADER, "name")


def read_long(
    path: Path, series: Sequence[Series], field: str, header: str, name_column: str
) -> None:
    """Fill each series' mapping ``field`` from a file ``long_csv`` wrote (rows of unknown
    models ignored)."""
    index = {(s.variant, s.seed): s for s in series}
    with Path(path).open(encoding="utf-8", newline="") as fh:
        first = fh.readline().strip()
        if first != header:
            raise ValueError(f"unknown format of {Path(path).name} (first line {first[:40]!r})")
        reader = csv.DictReader(fh)
        for row in reader:
            try:
                s = index.get((row["variant"], int(row["seed"])))
                value = float(row["value"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"malformed row at line {reader.line_num}") from None
            if s is not None:
                getattr(s, field).setdefault(row[name_column], []).append(value)


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
    """Parse ``metrics.csv`` back into per-model series (in first-appearance order).

    A file cut short (a run killed mid-write of an older version, or a truncated copy) keeps its
    complete rows; a malformed row raises ``ValueError`` naming its line.
    """
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as fh:
        first = fh.readline().strip()
        if not first.startswith("# aaf metrics format "):
            raise ValueError(f"not an aaf metrics file (first line {first[:40]!r})")
        version = first.rsplit(" ", 1)[-1]
        if version not in {str(v) for v in METRICS_READABLE}:
            raise ValueError(
                f"unknown metrics format version {version!r} (this aaf reads "
                f"{', '.join(str(v) for v in METRICS_READABLE)})"
            )
        reader = csv.DictReader(fh)
        required = ["step", "variant", "seed", "train_loss", "test_loss", "diverged"]
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"missing columns {', '.join(missing)}")
        series: dict[tuple[str, int], Series] = {}
        for row in reader:
            try:
                key = (row["variant"], int(row["seed"]))
                step = int(row["step"])
                train, test = float(row["train_loss"]), float(row["test_loss"])
                recovery = float(row.get("recovery") or "nan")
                val = float(row.get("val_loss") or "nan")
                evals = int(row.get("evals") or step)
            except (TypeError, ValueError):
                raise ValueError(f"malformed row at line {reader.line_num}") from None
            s = series.get(key)
            if s is None:
                s = series[key] = Series(*key)
            s.steps.append(step)
            s.train.append(train)
            s.test.append(test)
            s.recovery.append(recovery)
            s.val.append(val)
            s.evals.append(evals)
            if row["diverged"] == "1" and s.diverged_at is None:
                s.diverged_at = step
    return list(series.values())


def read_timing(path: Path) -> dict[str, dict[int, float]]:
    """``timing.csv`` as variant -> step -> seconds since training started."""
    out: dict[str, dict[int, float]] = {}
    with Path(path).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != TIMING_COLUMNS:
            raise ValueError(f"unexpected columns {reader.fieldnames}")
        for row in reader:
            try:
                out.setdefault(row["variant"], {})[int(row["step"])] = float(row["seconds"])
            except (TypeError, ValueError):
                raise ValueError(f"malformed row at line {reader.line_num}") from None
    return out


def aggregates_csv(bands: Mapping[str, Mapping[str, Band]]) -> str:
    """Exactly the lines and bands the loss figure draws."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(AGGREGATE_COLUMNS)
    for variant, metrics in bands.items():
        for metric, band in metrics.items():
            for step, med, low, high in zip(band.steps, band.center, band.low, band.high):
                writer.writerow(
                    [
                        variant,
                        metric,
                        step,
                        num_text(med),
                        num_text(low),
                        num_text(high),
                        band.kind,
                        band.seeds,
                    ]
                )
    return out.getvalue()


def table_csv(columns: Mapping[str, Sequence[float]]) -> str:
    """Columns of equal length as CSV (used for ``fit.csv``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(columns))
    for row in zip(*columns.values()):
        writer.writerow([num_text(v) for v in row])
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


# --------------------------------------------------------------------------------------------
# Reading run folders back (aaf compare, list, show)

FOLDER_PATTERN = re.compile(r"^(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})_([A-Za-z0-9][A-Za-z0-9_-]*)$")
GLOB_CHARS = frozenset("*?[")


@dataclass
class RunFolder:
    """One run folder as found on disk; every reader of run folders goes through this class.

    ``status`` is ``completed``, ``interrupted`` or ``diverged`` from ``summary.json``, or
    ``incomplete`` when the summary is missing (a run still going, or killed). Problems (a
    corrupt or unknown-format file) raise ``RunError`` naming the folder and the file.
    """

    path: Path

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def started(self) -> datetime | None:
        match = FOLDER_PATTERN.match(self.path.name)
        if match is None:
            return None
        return datetime.strptime(match.group(1), "%Y-%m-%d_%H-%M-%S")

    def _error(self, message: str) -> RunError:
        return RunError(f"{self.path}: {message}")

    @functools.cached_property
    def summary(self) -> dict[str, Any] | None:
        """The parsed ``summary.json``, or None if the run never finished."""
        path = self.path / "summary.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._error(f"summary.json is corrupt ({_reason(exc)})") from None
        if not isinstance(data, dict) or "format_version" not in data:
            raise self._error("summary.json is corrupt (no format_version)")
        if data["format_version"] not in SUMMARY_FORMATS_READ:
            raise self._error(
                f"summary.json has unknown format version {data['format_version']!r} "
                f"(this aaf reads {', '.join(map(str, SUMMARY_FORMATS_READ))})"
            )
        for key in ("status", "variants", "seeds", "steps", "steps_done"):
            if key not in data:
                raise self._error(f"summary.json is corrupt (no '{key}')")
        return data

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """The resolved config as a plain mapping (read with ``yaml.safe_load``)."""
        path = self.path / "config.yaml"
        if not path.exists():
            raise self._error("config.yaml is missing: not a complete run folder")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise self._error(f"config.yaml is corrupt ({_reason(exc)})") from None
        if not isinstance(data, dict):
            raise self._error("config.yaml is corrupt (not a mapping)")
        return data

    @functools.cached_property
    def series(self) -> list[Series]:
        """Per-model histories from ``metrics.csv`` (what a killed run had flushed)."""
        path = self.path / "metrics.csv"
        if not path.exists():
            raise self._error("metrics.csv is missing (the run logged nothing yet)")
        try:
            series = read_metrics(path)
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            raise self._error(f"metrics.csv is corrupt ({_reason(exc)})") from None
        if not series:
            raise self._error("metrics.csv has no rows yet")
        return series

    @functools.cached_property
    def histories(self) -> list[Series]:
        """``series`` with what the run's other files add to each model: its activation
        parameters (``parameters.csv``), the seconds of training at each logged step
        (``timing.csv``) and a PDE run's loss terms (``terms.csv``). A file the run does not
        have leaves its field empty (times NaN); a corrupt one is an error naming it."""
        out = [
            replace(
                s,
                steps=list(s.steps),
                time=[],
                train=list(s.train),
                test=list(s.test),
                recovery=list(s.recovery),
                val=list(s.val),
                params={},
                terms={},
            )
            for s in self.series
        ]
        for name, read in (("parameters.csv", read_parameters), ("terms.csv", read_terms)):
            path = self.path / name
            if path.is_file():
                try:
                    read(path, out)
                except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
                    raise self._error(f"{name} is corrupt ({_reason(exc)})") from None
        timing = self.timing if (self.path / "timing.csv").is_file() else {}
        for s in out:
            seconds = timing.get(s.variant, {})
            s.time = [seconds.get(step, math.nan) for step in s.steps]
        return out

    @functools.cached_property
    def timing(self) -> dict[str, dict[int, float]]:
        path = self.path / "timing.csv"
        if not path.exists():
            raise self._error("timing.csv is missing: this run cannot be shown against time")
        try:
            return read_timing(path)
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            raise self._error(f"timing.csv is corrupt ({_reason(exc)})") from None

    @property
    def status(self) -> str:
        summary = self.summary
        if summary is None:
            return "incomplete"
        return str(summary["status"]).split(":", 1)[0]

    @property
    def name(self) -> str:
        return str(self.config.get("name", self.path.name))

    @property
    def variants(self) -> list[str]:
        """Variant names in config order (falling back to the metrics' order)."""
        items = self.config.get("variants")
        if isinstance(items, list) and all(isinstance(v, dict) and "name" in v for v in items):
            return [str(v["name"]) for v in items]
        return list(dict.fromkeys(s.variant for s in self.series))

    @property
    def baseline(self) -> str:
        if self.summary is not None:
            return str(self.summary["baseline"])
        # As ExperimentConfig.baseline_variant: the first fixed one without a slope.
        items = self.config.get("variants") or []
        fixed = [
            v["name"]
            for v in items
            if isinstance(v, dict)
            and v.get("kind") == "fixed"
            and v.get("slope") is None
            and v.get("slope_from") is None
        ]
        return str(fixed[0]) if fixed else self.variants[0]

    def section(self, key: str) -> dict[str, Any]:
        """A section of the config (``target``, ``train``...), empty if absent or malformed."""
        value = self.config.get(key)
        return value if isinstance(value, dict) else {}

    @property
    def threshold(self) -> float | None:
        value = self.section("train").get("threshold")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def steps_done(self) -> int:
        if self.summary is not None:
            return int(self.summary["steps_done"])
        if not (self.path / "metrics.csv").exists():
            return 0
        return max((s.steps[-1] for s in self.series if s.steps), default=0)

    def files(self) -> list[tuple[str, int]]:
        """Relative path and size of every file in the folder (temporary files left out)."""
        out = []
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                out.append((str(p.relative_to(self.path)), p.stat().st_size))
        return out


def _reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, yaml.YAMLError):
        return "invalid YAML"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


#: The file that marks a sweep folder (``aaf sweep``): listed and shown as a sweep, not a run.
SWEEP_FILE = "sweep.yaml"


def is_sweep_folder(path: Path) -> bool:
    """A folder that ``aaf sweep`` made (it holds ``sweep.yaml``)."""
    return (Path(path) / SWEEP_FILE).is_file()


def is_run_folder(path: Path) -> bool:
    """A folder that aaf made: named like one, or holding a config and metrics or a summary.
    A sweep folder is not one (its points are)."""
    if not path.is_dir() or is_sweep_folder(path):
        return False
    if FOLDER_PATTERN.match(path.name):
        return True
    return (path / "config.yaml").is_file() and (
        (path / "summary.json").is_file() or (path / "metrics.csv").is_file()
    )


def _newest_first_key(path: Path) -> tuple[str, int, float]:
    match = FOLDER_PATTERN.match(path.name)
    stamp = match.group(1) if match else ""
    suffix = re.search(r"-(\d+)$", path.name)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return (stamp, int(suffix.group(1)) if suffix else 1, mtime)


def find_runs(runs_dir: Path) -> list[RunFolder]:
    """Every run folder directly under ``runs_dir``, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    folders = [p for p in runs_dir.iterdir() if is_run_folder(p)]
    folders.sort(key=_newest_first_key, reverse=True)
    return [RunFolder(p) for p in folders]


def _name_of(path: Path) -> str:
    match = FOLDER_PATTERN.match(path.name)
    return match.group(2) if match else path.name


def resolve_runs(specs: Sequence[str], runs_dir: Path, last: int | None = None) -> list[RunFolder]:
    """Turn RUN arguments into run folders, in the order given (then ``--last N``, newest first).

    A RUN is a folder path, a run name under ``runs_dir`` (its newest run), or a glob (matched
    against paths, then against folder names under ``runs_dir``). Anything that matches nothing
    is an error: no run is skipped silently.
    """
    runs_dir = Path(runs_dir)
    found: list[RunFolder] = []
    for spec in specs:
        found.extend(_resolve_one(spec, runs_dir))
    if last is not None:
        if last < 1:
            raise UsageError(f"--last must be at least 1 (got {last})")
        newest = find_runs(runs_dir)
        if len(newest) < last:
            raise RunError(
                f"--last {last}: only {len(newest)} run folder(s) in {runs_dir}"
                if newest
                else f"--last {last}: no run folders in {runs_dir}"
            )
        found.extend(newest[:last])
    return found


def unique_runs(runs: Sequence[RunFolder]) -> tuple[list[RunFolder], list[RunFolder]]:
    """The runs in order with repeats removed, and the repeats (to be reported, not hidden)."""
    unique: dict[Path, RunFolder] = {}
    repeats = []
    for run in runs:
        if run.path.resolve() in unique:
            repeats.append(run)
        else:
            unique[run.path.resolve()] = run
    return list(unique.values()), repeats


def _resolve_one(spec: str, runs_dir: Path) -> list[RunFolder]:
    path = Path(spec)
    if path.is_dir():
        if is_sweep_folder(path):
            raise RunError(
                f"{path}: is a sweep folder, not a run (aaf show it; its runs are "
                f"{path / 'points'}{os.sep}*)"
            )
        if not is_run_folder(path):
            raise RunError(f"{path}: not a run folder (no config.yaml with metrics.csv)")
        return [RunFolder(path)]
    if path.exists():
        raise RunError(f"{path}: is a file, expected a run folder")
    if GLOB_CHARS & set(spec):
        matches = sorted(
            {Path(p) for p in globmod.glob(spec)}
            | {Path(p) for p in globmod.glob(str(runs_dir / spec))}
        )
        runs = [p for p in matches if is_run_folder(p)]
        if not runs:
            raise RunError(f"no run folder matches '{spec}' (looked in . and {runs_dir})")
        runs.sort(key=_newest_first_key, reverse=True)
        return [RunFolder(p) for p in runs]
    if (runs_dir / spec).is_dir() and is_run_folder(runs_dir / spec):
        return [RunFolder(runs_dir / spec)]
    # Same-second clashes get a -2, -3... suffix; they still carry the run's name.
    pattern = re.compile(re.escape(spec) + r"(-\d+)?")
    named = [r for r in find_runs(runs_dir) if pattern.fullmatch(_name_of(r.path))]
    if named:
        return [named[0]]
    raise RunError(
        f"no run folder or run named '{spec}' (not a path; nothing under {runs_dir} has that "
        "name; see aaf list)"
    )
