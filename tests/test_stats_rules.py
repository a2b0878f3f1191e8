"""Known answers for the statistics rules of the docs ("How the comparison is made fair, and
what the numbers mean"): the tail value, the t interval on log ratios, the exact Wilcoxon test
over mid-ranks and where it hands over to the normal approximation, Holm over the variants of a
run, the seed-count suggestion, the floor of p, pairs without diverged seeds, the median seed.

Every expected number is worked out in the comments (sign patterns counted, Student's t from a
printed table, normal quantiles to four decimals); none is a re-run of the code under test.
"""

from __future__ import annotations

import math
from itertools import product

import pytest

from aaf_cli.results import ModelOutcome, Series, compare_to_baseline, median_seed, outcome
from aaf_cli.stats import (
    compare_paired,
    reported_p,
    seeds_needed,
    tail_value,
    wilcoxon_signed_rank,
)

NONE: dict[int, int | None] = {}


def _outcome(
    variant: str,
    seed: int,
    final_test: float,
    best_test: float | None = None,
    diverged_at: int | None = None,
) -> ModelOutcome:
    best = final_test if best_test is None else best_test
    return ModelOutcome(
        variant=variant,
        seed=seed,
        final_train=final_test,
        final_test=final_test,
        best_train=best,
        best_test=best,
        best_test_step=0,
        steps_to_threshold=None,
        final_params={},
        diverged_at=diverged_at,
    )


def _family(ratios: dict[str, list[float]]) -> list[ModelOutcome]:
    """A fixed baseline at 1.0 for every seed and one variant per entry at the given ratios."""
    seeds = len(next(iter(ratios.values())))
    out = [_outcome("fixed", s, 1.0) for s in range(seeds)]
    for name, values in ratios.items():
        out += [_outcome(name, s, v) for s, v in enumerate(values)]
    return out


# ---- the tail value


def test_a_tail_with_any_non_finite_point_has_no_final_value() -> None:
    # 60 logged points: a tail of ceil(0.05 * 60) = 3. Two finite points and an infinity: the
    # median of the finite ones (0.45) would flatter a model that blew up at the end.
    values = [1.0] * 57 + [0.5, 0.4, math.inf]
    assert math.isnan(tail_value(values))
    assert math.isnan(tail_value([1.0] * 57 + [math.nan, 0.4, 0.5]))
    assert tail_value([1.0] * 57 + [0.5, 0.4, 0.45]) == 0.45


def test_the_default_run_takes_26_points_from_step_4750() -> None:
    # 5000 steps logged every 10: 501 points, a tail of 26 (steps 4750-5000). With the loss at
    # step s equal to s / 1000 there, the median of 4.75, 4.76, ..., 5.00 is (4.87 + 4.88) / 2.
    # A tail of 25 points would give 4.88, one of 27 points 4.87.
    steps = list(range(0, 5001, 10))
    test = [100.0 if s < 4750 else s / 1000 for s in steps]
    o = outcome(Series("v", 0, steps, [0.0] * len(steps), test, test), None)
    assert o.final_test == pytest.approx(4.875, rel=1e-12)
    assert o.last_test == 5.0 and o.best_test == 4.75


# ---- the interval of the ratio


def test_the_ratio_interval_is_student_t_on_the_log_ratios() -> None:
    # Log ratios -1, -2, 0, -1: mean -1, sample sd sqrt(2/3), n = 4. Printed table:
    # t(0.975, 3) = 3.182446. Interval exp(-1 -+ 3.182446 * sqrt(2/3) / 2).
    logs = [-1.0, -2.0, 0.0, -1.0]
    c = compare_paired("v", "f", {s: math.exp(v) for s, v in enumerate(logs)},
                       {s: 1.0 for s in range(4)}, NONE, NONE)  # fmt: skip
    half = 3.182446 * math.sqrt(2 / 3) / 2
    assert c.ratio_geomean == pytest.approx(math.exp(-1.0), rel=1e-12)
    assert c.ratio_ci_low == pytest.approx(math.exp(-1.0 - half), rel=1e-6)
    assert c.ratio_ci_high == pytest.approx(math.exp(-1.0 + half), rel=1e-6)
    assert c.ci_method == "t"
    # Two seeds: log ratios -1 and -3, mean -2, sd sqrt(2); t(0.975, 1) = 12.7062. The interval
    # spans 25 decades each way: two seeds say next to nothing about the ratio.
    two = compare_paired("v", "f", {0: math.exp(-1.0), 1: math.exp(-3.0)}, {0: 1.0, 1: 1.0},
                         NONE, NONE)  # fmt: skip
    assert math.log(two.ratio_ci_low) == pytest.approx(-2.0 - 12.7062, abs=1e-4)
    assert math.log(two.ratio_ci_high) == pytest.approx(-2.0 + 12.7062, abs=1e-4)


# ---- the exact Wilcoxon test


def _enumerated_p(midranks: list[float], signs: list[int]) -> float:
    """Two-sided p by counting all 2^n sign patterns of the given (hand-assigned) mid-ranks:
    the share of patterns whose positive rank sum is at least as far from its mean as the
    observed one."""
    total = sum(midranks)
    observed = sum(r for r, s in zip(midranks, signs) if s > 0)
    distance = abs(observed - total / 2)
    hits = 0
    for pattern in product((0, 1), repeat=len(midranks)):
        w = sum(r for r, on in zip(midranks, pattern) if on)
        hits += abs(w - total / 2) >= distance - 1e-9
    return hits / 2 ** len(midranks)


def test_exact_wilcoxon_over_mid_ranks_by_hand() -> None:
    # |d| = 1, 1, 2, 3: mid-ranks 1.5, 1.5, 3, 4 (sum 10). W+ = 1.5 + 1.5 + 4 = 7. The 16 sign
    # patterns with W+ <= 10 - 7 = 3: {}, {1.5}, {1.5'}, {1.5, 1.5'}, {3}: 5; as many have
    # W+ >= 7. Two-sided p = 10/16.
    assert wilcoxon_signed_rank([1.0, 1.0, -2.0, 3.0]) == (7.0, 10 / 16)
    # Ten differences in four groups of ties; mid-ranks by hand: 0.3 x3 -> 2, 0.7 x2 -> 4.5,
    # 1.1 -> 6, 1.5 x3 -> 8, 2.0 -> 10.
    diffs = [0.3, -0.3, 0.3, 0.7, 0.7, -1.1, 1.5, 1.5, -1.5, 2.0]
    midranks = [2.0, 2.0, 2.0, 4.5, 4.5, 6.0, 8.0, 8.0, 8.0, 10.0]
    signs = [1 if d > 0 else -1 for d in diffs]
    w, p = wilcoxon_signed_rank(diffs)
    assert w == 2 + 2 + 4.5 + 4.5 + 8 + 8 + 10
    assert p == pytest.approx(_enumerated_p(midranks, signs), rel=1e-12)


def test_a_two_sided_p_is_never_above_one() -> None:
    # Ranks 1, 2, 3 with W+ = 3, the centre of 0..6: every pattern is as extreme (p = 1, where
    # doubling the 5 of 8 patterns with W+ <= 3 would give 10/8).
    assert wilcoxon_signed_rank([1.0, 2.0, -3.0]) == (3.0, 1.0)
    assert wilcoxon_signed_rank([1.0, -1.0]) == (1.5, 1.0)


def test_the_test_is_exact_up_to_30_pairs_and_normal_above() -> None:
    # 30 positive differences: W+ takes the largest of 2^30 values, p = 2 / 2^30 exactly; with
    # the smallest one negative, W- = 1: two patterns at or below it, p = 4 / 2^30. (The normal
    # approximation would give 1.7e-6 for the first.)
    assert wilcoxon_signed_rank([float(k) for k in range(1, 31)]) == (465.0, 2 / 2**30)
    assert wilcoxon_signed_rank([-1.0, *map(float, range(2, 31))])[1] == 4 / 2**30
    # 31: mean 31 * 32 / 4 = 248, variance 31 * 32 * 63 / 24 = 2604, W+ = 496: z = 248 / 51.03.
    w, p = wilcoxon_signed_rank([float(k) for k in range(1, 32)])
    assert w == 496.0
    assert p == pytest.approx(math.erfc(248 / math.sqrt(2604) / math.sqrt(2)), rel=1e-12)
    assert 1e-6 < p < 2e-6


def test_the_floor_of_p_counts_only_the_pairs_that_differ() -> None:
    # Four pairs, one of them an exact tie (ratio 1: the test drops it): three pairs left, so p
    # cannot go below 2 / 2^3 = 0.25, and three wins out of three reach it.
    c = compare_paired("v", "f", {0: 0.5, 1: 0.25, 2: 1.0, 3: 0.4},
                       {s: 1.0 for s in range(4)}, NONE, NONE)  # fmt: skip
    assert c.pairs == 4 and c.wins == 3
    assert c.min_p == 0.25 and c.p_value == 0.25


# ---- several variants: Holm and the seed count


def test_holm_over_the_variants_of_a_run_by_hand() -> None:
    # Six seeds each. a: all six lower, W+ = 0: p = 2 / 64. b: only rank 1 higher, W+ = 1
    # (patterns {}, {1}): p = 4 / 64. c: ranks 1 and 2 higher, W+ = 3 (patterns {}, {1}, {2},
    # {3}, {1, 2}): p = 10 / 64. Holm: 3 x 2/64 = 0.09375, 2 x 4/64 = 0.125, 1 x 10/64.
    lower = [0.5, 0.4, 0.3, 0.2, 0.1, 0.05]  # |log ratio| grows with the seed: rank = seed + 1
    ratios = {
        "a": lower,
        "b": [2.0] + lower[1:],
        "c": [2.0, 1 / 0.4] + lower[2:],
    }
    comparisons = compare_to_baseline(_family(ratios), ["fixed", *ratios], "fixed")
    assert [c.p_value for c in comparisons] == [2 / 64, 4 / 64, 10 / 64]
    assert [c.p_holm for c in comparisons] == pytest.approx([0.09375, 0.125, 10 / 64], rel=1e-12)
    assert all(c.family == 3 for c in comparisons)
    # The p a table or a verdict rests on is the adjusted one when there are several variants.
    assert [c.p_reported for c in comparisons] == [c.p_holm for c in comparisons]
    stored = comparisons[0].as_dict()
    assert reported_p(stored) == 0.09375
    assert reported_p({**stored, "family": 1}) == 2 / 64


def test_the_seed_count_is_for_the_level_of_the_family() -> None:
    # Log ratios -2, 0, -1, -2, 0: mean -1, sd 1. Per comparison the level is 0.05 / k, and the
    # count ((z(1 - level/2) + z(0.8)) * sd / |mean|)^2 + z(1 - level/2)^2 / 2:
    #   k = 1: z = 1.9600 -> (2.8016)^2 + 1.9208 = 9.77 -> 10
    #   k = 2: z = 2.2414 -> (3.0830)^2 + 2.5119 = 12.02 -> 13
    #   k = 3: z = 2.3940 -> (3.2356)^2 + 2.8656 = 13.33 -> 14
    logs = [-2.0, 0.0, -1.0, -2.0, 0.0]
    ratios = [math.exp(v) for v in logs]
    for k, expected in ((1, 10), (2, 13), (3, 14)):
        names = [f"v{j}" for j in range(k)]
        outcomes = _family({name: ratios for name in names})
        comparisons = compare_to_baseline(outcomes, ["fixed", *names], "fixed")
        assert [c.seeds_needed for c in comparisons] == [expected] * k, k


def test_the_seed_count_never_falls_below_what_the_exact_test_needs() -> None:
    # A huge effect: the normal formula asks for 4 or fewer, but the exact test must be able to
    # reach the level at all: 2 / 2^n <= 0.05 / k. k = 1: n = 6 (2/64 = 0.031); k = 3 (level
    # 0.0167): n = 7 (2/128 = 0.0156); k = 5 (level 0.01): n = 8 (2/256 = 0.0078).
    huge = [-10.0, -10.1, -9.9]
    assert [seeds_needed(huge, comparisons=k) for k in (1, 3, 5)] == [6, 7, 8]


# ---- diverged seeds and the median seed


def test_pairs_leave_out_seeds_where_either_side_diverged() -> None:
    # Five seeds; the baseline's seed 4 and the variant's seed 2 diverged (no final value):
    # three pairs (seeds 0, 1, 3), all won, p = 2 / 2^3.
    outcomes = [_outcome("fixed", s, 1.0) for s in range(4)]
    outcomes.append(_outcome("fixed", 4, math.nan, diverged_at=12))
    outcomes += [_outcome("v", s, 0.5) for s in (0, 1, 3, 4)]
    outcomes.append(_outcome("v", 2, math.nan, diverged_at=30))
    (c,) = compare_to_baseline(outcomes, ["fixed", "v"], "fixed")
    assert (c.pairs, c.wins, c.p_value, c.min_p) == (3, 3, 0.25, 0.25)
    assert c.ratio_geomean == pytest.approx(0.5, rel=1e-12)


def test_the_median_seed_is_the_median_of_the_final_test_loss() -> None:
    # Final 3, 1, 4, 2 (seeds 0-3): ordered seeds 1, 3, 0, 2; the lower middle is seed 3. The
    # best losses (0.5, 0.9, 0.2, 0.7) would pick seed 0. A diverged
    # seed is no candidate.
    outcomes = [
        _outcome("v", 0, 3.0, best_test=0.5),
        _outcome("v", 1, 1.0, best_test=0.9),
        _outcome("v", 2, 4.0, best_test=0.2),
        _outcome("v", 3, 2.0, best_test=0.7),
        _outcome("v", 4, math.nan, best_test=0.01, diverged_at=3),
    ]
    assert median_seed(outcomes) == 3
    assert median_seed(outcomes[:3]) == 0  # 1, 3, 4: seed 0
