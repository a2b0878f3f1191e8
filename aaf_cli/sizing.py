"""How big a variant's network is, without torch: trainable parameters and forward FLOPs per
point, and the hidden width that makes a variant as big as the baseline (``match:``).

A comparison that does not control size can be won by size (Yu, Yu, Wang, "KAN or MLP: A
Fairer Comparison", arXiv:2407.16674, 2024): N-LAAF adds a parameter per neuron, Rowdy 2(K-1) + 1
per layer, a KAN layer G + k + 2 per edge. ``match: params`` (or ``flops``) gives a variant the
one hidden width, its depth kept, whose count is nearest the baseline's, and refuses where none
is within ``TOLERANCE``.

FLOPs count one forward pass at one point, as the network computes it: 2 per multiply-add of
a layer's product plus 1 per bias; 1 per evaluation of a base activation and per elementwise
multiply, add or comparison (a slope's n*a*z: 1 more per neuron; Rowdy's K - 1 sines: 4 each;
a rational unit: Horner's rule in both degrees); a B-spline basis of order k on G intervals by
the Cox-de Boor recursion: G + 2k comparisons, then 7 per basis function of each order j
(2 subtractions, 4 multiplications by the precomputed knot spacings' reciprocals, 1 add).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aaf_cli.schema import MAX_WIDTH

#: How far a matched variant's count may lie from the baseline's, relatively.
TOLERANCE = 0.05
MATCHES = ("params", "flops")


def dense_params(layers: Sequence[int]) -> int:
    return sum(i * o + o for i, o in zip(layers[:-1], layers[1:]))


def activation_params(variant: Any, widths: Sequence[int]) -> int:
    """Trainable activation parameters of one model of ``variant`` with hidden ``widths``."""
    return int(_activation_params(variant, widths))


def _activation_params(variant: Any, widths: Sequence[int]) -> Any:
    kind, hidden = variant.kind, len(widths)
    if kind == "global":
        return 1
    if kind == "layer":
        return hidden
    if kind == "neuron":
        return sum(widths)
    if kind == "rowdy":
        return hidden * (1 + 2 * (variant.K - 1))
    if kind in ("prelu", "swish"):
        return hidden
    if kind == "rational":
        p, q = variant.degrees
        return hidden * (p + 1 + q)
    if kind == "spline":
        size = variant.grid + variant.order
        return size * (sum(widths) if variant.per == "neuron" else hidden)
    return 0


def params(variant: Any, layers: Sequence[int]) -> int:
    """Trainable parameters of one model of ``variant`` with widths ``layers``."""
    if variant.kind == "kan":
        per_edge = int(variant.grid + variant.order + 2)
        return sum(i * o * per_edge for i, o in zip(layers[:-1], layers[1:]))
    return dense_params(layers) + activation_params(variant, layers[1:-1])


def basis_flops(grid: int, order: int) -> int:
    """FLOPs of every B-spline basis function at one input (see the module's note)."""
    intervals = grid + 2 * order
    return intervals + 7 * sum(intervals - j for j in range(1, order + 1))


def activation_flops(variant: Any) -> int:
    """FLOPs of one hidden neuron's activation at one point."""
    return int(_activation_flops(variant))


def _activation_flops(variant: Any) -> Any:
    kind = variant.kind
    if kind == "fixed":
        return 1 if getattr(variant, "slope", None) is None else 2
    if kind in ("global", "layer", "neuron"):
        return 2
    if kind == "rowdy":
        return 2 + 4 * (variant.K - 1)
    if kind == "prelu":
        return 2
    if kind == "swish":
        return 3
    if kind == "rational":
        p, q = variant.degrees
        return 2 * p + 3 * q + 2
    if kind == "spline":
        return basis_flops(variant.grid, variant.order) + 2 * (variant.grid + variant.order) + 2
    raise ValueError(f"unknown kind '{kind}'")


def flops(variant: Any, layers: Sequence[int]) -> int:
    """Forward FLOPs per point of one model of ``variant`` with widths ``layers``."""
    pairs = list(zip(layers[:-1], layers[1:]))
    if variant.kind == "kan":
        features = int(variant.grid + variant.order + 1)
        per_input = basis_flops(variant.grid, variant.order) + 1
        return sum(i * per_input + 2 * i * features * o for i, o in pairs)
    products = sum(2 * i * o + o for i, o in pairs)
    return products + activation_flops(variant) * sum(layers[1:-1])


def measure(what: str, variant: Any, layers: Sequence[int]) -> int:
    return params(variant, layers) if what == "params" else flops(variant, layers)


def matched_layers(
    what: str, variant: Any, template: Sequence[int], target: int
) -> tuple[list[int], int, bool]:
    """The widths ``template`` with every hidden layer at the one width whose ``what`` is
    nearest ``target`` (the smaller width on a tie), that count, and whether it lies within
    ``TOLERANCE`` of ``target``."""
    inputs, depth = template[0], len(template) - 2

    def at(width: int) -> list[int]:
        return [inputs, *([width] * depth), template[-1]]

    # Every count grows with the width: bisect for the first width at or above the target.
    lo, hi = 1, MAX_WIDTH
    while lo < hi:
        mid = (lo + hi) // 2
        if measure(what, variant, at(mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = [w for w in (lo - 1, lo) if 1 <= w <= MAX_WIDTH]
    best = min(candidates, key=lambda w: (abs(measure(what, variant, at(w)) - target), w))
    count = measure(what, variant, at(best))
    return at(best), count, abs(count - target) <= TOLERANCE * target


def unit(what: str) -> str:
    return "parameters" if what == "params" else "FLOPs per point"


def matched_by(cfg: Any, variant: Any) -> str | None:
    """What ``variant`` was matched on in ``cfg`` (params, flops), or None."""
    what = variant.match if variant.match is not None else cfg.match
    if what in (None, "none") or variant is cfg.baseline_variant:
        return None
    return str(what)


def size_words(
    variant: str, baseline: str, matched: str | None, sizes: dict[str, dict[str, int]]
) -> str:
    """How the two networks' sizes compare, for a verdict: 'at matched parameters (476 vs
    481)', or, where they differ by more than the tolerance without a match, a warning."""
    mine, theirs = sizes[variant], sizes[baseline]
    if matched is not None:
        key = "parameters" if matched == "params" else "flops"
        return f"at matched {unit(matched)} ({mine[key]} vs {theirs[key]})"
    p, q = mine["parameters"], theirs["parameters"]
    if abs(p - q) <= TOLERANCE * q:
        return ""
    return (
        f"not at equal size: {variant} has {p} parameters, {baseline} {q} (match: params "
        "compares at equal size)"
    )
