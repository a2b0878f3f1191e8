"""A ``pde:`` section compiled into tensors: points, forcing, condition values, test data.

Everything here is computed once, in float64 on the CPU, from explicit seeds, and cast later
(``residual.PinnLoss``), so a problem does not depend on the device or dtype of the run; every
model of every variant sees the same points.

The method of manufactured solutions: with ``exact`` and ``forcing: from_exact``, the forcing
is the operator applied to the exact solution, differentiated by autograd in float64 at the
collocation points; conditions without a ``value`` take the exact solution's value (or
derivative) on their faces. The exact solution then solves the problem to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from aaf_cli.errors import ConfigError
from aaf_cli.expr import Expression
from aaf_cli.problems.pde.autodiff import input_derivatives
from aaf_cli.problems.pde.spec import (
    PdeConfig,
    derivative_index,
    faces,
    operator_expression,
    solution_expression,
)
from aaf_cli.targets import VALIDATION_STREAM

__all__ = [
    "ConditionSet",
    "Operator",
    "PdeProblem",
    "build_problem",
    "grid",
    "sample",
    "solution_function",
    "validation_seed",
]

F64 = torch.float64
Solution = Callable[[torch.Tensor], torch.Tensor]


# --- Sampling ---------------------------------------------------------------------------------


def grid(intervals: Sequence[tuple[float, float]], n: int) -> torch.Tensor:
    """A uniform grid ``[k^d, d]``, ``k = max(2, round(n^(1/d)))`` points per axis (exactly n
    for one input), ends included, in float64; the last input varies fastest."""
    d = len(intervals)
    if d == 0:
        return torch.zeros(1, 0, dtype=F64)
    k = n if d == 1 else max(2, round(n ** (1.0 / d)))
    axes = [torch.linspace(lo, hi, k, dtype=F64) for lo, hi in intervals]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def sample(
    intervals: Sequence[tuple[float, float]], n: int, method: str, generator: torch.Generator
) -> torch.Tensor:
    """``n`` points ``[n, d]`` in the box, in float64 (``grid``: see ``grid``).

    ``random`` draws uniformly; ``lhs`` is a Latin hypercube: each axis is cut into n equal
    strata and every stratum holds exactly one point, at a uniform position inside it.
    """
    d = len(intervals)
    if d == 0:
        return torch.zeros(1, 0, dtype=F64)
    if method == "grid":
        return grid(intervals, n)
    lo = torch.tensor([a for a, _ in intervals], dtype=F64)
    width = torch.tensor([b - a for a, b in intervals], dtype=F64)
    if method == "random":
        unit = torch.rand(n, d, dtype=F64, generator=generator)
    elif method == "lhs":
        strata = torch.stack([torch.randperm(n, generator=generator) for _ in range(d)], dim=1)
        unit = (strata.to(F64) + torch.rand(n, d, dtype=F64, generator=generator)) / n
    else:
        raise ValueError(f"unknown sampling '{method}'")
    return lo + unit * width


def _on_faces(
    pde: PdeConfig, on: str, n: int, method: str, generator: torch.Generator
) -> torch.Tensor:
    """``n`` points split over the faces of ``on`` (a face of a 1-input problem is one point)."""
    names = pde.input_names
    listed = faces(on, pde.inputs)
    parts = []
    for k, face in enumerate(listed):
        count = max(1, n // len(listed) + (1 if k < n % len(listed) else 0))
        axis = names.index(face.input)
        others = [pde.inputs[name] for name in names if name != face.input]
        rest = sample(others, count, method, generator)
        column = torch.full((rest.shape[0], 1), face.value, dtype=F64)
        parts.append(torch.cat([rest[:, :axis], column, rest[:, axis:]], dim=1))
    return torch.cat(parts)


# --- Expressions on tensors -------------------------------------------------------------------


def _columns(
    names: Sequence[str], points: torch.Tensor, params: Mapping[str, float | torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Inputs and parameters as tensors of the points' leading shape (what ``Expression``
    evaluates on)."""
    shape = points.shape[:-1]
    values = {name: points[..., i] for i, name in enumerate(names)}
    for key, value in params.items():
        if isinstance(value, torch.Tensor):
            values[key] = value.reshape(*value.shape, *([1] * (len(shape) - value.dim())))
            values[key] = values[key].expand(shape)
        else:
            values[key] = points.new_full(shape, float(value))
    return values


@dataclass(frozen=True)
class Operator:
    """The compiled operator: an expression over u, its derivatives, inputs and params.

    Attributes:
        expression: the parsed operator.
        names: each derivative name the operator uses (``u``, ``u_x``, ``u_tx``...) with its
            derivative index (``()``, ``(0,)``, ``(0, 1)``).
        inputs: the input names, in order.
    """

    expression: Expression
    names: dict[str, tuple[int, ...]]
    inputs: tuple[str, ...]

    def __call__(
        self,
        derivatives: Mapping[tuple[int, ...], torch.Tensor],
        points: torch.Tensor,
        params: Mapping[str, float | torch.Tensor],
    ) -> torch.Tensor:
        """The operator applied point-wise.

        Args:
            derivatives: u and its derivatives by index, all of the points' leading shape.
            points: the inputs ``[*S, d]`` (not differentiated through here).
            params: each parameter as a number, or a tensor that broadcasts from the left
                (``[M]`` per model for points ``[M, N, d]``).
        """
        values = _columns(self.inputs, points.detach(), params)
        for name, index in self.names.items():
            values[name] = derivatives[index]
        return self.expression.evaluate(values)


def _operator(pde: PdeConfig) -> Operator:
    data = {"inputs": pde.inputs, "params": pde.params}
    expression = operator_expression(pde.operator, data)
    names = {
        v: derivative_index(v, pde.input_names)
        for v in expression.variables
        if v == "u" or (v.startswith("u_") and v not in pde.params)
    }
    return Operator(expression, names, pde.input_names)


def solution_function(pde: PdeConfig) -> Solution | None:
    """The exact solution, or the reference, as points ``[*S, d]`` (float64) -> values ``[*S]``;
    None when the section has neither. Parameters take their true values."""
    if pde.exact is not None:
        expression = solution_expression(
            pde.exact, {"inputs": pde.inputs, "params": pde.params}, "exact"
        )
        params = pde.solution_params()
        names = pde.input_names
        return lambda points: expression.evaluate(_columns(names, points, params))
    if pde.reference is not None:
        from aaf_cli.problems.pde.reference import reference_solution

        return reference_solution(pde.reference.name, pde.reference.resolved())
    return None


def _derived(
    solution: Solution, points: torch.Tensor, wanted: Sequence[tuple[int, ...]]
) -> dict[tuple[int, ...], torch.Tensor]:
    """The solution and its derivatives at ``points`` by autograd, in float64, detached."""
    coords = points.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        u = solution(coords)
        found = input_derivatives(u, coords, wanted, create_graph=False)
    return {k: v.detach() for k, v in found.items()}


# --- The problem --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionSet:
    """The points of one condition and the values u (or a derivative) must take there."""

    name: str
    points: torch.Tensor  # [N, d]
    derivative: tuple[int, ...]  # () for u itself
    values: torch.Tensor  # [N]
    weight: float


@dataclass(frozen=True)
class PdeProblem:
    """A ``pde:`` section as float64 CPU tensors, ready to be cast and trained on.

    Attributes:
        config: the section.
        operator: the compiled operator.
        derivatives: every derivative the operator and the conditions need (sorted indices).
        collocation: residual points ``[N, d]``.
        forcing: the forcing at the collocation points ``[N]``.
        conditions: one ``ConditionSet`` per condition, in config order.
        data_points, data_values: observations ``[N_d, d]``, ``[N_d]`` (with noise), or None.
        test_points, test_values: the grid the relative L2 error is measured on and the exact
            or reference solution there (None without either).
        val_points, val_values: the validation points (uniform, their own seed) and the
            solution there: what choices read.
        fixed_params: fixed coefficients.
        trainable_params: initial values of the learned coefficients.
        true_params: their true values (None where unknown).
    """

    config: PdeConfig
    operator: Operator
    derivatives: tuple[tuple[int, ...], ...]
    collocation: torch.Tensor
    forcing: torch.Tensor
    conditions: tuple[ConditionSet, ...]
    data_points: torch.Tensor | None
    data_values: torch.Tensor | None
    test_points: torch.Tensor
    test_values: torch.Tensor | None
    val_points: torch.Tensor | None = None
    val_values: torch.Tensor | None = None
    fixed_params: dict[str, float] = field(default_factory=dict)
    trainable_params: dict[str, float] = field(default_factory=dict)
    true_params: dict[str, float | None] = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.config.input_names

    def term_names(self) -> list[str]:
        """The loss terms: residual, each condition, data."""
        return self.config.term_names()

    def residual_of(self, solution: Solution, points: torch.Tensor) -> torch.Tensor:
        """operator(u) - forcing for a function u (e.g. the exact solution), by autograd in
        float64, at ``points`` (forcing from ``forcing``'s expression, from the exact solution,
        or 0). For checking a solution; training uses ``residual.PinnLoss``."""
        found = _derived(solution, points, self.derivatives)
        params = {
            **self.fixed_params,
            **{k: v for k, v in self.true_params.items() if v is not None},
        }
        value = self.operator(found, points, params)
        return value - _forcing(self.config, points)


def _forcing(pde: PdeConfig, points: torch.Tensor) -> torch.Tensor:
    if pde.forcing is None:
        return points.new_zeros(points.shape[:-1])
    if pde.forcing == "from_exact":
        solution = solution_function(pde)
        assert solution is not None  # the schema requires exact for from_exact
        operator = _operator(pde)
        found = _derived(solution, points, pde.derivatives())
        return operator(found, points, pde.solution_params()).detach()
    data = {"inputs": pde.inputs, "params": pde.params}
    expression = solution_expression(pde.forcing, data, "forcing")
    return expression.evaluate(_columns(pde.input_names, points, pde.solution_params()))


def _finite(
    values: torch.Tensor, points: torch.Tensor, pde: PdeConfig, source: str, key: str, what: str
) -> torch.Tensor:
    bad = (~torch.isfinite(values)).reshape(-1).nonzero()
    if len(bad):
        i = int(bad[0])
        at = ", ".join(f"{name} = {v:.6g}" for name, v in zip(pde.input_names, points[i].tolist()))
        raise ConfigError(
            source,
            key,
            f"{what} is {values.reshape(-1)[i].item()} at {at} ({len(bad)} of {values.numel()} "
            "points not finite); it must be finite on the whole domain",
        )
    return values


def validation_seed(pde: PdeConfig) -> int:
    """The generator seed of the validation points (stated in the summary)."""
    return VALIDATION_STREAM + pde.collocation.seed


def build_problem(pde: PdeConfig, source: str = "config") -> PdeProblem:
    """Sample the points and compute every value a ``pde:`` section needs, in float64.

    Collocation points come from ``collocation.seed``; condition k's points from
    ``seed * 1_000_003 + k``; observations (points, then noise) from ``data.seed``; validation
    points (uniform) from ``validation_seed``.

    Args:
        pde: a validated section.
        source: where it came from, for messages.

    Returns:
        The problem.

    Raises:
        ConfigError: the forcing, a condition value, the exact or reference solution is not
            finite somewhere it is needed (e.g. ``exact: log(x)`` on x in [-1, 1]).
    """
    intervals = [pde.inputs[name] for name in pde.input_names]
    operator = _operator(pde)
    wanted = tuple(pde.derivatives())
    col = pde.collocation
    collocation = sample(
        intervals, col.points, col.sampling, torch.Generator().manual_seed(col.seed)
    )
    solution = solution_function(pde)
    forcing_key = "pde.exact" if pde.forcing == "from_exact" else "pde.forcing"
    forcing = _finite(
        _forcing(pde, collocation), collocation, pde, source, forcing_key, "the forcing"
    )

    params = pde.solution_params()
    conditions = []
    for k, cond in enumerate(pde.conditions, start=1):
        gen = torch.Generator().manual_seed(col.seed * 1_000_003 + k)
        points = _on_faces(pde, cond.on, cond.points, col.sampling, gen)
        index = derivative_index(cond.derivative, pde.input_names) if cond.derivative else ()
        if cond.value is not None:
            data = {"inputs": pde.inputs, "params": pde.params}
            expression = solution_expression(cond.value, data, "value")
            values = expression.evaluate(_columns(pde.input_names, points, params))
            what = f"condition {k}'s value"
        else:
            assert solution is not None  # the schema requires exact or reference here
            values = _derived(solution, points, [index])[index]
            what = f"the {'exact' if pde.exact else 'reference'} solution on condition {k}"
        values = _finite(values, points, pde, source, "pde.conditions", what)
        weight = cond.weight if cond.weight is not None else pde.weights.conditions
        conditions.append(ConditionSet(cond.name or f"cond{k}", points, index, values, weight))

    solution_key = "pde.exact" if pde.exact is not None else "pde.reference"
    data_points = data_values = None
    if pde.data is not None:
        assert solution is not None  # the schema requires exact or reference for data
        gen = torch.Generator().manual_seed(pde.data.seed)
        data_points = sample(intervals, pde.data.points, pde.data.sampling, gen)
        with torch.no_grad():
            clean = solution(data_points)
        clean = _finite(clean, data_points, pde, source, solution_key, "the solution")
        noise = torch.randn(clean.shape, dtype=F64, generator=gen) * pde.data.noise
        data_values = clean + noise if pde.data.noise > 0 else clean

    def measured(points: torch.Tensor, where: str) -> torch.Tensor | None:
        """The solution at points the relative L2 error is measured on (None without one)."""
        if solution is None:
            return None
        with torch.no_grad():
            values = _finite(solution(points), points, pde, source, solution_key, "the solution")
        if not bool(values.abs().max() > 0):
            raise ConfigError(
                source, solution_key, f"is 0 {where}: the relative L2 error would divide by 0"
            )
        return values

    test_points = grid(intervals, pde.test_points)
    test_values = measured(test_points, "on the whole test grid")
    val_points = sample(
        intervals, pde.val_points, "random", torch.Generator().manual_seed(validation_seed(pde))
    )
    val_values = measured(val_points, "at every validation point")
    return PdeProblem(
        config=pde,
        operator=operator,
        derivatives=wanted,
        collocation=collocation,
        forcing=forcing,
        conditions=tuple(conditions),
        data_points=data_points,
        data_values=data_values,
        test_points=test_points,
        test_values=test_values,
        val_points=val_points,
        val_values=val_values,
        fixed_params=pde.fixed_params(),
        trainable_params=pde.trainable_params(),
        true_params=pde.true_params(),
    )
