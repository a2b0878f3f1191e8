"""The Python API of aaf: what the ``aaf`` command does, as typed function calls.

Everything the command line does goes through these functions (``cli.py`` only parses options
and prints), so a notebook gets exactly the numbers and folders the CLI gets::

    import aaf_cli as aaf

    cfg = aaf.load_config("configs/elu.yaml", overrides=["seeds=5", "train.steps=2000"])
    run = aaf.run(cfg, runs_dir="runs")        # trains, writes the run folder, returns a Run
    run.verdicts                               # ['adaptive beats fixed on 5/5 seeds; ...']
    run.history("adaptive", seed=0).test       # the logged test MSE of one model
    frame = run.to_pandas()                    # long format, with pandas installed
    again = aaf.open_run(run.folder)           # any run folder, read-only
    fig = aaf.compare([run, again], out="both.png")

Errors are the ``AafError`` subclasses the CLI turns into one-line messages: ``ConfigError``
(bad config), ``UsageError`` (bad argument), ``RunError`` (a missing or unreadable run folder).
Heavy modules (torch, matplotlib) are imported inside the functions that need them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aaf_cli.config import ExperimentConfig
from aaf_cli.errors import UsageError
from aaf_cli.results import ModelOutcome, Series
from aaf_cli.runs import SUMMARY_FORMAT, RunFolder
from aaf_cli.sweeps.result import Sweep

if TYPE_CHECKING:
    from aaf_cli.checks import Checked
    from aaf_cli.overview import Curve, Row
    from aaf_cli.sweeps.local import PointEvent, SweepCheck
    from aaf_cli.sweeps.records import SweepRecord
    from aaf_cli.sweeps.spec import SweepPlan
    from aaf_cli.trackers import Exported, ExportResult

ConfigLike = ExperimentConfig | str | Path | Mapping[str, Any] | None

#: The logged history of one model (one variant, one seed): ``steps``, ``time`` (seconds of
#: training), ``train`` and ``test`` MSE, ``recovery`` (S(a), NaN without slope recovery),
#: ``params`` (activation-parameter summaries by name) and ``diverged_at``.
History = Series


def load_config(config: ConfigLike = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load and validate an experiment config.

    Args:
        config: a YAML file's path, a mapping with the same keys as the YAML, an
            ``ExperimentConfig`` (returned as it is unless overrides are given), or None for
            the built-in default experiment (``configs/elu.yaml``).
        overrides: ``key.path=value`` strings, as ``aaf run --set`` takes them, applied in
            order; list items by index (``variants.1.n=5``).

    Returns:
        The frozen, fully resolved config: every default filled in.

    Raises:
        ConfigError: naming the source, the key path and what is wrong.

    Example:
        >>> cfg = load_config({"seeds": 2, "train": {"steps": 50}}, ["variants.1.n=5"])
        >>> cfg.train.steps, cfg.variants[1].n, cfg.variants[1].a_init
        (50, 5.0, 0.2)
    """
    from aaf_cli.config import load_config as _load

    if isinstance(config, ExperimentConfig):
        if not overrides:
            return config
        config = config.to_data()
    return _load(config, overrides)


def check(
    config: ConfigLike = None, *, overrides: Sequence[str] = (), force: bool = False
) -> Checked:
    """Every check that ``run`` makes before training, without training (``aaf validate``).

    Beyond the schema: the target evaluated on its whole domain must be finite, the device must
    exist, and the size must be within the soft limits unless ``force``.

    Raises:
        ConfigError: the config, its target or its device is not usable.
        UsageError: over the soft size limits (the message gives the estimate).

    Example:
        >>> checked = check({"seeds": 2, "train": {"steps": 50}})
        >>> checked.estimate.models
        4
    """
    from aaf_cli.checks import preflight

    cfg = load_config(config, overrides)
    return preflight(cfg, _source(config), force)


def run(
    config: ConfigLike = None,
    *,
    overrides: Sequence[str] = (),
    runs_dir: str | Path = "runs",
    progress: bool = False,
    force: bool = False,
    stop: Callable[[], bool] | None = None,
    on_log: Callable[[Any], None] | None = None,
) -> Run:
    """Train the baseline and the adaptive variants of one experiment; write its run folder.

    Args:
        config: as ``load_config`` takes it (None: the built-in default).
        overrides: ``key.path=value`` strings applied on top.
        runs_dir: where the timestamped run folder is made.
        progress: show a live progress bar on stderr (as ``aaf run`` does).
        force: run a config over the soft size limits.
        stop: polled before every step; returning True stops training after the current step
            and writes what was done (status ``interrupted``).
        on_log: called with every logged record (``train.LogRecord``) of the run's own models
            while they train (a tuned run's tuning phase, on its own seeds, is not reported).

    Returns:
        The finished run, read back from its folder.

    Example:
        >>> result = run({"name": "doc", "seeds": 2, "train": {"steps": 40, "log_every": 10}},
        ...              runs_dir=tmp)
        >>> result.status, result.variants, sorted(result.histories["fixed"])
        ('completed', ['fixed', 'adaptive'], [0, 1])
        >>> result.history("adaptive", 1).steps[-1]
        40
    """
    from contextlib import nullcontext

    # The config first: a typo is refused in a fraction of a second, before torch and
    # matplotlib are imported (seconds).
    cfg = load_config(config, overrides)

    from aaf_cli.checks import preflight
    from aaf_cli.pipeline import execute

    source = _source(config)
    checked = preflight(cfg, source, force)
    bar: Any = nullcontext(None)
    if progress:
        from aaf_cli.progress import live_progress

        bar = live_progress(cfg)
    with bar as callbacks:
        forward = on_log
        if callbacks is not None:

            def forward(record: Any) -> None:
                callbacks.on_log(record)
                if on_log is not None:
                    on_log(record)

        report = execute(
            cfg,
            Path(runs_dir),
            source,
            list(overrides),
            on_start=callbacks.on_start if callbacks is not None else None,
            on_log=forward,
            stop=stop,
            checked=checked,
            on_tuning_log=callbacks.on_log if callbacks is not None else None,
            on_phase=callbacks.on_phase if callbacks is not None else None,
        )
    return Run(RunFolder(report.folder))


def open_run(run: Run | RunFolder | str | Path, runs_dir: str | Path = "runs") -> Run:
    """Open a run folder, read-only: a path, or a run name under ``runs_dir`` (its newest run).

    Raises:
        RunError: no such run, or its files are unreadable or of an unknown format.
        UsageError: a name or glob that matches several runs.
    """
    if isinstance(run, Run):
        return Run(RunFolder(run.folder))
    if isinstance(run, RunFolder):
        return Run(run)
    from aaf_cli.runs import resolve_runs, unique_runs

    found, _ = unique_runs(resolve_runs([str(run)], Path(runs_dir)))
    if len(found) > 1:
        names = ", ".join(f.path.name for f in found[:5])
        raise UsageError(f"'{run}' matches {len(found)} runs ({names}...); give one")
    return Run(found[0])


def list_runs(runs_dir: str | Path = "runs") -> list[Run]:
    """Every run folder under ``runs_dir``, newest first (``aaf list``)."""
    from aaf_cli.runs import find_runs

    return [Run(folder) for folder in find_runs(Path(runs_dir))]


@dataclass(frozen=True)
class CompareResult:
    """What ``compare`` drew and wrote."""

    figure: Path  # the figure file
    data: Path  # the CSV of exactly the drawn series, beside it
    runs: list[Run]  # in the order drawn, each once
    repeated: list[Path]  # runs given more than once (drawn once)
    curves: list[Curve]  # the drawn series
    rows: list[Row]  # the table: a row per run and variant


def compare(
    runs: Sequence[Run | RunFolder | str | Path] = (),
    *,
    last: int | None = None,
    out: str | Path | None = None,
    metric: str = "test",
    band: str = "auto",
    smooth: int = 0,
    variants: Sequence[str] | None = None,
    x: str = "step",
    runs_dir: str | Path = "runs",
) -> CompareResult:
    """Overlay the loss curves of several runs in one figure, with a CSV of the drawn series.

    Args:
        runs: run objects, folders, run names under ``runs_dir`` or globs.
        last: also take the ``last`` newest runs under ``runs_dir``.
        out: the figure (.png, .svg or .pdf); default ``<runs_dir>/compare_<timestamp>.png``.
        metric: ``test`` or ``train`` MSE.
        band: ``auto`` (IQR from 5 seeds, min-max below), ``iqr``, ``minmax``, ``std`` or
            ``none``.
        smooth: a moving average over this many logged points (0: off).
        variants: only these variants.
        x: ``step`` or ``time`` (seconds of training).

    Every folder is read, and so checked, before anything is written.

    Example:
        >>> drawn = compare([result], out=tmp / "one.png")
        >>> drawn.figure.name, [row.variant for row in drawn.rows]
        ('one.png', ['fixed', 'adaptive'])
    """
    from aaf_cli import overview as core
    from aaf_cli import plots
    from aaf_cli.runs import resolve_runs, unique_runs, write_atomic

    base = Path(runs_dir)
    specs = [
        str(r.folder) if isinstance(r, Run) else str(r.path) if isinstance(r, RunFolder) else str(r)
        for r in runs
    ]
    if not specs and last is None:
        raise UsageError("give run folders, names or globs, or --last N (see aaf list)")
    wanted = list(variants) if variants else None
    folders, repeats = unique_runs(resolve_runs(specs, base, last))
    target = _compare_output(Path(out) if out is not None else None, base, datetime.now())
    curves = core.build_curves(folders, metric, band, wanted, x, smooth)
    rows = [
        row
        for folder, label in zip(folders, core.labels(folders))
        for row in core.table_rows(
            folder, label, [v for v in folder.variants if wanted is None or v in wanted]
        )
    ]
    thresholds = {f.threshold for f in folders}
    quantities = {_quantity(f, metric) for f in folders}
    if len(quantities) > 1:
        raise UsageError(
            f"these runs measure different things ({' vs '.join(sorted(quantities))}): compare "
            "physics-informed runs with each other and regression runs with each other"
        )
    quantity = quantities.pop()
    title = f"{quantity}, geometric mean over seeds"
    if smooth > 1:
        title += f", smoothed over {smooth} logged points"
    plots.compare(
        curves,
        target,
        title,
        "seconds of training" if x == "time" else "step",
        thresholds.pop() if len(thresholds) == 1 else None,
        quantity.split(" (")[0],
    )
    csv_path = target.with_suffix(".csv")
    write_atomic(csv_path, core.curves_csv(curves, x, band, smooth))
    return CompareResult(
        target, csv_path, [Run(f) for f in folders], [r.path for r in repeats], curves, rows
    )


def _quantity(folder: RunFolder, metric: str) -> str:
    """What a run's logged ``test`` or ``train`` series is (its problem's: an MSE, or a
    physics-informed run's relative L2 error and total PINN loss)."""
    from aaf_cli.problems import facts_of

    train, test = facts_of(folder.config).series
    return test if metric == "test" else train


def report(
    runs: Sequence[Run | Sweep | str | Path] = (),
    *,
    out: str | Path | None = None,
    last: int | None = None,
    runs_dir: str | Path = "runs",
) -> Path:
    """Write runs and sweeps as one self-contained HTML page (``aaf report``): the figures
    embedded, the results tables, every verdict, the resolved config and the environment.

    Args:
        runs: runs or sweeps (objects, folders, names under ``runs_dir``, globs).
        out: the page (``.html``); default ``<runs_dir>/report_<timestamp>.html``.
        last: also the N newest runs.
        runs_dir: where names and ``last`` look for runs and sweeps.

    Returns:
        The page's path.

    Raises:
        RunError: a run or sweep that cannot be read (nothing is written then).
        UsageError: nothing to report, or ``out`` is not an .html file in an existing folder.
    """
    from aaf_cli.reporting import write_report

    specs = [str(r.folder) if isinstance(r, Run | Sweep) else str(r) for r in runs]
    path, _ = write_report(specs, None if out is None else Path(out), Path(runs_dir), last)
    return path


def export(
    runs: Sequence[Run | RunFolder | str | Path] = (),
    *,
    mlflow: bool | str = False,
    tensorboard: str | Path | None = None,
    last: int | None = None,
    experiment: str = "aaf",
    force: bool = False,
    runs_dir: str | Path = "runs",
    on_export: Callable[[Exported], None] | None = None,
) -> ExportResult:
    """Send runs to MLflow and/or TensorBoard (``aaf export``; needs ``aaf[mlflow]`` or
    ``aaf[tensorboard]``).

    Args:
        runs: run objects, folders, run names under ``runs_dir`` or globs.
        mlflow: True for the default store (``$MLFLOW_TRACKING_URI``, else
            ``sqlite:///<runs_dir>/mlflow/mlflow.db``), or a tracking URI; False: none.
        tensorboard: a log folder; each run goes to ``<tensorboard>/<run folder name>/``.
        last: also take the ``last`` newest runs under ``runs_dir``.
        experiment: the MLflow experiment (made if missing).
        force: export runs exported before again, replacing them.
        on_export: called after each run and target.

    Raises:
        UsageError: no target, no runs, a missing extra, a bad URI or log folder.
        RunError: a run folder that does not exist or cannot be read.
        TrackerError: MLflow failed.
    """
    from aaf_cli.trackers import export as _export

    return _export(
        [r.folder if isinstance(r, Run) else r for r in runs],
        mlflow=mlflow,
        tensorboard=tensorboard,
        last=last,
        experiment=experiment,
        force=force,
        runs_dir=runs_dir,
        on_export=on_export,
    )


def sweep(
    config_or_sweep_file: ConfigLike = None,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    random: Mapping[str, str] | None = None,
    samples: int | None = None,
    sweep_seed: int | None = None,
    overrides: Sequence[str] = (),
    name: str | None = None,
    runs_dir: str | Path = "runs",
    metric: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
    on_point: Callable[[PointEvent], None] | None = None,
    resume: str | Path | None = None,
    tune: str | None = None,
    tune_seeds: int | None = None,
    eval_seeds: int | None = None,
    pack: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
    max_parallel: int | None = None,
    ray_ship_code: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> Sweep:
    """Run many experiments: every combination of ``grid`` values, times ``samples`` random
    draws of the ``random`` axes; one ordinary run folder per point (``aaf sweep``).

    Args:
        config_or_sweep_file: a sweep file (or a mapping with its keys: ``base``/``config``,
            ``grid``, ``random``, ``samples``, ``sweep_seed``, ``name``), or the base
            experiment config as ``load_config`` takes it (None: the built-in default).
        grid: config key paths to their values, e.g. ``{"variants.1.n": [1, 2, 5]}``.
        random: key paths to ``loguniform(LO,HI)``, ``uniform(LO,HI)`` or ``choice(a,b,...)``.
        samples: random draws, each crossed with every grid point (needs ``random``).
        sweep_seed: the seed of the draws (default: the file's, else 0).
        overrides: ``key.path=value`` overrides of the base config (``--set``).
        name: the sweep folder's name (default: the file's name or stem, or ``<base>-sweep``).
        runs_dir: where the sweep folder ``<timestamp>_<name>/`` is made.
        metric: what ``sweep.png`` draws: ``final`` or ``best`` test MSE (default ``final``;
            a resumed sweep keeps its own).
        dry_run: check every point and estimate the whole sweep; write nothing.
        force: run a sweep over the soft size limits (they apply to its total time).
        progress: a progress bar per point on stderr.
        stop: polled every step; True ends the current point after its step and leaves the
            rest pending (status ``interrupted``).
        on_point: called when each point starts and ends (a ``sweeps.local.PointEvent``).
        resume: a sweep folder: run only its points that are not done (nothing else given).
            With ``dry_run``, only those points are ``planned`` (the done ones keep their
            status), and the estimate and jobs are theirs.
        tune: the tuned-baseline protocol: a grid key (``train.lr``, ``train.weight_decay`` or
            ``variants.K.<field>``, the sweep's only axis). The points run on the tuning seeds
            ``0..tune_seeds-1``; each variant picks its value by the median best test MSE
            there (ties: the smaller value); then one evaluation run, every variant at its
            value, on the fresh seeds ``1000..1000+eval_seeds-1`` (``Sweep.tuned``).
        tune_seeds: tuning seeds (default 5; the file's ``protocol.tune_seeds``).
        eval_seeds: evaluation seeds (default 10; the file's ``protocol.eval_seeds``).
        pack: train points that differ only in per-model settings (variant n, a0, lr, slope
            recovery, weight decay; ``train.lr``; seeds) as one ensemble, split back into
            per-point folders equal to running each alone (``sweeps.packing``). False: each
            point alone.
        executor: ``local`` (in this process, one job after another) or ``ray`` (one Ray task
            per packed job; ``pip install 'aaf[ray]'``).
        ray_address: the Ray cluster to join (``auto``: the one ``ray start`` runs on this
            machine; ``HOST:PORT``); None starts a local Ray instance for the sweep.
        max_parallel: most jobs at once on Ray (default: one per CPU Ray offers); each gets
            the cores divided among them as its thread count. Needs ``executor="ray"``.
        ray_ship_code: send this ``aaf`` package to the Ray nodes (Ray's runtime
            environment), so that nodes without it (or with another version) run this code;
            they need its dependencies (torch, pydantic, ...). Every node is checked first.
        on_note: told, in one line, what is worth knowing but no error: the lock of a sweep
            folder whose driver died taken over (default: a ``sweeps.lock.SweepLockWarning``).

    Returns:
        The sweep, read back from its folder (a dry run: planned, ``folder`` None).

    Raises:
        ConfigError: a bad sweep file, axis or point (one line naming the point's values);
            nothing is written.
        UsageError: over the soft limits without ``force``; a bad argument; ``resume`` of a
            sweep folder that another driver is running (``sweep.lock``).
        RunError: ``resume`` of a folder that is not a sweep.

    Example:
        >>> swept = sweep({"name": "doc", "seeds": 2, "train": {"steps": 20}},
        ...               grid={"variants.1.n": [1, 5]}, runs_dir=tmp)
        >>> swept.status, [p.values for p in swept.points]
        ('completed', [{'variants.1.n': 1}, {'variants.1.n': 5}])
    """
    from aaf_cli.sweeps.local import check_plan, plan_of, run_sweep
    from aaf_cli.sweeps.spec import plan_sweep

    if resume is not None:
        given = [
            flag
            for flag, value in (
                ("a config or sweep file", config_or_sweep_file),
                ("grid", grid),
                ("random", random),
                ("samples", samples),
                ("sweep_seed", sweep_seed),
                ("overrides", list(overrides) or None),
                ("name", name),
                ("tune", tune),
                ("tune_seeds", tune_seeds),
                ("eval_seeds", eval_seeds),
            )
            if value is not None
        ]
        if given:
            raise UsageError(
                f"--resume takes the sweep folder alone (its base and axes are in its "
                f"sweep.yaml); also given: {', '.join(given)}"
            )
        folder = Path(resume)
        plan, record = plan_of(folder)
        base, resumed = folder.parent, (folder, record)
    else:
        plan = plan_sweep(
            config_or_sweep_file,
            grid=grid,
            random_axes=random,
            samples=samples,
            sweep_seed=sweep_seed,
            overrides=overrides,
            name=name,
            tune=tune,
            tune_seeds=tune_seeds,
            eval_seeds=eval_seeds,
        )
        base, resumed = Path(runs_dir), None
    if dry_run:  # checked as the sweep would check it (on Ray, the nodes check devices)
        check = check_plan(plan, force, pack, device_here=executor != "ray")
        if resumed is not None:
            return _planned_resume(*resumed, plan, check, pack)
        return Sweep.planned(plan, check)
    folder = run_sweep(
        plan,
        base,
        metric=metric,
        force=force,
        progress=progress,
        stop=stop,
        on_point=on_point,
        resume=resumed,
        pack=pack,
        executor=executor,
        ray_address=ray_address,
        max_parallel=max_parallel,
        ray_ship_code=ray_ship_code,
        on_note=on_note,
    )
    return Sweep.open(folder)


def _planned_resume(
    folder: Path, record: SweepRecord, plan: SweepPlan, check: SweepCheck, pack: bool
) -> Sweep:
    """The dry run of ``sweep(resume=folder)``: the points it would run (not done: pending,
    failed, interrupted) ``planned``, the done ones with their status; the estimate and the
    jobs of the points to run, the limits those of the whole sweep (as the run checks them)."""
    from dataclasses import replace

    from aaf_cli.sweeps import records
    from aaf_cli.sweeps.local import SweepCheck, packed_seconds, plan_jobs
    from aaf_cli.sweeps.result import Tuned

    status = {p.index: records.point_status(folder / p.folder) for p in record.points}
    todo = [p.index for p in record.points if status[p.index] not in records.DONE]
    packs = plan_jobs(plan, todo, pack, 1)
    packed = packed_seconds(plan, packs, len(todo)) if pack else None
    estimates = [check.estimates[i] for i in todo]
    planned = Sweep.planned(plan, SweepCheck(estimates, check.over_limits, packs, packed))
    folders = {p.index: folder / p.folder for p in record.points}
    planned.points = [
        p if p.index in todo else replace(p, status=status[p.index], folder=folders[p.index])
        for p in planned.points
    ]
    for row in planned.table:
        if row["point"] not in todo:
            row["status"] = status[row["point"]]
    planned.tuned = Tuned.of(folder, record.extra)
    return planned


def _compare_output(out: Path | None, runs_dir: Path, now: datetime) -> Path:
    if out is None:
        runs_dir.mkdir(parents=True, exist_ok=True)
        stamp = now.strftime("%Y-%m-%d_%H-%M-%S")
        out = runs_dir / f"compare_{stamp}.png"
        k = 2
        while out.exists() or out.with_suffix(".csv").exists():
            out = runs_dir / f"compare_{stamp}-{k}.png"
            k += 1
        return out
    if out.suffix == "":
        out = out.with_suffix(".png")
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--out {out}: the figure must be .png, .svg or .pdf")
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory, expected a file name")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    return out


def _source(config: ConfigLike) -> str:
    from aaf_cli.config import DEFAULT_SOURCE

    if config is None:
        return DEFAULT_SOURCE
    if isinstance(config, (str, Path)):
        return str(config)
    if isinstance(config, ExperimentConfig):
        return "<ExperimentConfig>"
    return "<mapping>"


class Run:
    """One run folder, read-only: its config, summary, histories and figures.

    Files are read when first asked for (and then kept); a run still going can be reopened
    with ``open_run`` to see more of it.
    """

    def __init__(self, folder: RunFolder) -> None:
        self._folder = folder

    def __repr__(self) -> str:
        return f"Run({str(self.folder)!r}, status={self.status!r})"

    @property
    def folder(self) -> Path:
        """The run folder."""
        return self._folder.path

    def read(self) -> Run:
        """Read (and so check) the config, summary and metrics now, not when first asked for.

        Raises:
            RunError: naming the folder and the file that is missing, corrupt or of an unknown
                format.
        """
        self._folder.config, self._folder.summary, self._folder.series  # noqa: B018
        return self

    @property
    def name(self) -> str:
        """The experiment's name (config ``name``)."""
        return self._folder.name

    @property
    def status(self) -> str:
        """``completed``, ``interrupted``, ``diverged`` or ``incomplete`` (no summary yet)."""
        return self._folder.status

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config as written to ``config.yaml`` (a plain mapping)."""
        return self._folder.config

    def load_config(self) -> ExperimentConfig:
        """The run's config, validated again: rerun it with ``aaf_cli.run(run.load_config())``."""
        return load_config(self.folder / "config.yaml")

    @property
    def summary(self) -> dict[str, Any] | None:
        """The parsed ``summary.json``, or None while the run has not finished."""
        return self._folder.summary

    @property
    def variants(self) -> list[str]:
        """Variant names in config order."""
        return self._folder.variants

    @property
    def baseline(self) -> str:
        """The variant the others are compared with (the first fixed one)."""
        return self._folder.baseline

    @property
    def seeds(self) -> list[int]:
        """The seeds of the run."""
        seeds = self.config.get("seeds")
        return list(range(seeds)) if isinstance(seeds, int) else list(seeds or [])

    @property
    def histories(self) -> dict[str, dict[int, History]]:
        """Every model's logged history, by variant then seed: losses from ``metrics.csv``,
        activation parameters from ``parameters.csv`` (``params["n*a"]``), seconds of
        training from ``timing.csv``, a PDE run's loss terms from ``terms.csv``."""
        out: dict[str, dict[int, History]] = {name: {} for name in self.variants}
        for series in self._folder.histories:
            out.setdefault(series.variant, {})[series.seed] = series
        return out

    def history(self, variant: str, seed: int) -> History:
        """The logged history of one model."""
        try:
            return self.histories[variant][seed]
        except KeyError:
            raise UsageError(
                f"{self.folder}: no model {variant!r} seed {seed} "
                f"(variants: {', '.join(self.variants)}; seeds: {self.seeds})"
            ) from None

    @property
    def outcomes(self) -> list[ModelOutcome]:
        """Final (tail median), last and best losses of every model, under the current rules."""
        from aaf_cli.overview import outcomes_of

        return outcomes_of(self._folder)

    @property
    def rows(self) -> list[Row]:
        """The results table of ``aaf show``: geometric means over seeds and the paired
        result."""
        from aaf_cli.overview import table_rows

        return table_rows(self._folder, self._folder.label)

    @property
    def comparisons(self) -> list[dict[str, Any]]:
        """Each variant against the baseline, paired by seed (as in ``summary.json``)."""
        summary = self.summary
        if summary is not None and summary.get("format_version") == SUMMARY_FORMAT:
            return list(summary.get("comparisons", []))
        from aaf_cli.results import summarise

        threshold = self._folder.threshold or math.nan
        _, comparisons = summarise(self.outcomes, self.variants, self.baseline, threshold)
        return comparisons

    @property
    def verdicts(self) -> list[str]:
        """One sentence per comparison, e.g. 'adaptive beats fixed on 9/10 seeds; ...', then
        one per fixed control against the adaptive variant it was made from
        ('adaptivity against a fixed steeper activation (s = 3.1): ...')."""
        controls = (self.summary or {}).get("controls") or {}
        return [c["verdict"] for c in [*self.comparisons, *controls.get("comparisons", [])]]

    @property
    def loss_against_error(self) -> list[str]:
        """One sentence per comparison on the final training loss beside the final test
        metric, e.g. "gaaf's final PINN loss is lower on 10/10 seeds ...; its final relative
        L2 error is lower on 4/10 ..." (runs made before it was written: none)."""
        return [c["loss_against_error"] for c in self.comparisons if c.get("loss_against_error")]

    @property
    def files(self) -> list[tuple[str, int]]:
        """Every file of the run folder (relative name, size in bytes)."""
        return self._folder.files()

    def describe(self) -> dict[str, Any]:
        """The run in one entry of ``aaf list``: what, how far, how it ended, how good."""
        from aaf_cli.overview import describe_run

        return describe_run(self._folder)

    @property
    def figures(self) -> dict[str, Path]:
        """The figures of the run folder by file name."""
        return {p.name: p for p in sorted(self.folder.glob("*.png"))}

    def to_pandas(self, what: str = "metrics") -> Any:
        """The run as a pandas DataFrame (needs pandas: ``pip install pandas``).

        Args:
            what: ``metrics`` (one row per logged step, variant and seed: step, time, train,
                test, recovery, the activation parameters, a PDE run's loss terms) or
                ``outcomes`` (one row per
                model: final, last and best losses, steps to threshold).
        """
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("to_pandas needs pandas: pip install pandas") from None
        if what == "metrics":
            records = []
            for series in self._folder.histories:
                for i, step in enumerate(series.steps):
                    record: dict[str, Any] = {
                        "variant": series.variant,
                        "seed": series.seed,
                        "step": step,
                        "time": series.time[i] if i < len(series.time) else math.nan,
                        "train": series.train[i],
                        "test": series.test[i],
                        "recovery": series.recovery[i] if i < len(series.recovery) else math.nan,
                    }
                    for key, values in (*series.params.items(), *series.terms.items()):
                        record[key] = values[i] if i < len(values) else math.nan
                    records.append(record)
            return pd.DataFrame.from_records(records)
        if what == "outcomes":
            rows = []
            for o in self.outcomes:
                row = {k: v for k, v in o.__dict__.items() if k != "final_params"}
                row.update({f"final {k}": v for k, v in o.final_params.items()})
                rows.append(row)
            return pd.DataFrame.from_records(rows)
        raise UsageError(f"to_pandas: what must be 'metrics' or 'outcomes' (got {what!r})")
