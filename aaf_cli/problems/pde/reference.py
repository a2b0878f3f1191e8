"""Reference solutions of problems without a closed form, computed in float64.

Burgers' equation u_t + u u_x = nu u_xx on x in [-1, 1] with u(x, 0) = -sin(pi x) and
u(+-1, t) = 0 is the PINN papers' steep-front test (Raissi et al., J. Comput. Phys. 378 (2019);
Jagtap et al., J. Comput. Phys. 404 (2020), nu = 0.01/pi). The Cole-Hopf transform
u = -2 nu phi_x / phi turns it into the heat equation phi_t = nu phi_xx, whose solution is a
Gaussian convolution of phi(x, 0) = exp(-cos(pi x) / (2 pi nu)) (up to a constant factor).
Differentiating under the integral and substituting eta = sqrt(4 nu t) s gives (Basdevant et
al., Computers & Fluids 14 (1986))::

    u(x, t) = - int sin(pi (x - c s)) f(x - c s) exp(-s^2) ds / int f(x - c s) exp(-s^2) ds,
    f(y) = exp(-cos(pi y) / (2 pi nu)),  c = sqrt(4 nu t),

two integrals against the weight exp(-s^2) that Gauss-Hermite quadrature evaluates. f spans
about exp(+-50) at nu = 0.01/pi, so the exponents are shifted by their maximum at each point
(the ratio does not change) before they are exponentiated. With 200 nodes the values agree with
an independent Fourier pseudo-spectral solution (4096 modes) to about 2e-9 up to t = 1.

The formula is written with torch operations, so the reference is differentiable: the tests
plug it into the operator through autograd. (Its derivatives in t are infinite at t = 0, where
c = sqrt(4 nu t) has an infinite slope; the values there are exact: u = -sin(pi x).)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import torch

__all__ = ["GAUSS_HERMITE_NODES", "burgers", "reference_solution"]

GAUSS_HERMITE_NODES = 200
"""Quadrature nodes of the Burgers reference (numpy's hermgauss overflows beyond ~350)."""

_CHUNK = 8192


@functools.lru_cache(maxsize=4)
def _hermite(nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Hermite nodes and weights (weight function exp(-s^2)) in float64."""
    from numpy.polynomial.hermite import hermgauss

    s, w = hermgauss(nodes)
    return torch.from_numpy(s), torch.from_numpy(w)


def burgers(
    x: torch.Tensor, t: torch.Tensor, nu: float = 0.01 / math.pi, nodes: int = GAUSS_HERMITE_NODES
) -> torch.Tensor:
    """The Burgers solution with u(x, 0) = -sin(pi x), u(+-1, t) = 0, by the Cole-Hopf formula.

    Args:
        x, t: float64 tensors of one shape (t >= 0); may require grad.
        nu: the viscosity.
        nodes: Gauss-Hermite nodes.

    Returns:
        u at every point, in float64, of the inputs' shape; differentiable in x and t (for
        t > 0).
    """
    s, w = _hermite(nodes)
    s, w = s.to(x.device), w.to(x.device)
    shape = x.shape
    xs, ts = x.reshape(-1), t.reshape(-1)
    parts = []
    for start in range(0, xs.numel(), _CHUNK):
        xc, tc = xs[start : start + _CHUNK, None], ts[start : start + _CHUNK, None]
        y = xc - torch.sqrt(4 * nu * tc) * s
        exponent = -torch.cos(math.pi * y) / (2 * math.pi * nu)
        # Shift by the largest exponent per point (a constant of the ratio), so exp stays finite.
        exponent = exponent - exponent.amax(dim=-1, keepdim=True).detach()
        weight = w * torch.exp(exponent)
        parts.append(-(torch.sin(math.pi * y) * weight).sum(-1) / weight.sum(-1))
    if not parts:
        return x.new_zeros(shape)
    return torch.cat(parts).reshape(shape)


def reference_solution(
    name: str, params: Mapping[str, float]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The named reference as a function of points ``[N, d]`` (float64) to values ``[N]``.

    Args:
        name: a key of ``spec.REFERENCES``.
        params: its parameters, defaults included (``ReferenceConfig.resolved()``).
    """
    if name == "burgers":
        nu = float(params["nu"])
        return lambda points: burgers(points[..., 0], points[..., 1], nu)
    raise ValueError(f"unknown reference '{name}'")
