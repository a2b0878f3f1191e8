"""Small known-answer tests for meanings that ``scripts/mutation_check.py`` found unpinned.

Each test names the mutant of the catalogue it kills; all are fast and torch-light.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pytest
import torch

from aaf_cli import runs
from aaf_cli.config import TrainConfig
from aaf_cli.models import Ensemble, Groups, ModelSpec
from aaf_cli.results import ModelOutcome, Series, aggregate, median_seed, outcome
from aaf_cli.stats import compare_paired, wilcoxon_signed_rank
from aaf_cli.train import train

# ---- statistics


def test_wilcoxon_drops_zero_differences() -> None:
    # stats.wilcoxon-keeps-zeros. Ranks of |d|: 0.25 -> 1, 0.5 -> 2, 1.5 -> 3, 2.5 -> 4, ...;
    # W+ = 2 + 4 + 5 + 6 = 17 of 21; 7 of the 64 sign patterns have W+ <= 4: p = 14 / 64.
    with_zeros = [0.5, -1.5, 2.5, 3.5, -0.25, 4.5, 0.0, 0.0]
    assert wilcoxon_signed_rank(with_zeros) == (17.0, 14 / 64)


def test_wilcoxon_normal_approximation_with_ties_by_hand() -> None:
    # stats.wilcoxon-no-tie-correction (above 30 pairs; below, ties are handled exactly).
    # |d| ranks: 1,1,1 -> 2; 2 -> 4; 3,3 -> 5.5; 4..29 -> 7..32. W+ = 3*2 + 2*5.5 + (7+32)*26/2
    # = 524; mean 32*33/4 = 264; variance 32*33*65/24 - ((3^3-3) + (2^3-2))/48 = 2860 - 0.625.
    w, p = wilcoxon_signed_rank([1, 1, 1, -2, 3, 3, *range(4, 30)])
    assert w == 524.0
    z = (524 - 264) / math.sqrt(2860 - 0.625)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)


def test_a_tie_with_the_baseline_is_not_a_win() -> None:
    # stats.wins-count-ties
    final = {0: 1.0, 1: 2.0, 2: 0.5}
    base = {0: 1.0, 1: 3.0, 2: 1.0}
    none: dict[int, int | None] = {0: None, 1: None, 2: None}
    c = compare_paired("v", "b", final, base, none, none)
    assert c.pairs == 3 and c.wins == 2


# ---- results


def _outcome(seed: int, final_test: float) -> ModelOutcome:
    return ModelOutcome("v", seed, 1.0, final_test, 1.0, final_test, 0, None, {}, None)


def test_median_seed_of_an_even_count_is_the_lower_middle() -> None:
    # results.median-seed-upper
    outcomes = [_outcome(s, v) for s, v in [(0, 4.0), (1, 1.0), (2, 3.0), (3, 2.0)]]
    assert median_seed(outcomes) == 3  # losses 1, 2 | 3, 4: the lower middle is 2.0 (seed 3)
    assert median_seed(outcomes[:3]) == 2


def test_iqr_band_is_the_quartiles() -> None:
    # results.iqr-deciles: five seeds, values 1..5 at one step: quartiles 2 and 4.
    series = []
    for seed, value in enumerate([3.0, 1.0, 5.0, 2.0, 4.0]):
        series.append(Series("v", seed, steps=[0], train=[value], test=[value], recovery=[0.0]))
    band = aggregate(series, "test")
    assert band.kind == "iqr"
    assert (band.low, band.high) == ([2.0], [4.0])
    assert band.center == [pytest.approx(120 ** (1 / 5))]  # the geometric mean of 1..5


def test_best_test_loss_is_the_lowest_finite_one() -> None:
    # results.best-is-max
    s = Series("v", 0, steps=[0, 5, 10, 15], train=[4.0, 2.0, 3.0, 1.0])
    s.test = [4.0, 1.5, math.nan, 2.5]
    o = outcome(s, None)
    assert (o.best_test, o.best_test_step, o.final_test) == (1.5, 5, 2.5)
    assert o.best_train == 1.0


# ---- engine


def test_the_last_step_is_logged_even_off_the_log_grid() -> None:
    # train.final-step-not-logged
    model = Groups([Ensemble([1, 4, 1], "fixed", "tanh", [ModelSpec("f", 0)])])
    x = torch.linspace(-1, 1, 8).reshape(-1, 1)
    cfg = TrainConfig(lr=0.01, steps=7, log_every=5, compile=False)
    result = train(model, x, torch.sin(x), x, torch.sin(x), cfg)
    assert [r.step for r in result.records] == [0, 5, 7]


# ---- run folders


def test_metrics_round_trip_is_exact_and_keeps_the_divergence_step(tmp_path: Path) -> None:
    # runs.numbers-rounded, runs.diverged-flag-late, runs.read-last-diverged
    ok = Series("a", 0, steps=[0, 5, 10], train=[0.1 + 0.2, 1 / 3, 2e-9])
    ok.test, ok.recovery = [math.pi, 1e-300, 7.0], [math.nan] * 3
    bad = Series("a", 1, steps=[0, 5, 10], train=[1.0, math.inf, math.nan])
    bad.test, bad.recovery, bad.diverged_at = [1.0, math.inf, math.nan], [math.nan] * 3, 5
    path = tmp_path / "metrics.csv"
    runs.write_atomic(path, runs.metrics_csv([ok, bad]))
    back = {s.seed: s for s in runs.read_metrics(path)}
    assert back[0].train == ok.train and back[0].test == ok.test
    assert back[0].diverged_at is None
    assert back[1].diverged_at == 5
    assert back[1].train[:2] == [1.0, math.inf] and math.isnan(back[1].train[2])


def test_same_second_run_folders_are_numbered_without_gaps(tmp_path: Path) -> None:
    # runs.folder-suffix-gap
    now = datetime(2024, 5, 6, 7, 8, 9)
    names = [runs.new_run_dir(tmp_path, "smoke", now).name for _ in range(3)]
    base = "2024-05-06_07-08-09_smoke"
    assert names == [base, f"{base}-2", f"{base}-3"]
