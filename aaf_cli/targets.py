"""Synthetic regression targets and the sampling of training and test data.

The registry is importable without torch (the config loader validates names against it); the
formulas use tensor methods only, and torch itself is imported when data is sampled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from aaf_cli.problems.expression_spec import TargetConfig

TargetFn = Callable[..., "torch.Tensor"]

#: Validation points come from their own generator stream, above every seed a config can give
#: (data and model seeds stay below 2^53), so they never repeat training points or noise.
VALIDATION_STREAM = 1 << 62


@dataclass(frozen=True)
class TargetSpec:
    """A registered target: its formula, default domain and default number of training points."""

    name: str
    fn: TargetFn
    formula: str
    domain: tuple[float, float]
    n_train: int
    params: Mapping[str, float | tuple[float, ...]] = field(default_factory=dict)
    reference: str = ""


def _jcp_smooth(x: torch.Tensor) -> torch.Tensor:
    return (x**3 - x) * (7 * x).sin() / 7 + (12 * x).sin()


def _piecewise(x: torch.Tensor, freq: float) -> torch.Tensor:
    left = 0.2 * (6 * x).sin()
    right = 1 + 0.1 * x * (freq * x).cos()
    return right.where(x > 0, left)


def _jcp_discontinuous(x: torch.Tensor) -> torch.Tensor:
    return _piecewise(x, 12.0)


def _rspa_discontinuous(x: torch.Tensor) -> torch.Tensor:
    return _piecewise(x, 18.0)


def _sine(x: torch.Tensor, freq: float) -> torch.Tensor:
    return (freq * x).sin()


def _polynomial(x: torch.Tensor, coeffs: tuple[float, ...]) -> torch.Tensor:
    # Horner's scheme; coeffs[i] multiplies x**i.
    y = x * 0 + coeffs[-1]
    for c in reversed(coeffs[:-1]):
        y = y * x + c
    return y


def _step(x: torch.Tensor, at: float) -> torch.Tensor:
    return (x > at).to(x.dtype)


TARGETS: dict[str, TargetSpec] = {
    spec.name: spec
    for spec in (
        TargetSpec(
            "jcp_smooth",
            _jcp_smooth,
            "(x^3 - x) sin(7x) / 7 + sin(12x)",
            (-3.0, 3.0),
            300,
            reference="Jagtap et al., J. Comput. Phys. 404 (2020), smooth function",
        ),
        TargetSpec(
            "jcp_discontinuous",
            _jcp_discontinuous,
            "0.2 sin(6x) for x <= 0, else 1 + 0.1 x cos(12x)",
            (-4.0, 3.75),
            300,
            reference="Jagtap et al., J. Comput. Phys. 404 (2020), discontinuous function",
        ),
        TargetSpec(
            "rspa_discontinuous",
            _rspa_discontinuous,
            "0.2 sin(6x) for x <= 0, else 1 + 0.1 x cos(18x)",
            (-3.0, 3.0),
            300,
            reference="Jagtap et al., Proc. R. Soc. A 476 (2020), discontinuous function",
        ),
        TargetSpec("sine", _sine, "sin(freq x)", (-math.pi, math.pi), 300, {"freq": 4.0}),
        TargetSpec(
            "polynomial",
            _polynomial,
            "sum_i coeffs[i] x^i",
            (-1.5, 1.5),
            200,
            {"coeffs": (0.0, -1.0, 0.0, 1.0)},
        ),
        TargetSpec("step", _step, "1 for x > at, else 0", (-1.0, 1.0), 200, {"at": 0.0}),
    )
}


def target_params(spec: TargetSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """The target's parameters: its defaults updated with ``given`` (validated by the config)."""
    params = dict(spec.params)
    params.update(given)
    return params


@dataclass(frozen=True)
class Dataset:
    """Training, test and validation data of one experiment (float tensors on the experiment's
    device).

    ``x_train`` is ``[N, d]`` when every model sees the same points, or ``[M, N, d]`` when data is
    drawn anew for every model; ``x_test`` is always a shared ``[N_test, d]`` grid; ``x_val``
    shared ``[N_val, d]`` points drawn apart from both (what choices read), or None.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @classmethod
    def on(cls, tensors: Sequence[torch.Tensor], device: torch.device, dtype: str) -> Dataset:
        """The data from float64 CPU tensors (in field order), cast to a config's ``dtype`` on
        ``device``: computed alike on every device."""
        return cls(*(v.to(device=device, dtype=torch_dtype(dtype)) for v in tensors))


def torch_dtype(name: str) -> torch.dtype:
    """A config's ``dtype`` (``float32``, ``float64``) as torch's."""
    import torch

    dtype: torch.dtype = {"float32": torch.float32, "float64": torch.float64}[name]
    return dtype


def evaluate_target(name: str, x: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """Evaluate a registered target on points ``x`` of shape ``[..., 1]``."""
    spec = TARGETS[name]
    return spec.fn(x, **target_params(spec, params))


def target_function(target: TargetConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """``[N, d] -> [N, 1]`` for a target config: a registered target, or your own expression
    (evaluated by the safe parser of ``expr.py``, never by Python's eval)."""
    expression = target.expression()
    if expression is None:
        name = target.name or "expr"
        return lambda x: evaluate_target(name, x, target.params)

    def fn(x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        inputs = {"x": x[:, 0]} if d == 1 else {f"x{i + 1}": x[:, i] for i in range(d)}
        return expression.evaluate(inputs).reshape(-1, 1)

    return fn


def grid_side(n: int, dims: int) -> int:
    """Points per axis of a grid of about ``n`` points in ``dims`` dimensions."""
    return n if dims == 1 else max(2, round(n ** (1.0 / dims)))


def grid_points(domain: tuple[float, float], n: int, dims: int) -> torch.Tensor:
    """A uniform grid ``[k^dims, dims]`` with ``k = max(2, round(n^(1/dims)))`` points per axis
    (exactly ``n`` points for one input), in float64."""
    import torch

    lo, hi = domain
    k = grid_side(n, dims)
    axis = torch.linspace(lo, hi, k, dtype=torch.float64)
    if dims == 1:
        return axis.unsqueeze(-1)
    mesh = torch.meshgrid(*([axis] * dims), indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def sample_points(
    domain: tuple[float, float],
    n: int,
    sampling: str,
    generator: torch.Generator,
    dims: int = 1,
) -> torch.Tensor:
    """Training inputs ``[n, dims]`` in float64: a uniform grid or uniform random draws (sorted
    for one input)."""
    import torch

    lo, hi = domain
    if sampling == "grid":
        return grid_points(domain, n, dims)
    x = torch.rand(n, dims, dtype=torch.float64, generator=generator) * (hi - lo) + lo
    return x.sort(dim=0).values if dims == 1 else x
