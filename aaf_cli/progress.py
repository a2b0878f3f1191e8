"""A live progress bar for a training run (rich, on stderr): presentation, not core.

Used by ``aaf run`` and by ``aaf_cli.run(..., progress=True)``; the engine only sees the two
callbacks it yields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aaf_cli.config import ExperimentConfig


@dataclass(frozen=True)
class Callbacks:
    """What a run calls while it goes: once with its folder, then with every logged record."""

    on_start: Callable[[Path], None]
    on_log: Callable[[Any], None]


@contextmanager
def live_progress(cfg: ExperimentConfig) -> Iterator[Callbacks]:
    """A transient bar with the median training loss of each variant, on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from aaf_cli.experiment import members
    from aaf_cli.stats import quantile

    console = Console(stderr=True)
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

    def on_start(folder: Path) -> None:
        console.print(f"run folder: {folder}", highlight=False)

    with progress:
        yield Callbacks(on_start, on_log)
