"""Tuning inside a run: every variant at its own best learning rate, chosen on validation data.

A comparison at one shared learning rate can be won by the variant that rate suits. So a run
(``tune:``, on by default) first trains every variant at each rate of a small grid (its own
rate times 1/3, 1 and 3, or ``tune.lr``) on *tuning seeds* — fresh seeds, never the run's own —
as one batched ensemble, and picks for each variant the rate whose final *validation* loss has
the smallest median over those seeds. The tuning phase is given no test data at all, so no test
number can enter a choice. Then the run's own seeds train every variant at its chosen rate,
and the comparison on them is the run's verdict: the luck of the selection (which seeds a rate
happened to suit) cannot inflate it, because those seeds never took part in the choice.

The two phases are ordinary experiments (``tuning_config``, ``evaluation_config``): a packed
sweep trains the tuning phases of all its points as one ensemble, then their evaluations.
Config-level helpers are torch-free; ``train_tuned`` imports the engine when it runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from aaf_cli.config import ExperimentConfig

if TYPE_CHECKING:
    from aaf_cli.experiment import ExperimentResult
    from aaf_cli.results import Series

TUNING_FILE = "tuning.csv"
TUNING_FIGURE = "tuning.png"
#: The tuning phase's curves (metrics format; no test column: it measured none).
TUNING_METRICS = "tuning_metrics.csv"
TUNING_COLUMNS = ["variant", "lr", "seed", "final_val", "criterion", "chosen"]


def criterion_text(metric: str = "MSE") -> str:
    """The rule of the choice in words (``summary.json``, ``tuning.csv``)."""
    return (
        f"the smallest median over the tuning seeds of the final validation {metric} (the median "
        "of its last 5% of logged points; a diverged seed counts as +inf); ties: the smaller rate"
    )


def own_rate(cfg: ExperimentConfig, variant: Any) -> float:
    """A variant's configured learning rate: its own ``lr``, else ``train.lr``."""
    return float(variant.lr) if variant.lr is not None else cfg.train.lr


def rates(cfg: ExperimentConfig, variant: Any) -> list[float]:
    """The learning rates tried for ``variant`` (``TuneConfig.grid``)."""
    assert cfg.tune is not None
    return cfg.tune.grid(own_rate(cfg, variant))


def tuning_seeds(cfg: ExperimentConfig) -> list[int]:
    """The tuning seeds of ``cfg``: never one of its own (``TuneConfig.seed_list``)."""
    assert cfg.tune is not None
    return cfg.tune.seed_list(cfg.seed_list)


def tuned_name(variant: str, k: int) -> str:
    """The name of ``variant`` at the ``k``-th rate of its grid, inside the tuning phase."""
    return f"{variant}@lr{k}"


def tuning_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The tuning phase as an experiment: every variant once per rate of its grid, on the
    tuning seeds, itself untuned. (Built without validation: its variant names carry the rate's
    index, ``tuned_name``, and may be longer than a config allows.)"""
    variants = [
        v.model_copy(update={"name": tuned_name(v.name, k), "lr": r})
        for v in cfg.variants
        for k, r in enumerate(rates(cfg, v))
    ]
    return cfg.model_copy(update={"variants": variants, "seeds": tuning_seeds(cfg), "tune": None})


def evaluation_config(cfg: ExperimentConfig, chosen: dict[str, float]) -> ExperimentConfig:
    """The evaluation phase: ``cfg`` with every variant at its chosen rate (the run's own
    seeds), untuned."""
    variants = [v.model_copy(update={"lr": chosen[v.name]}) for v in cfg.variants]
    return cfg.model_copy(update={"variants": variants, "tune": None})


def model_count(cfg: ExperimentConfig) -> tuple[int, int]:
    """(models of the tuning phase, models of the evaluation phase); (0, all) when untuned."""
    evaluation = len(cfg.variants) * len(cfg.seed_list)
    if cfg.tune is None:
        return 0, evaluation
    per_rate = len(tuning_seeds(cfg))
    return sum(len(rates(cfg, v)) for v in cfg.variants) * per_rate, evaluation


def median_final(values: Sequence[float]) -> float:
    """The criterion of one rate: the median of the seeds' final validation values, a
    non-finite one (a diverged seed) counted as +inf."""
    cleaned = [v if math.isfinite(v) else math.inf for v in values]
    return float(statistics.median(cleaned)) if cleaned else math.inf


def select(grid: Sequence[float], per_seed: Sequence[Sequence[float]]) -> tuple[int, list[float]]:
    """The index of the chosen rate and every rate's criterion (``median_final``), from the
    validation values alone: the smallest criterion, ties to the smaller rate."""
    criteria = [median_final(values) for values in per_seed]
    best = min(range(len(grid)), key=lambda i: (criteria[i], grid[i]))
    return best, criteria


@dataclass
class VariantTuning:
    """One variant's grid, each rate's per-seed final validation values and criterion."""

    rates: list[float]
    per_seed: list[list[float]]
    criterion: list[float]
    chosen: float

    @property
    def at_edge(self) -> bool:
        """Whether the chosen rate is the smallest or largest tried (its best may lie beyond)."""
        return len(self.rates) > 1 and self.chosen in (min(self.rates), max(self.rates))


@dataclass
class Tuning:
    """What a run's tuning phase found; ``summary.json``'s ``tuning`` entry."""

    seeds: list[int]
    metric: str
    variants: dict[str, VariantTuning] = field(default_factory=dict)
    train_time_s: float = 0.0
    steps_done: int = 0
    interrupted: bool = False
    series: list[Series] = field(default_factory=list, repr=False)  # the tuning models' curves

    @property
    def chosen(self) -> dict[str, float]:
        return {name: v.chosen for name, v in self.variants.items()}

    def notes(self) -> list[str]:
        """A note per variant whose choice sits at an edge of its grid, and one when the
        tuning phase was cut short."""
        out = []
        for name, v in self.variants.items():
            if v.at_edge:
                edge = "largest" if v.chosen == max(v.rates) else "smallest"
                out.append(
                    f"{name}'s learning rate {v.chosen:.3g} is the {edge} tried: its best may lie "
                    "beyond the grid; widen tune.lr"
                )
        if self.interrupted:
            out.append(
                f"tuning was interrupted at step {self.steps_done}: the rates were chosen from "
                "the steps done"
            )
        return out

    def record(self) -> dict[str, Any]:
        return {
            "on": True,
            "key": "lr",
            "split": "validation",
            "criterion": criterion_text(self.metric),
            "seeds": list(self.seeds),
            "chosen": self.chosen,
            "variants": {name: asdict(v) for name, v in self.variants.items()},
            "notes": self.notes(),
            "train_time_s": self.train_time_s,
            "steps_done": self.steps_done,
            "interrupted": self.interrupted,
        }


def untuned_record() -> dict[str, Any]:
    """``summary.json``'s ``tuning`` entry of a run with ``tune: off``."""
    return {
        "on": False,
        "note": "every variant trained at its configured learning rate (tune: off)",
    }


def choose(cfg: ExperimentConfig, phase: ExperimentResult) -> Tuning:
    """Each variant's rate from its tuning phase (``phase``, trained from
    ``tuning_config(cfg)``): its per-model final validation values only."""
    from aaf_cli.experiment import tidy

    series, outcomes = tidy(phase)
    finals: dict[tuple[str, int], float] = {
        (o.variant, o.seed): (math.inf if o.diverged else o.final_val) for o in outcomes
    }
    seeds = tuning_seeds(cfg)
    metric = cfg.problem_section().facts.quantity
    tuning = Tuning(
        seeds,
        metric,
        train_time_s=phase.result.wall_time,
        steps_done=phase.result.steps_done,
        interrupted=phase.result.interrupted,
        series=series,
    )
    for v in cfg.variants:
        grid = rates(cfg, v)
        per_seed = [
            [finals.get((tuned_name(v.name, k), s), math.inf) for s in seeds]
            for k in range(len(grid))
        ]
        index, criteria = select(grid, per_seed)
        tuning.variants[v.name] = VariantTuning(grid, per_seed, criteria, grid[index])
    return tuning


#: Trains some experiments (one pack), with test data or without, calling ``on_log`` with
#: each logged record; returns one result per config.
#: (A pack's ``on_log`` takes one record per point: the callbacks are passed through as given.)
Trainer = Callable[
    [Sequence[ExperimentConfig], bool, "Callable[[Any], None] | None"],
    "list[ExperimentResult]",
]


def train_tuned(
    configs: Sequence[ExperimentConfig],
    trainer: Trainer,
    on_log: Callable[[Any], None] | None = None,
    on_tuning_log: Callable[[Any], None] | None = None,
    on_phase: Callable[[str, Sequence[ExperimentConfig]], None] | None = None,
) -> list[ExperimentResult]:
    """Train ``configs`` (equal in ``tune``): untuned, one call of ``trainer``; tuned, the
    tuning phases of all of them (no test data), each one's choice, then their evaluations.

    Args:
        configs: the experiments (one run, or the points of one pack).
        trainer: trains a list of configs as one pack (``Trainer``).
        on_log: the evaluation phase's records (those of the run's own models).
        on_tuning_log: the tuning phase's records.
        on_phase: told ``tuning`` and ``evaluation`` (with that phase's configs) as each
            starts.

    Returns:
        One result per config, of its evaluation phase, with its ``tuning``.
    """
    if not configs or configs[0].tune is None:
        if on_phase is not None:
            on_phase("evaluation", list(configs))
        return trainer(configs, True, on_log)
    phase = [tuning_config(c) for c in configs]
    if on_phase is not None:
        on_phase("tuning", phase)
    found = [choose(c, r) for c, r in zip(configs, trainer(phase, False, on_tuning_log))]
    evaluation = [evaluation_config(c, t.chosen) for c, t in zip(configs, found)]
    if on_phase is not None:
        on_phase("evaluation", evaluation)
    results = trainer(evaluation, True, on_log)
    for result, tuning in zip(results, found):
        result.tuning = tuning
    return results


def tuning_csv(tuning: Tuning) -> str:
    """``tuning.csv``: per variant, rate and tuning seed, the final validation value, with the
    rate's criterion and whether it was chosen."""
    from aaf_cli.runs import csv_buffer, num_text

    line = f"# aaf tuning format 1; chosen: {criterion_text(tuning.metric)}"
    out, writer = csv_buffer(line, TUNING_COLUMNS)
    for name, v in tuning.variants.items():
        for rate, values, crit in zip(v.rates, v.per_seed, v.criterion):
            for seed, value in zip(tuning.seeds, values):
                writer.writerow(
                    [name, num_text(rate), seed, num_text(value), num_text(crit),
                     int(rate == v.chosen)]
                )  # fmt: skip
    return out.getvalue()


def tuning_line(tuning: dict[str, Any]) -> str:
    """'at each variant's best learning rate (fixed 3e-3, adaptive 1e-3; chosen on validation
    data, 3 tuning seeds)' from a summary's ``tuning`` entry."""
    chosen = ", ".join(f"{n} {r:.3g}" for n, r in (tuning.get("chosen") or {}).items())
    seeds = len(tuning.get("seeds") or [])
    return (
        f"at each variant's best learning rate ({chosen}; chosen on validation data, "
        f"{seeds} tuning seed{'s' if seeds != 1 else ''})"
    )


UNTUNED_WARNING = (
    "the learning rates were not tuned (tune: off): a variant may win only because the shared "
    "rate suits it; drop tune: off to give every variant its own best rate"
)
