"""The ``aaf sweep`` command's options and its progress lines (``cli`` declares the command).

Twenty options make a long signature: each is declared here once, as a typed alias, so that the
command in ``cli`` reads as what it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

if TYPE_CHECKING:
    from aaf_cli.sweeps.local import PointEvent

import typer

SweepConfigOpt = Annotated[
    Path | None,
    typer.Argument(
        help="A sweep file (with grid:/random:, base: or config:) or the base experiment "
        "config. Omitted: the built-in default experiment.",
        show_default=False,
        metavar="CONFIG_OR_SWEEP_FILE",
    ),
]

GridOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--grid",
        metavar="KEY=V1,V2,...",
        help="Sweep a config key over values (YAML scalars, or a flow list KEY=[1,2]); "
        "several --grid make every combination.",
        show_default=False,
    ),
]

RandomOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--random",
        metavar="KEY=DIST",
        help="Draw a key from loguniform(LO,HI), uniform(LO,HI) or choice(a,b,...) "
        "--samples times (each draw crossed with the grid).",
        show_default=False,
    ),
]

SamplesOpt = Annotated[
    int | None,
    typer.Option("--samples", help="Random draws (with --random).", show_default=False),
]

SweepSeedOpt = Annotated[
    int | None,
    typer.Option("--sweep-seed", help="Seed of the random draws (default 0).", show_default=False),
]

NameOpt = Annotated[
    str | None,
    typer.Option("--name", help="The sweep folder's name.", show_default=False),
]

SweepRunsDirOpt = Annotated[
    Path, typer.Option("--runs-dir", help="Where the sweep folder is made.")
]

MetricOpt = Annotated[
    str | None,
    typer.Option(
        "--metric",
        help="What sweep.png draws: the final test MSE (final, the default) or the test MSE at "
        "each seed's step of lowest validation loss (best).",
        show_default=False,
    ),
]

DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Check every point, print them and the estimate; run nothing."),
]

ResumeOpt = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        metavar="SWEEP_FOLDER",
        help="Run the points of this sweep folder that are not done.",
        show_default=False,
    ),
]

QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or table; print the folder only.")
]

ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Run a sweep over the size limits (its total counts)."),
]

TuneOpt = Annotated[
    str | None,
    typer.Option(
        "--tune",
        metavar="KEY",
        help="Tuned-baseline protocol: each variant picks its best value of this grid key "
        "(train.lr, train.weight_decay or variants.K.<field>) on the tuning seeds, then "
        "all are compared at their choices on fresh seeds.",
        show_default=False,
    ),
]

TuneSeedsOpt = Annotated[
    int | None,
    typer.Option("--tune-seeds", help="Tuning seeds 0..N-1 (default 5).", show_default=False),
]

EvalSeedsOpt = Annotated[
    int | None,
    typer.Option(
        "--eval-seeds",
        help="Fresh evaluation seeds 1000..1000+N-1 (default 10).",
        show_default=False,
    ),
]

NoPackOpt = Annotated[
    bool,
    typer.Option(
        "--no-pack",
        help="Train every point alone (default: points that differ only in per-model "
        "settings train as one ensemble, with the same numbers).",
    ),
]

ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        metavar="local|ray",
        help="local: in this process. ray: one Ray task per packed job (pip install 'aaf[ray]').",
    ),
]

RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        metavar="auto|HOST:PORT",
        help="Join a running Ray cluster (auto: the one `ray start` runs here); omitted: "
        "a local Ray instance for this sweep.",
        show_default=False,
    ),
]

MaxParallelOpt = Annotated[
    int | None,
    typer.Option(
        "--max-parallel",
        help="Most jobs at once on Ray (default: one per CPU); threads per job divide the cores.",
        show_default=False,
    ),
]


RayShipCodeOpt = Annotated[
    bool,
    typer.Option(
        "--ray-ship-code",
        help="Send this aaf to the Ray nodes (they need its dependencies, not aaf itself).",
    ),
]


def point_line(event: PointEvent, finished: int) -> str:
    """One finished point as the progress log says it: ``[3/6] point 5 (lr=0.01): completed
    in 4.1 s; adaptive x0.8 vs fixed``, where 3 is ``finished``, the points finished so far
    (``PointCount``), and 5 the point's index."""
    line = f"[{finished}/{event.count}] point {event.index} ({event.label}): "
    line += event.status
    if event.packed > 1:  # one job trained them together: its time is theirs
        line += f" (job of {event.packed} packed points: {event.seconds:.1f} s)"
    else:
        line += f" in {event.seconds:.1f} s"
    for c in event.comparisons:
        ratio = c.get("ratio_geomean")
        if isinstance(ratio, float):
            line += f"; {c['variant']} x{ratio:.2g} vs {c['baseline']}"
    if event.error:
        line += f": {event.error}"
    return line


class PointCount:
    """Counts the finished points of one ``aaf sweep`` for the progress lines: those done before
    a resumed sweep started, then each point as it ends, in whatever order parallel jobs end,
    so that the last line of a sweep that completes reads ``[N/N]``."""

    def __init__(self) -> None:
        self.finished: int | None = None

    def __call__(self, event: PointEvent) -> int:
        """The count after ``event`` (a point that ended adds one)."""
        if self.finished is None:
            self.finished = event.done_before
        if event.phase == "done":
            self.finished += 1
        return self.finished
