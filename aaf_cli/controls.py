"""The sceptic's control of an adaptive slope: a fixed activation at the learned steepness.

An adaptive slope sigma(n a x) may help only by making the activation steeper, which a fixed
sigma(s x) would do as well. A ``kind: fixed`` variant with ``slope_from: <variant>`` answers
that: its s is the named variant's median over seeds of its final mean n*a, so the run first
trains the named variant (with the variants it shares a batched ensemble with, at the same
seeds, data and learning-rate choice, so its numbers are the ones the comparison reports), reads
s, and then trains the whole experiment with the control at that s. The control's verdict
compares the adaptive variant with it: "adaptivity against a fixed steeper activation".
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aaf_cli.errors import RunError

if TYPE_CHECKING:
    from aaf_cli.config import ExperimentConfig
    from aaf_cli.experiment import ExperimentResult
    from aaf_cli.tuning import Trainer

#: The question a control's verdict answers.
QUESTION = "adaptivity against a fixed steeper activation"


def sources(cfg: ExperimentConfig) -> dict[str, str]:
    """Each control still without its s -> the adaptive variant its s comes from (a resolved
    control keeps its ``slope_from`` beside the ``slope`` found)."""
    found = {
        v.name: getattr(v, "slope_from", None)
        for v in cfg.variants
        if getattr(v, "slope", None) is None
    }
    return {name: str(source) for name, source in found.items() if source is not None}


def first_stage(cfg: ExperimentConfig) -> ExperimentConfig:
    """The variants the controls' slopes come from, with every variant that trains in the same
    batched ensemble as one of them (so that the first stage computes exactly what the
    comparison does)."""
    by_name = {v.name: v for v in cfg.variants}
    keys = {cfg.group_key(by_name[s]) for s in sources(cfg).values()}
    variants = [v for v in cfg.variants if cfg.group_key(v) in keys]
    return cfg.model_copy(update={"variants": variants})


def without_controls(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with every ``slope_from`` control at a placeholder steepness of 1 (what the
    second stage costs, for the budget)."""
    variants = [
        v.model_copy(update={"slope": 1.0, "slope_from": None}) if c else v
        for v, c in ((v, getattr(v, "slope_from", None) is not None) for v in cfg.variants)
    ]
    return cfg.model_copy(update={"variants": variants})


def final_steepness(exp: ExperimentResult, variant: str) -> list[float]:
    """Each seed's final mean n*a of ``variant`` (NaN where the model diverged)."""
    out = []
    for i, m in enumerate(exp.members):
        if m.variant != variant:
            continue
        group, j = exp.ensemble.locate(i)
        value = group.family.steepness(j)
        diverged = int(exp.result.diverged_at[i]) >= 0
        out.append(math.nan if diverged or value is None else value)
    return out


def resolve(
    cfg: ExperimentConfig, exp: ExperimentResult
) -> tuple[ExperimentConfig, dict[str, Any]]:
    """``cfg`` with every control at its s (read from the first stage ``exp``), and the
    ``controls`` entry of the summary: per control its source, s and the per-seed values."""
    record: dict[str, Any] = {}
    variants = []
    for v in cfg.variants:
        source = getattr(v, "slope_from", None)
        if source is None:
            variants.append(v)
            continue
        values = final_steepness(exp, source)
        finite = [x for x in values if math.isfinite(x)]
        if not finite:
            raise RunError(
                f"variants: {v.name}'s slope_from: every model of '{source}' diverged, so it "
                "has no learned steepness to fix"
            )
        s = statistics.median(finite)
        variants.append(v.model_copy(update={"slope": s}))
        record[v.name] = {"slope_from": source, "slope": s, "per_seed": values}
    return cfg.model_copy(update={"variants": variants}), record


def train_controlled(
    configs: Sequence[ExperimentConfig],
    trainer: Trainer,
    on_log: Callable[[Any], None] | None = None,
    on_tuning_log: Callable[[Any], None] | None = None,
    on_phase: Callable[[str, Sequence[ExperimentConfig]], None] | None = None,
) -> list[ExperimentResult]:
    """``tuning.train_tuned``, after a first stage that finds the controls' slopes where the
    configs have controls (every config of a pack alike); each result's ``controls`` says what
    was found."""
    from aaf_cli.tuning import train_tuned

    with_controls = [bool(sources(c)) for c in configs]
    if not any(with_controls):
        return train_tuned(configs, trainer, on_log, on_tuning_log, on_phase)
    if not all(with_controls):
        raise ValueError("the points of a pack differ in their slope_from controls")
    firsts = [first_stage(c) for c in configs]
    if on_phase is not None:
        on_phase("controls", firsts)
    started = time.perf_counter()
    found = train_tuned(firsts, trainer)
    seconds = time.perf_counter() - started
    resolved = [resolve(c, r) for c, r in zip(configs, found)]
    results = train_tuned([c for c, _ in resolved], trainer, on_log, on_tuning_log, on_phase)
    for result, (_, record) in zip(results, resolved):
        result.controls = {"train_time_s": seconds, "variants": record}
    return results
