"""Base activations and every adaptive family, per model and batched.

Two implementations of each kind live here side by side:

* per-model ``nn.Module`` s (``Slope``, ``RowdyUnit``, ``Swish``, ``Rational``, ``nn.PReLU``), the
  way a user writes one network; ``reference_activations`` builds those of one network, and they
  are what the batched engine is tested against and what checkpoints load into;
* batched families (``Family`` subclasses) holding the parameters of M models at once, shaped
  ``[M, 1, width]`` or ``[M, 1, 1]`` so that they broadcast over pre-activations ``[M, N, width]``.

References:
    Jagtap, Kawaguchi, Karniadakis, J. Comput. Phys. 404 (2020), arXiv:1906.01170 (global).
    Jagtap, Kawaguchi, Karniadakis, Proc. R. Soc. A 476 (2020), arXiv:1909.12228 (layer,
    neuron, slope recovery).
    Jagtap, Shin, Kawaguchi, Karniadakis, Neurocomputing 468 (2022), arXiv:2105.09513 (Rowdy).
    Molina, Schramowski, Kersting, "Padé activation units", ICLR 2020 (rational, safe form).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aaf_cli import registry, splines

Activation = Callable[[torch.Tensor], torch.Tensor]

# Same names as registry.ACTIVATIONS (a test keeps them in step).
ACTIVATIONS: dict[str, Activation] = {
    "elu": F.elu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "sin": torch.sin,
    "cos": torch.cos,
    "softplus": F.softplus,
    "gelu": F.gelu,
    "silu": F.silu,
    "leaky_relu": F.leaky_relu,
}

#: sigma(z) -> (sigma, sigma', sigma''), elementwise, in closed form: what forward-mode (Taylor)
#: derivatives of a network need (the Taylor mode of the physics-informed problems). Each equals
#: autograd's first and second derivative of the entry of ``ACTIVATIONS``, kinks included (at
#: exactly 0 relu and leaky_relu take the left side's slope, elu the right side's curvature, as
#: autograd does); a test checks every one.
Jet = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _tanh_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h = torch.tanh(z)
    d1 = 1 - h * h
    return h, d1, -2 * h * d1


def _sigmoid_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h = torch.sigmoid(z)
    d1 = h * (1 - h)
    return h, d1, d1 * (1 - 2 * h)


def _sin_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h = torch.sin(z)
    return h, torch.cos(z), -h


def _cos_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h = torch.cos(z)
    return h, -torch.sin(z), -h


def _softplus_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # F.softplus is z itself above its threshold (20), with derivative 1 and curvature 0 there;
    # at exactly 20 autograd takes sigmoid's slope but a curvature of 0.
    s = torch.sigmoid(z)
    return (
        F.softplus(z),
        torch.where(z > 20, 1.0, s),
        torch.where(z >= 20, 0.0, s * (1 - s)),
    )


def _silu_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = torch.sigmoid(z)
    ds = s * (1 - s)
    return z * s, s + z * ds, ds * (2 + z * (1 - 2 * s))


def _gelu_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cdf = 0.5 * (1 + torch.erf(z * math.sqrt(0.5)))
    pdf = torch.exp(-0.5 * z * z) * (1 / math.sqrt(2 * math.pi))
    return z * cdf, cdf + z * pdf, pdf * (2 - z * z)


def _elu_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h = F.elu(z)
    positive = z > 0
    # Autograd's second derivative of elu at exactly 0 is the right side's (0).
    return h, torch.where(positive, 1.0, h + 1), torch.where(z < 0, h + 1, 0.0)


def _relu_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d1 = (z > 0).to(z.dtype)
    return F.relu(z), d1, torch.zeros_like(z)


def _leaky_relu_jet(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    slope = torch.where(z > 0, torch.ones_like(z), torch.full_like(z, 0.01))
    return F.leaky_relu(z), slope, torch.zeros_like(z)


JETS: dict[str, Jet] = {
    "elu": _elu_jet,
    "tanh": _tanh_jet,
    "sigmoid": _sigmoid_jet,
    "relu": _relu_jet,
    "sin": _sin_jet,
    "cos": _cos_jet,
    "softplus": _softplus_jet,
    "gelu": _gelu_jet,
    "silu": _silu_jet,
    "leaky_relu": _leaky_relu_jet,
}

# Our own least-squares fit of the safe (5, 4) rational to leaky ReLU (slope 0.01) on [-3, 3]
# (601 points, 8 L-BFGS starts in float64; max error 0.030, RMS 0.005): the ``rational_init``
# procedure with the default degrees, stored to save the 6 s it takes.
_RATIONAL_5_4 = (
    (
        0.02979740121840484,
        0.6184612407561367,
        2.3209580112524626,
        3.0445799344929108,
        1.479617457235331,
        0.24965614949193665,
    ),
    (1.1411589348773068, 4.382255881556748, 0.868181082189348, 0.3452891543573795),
)


def get_activation(name: str) -> Activation:
    """The base activation called ``name``; unknown names list the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        valid = ", ".join(registry.ACTIVATIONS)
        raise ValueError(f"unknown activation '{name}' (valid: {valid})") from None


def rational_value(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """P(x) / (1 + sum_k |b_k| |x|^k); coefficients on the last axis (broadcast against x).

    The "safe" denominator is at least 1, so the unit has no poles.
    """
    p = num[..., -1]
    for i in range(num.shape[-1] - 2, -1, -1):
        p = p * x + num[..., i]
    if den.shape[-1] == 0:
        return p
    ax = x.abs()
    q = den[..., -1].abs()
    for j in range(den.shape[-1] - 2, -1, -1):
        q = q * ax + den[..., j].abs()
    return p / (1 + q * ax)


@functools.lru_cache(maxsize=16)
def rational_init(p: int, q: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients of a degree (p, q) safe rational that fits leaky ReLU on [-3, 3].

    Deterministic (fixed starts, float64 L-BFGS on the mean squared error); (5, 4) is stored.
    """
    if (p, q) == (5, 4):
        return _RATIONAL_5_4
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    y = F.leaky_relu(x, 0.01)
    gen = torch.Generator().manual_seed(0)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for _ in range(4):
        num = (torch.rand(p + 1, generator=gen, dtype=torch.float64) - 0.5).requires_grad_()
        den = torch.rand(q, generator=gen, dtype=torch.float64).requires_grad_()
        opt = torch.optim.LBFGS(
            [num, den], max_iter=300, history_size=50, line_search_fn="strong_wolfe"
        )

        def closure(
            num: torch.Tensor = num, den: torch.Tensor = den, opt: torch.optim.LBFGS = opt
        ) -> torch.Tensor:
            opt.zero_grad()
            loss = (rational_value(x, num, den) - y).square().mean()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        opt.step(closure)  # type: ignore[no-untyped-call]
        with torch.no_grad():
            loss = float((rational_value(x, num, den) - y).square().mean())
        if math.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, num.detach(), den.detach().abs())
    assert best is not None
    return tuple(best[1].tolist()), tuple(best[2].tolist())


def inverse(n: float, dtype: torch.dtype | None = None) -> float:
    """The number a of ``dtype`` nearest 1/n for which n * a rounds to exactly 1 in ``dtype``.

    1/n rounded is not always such a number (in float64, 49 * fl(1/49) != 1), and the adaptive
    network must start *exactly* as the fixed one; a neighbour a few ulps away always is one for
    the n users pick. Falls back to fl(1/n).
    """
    dtype = dtype or torch.get_default_dtype()
    n_t = torch.tensor(float(n), dtype=dtype)
    a = torch.tensor(1.0 / float(n), dtype=dtype)
    candidates = [a]
    up, down = a, a
    for _ in range(4):
        up = torch.nextafter(up, torch.tensor(math.inf, dtype=dtype))
        down = torch.nextafter(down, torch.tensor(-math.inf, dtype=dtype))
        candidates += [up, down]
    for c in candidates:
        if float(n_t * c) == 1.0:
            return float(c)
    return float(a)


def recovery_scale(form: str, layers: int) -> float:
    """The numerator of S(a): D-1 for the paper's form, 1 for the authors' TF1 script."""
    return float(layers) if form == "paper" else 1.0


def slope_recovery(means: Sequence[torch.Tensor], form: str | float | torch.Tensor) -> torch.Tensor:
    """S(a) from the (mean) raw slope of each hidden layer, stacked on the last axis.

    paper: 1 / ((1/L) sum_k exp(a_k)); code: 1 / sum_k exp(a_k) (the authors' TF1 script).
    ``form`` may also be the numerator itself (one per model for the batched families).
    """
    total = torch.stack([torch.exp(m) for m in means], dim=-1).sum(-1)
    scale = recovery_scale(form, len(means)) if isinstance(form, str) else form
    return scale / total


# --------------------------------------------------------------------------------------------
# Per-model modules (the reference implementation, and what checkpoints load into)


class Slope(nn.Module):
    """sigma(n * a * x) with a trainable ``a``: a scalar (global, layer) or one per neuron.

    With ``a = 1/n`` it equals sigma(x), so an adaptive network starts where the fixed one does.
    ``n`` is a buffer: in the state dict, moved by ``.to()``, not trained.
    """

    n: torch.Tensor

    def __init__(
        self,
        base: str,
        n: float = 1.0,
        a0: float | None = None,
        width: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.fn = get_activation(base)
        # Made directly in the target dtype: 0.1 rounded to float32 and widened is not 0.1.
        self.register_buffer("n", torch.tensor(float(n), dtype=dtype))
        value = inverse(n, dtype) if a0 is None else float(a0)
        shape = () if width is None else (width,)
        self.a = nn.Parameter(torch.full(shape, value, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn((self.n * self.a) * x)

    def extra_repr(self) -> str:
        return f"base={self.base}, n={float(self.n):g}, shape={tuple(self.a.shape)}"


class Fixed(nn.Module):
    """The base activation as a module without parameters: sigma(x), or sigma(s * x) with a
    fixed steepness s (the control of an adaptive slope)."""

    def __init__(self, base: str, slope: float | None = None) -> None:
        super().__init__()
        self.base = base
        self.fn = get_activation(base)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x if self.slope is None else self.slope * x)


class SplineUnit(nn.Module):
    """sigma(x) + sum_c coef_c B_c(x): a learnable B-spline added to the base activation, one
    per neuron (``width``) or one for the layer; ``coef`` = 0 at the start (sigma itself)."""

    knots: torch.Tensor

    def __init__(
        self, base: str, spec: Any, width: int | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.fn = get_activation(base)
        self.order = int(spec.order)
        self.register_buffer("knots", splines.knots_of(spec, dtype or torch.get_default_dtype()))
        shape = (spec.grid + self.order,) if width is None else (width, spec.grid + self.order)
        self.coef = nn.Parameter(torch.zeros(shape, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = splines.basis(x, self.knots, self.order)  # [..., width, G + k]
        return self.fn(x) + (b * self.coef).sum(-1)


class RowdyUnit(nn.Module):
    """sigma(n a x) + sum_{j=1}^{K-1} n a_j sin(j n F_j x); at the start a = F_j = 1/n, a_j = 0."""

    n: torch.Tensor
    j: torch.Tensor

    def __init__(self, base: str, n: float, K: int, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.fn = get_activation(base)
        self.register_buffer("n", torch.tensor(float(n), dtype=dtype))
        self.register_buffer("j", torch.arange(1, K, dtype=dtype))
        self.a = nn.Parameter(torch.tensor(inverse(n, dtype), dtype=dtype))
        self.amp = nn.Parameter(torch.zeros(K - 1, dtype=dtype))
        self.freq = nn.Parameter(torch.full((K - 1,), inverse(n, dtype), dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        waves = torch.sin(x.unsqueeze(-1) * (self.j * self.n * self.freq))
        return self.fn(self.n * self.a * x) + (waves * (self.n * self.amp)).sum(-1)


class Swish(nn.Module):
    """x * sigmoid(beta * x) with a trainable ``beta``."""

    def __init__(self, beta0: float = 1.0, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta0), dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


class Rational(nn.Module):
    """Safe Padé unit P(x) / (1 + sum_k |b_k| |x|^k), initialised to fit leaky ReLU."""

    def __init__(self, degrees: tuple[int, int] = (5, 4), dtype: torch.dtype | None = None) -> None:
        super().__init__()
        num, den = rational_init(*degrees)
        self.num = nn.Parameter(torch.tensor(num, dtype=dtype))
        self.den = nn.Parameter(torch.tensor(den, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rational_value(x, self.num, self.den)


def reference_activations(
    kind: str, spec: Any, base: str, widths: Sequence[int], dtype: torch.dtype | None = None
) -> nn.ModuleList:
    """The activation modules of one network: one per hidden layer, or one shared (global).

    ``spec`` is the variant's config (its ``n``, ``a0``, ``K``, ...).
    """
    if kind == "fixed":
        return nn.ModuleList([Fixed(base, getattr(spec, "slope", None))])
    if kind == "global":
        return nn.ModuleList([Slope(base, spec.n, spec.a0, None, dtype)])
    if kind == "layer":
        return nn.ModuleList(Slope(base, spec.n, spec.a0, None, dtype) for _ in widths)
    if kind == "neuron":
        return nn.ModuleList(Slope(base, spec.n, spec.a0, w, dtype) for w in widths)
    if kind == "rowdy":
        return nn.ModuleList(RowdyUnit(base, spec.n, spec.K, dtype) for _ in widths)
    if kind == "prelu":
        return nn.ModuleList(nn.PReLU(init=spec.a0, dtype=dtype) for _ in widths)
    if kind == "swish":
        return nn.ModuleList(Swish(spec.beta0, dtype) for _ in widths)
    if kind == "rational":
        return nn.ModuleList(Rational(tuple(spec.degrees), dtype) for _ in widths)
    if kind == "spline":
        per_neuron = spec.per == "neuron"
        return nn.ModuleList(
            SplineUnit(base, spec, w if per_neuron else None, dtype) for w in widths
        )
    raise ValueError(f"unknown kind '{kind}'")


# --------------------------------------------------------------------------------------------
# Batched families: the parameters of M models of one kind


class Family(nn.Module):
    """Activation parameters of M models of one kind, for every hidden layer.

    A hidden layer k computes ``activate(z, k)`` of its pre-activation ``z`` ``[M, N, width]``,
    after its weights and bias were multiplied by ``prescale(k)`` when that is not None (the
    slope kinds fold n*a into the small weight tensors instead of scaling the big ``z``).
    """

    kind = "fixed"
    recovering = False  # whether any model adds a slope-recovery term to its loss

    def __init__(self, base: str | None, widths: Sequence[int]) -> None:
        super().__init__()
        self.base = base
        self.fn = get_activation(base) if base is not None else None
        self.widths = list(widths)

    def prescale(self, k: int) -> torch.Tensor | None:
        return None

    def activate(self, z: torch.Tensor, k: int) -> torch.Tensor:
        assert self.fn is not None
        return self.fn(z)

    def jet(self, z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``activate(z, k)`` with its first and second derivatives in ``z``, elementwise (the
        forward-mode derivatives of a physics-informed loss); only where ``has_jet``."""
        assert self.base is not None and self.has_jet()
        return JETS[self.base](z)

    def has_jet(self) -> bool:
        """Whether ``jet`` is available: kinds that apply the base activation itself (fixed,
        and the slope kinds, whose n*a is folded into the weights) with a closed form in
        ``JETS``; not rowdy, prelu, swish or rational."""
        return type(self).activate is Family.activate and self.base in JETS

    def recovery(self) -> torch.Tensor | None:
        """The logged S(a) per model ``[M]`` (NaN where a model has no slope recovery), or
        None for kinds without it."""
        return None

    def penalty(self) -> torch.Tensor | None:
        """The weighted term added to each model's loss ``[M]``, or None."""
        return None

    def trajectories(self) -> dict[str, torch.Tensor]:
        """The logged parameter values, name -> ``[M]``."""
        return {}

    def steepness(self, index: int) -> float | None:
        """Model ``index``'s mean n*a over every slope it has (what a fixed control's
        ``slope_from`` reads), or None for kinds without one."""
        return None

    def count(self) -> int:
        """Trainable activation parameters of one model."""
        return sum(p[0].numel() for p in self.parameters())

    def state_of(self, index: int) -> dict[str, torch.Tensor]:
        """Model ``index``'s entries of its ``reference_activations`` state dict."""
        return {}


def _column(values: Sequence[float], dtype: torch.dtype, device: Any) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device).reshape(-1, 1, 1)


class SlopeFamily(Family):
    """global, layer and neuron: sigma(n * a * z) with ``a`` shared, per layer or per neuron."""

    n: torch.Tensor
    sr_weight: torch.Tensor
    sr_scale: torch.Tensor
    sr_on: torch.Tensor

    def __init__(
        self,
        kind: str,
        specs: Sequence[Any],
        base: str,
        widths: Sequence[int],
        dtype: torch.dtype,
        device: Any,
    ) -> None:
        super().__init__(base, widths)
        self.kind = kind
        self.register_buffer("n", _column([float(s.n) for s in specs], dtype, device))
        a0 = _column(
            [inverse(s.n, dtype) if s.a0 is None else float(s.a0) for s in specs], dtype, device
        )
        if kind == "global":
            tensors = [a0]
        elif kind == "layer":
            tensors = [a0.clone() for _ in widths]
        else:
            tensors = [a0.expand(-1, 1, w).clone() for w in widths]
        self.a = nn.ParameterList(nn.Parameter(t.contiguous()) for t in tensors)
        recoveries = [getattr(s, "slope_recovery", None) for s in specs]
        layers = len(widths)
        self.register_buffer(
            "sr_weight", torch.tensor([r.weight if r else 0.0 for r in recoveries], dtype=dtype)
        )
        self.register_buffer(
            "sr_scale",
            torch.tensor(
                [recovery_scale(r.form if r else "paper", layers) for r in recoveries], dtype=dtype
            ),
        )
        self.register_buffer("sr_on", torch.tensor([r is not None for r in recoveries]))
        # Known from the config: no per-step look at a (possibly device) buffer.
        self.recovering = any(r is not None for r in recoveries)
        self.to(device)

    def _a(self, k: int) -> torch.Tensor:
        a: torch.Tensor = self.a[0] if self.kind == "global" else self.a[k]
        return a

    def prescale(self, k: int) -> torch.Tensor:
        return self.n * self._a(k)

    def steepness(self, index: int) -> float:
        slopes = [(self.n[index] * a[index].detach()).reshape(-1) for a in self.a]
        return float(torch.cat(slopes).mean())

    def _recovery(self) -> torch.Tensor:
        means = [self._a(k).mean(dim=(1, 2)) for k in range(len(self.widths))]
        return slope_recovery(means, self.sr_scale)

    def recovery(self) -> torch.Tensor:
        return torch.where(self.sr_on, self._recovery(), math.nan)

    def penalty(self) -> torch.Tensor | None:
        if not self.recovering:
            return None
        return self.sr_weight * self._recovery()

    def trajectories(self) -> dict[str, torch.Tensor]:
        L = len(self.widths)
        if self.kind == "global":
            return {"n*a": (self.n * self.a[0]).reshape(-1)}
        out: dict[str, torch.Tensor] = {}
        for k in range(L):
            s = self.n * self.a[k]
            label = f"n*a[{k + 1}]"
            if self.kind == "layer":
                out[label] = s.reshape(-1)
            else:
                out[f"{label} mean"] = s.mean(dim=(1, 2))
                out[f"{label} min"] = s.amin(dim=(1, 2))
                out[f"{label} max"] = s.amax(dim=(1, 2))
        return out

    def state_of(self, index: int) -> dict[str, torch.Tensor]:
        n = self.n[index].reshape(())
        out = {}
        for j, a in enumerate(self.a):
            value = a[index].reshape(()) if self.kind != "neuron" else a[index].reshape(-1)
            out[f"{j}.a"] = value
            out[f"{j}.n"] = n
        return out


class RowdyFamily(Family):
    kind = "rowdy"
    n: torch.Tensor
    j: torch.Tensor

    def __init__(
        self,
        specs: Sequence[Any],
        base: str,
        widths: Sequence[int],
        dtype: torch.dtype,
        device: Any,
    ) -> None:
        super().__init__(base, widths)
        K = specs[0].K
        self.register_buffer("n", _column([float(s.n) for s in specs], dtype, device))
        self.register_buffer("j", torch.arange(1, K, dtype=dtype, device=device))
        inv = _column([inverse(s.n, dtype) for s in specs], dtype, device)  # [M,1,1]
        self.a = nn.ParameterList(nn.Parameter(inv.clone()) for _ in widths)
        # [M, 1, 1, K-1]: broadcast over [M, N, width, K-1]
        self.amp = nn.ParameterList(
            nn.Parameter(torch.zeros(len(specs), 1, 1, K - 1, dtype=dtype, device=device))
            for _ in widths
        )
        self.freq = nn.ParameterList(
            nn.Parameter(inv.unsqueeze(-1).expand(-1, 1, 1, K - 1).clone()) for _ in widths
        )

    def activate(self, z: torch.Tensor, k: int) -> torch.Tensor:
        assert self.fn is not None
        n = self.n.unsqueeze(-1)
        waves = torch.sin(z.unsqueeze(-1) * (self.j * n * self.freq[k]))
        out: torch.Tensor = self.fn(self.n * self.a[k] * z) + (waves * (n * self.amp[k])).sum(-1)
        return out

    def steepness(self, index: int) -> float:
        return float(torch.stack([self.n[index] * a[index].detach() for a in self.a]).mean())

    def trajectories(self) -> dict[str, torch.Tensor]:
        out = {}
        L = len(self.widths)
        n = self.n.reshape(-1)
        for k in range(L):
            out[f"n*a[{k + 1}]"] = n * self.a[k].reshape(-1)
            out[f"max|n*a_j|[{k + 1}]"] = (self.amp[k].abs().amax(dim=(1, 2, 3))) * n
        return out

    def state_of(self, index: int) -> dict[str, torch.Tensor]:
        out = {}
        for k in range(len(self.widths)):
            out[f"{k}.a"] = self.a[k][index].reshape(())
            out[f"{k}.amp"] = self.amp[k][index].reshape(-1)
            out[f"{k}.freq"] = self.freq[k][index].reshape(-1)
            out[f"{k}.n"] = self.n[index].reshape(())
            out[f"{k}.j"] = self.j
        return out


class _LayerScalarFamily(Family):
    """One trainable scalar per hidden layer and model (PReLU's a, Swish's beta)."""

    label = ""
    state_key = ""
    state_shape: tuple[int, ...] = ()

    def __init__(
        self, initial: Sequence[float], widths: Sequence[int], dtype: torch.dtype, device: Any
    ) -> None:
        super().__init__(None, widths)
        start = _column([float(v) for v in initial], dtype, device)
        self.p = nn.ParameterList(nn.Parameter(start.clone()) for _ in widths)

    def trajectories(self) -> dict[str, torch.Tensor]:
        return {f"{self.label}[{k + 1}]": self.p[k].reshape(-1) for k in range(len(self.widths))}

    def state_of(self, index: int) -> dict[str, torch.Tensor]:
        return {
            f"{k}.{self.state_key}": self.p[k][index].reshape(self.state_shape)
            for k in range(len(self.widths))
        }


class PReLUFamily(_LayerScalarFamily):
    """max(0, z) + a * min(0, z); state as ``nn.PReLU`` (``weight`` of shape [1])."""

    kind = "prelu"
    label = "a"
    state_key = "weight"
    state_shape = (1,)

    def activate(self, z: torch.Tensor, k: int) -> torch.Tensor:
        return torch.where(z >= 0, z, self.p[k] * z)


class SwishFamily(_LayerScalarFamily):
    """z * sigmoid(beta * z)."""

    kind = "swish"
    label = "beta"
    state_key = "beta"

    def activate(self, z: torch.Tensor, k: int) -> torch.Tensor:
        return z * torch.sigmoid(self.p[k] * z)


class RationalFamily(Family):
    kind = "rational"

    def __init__(
        self, specs: Sequence[Any], widths: Sequence[int], dtype: torch.dtype, device: Any
    ) -> None:
        super().__init__(None, widths)
        num, den = rational_init(*specs[0].degrees)
        M = len(specs)
        n0 = torch.tensor(num, dtype=dtype, device=device).reshape(1, 1, 1, -1).repeat(M, 1, 1, 1)
        d0 = torch.tensor(den, dtype=dtype, device=device).reshape(1, 1, 1, -1).repeat(M, 1, 1, 1)
        self.num = nn.ParameterList(nn.Parameter(n0.clone()) for _ in widths)
        self.den = nn.ParameterList(nn.Parameter(d0.clone()) for _ in widths)

    def activate(self, z: torch.Tensor, k: int) -> torch.Tensor:
        return rational_value(z, self.num[k], self.den[k])

    def trajectories(self) -> dict[str, torch.Tensor]:
        # P'(0) = num_1: the unit's slope at the origin.
        return {
            f"slope@0[{k + 1}]": self.num[k][..., 1].reshape(-1) for k in range(len(self.widths))
        }

    def state_of(self, index: int) -> dict[str, torch.Tensor]:
        out = {}
        for k in range(len(self.widths)):
            out[f"{k}.num"] = self.num[k][index].reshape(-1)
            out[f"{k}.den"] = self.den[k][index].reshape(-1)
        return out


class SteepFamily(Family):
    """fixed with a steepness: sigma(s * z) with s fixed per model (1 where a model has none),
    folded into the weights as the slope kinds fold n*a."""

    slope: torch.Tensor

    def __init__(
        self,
        specs: Sequence[Any],
        base: str,
        widths: Sequence[int],
        dtype: torch.dtype,
        device: Any,
    ) -> None:
        super().__init__(base, widths)
        slopes = [1.0 if s is None or s.slope is None else float(s.slope) for s in specs]
        self.register_buffer("slope", _column(slopes, dtype, device))

    def prescale(self, k: int) -> torch.Tensor:
        return self.slope


class SplineFamily(Family):
    """sigma(z) + sum_c coef_c B_c(z) per hidden neuron or per hidden layer: coefficients
    ``[M, 1, width or 1, G + k]``, zero at the start, on a grid shared by every model."""

    kind = "spline"
    knots: torch.Tensor

    def __init__(
        self,
        specs: Sequence[Any],
        base: str,
        widths: Sequence[int],
        dtype: torch.dtype,
        device: Any,
    ) -> None:
        super().__init__(base, widths)
        spec = specs[0]
        self.order = int(spec.order)
        self.per_neuron = spec.per == "neuron"
        self.register_buffer("knots", splines.knots_of(spec, dtype).to(device))
        size = spec.grid + self.order
        self.coef = nn.ParameterList(
            nn.Parameter(
                torch.zeros(len(specs), 1, w if self.per_neuron else 1, size, dtype=dtype).to(
                    device
                )
            )
            for w in widths
        )

    def activate(self, z: torch.Tensor, k: int) -> torch.Tensor:
        assert self.fn is not None
        b = splines.basis(z, self.knots, self.order)  # [M, N, width, G + k]
        out: torch.Tensor = self.fn(z) + (b * self.coef[k]).sum(-1)
        return out

    def trajectories(self) -> dict[str, torch.Tensor]:
        # How far each layer's splines moved from the base activation.
        return {
            f"max|c|[{k + 1}]": self.coef[k].abs().amax(dim=(1, 2, 3))
            for k in range(len(self.widths))
        }

    def state_of(self, index: int) -> dict[str, torch.Tensor]:
        out = {}
        for k in range(len(self.widths)):
            coef = self.coef[k][index, 0]
            out[f"{k}.coef"] = coef if self.per_neuron else coef[0]
            out[f"{k}.knots"] = self.knots
        return out


def make_family(
    kind: str,
    specs: Sequence[Any],
    base: str,
    widths: Sequence[int],
    dtype: torch.dtype,
    device: Any,
) -> Family:
    """The batched family of ``kind`` for models with these variant configs (one per model)."""
    family: Family
    if kind == "fixed" and any(getattr(s, "slope", None) is not None for s in specs):
        family = SteepFamily(specs, base, widths, dtype, device)
    elif kind == "fixed":
        family = Family(base, widths)
    elif kind in ("global", "layer", "neuron"):
        family = SlopeFamily(kind, specs, base, widths, dtype, device)
    elif kind == "rowdy":
        family = RowdyFamily(specs, base, widths, dtype, device)
    elif kind == "prelu":
        family = PReLUFamily([s.a0 for s in specs], widths, dtype, device)
    elif kind == "swish":
        family = SwishFamily([s.beta0 for s in specs], widths, dtype, device)
    elif kind == "rational":
        family = RationalFamily(specs, widths, dtype, device)
    elif kind == "spline":
        family = SplineFamily(specs, base, widths, dtype, device)
    else:
        raise ValueError(f"unknown kind '{kind}'")
    return family
