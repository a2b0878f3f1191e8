"""Statistics that do not overstate what a few seeds show: tail values, intervals that hold at
small n, the floor of the exact test's p, Holm's adjustment and the seed-count suggestion.

Every check runs on constructed data with a known answer.
"""

from __future__ import annotations

import math
import random

import pytest

from aaf_cli.results import Series, outcome, summarise
from aaf_cli.stats import (
    adjust_family,
    bootstrap_mean_ci,
    compare_paired,
    holm,
    mean_ci,
    min_wilcoxon_p,
    seeds_needed,
    t_cdf,
    t_mean_ci,
    t_quantile,
    tail_count,
    tail_value,
    verdict,
)


@pytest.mark.parametrize(
    ("df", "expected"),
    # Two-sided 95% critical values of Student's t from printed tables.
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (19, 2.093), (30, 2.042)],
)
def test_t_quantile_matches_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)
    assert t_cdf(t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-10)


def test_t_interval_by_hand() -> None:
    # mean 2, sample sd 1, n = 4: 2 +- 3.182446 * 1 / 2.
    values = [1.0, 2.0, 2.0, 3.0]
    sd = math.sqrt(2 / 3)
    lo, hi = t_mean_ci(values)
    half = 3.182446305 * sd / 2
    assert lo == pytest.approx(2 - half, rel=1e-8) and hi == pytest.approx(2 + half, rel=1e-8)
    assert all(math.isnan(v) for v in t_mean_ci([1.0]))


def test_comparisons_use_the_t_interval_at_every_seed_count() -> None:
    rng = random.Random(3)
    for n in (3, 10, 40):
        values = [rng.gauss(0, 1) for _ in range(n)]
        assert mean_ci(values) == (*t_mean_ci(values), "t")


def _coverage(n: int, trials: int, interval: str) -> float:
    rng = random.Random(20261127 + n)
    hits = 0
    for k in range(trials):
        values = [rng.gauss(0.0, 1.0) for _ in range(n)]
        if interval == "t":
            lo, hi = t_mean_ci(values)
        else:
            lo, hi = bootstrap_mean_ci(values, samples=400, seed=k)
        hits += lo <= 0.0 <= hi
    return hits / trials


@pytest.mark.parametrize("n", [3, 5])
def test_small_sample_interval_keeps_its_coverage_where_the_bootstrap_does_not(n: int) -> None:
    # Why comparisons use the t interval: at 3-5 pairs the percentile bootstrap of a mean
    # covers the truth far less often than 95%; the t interval keeps 95% (normal data). 400
    # trials: the binomial sd of a 95% coverage estimate is 1.1 points.
    t_cov = _coverage(n, 400, "t")
    boot_cov = _coverage(n, 400, "bootstrap")
    assert 0.92 <= t_cov <= 0.98
    assert boot_cov < 0.88
    assert t_cov - boot_cov > 0.08


def test_tail_value_is_the_median_of_the_last_five_percent() -> None:
    assert tail_count(501) == 26 and tail_count(10) == 1 and tail_count(21) == 2
    assert tail_count(0) == 0
    # 40 points: the last 2 are the tail; the oscillating last point does not decide it.
    values = [1.0] * 37 + [0.5, 4e-3, 6e-3]
    assert tail_value(values) == pytest.approx(5e-3)
    assert tail_value([3.0]) == 3.0
    assert math.isnan(tail_value([]))
    assert math.isnan(tail_value([1.0] * 38 + [0.1, math.nan]))


def test_outcome_reports_final_last_and_best() -> None:
    steps = list(range(0, 410, 10))  # 41 logged points: a tail of 3
    test = [1.0] * 38 + [2e-3, 5.6e-5, 5.8e-3]
    series = Series("n5", 0, steps, [0.0] * 41, test, test, [math.nan] * 41)
    o = outcome(series, None)
    assert o.last_test == 5.8e-3
    assert o.best_test == 5.6e-5 and o.best_test_step == 390
    assert o.final_test == 2e-3  # median of the last three, not the last swing


def test_min_p_of_the_exact_test() -> None:
    assert min_wilcoxon_p(3) == 0.25
    assert min_wilcoxon_p(5) == 0.0625
    assert min_wilcoxon_p(6) == 0.03125
    assert min_wilcoxon_p(0) == 1.0


def test_holm_by_hand() -> None:
    # Sorted 0.01, 0.03, 0.04, 0.5 -> 4*0.01, 3*0.03, max(2*0.04, 0.09), max(0.5, 0.09).
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.2]) == [0.2]
    adjusted = holm([0.3, math.nan, 0.01])
    assert adjusted[0] == pytest.approx(0.3) and adjusted[2] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_seeds_needed_matches_the_sample_size_formula() -> None:
    # Effect 1 sd (log ratios mean -1, sd 1): ((1.96 + 0.8416) * 1)^2 + 1.96^2 / 2 = 9.77 -> 10.
    log_ratios = [-2.0, 0.0, -1.0, -2.0, 0.0]
    assert seeds_needed(log_ratios) == 10
    # Five comparisons: level 0.01, z = 2.5758: (3.4174)^2 + 3.317 = 14.99 -> 15.
    assert seeds_needed(log_ratios, comparisons=5) == 15
    # A huge effect still needs the seeds for the exact test to reach the level (6 for 0.05).
    assert seeds_needed([-10.0, -10.1, -9.9]) == 6
    assert seeds_needed([0.5, -0.5]) is None
    assert seeds_needed([-1.0]) is None


def _compare(ratios: list[float], family: int = 1) -> tuple[str, object]:
    base = {s: 1.0 for s in range(len(ratios))}
    final = {s: r for s, r in enumerate(ratios)}
    none: dict[int, int | None] = {s: None for s in range(len(ratios))}
    c = compare_paired("global", "fixed", final, base, none, none, family)
    return verdict(c, 1e-3), c


def test_three_seeds_say_what_they_cannot_show() -> None:
    # The case of the issue: a huge ratio with 3 seeds. The interval is the wide t interval
    # and the verdict says that p cannot go below 0.25.
    text, _ = _compare([0.0012, 0.0016, 0.0021])
    assert "3/3 seeds" in text
    assert "p = 0.25" in text and "3 seeds: p cannot go below 0.25" in text
    assert "t interval" in text
    assert "about 6 seeds would resolve" in text


def test_ten_seeds_resolve_and_get_no_warning() -> None:
    rng = random.Random(5)
    text, _ = _compare([math.exp(rng.gauss(-2.0, 0.5)) for _ in range(10)])
    assert "10/10 seeds" in text and "p = 0.002" in text
    assert "cannot" not in text and "would resolve" not in text


def test_several_variants_get_holm_adjusted_p_values() -> None:
    finals = {s: 1.0 for s in range(6)}
    none: dict[int, int | None] = {s: None for s in range(6)}
    family = [
        compare_paired(
            name, "fixed", {s: r * (1 + 0.01 * s) for s in range(6)}, finals, none, none, 3
        )
        for name, r in (("a", 0.5), ("b", 0.6), ("c", 2.0))
    ]
    adjusted = adjust_family(family)
    raw = [c.p_value for c in family]
    assert [c.p_holm for c in adjusted] == pytest.approx(holm(raw))
    assert all(c.family == 3 for c in adjusted)
    text = verdict(adjusted[0], 1e-3)
    assert "Holm-adjusted over 3 variants" in text


def test_summary_comparisons_carry_the_family() -> None:
    outcomes = []
    steps = list(range(0, 30, 10))
    for variant, scale in (("fixed", 1.0), ("g5", 0.5), ("g10", 0.3)):
        for seed in range(4):
            loss = [scale * (1 + 0.1 * seed)] * 3
            series = Series(variant, seed, steps, [0.0] * 3, loss, loss, [math.nan] * 3)
            outcomes.append(outcome(series, None))
    _, comparisons = summarise(outcomes, ["fixed", "g5", "g10"], "fixed", 1e-3)
    assert [c["family"] for c in comparisons] == [2, 2]
    assert all(c["ci_method"] == "t" for c in comparisons)
    assert all(c["min_p"] == 0.125 for c in comparisons)
    assert all("4 seeds: p cannot go below 0.12" in c["verdict"] for c in comparisons)


def _brute_force_p(diffs: list[float]) -> float:
    # Every sign pattern of the mid-ranks, two-sided: as or more extreme than observed.
    from itertools import product

    from aaf_cli.stats import ranks

    r = ranks([abs(d) for d in diffs])
    total = sum(r)
    observed = sum(rank for rank, d in zip(r, diffs) if d > 0)
    low = min(observed, total - observed)
    hits = 0
    for signs in product((0, 1), repeat=len(diffs)):
        w = sum(rank for rank, s in zip(r, signs) if s)
        hits += w <= low + 1e-9 or w >= total - low - 1e-9
    return hits / 2 ** len(diffs)


@pytest.mark.parametrize(
    "diffs",
    [
        [1.0, 1.0, 2.0, -2.0, 3.0, 3.0, 3.0],
        [-0.5, -0.5, -0.5],
        [0.2, 0.2, -0.1, 0.4, 0.4, 0.4, -0.4, 0.9],
        [1.0, 2.0, 3.0, -4.0, 5.0],
    ],
)
def test_wilcoxon_is_exact_with_ties(diffs: list[float]) -> None:
    from aaf_cli.stats import wilcoxon_signed_rank

    assert wilcoxon_signed_rank(diffs)[1] == pytest.approx(_brute_force_p(diffs), rel=1e-12)


def test_verdicts_for_one_seed_and_for_no_spread() -> None:
    one = verdict(compare_paired("g", "f", {0: 0.5}, {0: 1.0}, {0: None}, {0: None}), 1e-3)
    assert "1 seed: no test or interval is possible" in one
    same = compare_paired("g", "f", {s: 0.5 for s in range(3)}, {s: 1.0 for s in range(3)}, {}, {})
    assert same.p_value == 0.25  # exact, over tied ranks: never below the floor
    assert "no spread to make an interval from" in verdict(same, 1e-3)


def test_holm_family_counts_only_comparisons_with_a_p() -> None:
    f = {s: 1.0 for s in range(4)}
    none: dict[int, int | None] = {}
    tested = compare_paired("a", "f", {s: 0.5 * (1 + 0.1 * s) for s in range(4)}, f, none, none)
    untestable = compare_paired("b", "f", dict(f), f, none, none)  # every difference zero
    adjusted = adjust_family([tested, untestable])
    assert [c.family for c in adjusted] == [1, 1]
    assert adjusted[0].p_holm == tested.p_value
