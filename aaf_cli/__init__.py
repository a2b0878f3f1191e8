"""aaf: does an adaptive activation function help your network learn? A fair, fast answer.

The Python API (see ``aaf_cli.api`` for the details)::

    import aaf_cli as aaf

    cfg = aaf.load_config("configs/elu.yaml", overrides=["seeds=5"])
    run = aaf.run(cfg, runs_dir="runs")
    print(run.verdicts)
    aaf.compare([run, aaf.open_run("runs/elu")], out="compare.png")

The names below are imported on first use, so ``import aaf_cli`` (and ``aaf --help``) stays
light: torch and matplotlib load only when a run or a figure needs them.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

# Keep this before anything that may import torch: its OpenMP runtime reads it once, when it
# loads. Idle OpenMP threads spin a moment before they sleep: libgomp's default (about 0.3 ms),
# and 1 ms for Intel's and LLVM's runtimes (whose default is 200 ms). The spin is what lets a
# second thread pay (a wake-up per operation otherwise costs more than it brings), and it is
# harmless as long as no other process wants the core: `threads: auto` starts on the free cores
# only, and `budget.ThreadGuard` drops a run to one thread when another process appears (two
# spinning threads beside a CPU-bound process made a run 20-30x slower). A user's setting wins.
os.environ.setdefault("KMP_BLOCKTIME", "1")
#: Whether torch was imported before aaf_cli (then its OpenMP runtime had already read them).
TORCH_LOADED_FIRST = "torch" in sys.modules

__version__ = "0.1.0"

if TYPE_CHECKING:
    from aaf_cli.api import (
        CompareResult,
        History,
        Run,
        check,
        compare,
        export,
        list_runs,
        load_config,
        open_run,
        report,
        run,
        sweep,
    )
    from aaf_cli.config import ExperimentConfig
    from aaf_cli.errors import AafError, ConfigError, RunError, UsageError
    from aaf_cli.sweeps.result import Sweep

_LAZY = {
    "load_config": "aaf_cli.api",
    "check": "aaf_cli.api",
    "run": "aaf_cli.api",
    "open_run": "aaf_cli.api",
    "list_runs": "aaf_cli.api",
    "compare": "aaf_cli.api",
    "export": "aaf_cli.api",
    "report": "aaf_cli.api",
    "Run": "aaf_cli.api",
    "History": "aaf_cli.api",
    "CompareResult": "aaf_cli.api",
    "sweep": "aaf_cli.api",
    "Sweep": "aaf_cli.api",
    "ExperimentConfig": "aaf_cli.config",
    "AafError": "aaf_cli.errors",
    "ConfigError": "aaf_cli.errors",
    "RunError": "aaf_cli.errors",
    "UsageError": "aaf_cli.errors",
}

__all__ = [
    "AafError",
    "CompareResult",
    "ConfigError",
    "ExperimentConfig",
    "History",
    "Run",
    "RunError",
    "Sweep",
    "UsageError",
    "__version__",
    "check",
    "compare",
    "export",
    "list_runs",
    "load_config",
    "open_run",
    "report",
    "run",
    "sweep",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aaf_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
