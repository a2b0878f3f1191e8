"""Verdicts that cannot mislead: words by the count, every threshold count, the seeds that split
off, and one statistic across seeds in the table, the figure's data and the verdict."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
from rich.console import Console

import aaf_cli as aaf
from aaf_cli import render
from aaf_cli.results import ModelOutcome, summarise
from aaf_cli.runs import read_metrics
from aaf_cli.stats import compare_paired, geometric_mean, outcome_split, tail_value, verdict

from .conftest import SMOKE


def comparison(final: list[float], base: list[float], steps=None, steps_base=None):  # type: ignore[no-untyped-def]
    seeds = range(len(final))
    steps = steps or [None] * len(final)
    steps_base = steps_base or [None] * len(final)
    return compare_paired(
        "adaptive",
        "fixed",
        dict(zip(seeds, final)),
        dict(zip(seeds, base)),
        dict(zip(seeds, steps)),
        dict(zip(seeds, steps_base)),
    )


def test_zero_of_three_is_a_loss_never_a_win() -> None:
    text = verdict(comparison([0.3, 0.2, 0.5], [0.1, 0.1, 0.1]), 0.01)
    assert text.startswith("adaptive loses to fixed on 3/3 seeds;")
    assert "beats" not in text and "wins" not in text
    assert verdict(comparison([0.05, 0.2], [0.1, 0.1]), 0.01).startswith(
        "adaptive is even with fixed: lower on 1, higher on 1 of 2 seeds;"
    )
    assert verdict(comparison([0.1, 0.2, 0.05], [0.1, 0.1, 0.1]), 0.01).startswith(
        "adaptive is even with fixed: lower on 1, higher on 1, equal on 1 of 3 seeds;"
    )
    assert verdict(comparison([0.01, 0.02, 0.5], [0.1, 0.1, 0.1]), 0.01).startswith(
        "adaptive wins against fixed on 2/3 seeds;"
    )


def test_every_threshold_count_and_the_pairs_behind_a_speed_up() -> None:
    """Both reached-only counts always, and a speed-up with the number of pairs it is the median
    of (one pair here: 400 / 200 steps)."""
    c = comparison(
        [0.001, 0.002, 0.003, 0.2],
        [0.1, 0.2, 0.05, 0.3],
        steps=[200, 300, 100, None],
        steps_base=[400, None, None, None],
    )
    text = verdict(c, 0.01)
    assert (
        "reaching 0.01: both on 1 (adaptive 2x fewer steps, median of 1 pair), only adaptive "
        "on 2, only fixed on 0, neither on 1" in text
    )
    nobody = verdict(comparison([0.3, 0.2], [0.1, 0.1]), 0.01)
    assert "reaching 0.01: both on 0, only adaptive on 0, only fixed on 0, neither on 2" in nobody
    assert "geometric-mean ratio of final test MSE" in nobody


def _outcome(variant: str, seed: int, final: float, initial: float = 0.5) -> ModelOutcome:
    return ModelOutcome(
        variant, seed, final, final, final, final, 0, None, {}, None,
        initial_train=initial,
    )  # fmt: skip


def test_seeds_that_stay_on_the_plateau_are_counted_where_outcomes_split() -> None:
    """Five seeds: three trained to ~1e-3, two never left the initial plateau (final training
    loss above half the initial 0.5): '2/5 adaptive seeds stayed on the initial plateau'. A
    unimodal spread over the same range splits nothing."""
    bimodal = [1e-3, 2e-3, 1.5e-3, 0.45, 0.48]
    split = outcome_split(bimodal, [0.5] * 5, bimodal)
    assert split is not None and (split.upper, split.seeds, split.plateau) == (2, 5, 2)
    assert split.words("adaptive") == (
        "2/5 adaptive seeds stayed on the initial plateau (final 0.45 and above; the others "
        "0.002 and below)"
    )
    # The upper group trained a little (0.2 < 0.5 / 2): stalled, not on the plateau.
    stalled = [1e-3, 2e-3, 1.5e-3, 0.2, 0.21]
    assert (
        outcome_split(stalled, [0.5] * 5, stalled)
        .words("a")
        .startswith(  # type: ignore[union-attr]
            "2/5 a seeds stalled far above the others"
        )
    )
    # Evenly spread over three decades: the widest gap (one decade) is no wider than a group.
    spread = [1e-3, 3e-3, 1e-2, 3e-2, 0.3]
    assert outcome_split(spread, [0.5] * 5, spread) is None
    assert outcome_split([1e-3, 1e-3 * 1.2, 1e-3 * 0.9], [0.5] * 3, [1e-3] * 3) is None
    assert outcome_split([1e-3, 0.5], [0.5] * 2, [1e-3, 0.5]) is None  # two seeds: no groups

    outcomes = [_outcome("adaptive", s, f) for s, f in enumerate(bimodal)]
    outcomes += [_outcome("fixed", s, f) for s, f in enumerate([0.05, 0.06, 0.04, 0.05, 0.07])]
    stats, (c,) = summarise(outcomes, ["fixed", "adaptive"], "fixed", 0.01)
    assert stats["adaptive"]["split"]["upper"] == 2 and stats["fixed"]["split"] is None
    assert c["verdict"].endswith("2/5 adaptive seeds stayed on the initial plateau (final 0.45 "
                                 "and above; the others 0.002 and below)")  # fmt: skip
    assert "fixed seeds" not in c["verdict"]


def test_the_table_the_figure_data_and_the_verdict_use_one_statistic(tmp_path: Path) -> None:
    """From one run: the table's final test (the geometric mean over seeds of each seed's
    final value, from metrics.csv), its ratio (the verdict's ratio over the same seeds), the
    figure's line (aggregates.csv: the geometric mean at every step) and the printed table."""
    run = aaf.run(
        SMOKE, overrides=["train.steps=60", "seeds=4", "tune=off", "dtype=float64"],
        runs_dir=tmp_path,
    )  # fmt: skip
    folder = run.folder
    summary = json.loads((folder / "summary.json").read_text())
    series = read_metrics(folder / "metrics.csv")
    table = {}
    for name in ("fixed", "adaptive"):
        finals = [tail_value(s.test) for s in series if s.variant == name]
        table[name] = summary["variants"][name]["final_test"]["geomean"]
        assert table[name] == pytest.approx(geometric_mean(finals), rel=1e-12)
    (c,) = summary["comparisons"]
    assert c["ratio_geomean"] == pytest.approx(table["adaptive"] / table["fixed"], rel=1e-12)
    shown = re.search(r"geometric-mean ratio of final test MSE ([0-9.e+-]+)", c["verdict"])
    assert shown is not None and float(shown.group(1)) == float(f"{c['ratio_geomean']:.2g}")

    rows = list(csv.DictReader(io.StringIO((folder / "aggregates.csv").read_text())))
    for row in rows:
        values = [
            s.metric(row["metric"])[s.steps.index(int(row["step"]))]
            for s in series
            if s.variant == row["variant"]
        ]
        assert float(row["geomean"]) == pytest.approx(geometric_mean(values), rel=1e-9)

    out = Console(width=200, record=True, file=io.StringIO())
    render.report_table(summary, out)
    printed = out.export_text()
    assert "geometric mean over 4 seeds" in printed
    for name in ("fixed", "adaptive"):
        line = next(line for line in printed.splitlines() if f" {name} " in line)
        assert f"{table[name]:.2e}" in line
    assert math.isfinite(table["fixed"])
