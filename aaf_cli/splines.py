"""B-splines on uniform grids: the basis, the grids and the least-squares fits that KAN layers
(``aaf_cli.kan``) and spline activations (``activations.SplineFamily``) are made of.

A spline of order k on a grid of G intervals over [lo, hi] is a sum of G + k basis functions
B_c(x), each a piecewise polynomial of degree k. The knots are the G + 1 grid points extended by
k more on each side at the same spacing (as ``pykan`` does), so that for k >= 1 every point of
[lo, hi] is covered by k + 1 basis functions that sum to 1; outside [lo - k h, hi + k h] every
B_c is 0. (The intervals are half-open, as pykan's: at order 0 nothing covers hi itself.)

Reference: Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756 (2024), and its
``pykan`` code (``kan/spline.py``), whose Cox-de Boor recursion ``basis`` follows.
"""

from __future__ import annotations

from typing import Any

import torch


def knots(lo: float, hi: float, grid: int, order: int, dtype: torch.dtype) -> torch.Tensor:
    """The G + 2k + 1 knots of a grid of ``grid`` intervals on [lo, hi], extended by ``order``
    intervals on each side, in float64 arithmetic and then cast (as pykan's ``extend_grid``)."""
    h = (hi - lo) / grid
    steps = torch.arange(-order, grid + order + 1, dtype=torch.float64)
    return (lo + steps * h).to(dtype)


def knots_of(spec: Any, dtype: torch.dtype) -> torch.Tensor:
    """``knots`` of a spline variant's config (its ``grid_range``, ``grid`` and ``order``)."""
    lo, hi = (float(v) for v in spec.grid_range)
    return knots(lo, hi, int(spec.grid), int(spec.order), dtype)


def basis(x: torch.Tensor, t: torch.Tensor, order: int) -> torch.Tensor:
    """Every B-spline basis function of ``order`` on knots ``t`` at ``x``: ``[..., T - order -
    1]`` for x ``[...]`` and knots ``[..., T]`` that broadcast against ``x[..., None]``.

    The Cox-de Boor recursion: B_c^0 = 1 on [t_c, t_{c+1}), else 0, and
    B_c^j = (x - t_c) / (t_{c+j} - t_c) B_c^{j-1} + (t_{c+j+1} - x) / (t_{c+j+1} - t_{c+1})
    B_{c+1}^{j-1}. Differentiable in x (twice, for order >= 3, as a physics-informed loss needs)
    and in nothing else: knots are not trained.
    """
    z = x.unsqueeze(-1)
    b = ((z >= t[..., :-1]) & (z < t[..., 1:])).to(x.dtype)
    for j in range(1, order + 1):
        left = (z - t[..., : -(j + 1)]) / (t[..., j:-1] - t[..., : -(j + 1)])
        right = (t[..., j + 1 :] - z) / (t[..., j + 1 :] - t[..., 1:-j])
        b = left * b[..., :-1] + right * b[..., 1:]
    return b


def basis_rows(x: torch.Tensor, t: torch.Tensor, order: int) -> torch.Tensor:
    """``basis`` laid out for many points at once: ``[..., T - order - 1, N]`` for points
    ``x`` ``[..., N]`` and knots ``t`` ``[..., T]`` (the same leading shape). The same
    recursion, with the right factor taken as 1 - the next function's left one
    ((t_{c+j+1} - x) / (t_{c+j+1} - t_{c+1}) = 1 - (x - t_{c+1}) / (t_{c+j+1} - t_{c+1})) and
    the knot spacings' reciprocals taken once per order: rows of N contiguous points, two
    multiply-adds per function and order."""
    z = x.unsqueeze(-2)  # [..., 1, N]
    knots = t.unsqueeze(-1)  # [..., T, 1]
    b = ((z >= knots[..., :-1, :]) & (z < knots[..., 1:, :])).to(x.dtype)
    for j in range(1, order + 1):
        inverse = (1 / (t[..., j:] - t[..., :-j])).unsqueeze(-1)  # [..., T - j, 1]
        left = (z - knots[..., :-j, :]) * inverse  # (x - t_c) / (t_{c+j} - t_c)
        b = left[..., :-1, :] * b[..., :-1, :] + (1 - left[..., 1:, :]) * b[..., 1:, :]
    return b


def grid_points(t: torch.Tensor, order: int) -> torch.Tensor:
    """The G + 1 grid points of knots ``t`` (without the extension)."""
    return t[..., order:-order] if order else t


def fit(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, order: int) -> torch.Tensor:
    """Coefficients ``[..., out, G + k]`` of the splines on knots ``t`` ``[..., T]`` that fit
    values ``y`` ``[..., P, out]`` at points ``x`` ``[..., P]`` in the least-squares sense
    (the minimum-norm solution where the points do not determine them, as pykan's
    ``curve2coef``); computed in float64."""
    a = basis(x.double(), t.double().unsqueeze(-2), order)  # [..., P, G + k]
    solution: torch.Tensor = torch.linalg.pinv(a) @ y.double()  # [..., G + k, out]
    return solution.transpose(-1, -2).to(y.dtype)
