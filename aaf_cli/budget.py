"""How big a run is before it starts: models, memory and time, and the limits that need --force.

The config schema has hard limits that no run may pass (a typo such as ``steps: 1e9``); these
are softer: a run over them is refused with an estimate of its memory and time, and ``aaf run
--force`` runs it anyway. Torch-free, so ``aaf validate`` stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from aaf_cli.config import ExperimentConfig
from aaf_cli.targets import grid_side

SOFT_LIMITS = {
    "train.steps": 200_000,
    "target.n_train": 100_000,
    "model width": 1024,
    "seeds": 100,
    "models (variants x seeds)": 512,
}
MAX_HOURS = 6.0
MAX_MEMORY_FRACTION = 0.5
# Sustained rate of the batched engine on a 2-core CPU (benchmarks/bench_engine.py measured
# 5-34 GFLOP/s); the lower end keeps the time estimate on the safe side.
ASSUMED_FLOPS = 5e9
# Floats kept per hidden unit and point for the backward pass (pre-activation, activation,
# their gradients); Rowdy keeps K-1 more.
FLOATS_PER_UNIT = 4


@dataclass(frozen=True)
class Estimate:
    models: int
    points: int
    memory_bytes: float
    seconds: float

    def describe(self) -> str:
        return (
            f"{self.models} models on {self.points} points: about "
            f"{_bytes(self.memory_bytes)} of memory and {_duration(self.seconds)} "
            f"(at an assumed {ASSUMED_FLOPS / 1e9:g} GFLOP/s)"
        )


def estimate(cfg: ExperimentConfig) -> Estimate:
    """A rough upper estimate: activations and optimizer state in memory, FLOPs over time."""
    models = len(cfg.variants) * len(cfg.seed_list)
    dims = cfg.model.layers[0]
    points = cfg.target.n_train
    if cfg.target.sampling == "grid":
        points = grid_side(points, dims) ** dims
    widths = [cfg.layers_of(v) for v in cfg.variants]
    hidden = max(sum(layers[1:-1]) for layers in widths)
    weights = max(sum(i * o + o for i, o in zip(ls[:-1], ls[1:])) for ls in widths)
    extra = max((getattr(v, "K", 1) for v in cfg.variants), default=1)
    size = 8 if cfg.dtype == "float64" else 4
    test_points = cfg.target.n_test
    activations = models * max(points, test_points) * hidden * FLOATS_PER_UNIT * extra * size
    state = models * weights * 4 * size  # weights, gradients, two Adam moments
    flops = 6.0 * models * points * (weights + hidden * extra) * cfg.train.steps
    return Estimate(models, points, float(activations + state), flops / ASSUMED_FLOPS)


def over_limits(cfg: ExperimentConfig, est: Estimate) -> list[str]:
    """Which soft limits the config passes, in words; empty if none."""
    values = {
        "train.steps": cfg.train.steps,
        "target.n_train": est.points,
        "model width": max(max(cfg.layers_of(v)) for v in cfg.variants),
        "seeds": len(cfg.seed_list),
        "models (variants x seeds)": est.models,
    }
    out = [
        f"{key} {value} > {SOFT_LIMITS[key]}"
        for key, value in values.items()
        if value > SOFT_LIMITS[key]
    ]
    if est.seconds > MAX_HOURS * 3600:
        out.append(f"estimated time over {MAX_HOURS:g} h")
    memory = physical_memory()
    if memory and est.memory_bytes > MAX_MEMORY_FRACTION * memory:
        out.append(f"estimated memory over half of this machine's {_bytes(memory)}")
    return out


def physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
