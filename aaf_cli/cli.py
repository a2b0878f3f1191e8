"""The ``aaf`` command line. Each command parses options, calls one core function, prints.

Heavy modules (torch, matplotlib, the config schema) are imported inside the commands, so that
``aaf --help`` answers at once.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aaf_cli import __version__
from aaf_cli.errors import EXIT_INTERRUPTED, AafError

if TYPE_CHECKING:
    from aaf_cli.config import ExperimentConfig
    from aaf_cli.pipeline import RunReport

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
def _errors() -> Iterator[None]:
    """Turn aaf's own errors into one line on stderr and their exit code."""
    try:
        yield
    except AafError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _load(config: Path | None, overrides: list[str] | None) -> tuple[ExperimentConfig, str]:
    from aaf_cli.config import DEFAULT_SOURCE, load_config

    return load_config(config, overrides or []), str(config) if config else DEFAULT_SOURCE


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
        cfg, source = _load(config, set_)
        _check_size(cfg, source, force)
        from aaf_cli.pipeline import execute

        with _interruptible() as stop:
            if quiet:
                report = execute(cfg, runs_dir, source, set_ or [], stop=stop)
            else:
                report = _run_with_progress(cfg, runs_dir, source, set_ or [], execute, stop)
                _print_report(report)
        typer.echo(str(report.folder))
        if report.summary["status"] == "interrupted":
            raise typer.Exit(EXIT_INTERRUPTED)


def _check_size(cfg: ExperimentConfig, source: str, force: bool) -> None:
    from aaf_cli.budget import estimate, over_limits
    from aaf_cli.errors import UsageError

    est = estimate(cfg)
    over = over_limits(cfg, est)
    if over and not force:
        raise UsageError(
            f"{source}: too large ({'; '.join(over)}): {est.describe()}; run it anyway with --force"
        )


@contextmanager
def _interruptible() -> Iterator[Callable[[], bool]]:
    """Ctrl-C or SIGTERM asks training to stop after the current step (the results so far are
    written); a second Ctrl-C stops at once."""
    import signal

    requested: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if requested:
            typer.echo("Aborting now.", err=True)
            raise KeyboardInterrupt
        requested.append(signum)
        typer.echo("Stopping after this step (Ctrl-C again to abort)...", err=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run_with_progress(
    cfg: ExperimentConfig,
    runs_dir: Path,
    source: str,
    overrides: list[str],
    execute: Callable[..., RunReport],
    stop: Callable[[], bool],
) -> RunReport:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from aaf_cli.stats import quantile

    console = Console(stderr=True)
    from aaf_cli.experiment import members

    names = [v.name for v in cfg.variants]
    # Models are ordered by training group, not by variant: find each variant's rows.
    order = members(cfg)
    rows = {name: [i for i, m in enumerate(order) if m.variant == name] for name in names}
    progress = Progress(
        TextColumn("[bold]{task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    )
    task = progress.add_task("", total=cfg.train.steps, name=cfg.name)

    def on_log(record: Any) -> None:
        losses = record.train_loss.tolist()
        parts = []
        for name in names:
            values = [losses[i] for i in rows[name] if math.isfinite(losses[i])]
            shown = f"{quantile(values, 0.5):.2e}" if values else "diverged"
            parts.append(f"{name} {shown}")
        progress.update(task, completed=record.step, description="  ".join(parts))

    with progress:
        report = execute(
            cfg,
            runs_dir,
            source,
            overrides,
            on_start=lambda folder: console.print(f"run folder: {folder}"),
            on_log=on_log,
            stop=stop,
        )
    return report


def _print_report(report: RunReport) -> None:
    from rich.table import Table

    summary = report.summary
    seeds = len(summary["seeds"])
    title = f"{summary['name']}: {summary['data']['target']}, {summary['steps_done']} steps"
    if seeds > 1:
        title += f", median over {seeds} seeds"
    title += f"; all models trained together in {summary['train_time_s']:.1f} s"
    table = Table(title=title)
    table.add_column("variant", no_wrap=True)
    for column in ("final train", "final test", "best train", "best test"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column(f"steps to {summary['threshold']:g}", justify="right", no_wrap=True)
    table.add_column("final parameters", justify="left")
    for name, v in summary["variants"].items():
        reach = v["steps_to_threshold"]
        if reach["median"] is None:
            steps = "never"
        else:
            steps = f"{reach['median']:.0f}"
            if reach["never"]:
                steps += f" ({reach['never']}/{v['seeds']} never)"
        table.add_row(
            name + (f" ({v['diverged']} diverged)" if v["diverged"] else ""),
            _fmt(v["final_train"]["median"]),
            _fmt(v["final_test"]["median"]),
            _fmt(v["best_train"]["median"]),
            _fmt(v["best_test"]["median"]),
            steps,
            _params(v["final_params"]),
        )
    console = _console()
    console.print(table)
    for comparison in summary["comparisons"]:
        console.print(f"  {comparison['verdict']}", highlight=False, soft_wrap=True)
    if summary["status"] != "completed":
        console.print(f"  status: {summary['status']}", style="yellow", highlight=False)


def _params(final: dict[str, Any], most: int = 4) -> str:
    """Median final activation parameters, e.g. 'n*a 9.5' (neuron-wise: layer means only)."""
    shown = [
        f"{name} {_fmt(stats['median'], '.3g')}"
        for name, stats in final.items()
        if not name.endswith((" min", " max"))
    ]
    if len(shown) > most:
        shown = [*shown[:most], f"+{len(shown) - most} more"]
    return ", ".join(shown) or "-"


def _fmt(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


@app.command()
def validate(config: ConfigArg = None, set_: SetOpt = None) -> None:
    """Check a config without running it and print it fully resolved.

    Example: aaf validate configs/elu.yaml --set train.lr=1e-2
    """
    with _errors():
        cfg, source = _load(config, set_)
        from aaf_cli.budget import estimate, over_limits

        est = estimate(cfg)
        over = over_limits(cfg, est)
        header = f"# {source}: valid\n# size: {est.describe()}\n"
        if over:
            header += f"# over the limits ({'; '.join(over)}): aaf run needs --force\n"
        typer.echo(cfg.to_yaml(header), nl=False)


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


def _console() -> Any:
    from rich.console import Console

    # Piped output gets a fixed width rather than rich's 80-column fallback.
    return Console() if sys.stdout.isatty() else Console(width=130)


@app.command()
def compare(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Run folders, run names under --runs-dir (the newest of that name) or globs.",
            metavar="RUN...",
            show_default=False,
        ),
    ] = None,
    last: Annotated[
        int | None, typer.Option("--last", help="Also take the N newest runs.", show_default=False)
    ] = None,
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
        from datetime import datetime

        from aaf_cli import compare as core
        from aaf_cli.errors import UsageError
        from aaf_cli.runs import resolve_runs, unique_runs, write_atomic

        if not runs and last is None:
            raise UsageError("give run folders, names or globs, or --last N (see aaf list)")
        wanted = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
        folders, repeats = unique_runs(resolve_runs(runs or [], runs_dir, last))
        for repeat in repeats:
            typer.echo(f"note: {repeat.path} is given more than once; drawn once", err=True)
        target = _compare_output(out, runs_dir, datetime.now())
        curves = core.build_curves(folders, metric, band, wanted, x, smooth)
        # Every folder is read (and so checked) before anything is written.
        rows = [
            row
            for folder, label in zip(folders, core.labels(folders))
            for row in core.table_rows(folder, label, _kept(folder, wanted))
        ]
        from aaf_cli import plots

        thresholds = {f.threshold for f in folders}
        what = "test" if metric == "test" else "training"
        title = f"{what} MSE (data loss), median over seeds"
        if smooth > 1:
            title += f", smoothed over {smooth} logged points"
        plots.compare(
            curves,
            target,
            title,
            "seconds of training" if x == "time" else "step",
            thresholds.pop() if len(thresholds) == 1 else None,
        )
        csv_path = target.with_suffix(".csv")
        write_atomic(csv_path, core.curves_csv(curves, x, band, smooth))
        _print_rows(rows, f"{len(folders)} runs")
        typer.echo(f"figure: {target}")
        typer.echo(f"data:   {csv_path}")


def _kept(folder: Any, wanted: list[str] | None) -> list[str]:
    return [v for v in folder.variants if wanted is None or v in wanted]


def _compare_output(out: Path | None, runs_dir: Path, now: Any) -> Path:
    from aaf_cli.errors import UsageError

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


def _print_rows(rows: list[Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in ("run", "variant"):
        table.add_column(column, overflow="fold")
    for column in ("seeds", "steps", "final test", "best test", "steps to thr."):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("vs baseline", no_wrap=True)
    previous = None
    for r in rows:
        reach = "never" if r.steps_to_threshold is None else f"{r.steps_to_threshold:.0f}"
        if r.steps_to_threshold is not None and r.never:
            reach += f" ({r.never} never)"
        seeds = str(r.seeds) + (f" ({r.diverged} div.)" if r.diverged else "")
        if previous is not None and r.run != previous:
            table.add_section()
        table.add_row(
            "" if r.run == previous else r.run,
            r.variant,
            seeds,
            str(r.steps),
            _fmt(r.final_test),
            _fmt(r.best_test),
            reach,
            r.versus,
        )
        previous = r.run
    console = _console()
    console.print(table)
    console.print(
        "vs baseline: seeds where the final test MSE is lower, geometric-mean ratio of final "
        "test MSEs (below 1: better), Wilcoxon signed-rank p",
        style="dim",
        highlight=False,
    )
    for r in rows:
        if r.verdict:
            console.print(f"  {r.run}: {r.verdict}", highlight=False, soft_wrap=True)


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

        from aaf_cli.compare import describe_run
        from aaf_cli.errors import RunError
        from aaf_cli.runs import find_runs

        entries: list[dict[str, Any]] = []
        problems: list[str] = []
        for folder in find_runs(runs_dir):
            try:
                entries.append(describe_run(folder))
            except RunError as exc:
                problems.append(str(exc))
                entries.append(
                    {"folder": str(folder.path), "status": "unreadable", "error": str(exc)}
                )
        if as_json:
            from aaf_cli.runs import jsonable

            typer.echo(json.dumps(jsonable(entries), indent=2))
        elif not entries:
            typer.echo(f"No runs in {runs_dir}. Start one with: aaf run")
        else:
            _print_list(entries, runs_dir)
        for problem in problems:
            typer.echo(f"Error: {problem}", err=True)
        if problems:
            raise typer.Exit(RunError.exit_code)


def _print_list(entries: list[dict[str, Any]], runs_dir: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{len(entries)} runs in {runs_dir}, newest first")
    table.add_column("folder", overflow="fold")
    for column in ("target", "variants", "seeds", "steps", "status", "best test (median)"):
        table.add_column(column, overflow="fold")
    table.add_column("time", justify="right", no_wrap=True)
    colours = {"completed": "green", "interrupted": "yellow", "diverged": "red"}
    for e in entries:
        status = e["status"]
        if status == "unreadable":
            table.add_row(Path(e["folder"]).name, "", "", "", "", "[red]unreadable[/]", "", "")
            continue
        if e["steps"] is None:
            steps = "-"
        elif e["steps_done"] != e["steps"]:
            steps = f"{e['steps_done']}/{e['steps']}"
        else:
            steps = str(e["steps"])
        best = ", ".join(f"{k} {_fmt(v)}" for k, v in e["best_test"].items())
        duration = e["duration_s"]
        table.add_row(
            Path(e["folder"]).name,
            str(e["target"] or "-"),
            ", ".join(e["variants"]) or "-",
            "-" if e["seeds"] is None else str(e["seeds"]),
            steps,
            f"[{colours.get(status, 'magenta')}]{status}[/]",
            best,
            "-" if duration is None else f"{duration:.0f} s",
        )
    _console().print(table)


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
    """Show one run: its config highlights, results table, verdicts and files.

    Example: aaf show elu
    """
    with _errors():
        from aaf_cli.compare import table_rows
        from aaf_cli.errors import UsageError
        from aaf_cli.runs import resolve_runs, unique_runs

        found, _ = unique_runs(resolve_runs([run_], runs_dir))
        if len(found) > 1:
            names = ", ".join(f.path.name for f in found[:5])
            raise UsageError(f"'{run_}' matches {len(found)} runs ({names}...); show takes one")
        folder = found[0]
        # Read (and so check) the config, summary and metrics before printing anything.
        folder.config, folder.series  # noqa: B018
        summary = folder.summary
        console = _console()
        console.print(f"[bold]{folder.path}[/]  status: {folder.status}", highlight=False)
        if summary is not None:
            console.print(
                f"started {summary['started']}, {summary['duration_s']:.1f} s "
                f"(training {summary['train_time_s']:.1f} s), {summary['steps_done']}/"
                f"{summary['steps']} steps, seeds {summary['seeds']}",
                highlight=False,
            )
        for line in _highlights(folder):
            console.print(f"  {line}", highlight=False)
        rows = table_rows(folder, folder.label)
        _print_rows(rows, "results (medians over seeds)")
        if summary is not None and summary["status"] != "completed":
            console.print(f"status: {summary['status']}", style="yellow", highlight=False)
        console.print("files:", highlight=False)
        for name, size in folder.files():
            console.print(f"  {name:28s} {size:>10,d} bytes", highlight=False)


def _highlights(folder: Any) -> list[str]:
    cfg = folder.config
    target, model, train = (folder.section(k) for k in ("target", "model", "train"))
    domain = target.get("domain")
    if isinstance(domain, list) and all(isinstance(v, (int, float)) for v in domain):
        domain = "[" + ", ".join(f"{v:.6g}" for v in domain) + "]"
    lines = [
        f"target: {target.get('name') or target.get('expr')} on {domain}, "
        f"{target.get('n_train')} {target.get('sampling', '')} training points, "
        f"noise {target.get('noise')}",
        f"model: {model.get('layers')} {model.get('activation')}, init {model.get('init')}",
        f"train: {train.get('optimizer')} lr {train.get('lr')}, {train.get('steps')} steps, "
        f"threshold {train.get('threshold')}, dtype {cfg.get('dtype')}",
    ]
    for v in cfg.get("variants") or []:
        if isinstance(v, dict):
            params = ", ".join(
                f"{k}={x}" for k, x in v.items() if k not in ("name", "kind") and x is not None
            )
            lines.append(
                f"variant {v.get('name')}: {v.get('kind')}" + (f" ({params})" if params else "")
            )
    return lines


def main() -> None:
    """Entry point of the ``aaf`` console script."""
    try:
        app()
    except KeyboardInterrupt:
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
