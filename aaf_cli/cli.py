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
) -> None:
    """Train the baseline and the adaptive variants of one experiment and write a run folder.

    Example: aaf run configs/elu.yaml --set train.steps=2000
    """
    with _errors():
        cfg, source = _load(config, set_)
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


@contextmanager
def _interruptible() -> Iterator[Callable[[], bool]]:
    """Ctrl-C or SIGTERM asks training to stop after the current step (the results so far are
    written); a second Ctrl-C stops at once."""
    import signal

    requested: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if requested:
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
    names = [v.name for v in cfg.variants]
    seeds = len(cfg.seed_list)
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
        for k, name in enumerate(names):
            values = [v for v in losses[k * seeds : (k + 1) * seeds] if math.isfinite(v)]
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
    from rich.console import Console
    from rich.table import Table

    summary = report.summary
    seeds = len(summary["seeds"])
    title = f"{summary['name']}: {summary['data']['target']}, {summary['steps_done']} steps"
    if seeds > 1:
        title += f", median over {seeds} seeds"
    table = Table(title=title)
    table.add_column("variant", no_wrap=True)
    for column in ("final train", "final test", "best train", "best test"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column(f"steps to {summary['threshold']:g}", justify="right", no_wrap=True)
    table.add_column("final n*a", justify="right", no_wrap=True)
    table.add_column("wall time", justify="right", no_wrap=True)
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
            _fmt(v["final_slope"]["median"], ".3g"),
            f"{v['wall_time_s']:.1f} s",
        )
    # Piped output gets a fixed width rather than rich's 80-column fallback.
    console = Console() if sys.stdout.isatty() else Console(width=130)
    console.print(table)
    for comparison in summary["comparisons"]:
        console.print(f"  {comparison['verdict']}", highlight=False)
    if summary["status"] != "completed":
        console.print(f"  status: {summary['status']}", style="yellow", highlight=False)


def _fmt(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


@app.command()
def validate(config: ConfigArg = None, set_: SetOpt = None) -> None:
    """Check a config without running it and print it fully resolved.

    Example: aaf validate configs/elu.yaml --set train.lr=1e-2
    """
    with _errors():
        cfg, source = _load(config, set_)
        typer.echo(cfg.to_yaml(f"# {source}: valid\n"), nl=False)


@app.command()
def targets() -> None:
    """List the built-in targets with their formula, default domain and points."""
    from aaf_cli.targets import TARGETS

    for spec in TARGETS.values():
        params = ", ".join(f"{k}={v}" for k, v in spec.params.items())
        lo, hi = spec.domain
        typer.echo(
            f"{spec.name:20s} {spec.formula}  on [{lo:g}, {hi:g}], {spec.n_train} points"
            + (f"; params: {params}" if params else "")
        )


@app.command()
def kinds() -> None:
    """List the base activations and the adaptive kinds a variant can use."""
    from aaf_cli.registry import ACTIVATIONS, KINDS

    typer.echo("Adaptive kinds (variants.N.kind):")
    for info in KINDS.values():
        typer.echo(f"  {info.name:10s} {info.formula}")
        typer.echo(f"  {'':10s} parameters: {info.parameters}")
        typer.echo(f"  {'':10s} reference: {info.reference}")
    typer.echo("Base activations (model.activation):")
    for name, formula in ACTIVATIONS.items():
        typer.echo(f"  {name:10s} {formula}")


def main() -> None:
    """Entry point of the ``aaf`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)
