"""A live progress bar for a training run (rich, on stderr): presentation, not core.

Used by ``aaf run`` and by ``aaf_cli.run(..., progress=True)``; the engine only sees the two
callbacks it yields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aaf_cli.config import ExperimentConfig


@dataclass(frozen=True)
class Callbacks:
    """What a run calls while it goes: once with its folder, at the start of each phase (a
    tuned run's tuning, then every run's evaluation) with that phase's configs, then with every
    logged record of that phase."""

    on_start: Callable[[Path], None]
    on_log: Callable[[Any], None]
    on_phase: Callable[[str, Sequence[ExperimentConfig]], None]


@contextmanager
def live_progress(cfg: ExperimentConfig) -> Iterator[Callbacks]:
    """A transient bar per phase with the median training loss of each variant, on stderr (a
    tuning phase shows the median over every rate and seed of each variant)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from aaf_cli.experiment import members
    from aaf_cli.stats import quantile

    console = Console(stderr=True)
    names = [v.name for v in cfg.variants]
    progress = Progress(
        TextColumn("[bold]{task.fields[name]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    )
    # Rows of each shown name in the current phase's ensemble (ordered by training group).
    state: dict[str, Any] = {"task": None, "rows": {}}

    def on_phase(phase: str, configs: Sequence[ExperimentConfig]) -> None:
        if state["task"] is not None:
            progress.update(state["task"], completed=cfg.train.steps)
        order = members(configs[0])
        label = cfg.name
        if phase == "tuning":
            from aaf_cli.tuning import rates

            tried = {v.name: len(rates(cfg, v)) for v in cfg.variants}
            label = f"{cfg.name}: tuning lr"
            console.print(
                "tuning each variant's learning rate on validation data ("
                + ", ".join(f"{n}: {k} rates" for n, k in tried.items())
                + f"; {len(configs[0].seed_list)} tuning seeds each), then the comparison",
                highlight=False,
            )
        if phase == "controls":
            from aaf_cli.controls import sources

            label = f"{cfg.name}: slopes for the controls"
            console.print(
                "first training "
                + ", ".join(sorted(set(sources(cfg).values())))
                + " to read the learned steepness its fixed control takes ("
                + ", ".join(f"{c} <- {s}" for c, s in sources(cfg).items())
                + ")",
                highlight=False,
            )
        rows: dict[str, list[int]] = {name: [] for name in names}
        for i, m in enumerate(order):
            base = m.variant.split("@", 1)[0]  # a tuning model's variant (tuning.tuned_name)
            if base in rows:
                rows[base].append(i)
        state["rows"] = rows
        state["task"] = progress.add_task(
            compiling(configs[0], len(order)), total=cfg.train.steps, name=label
        )

    def on_log(record: Any) -> None:
        if state["task"] is None:
            on_phase("evaluation", [cfg])
        losses = record.train_loss.tolist()
        parts = []
        for name in names:
            values = [losses[i] for i in state["rows"][name] if math.isfinite(losses[i])]
            shown = f"{quantile(values, 0.5):.2e}" if values else "diverged"
            parts.append(f"{name} {shown}")
        progress.update(state["task"], completed=record.step, description="  ".join(parts))

    def on_start(folder: Path) -> None:
        console.print(f"run folder: {folder}", highlight=False)

    with progress:
        yield Callbacks(on_start, on_log, on_phase)


def compiling(cfg: ExperimentConfig, models: int) -> str:
    """What the bar says before a phase's first logged step: that the step is being compiled,
    when it will be (``train.compile``, or ``auto`` deciding as the engine will), else nothing.
    A cold compile (an empty Inductor cache) takes tens of seconds, a warm one a few."""
    from aaf_cli.budget import predicted_seconds
    from aaf_cli.experiment import resolve_device
    from aaf_cli.train import use_compile

    on, _ = use_compile(
        cfg.train, resolve_device(cfg.device), predicted_seconds(cfg, models), models
    )
    return "compiling the training step (cold: tens of seconds; cached: a few)" if on else ""
