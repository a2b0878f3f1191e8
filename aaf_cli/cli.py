"""The ``aaf`` command line. Each command parses options, calls one core function, prints.

Heavy modules (torch, matplotlib, the config schema) are imported inside the commands, so that
``aaf --help`` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from aaf_cli import __version__
from aaf_cli.errors import EXIT_INTERRUPTED, AafError
from aaf_cli.sweeps.command import (
    DryRunOpt,
    EvalSeedsOpt,
    ExecutorOpt,
    ForceOpt,
    GridOpt,
    MaxParallelOpt,
    MetricOpt,
    NameOpt,
    NoPackOpt,
    PointCount,
    QuietOpt,
    RandomOpt,
    RayAddressOpt,
    RayShipCodeOpt,
    ResumeOpt,
    SamplesOpt,
    SweepConfigOpt,
    SweepRunsDirOpt,
    SweepSeedOpt,
    TuneOpt,
    TuneSeedsOpt,
    point_line,
)

app = typer.Typer(
    name="aaf",
    help="Does an adaptive activation function help your network learn? "
    "Fixed vs adaptive activations on synthetic targets, fairly compared.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}

ConfigArg = Annotated[
    Path | None,
    typer.Argument(
        help="Experiment YAML file. Omitted: the built-in default (configs/elu.yaml).",
        show_default=False,
        metavar="CONFIG",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY.PATH=VALUE",
        help="Override a config key, e.g. --set train.steps=200 --set variants.1.n=5 (repeatable).",
        show_default=False,
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aaf {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
) -> None:
    _state["debug"] = debug


@contextmanager
def _errors(every: bool = False) -> Iterator[None]:
    """Turn aaf's own errors into one line on stderr and their exit code (``every``: a
    config's other errors too, a line each)."""
    try:
        yield
    except AafError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"Error: {exc}", err=True)
        if every:
            for other in getattr(exc, "others", ()):
                typer.echo(f"Error: {other}", err=True)
        raise typer.Exit(exc.exit_code) from None


@app.command()
def run(
    config: ConfigArg = None,
    set_: SetOpt = None,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where run folders are made.")
    ] = Path("runs"),
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or table; print the folder only.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Run a config over the size limits (see aaf validate)."),
    ] = False,
) -> None:
    """Train the baseline and the adaptive variants of one experiment and write a run folder.

    Example: aaf run configs/elu.yaml --set train.steps=2000
    """
    with _errors():
        from aaf_cli import api

        with _interruptible() as stop:
            result = api.run(
                config,
                overrides=set_ or [],
                runs_dir=runs_dir,
                progress=not quiet,
                force=force,
                stop=stop,
            )
        summary = result.summary or {}
        if not quiet:
            from aaf_cli import render

            render.report_table(summary)
        typer.echo(str(result.folder))
        if summary.get("status") == "interrupted":
            raise typer.Exit(EXIT_INTERRUPTED)


def _quiet_finalizers() -> None:
    """An abort raises KeyboardInterrupt wherever the program is, in the middle of an object's
    ``__init__`` too (pyparsing's, while matplotlib builds its mathtext parser, was seen): that
    half-built object's ``__del__`` then fails when it is collected, and Python would print its
    traceback under "Aborting now.". The process is ending at the user's request: such errors
    are dropped."""
    sys.unraisablehook = lambda unraisable: None


@contextmanager
def _interruptible() -> Iterator[Callable[[], bool]]:
    """Ctrl-C or SIGTERM asks training to stop after the current step (the results so far are
    written); a second Ctrl-C stops at once."""
    import signal

    requested: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if requested:
            typer.echo("Aborting now.", err=True)
            _quiet_finalizers()
            raise KeyboardInterrupt
        requested.append(signum)
        typer.echo("Stopping after this step (Ctrl-C again to abort)...", err=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@app.command()
def validate(
    config: ConfigArg = None,
    set_: SetOpt = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Accept a config over the size limits, as aaf run --force."),
    ] = False,
) -> None:
    """Run every check aaf run makes before training (schema, target finite on its domain,
    device, size limits) and print the config fully resolved, with its size estimate.

    Example: aaf validate configs/elu.yaml --set train.lr=1e-2
    """
    with _errors(every=True):
        from aaf_cli import api

        checked = api.check(config, overrides=set_ or [], force=force)
        header = f"# {checked.source}: valid\n# size: {checked.estimate.describe()}\n"
        if checked.over_limits:
            header += f"# over the limits ({'; '.join(checked.over_limits)}): runs with --force\n"
        typer.echo(checked.config.to_yaml(header), nl=False)


@app.command()
def targets() -> None:
    """List the built-in targets (formula, default domain and points) and what your own
    expression targets (target.expr) may use."""
    from aaf_cli.expr import CONSTANTS, FUNCTIONS
    from aaf_cli.targets import TARGETS

    for spec in TARGETS.values():
        params = ", ".join(f"{k}={v}" for k, v in spec.params.items())
        lo, hi = spec.domain
        typer.echo(
            f"{spec.name:20s} {spec.formula}  on [{lo:g}, {hi:g}], {spec.n_train} points"
            + (f"; params: {params}" if params else "")
        )
    typer.echo(
        "\nYour own target: target: {expr: '0.2*sin(6*x) if x <= 0 else 1 + 0.1*x*cos(18*x)', "
        "domain: [-3, 3]}"
    )
    typer.echo("  variables: x, or x1, x2, ... when model.layers starts with 2 or more")
    typer.echo(f"  constants: {', '.join(CONSTANTS)}")
    typer.echo(f"  functions: {', '.join(FUNCTIONS)}")
    typer.echo(
        "  operators: + - * / ** %, comparisons (chained too), and/or/not, a if cond else b; "
        "or piecewise: [{when: 'x <= 0', expr: ...}, {expr: ...}]"
    )


@app.command()
def kinds() -> None:
    """List the adaptive kinds a variant can use (formula, keys with defaults, reference) and
    the base activations."""
    from aaf_cli.config import variant_parameters
    from aaf_cli.registry import ACTIVATIONS, KINDS

    typer.echo("Adaptive kinds (variants: - {kind: ..., name: ..., <keys>}):")
    for info in KINDS.values():
        typer.echo(f"\n  {info.name}: {info.formula}")
        typer.echo(f"    reference: {info.reference}")
        for key, default, description in variant_parameters(info.name):
            typer.echo(f"    {key:15s} {default:12s} {description}")
    typer.echo(
        "\nSlope recovery (global, layer, neuron): slope_recovery: {weight: 1.0, form: paper}"
    )
    typer.echo(
        "  paper: S(a) = 1 / mean_k exp(a_k); code: 1 / sum_k exp(a_k) (authors' TF1 script)"
    )
    typer.echo("\nBase activations (model.activation, or a variant's activation):")
    for name, formula in ACTIVATIONS.items():
        typer.echo(f"  {name:10s} {formula}")


RunsDirOpt = Annotated[
    Path, typer.Option("--runs-dir", help="Where run folders are looked up (and made).")
]
RunsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Run folders, run names under --runs-dir (the newest of that name) or globs.",
        metavar="RUN...",
        show_default=False,
    ),
]
LastOpt = Annotated[
    int | None, typer.Option("--last", help="Also take the N newest runs.", show_default=False)
]


@app.command()
def compare(
    runs: RunsArg = None,
    last: LastOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Figure file (.png, .svg or .pdf); a CSV of the plotted series goes beside it. "
            "Default: <runs-dir>/compare_<timestamp>.png",
            show_default=False,
        ),
    ] = None,
    metric: Annotated[str, typer.Option("--metric", help="test or train MSE.")] = "test",
    band: Annotated[
        str,
        typer.Option(
            "--band", help="auto (IQR from 5 seeds, min-max below), iqr, minmax, std or none."
        ),
    ] = "auto",
    smooth: Annotated[
        int,
        typer.Option("--smooth", help="Moving average over N logged points (0: off, raw)."),
    ] = 0,
    variants: Annotated[
        str | None,
        typer.Option(
            "--variants", help="Only these variants, e.g. fixed,adaptive.", show_default=False
        ),
    ] = None,
    x: Annotated[str, typer.Option("--x", help="step, or time (seconds of training).")] = "step",
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Overlay the loss curves of several runs in one figure, with a table of their results.

    Example: aaf compare --last 3 --variants fixed,adaptive --out compare.svg
    """
    with _errors():
        from aaf_cli import api, render

        wanted = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
        drawn = api.compare(
            runs or [],
            last=last,
            out=out,
            metric=metric,
            band=band,
            smooth=smooth,
            variants=wanted,
            x=x,
            runs_dir=runs_dir,
        )
        for repeat in drawn.repeated:
            typer.echo(f"note: {repeat} is given more than once; drawn once", err=True)
        from aaf_cli.problems import facts_of

        facts = facts_of(*(r.config for r in drawn.runs))
        render.print_rows(drawn.rows, f"{len(drawn.runs)} runs", facts=facts)
        typer.echo(f"figure: {drawn.figure}")
        typer.echo(f"data:   {drawn.data}")


@app.command("list")
def list_(
    runs_dir: RunsDirOpt = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the runs under --runs-dir, newest first: what, how far, how it ended, how good.

    Example: aaf list --runs-dir runs --json
    """
    with _errors():
        import json

        from aaf_cli import api
        from aaf_cli.errors import RunError

        entries: list[dict[str, Any]] = []
        problems: list[str] = []
        for found in api.list_runs(runs_dir):
            try:
                entries.append(found.describe())
            except RunError as exc:
                problems.append(str(exc))
                entries.append(
                    {"folder": str(found.folder), "status": "unreadable", "error": str(exc)}
                )
        # A sweep is one row: its name, point count and status (its points are runs inside).
        from aaf_cli.sweeps.records import describe_sweep, find_sweeps, newest_first

        for path in find_sweeps(runs_dir):
            try:
                entries.append(describe_sweep(path))
            except RunError as exc:
                problems.append(str(exc))
                entries.append({"folder": str(path), "status": "unreadable", "error": str(exc)})
        entries = newest_first(entries)
        if as_json:
            from aaf_cli.runs import jsonable

            typer.echo(json.dumps(jsonable(entries), indent=2))
        elif not entries:
            typer.echo(f"No runs in {runs_dir}. Start one with: aaf run")
        else:
            from aaf_cli import render

            render.print_list(entries, runs_dir)
        for problem in problems:
            typer.echo(f"Error: {problem}", err=True)
        if problems:
            raise typer.Exit(RunError.exit_code)


@app.command()
def show(
    run_: Annotated[
        str,
        typer.Argument(
            help="A run folder, a run name under --runs-dir, or a glob matching one.", metavar="RUN"
        ),
    ],
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Show one run: its config highlights, results table, verdicts and files; or a sweep
    folder: its points table and each point's verdicts.

    Example: aaf show elu
    """
    with _errors():
        from aaf_cli import api, render
        from aaf_cli.sweeps.records import find_sweep
        from aaf_cli.sweeps.result import Sweep

        sweep_folder = find_sweep(run_, runs_dir)
        if sweep_folder is not None:
            render.print_sweep(Sweep.open(sweep_folder), verdicts=True)
            return
        # Read (and so check) the config, summary and metrics before printing anything.
        opened = api.open_run(run_, runs_dir).read()
        rows = opened.rows
        render.print_show(
            str(opened.folder),
            opened.status,
            opened.summary,
            opened.config,
            rows,
            opened.files,
        )


class _ExportCommand(typer.core.TyperCommand):
    """``--mlflow`` takes an optional URI: alone (last, or before another option) it means the
    default store. Typer's parser has no optional values, so the empty one is filled in here."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given: list[str] = []
        for k, arg in enumerate(args):
            if arg == "--":
                given += args[k:]
                break
            given.append(arg)
            if arg == "--mlflow" and (k + 1 == len(args) or args[k + 1].startswith("-")):
                given.append("")
        return super().parse_args(ctx, given)


@app.command()
def report(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Run or sweep folders, names under --runs-dir (the newest of that name) or globs.",
            metavar="RUN|SWEEP...",
            show_default=False,
        ),
    ] = None,
    last: LastOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The page (.html). Default: <runs-dir>/report_<timestamp>.html",
            show_default=False,
        ),
    ] = None,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Write runs and sweeps as one self-contained HTML page to share: figures embedded, the
    tables, every verdict, the resolved config and the environment.

    Example: aaf report elu --last 1 --out elu.html
    """
    with _errors():
        from aaf_cli import api

        written = api.report(runs or [], out=out, last=last, runs_dir=runs_dir)
        typer.echo(str(written))


@app.command(cls=_ExportCommand)
def export(
    runs: RunsArg = None,
    last: LastOpt = None,
    mlflow: Annotated[
        str | None,
        typer.Option(
            "--mlflow",
            metavar="[URI]",
            help="Log each run as an MLflow run. Alone: $MLFLOW_TRACKING_URI, else "
            "sqlite:///<runs-dir>/mlflow/mlflow.db. A URI goes as --mlflow=URI, or after "
            "the runs.",
            show_default=False,
        ),
    ] = None,
    experiment: Annotated[
        str, typer.Option("--experiment", help="MLflow experiment (made if missing).")
    ] = "aaf",
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            "--tensorboard",
            metavar="DIR",
            help="Write TensorBoard event files to DIR/<run folder name>/.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Export runs exported before again, replacing them."),
    ] = False,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Send runs to MLflow and/or TensorBoard: config, losses per step (median and per seed),
    summary numbers, figures. A run exported before is skipped unless --force.

    Example: aaf export --last 3 --mlflow --tensorboard tb
    """
    with _errors():
        from aaf_cli import api

        done = api.export(
            runs or [],
            mlflow=False if mlflow is None else (mlflow or True),
            tensorboard=tensorboard,
            last=last,
            experiment=experiment,
            force=force,
            runs_dir=runs_dir,
            on_export=lambda exported: typer.echo(exported.describe()),
        )
        for repeat in done.repeated:
            typer.echo(f"note: {repeat} is given more than once; exported once", err=True)


@app.command()
def sweep(
    config: SweepConfigOpt = None,
    grid: GridOpt = None,
    random: RandomOpt = None,
    samples: SamplesOpt = None,
    sweep_seed: SweepSeedOpt = None,
    set_: SetOpt = None,
    name: NameOpt = None,
    runs_dir: SweepRunsDirOpt = Path("runs"),
    metric: MetricOpt = None,
    dry_run: DryRunOpt = False,
    resume: ResumeOpt = None,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
    tune: TuneOpt = None,
    tune_seeds: TuneSeedsOpt = None,
    eval_seeds: EvalSeedsOpt = None,
    no_pack: NoPackOpt = False,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    max_parallel: MaxParallelOpt = None,
    ray_ship_code: RayShipCodeOpt = False,
) -> None:
    """Run one experiment per point of a grid (and of random draws): each point an ordinary
    run folder under <sweep folder>/points/, with points.csv and sweep.png beside them.

    Example: aaf sweep configs/elu.yaml --grid variants.1.n=1,2,5,10 --set seeds=5
    """
    with _errors():
        from aaf_cli import api
        from aaf_cli.sweeps.spec import options, parse_grid_option, parse_random_option

        count = PointCount()

        def on_point(event: Any) -> None:
            finished = count(event)
            if event.phase == "done":
                typer.echo(point_line(event, finished), err=True)

        def on_note(note: str) -> None:
            typer.echo(f"note: {note}", err=True)

        with _interruptible() as stop:
            try:
                swept = api.sweep(
                    config,
                    grid=options(grid or [], parse_grid_option, "--grid") or None,
                    random=options(random or [], parse_random_option, "--random") or None,
                    samples=samples,
                    sweep_seed=sweep_seed,
                    overrides=set_ or [],
                    name=name,
                    runs_dir=runs_dir,
                    metric=metric,
                    dry_run=dry_run,
                    force=force,
                    progress=not quiet,
                    stop=stop,
                    on_point=None if quiet else on_point,
                    resume=resume,
                    tune=tune,
                    tune_seeds=tune_seeds,
                    eval_seeds=eval_seeds,
                    pack=not no_pack,
                    executor=executor,
                    ray_address=ray_address,
                    max_parallel=max_parallel,
                    ray_ship_code=ray_ship_code,
                    on_note=on_note,
                )
            except KeyboardInterrupt:
                if not stop():  # Ctrl-C while connecting to Ray (else: "Aborting now.")
                    typer.echo("Interrupted.", err=True)
                raise typer.Exit(EXIT_INTERRUPTED) from None
        from aaf_cli import render

        if dry_run:
            render.print_sweep_plan(swept)
            return
        if not quiet:
            render.print_sweep(swept, folder=False)
        typer.echo(str(swept.folder))
        if swept.status == "interrupted":
            raise typer.Exit(EXIT_INTERRUPTED)
        if swept.failed:
            failed = ", ".join(str(p.index) for p in swept.failed)
            typer.echo(f"Error: points failed: {failed} (see points.csv)", err=True)
            raise typer.Exit(1)
        if swept.status == "failed":
            typer.echo("Error: the tuned evaluation run failed (see sweep.yaml)", err=True)
            raise typer.Exit(1)


def main() -> None:
    """Entry point of the ``aaf`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        _quiet_finalizers()
        typer.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        # A bug, not bad input: still one line, with the way to the traceback.
        if _state["debug"]:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(
            f"Error: internal error ({type(exc).__name__}: {first[:200]}); rerun with "
            "--debug for the traceback and please report it",
            err=True,
        )
        sys.exit(1)
