"""B-splines, KANs, spline activations and the fixed-steepness control: each batched kind equals
its per-model reference (forward, gradients, 200 Adam steps, PDE input derivatives), the grid
update keeps the functions it can represent, and checkpoints load back into per-model modules."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from aaf_cli import splines
from aaf_cli.config import TrainConfig, Variant, load_config
from aaf_cli.errors import ConfigError
from aaf_cli.experiment import run_experiment
from aaf_cli.kan import GRID_EPS, KanEnsemble, KanLayer, KanNet, kan_init
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP, init_weights, load_checkpoint
from aaf_cli.pipeline import write_checkpoints
from aaf_cli.problems.pde import parse_pde
from aaf_cli.problems.pde.problem import build_problem
from aaf_cli.problems.pde.residual import PinnLoss, model_derivatives
from aaf_cli.problems.pde.taylor import taylor_derivatives, unsupported
from aaf_cli.train import train

from .reference import reference_run

F64 = torch.float64
KAN_LAYERS = [2, 4, 3, 1]
MLP_LAYERS = [1, 6, 5, 1]
STEPS = 200


def variant(**fields: Any) -> Any:
    return TypeAdapter(Variant).validate_python(fields)


def member(v: Any, seed: int) -> ModelSpec:
    return ModelSpec(v.name, seed, v.kind, v, v.lr)


def kan_net(layers: list[int], v: Any, seed: int) -> KanNet:
    """One KAN as a user builds it, from the same seed as the ensemble's model."""
    weights = kan_init(layers, seed, v.grid, v.order, *v.grid_range)
    return KanNet(layers, v, F64).load_init(weights)


def kan_groups(layers: list[int], seeds: list[int], **fields: Any) -> Groups:
    v = variant(kind="kan", **fields)
    return Groups([KanEnsemble(layers, v.activation, [member(v, s) for s in seeds], dtype=F64)])


def box(n: int, lo: float, hi: float, dims: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, dims, generator=gen, dtype=F64)


def kan_data() -> tuple[torch.Tensor, torch.Tensor]:
    """A 9 x 9 grid on [-1.2, 1.2]^2 (a little beyond the spline grid) and a smooth target."""
    side = torch.linspace(-1.2, 1.2, 9, dtype=F64)
    x = torch.cartesian_prod(side, side)
    return x, (torch.sin(math.pi * x[:, :1]) * torch.cos(x[:, 1:])).contiguous()


def mlp_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-2, 2, 50, dtype=F64).unsqueeze(-1)
    return x, torch.sin(3 * x)


def net_name(ensemble_name: str) -> str:
    """``KanEnsemble`` parameter name (``coef.1``) -> ``KanNet``'s (``kan.1.coef``)."""
    what, layer = ensemble_name.split(".")
    return f"kan.{layer}.{what}"


def adam_reference(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float
) -> list[float]:
    """The data loss (MSE) before every step of a plain torch.optim.Adam loop, and after the
    last (the engine's logged steps with log_every=1)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(net(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    with torch.no_grad():
        losses.append(nn.functional.mse_loss(net(x), y).item())
    return losses


# --- B-splines -------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_basis_counts_partition_of_unity_and_support(order: int) -> None:
    lo, hi, grid = -1.0, 2.0, 6
    h = (hi - lo) / grid
    t = splines.knots(lo, hi, grid, order, F64)
    assert t.shape == (grid + 2 * order + 1,)
    torch.testing.assert_close(t[order], torch.tensor(lo, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(t[order + grid], torch.tensor(hi, dtype=F64), rtol=0, atol=1e-15)
    assert splines.grid_points(t, order).shape == (grid + 1,)
    # [lo, hi), and hi itself for order >= 1 (order 0 at hi: see the test below).
    inside = torch.linspace(lo, hi, 301, dtype=F64)
    inside = inside if order > 0 else inside[:-1]
    b = splines.basis(inside, t, order)
    assert b.shape == (inside.numel(), grid + order)
    assert (b >= 0).all()
    torch.testing.assert_close(b.sum(-1), torch.ones_like(inside), rtol=0, atol=1e-14)
    assert ((b > 0).sum(-1) <= order + 1).all()
    # Outside the extended grid [lo - k h, hi + k h) every basis function is exactly 0.
    outside = torch.tensor(
        [lo - order * h - 1e-9, lo - order * h - 1.0, hi + order * h, hi + order * h + 3.0],
        dtype=F64,
    )
    assert torch.equal(splines.basis(outside, t, order), torch.zeros(4, grid + order, dtype=F64))
    # Just inside the extension: some function is on, but the sum is below 1 (fewer terms).
    if order > 0:
        edge = splines.basis(torch.tensor([lo - order * h + 0.5 * h], dtype=F64), t, order)
        assert 0 < edge.sum() < 1


def test_order_zero_is_refused_by_the_config() -> None:
    """Half-open intervals, as pykan's: at order 0 nothing covers hi, and a piecewise constant
    spline gives its inputs no gradient; a config asks for order 1 or more."""
    t = splines.knots(-1.0, 1.0, 5, 0, F64)
    assert splines.basis(torch.tensor([1.0], dtype=F64), t, 0).sum().item() == 0.0
    with pytest.raises(ConfigError, match="order"):
        load_config(None, ["variants=[{kind: fixed}, {kind: kan, order: 0}]"])


def test_order_one_basis_is_hat_functions() -> None:
    """On [0, 1] with 4 intervals (h = 1/4, exact in binary) B_c of order 1 is the hat centred
    on c/4 with half-width 1/4."""
    t = splines.knots(0.0, 1.0, 4, 1, F64)
    torch.testing.assert_close(
        t, torch.tensor([-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25], dtype=F64), rtol=0, atol=0
    )
    x = torch.tensor([0.0, 0.1, 0.25, 0.6, 0.875, 1.0], dtype=F64)
    expected = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.6, 0.4, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.6, 0.4, 0.0],
            [0.0, 0.0, 0.0, 0.5, 0.5],
            [0.0, 0.0, 0.0, 0.0, 1.0],
        ],
        dtype=F64,
    )
    torch.testing.assert_close(splines.basis(x, t, 1), expected, rtol=0, atol=1e-15)
    hats = (1 - (x.unsqueeze(-1) - torch.arange(5, dtype=F64) / 4).abs() * 4).clamp(min=0)
    torch.testing.assert_close(splines.basis(x, t, 1), hats, rtol=0, atol=1e-15)


def test_quadratic_and_cubic_bases_take_the_cardinal_b_spline_values() -> None:
    """Uniform B-splines: order 2 is (1/2, 1/2) at a knot and (1/8, 3/4, 1/8) mid-interval;
    order 3 is (1/6, 2/3, 1/6) at a knot."""
    t2 = splines.knots(0.0, 1.0, 4, 2, F64)
    b = splines.basis(torch.tensor([0.5, 0.625], dtype=F64), t2, 2)
    torch.testing.assert_close(b[0][b[0] > 0], torch.tensor([0.5, 0.5], dtype=F64))
    torch.testing.assert_close(b[1][b[1] > 0], torch.tensor([0.125, 0.75, 0.125], dtype=F64))
    t3 = splines.knots(0.0, 1.0, 4, 3, F64)
    b3 = splines.basis(torch.tensor([0.5], dtype=F64), t3, 3)[0]
    torch.testing.assert_close(b3[b3 > 1e-15], torch.tensor([1 / 6, 2 / 3, 1 / 6], dtype=F64))


def test_fit_recovers_the_coefficients_of_a_spline_and_reproduces_cubics() -> None:
    gen = torch.Generator().manual_seed(3)
    t = splines.knots(-1.0, 1.0, 7, 3, F64)
    coef = torch.randn(2, 10, generator=gen, dtype=F64)  # [out, G + k]
    x = torch.linspace(-1.0, 1.0, 40, dtype=F64)
    values = splines.basis(x, t, 3) @ coef.T  # [P, out]
    torch.testing.assert_close(splines.fit(x, values, t, 3), coef, rtol=1e-10, atol=1e-12)
    # A cubic is a spline of order 3 on any grid: fitted on [lo, hi], it is exact there.
    cubic = 0.3 - 1.2 * x + 0.7 * x**2 + 0.9 * x**3
    fitted = splines.fit(x, cubic.unsqueeze(-1), t, 3)
    dense = torch.linspace(-1.0, 1.0, 333, dtype=F64)
    value = splines.basis(dense, t, 3) @ fitted[0]
    torch.testing.assert_close(
        value, 0.3 - 1.2 * dense + 0.7 * dense**2 + 0.9 * dense**3, rtol=0, atol=1e-12
    )


# --- KAN: batched == per model ---------------------------------------------------------------


def test_kan_forward_gradients_and_state_equal_the_per_model_kan_nets() -> None:
    v = variant(kind="kan", grid=5, order=3)
    seeds = [0, 1, 2]
    ens = KanEnsemble(KAN_LAYERS, "silu", [member(v, s) for s in seeds], dtype=F64)
    x = box(40, -1.3, 1.3)  # partly outside the grid, inside its extension
    y = torch.sin(x[:, :1] + 2 * x[:, 1:])
    out = ens(x)
    assert out.shape == (3, 40, 1)
    # Shared [N, in] inputs and per-model [M, N, in] copies give the same outputs.
    torch.testing.assert_close(ens(x.expand(3, -1, -1)), out, rtol=0, atol=0)
    # The summed per-model losses give each model its own gradient.
    sum(nn.functional.mse_loss(out[i], y) for i in range(3)).backward()  # type: ignore[union-attr]
    for i, seed in enumerate(seeds):
        net = kan_net(KAN_LAYERS, v, seed)
        # The ensemble's initial state is the seed's kan_init, exactly.
        for name, value in net.state_dict().items():
            assert torch.equal(ens.state_dict_of(i)[name], value), name
        mine = net(x)
        torch.testing.assert_close(out[i].detach(), mine.detach(), rtol=1e-12, atol=1e-14)
        nn.functional.mse_loss(mine, y).backward()  # type: ignore[no-untyped-call]
        grads = dict(net.named_parameters())
        compared = set()
        for name, p in ens.named_parameters():
            assert p.grad is not None, name
            reference = grads[net_name(name)].grad
            assert reference is not None and reference.abs().sum() > 0, name
            torch.testing.assert_close(p.grad[i], reference, rtol=1e-10, atol=1e-14)
            compared.add(net_name(name))
        assert compared == set(grads)


def test_kan_state_dict_of_loads_strictly_and_reproduces_every_model() -> None:
    v = variant(kind="kan", grid=4, order=2, grid_range=[-0.5, 1.5], activation="tanh")
    ens = KanEnsemble(KAN_LAYERS, "tanh", [member(v, 5), member(v, 9)], dtype=F64)
    x = box(30, -1.0, 2.0)
    # Per-model grids too: after a grid update every model has knots of its own.
    ens.update_grid(x)
    with torch.no_grad():
        out = ens(x)
        for i in range(2):
            state = ens.state_dict_of(i)
            assert all(t.device.type == "cpu" for t in state.values())
            net = KanNet(KAN_LAYERS, v, F64)
            net.load_state_dict(state, strict=True)
            assert set(state) == set(net.state_dict())
            torch.testing.assert_close(net(x), out[i], rtol=1e-12, atol=1e-14)
    first, second = ens.state_dict_of(0), ens.state_dict_of(1)
    assert not torch.equal(first["kan.1.knots"], second["kan.1.knots"])


def test_kan_training_equals_per_model_adam() -> None:
    """200 Adam steps of two KANs (one with its own learning rate) through the engine equal
    each KanNet trained alone with torch.optim.Adam on its MSE."""
    x, y = kan_data()
    v = variant(kind="kan", name="kan", grid=5, order=3)
    fast = variant(kind="kan", name="kan-fast", grid=5, order=3, lr=2e-2)
    members = [member(v, 0), member(fast, 1)]
    ens = KanEnsemble(KAN_LAYERS, "silu", members, dtype=F64)
    model = Groups([ens])
    result = train(model, x, y, x, y, TrainConfig(steps=STEPS, log_every=1, lr=1e-2))
    engine = torch.stack([r.train_loss for r in result.records])
    assert engine.shape == (STEPS + 1, 2)
    for i, (m, lr) in enumerate(zip(members, (1e-2, 2e-2))):
        net = kan_net(KAN_LAYERS, m.spec, m.seed)
        losses = torch.tensor(adam_reference(net, x, y, STEPS, lr), dtype=F64)
        assert losses[-1] < 0.5 * losses[0]  # it learned something
        torch.testing.assert_close(engine[:, i], losses, rtol=1e-9, atol=1e-13)
        state = ens.state_dict_of(i)
        for name, value in net.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-8, atol=1e-11)


def test_kan_parameter_count() -> None:
    v = variant(kind="kan", grid=5, order=3)
    ens = KanEnsemble(KAN_LAYERS, "silu", [member(v, 0), member(v, 1)], dtype=F64)
    per_edge = 5 + 3 + 2  # G + k coefficients, w_b, w_s
    expected = sum(i * o * per_edge for i, o in zip(KAN_LAYERS[:-1], KAN_LAYERS[1:]))
    assert expected == 230
    assert ens.parameter_count() == expected
    assert sum(p.numel() for p in kan_net(KAN_LAYERS, v, 0).parameters()) == expected
    assert ens.decayed() == list(ens.parameters())  # a weight decay reaches the splines


# --- Spline activations and the fixed steepness: batched == per model -----------------------


@pytest.mark.parametrize("per", ["neuron", "layer"])
def test_spline_activation_training_equals_per_model_adam(per: str) -> None:
    """200 Adam steps of two seeds (pre-activations beyond the grid range) equal a PlainMLP
    with SplineUnit activations trained alone; at step 0 the network is the fixed one, bit for
    bit, batched and per model."""
    x, y = mlp_data()
    v = variant(kind="spline", per=per, grid=6, order=3, grid_range=[-1.5, 1.5])
    members = [member(v, 0), member(v, 1)]
    ens = Ensemble(MLP_LAYERS, "spline", "tanh", members, dtype=F64)
    fixed_members = [member(variant(kind="fixed"), s) for s in (0, 1)]
    fixed = Ensemble(MLP_LAYERS, "fixed", "tanh", fixed_members, dtype=F64)
    with torch.no_grad():
        z = torch.baddbmm(ens.biases[0], x.expand(2, -1, -1), ens.weights[0])
        assert z.abs().max() > 1.5  # some first-layer pre-activations lie beyond the grid
        assert torch.equal(ens(x), fixed(x))
        for i in range(2):
            net = PlainMLP(MLP_LAYERS, "spline", "tanh", v, dtype=F64)
            net.load_init(init_weights(MLP_LAYERS, i))
            plain = PlainMLP(MLP_LAYERS, "fixed", "tanh", None, dtype=F64)
            plain.load_init(init_weights(MLP_LAYERS, i))
            assert torch.equal(net(x), plain(x))
    model = Groups([ens])
    result = train(model, x, y, x, y, TrainConfig(steps=STEPS, log_every=1, lr=5e-3))
    engine = torch.stack([r.train_loss for r in result.records])
    equals_the_reference(ens, members, engine, x, y)
    for i in range(len(members)):
        # The splines moved off zero.
        assert ens.state_dict_of(i)["activations.0.coef"].abs().max() > 1e-3


def equals_the_reference(
    ens: Ensemble, members: list[ModelSpec], engine: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> list[PlainMLP]:
    """Each member's logged losses ``engine[:, i]`` and final state equal ``reference_run``'s
    (PlainMLP + torch.optim.Adam, STEPS steps at 5e-3); the reference networks."""
    nets = []
    for i, m in enumerate(members):
        losses, net = reference_run(m, MLP_LAYERS, "tanh", x, y, STEPS, 5e-3)
        torch.testing.assert_close(
            engine[:, i], torch.tensor(losses, dtype=F64), rtol=1e-9, atol=1e-13
        )
        state = ens.state_dict_of(i)
        assert state.keys() == net.state_dict().keys()
        for name, value in net.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-8, atol=1e-11)
        nets.append(net)
    return nets


@pytest.mark.parametrize("per", ["neuron", "layer"])
def test_spline_parameter_count(per: str) -> None:
    v = variant(kind="spline", per=per, grid=5, order=3)
    ens = Ensemble(MLP_LAYERS, "spline", "tanh", [member(v, 0)], dtype=F64)
    dense = sum(i * o + o for i, o in zip(MLP_LAYERS[:-1], MLP_LAYERS[1:]))
    widths = MLP_LAYERS[1:-1]
    splines_count = (sum(widths) if per == "neuron" else len(widths)) * (5 + 3)
    assert ens.family.count() == splines_count
    assert ens.parameter_count() == dense + splines_count
    net = PlainMLP(MLP_LAYERS, "spline", "tanh", v, dtype=F64)
    assert sum(p.numel() for p in net.parameters()) == dense + splines_count


def test_steep_fixed_training_equals_per_model_adam() -> None:
    """fixed with slope s (two values in one group) == PlainMLP with Fixed(base, s), 200 Adam
    steps; s = 1 is the plain fixed network bit for bit."""
    x, y = mlp_data()
    steep, shallow = variant(kind="fixed", name="s2", slope=2.5), variant(kind="fixed", slope=0.5)
    members = [member(steep, 0), member(shallow, 1)]
    ens = Ensemble(MLP_LAYERS, "fixed", "tanh", members, dtype=F64)
    assert [s.structure for s in (steep, shallow)] == [(True,), (True,)]
    result = train(Groups([ens]), x, y, x, y, TrainConfig(steps=STEPS, log_every=1, lr=5e-3))
    engine = torch.stack([r.train_loss for r in result.records])
    assert not torch.equal(engine[0, 0], engine[0, 1])
    for m, net in zip(members, equals_the_reference(ens, members, engine, x, y)):
        assert net.activation(0).slope == m.spec.slope  # the reference really is steep
    one = variant(kind="fixed", name="one", slope=1.0)
    with torch.no_grad():
        plain = Ensemble(MLP_LAYERS, "fixed", "tanh", [member(variant(kind="fixed"), 0)], dtype=F64)
        unit = Ensemble(MLP_LAYERS, "fixed", "tanh", [member(one, 0)], dtype=F64)
        assert torch.equal(unit(x), plain(x))


# --- PDE derivatives -------------------------------------------------------------------------

WANTED = [(0,), (1,), (0, 0), (0, 1), (1, 1), (0, 0, 1)]


def test_kan_pde_derivatives_equal_per_model_autograd() -> None:
    """u, u_x, u_t, u_xx, u_xt, u_tt and u_xxt of every KAN (reverse mode: forward mode refuses
    the kind) equal nested torch.autograd.grad of its own KanNet; every model's grid updated
    first, so that each has knots of its own."""
    model = kan_groups([2, 5, 4, 1], [0, 1], grid=5, order=3)
    ens = model.ensembles()[0]
    assert isinstance(ens, KanEnsemble)
    ens.update_grid(box(200, -1.5, 1.5, seed=4))
    points = torch.cat([box(40, -1.0, 1.0, 1, 1), box(40, 0.0, 1.0, 1, 2)], dim=1)
    reason = unsupported(model, WANTED[:-1])
    assert reason is not None and "kan" in reason
    found = model_derivatives(model, points, model.size, WANTED, create_graph=False)
    for i in range(model.size):
        net = KanNet([2, 5, 4, 1], model.members[i].spec, F64)
        net.load_state_dict(model.state_dict_of(i))
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
            assert value.abs().max() > 1e-6, index  # not a vacuous comparison
            torch.testing.assert_close(found[index][i], value.detach(), rtol=1e-10, atol=1e-12)


def test_kan_pinn_loss_and_gradients_equal_the_hand_written_loss_of_each_model() -> None:
    """Burgers' PINN loss of a KAN ensemble (reverse mode) and its parameter gradients equal
    those of each KanNet's loss written out by hand."""
    nu = 0.01 / math.pi
    pde = {
        "inputs": {"x": [-1, 1], "t": [0, 1]},
        "operator": "u_t + u*u_x - nu*u_xx",
        "params": {"nu": nu},
        "reference": "burgers",
        "collocation": {"points": 48, "sampling": "lhs", "seed": 3},
        "conditions": [
            {"on": "t == 0", "value": "-sin(pi*x)", "points": 12},
            {"on": "x == -1 or x == 1", "value": "0", "points": 8, "weight": 2.0},
        ],
        "weights": {"residual": 0.5},
    }
    problem = build_problem(parse_pde(pde))
    model = kan_groups([2, 4, 1], [3, 4], grid=4, order=3)
    loss = PinnLoss(problem, F64)
    assert loss.use_forward_mode(model) is not None and not loss.forward_mode
    result = loss(model)
    result.total.sum().backward()  # type: ignore[no-untyped-call]
    ens = model.ensembles()[0]
    for i in range(2):
        net = KanNet([2, 4, 1], model.members[i].spec, F64)
        net.load_state_dict(model.state_dict_of(i))
        coords = problem.collocation.clone().requires_grad_(True)
        u = net(coords)[:, 0]
        (g,) = torch.autograd.grad(u.sum(), coords, create_graph=True)
        (gx,) = torch.autograd.grad(g[:, 0].sum(), coords, create_graph=True)
        residual = (g[:, 1] + u * g[:, 0] - nu * gx[:, 0]).square().mean()
        cond1, cond2 = (
            (net(c.points)[:, 0] - c.values).square().mean() for c in problem.conditions
        )
        total = 0.5 * residual + cond1 + 2.0 * cond2
        torch.testing.assert_close(result.total[i], total.detach(), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(result.terms["residual"][i], residual.detach())
        total.backward()
        grads = dict(net.named_parameters())
        for name, p in ens.named_parameters():
            reference = grads[net_name(name)].grad
            assert p.grad is not None and reference is not None
            torch.testing.assert_close(p.grad[i], reference, rtol=1e-10, atol=1e-14)


def test_spline_kind_refuses_forward_mode_and_steep_fixed_uses_it() -> None:
    """The steepness s is folded into the weights, which forward mode follows: its derivatives
    equal reverse mode's; the spline activation has no closed-form jet."""
    points = torch.cat([box(30, -1.0, 1.0, 1, 1), box(30, 0.0, 1.0, 1, 2)], dim=1)
    layers = [2, 8, 8, 1]
    spline = variant(kind="spline", grid=5, order=3)
    spline_model = Groups([Ensemble(layers, "spline", "tanh", [member(spline, 0)], dtype=F64)])
    assert "spline" in (unsupported(spline_model, [(0,)]) or "")
    steep = [variant(kind="fixed", name="s3", slope=3.0), variant(kind="fixed", slope=0.7)]
    model = Groups([Ensemble(layers, "fixed", "tanh", [member(v, 0) for v in steep], dtype=F64)])
    wanted = [(0,), (1,), (0, 0), (0, 1), (1, 1)]
    assert unsupported(model, wanted) is None
    reverse = model_derivatives(model, points, model.size, wanted, create_graph=False)
    forward = taylor_derivatives(model, points, 20, wanted)
    torch.testing.assert_close(forward[()], reverse[()], rtol=1e-12, atol=1e-13)
    for index in wanted:
        torch.testing.assert_close(forward[index], reverse[index][:, :20], rtol=1e-10, atol=1e-12)
    # And reverse mode is the per-model network's: PlainMLP with Fixed(tanh, s).
    for i, v in enumerate(steep):
        net = PlainMLP(layers, "fixed", "tanh", v, dtype=F64).load_init(init_weights(layers, 0))
        coords = points.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(coords)[:, 0].sum(), coords)
        torch.testing.assert_close(reverse[(0,)][i], g[:, 0], rtol=1e-11, atol=1e-13)


# --- Grid update -----------------------------------------------------------------------------


def reference_update_grid(net: KanNet, x: torch.Tensor, sequential: bool) -> None:
    """pykan's update_grid_from_samples written per model, per input and per edge with
    ``torch.linalg.lstsq``. ``sequential``: layer l's samples are computed after layers < l
    were updated (pykan's ``MultKAN.update_grid_from_samples`` runs the model again before each
    layer); otherwise every layer's samples are the inputs before any update."""
    with torch.no_grad():
        stale, h = [], x
        for layer in net.kan:
            stale.append(h)
            h = layer(h)
        h = x
        for index, layer in enumerate(net.kan):
            assert isinstance(layer, KanLayer)
            inputs = h if sequential else stale[index]
            k = layer.order
            grid = layer.knots.shape[-1] - 1 - 2 * k
            for i in range(inputs.shape[1]):
                xs = torch.sort(inputs[:, i]).values
                n = xs.numel()
                adaptive = xs[[int(n / grid * j) for j in range(grid)] + [n - 1]]
                steps = torch.arange(grid + 1, dtype=F64)
                uniform = adaptive[0] + (adaptive[-1] - adaptive[0]) / grid * steps
                points = GRID_EPS * uniform + (1 - GRID_EPS) * adaptive
                spacing = (points[-1] - points[0]) / grid
                new = torch.cat(
                    [
                        points[0] - spacing * torch.arange(k, 0, -1, dtype=F64),
                        points,
                        points[-1] + spacing * torch.arange(1, k + 1, dtype=F64),
                    ]
                )
                values = splines.basis(xs, layer.knots[i], k) @ layer.coef[i].T  # [n, out]
                solution = torch.linalg.lstsq(splines.basis(xs, new, k), values).solution
                layer.coef[i] = solution.T
                layer.knots[i] = new
            h = layer(h)


def grid_ensemble(seeds: list[int], **fields: Any) -> tuple[KanEnsemble, Any]:
    v = variant(kind="kan", **fields)
    return KanEnsemble(KAN_LAYERS, v.activation, [member(v, s) for s in seeds], dtype=F64), v


def test_update_grid_equals_the_per_edge_least_squares_refit() -> None:
    """Batched: every model's grids and coefficients as the per-edge reference computes them,
    layer after layer from the inputs of the layers before it as updated (pykan's order)."""
    ens, v = grid_ensemble([0, 1, 2])
    x = box(256, -1.5, 1.5, seed=6)
    nets = []
    for i in range(3):
        net = KanNet(KAN_LAYERS, v, F64)
        net.load_state_dict(ens.state_dict_of(i))
        reference_update_grid(net, x, sequential=True)
        nets.append(net)
    ens.update_grid(x)
    for i, net in enumerate(nets):
        state = ens.state_dict_of(i)
        for name, value in net.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-9, atol=1e-12)


def test_update_grid_follows_pykan_layer_by_layer() -> None:
    ens, v = grid_ensemble([0])
    x = box(256, -1.5, 1.5, seed=6)
    net = KanNet(KAN_LAYERS, v, F64)
    net.load_state_dict(ens.state_dict_of(0))
    reference_update_grid(net, x, sequential=True)
    ens.update_grid(x)
    state = ens.state_dict_of(0)
    for name, value in net.state_dict().items():
        torch.testing.assert_close(state[name], value, rtol=1e-9, atol=1e-12)


def test_update_grid_keeps_splines_its_new_grid_represents_exactly() -> None:
    """Every edge's spline set to a cubic on a wide grid [-4, 4]: a cubic is a spline of order
    3 on any grid, so the refit on the samples' range reproduces it and the network's outputs
    at the samples are unchanged to rounding."""
    ens, _ = grid_ensemble([0, 1], grid_range=[-4.0, 4.0])
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for k in range(len(KAN_LAYERS) - 1):
            coef = ens.coef[k]  # [M, in, out, G + k]
            dense = torch.linspace(-4.0, 4.0, 60, dtype=F64)
            powers = dense.unsqueeze(-1) ** torch.arange(4, dtype=F64)  # [P, 4]
            scale = 0.3 / 4 ** torch.arange(4, dtype=F64)  # |each term| <= 0.3 on [-4, 4]
            poly = torch.randn(*coef.shape[:3], 4, generator=gen, dtype=F64) * scale
            values = torch.einsum("pd,miod->mipo", powers, poly)  # [M, in, P, out]
            t = ens.knots(k)  # [M, in, T]
            coef.copy_(splines.fit(dense.expand(*t.shape[:2], -1), values, t, 3))
        x = box(300, -1.5, 1.5, seed=8)  # beyond [-1, 1], inside [-4, 4]
        inputs = ens.layer_inputs(x)
        assert all(h.abs().max() < 4 for h in inputs)  # every sample where the cubic holds
        before = ens(x)
        ens.update_grid(x)
        after = ens(x)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-11 * before.abs().max().item())
    # Layer 0's grid now spans exactly each input's samples.
    points = splines.grid_points(ens.knots(0), 3)  # [M, in, G + 1]
    torch.testing.assert_close(points[..., 0], x.amin(0).expand(2, -1), rtol=0, atol=1e-15)
    torch.testing.assert_close(points[..., -1], x.amax(0).expand(2, -1), rtol=0, atol=1e-15)


@pytest.mark.parametrize("grid", [20, 40])
def test_update_grid_keeps_a_smooth_kan_to_the_accuracy_of_its_new_grid(grid: int) -> None:
    """Every edge's spline set to 0.3 sin(w x + a) on a fine grid over [-4, 4]: after the update
    (samples in [-1.5, 1.5]^2) the outputs move by what a cubic spline of the new grid misses
    of a smooth function, O(h^4). Measured (3 seeds): at most 3.2e-5 of the largest |output|
    with 20 intervals, 7e-6 with 40; bounds 1e-3 and 1e-4 leave a margin of 14 or more."""
    ens, _ = grid_ensemble([0, 1, 2], grid=grid, grid_range=[-4.0, 4.0])
    gen = torch.Generator().manual_seed(2)
    dense = torch.linspace(-4.0, 4.0, 200, dtype=F64)
    with torch.no_grad():
        for k in range(len(KAN_LAYERS) - 1):
            coef, t = ens.coef[k], ens.knots(k)
            phase = torch.randn(*coef.shape[:3], 1, generator=gen, dtype=F64)
            rate = 1 + torch.rand(*coef.shape[:3], 1, generator=gen, dtype=F64)
            values = 0.3 * torch.sin(rate * dense + phase).transpose(-1, -2)  # [M, in, P, out]
            coef.copy_(splines.fit(dense.expand(*t.shape[:2], -1), values, t, 3))
        x = box(256, -1.5, 1.5, seed=6)
        assert all(h.abs().max() < 4 for h in ens.layer_inputs(x))
        before = ens(x)
        ens.update_grid(x)
        change = (ens(x) - before).abs().amax(dim=(1, 2)) / before.abs().amax(dim=(1, 2))
    assert (change < (1e-3 if grid == 20 else 1e-4)).all(), change


def test_update_grid_on_a_fresh_kan_keeps_it_close_and_gives_every_model_its_grids() -> None:
    """A fresh KAN (splines fitted to noise) on samples in [-1.5, 1.5]^2: its splines are as
    rough as its grid allows, and beyond [-1, 1] they are the boundary pieces of the old
    extension, so the refit on a grid of the same size cannot keep them exactly (that it is
    the least-squares one, test_update_grid_equals_the_per_edge_least_squares_refit checks).
    The change is measured against the splines' part of the output (w_s = 0 removes it):
    at most 7.4% of it over 3 seeds (256 samples), bound 15%; keeping the old coefficients on
    the new grid instead moves the outputs by 120% to 360% of it, bound 50%."""
    ens, _ = grid_ensemble([0, 1, 2])
    x = box(256, -1.5, 1.5, seed=6)
    with torch.no_grad():
        before = ens(x)
        bare = KanEnsemble(KAN_LAYERS, "silu", ens.members, dtype=F64)
        for p in bare.scale_sp:
            p.zero_()
        spline_part = (before - bare(x)).abs().amax(dim=(1, 2))
        old_knots = [ens.knots(k).clone() for k in range(3)]
        ens.update_grid(x)
        change = (ens(x) - before).abs().amax(dim=(1, 2))
        assert (change < 0.15 * spline_part).all(), change / spline_part
        wrong = KanEnsemble(KAN_LAYERS, "silu", ens.members, dtype=F64)
        for k in range(3):
            wrong.knots(k).copy_(ens.knots(k))
        assert ((wrong(x) - before).abs().amax(dim=(1, 2)) > 0.5 * spline_part).all()
    # Layer 0: every model's grid spans the samples (the same samples: the same grid).
    t0 = ens.knots(0)
    points = splines.grid_points(t0, 3)
    torch.testing.assert_close(points[..., 0], x.amin(0).expand(3, -1), rtol=0, atol=1e-15)
    torch.testing.assert_close(points[..., -1], x.amax(0).expand(3, -1), rtol=0, atol=1e-15)
    assert torch.equal(t0[0], t0[1]) and torch.equal(t0[0], t0[2])
    assert (t0.diff(dim=-1) > 0).all()
    spacing = t0.diff(dim=-1)  # the extensions: uniform, at the grid's mean spacing
    torch.testing.assert_close(spacing[..., :3], spacing[..., -3:], rtol=1e-12, atol=0)
    # Layers 1 and 2: each model's own inputs, so each its own grid, and not the old one.
    for k in (1, 2):
        t = ens.knots(k)
        assert not torch.allclose(t, old_knots[k])
        for i in range(3):
            for j in range(i + 1, 3):
                assert not torch.allclose(t[i], t[j]), (k, i, j)


# --- Checkpoints -----------------------------------------------------------------------------


def test_run_checkpoints_load_into_per_model_modules(tmp_path: Path) -> None:
    """A tiny run (kan, spline per layer, steep fixed) written as ``aaf run`` writes its
    checkpoints: every seed loads into a KanNet or PlainMLP that reproduces the ensemble."""
    cfg = load_config(
        None,
        [
            "seeds=2",
            "train.steps=20",
            "train.log_every=5",
            "dtype=float64",
            "model.layers=[1, 4, 3, 1]",
            "variants=[{kind: kan, name: kan, grid: 4}, {kind: spline, name: spline, per: layer,"
            " grid: 4, order: 2}, {kind: fixed, name: steep, slope: 2.5}]",
        ],
    )
    exp = run_experiment(cfg)
    write_checkpoints(tmp_path, cfg, exp)
    x = torch.linspace(-1.5, 1.5, 31, dtype=F64).unsqueeze(-1)
    with torch.no_grad():
        out = exp.ensemble(x)  # type: ignore[operator]
        for i, m in enumerate(exp.members):
            net = load_checkpoint(tmp_path / "checkpoints" / f"{m.variant}.pt", m.seed)
            assert isinstance(net, KanNet if m.kind == "kan" else PlainMLP)
            assert all(p.dtype == F64 for p in net.parameters())
            torch.testing.assert_close(net(x), out[i], rtol=1e-12, atol=1e-14)


def write_kan_checkpoint(path: Path, ens: KanEnsemble, v: Any, activation: str) -> None:
    """A checkpoint payload as ``pipeline.write_checkpoints`` writes one."""
    payload = {
        "format_version": 1,
        "variant": v.name,
        "kind": v.kind,
        "config": v.model_dump(mode="json"),
        "layers": ens.layers,
        "activation": activation,
        "seeds": [m.seed for m in ens.members],
        "state_dicts": [ens.state_dict_of(i) for i in range(ens.size)],
    }
    torch.save(payload, path)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_a_kan_checkpoint_after_a_grid_update_loads_with_its_grids(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    v = variant(kind="kan", name="k", grid=6, order=3, activation="gelu")
    ens = KanEnsemble(KAN_LAYERS, "gelu", [member(v, 7), member(v, 8)], dtype=dtype)
    x = box(64, -2.0, 2.0).to(dtype)
    ens.update_grid(x)
    write_kan_checkpoint(tmp_path / "k.pt", ens, v, "gelu")
    with torch.no_grad():
        out = ens(x)
        for i, seed in enumerate((7, 8)):
            net = load_checkpoint(tmp_path / "k.pt", seed)
            assert isinstance(net, KanNet)
            assert all(t.dtype == dtype for t in net.state_dict().values())
            torch.testing.assert_close(net(x), out[i])


def test_a_kan_checkpoint_with_the_model_activation_loads(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "seeds=1",
            "train.steps=3",
            "dtype=float64",
            "model.layers=[1, 3, 1]",
            "model.activation=tanh",
            "variants=[{kind: kan, name: kan, activation: null}]",
        ],
    )
    exp = run_experiment(cfg)
    assert exp.ensemble.locate(0)[0].base == "tanh"
    write_checkpoints(tmp_path, cfg, exp)
    net = load_checkpoint(tmp_path / "checkpoints" / "kan.pt", 0)
    x = torch.linspace(-1, 1, 5, dtype=F64).unsqueeze(-1)
    with torch.no_grad():
        torch.testing.assert_close(net(x), exp.ensemble(x)[0])  # type: ignore[operator]
