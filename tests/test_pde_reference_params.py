"""Parameters of physics-informed problems: where each value comes from, checked by known answers.

A ``pde:`` section names parameters in three places: ``params`` (a fixed value, or a trainable
one with its ``true`` value), ``reference.params`` (the named reference's own, default: the
reference's defaults) and, implicitly, the reference's defaults. The rules (``spec.py``):

* the reference is computed at ``reference.params``, defaults filled in (``resolved()``);
* a trainable parameter's true value is its ``true``, else the reference's parameter of the same
  name (so the given one, not the default);
* the exact solution, the forcing and every condition value see the fixed values and the true
  values of trainable ones (``solution_params``); observations are the exact or reference
  solution at those values;
* a parameter the reference also takes must agree with it (else the error would be measured
  against the solution of another equation).

Everything is float64; the Burgers checks use nu = 0.01, about 3.1 times the default 0.01/pi, so
that the solution at the default differs from it by 0.27 at t = 1.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from aaf_cli.errors import ConfigError
from aaf_cli.problems.pde import parse_pde
from aaf_cli.problems.pde.problem import build_problem, sample, solution_function
from aaf_cli.problems.pde.reference import burgers

F64 = torch.float64
PI = math.pi
DEFAULT_NU = 0.01 / PI
NU = 0.01  # the viscosity given to the reference in these tests

BURGERS_AT_NU: dict[str, Any] = {
    "inputs": {"x": [-1, 1], "t": [0, 1]},
    "operator": "u_t + u*u_x - nu*u_xx",
    "params": {"nu": NU},
    "conditions": [
        {"on": "t == 0", "value": "-sin(pi*x)", "points": 20},
        {"on": "x == -1 or x == 1", "value": "0", "points": 10},
        # No value: the reference's own, at the final time (where it depends on nu).
        {"on": "t == 1", "points": 40, "name": "final"},
    ],
    "reference": {"name": "burgers", "params": {"nu": NU}},
    "collocation": {"points": 64, "seed": 1},
    "test_points": 400,
}

# The heat equation u_t = k u_xx with u = exp(-k pi^2 t) sin(pi x): an inverse problem whose
# true k (0.2) differs from its starting value (0.5); every value made from the solution must use
# 0.2 (the forcing derived from it is then 0).
HEAT_INVERSE: dict[str, Any] = {
    "inputs": {"x": [-1, 1], "t": [0, 1]},
    "operator": "u_t - k*u_xx",
    "params": {"k": {"init": 0.5, "trainable": True, "true": 0.2}, "c": 3.0},
    "exact": "c*exp(-k*pi**2*t)*sin(pi*x)",
    "forcing": "from_exact",
    "conditions": [
        {"on": "t == 1", "points": 30, "name": "final"},
        {"on": "t == 1", "value": "c*exp(-k*pi**2)*sin(pi*x)", "points": 30, "name": "given"},
        {"on": "x == -1 or x == 1", "derivative": "u_x", "points": 20, "name": "slope"},
    ],
    "data": {"points": 200, "noise": 0.0, "seed": 4},
    "collocation": {"points": 100, "seed": 2},
    "test_points": 400,
}


def heat(points: torch.Tensor, k: float, c: float = 3.0) -> torch.Tensor:
    x, t = points.unbind(-1)
    return c * torch.exp(-k * PI**2 * t) * torch.sin(PI * x)


def burgers_residual(points: torch.Tensor, nu_of_u: float, nu_of_operator: float) -> torch.Tensor:
    """u_t + u u_x - nu u_xx by autograd, for the reference computed at ``nu_of_u``."""
    x = points[:, 0].clone().requires_grad_(True)
    t = points[:, 1].clone().requires_grad_(True)
    u = burgers(x, t, nu_of_u)
    u_x, u_t = torch.autograd.grad(u.sum(), (x, t), create_graph=True)
    (u_xx,) = torch.autograd.grad(u_x.sum(), x)
    return (u_t + u * u_x - nu_of_operator * u_xx).detach()


def away_from_t0(n: int = 1500) -> torch.Tensor:
    """Random points with t in [0.02, 1] (autograd's u_t is infinite at t = 0, see test_pde)."""
    return sample([(-1.0, 1.0), (0.02, 1.0)], n, "random", torch.Generator().manual_seed(5))


# --- The Burgers reference at a given viscosity -------------------------------------------------


def test_burgers_reference_with_given_nu_solves_the_equation_at_that_nu_not_the_default() -> None:
    """The problem's solution (the reference at ``reference.params.nu``), differentiated by
    autograd, leaves a residual below 1e-10 with nu = 0.01 (measured 1e-14), through the
    problem's own check and by hand; with the default nu the residual is above 1 (measured 11):
    the reference really is computed at the given viscosity."""
    cfg = parse_pde(BURGERS_AT_NU)
    assert cfg.reference is not None and cfg.reference.resolved() == {"nu": NU}
    problem = build_problem(cfg)
    solution = solution_function(cfg)
    assert solution is not None
    points = away_from_t0()
    assert problem.residual_of(solution, points).abs().max() < 1e-10
    # By hand, from the function the problem uses: at nu it solves, at the default it does not.
    x = points.clone().requires_grad_(True)
    u = solution(x)
    (g,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (gx,) = torch.autograd.grad(g[:, 0].sum(), x)
    u_x, u_t, u_xx = g[:, 0].detach(), g[:, 1].detach(), gx[:, 0]
    u = u.detach()
    assert (u_t + u * u_x - NU * u_xx).abs().max() < 1e-10
    assert (u_t + u * u_x - DEFAULT_NU * u_xx).abs().max() > 1.0
    # The same as the reference function called with nu, and not with the default.
    assert (burgers_residual(points, NU, NU)).abs().max() < 1e-10
    torch.testing.assert_close(u, burgers(points[:, 0], points[:, 1], NU), rtol=0, atol=1e-14)
    assert (u - burgers(points[:, 0], points[:, 1])).abs().max() > 0.1


def test_test_grid_and_value_free_conditions_use_the_reference_at_the_given_nu() -> None:
    """The relative L2 error's solution and a condition without a value (at t = 1, where the
    solution depends on nu) equal the reference at nu = 0.01 to rounding, and differ from the
    default's by more than 0.05; the written values are as written."""
    problem = build_problem(parse_pde(BURGERS_AT_NU))
    assert problem.test_values is not None
    tx, tt = problem.test_points.unbind(-1)
    torch.testing.assert_close(problem.test_values, burgers(tx, tt, NU), rtol=0, atol=1e-14)
    assert (problem.test_values - burgers(tx, tt)).abs().max() > 0.05
    # Validation points, where a problem has them: the same solution.
    val_points, val_values = (getattr(problem, k, None) for k in ("val_points", "val_values"))
    if val_points is not None and val_values is not None:
        vx, vt = val_points.unbind(-1)
        torch.testing.assert_close(val_values, burgers(vx, vt, NU), rtol=0, atol=1e-14)
    initial, sides, final = problem.conditions
    assert final.name == "final" and (final.points[:, 1] == 1.0).all()
    fx, ft = final.points.unbind(-1)
    torch.testing.assert_close(final.values, burgers(fx, ft, NU), rtol=0, atol=1e-14)
    assert (final.values - burgers(fx, ft)).abs().max() > 0.05
    torch.testing.assert_close(initial.values, -torch.sin(PI * initial.points[:, 0]))
    assert (sides.values == 0).all()


def test_inverse_burgers_data_and_true_value_come_from_the_given_reference_parameter() -> None:
    """A trainable nu without ``true`` takes its true value from ``reference.params`` (0.01, not
    the default 0.01/pi); the observations are the reference at 0.01 (exactly, without noise;
    with noise, the reference at 0.01 plus noise of the stated size); the problem's check of a
    solution uses that true value (the reference solves it to 1e-10)."""
    section = {
        **BURGERS_AT_NU,
        "params": {"nu": {"init": 0.05, "trainable": True, "scale": "log"}},
        "data": {"points": 300, "noise": 0.0, "seed": 3},
    }
    cfg = parse_pde(section)
    assert cfg.true_params() == {"nu": NU}
    assert cfg.solution_params() == {"nu": NU}
    assert cfg.trainable_params() == {"nu": 0.05}
    problem = build_problem(cfg)
    assert problem.true_params == {"nu": NU} and problem.trainable_params == {"nu": 0.05}
    assert problem.data_points is not None and problem.data_values is not None
    dx, dt = problem.data_points.unbind(-1)
    torch.testing.assert_close(problem.data_values, burgers(dx, dt, NU), rtol=0, atol=1e-14)
    assert (problem.data_values - burgers(dx, dt)).abs().max() > 0.05
    solution = solution_function(cfg)
    assert solution is not None
    assert problem.residual_of(solution, away_from_t0(500)).abs().max() < 1e-10

    noisy = build_problem(parse_pde({**section, "data": {"points": 4000, "noise": 0.05}}))
    assert noisy.data_points is not None and noisy.data_values is not None
    clean = burgers(noisy.data_points[:, 0], noisy.data_points[:, 1], NU)
    noise = noisy.data_values - clean
    assert abs(noise.std().item() - 0.05) < 0.003 and abs(noise.mean().item()) < 0.003


def test_a_reference_without_params_is_computed_at_its_defaults() -> None:
    """``reference: burgers`` alone: nu = 0.01/pi for the reference, the data and the true value
    of a trainable nu."""
    section = {
        **BURGERS_AT_NU,
        "params": {"nu": {"init": 0.05, "trainable": True}},
        "reference": "burgers",
        "data": {"points": 100},
    }
    cfg = parse_pde(section)
    assert cfg.true_params() == {"nu": DEFAULT_NU}
    problem = build_problem(cfg)
    assert problem.data_points is not None and problem.data_values is not None
    dx, dt = problem.data_points.unbind(-1)
    torch.testing.assert_close(problem.data_values, burgers(dx, dt, DEFAULT_NU), rtol=0, atol=0)


# --- An exact solution with a trainable parameter: everything at the true value -----------------


def test_inverse_problem_makes_forcing_conditions_data_and_test_values_at_the_true_value() -> None:
    """The heat equation with k learned from 0.5, true 0.2 (and a fixed c = 3): the forcing
    derived from the exact solution is 0 (the operator at k applied to the solution at k' is
    (k - k') pi^2 u), a condition without value and one whose value uses k both equal the
    solution at k = 0.2 (not at 0.5), the derivative condition is its u_x, and the data and the
    test grid are the solution at 0.2."""
    cfg = parse_pde(HEAT_INVERSE)
    assert cfg.true_params() == {"k": 0.2}
    assert cfg.solution_params() == {"c": 3.0, "k": 0.2}
    assert cfg.fixed_params() == {"c": 3.0} and cfg.trainable_params() == {"k": 0.5}
    problem = build_problem(cfg)
    assert problem.forcing.abs().max() < 1e-12
    final, given, slope = problem.conditions
    for cond in (final, given):
        assert (cond.points[:, 1] == 1.0).all()
        expected = heat(cond.points, 0.2)
        torch.testing.assert_close(cond.values, expected, rtol=1e-13, atol=1e-14)
        assert (cond.values - heat(cond.points, 0.5)).abs().max() > 0.05
    x, t = slope.points.unbind(-1)
    u_x = 3.0 * PI * torch.exp(-0.2 * PI**2 * t) * torch.cos(PI * x)
    torch.testing.assert_close(slope.values, u_x, rtol=1e-13, atol=1e-14)
    assert problem.data_points is not None and problem.data_values is not None
    torch.testing.assert_close(
        problem.data_values, heat(problem.data_points, 0.2), rtol=1e-13, atol=1e-14
    )
    assert problem.test_values is not None
    torch.testing.assert_close(
        problem.test_values, heat(problem.test_points, 0.2), rtol=1e-13, atol=1e-14
    )
    solution = solution_function(cfg)
    assert solution is not None
    points = sample([(-1.0, 1.0), (0.0, 1.0)], 300, "random", torch.Generator().manual_seed(0))
    assert problem.residual_of(solution, points).abs().max() < 1e-12


# --- A parameter the reference also takes must agree with it -----------------------------------


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"params": {"nu": 0.005}}, "params.nu is 0.005, but reference 'burgers' is computed at"),
        (
            {"params": {"nu": 0.005}, "reference": "burgers"},
            "is computed at nu = 0.003183098862",
        ),
        (
            {
                "params": {"nu": {"init": 0.05, "trainable": True, "true": 0.005}},
                "data": {"points": 10},
            },
            "params.nu.true is 0.005, but reference 'burgers' is computed at nu = 0.01",
        ),
    ],
    ids=["fixed-vs-given", "fixed-vs-default", "true-vs-given"],
)
def test_a_parameter_that_contradicts_the_reference_is_refused(
    changes: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pde({**BURGERS_AT_NU, **changes})
    assert info.value.key == "pde"
    assert needle in info.value.message
    assert "reference: {name: burgers, params: {nu: 0.005}}" in info.value.message
    assert "\n" not in str(info.value)


def test_a_parameter_that_agrees_with_the_reference_is_accepted() -> None:
    """The shipped spelling of 0.01/pi, a ``true`` equal to the reference's, and an operator
    parameter the reference does not take."""
    parse_pde({**BURGERS_AT_NU, "params": {"nu": 0.0031830988618379067}, "reference": "burgers"})
    cfg = parse_pde(
        {
            **BURGERS_AT_NU,
            "params": {"nu": {"init": 0.05, "trainable": True, "true": NU}},
            "data": {"points": 10},
        }
    )
    assert cfg.true_params() == {"nu": NU}
    other = parse_pde(
        {
            **BURGERS_AT_NU,
            "operator": "u_t + u*u_x - nu*u_xx + 0*g",
            "params": {"nu": NU, "g": 2.0},
        }
    )
    assert other.fixed_params() == {"nu": NU, "g": 2.0}
