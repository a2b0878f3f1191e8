"""Physics-informed problems: the ``pde:`` section, manufactured and reference solutions, batched
per-model derivatives and the PINN loss against plain per-model PyTorch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from aaf_cli.activations import ACTIVATIONS, JETS
from aaf_cli.config import TrainConfig, Variant
from aaf_cli.errors import ConfigError
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP
from aaf_cli.problems.pde import check_inputs, parse_pde
from aaf_cli.problems.pde.problem import build_problem, grid, sample, solution_function
from aaf_cli.problems.pde.reference import burgers
from aaf_cli.problems.pde.residual import (
    PdeParameters,
    PinnLoss,
    make_pinn_optimizer,
    model_derivatives,
    relative_l2,
)
from aaf_cli.problems.pde.taylor import taylor_derivatives, unsupported
from aaf_cli.train import make_optimizer

F64 = torch.float64
PI = math.pi
NU = 0.01 / PI

# The shipped problems' pde sections (the drafts of configs/papers/*.yaml).
KLEIN_GORDON: dict[str, Any] = {
    "inputs": {"x": [0, 1], "t": [0, 1]},
    "operator": "u_tt - u_xx + u**3",
    "exact": "x*cos(5*pi*t) + (x*t)**3",
    "forcing": "from_exact",
    "conditions": [
        {"on": "t == 0", "points": 50},
        {"on": "t == 0", "derivative": "u_t", "points": 50},
        {"on": "x == 0 or x == 1", "points": 100},
    ],
}
HELMHOLTZ: dict[str, Any] = {
    "inputs": {"x": [-1, 1], "y": [-1, 1]},
    "operator": "u_xx + u_yy + k**2*u",
    "params": {"k": 1.0},
    "exact": "sin(pi*x)*sin(4*pi*y)",
    "forcing": "from_exact",
    "conditions": [
        {"on": "x == -1 or x == 1", "value": "0", "points": 100},
        {"on": "y == -1 or y == 1", "value": "0", "points": 100},
    ],
}
BURGERS: dict[str, Any] = {
    "inputs": {"x": [-1, 1], "t": [0, 1]},
    "operator": "u_t + u*u_x - nu*u_xx",
    "params": {"nu": NU},
    "conditions": [
        {"on": "t == 0", "value": "-sin(pi*x)", "points": 50},
        {"on": "x == -1 or x == 1", "value": "0", "points": 50},
    ],
    "reference": "burgers",
}


def section(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def box(intervals: list[tuple[float, float]], n: int, seed: int = 7) -> torch.Tensor:
    return sample(intervals, n, "random", torch.Generator().manual_seed(seed))


# --- Manufactured and reference solutions -------------------------------------------------------


def test_klein_gordon_forcing_derived_from_the_exact_solution_equals_the_hand_derived_one() -> None:
    problem = build_problem(parse_pde(KLEIN_GORDON))
    x, t = problem.collocation.unbind(-1)
    u = x * torch.cos(5 * PI * t) + (x * t) ** 3
    u_tt = -25 * PI**2 * x * torch.cos(5 * PI * t) + 6 * x**3 * t
    u_xx = 6 * x * t**3
    torch.testing.assert_close(problem.forcing, u_tt - u_xx + u**3, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize(
    ("pde", "forcing"),
    [
        (
            KLEIN_GORDON,
            "-25*pi**2*x*cos(5*pi*t) + 6*x**3*t - 6*x*t**3 + (x*cos(5*pi*t) + (x*t)**3)**3",
        ),
        (HELMHOLTZ, "(1 - 17*pi**2)*sin(pi*x)*sin(4*pi*y)"),
    ],
    ids=["klein_gordon", "helmholtz"],
)
def test_exact_solution_solves_the_operator_with_a_hand_written_forcing(
    pde: dict[str, Any], forcing: str
) -> None:
    """Plugged into the operator by autograd at random points, the exact solution leaves a
    residual below 1e-6 against the forcing written by hand (so neither side is derived from
    the other)."""
    cfg = parse_pde(section(pde, forcing=forcing))
    problem = build_problem(cfg)
    intervals = [cfg.inputs[n] for n in cfg.input_names]
    solution = solution_function(cfg)
    assert solution is not None
    residual = problem.residual_of(solution, box(intervals, 2000))
    assert residual.abs().max() < 1e-6
    # And the derived forcing is the hand-written one.
    derived = build_problem(parse_pde(pde))
    hand = build_problem(cfg)
    torch.testing.assert_close(derived.forcing, hand.forcing, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("pde", [KLEIN_GORDON, HELMHOLTZ], ids=["klein_gordon", "helmholtz"])
def test_exact_solution_satisfies_every_condition(pde: dict[str, Any]) -> None:
    cfg = parse_pde(pde)
    problem = build_problem(cfg)
    solution = solution_function(cfg)
    assert solution is not None
    for cond in problem.conditions:
        points = cond.points.clone().requires_grad_(True)
        u = solution(points)
        value = u
        for i in cond.derivative:
            (value,) = torch.autograd.grad(value.sum(), points, create_graph=True)
            value = value[:, i]
        torch.testing.assert_close(value.detach(), cond.values, rtol=1e-12, atol=1e-12)
    # Klein-Gordon's conditions by hand: u(x, 0) = x, u_t(x, 0) = 0, u(0, t) = 0,
    # u(1, t) = cos(5 pi t) + t^3.
    if pde is KLEIN_GORDON:
        first, velocity, sides = problem.conditions
        assert (first.points[:, 1] == 0).all() and (velocity.points[:, 1] == 0).all()
        torch.testing.assert_close(first.values, first.points[:, 0], rtol=0, atol=1e-15)
        assert velocity.values.abs().max() < 1e-15
        x, t = sides.points.unbind(-1)
        assert set(x.tolist()) == {0.0, 1.0}
        torch.testing.assert_close(
            sides.values, x * (torch.cos(5 * PI * t) + t**3), rtol=1e-14, atol=1e-14
        )


def test_burgers_reference_solves_burgers_equation() -> None:
    """The quadrature reference, differentiated by autograd, leaves a residual below 1e-6
    everywhere we sample, including a band of points crossing the front at x = 0 where
    |u_xx| reaches ~2e4 (relative to the size of the terms that cancel, a tighter check).

    Points at t < 0.01 are left out: the Cole-Hopf substitution sqrt(4 nu t) has an infinite
    slope at t = 0, so autograd's u_t is not usable there (the values are exact: -sin(pi x))."""
    cfg = parse_pde(BURGERS)
    problem = build_problem(cfg)
    solution = solution_function(cfg)
    assert solution is not None
    points = box([(-1.0, 1.0), (0.01, 1.0)], 2000)
    front = torch.cartesian_prod(
        torch.linspace(-0.02, 0.02, 41, dtype=F64), torch.linspace(0.3, 1.0, 15, dtype=F64)
    )
    points = torch.cat([points, front])
    residual = problem.residual_of(solution, points)
    assert residual.abs().max() < 1e-6
    coords = front.clone().requires_grad_(True)
    (u_x,) = torch.autograd.grad(solution(coords).sum(), coords, create_graph=True)
    (u_xx,) = torch.autograd.grad(u_x[:, 0].sum(), coords)
    assert (NU * u_xx[:, 0]).abs().max() > 50  # the terms are large there: a real test


def test_burgers_reference_satisfies_its_conditions_and_is_odd() -> None:
    x = torch.linspace(-1, 1, 201, dtype=F64)
    t = torch.linspace(0, 1, 51, dtype=F64)
    torch.testing.assert_close(burgers(x, torch.zeros_like(x)), -torch.sin(PI * x))
    assert burgers(torch.full_like(t, -1.0), t).abs().max() < 1e-13
    assert burgers(torch.full_like(t, 1.0), t).abs().max() < 1e-13
    xx, tt = torch.meshgrid(x, t, indexing="ij")
    torch.testing.assert_close(burgers(-xx, tt), -burgers(xx, tt), rtol=0, atol=1e-13)


def _burgers_spectral(n: int, dt: float, times: list[float]) -> tuple[np.ndarray, list[np.ndarray]]:
    """An independent solver: Burgers on the periodic interval [-1, 1) (the odd, 2-periodic
    initial value -sin(pi x) keeps u(+-1, t) = 0, so it is the same problem), Fourier
    pseudo-spectral in x with 2/3 de-aliasing, the viscous term integrated exactly (integrating
    factor) and RK4 in time."""
    x = -1 + 2 * np.arange(n) / n
    k = np.fft.rfftfreq(n, d=2 / n) * 2 * np.pi
    keep = k < (2 / 3) * k.max()
    half = np.exp(-NU * k**2 * dt / 2)
    full = half * half

    def advection(uh: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(uh * keep, n=n)
        return -0.5j * k * np.fft.rfft(u * u) * keep

    uh = np.fft.rfft(-np.sin(np.pi * x))
    out = []
    step = 0
    for target in times:
        while step < round(target / dt):
            a = advection(uh)
            b = advection(half * (uh + dt / 2 * a))
            c = advection(half * uh + dt / 2 * b)
            d = advection(full * uh + dt * half * c)
            uh = full * uh + dt / 6 * (full * a + 2 * half * (b + c) + d)
            step += 1
        out.append(np.fft.irfft(uh, n=n))
    return x, out


def test_burgers_reference_agrees_with_an_independent_spectral_solver() -> None:
    """Tolerance 2e-6 (max abs): the spectral solution with 2048 modes differs from one with
    4096 by 4e-7 at t = 0.5, and the quadrature from the 4096-mode one by 3e-8 (measured)."""
    times = [0.25, 0.5, 0.75, 1.0]
    x, solutions = _burgers_spectral(2048, 5e-4, times)
    xs = torch.from_numpy(x)
    for time, expected in zip(times, solutions):
        got = burgers(xs, torch.full_like(xs, time)).numpy()
        assert np.abs(got - expected).max() < 2e-6, time
    assert np.abs(solutions[-1]).max() > 0.5  # the front is there, not a decayed solution


# --- Sampling --------------------------------------------------------------------------------


def test_sampling_is_seeded_inside_the_box_and_latin_hypercube_stratified() -> None:
    intervals = [(-1.0, 1.0), (0.0, 2.0)]
    a = sample(intervals, 64, "lhs", torch.Generator().manual_seed(3))
    b = sample(intervals, 64, "lhs", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    for axis, (lo, hi) in enumerate(intervals):
        strata = ((a[:, axis] - lo) / (hi - lo) * 64).floor().long()
        assert sorted(strata.tolist()) == list(range(64))  # one point per stratum
    r = sample(intervals, 500, "random", torch.Generator().manual_seed(0))
    assert (r[:, 0] >= -1).all() and (r[:, 0] <= 1).all() and (r[:, 1] >= 0).all()
    g = grid(intervals, 100)
    assert g.shape == (100, 2) and g[:, 0].unique().numel() == 10
    assert g[0].tolist() == [-1.0, 0.0] and g[-1].tolist() == [1.0, 2.0]


def test_condition_points_lie_on_their_faces_split_between_them() -> None:
    problem = build_problem(parse_pde(BURGERS))
    initial, sides = problem.conditions
    assert (initial.points[:, 1] == 0).all() and initial.points.shape == (50, 2)
    torch.testing.assert_close(initial.values, -torch.sin(PI * initial.points[:, 0]))
    assert (sides.points[:, 0] == -1).sum() == 25 and (sides.points[:, 0] == 1).sum() == 25
    assert (sides.values == 0).all()
    again = build_problem(parse_pde(BURGERS))
    assert torch.equal(again.collocation, problem.collocation)
    other = build_problem(parse_pde(section(BURGERS, collocation={"seed": 1})))
    assert not torch.equal(other.collocation, problem.collocation)


def test_observations_come_from_the_solution_with_the_stated_noise() -> None:
    cfg = parse_pde(
        section(
            BURGERS,
            params={"nu": {"init": 0.01, "trainable": True}},
            data={"points": 4000, "noise": 0.05, "seed": 2},
        )
    )
    problem = build_problem(cfg)
    assert problem.data_points is not None and problem.data_values is not None
    clean = burgers(problem.data_points[:, 0], problem.data_points[:, 1])
    noise = problem.data_values - clean
    assert abs(noise.std().item() - 0.05) < 0.003 and abs(noise.mean().item()) < 0.003
    assert cfg.true_params() == {"nu": NU}  # from the reference
    assert problem.trainable_params == {"nu": 0.01} and problem.fixed_params == {}


# --- Batched derivatives against per-model autograd --------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "fixed": {"kind": "fixed"},
    "global": {"kind": "global", "n": 10},
    "layer": {"kind": "layer", "n": 10},
    "neuron": {"kind": "neuron", "n": 10},
    "rowdy": {"kind": "rowdy", "n": 10, "K": 4},
}
LAYERS = [2, 8, 8, 1]


def variant(key: str) -> Any:
    return TypeAdapter(Variant).validate_python({"name": key, **VARIANTS[key]})


def ensemble(
    keys: list[str], seeds: list[int], layers: list[int] = LAYERS, base: str = "tanh"
) -> Groups:
    groups = []
    for key in keys:
        v = variant(key)
        specs = [ModelSpec(v.name, s, v.kind, v, v.lr) for s in seeds]
        groups.append(Ensemble(layers, v.kind, base, specs, dtype=F64))
    return Groups(groups)


def loss_and_gradients(
    problem: Any, seed: int, forward_mode: bool, device: str = "cpu"
) -> tuple[PinnLoss, Any, list[torch.Tensor]]:
    """The PINN loss of a fixed + GAAF + N-LAAF ensemble (activation parameters moved by
    ``seed``; each model its own trainable coefficients, if any) and every gradient, on
    ``device``, with forward- or reverse-mode derivatives; gradients on the CPU."""
    model = ensemble(["fixed", "global", "neuron"], [0, 1])
    perturb(model, seed)
    model.to(device)
    params = PdeParameters.of(problem, model.members, F64, device)
    loss = PinnLoss(problem, F64, torch.device(device))
    if forward_mode:
        assert loss.use_forward_mode(model) is None
    result = loss(model, params)
    result.total.sum().backward()  # type: ignore[no-untyped-call]
    tensors = [*model.parameters(), *(params.parameters() if params is not None else [])]
    return loss, result, [p.grad.cpu() for p in tensors if p.grad is not None]


def perturb(model: Groups, seed: int) -> None:
    """Move every activation parameter away from its start (n*a = 1 hides mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for g in model.ensembles():
            for p in g.family.parameters():
                p.add_(0.05 * torch.randn(p.shape, dtype=F64, generator=gen))


def plain_of(model: Groups, index: int, layers: list[int] = LAYERS) -> PlainMLP:
    group, _ = model.locate(index)
    spec = model.members[index].spec
    net = PlainMLP(layers, group.kind, "tanh", spec, dtype=F64)
    net.load_state_dict(model.state_dict_of(index))
    return net


WANTED = [(0,), (1,), (0, 0), (0, 1), (1, 1), (0, 0, 1)]


@pytest.mark.parametrize("other", ["neuron", "rowdy"])
def test_batched_derivatives_equal_per_model_autograd(other: str) -> None:
    """u, u_x, u_t, u_xx, u_xt, u_tt and u_xxt of every model of a fixed + GAAF (n=10) + other
    ensemble equal those of its own nn.Module differentiated alone, to float64 rounding; and,
    at a few points, torch.autograd.functional's Jacobian and Hessian of that module."""
    model = ensemble(["fixed", "global", other], [0, 1])
    perturb(model, 1)
    points = box([(-1.0, 1.0), (0.0, 1.0)], 40)
    found = model_derivatives(model, points, model.size, WANTED, create_graph=False)
    for i in range(model.size):
        net = plain_of(model, i)
        coords = points.clone().requires_grad_(True)
        u = net(coords)[:, 0]
        (g,) = torch.autograd.grad(u.sum(), coords, create_graph=True)
        (gx,) = torch.autograd.grad(g[:, 0].sum(), coords, create_graph=True)
        (gt,) = torch.autograd.grad(g[:, 1].sum(), coords, create_graph=True)
        (gxx,) = torch.autograd.grad(gx[:, 0].sum(), coords)
        expected = {
            (): u, (0,): g[:, 0], (1,): g[:, 1], (0, 0): gx[:, 0], (0, 1): gx[:, 1],
            (1, 1): gt[:, 1], (0, 0, 1): gxx[:, 1],
        }  # fmt: skip
        for index, value in expected.items():
            torch.testing.assert_close(found[index][i], value.detach(), rtol=1e-11, atol=1e-12)

        def scalar(p: torch.Tensor, net: PlainMLP = net) -> torch.Tensor:
            return net(p)[0]

        for n in range(3):
            jac = torch.autograd.functional.jacobian(scalar, points[n])
            hess = torch.autograd.functional.hessian(scalar, points[n])
            torch.testing.assert_close(found[(0,)][i, n], jac[0], rtol=1e-11, atol=1e-12)
            torch.testing.assert_close(found[(1,)][i, n], jac[1], rtol=1e-11, atol=1e-12)
            torch.testing.assert_close(found[(0, 0)][i, n], hess[0, 0], rtol=1e-11, atol=1e-12)
            torch.testing.assert_close(found[(0, 1)][i, n], hess[0, 1], rtol=1e-11, atol=1e-12)
            torch.testing.assert_close(found[(1, 1)][i, n], hess[1, 1], rtol=1e-11, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["reverse", "taylor"])
def test_cuda_pinn_loss_and_gradients_equal_the_cpu_ones_in_float64(mode: str) -> None:
    """benchmarks/gpu_check.sh: the batched PINN loss of an inverse Burgers problem (fixed,
    GAAF and N-LAAF models, each its own nu) and its gradients on CUDA equal those on the CPU,
    with reverse-mode and with forward-mode derivatives."""
    pde = section(
        SMALL_BURGERS,
        params={"nu": {"init": 0.02, "trainable": True, "scale": "log"}},
        data={"points": 32, "noise": 0.01},
    )
    problem = build_problem(parse_pde(pde))
    _, on_cpu, cpu_grads = loss_and_gradients(problem, 3, mode == "taylor")
    _, on_cuda, cuda_grads = loss_and_gradients(problem, 3, mode == "taylor", "cuda")
    torch.testing.assert_close(on_cuda.total.cpu(), on_cpu.total, rtol=1e-12, atol=1e-14)
    assert len(cuda_grads) == len(cpu_grads) > 0
    for cuda, cpu in zip(cuda_grads, cpu_grads):
        torch.testing.assert_close(cuda, cpu, rtol=1e-10, atol=1e-12)


# --- Forward-mode (Taylor) derivatives: what train.compile traces ----------------------------


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_jet_equals_autograd(name: str) -> None:
    """JETS[name] gives the activation and its first and second derivatives as autograd does,
    on both sides of 0, at the kink itself, and at and above softplus's threshold."""
    z = torch.cat(
        [
            torch.linspace(-6, 6, 241, dtype=F64),
            torch.tensor([0.0, 19.5, 20.0, 20.5, 30.0], dtype=F64),
        ]
    ).requires_grad_(True)
    h = ACTIVATIONS[name](z)
    (d1,) = torch.autograd.grad(h.sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z, allow_unused=True, materialize_grads=True)
    jet = JETS[name](z.detach())
    for got, want in zip(jet, (h, d1, d2)):
        torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("base", ["tanh", "sin", "gelu", "softplus"])
@pytest.mark.parametrize("inputs", [1, 2, 3])
def test_forward_mode_derivatives_equal_reverse_mode(base: str, inputs: int) -> None:
    """Every derivative up to second order of a fixed, GAAF, L-LAAF and N-LAAF ensemble (n*a
    moved off its start), in forward mode at the first rows, equals reverse mode's."""
    model = ensemble(["fixed", "global", "layer", "neuron"], [0, 1], [inputs, 8, 8, 1], base)
    perturb(model, 4)
    points = box([(-1.0, 1.0)] * inputs, 30)
    wanted = [(i,) for i in range(inputs)]
    wanted += [(i, j) for i in range(inputs) for j in range(i, inputs)]
    assert unsupported(model, wanted) is None
    reverse = model_derivatives(model, points, model.size, wanted, create_graph=False)
    forward = taylor_derivatives(model, points, 20, wanted)
    assert set(forward) == {(), *wanted}
    torch.testing.assert_close(forward[()], reverse[()], rtol=1e-12, atol=1e-13)
    for index in wanted:
        assert forward[index].shape == (model.size, 20)
        torch.testing.assert_close(forward[index], reverse[index][:, :20], rtol=1e-10, atol=1e-12)


def test_a_one_layer_network_in_forward_mode() -> None:
    """No hidden layer: u is affine, u_x its weight at every point, u_xx zero."""
    v = variant("fixed")
    model = Groups([Ensemble([2, 1], "fixed", "tanh", [ModelSpec("fixed", 0, "fixed", v)])])
    points = box([(-1.0, 1.0), (0.0, 1.0)], 5).float()
    found = taylor_derivatives(model, points, 5, [(0,), (0, 0), (0, 1)])
    w = model.ensembles()[0].weights[0].detach()
    torch.testing.assert_close(found[(0,)], w[:, 0, 0].expand(1, 5))
    assert torch.equal(found[(0, 0)], torch.zeros(1, 5))
    assert torch.equal(found[(0, 1)], torch.zeros(1, 5))


def test_forward_mode_pinn_loss_with_a_derivative_condition_equals_reverse_mode() -> None:
    """Klein-Gordon prescribes u_t on t == 0 (a condition's derivative): forward mode then
    differentiates at every point, and the loss, each term and every gradient equal reverse
    mode's."""
    pde = section(
        KLEIN_GORDON, collocation={"points": 50, "sampling": "lhs", "seed": 1}, test_points=16
    )
    problem = build_problem(parse_pde(pde))
    assert any(c.derivative == (1,) for c in problem.conditions)
    _, reverse, g_reverse = loss_and_gradients(problem, 5, forward_mode=False)
    loss, forward, g_forward = loss_and_gradients(problem, 5, forward_mode=True)
    assert loss.derivative_rows == loss.points.shape[0] > loss.collocation.stop
    torch.testing.assert_close(forward.total, reverse.total, rtol=1e-12, atol=1e-14)
    assert forward.terms.keys() == reverse.terms.keys()
    for name in reverse.terms:
        torch.testing.assert_close(forward.terms[name], reverse.terms[name], rtol=1e-12, atol=1e-14)
    assert len(g_forward) == len(g_reverse) > 0
    for a, b in zip(g_forward, g_reverse):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_forward_mode_says_what_it_cannot_serve() -> None:
    assert "rowdy" in (unsupported(ensemble(["fixed", "rowdy"], [0]), [(0,)]) or "")
    assert "second order" in (unsupported(ensemble(["fixed"], [0]), [(0, 0, 1)]) or "")
    problem = build_problem(parse_pde(SMALL_BURGERS))
    loss = PinnLoss(problem, F64)
    assert loss.use_forward_mode(ensemble(["global", "rowdy"], [0])) is not None
    assert not loss.forward_mode
    assert loss.use_forward_mode(ensemble(["global", "neuron"], [0])) is None
    assert loss.forward_mode


def test_a_shared_input_would_add_up_the_models_derivatives() -> None:
    """Why every model gets its own input slice: differentiating the sum of all outputs with
    respect to ONE shared [N, d] input returns the sum over models of their derivatives."""
    model = ensemble(["global"], [0, 1, 2])
    points = box([(-1.0, 1.0), (0.0, 1.0)], 10)
    shared = points.clone().requires_grad_(True)
    (mixed,) = torch.autograd.grad(model(shared)[..., 0].sum(), shared)
    own = model_derivatives(model, points, model.size, [(0,)], create_graph=False)[(0,)]
    torch.testing.assert_close(mixed[:, 0], own.sum(0))
    assert not torch.allclose(mixed[:, 0], own[0])


# --- The PINN loss and training against per-model nn.Module + torch.optim.Adam ------------------

SMALL_BURGERS = section(
    BURGERS,
    collocation={"points": 64, "sampling": "lhs", "seed": 3},
    conditions=[
        {"on": "t == 0", "value": "-sin(pi*x)", "points": 16},
        {"on": "x == -1 or x == 1", "value": "0", "points": 8, "weight": 2.0},
    ],
    weights={"residual": 0.5},
)


def plain_loss(
    net: PlainMLP, problem: Any, nu: torch.Tensor | float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Burgers' PINN loss of one plain network, written out by hand."""
    coords = problem.collocation.clone().requires_grad_(True)
    u = net(coords)[:, 0]
    (g,) = torch.autograd.grad(u.sum(), coords, create_graph=True)
    (gx,) = torch.autograd.grad(g[:, 0].sum(), coords, create_graph=True)
    residual = g[:, 1] + u * g[:, 0] - nu * gx[:, 0]
    terms = {"residual": residual.square().mean()}
    for cond in problem.conditions:
        terms[cond.name] = (net(cond.points)[:, 0] - cond.values).square().mean()
    if problem.data_points is not None:
        terms["data"] = (net(problem.data_points)[:, 0] - problem.data_values).square().mean()
    cfg = problem.config
    total = cfg.weights.residual * terms["residual"] + 2.0 * terms["cond2"] + terms["cond1"]
    if "data" in terms:
        total = total + cfg.weights.data * terms["data"]
    return total, terms


class PlainModels:
    """The per-model reference of an ensemble: each model a ``PlainMLP`` with its own Adam and,
    for an inverse problem, its own log nu (from 0.02, as the ensemble's), trained on the
    hand-written loss."""

    def __init__(self, model: Groups, inverse: bool, lr: float = 3e-3) -> None:
        self.inverse = inverse
        self.nets = [plain_of(model, i) for i in range(model.size)]
        self.raws = [torch.tensor(math.log(0.02), dtype=F64, requires_grad=True) for _ in self.nets]
        self.opts = [
            torch.optim.Adam([*net.parameters(), *([raw] if inverse else [])], lr=lr)
            for net, raw in zip(self.nets, self.raws)
        ]

    def nus(self) -> torch.Tensor:
        return torch.stack([raw.detach().exp() for raw in self.raws])

    def step(self, problem: Any) -> torch.Tensor:
        """One Adam step of every model; their losses before it."""
        row = []
        for net, raw, opt in zip(self.nets, self.raws, self.opts):
            total, _ = plain_loss(net, problem, raw.exp() if self.inverse else NU)
            row.append(total.detach())
            opt.zero_grad()
            total.backward()  # type: ignore[no-untyped-call]
            opt.step()
        return torch.stack(row)


def test_pinn_terms_equal_the_hand_written_loss_of_each_model() -> None:
    problem = build_problem(parse_pde(SMALL_BURGERS))
    model = ensemble(["fixed", "global", "rowdy"], [0, 1])
    perturb(model, 2)
    result = PinnLoss(problem, F64)(model)
    assert list(result.terms) == ["residual", "cond1", "cond2"]
    for i in range(model.size):
        total, terms = plain_loss(plain_of(model, i), problem, NU)
        torch.testing.assert_close(result.total[i], total, rtol=1e-12, atol=0)
        for name, value in terms.items():
            torch.testing.assert_close(result.terms[name][i], value, rtol=1e-12, atol=0)


def test_pooled_conditions_are_one_mean_square_over_every_condition_point() -> None:
    """condition_loss: pooled (the JCP 2020 code's one MSE over the 16 initial and 8 boundary
    points; the boundary's weight 2 counts per point): the total is the residual term plus
    (16 * initial + 2 * 8 * boundary) / 24; the logged terms stay per condition."""
    model = ensemble(["fixed", "global"], [0, 1])
    perturb(model, 2)
    separate = PinnLoss(build_problem(parse_pde(SMALL_BURGERS)), F64)(model)
    pooled_pde = section(SMALL_BURGERS, condition_loss="pooled")
    pooled = PinnLoss(build_problem(parse_pde(pooled_pde)), F64)(model)
    terms = pooled.terms
    for name, value in separate.terms.items():
        assert torch.equal(terms[name], value)
    want = 0.5 * terms["residual"] + (16 * terms["cond1"] + 2 * 8 * terms["cond2"]) / 24
    torch.testing.assert_close(pooled.total, want, rtol=1e-14, atol=0)
    assert not torch.allclose(pooled.total, separate.total)


@pytest.mark.parametrize("mode", ["reverse", "taylor"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_100_training_steps_equal_per_model_adam(inverse: bool, mode: str) -> None:
    """The batched PINN loss trained by the engine's optimiser for 100 steps in float64 equals
    each model trained alone as an nn.Module with torch.optim.Adam (for the inverse problem
    each model's own nu too), to ~1e-9 relative; step-0 losses are equal across the variants
    of a seed. With reverse-mode derivatives (eager runs) and forward-mode ones (what
    ``train.compile`` traces)."""
    pde = SMALL_BURGERS
    if inverse:
        # nu is learned as exp(raw), as in Raissi et al.'s code: a plain nu crosses 0 within a
        # few Adam steps at this rate, and Burgers' equation with nu < 0 is ill-posed (the two
        # trajectories then part by amplified rounding, not by a mistake).
        pde = section(
            pde,
            params={"nu": {"init": 0.02, "trainable": True, "scale": "log"}},
            data={"points": 32, "noise": 0.01},
        )
    problem = build_problem(parse_pde(pde))
    keys, seeds = ["fixed", "global", "neuron"], [0, 1]
    model = ensemble(keys, seeds)
    cfg = TrainConfig(lr=3e-3, steps=100)
    params = PdeParameters.of(problem, model.members, F64)
    assert (params is not None) == inverse
    optimizer = make_pinn_optimizer(model, params, cfg) if inverse else make_optimizer(model, cfg)
    loss = PinnLoss(problem, F64)
    if mode == "taylor":
        assert loss.use_forward_mode(model) is None
    plains = PlainModels(model, inverse)
    active = torch.ones(model.size, dtype=torch.bool)
    batched, single, nu_batched, nu_single = [], [], [], []
    for _ in range(cfg.steps + 1):
        result = loss(model, params)
        batched.append(result.total.detach().clone())
        nu_single.append(plains.nus())
        if params is not None:
            nu_batched.append(params.trajectories()["nu"].clone())
        for p in optimizer.params:
            p.grad = None
        result.total.sum().backward()  # type: ignore[no-untyped-call]
        optimizer.step(active)
        single.append(plains.step(problem))
    got, want = torch.stack(batched), torch.stack(single)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)
    assert (got[-1] < 0.9 * got[0]).all()  # it trained
    if inverse:
        torch.testing.assert_close(
            torch.stack(nu_batched), torch.stack(nu_single), rtol=1e-9, atol=0
        )
        assert not torch.equal(nu_batched[-1][0], nu_batched[-1][2])  # each model its own nu
    # Step 0: the variants of a seed start from the same loss.
    step0 = got[0].reshape(len(keys), len(seeds))
    assert torch.equal(step0[0], step0[1]) and torch.equal(step0[0], step0[2])
    assert not torch.equal(step0[0, 0], step0[0, 1])


def test_relative_l2_per_model() -> None:
    class Scaled(torch.nn.Module):
        """Model m predicts (1 + m/10) times the exact solution."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            u = torch.sin(PI * x[..., 0]) * x[..., 1]
            return torch.stack([(1 + m / 10) * u for m in range(3)]).unsqueeze(-1)

    points = grid([(-1.0, 1.0), (0.0, 1.0)], 400)
    exact = torch.sin(PI * points[:, 0]) * points[:, 1]
    torch.testing.assert_close(
        relative_l2(Scaled(), points, exact), torch.tensor([0.0, 0.1, 0.2], dtype=F64)
    )


# --- Bad input: one line, naming the key ----------------------------------------------------------


@pytest.mark.parametrize(
    ("pde", "key", "words"),
    [
        (
            section(BURGERS, operator="u_t + u*u_q - nu*u_xx"),
            "pde.operator",
            "unknown derivative 'u_q'",
        ),
        (
            section(BURGERS, operator="u_t + u*u_y"),
            "pde.operator",
            "'y' is not an input (inputs: x, t)",
        ),
        (section(BURGERS, operator="u_t + ux"), "pde.operator", "did you mean 'u_x'"),
        (section(BURGERS, operator="u_xxxx"), "pde.operator", "order 4"),
        (section(BURGERS, operator="sin(x)"), "pde.operator", "does not involve u"),
        (
            section(BURGERS, conditions=[{"on": "x == 5", "value": "0"}]),
            "pde.conditions",
            "x = 5 is outside the domain (x in [-1, 1]), never on its boundary",
        ),
        (
            section(BURGERS, conditions=[{"on": "x == 0", "value": "0"}]),
            "pde.conditions",
            "x = 0 is inside the domain",
        ),
        (
            section(BURGERS, conditions=[{"on": "z == 0", "value": "0"}]),
            "pde.conditions",
            "unknown input 'z'",
        ),
        (
            section(BURGERS, conditions=[{"on": "x > 0", "value": "0"}]),
            "pde.conditions",
            "not an equation",
        ),
        (
            section(BURGERS, conditions=[{"on": "t == 0", "value": "0", "derivative": "u_s"}]),
            "pde.conditions",
            "'s' is not an input",
        ),
        (
            section(BURGERS, conditions=[{"on": "t == 0", "value": "u"}]),
            "pde.conditions",
            "cannot use 'u'",
        ),
        (
            section(BURGERS, params={"nu": {"init": 0.1, "trainable": True}}),
            "pde.data",
            "trainable parameter nu need observations",
        ),
        (section(KLEIN_GORDON, exact=None), "pde.forcing", "from_exact needs an exact solution"),
        (section(BURGERS, exact="x*t"), "pde.reference", "exact or reference, not both"),
        (section(BURGERS, inputs={"x": [0, 1], "t": [0, 1]}), "pde.reference", "x in [-1, 1]"),
        (section(BURGERS, reference="burger"), "pde.reference.name", "did you mean 'burgers'"),
        (
            section(BURGERS, colocation={"points": 10}),
            "pde.colocation",
            "did you mean 'collocation'",
        ),
        (
            section(BURGERS, collocation={"point": 10}),
            "pde.collocation.point",
            "did you mean 'points'",
        ),
        (
            section(BURGERS, inputs={"x": [1, -1], "t": [0, 1]}),
            "pde.inputs",
            "low must be below high",
        ),
        (section(BURGERS, inputs={"xx": [0, 1]}), "pde.inputs", "one lower-case letter"),
        (section(BURGERS, params={"pi": 1.0}), "pde.params", "built-in name"),
        (section(BURGERS, params={"nu": "small"}), "pde.params.nu", "a number or {init"),
        (
            section(BURGERS, params={"nu": {"init": -1, "trainable": True, "scale": "log"}}),
            "pde.params.nu.scale",
            "log needs a positive init, not -1",
        ),
        (
            section(BURGERS, params={"nu": {"init": 0.1, "scale": "log"}}),
            "pde.params.nu.scale",
            "scale is only for trainable parameters",
        ),
        (
            section(
                KLEIN_GORDON,
                params={"k": {"init": 1.0, "trainable": True}},
                operator="u_tt - k*u_xx + u**3",
                data={"points": 10},
            ),
            "pde",
            "params.k: trainable and used by the exact solution",
        ),
    ],
)
def test_bad_sections_give_one_line_naming_the_key(
    pde: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pde(pde, "burgers.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert info.value.key == key, message
    assert words in message, message
    assert message.startswith(f"burgers.yaml: {key}: ")


def test_a_condition_without_value_needs_exact_or_is_taken_from_the_reference() -> None:
    cfg = parse_pde(section(BURGERS, conditions=[{"on": "t == 0", "points": 20}]))
    cond = build_problem(cfg).conditions[0]
    torch.testing.assert_close(cond.values, -torch.sin(PI * cond.points[:, 0]))
    with pytest.raises(ConfigError, match="give it, or exact"):
        parse_pde(section(BURGERS, conditions=[{"on": "t == 0", "derivative": "u_t"}]))


def test_an_exact_solution_that_is_not_finite_is_a_config_error() -> None:
    bad = section(KLEIN_GORDON, inputs={"x": [-1, 1], "t": [0, 1]}, exact="log(x)*t", conditions=[])
    cfg = parse_pde(bad)
    with pytest.raises(ConfigError) as info:
        build_problem(cfg, "kg.yaml")
    message = str(info.value)
    assert message.startswith("kg.yaml: pde.exact: the forcing is nan at x = -")
    assert "must be finite on the whole domain" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"pde.forcing: the forcing is inf"):
        build_problem(parse_pde(section(BURGERS, forcing="1/(x - x)")))


def test_the_network_must_take_one_input_per_coordinate() -> None:
    cfg = parse_pde(BURGERS)
    check_inputs(cfg, [2, 20, 1])
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg, [1, 20, 1], "b.yaml")
    assert str(info.value) == (
        "b.yaml: model.layers: the network must take the 2 inputs of pde.inputs (x, t), so "
        "layers must start with 2 (got [1, 20, 1])"
    )


def test_mixed_derivatives_in_any_order_name_the_same_derivative() -> None:
    a = parse_pde(section(HELMHOLTZ, operator="u_xy + u"))
    b = parse_pde(section(HELMHOLTZ, operator="u_yx + u"))
    assert a.derivatives() == b.derivatives() == [(0, 1)]
    pa, pb = build_problem(a), build_problem(b)
    torch.testing.assert_close(pa.forcing, pb.forcing)


def test_one_and_three_input_problems() -> None:
    """1 input (a face is a single point) and 3 inputs (faces are squares) work alike."""
    ode = parse_pde(
        {
            "inputs": {"x": [0, 2]},
            "operator": "u_x - u",
            "exact": "exp(x)",
            "conditions": [{"on": "x == 0", "points": 10}],
        }
    )
    problem = build_problem(ode)
    (start,) = problem.conditions
    assert start.points.tolist() == [[0.0]] and start.values.tolist() == [1.0]
    assert problem.forcing.abs().max() == 0  # forcing omitted: zero
    solution = solution_function(ode)
    assert solution is not None
    assert problem.residual_of(solution, box([(0.0, 2.0)], 50)).abs().max() < 1e-12
    heat = parse_pde(
        {
            "inputs": {"x": [0, 1], "y": [0, 1], "t": [0, 1]},
            "operator": "u_t - k*(u_xx + u_yy)",
            "params": {"k": 0.5},
            "exact": "exp(-pi**2*t)*sin(pi*x)*sin(pi*y)",
            "conditions": [{"on": "x == 0 or x == 1 or y == 0 or y == 1", "points": 400}],
        }
    )
    problem = build_problem(heat)
    solution = solution_function(heat)
    assert solution is not None
    points = box([(0.0, 1.0)] * 3, 500)
    assert problem.residual_of(solution, points).abs().max() < 1e-12
    (walls,) = problem.conditions
    assert walls.points.shape == (400, 3) and walls.values.abs().max() < 1e-15


def test_yaml_on_key_and_a_parameter_with_its_own_rate() -> None:
    """YAML 1.1 reads an unquoted `on:` key as True: it is accepted as `on`."""
    import yaml

    text = """
inputs: {x: [-1, 1], t: [0, 1]}
operator: u_t + u*u_x - nu*u_xx
params: {nu: {init: 0.01, trainable: true, scale: log, lr: 0.05}}
conditions:
  - {on: "t == 0", value: "-sin(pi*x)"}
reference: burgers
data: {points: 10}
"""
    cfg = parse_pde(yaml.safe_load(text), "b.yaml")
    assert cfg.conditions[0].on == "t == 0"
    assert cfg.log_params() == ("nu",) and cfg.param_rates() == {"nu": 0.05}
    problem = build_problem(cfg)
    members = ensemble(["fixed"], [0, 1]).members
    params = PdeParameters.of(problem, members, F64)
    assert params is not None
    ((raw, rates, offset),) = params.rows(1e-3)
    assert rates.tolist() == [0.05, 0.05] and offset == 0
    torch.testing.assert_close(raw, torch.full((2,), math.log(0.01), dtype=F64))
    torch.testing.assert_close(params.as_dict()["nu"], torch.full((2,), 0.01, dtype=F64))
