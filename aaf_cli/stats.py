"""Statistics across seeds and paired comparisons against the baseline (pure Python, no torch).

The comparisons are paired by seed: seed s of an adaptive variant started from the same weights as
seed s of the baseline, so the per-seed ratio of their losses isolates the activation's effect.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

BOOTSTRAP_SEED = 20200101
BOOTSTRAP_SAMPLES = 10_000
EXACT_WILCOXON_MAX_N = 30
# The interval of the mean log ratio is Student's t at every sample size. For normal log ratios
# it holds its 95% at every n >= 2, while the percentile bootstrap of the mean covered only 73%
# at n = 3, 84% at n = 5, 90% at n = 10 and still 92% at n = 20 (1000 simulated samples each;
# tests/test_stats_honest.py checks the gap): with the seed counts experiments use, it is too
# narrow. (bootstrap_mean_ci stays for whoever wants it, with that caveat.)
ALPHA = 0.05
POWER = 0.8
# "Final" is a robust tail value: the median of the last TAIL_FRACTION of the logged points (at
# least one). A constant-rate Adam makes the loss swing by 10-100x from one logged step to the
# next, so the very last point is a lottery ticket; the tail median is what the run settled at.
TAIL_FRACTION = 0.05
# Across seeds, every table, figure and verdict uses one statistic: the geometric mean. Losses
# spread over decades, and the paired ratio the verdict reports (the exp of the mean log ratio)
# is then exactly the ratio of the two variants' table values over the same seeds.
CENTER = "geometric mean"
# Outcomes split into two groups when two neighbouring seeds' final values are at least this
# many decades apart, and no less apart than the wider group is wide; a seed of the upper group
# whose training loss fell by less than PLATEAU_DROP from its initial value stayed on the plateau.
SPLIT_DECADES = 1.0
PLATEAU_DROP = 2.0


def quantile(values: Sequence[float], q: float) -> float:
    """Quantile with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def tail_count(logged: int, fraction: float = TAIL_FRACTION) -> int:
    """How many of ``logged`` points the tail value takes: ``ceil(fraction * logged)``, >= 1."""
    return max(1, math.ceil(fraction * logged)) if logged > 0 else 0


def tail_value(values: Sequence[float], fraction: float = TAIL_FRACTION) -> float:
    """The median of the last ``ceil(fraction * len(values))`` values (at least one).

    Non-finite values in the tail count as they are: a model that diverged in its tail has no
    finite tail value (NaN), never a flattering median of its last finite points.
    """
    k = tail_count(len(values), fraction)
    if k == 0:
        return math.nan
    tail = [float(v) for v in values[-k:]]
    if not all(math.isfinite(v) for v in tail):
        return math.nan
    return statistics.median(tail)


def tail_rule(fraction: float = TAIL_FRACTION) -> str:
    """The rule of ``tail_value`` in words, for summaries and tables."""
    return f"median of the last {fraction:.0%} of logged points (at least one)"


def geometric_mean(values: Sequence[float]) -> float:
    """exp(mean(log v)) of positive values; 0 if one is 0; NaN if one is negative, not finite,
    or there are none."""
    vals = [float(v) for v in values]
    if not vals or any(not math.isfinite(v) or v < 0 for v in vals):
        return math.nan
    if any(v == 0 for v in vals):
        return 0.0
    if all(v == vals[0] for v in vals):
        return vals[0]  # exactly (exp(log(v)) may round): one seed's curve is that seed's
    return math.exp(statistics.fmean(math.log(v) for v in vals))


@dataclass(frozen=True)
class Summary:
    """Mean, std (sample, n-1), median, min, max and geometric mean of the finite values of a
    sample (``n`` counts them; a run's test or validation metric is NaN where it measured none);
    NaN where undefined."""

    n: int
    mean: float
    std: float
    median: float
    min: float
    max: float
    geomean: float = math.nan

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        vals = [float(v) for v in values if math.isfinite(v)]
        if not vals:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return cls(
            len(vals),
            statistics.fmean(vals),
            std,
            statistics.median(vals),
            min(vals),
            max(vals),
            geometric_mean(vals),
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Split:
    """Seeds whose final values fall into two groups far apart (``outcome_split``)."""

    seeds: int  # seeds looked at
    upper: int  # seeds in the upper (worse) group
    lower_max: float  # the largest final value of the lower group
    upper_min: float  # the smallest final value of the upper group
    plateau: int  # seeds of the upper group whose training loss fell by less than PLATEAU_DROP

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def words(self, variant: str) -> str:
        """'2/5 adaptive seeds stayed on the initial plateau (final 0.45 and above; the others
        0.012 and below)'."""
        what = (
            "stayed on the initial plateau"
            if self.plateau == self.upper
            else "stalled far above the others"
        )
        return (
            f"{self.upper}/{self.seeds} {variant} seeds {what} (final {self.upper_min:.2g} and "
            f"above; the others {self.lower_max:.2g} and below)"
        )


def outcome_split(
    finals: Sequence[float], initials: Sequence[float], final_trains: Sequence[float]
) -> Split | None:
    """The two groups of seeds, when their final values split into two (None otherwise).

    Sorted by log10 of the final values, the largest gap between neighbours splits them when it
    is at least ``SPLIT_DECADES`` and at least as wide as the wider group's own range: a bimodal
    outcome (some seeds stuck, the others trained), not one wide spread. ``initials`` and
    ``final_trains`` (the same seeds' step-0 and final training losses) tell which upper seeds
    never left the initial plateau. Three seeds at least; non-positive or non-finite values are
    left out.
    """
    rows = [
        (math.log10(f), f, i, t)
        for f, i, t in zip(finals, initials, final_trains)
        if math.isfinite(f) and f > 0
    ]
    if len(rows) < 3:
        return None
    rows.sort()
    logs = [r[0] for r in rows]
    gaps = [b - a for a, b in zip(logs, logs[1:])]
    k = max(range(len(gaps)), key=lambda j: gaps[j])
    lower, upper = logs[: k + 1], logs[k + 1 :]
    width = max(lower[-1] - lower[0], upper[-1] - upper[0])
    if gaps[k] < SPLIT_DECADES or gaps[k] < width:
        return None
    plateau = sum(1 for _, _, i, t in rows[k + 1 :] if math.isfinite(i) and t > i / PLATEAU_DROP)
    return Split(len(rows), len(upper), rows[k][1], rows[k + 1][1], plateau)


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n with ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def wilcoxon_signed_rank(differences: Sequence[float]) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences.

    Zero differences are dropped (Wilcoxon's convention). For n <= 30 the p-value is exact: the
    null distribution of W+ by counting sign patterns, over the mid-ranks when absolute
    differences tie (the exact conditional test; doubled mid-ranks are integers). Above 30 the
    normal approximation with tie correction is used.

    Returns:
        ``(W+, p)``: the sum of ranks of positive differences and the two-sided p-value (NaN
        when every difference is zero).
    """
    diffs = [d for d in differences if d != 0]
    n = len(diffs)
    if n == 0:
        return 0.0, math.nan
    r = ranks([abs(d) for d in diffs])
    w_plus = sum(rank for rank, d in zip(r, diffs) if d > 0)
    if n <= EXACT_WILCOXON_MAX_N:
        doubled = [round(2 * rank) for rank in r]
        total = sum(doubled)
        # counts[w] = number of sign patterns whose positive doubled ranks sum to w.
        counts = [1] + [0] * total
        for k in doubled:
            for w in range(total, k - 1, -1):
                counts[w] += counts[w - k]
        w = round(2 * w_plus)
        lower = sum(counts[: min(w, total - w) + 1])
        return w_plus, min(1.0, 2 * lower / 2**n)
    mean = n * (n + 1) / 4
    tie_term = sum(t**3 - t for t in _tie_sizes(r)) / 48
    var = n * (n + 1) * (2 * n + 1) / 24 - tie_term
    if var <= 0:
        return w_plus, math.nan
    z = (w_plus - mean) / math.sqrt(var)
    return w_plus, math.erfc(abs(z) / math.sqrt(2))


def _tie_sizes(values: Sequence[float]) -> list[int]:
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return [c for c in counts.values() if c > 1]


def bootstrap_mean_ci(
    values: Sequence[float],
    level: float = 0.95,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean, with a fixed resampling seed."""
    vals = list(values)
    if not vals:
        return math.nan, math.nan
    rng = random.Random(seed)
    n = len(vals)
    means = sorted(statistics.fmean(rng.choices(vals, k=n)) for _ in range(samples))
    alpha = (1 - level) / 2
    return quantile(means, alpha), quantile(means, 1 - alpha)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """The CDF of Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on ``t_cdf``; ~1e-12 absolute)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1) (got {q})")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13 * max(1.0, hi):
            break
    return (lo + hi) / 2


def _normal_quantile(q: float) -> float:
    """The standard normal quantile (bisection on erfc; ample for power calculations)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def t_mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student's t confidence interval of the mean (exact for normal data at any n >= 2)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n < 2:
        return math.nan, math.nan
    mean = statistics.fmean(vals)
    half = t_quantile(1 - (1 - level) / 2, n - 1) * statistics.stdev(vals) / math.sqrt(n)
    return mean - half, mean + half


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, str]:
    """The interval of the mean used in comparisons, and its method's name (``t``).

    Student's t at every n: the percentile bootstrap is far too narrow at the seed counts
    experiments use (see the comment at the top of this module).
    """
    lo, hi = t_mean_ci(values, level)
    return lo, hi, "t"


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give with ``n`` pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2**n) if n > 0 else 1.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (NaN stays NaN and is not counted).

    Controls the family-wise error rate of several variants compared with one baseline.
    """
    indexed = [(p, i) for i, p in enumerate(p_values) if math.isfinite(p)]
    m = len(indexed)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def seeds_needed(
    log_ratios: Sequence[float], comparisons: int = 1, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Seeds (pairs) for a paired test to resolve an effect of the size seen, or None.

    The effect is the mean log ratio and its spread the standard deviation seen in these pairs;
    the count is the normal-approximation sample size of a paired t test at ``power`` and
    two-sided level ``alpha / comparisons`` (Bonferroni, the conservative end of Holm), plus the
    usual z^2/2 small-sample correction, and never fewer than the exact signed-rank test needs
    to be able to reach that level at all (2 / 2^n <= alpha / comparisons). None when there is
    no effect to resolve (a zero mean) or no spread to measure it with.
    """
    vals = [float(v) for v in log_ratios if math.isfinite(v)]
    if len(vals) < 2:
        return None
    mean, sd = statistics.fmean(vals), statistics.stdev(vals)
    if mean == 0 or sd == 0:
        return None
    level = alpha / max(comparisons, 1)
    z_a = _normal_quantile(1 - level / 2)
    z_b = _normal_quantile(power)
    n = ((z_a + z_b) * sd / abs(mean)) ** 2 + z_a**2 / 2
    floor = 1
    while min_wilcoxon_p(floor) > level:
        floor += 1
    return max(math.ceil(n), floor)


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline, paired by seed (pairs where either diverged are dropped).

    ``ratio_*`` compare final (tail) test MSEs, variant / baseline; the interval is of their
    geometric mean, by ``ci_method`` (``t``: Student's t on the log ratios). ``p_value`` is the
    Wilcoxon signed-rank p of this comparison alone; ``p_holm`` is Holm-adjusted over the
    ``family`` comparisons with a p made against the same baseline in one run; ``min_p`` is the
    smallest p the exact test can give with these pairs.
    """

    variant: str
    baseline: str
    pairs: int
    wins: int
    ratio_geomean: float
    ratio_ci_low: float
    ratio_ci_high: float
    speedup_median: float
    speedup_pairs: int
    reached_only_variant: int
    reached_only_baseline: int
    wilcoxon_w: float
    p_value: float
    ci_method: str = "t"
    min_p: float = 1.0
    p_holm: float = math.nan
    family: int = 1
    seeds_needed: int | None = None
    losses: int = 0  # pairs where the variant ended worse than the baseline (ties: neither)
    reached_both: int = 0  # pairs where both reached the threshold (= speedup_pairs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def win_rate(self) -> float:
        return self.wins / self.pairs if self.pairs else math.nan

    @property
    def p_reported(self) -> float:
        """The p a verdict rests on: Holm-adjusted when several variants were compared."""
        return self.p_holm if self.family > 1 else self.p_value


def reported_p(comparison: Mapping[str, Any]) -> Any:
    """The p a comparison (as stored in summary.json) rests on: Holm-adjusted when its run
    compared several variants with the baseline, else its own (``Comparison.p_reported``)."""
    family = comparison.get("family") or 1
    return comparison.get("p_holm") if family > 1 else comparison.get("p_value")


def compare_paired(
    variant: str,
    baseline: str,
    final: dict[int, float],
    final_base: dict[int, float],
    steps: dict[int, int | None],
    steps_base: dict[int, int | None],
    family: int = 1,
) -> Comparison:
    """Paired comparison of final test losses and steps to threshold, keyed by seed.

    The ratio is variant / baseline of the final test MSE: below 1 means the variant is better.
    Its geometric mean and confidence interval are computed on log ratios (``mean_ci``). The
    speed-up is baseline steps / variant steps, over seeds where both reached the threshold.
    Seeds missing from either dict (diverged models) are left out. ``family`` is the number of
    comparisons made against this baseline, for the seed-count suggestion (Holm's adjustment
    itself is applied by ``adjust_family``).
    """
    seeds = sorted(set(final) & set(final_base))
    log_ratios = []
    for s in seeds:
        a, b = final[s], final_base[s]
        log_ratios.append(math.log(a / b) if a > 0 and b > 0 else (0.0 if a == b else math.nan))
    usable = [r for r in log_ratios if math.isfinite(r)]
    wins = sum(1 for s in seeds if final[s] < final_base[s])
    losses = sum(1 for s in seeds if final[s] > final_base[s])
    method = "t"
    if usable:
        geomean = math.exp(statistics.fmean(usable))
        lo, hi, method = mean_ci(usable)
        ci = (math.exp(lo), math.exp(hi)) if math.isfinite(lo) else (math.nan, math.nan)
    else:
        geomean, ci = math.nan, (math.nan, math.nan)
    pairs = [(steps.get(s), steps_base.get(s)) for s in seeds]
    speedups = [b / max(v, 1) for v, b in pairs if v is not None and b is not None]
    only_v = sum(1 for s in seeds if steps.get(s) is not None and steps_base.get(s) is None)
    only_b = sum(1 for s in seeds if steps.get(s) is None and steps_base.get(s) is not None)
    w, p = wilcoxon_signed_rank(usable)
    nonzero = sum(1 for r in usable if r != 0)
    return Comparison(
        variant=variant,
        baseline=baseline,
        pairs=len(seeds),
        wins=wins,
        ratio_geomean=geomean,
        ratio_ci_low=ci[0],
        ratio_ci_high=ci[1],
        speedup_median=statistics.median(speedups) if speedups else math.nan,
        speedup_pairs=len(speedups),
        reached_only_variant=only_v,
        reached_only_baseline=only_b,
        wilcoxon_w=w,
        p_value=p,
        ci_method=method,
        min_p=min_wilcoxon_p(nonzero),
        p_holm=p,
        family=1,
        seeds_needed=seeds_needed(usable, family),
        losses=losses,
        reached_both=len(speedups),
    )


def adjust_family(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The same comparisons with Holm-adjusted p-values over the whole family."""
    adjusted = holm([c.p_value for c in comparisons])
    family = sum(1 for c in comparisons if math.isfinite(c.p_value))  # the p-values adjusted
    return [replace(c, p_holm=p, family=family) for c, p in zip(comparisons, adjusted)]


def _resolution(c: Comparison) -> list[str]:
    """What these seeds can and cannot show: the floor of p, and how many seeds would do."""
    level = ALPHA / max(c.family, 1)
    notes = []
    if c.min_p > level:
        notes.append(
            f"{c.pairs} seeds: p cannot go below {c.min_p:.2g}"
            + (f", nor reach {level:.2g} ({c.family} comparisons)" if c.family > 1 else "")
        )
    p = c.p_reported
    resolved = math.isfinite(p) and p < ALPHA
    if not resolved and c.seeds_needed is not None and c.seeds_needed > c.pairs:
        notes.append(f"about {c.seeds_needed} seeds would resolve an effect of this size")
    return notes


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def outcome_words(
    variant: str, baseline: str, wins: int, losses: int, pairs: int, seeds: str = "seeds"
) -> str:
    """Who ended lower on how many seeds, by the count: 'wins against ... on 9/10 seeds',
    'loses to ... on 3/3 seeds', or 'is even with ...' — never 'beats' on 0/3."""
    if wins > losses:
        return f"{variant} wins against {baseline} on {wins}/{pairs} {seeds}"
    if losses > wins:
        return f"{variant} loses to {baseline} on {losses}/{pairs} {seeds}"
    ties = pairs - wins - losses
    even = f"{variant} is even with {baseline}: lower on {wins}, higher on {losses}"
    return even + (f", equal on {ties}" if ties else "") + f" of {pairs} {seeds}"


def threshold_words(c: Comparison, threshold: float) -> str:
    """Every count of reaching the threshold, and the speed-up with the pairs behind it."""
    neither = c.pairs - c.reached_both - c.reached_only_variant - c.reached_only_baseline
    parts = [f"both on {c.reached_both}"]
    if c.reached_both:
        parts[0] += (
            f" ({c.variant} {c.speedup_median:.2g}x fewer steps, median of "
            f"{'1 pair' if c.reached_both == 1 else f'{c.reached_both} pairs'})"
        )
    parts += [
        f"only {c.variant} on {c.reached_only_variant}",
        f"only {c.baseline} on {c.reached_only_baseline}",
        f"neither on {neither}",
    ]
    return f"reaching {threshold:g}: " + ", ".join(parts)


def verdict(c: Comparison, threshold: float, metric: str = "test MSE") -> str:
    """One line a reader can act on, e.g. 'adaptive wins against fixed on 9/10 seeds;
    geometric-mean ratio of final test MSE 0.097 [0.033, 0.28, t interval]; reaching 0.01:
    both on 2 (adaptive 1.2x fewer steps, median of 2 pairs), only adaptive on 6, only fixed on
    0, neither on 2; Wilcoxon p = 0.0039'."""
    if c.pairs == 0:
        return f"{c.variant}: no seed pair to compare with {c.baseline} (all diverged)"
    parts = [outcome_words(c.variant, c.baseline, c.wins, c.losses, c.pairs)]
    if math.isfinite(c.ratio_geomean):
        ci = ""
        if c.pairs > 1 and c.ratio_ci_low == c.ratio_ci_high:
            ci = " (the same in every seed: no spread to make an interval from)"
        elif c.pairs > 1 and math.isfinite(c.ratio_ci_low):
            how = ", t interval" if c.ci_method == "t" else ""
            ci = f" [{c.ratio_ci_low:.2g}, {c.ratio_ci_high:.2g}{how}]"
        parts.append(f"geometric-mean ratio of final {metric} {c.ratio_geomean:.2g}{ci}")
    parts.append(threshold_words(c, threshold))
    if c.pairs == 1:
        parts.append("1 seed: no test or interval is possible; run more seeds")
    if c.pairs >= 2 and math.isfinite(c.p_value):
        p = f"Wilcoxon p = {c.p_value:.2g}"
        if c.family > 1 and math.isfinite(c.p_holm):
            p += f" (Holm-adjusted over {c.family} variants: {c.p_holm:.2g})"
        parts.append(p)
        parts += _resolution(c)
    return "; ".join(parts)
