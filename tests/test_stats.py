from __future__ import annotations

import math

import pytest

from aaf_cli.results import Series, aggregate, median_seed, outcome
from aaf_cli.stats import (
    Summary,
    bootstrap_mean_ci,
    compare_paired,
    quantile,
    ranks,
    verdict,
    wilcoxon_signed_rank,
)


def test_quantile_matches_linear_interpolation() -> None:
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile([1, 2, 3, 4], 0.25) == 1.75
    assert quantile([5.0], 0.75) == 5.0
    assert math.isnan(quantile([], 0.5))


def test_summary_uses_sample_std() -> None:
    s = Summary.of([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert s.mean == 5.0 and s.median == 4.5 and s.min == 2.0 and s.max == 9.0
    assert s.std == pytest.approx(math.sqrt(32 / 7))


def test_ranks_average_ties() -> None:
    assert ranks([10.0, 20.0, 20.0, 5.0]) == [2.0, 3.5, 3.5, 1.0]


def test_wilcoxon_exact_small_sample_by_hand() -> None:
    # Ranks 1..5, W+ = 1+2+3+5 = 11, W- = 4. Sign patterns with W+ <= 4: {}, {1}, {2}, {3},
    # {4}, {1,2}, {1,3}: 7 of 32, so the two-sided p is 2 * 7/32.
    w, p = wilcoxon_signed_rank([1.0, 2.0, 3.0, -4.0, 5.0])
    assert w == 11 and p == pytest.approx(14 / 32)


def test_wilcoxon_table_value() -> None:
    # All ten differences of one sign: the most extreme of 2^10 patterns, p = 2/1024 (tables:
    # n = 10 is significant at the two-sided 0.01 level only for W <= 3; here W = 0).
    w, p = wilcoxon_signed_rank([-0.1 * k for k in range(1, 11)])
    assert w == 0 and p == pytest.approx(2 / 1024)
    # n = 8: the two-sided 5% critical value of the table is W = 3; W = 3 gives p <= 0.05 and
    # W = 4 gives p > 0.05.
    at_3 = [1.0, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0]  # W- = 3
    at_4 = [1.0, 2.0, 3.0, -4.0, 5.0, 6.0, 7.0, 8.0]  # W- = 4
    assert wilcoxon_signed_rank(at_3)[1] <= 0.05 < wilcoxon_signed_rank(at_4)[1]


def test_wilcoxon_normal_approximation_for_large_or_tied_samples() -> None:
    # 40 positive differences: z = (820 - 410) / sqrt(40*41*81/24), p = erfc(z / sqrt 2).
    w, p = wilcoxon_signed_rank([float(k) for k in range(1, 41)])
    z = (820 - 410) / math.sqrt(40 * 41 * 81 / 24)
    assert w == 820 and p == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert math.isnan(wilcoxon_signed_rank([0.0, 0.0])[1])


def test_bootstrap_of_a_constant_sample_is_that_constant() -> None:
    assert bootstrap_mean_ci([0.7] * 12) == (pytest.approx(0.7), pytest.approx(0.7))


def test_bootstrap_is_reproducible_and_brackets_the_mean() -> None:
    values = [0.1, -0.3, 0.5, 0.2, -0.1, 0.4]
    lo, hi = bootstrap_mean_ci(values)
    assert (lo, hi) == bootstrap_mean_ci(values)
    assert lo < sum(values) / len(values) < hi


def test_paired_comparison_known_win_rate_ratio_and_speedup() -> None:
    base = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    adaptive = {0: 0.5, 1: 0.25, 2: 2.0, 3: 0.5}
    steps_a = {0: 100, 1: 50, 2: None, 3: 200}
    steps_b = {0: 300, 1: 200, 2: None, 3: None}
    c = compare_paired("adaptive", "fixed", adaptive, base, steps_a, steps_b)
    assert c.pairs == 4 and c.wins == 3 and c.win_rate == 0.75
    assert c.ratio_geomean == pytest.approx((0.5 * 0.25 * 2.0 * 0.5) ** 0.25)
    assert c.speedup_median == pytest.approx(3.5)  # median of 3x and 4x
    assert c.speedup_pairs == 2 and c.reached_only_variant == 1
    line = verdict(c, 1e-3)
    assert line.startswith(
        "adaptive wins against fixed on 3/4 seeds; geometric-mean ratio of final test MSE 0.59"
    )
    assert (
        "reaching 0.001: both on 2 (adaptive 3.5x fewer steps, median of 2 pairs), only "
        "adaptive on 1, only fixed on 0, neither on 1" in line
    )


def test_diverged_seeds_are_left_out_of_pairs() -> None:
    c = compare_paired("a", "f", {0: 0.5, 2: 0.5}, {0: 1.0, 1: 1.0, 2: 1.0}, {}, {})
    assert c.pairs == 2 and c.wins == 2


def make_series(variant: str, seed: int, test: list[float], diverged: int | None = None) -> Series:
    steps = list(range(0, 10 * len(test), 10))
    return Series(
        variant, seed, steps, [0.0] * len(test), train=test, test=test, diverged_at=diverged
    )


def test_aggregate_band_and_median_leave_out_diverged_seeds() -> None:
    series = [make_series("a", s, [float(s + 1), float(s + 2)]) for s in range(5)]
    series.append(make_series("a", 9, [1.0, math.nan], diverged=10))
    band = aggregate(series, "test")
    assert band.kind == "iqr" and band.seeds == 5
    assert band.center == [pytest.approx(120 ** (1 / 5)), pytest.approx(720 ** (1 / 5))]
    assert band.low == [2.0, 3.0] and band.high == [4.0, 5.0]
    assert aggregate(series[:2], "test").kind == "minmax"
    assert aggregate(series[:1], "test").kind == "none"
    outcomes = [outcome(s, None) for s in series]
    assert median_seed(outcomes) == 2
