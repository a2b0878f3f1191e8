"""Export run folders to the experiment trackers researchers already use: MLflow and TensorBoard.

Both targets get the same numbers, read through :class:`aaf_cli.runs.RunFolder`:

* per logged step, the geometric mean over the non-diverged seeds of each variant's training
  and test MSE (exactly the line ``loss_curves.png`` draws and ``aggregates.csv`` holds);
* per logged step and seed, the training and test MSE, the slope-recovery term S(a) where the
  variant has one, and the activation parameters (``n*a`` ...) from ``parameters.csv``.

MLflow also gets the resolved config as params (dotted keys as ``--set`` takes them; strings as
they are, other values as JSON), every number of ``summary.json`` as final metrics, the figures,
``summary.json``, ``config.yaml`` and the CSVs as artifacts. TensorBoard also gets the config and
the verdicts as text.

Exporting the same run folder again (same absolute path) is skipped, per target, unless
``force`` is given: MLflow then deletes the earlier MLflow run (a soft delete, as the UI does) and
logs a new one; TensorBoard replaces the run's subfolder. ``mlflow`` and ``tensorboard`` are
optional extras, imported only here and only when used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from aaf_cli import __version__
from aaf_cli.errors import EXIT_FAILED, AafError, RunError, UsageError
from aaf_cli.problems import facts_of
from aaf_cli.results import aggregate, by_variant
from aaf_cli.runs import RunFolder

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DEFAULT_EXPERIMENT = "aaf"
# The default MLflow store, under the runs dir. MLflow 3 refuses a plain ``./mlruns`` file store
# (unless MLFLOW_ALLOW_FILE_STORE=true) and itself defaults to ``sqlite:///mlflow.db``.
MLFLOW_SUBDIR = "mlflow"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"  # beside a sqlite file, the name `mlflow server` uses
ARTIFACT_SUFFIXES = (".png", ".svg", ".pdf", ".json", ".yaml", ".csv")
FOLDER_TAG = "aaf.folder"
# MLflow's own limits (mlflow.utils.validation) where the installed version does not say.
FALLBACK_PARAM_VALUE_LENGTH = 500
BATCH_METRICS = 1000
BATCH_PARAMS = 100
_STATUS = {
    "completed": "FINISHED",
    "diverged": "FINISHED",
    "interrupted": "KILLED",
    "incomplete": "KILLED",
}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BAD_KEY_CHARS = re.compile(r"[^\w.\- /]+")


class TrackerError(AafError):
    """The tracker refused or failed to store a run (server down, store unusable...)."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class Exported:
    """Where one run went (or was found already) in one tracker.

    ``target`` is ``mlflow`` or ``tensorboard``; ``where`` the MLflow run id or the event folder;
    ``skipped`` is true when the run was exported before and left as it was.
    """

    run: RunFolder
    target: str
    where: str
    skipped: bool = False

    def describe(self) -> str:
        """One line for the terminal."""
        if self.skipped:
            return (
                f"{self.run.path}: already in {self.target}: {self.where}; skipped (--force "
                "replaces it)"
            )
        return f"{self.run.path} -> {self.target}: {self.where}"


# --------------------------------------------------------------------------------------------
# The numbers, once per run, for both trackers


@dataclass(frozen=True)
class Point:
    """One scalar: a per-variant geometric mean over seeds (``seed`` None) or one seed's value at
    one step."""

    variant: str
    seed: int | None
    name: str
    step: int
    value: float
    time: float  # Unix seconds

    def mlflow_key(self) -> str:
        if self.seed is None:
            return f"{self.variant}/{self.name}_geomean"
        return f"{self.variant}/seed{self.seed}/{self.name}"

    def tensorboard_tag(self) -> str:
        if self.seed is None:
            return f"{self.variant}/{self.name}/geomean"
        return f"{self.variant}/seed{self.seed}/{self.name}"


def clean_key(text: str) -> str:
    """``text`` with every run of characters that MLflow refuses in a key turned into ``_``."""
    return _BAD_KEY_CHARS.sub("_", text).strip("_ /") or "_"


def _variant_keys(names: Sequence[str]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for name in names:
        key = clean_key(name)
        while key in keys.values():
            key += "_"
        keys[name] = key
    return keys


def _started(run: RunFolder) -> float:
    summary = run.summary
    if summary is not None and isinstance(summary.get("started"), str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(summary["started"]).timestamp()
    started = run.started
    return started.timestamp() if started is not None else time.time()


def _finished(run: RunFolder, started: float) -> float:
    summary = run.summary
    if summary is not None and isinstance(summary.get("finished"), str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(summary["finished"]).timestamp()
    return started


def _timing(run: RunFolder) -> dict[str, dict[int, float]]:
    # Wall-clock times only place the points in time (TensorBoard's "relative" axis); a run
    # folder without timing.csv still exports, with every point at the start time.
    try:
        return run.timing
    except RunError:
        return {}


def points(run: RunFolder) -> list[Point]:
    """Every scalar of a run: per-variant geometric means of train/test MSE, per-seed
    histories."""
    start = _started(run)
    timing = _timing(run)
    keys = _variant_keys(list(dict.fromkeys([*run.variants, *(s.variant for s in run.series)])))
    out: list[Point] = []

    def at(variant: str, step: int) -> float:
        return start + timing.get(variant, {}).get(step, 0.0)

    # A physics-informed run's train metric is the PINN loss, its test metric the relative L2
    # error of the solution: named so, not as a regression's MSE.
    train_name, test_name = metric_names(run)
    groups = by_variant(run.series, run.variants)
    for variant, series in groups.items():
        if not series:
            continue
        key = keys[variant]
        for metric, name in (("train", train_name), ("test", test_name)):
            band = aggregate(series, metric)
            for step, value in zip(band.steps, band.center):
                out.append(Point(key, None, name, step, value, at(variant, step)))
        for s in series:
            for i, step in enumerate(s.steps):
                t = at(variant, step)
                out.append(Point(key, s.seed, train_name, step, s.train[i], t))
                out.append(Point(key, s.seed, test_name, step, s.test[i], t))
            if any(math.isfinite(v) for v in s.recovery):
                for step, value in zip(s.steps, s.recovery):
                    out.append(Point(key, s.seed, "recovery", step, value, at(variant, step)))
    for s in run.histories:  # activation parameters; a PDE run's loss terms
        if s.variant not in keys:
            continue
        for param, values in (*s.params.items(), *s.terms.items()):
            name = clean_key(param)
            for step, value in zip(s.steps, values):
                out.append(Point(keys[s.variant], s.seed, name, step, value, at(s.variant, step)))
    return out


def metric_names(run: RunFolder) -> tuple[str, str]:
    """The tracker names of a run's train and test metric: ``train_mse``/``test_mse``, or for
    a physics-informed run ``pinn_loss``/``rel_l2`` (its problem's)."""
    return facts_of(run.config).tracker


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _leaves(prefix: str, node: Any, out: dict[str, float]) -> None:
    """Numeric leaves of a JSON tree as ``prefix/key/...``; per-seed lists keyed ``seed<k>``."""
    number = _number(node)
    if number is not None:
        out[prefix] = number
    elif isinstance(node, Mapping):
        for key, value in node.items():
            _leaves(f"{prefix}/{clean_key(str(key))}", value, out)
    elif isinstance(node, list) and all(isinstance(v, Mapping) and "seed" in v for v in node):
        for item in node:
            seeds = {k: v for k, v in item.items() if k not in ("seed", "variant")}
            _leaves(f"{prefix}/seed{item['seed']}", seeds, out)


def summary_metrics(run: RunFolder) -> dict[str, float]:
    """Every number of ``summary.json`` worth a metric, as ``summary/...`` keys.

    Per variant (``summary/<variant>/final_test/median``, ``.../per_seed/seed0/best_test``...),
    per comparison with the baseline (``summary/<variant>/vs_<baseline>/p_value``...) and the
    run's durations. Empty for a run without a summary.
    """
    summary = run.summary
    if summary is None:
        return {}
    out: dict[str, float] = {}
    for key in ("duration_s", "train_time_s", "steps", "steps_done"):
        number = _number(summary.get(key))
        if number is not None:
            out[f"summary/{key}"] = number
    variants = summary.get("variants")
    keys = _variant_keys(list(variants) if isinstance(variants, Mapping) else [])
    if isinstance(variants, Mapping):
        for name, stats in variants.items():
            _leaves(f"summary/{keys[name]}", stats, out)
    for comparison in summary.get("comparisons") or []:
        if not isinstance(comparison, Mapping):
            continue
        variant = str(comparison.get("variant"))
        baseline = clean_key(str(comparison.get("baseline")))
        _leaves(f"summary/{keys.get(variant, clean_key(variant))}/vs_{baseline}", comparison, out)
    return out


def _param_text(value: Any) -> str:
    """Strings as they are, the rest as JSON (``1e-08``, ``null``, ``[1, 8, 1]``)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def flatten_config(config: Mapping[str, Any], max_length: int = 6000) -> dict[str, str]:
    """The config as dotted keys (``train.lr``, ``variants.1.n``: the paths ``--set`` takes).

    Lists of sections are indexed from 0; lists of values (``model.layers``) stay one value.
    Values longer than ``max_length`` (a tracker's limit) are cut, ending in ``...``; the full
    text is in the ``config.yaml`` artifact.
    """
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, list) and node and all(isinstance(v, Mapping) for v in node):
            for k, value in enumerate(node):
                walk(f"{prefix}.{k}", value)
        else:
            text = _param_text(node)
            if len(text) > max_length:
                text = text[: max_length - 3] + "..."
            out[clean_key(prefix)] = text

    walk("", config)
    return out


def artifacts(run: RunFolder) -> list[Path]:
    """The figures, ``summary.json``, ``config.yaml`` and CSVs of a run (not checkpoints)."""
    return [
        run.path / name
        for name, _ in run.files()
        if "/" not in name and "\\" not in name and name.endswith(ARTIFACT_SUFFIXES)
    ]


def _description(run: RunFolder) -> str:
    """Markdown for MLflow's run description and TensorBoard's text tab."""
    lines = [f"aaf run `{run.path.name}`: status {run.status}"]
    summary = run.summary
    if summary is not None:
        data = summary.get("data") or {}
        target = data.get("expr") or data.get("target") if isinstance(data, Mapping) else None
        lines.append(
            f"target `{target}`, {summary.get('steps_done')}/{summary.get('steps')} steps, "
            f"seeds {summary.get('seeds')}"
        )
        for comparison in summary.get("comparisons") or []:
            if isinstance(comparison, Mapping) and comparison.get("verdict"):
                lines.append(f"- {comparison['verdict']}")
    return "\n\n".join(lines)


def _read(run: RunFolder) -> None:
    """Read (and so check) every file an export uses, before anything is written."""
    run.config, run.series, run.summary, run.histories  # noqa: B018


# --------------------------------------------------------------------------------------------
# MLflow


def require_mlflow() -> None:
    """Raise ``UsageError`` (one line: how to install it) if MLflow cannot be imported."""
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError as exc:
        raise UsageError(_missing("--mlflow", "MLflow", "mlflow", exc)) from None


def require_tensorboard() -> None:
    """Raise ``UsageError`` (one line: how to install it) if TensorBoard cannot be imported."""
    try:
        import tensorboard.summary.writer.event_file_writer  # noqa: F401
    except ImportError as exc:
        raise UsageError(_missing("--tensorboard", "TensorBoard", "tensorboard", exc)) from None


def _missing(flag: str, what: str, extra: str, exc: ImportError) -> str:
    message = f"{flag} needs {what}: pip install 'aaf[{extra}]'"
    # A broken install (the package there, one of its dependencies not) says which.
    if exc.name and exc.name.split(".")[0] != extra:
        message += f" ({exc})"
    return message


def default_mlflow_uri(runs_dir: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite store ``<runs_dir>/mlflow/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return "sqlite:///" + (Path(runs_dir) / MLFLOW_SUBDIR / MLFLOW_DB).resolve().as_posix()


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def check_mlflow_uri(uri: str) -> str:
    """A tracking URI with a scheme (``sqlite:///...``, ``http://...``, ``databricks``...)."""
    if uri == "databricks" or _SCHEME.match(uri):
        db = _sqlite_path(uri)
        if db is not None and not db.parent.is_dir():
            raise UsageError(f"--mlflow {uri}: folder {db.parent} does not exist")
        return uri
    raise UsageError(
        f"--mlflow {uri}: not a tracking URI (e.g. sqlite:///mlflow.db or "
        "http://localhost:5000); for the default store put --mlflow after the runs"
    )


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow and its database migrations log at INFO to stderr; keep the CLI's output ours."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _mlflow_errors(uri: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        lines = str(exc.message if hasattr(exc, "message") else exc).strip().splitlines()
        first = lines[0] if lines else type(exc).__name__
        raise TrackerError(f"MLflow at {uri}: {first}") from None


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise TrackerError(
                f"MLflow at {uri}: experiment '{name}' is deleted; restore it or pick another "
                "--experiment"
            )
        return str(experiment.experiment_id)
    location = None
    db = _sqlite_path(uri)
    if db is not None:
        # Without it, a local SQLite store puts artifacts under ./mlruns of whatever the
        # current folder happens to be.
        location = (db.resolve().parent / MLFLOW_ARTIFACTS / name).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def _existing(client: MlflowClient, experiment_id: str, folder: str) -> list[tuple[str, str]]:
    """Ids and recorded ``aaf.status`` of the live MLflow runs already made from this folder."""
    if "'" not in folder:
        quoted = f"'{folder}'"
    elif '"' not in folder:
        quoted = f'"{folder}"'
    else:
        quoted = ""
    found: list[tuple[str, str]] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{FOLDER_TAG}` = {quoted}" if quoted else "",
            max_results=1000,
            page_token=token,
        )
        found += [
            (r.info.run_id, r.data.tags.get("aaf.status", ""))
            for r in page
            if r.data.tags.get(FOLDER_TAG) == folder
        ]
        token = page.token
        if not token:
            return found


def _param_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return FALLBACK_PARAM_VALUE_LENGTH
    return int(MAX_PARAM_VAL_LENGTH)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _to_mlflow(
    client: MlflowClient, experiment_id: str, store: str, run: RunFolder, force: bool
) -> Exported:
    """Log one run (``store`` says where, for the message)."""
    from mlflow.entities import Metric, Param, RunStatus

    folder = str(run.path.resolve())
    found = _existing(client, experiment_id, folder)
    old = [run_id for run_id, _ in found]
    # Exported before with the same status: nothing new. A run exported while it was still
    # going (or interrupted) and now finished is exported again, replacing the old one.
    if found and not force and all(status == run.status for _, status in found):
        return Exported(run, "mlflow", f"run {old[0]}, {store}", skipped=True)
    summary = run.summary or {}
    environment = summary.get("environment") if isinstance(summary, Mapping) else None
    made_by = environment.get("aaf") if isinstance(environment, Mapping) else None
    start = _started(run)
    tags = {
        FOLDER_TAG: folder,
        "aaf.status": run.status,
        "aaf.name": run.name,
        "aaf.version": str(made_by or __version__),
        "aaf.exported_by": __version__,
        "aaf.baseline": run.baseline,
        # Format 1 summaries meant the last point by "final"; format 2 the tail median.
        "aaf.summary_format": str(summary.get("format_version", "")),
        "mlflow.note.content": _description(run),
    }
    commit = environment.get("git_commit") if isinstance(environment, Mapping) else None
    if commit:
        tags["aaf.git_commit"] = str(commit)
    created = client.create_run(
        experiment_id, start_time=int(start * 1000), tags=tags, run_name=run.path.name
    )
    run_id = created.info.run_id
    try:
        params = [Param(k, v) for k, v in flatten_config(run.config, _param_limit()).items()]
        for chunk in _chunks(params, BATCH_PARAMS):
            client.log_batch(run_id, params=list(chunk))
        metrics = [Metric(p.mlflow_key(), p.value, int(p.time * 1000), p.step) for p in points(run)]
        end = _finished(run, start)
        metrics += [
            Metric(key, value, int(end * 1000), run.steps_done)
            for key, value in summary_metrics(run).items()
        ]
        for chunk in _chunks(metrics, BATCH_METRICS):
            client.log_batch(run_id, metrics=list(chunk))
        for path in artifacts(run):
            client.log_artifact(run_id, str(path))
        client.set_terminated(
            run_id, RunStatus.to_string(getattr(RunStatus, _STATUS[run.status])), int(end * 1000)
        )
    except BaseException:
        # No half-exported run left to be mistaken for a whole one (and skipped next time).
        with contextlib.suppress(Exception):
            client.delete_run(run_id)
        raise
    for run_id_old in old:
        client.set_tag(run_id_old, "aaf.replaced_by", run_id)
        client.delete_run(run_id_old)
    return Exported(run, "mlflow", f"run {run_id}, {store}")


def export_mlflow(
    runs: Sequence[RunFolder],
    uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    force: bool = False,
    runs_dir: Path = Path("runs"),
    on_export: Callable[[Exported], None] | None = None,
) -> list[Exported]:
    """Log each run folder as one MLflow run.

    Args:
        runs: the run folders (see ``aaf_cli.runs.resolve_runs``).
        uri: a tracking URI; None: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<runs_dir>/mlflow/
            mlflow.db`` (artifacts beside it, in ``mlartifacts/``).
        experiment: the MLflow experiment (made if missing).
        force: log runs exported before again, deleting the earlier MLflow run.
        runs_dir: where the default store goes.
        on_export: called after each run, e.g. to print where it went.

    Returns:
        One ``Exported`` per run, in order.

    Raises:
        UsageError: MLflow is not installed, or the URI is not one.
        RunError: a run folder is unreadable (checked before anything is logged).
        TrackerError: MLflow failed.
    """
    require_mlflow()
    if uri is None:
        uri = default_mlflow_uri(runs_dir)
        db = _sqlite_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
    uri = check_mlflow_uri(uri)
    for run in runs:
        _read(run)
    from mlflow.tracking import MlflowClient

    done: list[Exported] = []
    with _quiet_mlflow(), _mlflow_errors(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, experiment, uri)
        for run in runs:
            store = f"experiment {experiment}, {uri}"
            result = _to_mlflow(client, experiment_id, store, run, force)
            done.append(result)
            if on_export is not None:
                on_export(result)
    return done


# --------------------------------------------------------------------------------------------
# TensorBoard


def _is_event_file(path: Path) -> bool:
    return "tfevents" in path.name


def _check_logdir(logdir: Path, runs: Sequence[RunFolder], force: bool) -> None:
    if logdir.exists() and not logdir.is_dir():
        raise UsageError(f"--tensorboard {logdir}: is a file, expected a folder")
    names: dict[str, RunFolder] = {}
    for run in runs:
        other = names.setdefault(run.path.name, run)
        if other is not run:
            raise UsageError(
                f"--tensorboard: {other.path} and {run.path} would both go to "
                f"{logdir / run.path.name}; export them separately"
            )
        target = logdir / run.path.name
        if force and target.exists():
            # Replace only what an export wrote: a folder of event files.
            strays = [p for p in target.rglob("*") if p.is_file() and not _is_event_file(p)]
            if strays or not target.is_dir():
                raise UsageError(
                    f"--tensorboard: {target} holds other files than TensorBoard's; "
                    "not replacing it"
                )


def export_tensorboard(
    runs: Sequence[RunFolder],
    logdir: Path,
    force: bool = False,
    on_export: Callable[[Exported], None] | None = None,
) -> list[Exported]:
    """Write each run's scalars as TensorBoard event files in ``logdir/<run folder name>/``.

    Tags: ``<variant>/train_mse/geomean``, ``<variant>/test_mse/geomean`` and per seed
    ``<variant>/seed<k>/test_mse`` (also ``train_mse``, ``recovery``, activation parameters;
    a physics-informed run's ``pinn_loss``, ``rel_l2`` and loss terms, ``term_residual``...);
    the config and the verdicts as text. TensorBoard keeps 32-bit floats. A subfolder written
    before is skipped unless ``force`` (then replaced, if it holds only event files). Each
    subfolder is written under a temporary name and renamed into place.

    Raises:
        UsageError: TensorBoard is not installed, or ``logdir`` is a file.
        RunError: a run folder is unreadable (checked before anything is written).
    """
    require_tensorboard()
    logdir = Path(logdir)
    _check_logdir(logdir, runs, force)
    for run in runs:
        _read(run)
    done: list[Exported] = []
    for run in runs:
        target = logdir / run.path.name
        if target.exists() and not force:
            result = Exported(run, "tensorboard", str(target), skipped=True)
        else:
            _write_events(run, logdir, target)
            result = Exported(run, "tensorboard", str(target))
        done.append(result)
        if on_export is not None:
            on_export(result)
    return done


def _write_events(run: RunFolder, logdir: Path, target: Path) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.text.summary_v2 import text_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run.path.name}.", dir=logdir))
    try:
        writer = EventFileWriter(str(tmp))
        start = _started(run)
        config = yaml.safe_dump(run.config, sort_keys=False)
        texts = [
            text_pb("aaf/config", "```\n" + config + "```"),
            text_pb("aaf/summary", _description(run)),
        ]
        for pb in texts:
            writer.add_event(Event(wall_time=start, step=0, summary=pb))
        # One event per (variant, seed, step): TensorBoard reads a step's values together.
        grouped: dict[tuple[str, int | None, int], list[Point]] = {}
        for p in points(run):
            grouped.setdefault((p.variant, p.seed, p.step), []).append(p)
        for (_, _, step), group in grouped.items():
            values = [Summary.Value(tag=p.tensorboard_tag(), simple_value=p.value) for p in group]
            writer.add_event(
                Event(wall_time=group[0].time, step=step, summary=Summary(value=values))
            )
        writer.close()
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Both, from RUN arguments (what ``aaf export`` calls)


@dataclass(frozen=True)
class ExportResult:
    """What ``export`` did: one ``Exported`` per run and target, and the runs given twice."""

    exported: list[Exported]
    repeated: list[Path]


def export(
    runs: Sequence[RunFolder | str | Path] = (),
    *,
    mlflow: bool | str = False,
    tensorboard: str | Path | None = None,
    last: int | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    force: bool = False,
    runs_dir: str | Path = "runs",
    on_export: Callable[[Exported], None] | None = None,
) -> ExportResult:
    """Export run folders to MLflow and/or TensorBoard.

    Args:
        runs: run folders, run names under ``runs_dir`` (the newest of that name) or globs, as
            ``aaf compare`` takes them.
        mlflow: True for the default store (``$MLFLOW_TRACKING_URI``, else
            ``sqlite:///<runs_dir>/mlflow/mlflow.db``), or a tracking URI; False: no MLflow.
        tensorboard: a log folder; each run goes to ``<tensorboard>/<run folder name>/``.
        last: also take the ``last`` newest runs under ``runs_dir``.
        experiment: the MLflow experiment (made if missing).
        force: export runs exported before again, replacing them (see the module docstring).
        on_export: called after each run and target, e.g. to print where it went.

    Everything is checked (extras installed, the URI, the log folder, every run folder read)
    before anything is written.

    Raises:
        UsageError: no target, no runs, a missing extra, a bad URI or log folder.
        RunError: a run folder that does not exist or cannot be read.
        TrackerError: MLflow failed.
    """
    if mlflow is False and tensorboard is None:
        raise UsageError("nothing to export to: give --mlflow [URI] and/or --tensorboard DIR")
    if mlflow is not False:
        require_mlflow()
    if tensorboard is not None:
        require_tensorboard()
    uri = None if mlflow is True or mlflow is False else check_mlflow_uri(mlflow)
    base = Path(runs_dir)
    specs = [str(r.path) if isinstance(r, RunFolder) else str(r) for r in runs]
    if not specs and last is None:
        raise UsageError("give run folders, names or globs, or --last N (see aaf list)")
    from aaf_cli.runs import resolve_runs, unique_runs

    folders, repeats = unique_runs(resolve_runs(specs, base, last))
    logdir = Path(tensorboard) if tensorboard is not None else None
    if logdir is not None:
        _check_logdir(logdir, folders, force)
    for run in folders:
        _read(run)
    done: list[Exported] = []
    if mlflow is not False:
        done += export_mlflow(folders, uri, experiment, force, base, on_export)
    if logdir is not None:
        done += export_tensorboard(folders, logdir, force, on_export)
    return ExportResult(done, [r.path for r in repeats])
