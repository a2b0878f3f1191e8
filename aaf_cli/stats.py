"""Statistics across seeds and paired comparisons against the baseline (pure Python, no torch).

The comparisons are paired by seed: seed s of an adaptive variant started from the same weights as
seed s of the baseline, so the per-seed ratio of their losses isolates the activation's effect.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

BOOTSTRAP_SEED = 20200101
BOOTSTRAP_SAMPLES = 10_000
EXACT_WILCOXON_MAX_N = 30


def quantile(values: Sequence[float], q: float) -> float:
    """Quantile with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """Mean, std (sample, n-1), median, min and max of a sample; NaN where undefined."""

    n: int
    mean: float
    std: float
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        vals = [float(v) for v in values]
        if not vals:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return cls(
            len(vals), statistics.fmean(vals), std, statistics.median(vals), min(vals), max(vals)
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


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

    Zero differences are dropped (Wilcoxon's convention). Without ties and for n <= 30 the
    p-value is exact (the null distribution of W+ by counting sign patterns); otherwise the normal
    approximation with tie correction is used.

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
    ties = len(set(abs(d) for d in diffs)) < n
    if not ties and n <= EXACT_WILCOXON_MAX_N:
        # counts[w] = number of sign patterns whose positive ranks sum to w.
        total = n * (n + 1) // 2
        counts = [1] + [0] * total
        for k in range(1, n + 1):
            for w in range(total, k - 1, -1):
                counts[w] += counts[w - k]
        w = round(w_plus)
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


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline, paired by seed (pairs where either diverged are dropped)."""

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def win_rate(self) -> float:
        return self.wins / self.pairs if self.pairs else math.nan


def compare_paired(
    variant: str,
    baseline: str,
    final: dict[int, float],
    final_base: dict[int, float],
    steps: dict[int, int | None],
    steps_base: dict[int, int | None],
) -> Comparison:
    """Paired comparison of final test losses and steps to threshold, keyed by seed.

    The ratio is variant / baseline of the final test MSE: below 1 means the variant is better.
    Its geometric mean and bootstrap CI are computed on log ratios. The speed-up is baseline
    steps / variant steps, over seeds where both reached the threshold. Seeds missing from either
    dict (diverged models) are left out.
    """
    seeds = sorted(set(final) & set(final_base))
    log_ratios = []
    for s in seeds:
        a, b = final[s], final_base[s]
        log_ratios.append(math.log(a / b) if a > 0 and b > 0 else (0.0 if a == b else math.nan))
    usable = [r for r in log_ratios if math.isfinite(r)]
    wins = sum(1 for s in seeds if final[s] < final_base[s])
    if usable:
        geomean = math.exp(statistics.fmean(usable))
        lo, hi = bootstrap_mean_ci(usable)
        ci = (math.exp(lo), math.exp(hi))
    else:
        geomean, ci = math.nan, (math.nan, math.nan)
    pairs = [(steps.get(s), steps_base.get(s)) for s in seeds]
    speedups = [b / max(v, 1) for v, b in pairs if v is not None and b is not None]
    only_v = sum(1 for s in seeds if steps.get(s) is not None and steps_base.get(s) is None)
    only_b = sum(1 for s in seeds if steps.get(s) is None and steps_base.get(s) is not None)
    w, p = wilcoxon_signed_rank(usable)
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
    )


def verdict(c: Comparison, threshold: float) -> str:
    """One line a reader can act on, e.g. 'adaptive beats fixed on 9/10 seeds; ...'."""
    if c.pairs == 0:
        return f"{c.variant}: no seed pair to compare with {c.baseline} (all diverged)"
    parts = [f"{c.variant} beats {c.baseline} on {c.wins}/{c.pairs} seeds"]
    if math.isfinite(c.ratio_geomean):
        ci = ""
        if c.pairs > 1:
            ci = f" [{c.ratio_ci_low:.2g}, {c.ratio_ci_high:.2g}]"
        parts.append(f"final test MSE ratio {c.ratio_geomean:.2g}{ci}")
    if c.speedup_pairs:
        parts.append(f"{c.speedup_median:.2g}x fewer steps to {threshold:g}")
    elif c.reached_only_variant:
        parts.append(f"only {c.variant} reached {threshold:g} ({c.reached_only_variant} seeds)")
    elif c.reached_only_baseline:
        parts.append(f"only {c.baseline} reached {threshold:g} ({c.reached_only_baseline} seeds)")
    else:
        parts.append(f"neither reached {threshold:g}")
    if c.pairs >= 2 and math.isfinite(c.p_value):
        parts.append(f"Wilcoxon p = {c.p_value:.2g}")
    return "; ".join(parts)
