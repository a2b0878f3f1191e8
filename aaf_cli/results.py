"""Tidy, torch-free results: per-model histories, per-model outcomes, per-variant aggregates.

The same structures are built from a finished training run and read back from a run folder's
``metrics.csv``, so figures and tables look the same either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aaf_cli.stats import (
    Comparison,
    Split,
    Summary,
    adjust_family,
    compare_paired,
    geometric_mean,
    outcome_split,
    quantile,
    tail_value,
    verdict,
)

BAND_IQR_MIN_SEEDS = 5


@dataclass
class Series:
    """The logged history of one model (one variant, one seed)."""

    variant: str
    seed: int
    steps: list[int] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)  # NaN where a run measured no test data
    recovery: list[float] = field(default_factory=list)  # S(a); NaN without slope recovery
    val: list[float] = field(default_factory=list)  # the validation metric; NaN without one
    params: dict[str, list[float]] = field(default_factory=dict)  # activation parameters
    # Function evaluations that reached each step (one per first-order step; an L-BFGS
    # iteration as many as its line search took); empty: one per step (older runs).
    evals: list[int] = field(default_factory=list)
    diverged_at: int | None = None
    # PDE runs: each loss term (term:residual, ...) and identified parameter (param:nu)
    terms: dict[str, list[float]] = field(default_factory=dict)

    def metric(self, name: str) -> list[float]:
        return {
            "train": self.train,
            "test": self.test,
            "val": self.val,
            "recovery": self.recovery,
        }[name]


@dataclass(frozen=True)
class ModelOutcome:
    """Final, last and best losses of one model.

    ``final_*`` is the robust tail value (``stats.tail_value``: the median of the last 5% of
    logged points), ``last_*`` the very last logged point, ``best_*`` the minimum over logged
    points (``best_test`` reads the test data at every step: a description, never a choice);
    ``test_at_best_val`` the test metric at the logged step of the lowest validation metric
    (``best_val_step``: early stopping chosen on validation data); ``steps_to_threshold`` is
    None if never reached.
    """

    variant: str
    seed: int
    final_train: float
    final_test: float
    best_train: float
    best_test: float
    best_test_step: int
    steps_to_threshold: int | None
    final_params: dict[str, float]
    diverged_at: int | None
    last_train: float = math.nan
    last_test: float = math.nan
    initial_train: float = math.nan
    final_val: float = math.nan
    best_val: float = math.nan
    best_val_step: int = -1
    test_at_best_val: float = math.nan

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None


def outcome(series: Series, steps_to_threshold: int | None) -> ModelOutcome:
    """Final values are tail medians (``stats.tail_value``), last values the last logged ones,
    best values minima over logged steps (the first of equal ones); parameters are the last
    logged ones."""
    finite_test = [(v, s) for v, s in zip(series.test, series.steps) if math.isfinite(v)]
    finite_train = [v for v in series.train if math.isfinite(v)]
    best_test, best_step = min(finite_test) if finite_test else (math.nan, -1)
    val = series.val or [math.nan] * len(series.steps)
    finite_val = [(v, i) for i, v in enumerate(val) if math.isfinite(v)]
    best_val, at = min(finite_val) if finite_val else (math.nan, -1)
    return ModelOutcome(
        variant=series.variant,
        seed=series.seed,
        final_train=tail_value(series.train),
        final_test=tail_value(series.test),
        best_train=min(finite_train) if finite_train else math.nan,
        best_test=best_test,
        best_test_step=best_step,
        steps_to_threshold=steps_to_threshold,
        final_params={k: v[-1] for k, v in series.params.items() if v},
        diverged_at=series.diverged_at,
        last_train=series.train[-1],
        last_test=series.test[-1],
        initial_train=series.train[0],
        final_val=tail_value(val),
        best_val=best_val,
        best_val_step=series.steps[at] if at >= 0 else -1,
        test_at_best_val=series.test[at] if at >= 0 else math.nan,
    )


@dataclass(frozen=True)
class Band:
    """Per-step centre (the geometric mean across seeds: ``stats.CENTER``, the statistic of
    every table and verdict) and band of one metric."""

    steps: list[int]
    center: list[float]
    low: list[float]
    high: list[float]
    kind: str  # "iqr", "minmax", "std" or "none"
    seeds: int


def band_kind(seeds: int) -> str:
    """IQR with enough seeds for quartiles to mean something, min-max below, none for one."""
    if seeds <= 1:
        return "none"
    return "iqr" if seeds >= BAND_IQR_MIN_SEEDS else "minmax"


def aggregate(
    series: Sequence[Series], metric: str, kind: str | None = None, center: str = "geomean"
) -> Band:
    """Geometric mean (``center`` ``median``: the median, for values that may be negative, such
    as activation parameters) and band over the non-diverged seeds of one variant, at every
    logged step.

    Diverged seeds are left out entirely. Seeds are aligned by step; steps that not every seed
    logged (an interrupted run) are dropped.
    """
    kept = [s for s in series if s.diverged_at is None]
    kind = kind or band_kind(len(kept))
    if not kept:
        return Band([], [], [], [], kind, 0)
    common = sorted(set.intersection(*(set(s.steps) for s in kept)))
    index = [{step: i for i, step in enumerate(s.steps)} for s in kept]
    steps, med, low, high = [], [], [], []
    for step in common:
        values = [s.metric(metric)[idx[step]] for s, idx in zip(kept, index)]
        steps.append(step)
        med.append(geometric_mean(values) if center == "geomean" else quantile(values, 0.5))
        if kind == "iqr":
            low.append(quantile(values, 0.25))
            high.append(quantile(values, 0.75))
        elif kind == "minmax":
            low.append(min(values))
            high.append(max(values))
        elif kind == "std":
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
            low.append(mean - sd)
            high.append(mean + sd)
        else:
            low.append(med[-1])
            high.append(med[-1])
    return Band(steps, med, low, high, kind, len(kept))


def by_variant(items: Sequence[Any], order: Sequence[str]) -> dict[str, list[Any]]:
    """Group series or outcomes by their ``variant`` attribute, in the given variant order."""
    groups: dict[str, list[Any]] = {name: [] for name in order}
    for item in items:
        groups.setdefault(item.variant, []).append(item)
    return groups


def median_seed(outcomes: Sequence[ModelOutcome]) -> int | None:
    """The seed whose final test loss is the median (lower middle for an even count)."""
    kept = sorted(
        (o for o in outcomes if not o.diverged and math.isfinite(o.final_test)),
        key=lambda o: o.final_test,
    )
    return kept[(len(kept) - 1) // 2].seed if kept else None


def variant_summary(outcomes: Sequence[ModelOutcome]) -> dict[str, Any]:
    """Aggregates across the non-diverged seeds of one variant, and ``split``: the seeds whose
    final test metric sits apart from the others (``stats.outcome_split``), or None."""
    kept = [o for o in outcomes if not o.diverged]
    reached = [o.steps_to_threshold for o in kept if o.steps_to_threshold is not None]
    split = outcome_split(
        [o.final_test for o in kept], [o.initial_train for o in kept], [o.final_train for o in kept]
    )
    return {
        "seeds": len(outcomes),
        "diverged": len(outcomes) - len(kept),
        "final_test": Summary.of([o.final_test for o in kept]).as_dict(),
        "best_test": Summary.of([o.best_test for o in kept]).as_dict(),
        "test_at_best_val": Summary.of([o.test_at_best_val for o in kept]).as_dict(),
        "final_val": Summary.of([o.final_val for o in kept]).as_dict(),
        "final_train": Summary.of([o.final_train for o in kept]).as_dict(),
        "best_train": Summary.of([o.best_train for o in kept]).as_dict(),
        "last_test": Summary.of([o.last_test for o in kept]).as_dict(),
        "last_train": Summary.of([o.last_train for o in kept]).as_dict(),
        "split": split.as_dict() if split is not None else None,
        "final_params": {
            name: Summary.of([o.final_params[name] for o in kept]).as_dict()
            for name in (kept[0].final_params if kept else {})
        },
        "steps_to_threshold": {
            "median": quantile([float(r) for r in reached], 0.5) if reached else None,
            "reached": len(reached),
            "never": len(kept) - len(reached),
        },
    }


def compare_to_baseline(
    outcomes: Sequence[ModelOutcome],
    variants: Sequence[str],
    baseline: str,
    value: Callable[[ModelOutcome], float] | None = None,
) -> list[Comparison]:
    """Every other variant against ``baseline``, paired by seed, Holm-adjusted as a family;
    on the final test metric, or on ``value`` of each outcome (the final training loss)."""
    return compare_pairs(
        outcomes, [(name, baseline) for name in variants if name != baseline], value
    )


def compare_pairs(
    outcomes: Sequence[ModelOutcome],
    pairs: Sequence[tuple[str, str]],
    value: Callable[[ModelOutcome], float] | None = None,
) -> list[Comparison]:
    """Each ``(variant, baseline)`` pair compared by seed, Holm-adjusted as one family; on the
    final test metric, or on ``value`` of each outcome."""
    if not pairs:
        return []
    groups = by_variant(outcomes, list(dict.fromkeys(n for pair in pairs for n in pair)))

    def finals(name: str) -> dict[int, float]:
        of = value or (lambda o: o.final_test)
        return {o.seed: of(o) for o in groups[name] if not o.diverged}

    def steps(name: str) -> dict[int, int | None]:
        return {o.seed: o.steps_to_threshold for o in groups[name] if not o.diverged}

    return adjust_family(
        [
            compare_paired(a, b, finals(a), finals(b), steps(a), steps(b), len(pairs))
            for a, b in pairs
        ]
    )


def reaching_sooner(
    series: Sequence[Series], variant: str, baseline: str
) -> tuple[float, int, int]:
    """How much sooner ``variant`` reaches the training loss that ``baseline`` ends with (its
    final, tail value), seed by seed: the median of baseline's first step at or under that
    loss over variant's, the pairs where variant reaches it, and the pairs (both not
    diverged)."""
    runs = {(s.variant, s.seed): s for s in series if s.diverged_at is None}
    speedups = []
    pairs = 0
    for (name, seed), base in runs.items():
        other = runs.get((variant, seed))
        if name != baseline or other is None:
            continue
        pairs += 1
        level = tail_value(base.train)
        first = [
            next((step for step, v in zip(s.steps, s.train) if v <= level), None)
            for s in (base, other)
        ]
        if first[0] is not None and first[1] is not None:
            speedups.append(first[0] / max(first[1], 1))
    return (quantile(speedups, 0.5) if speedups else math.nan), len(speedups), pairs


def loss_against_error(
    train: Comparison,
    test: Comparison,
    sooner: tuple[float, int, int] | None,
    loss: str,
    error: str,
) -> str:
    """What the loss says and what the error says, side by side, e.g. 'loss against error:
    gaaf's final PINN loss is lower on 10/10 seeds (ratio 0.31 [0.2, 0.48]), and it reaches
    fixed's final PINN loss 5.1x sooner (median of 10 pairs); its final relative L2 error is
    lower on 4/10 (ratio 1.1 [0.7, 1.8]): the lower loss is not a lower error'. A ratio is
    "resolved" lower when its interval lies under 1."""

    def ratio(c: Comparison) -> str:
        if not math.isfinite(c.ratio_geomean):
            return "no ratio"
        ci = (
            f" [{c.ratio_ci_low:.2g}, {c.ratio_ci_high:.2g}]"
            if c.pairs > 1 and math.isfinite(c.ratio_ci_low)
            else ""
        )
        return f"ratio {c.ratio_geomean:.2g}{ci}"

    def lower(c: Comparison) -> bool:
        return c.pairs > 1 and math.isfinite(c.ratio_ci_high) and c.ratio_ci_high < 1

    text = (
        f"loss against error: {train.variant}'s final {loss} is lower on {train.wins}/"
        f"{train.pairs} seeds ({ratio(train)})"
    )
    if sooner is not None and sooner[2]:
        speed, reached, pairs = sooner
        text += f", and it reaches {train.baseline}'s final {loss}"
        if reached:
            if not speed > 0:  # the baseline was at its final loss from its first step
                when = "only later"
            elif "1" in (f"{speed:.2g}", f"{1 / speed:.2g}"):
                when = "about as soon"
            elif speed < 1:
                when = f"{1 / speed:.2g}x later"
            else:
                when = f"{speed:.2g}x sooner"
            text += f" {when} (median of {reached} of {pairs} pairs)"
        else:
            text += " on none of the pairs"
    text += f"; its final {error} is lower on {test.wins}/{test.pairs} ({ratio(test)})"
    if lower(train) and lower(test):
        text += ": lower in both"
    elif lower(train):
        text += ": the lower loss is not a resolved lower error"
    return text


def summarise(
    outcomes: Sequence[ModelOutcome],
    variants: Sequence[str],
    baseline: str,
    threshold: float,
    metric: str = "test MSE",
    series: Sequence[Series] | None = None,
    loss: str = "training MSE",
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Per-variant aggregates and the paired comparisons against ``baseline``, as they appear
    in ``summary.json`` (``variants`` entries and ``comparisons``). A comparison's verdict also
    counts the seeds of either side that split off from the rest (``stats.outcome_split``);
    its ``loss_against_error`` puts the final training ``loss`` beside the final test
    ``metric`` (``loss_against_error``; with ``series``, how much sooner the variant reaches
    the baseline's final loss)."""
    groups = by_variant(outcomes, variants)
    stats = {name: variant_summary(groups.get(name, [])) for name in variants}
    comparisons = []
    on_train = {
        c.variant: c
        for c in compare_to_baseline(outcomes, variants, baseline, lambda o: o.final_train)
    }
    for c in compare_to_baseline(outcomes, variants, baseline):
        text = verdict(c, threshold, metric)
        for name in (c.variant, c.baseline):
            split = stats[name]["split"]
            if split is not None and c.pairs:
                text += "; " + split_words(split, name)
        sooner = None if series is None else reaching_sooner(series, c.variant, baseline)
        comparisons.append(
            {
                **c.as_dict(),
                "win_rate": c.win_rate,
                "verdict": text,
                "loss_against_error": loss_against_error(
                    on_train[c.variant], c, sooner, loss, metric
                ),
            }
        )
    return stats, comparisons


def split_words(split: dict[str, Any], variant: str) -> str:
    """A summary's ``split`` entry in words (``stats.Split.words``)."""
    return Split(**split).words(variant)
