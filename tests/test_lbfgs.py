"""Batched L-BFGS against M independent ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``
runs on plain ``nn.Module``s, in float64, on a regression and a PINN objective.

What "equal" can mean here: the batched evaluation sums in another order than a single model's
(batched matrix products, per-row dot products), so the two differ by rounding from the first
evaluation on. L-BFGS on a network can amplify a rounding-level difference: ``torch.optim.LBFGS``
run twice from starting points 1e-15 apart parts too, on some seeds within 20 iterations (the
layer-wise network with slope recovery, seed 1, of the regression below: 5e-6 after 20
iterations). So each case first measures torch's own sensitivity (its run from a point 1e-15
away) and the batched run must be as close to torch as that, with a margin, and spend the same
number of function evaluations: the same branches of the line search, iteration for iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter

from aaf_cli.config import TrainConfig, Variant
from aaf_cli.lbfgs import LbfgsOptions, StackedLBFGS, backtracking, cubic_minimum, strong_wolfe
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP
from aaf_cli.problems.pde import parse_pde
from aaf_cli.problems.pde.problem import build_problem
from aaf_cli.problems.pde.training import PinnObjective
from aaf_cli.train import eager_evaluation, make_optimizer, mse, train
from tests.test_pde import NU, SMALL_BURGERS, plain_loss

F64 = torch.float64
VARIANTS: dict[str, dict[str, Any]] = {
    "fixed": {"kind": "fixed"},
    "global": {"kind": "global", "n": 10},
    "layer_sr": {"kind": "layer", "n": 10, "slope_recovery": {"weight": 1.0}},
    "rowdy": {"kind": "rowdy", "n": 10, "K": 3},
}


def ensemble(
    keys: list[str], seeds: list[int], layers: list[int], **changes: dict[str, Any]
) -> Groups:
    groups = []
    for key in keys:
        given = {"name": key, **VARIANTS[key], **changes.get(key, {})}
        v = TypeAdapter(Variant).validate_python(given)
        specs = [ModelSpec(v.name, s, v.kind, v, v.lr) for s in seeds]
        groups.append(Ensemble(layers, v.kind, "tanh", specs, dtype=F64))
    return Groups(groups)


def run_torch(
    layers: list[int],
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    objective: Callable[[PlainMLP], torch.Tensor],
    iterations: int,
    nudge: float = 0.0,
    **options: Any,
) -> tuple[dict[str, torch.Tensor], int]:
    """One ``torch.optim.LBFGS(max_iter=iterations, line_search_fn="strong_wolfe")`` call on a
    plain network loaded from ``state`` (its first weight matrix times 1 + ``nudge``): the
    final state and the number of function evaluations."""
    kind = spec.kind
    net = PlainMLP(layers, kind, "tanh", spec.spec, dtype=F64)
    net.load_state_dict(state)
    with torch.no_grad():
        net.linears[0].weight.mul_(1 + nudge)
    opt = torch.optim.LBFGS(
        net.parameters(),
        lr=1.0,
        max_iter=iterations,
        max_eval=options.get("max_eval", 100_000),
        tolerance_grad=options.get("tolerance_grad", 1e-7),
        tolerance_change=options.get("tolerance_change", 1e-9),
        history_size=options.get("history_size", 100),
        line_search_fn="strong_wolfe",
    )
    calls = [0]

    def closure() -> torch.Tensor:
        calls[0] += 1
        opt.zero_grad()
        value = objective(net)
        value.backward()  # type: ignore[no-untyped-call]
        return value

    opt.step(closure)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, calls[0]


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-3, 3, 200, dtype=F64)[:, None]
    return x, torch.sin(2 * x) + 0.3 * x


def regression_loss(
    x: torch.Tensor, y: torch.Tensor, member: ModelSpec
) -> Callable[[PlainMLP], torch.Tensor]:
    """The MSE, plus the variant's slope-recovery term: what the engine minimises."""
    recovery = getattr(member.spec, "slope_recovery", None)

    def loss(net: PlainMLP) -> torch.Tensor:
        value = torch.nn.functional.mse_loss(net(x), y)
        return value if recovery is None else value + recovery.weight * net.recovery()

    return loss


def batched_trace(
    model: Groups,
    losses: Callable[[], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]],
    iterations: int,
    **options: Any,
) -> tuple[list[list[float]], StackedLBFGS]:
    """``iterations`` steps of the engine's L-BFGS over ``model``, eagerly: each model's loss at
    every point it asked for (its start first), in order, as torch's closure sees them."""
    cfg = TrainConfig(optimizer="lbfgs", steps=iterations, max_evals=100_000, **options)
    opt = make_optimizer(model, cfg)
    assert isinstance(opt, StackedLBFGS)
    inner = eager_evaluation(losses, opt)
    seen: list[list[float]] = [[] for _ in range(model.size)]

    def evaluate(values: torch.Tensor, active: torch.Tensor) -> Any:
        asked = (opt.padded(values) != opt.x).any(1) | (opt.values is None)
        out = inner(values, active)
        for m in torch.nonzero(asked).squeeze(1).tolist():
            seen[m].append(float(out[1][m]))
        return out

    active = torch.ones(model.size, dtype=torch.bool)
    opt.start(evaluate, active)
    for _ in range(iterations):
        opt.step(evaluate, active, iterations)
    return seen, opt


def assert_same_search(
    mine: list[float], theirs: list[float], name: str, rtol: float = 1e-6
) -> None:
    """The same number of evaluations, each at the same loss (the same trial points)."""
    assert len(mine) == len(theirs), f"{name}: {len(mine)} evaluations against {len(theirs)}"
    for k, (a, b) in enumerate(zip(mine, theirs)):
        assert math.isclose(a, b, rel_tol=rtol), f"{name}: evaluation {k}: {a} against {b}"


def torch_trace(
    layers: list[int],
    member: ModelSpec,
    state: dict[str, torch.Tensor],
    objective: Callable[[PlainMLP], torch.Tensor],
    iterations: int,
    nudge: float = 0.0,
) -> tuple[list[float], dict[str, torch.Tensor]]:
    """torch.optim.LBFGS's closure values, in order, and the final state."""
    seen: list[float] = []

    def recorded(net: PlainMLP) -> torch.Tensor:
        value = objective(net)
        seen.append(value.item())
        return value

    final, _ = run_torch(layers, member, state, recorded, iterations, nudge)
    return seen, final


def test_batched_lbfgs_equals_independent_torch_lbfgs_on_a_regression() -> None:
    """fixed, GAAF (n=10), L-LAAF (n=10) with slope recovery and Rowdy, 60 iterations,
    float64: every model asks for as many evaluations as torch's, at the same losses (to
    1e-6: rounding grows along the way, from 1e-16 at the start), and ends at the same
    parameters. (L-LAAF with slope recovery is torch's own most sensitive case: on most seeds
    and widths its run parts from a 1e-15 neighbour's by 1e-2 within 60 iterations; these two
    do not, which the test checks first.)"""
    layers, iterations = [1, 16, 16, 1], 60
    model = ensemble(list(VARIANTS), [0], layers)
    starts = [model.state_dict_of(i) for i in range(model.size)]
    x, y = regression_data()

    def losses() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        data = mse(model(x), y)
        penalty = model.penalty()
        return data, data if penalty is None else data + penalty, {}

    seen, opt = batched_trace(model, losses, iterations)
    for i, member in enumerate(model.members):
        objective = regression_loss(x, y, member)
        theirs, want = torch_trace(layers, member, starts[i], objective, iterations)
        _, near = torch_trace(layers, member, starts[i], objective, iterations, nudge=1e-15)
        assert distance(want, near) < 1e-6, f"{member.variant}: torch's own run is chaotic"
        assert_same_search(seen[i], theirs, member.variant)
        assert opt.evals[i] == len(theirs)
        assert distance(model.state_dict_of(i), want) < 1e-5, member.variant
        assert opt.loss[i] < 0.2 * theirs[0]  # it trained
    # No model waits for another: a round evaluates every model that has iterations left, so
    # the rounds are the slowest model's evaluations after its start (in lockstep, each
    # iteration would take as many rounds as its slowest search: 96 here, against 78).
    assert opt.rounds == max(opt.evals) - 1


def test_batched_lbfgs_equals_independent_torch_lbfgs_on_a_pinn() -> None:
    """The same on Burgers' PINN loss (64 residual points, 24 condition points; the loss written
    out by hand for each plain network), 50 iterations, float64. Slope recovery at weight 0.1:
    at weight 1 torch's own run of this L-LAAF parts from a 1e-15 neighbour's by 1e-4 to 1e-1
    within 50 iterations, on every seed tried."""
    layers, iterations = [2, 8, 8, 1], 50
    problem = build_problem(parse_pde(SMALL_BURGERS))
    recovery = {"slope_recovery": {"weight": 0.1}}
    model = ensemble(list(VARIANTS), [3], layers, layer_sr=recovery)
    starts = [model.state_dict_of(i) for i in range(model.size)]
    objective = PinnObjective(problem, model, F64, torch.device("cpu"))

    def losses() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        data, loss, logged = objective.loss(model)
        penalty = model.penalty()
        return data, loss if penalty is None else loss + penalty, logged

    seen, opt = batched_trace(model, losses, iterations)
    for i, member in enumerate(model.members):
        recovery = getattr(member.spec, "slope_recovery", None)

        def pinn(net: PlainMLP, recovery: Any = recovery) -> torch.Tensor:
            total, _ = plain_loss(net, problem, NU)
            return total if recovery is None else total + recovery.weight * net.recovery()

        theirs, want = torch_trace(layers, member, starts[i], pinn, iterations)
        _, near = torch_trace(layers, member, starts[i], pinn, iterations, nudge=1e-15)
        assert distance(want, near) < 1e-6, f"{member.variant}: torch's own run is chaotic"
        assert_same_search(seen[i], theirs, member.variant)
        assert distance(model.state_dict_of(i), want) < 1e-5, member.variant
        assert opt.loss[i] < 0.9 * theirs[0]  # it trained


def test_a_model_that_converges_stops_there_while_the_others_go_on() -> None:
    """With tolerance_change 1e-5, two of four models meet torch's loss-change test early
    (iterations 58 and 73 of 80): from there their loss, evaluation count and parameters stay
    as they are, where torch's own run stops too, while the other two keep improving."""
    layers, iterations = [1, 16, 16, 1], 80
    model = ensemble(["fixed", "global"], [0, 1], layers)
    starts = [model.state_dict_of(i) for i in range(model.size)]
    x, y = regression_data()
    cfg = TrainConfig(
        optimizer="lbfgs", steps=iterations, log_every=1, max_evals=100_000, tolerance_change=1e-5
    )
    result = train(model, x, y, x, y, cfg)
    assert result.extra["lbfgs_stopped"] == "2 by loss change below tolerance_change"
    assert result.stopped_early == [None, "change", None, "change"]
    losses = torch.stack([r.train_loss for r in result.records])
    evals = torch.stack([r.evals for r in result.records if r.evals is not None])
    moved = [
        max([k for k in range(1, iterations + 1) if losses[k, i] != losses[k - 1, i]], default=0)
        for i in range(model.size)
    ]
    assert moved == [iterations, 58, iterations, 73]
    for i in (1, 3):
        assert (losses[moved[i] :, i] == losses[moved[i], i]).all()
        assert (evals[moved[i] + 1 :, i] == evals[moved[i] + 1, i]).all()
        member = model.members[i]
        objective = regression_loss(x, y, member)
        want, calls = run_torch(
            layers, member, starts[i], objective, iterations, tolerance_change=1e-5
        )
        assert calls == int(evals[-1, i])
        assert distance(model.state_dict_of(i), want) < 1e-6
    for i in (0, 2):
        assert losses[-1, i] < losses[75, i] < losses[58, i]


def test_what_a_step_hands_on_is_that_iteration_while_models_run_ahead() -> None:
    """Models whose line searches end early run up to 16 iterations ahead of the step logged;
    what each logged step shows is still that step's: the record of step k of a 30-step run
    equals the last record of a k-step run from the same start (loss, evaluations, test
    loss: measured on the parameters of that step)."""
    layers = [1, 16, 16, 1]
    x, y = regression_data()

    def run(steps: int) -> tuple[Groups, Any]:
        model = ensemble(["fixed", "global", "rowdy"], [0, 1], layers)
        cfg = TrainConfig(optimizer="lbfgs", steps=steps, log_every=1, max_evals=100_000)
        return model, train(model, x, y, x, y, cfg)

    _, long = run(30)
    assert len({int(e) for e in long.records[7].evals}) > 1  # the models differ in pace
    for k in (1, 7, 19):
        model, short = run(k)
        mine, theirs = long.records[k], short.records[-1]
        assert torch.equal(mine.train_loss, theirs.train_loss), k
        assert torch.equal(mine.test_loss, theirs.test_loss), k
        assert torch.equal(mine.evals, theirs.evals), k
    model, _ = run(19)
    again, _ = run(30)
    assert not torch.equal(
        model.state_dict_of(0)["linears.0.weight"], again.state_dict_of(0)["linears.0.weight"]
    )


def test_the_cubic_step_equals_torchs_on_random_brackets() -> None:
    from torch.optim.lbfgs import _cubic_interpolate

    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        x1, f1, g1, x2, f2, g2 = (torch.randn(6, generator=gen, dtype=F64) * 3).tolist()
        bounds = None if x1 > 0 else (min(x1, x2), max(x1, x2) + 1.0)
        # As torch's line search calls it: steps and losses floats, slopes 0-d tensors.
        want = _cubic_interpolate(
            x1, f1, torch.tensor(g1, dtype=F64), x2, f2, torch.tensor(g2, dtype=F64), bounds
        )
        got = cubic_minimum(x1, f1, g1, x2, f2, g2, bounds)
        assert math.isclose(got, float(want), rel_tol=4e-16, abs_tol=1e-300)
    # Beyond the finite region (an infinite trial loss): the middle of the interval.
    assert cubic_minimum(0.0, 1.0, -1.0, 2.0, math.inf, math.nan) == 1.0


@pytest.mark.parametrize("start", [1e-3, 1.0, 40.0])
def test_the_strong_wolfe_coroutine_equals_torchs_line_search(start: float) -> None:
    """On f(x) = sum((x - c)^4) + x.x along the steepest descent: the same trial steps (to
    rounding), the same accepted step and loss, the same count, whether the first trial is
    short, about right, or far too long (bracketing, zoom)."""
    from torch.optim.lbfgs import _strong_wolfe

    c = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    x0 = torch.tensor([0.3, 0.1, -0.4], dtype=F64)

    def f_and_g(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = x.clone().requires_grad_(True)
        value = ((x - c) ** 4).sum() + x.dot(x)
        (grad,) = torch.autograd.grad(value, x)
        return value.item(), grad

    f0, g0 = f_and_g(x0)
    d = -g0
    gtd = float(g0.dot(d))
    trials: list[float] = []

    def obj_func(x: torch.Tensor, t: float, d: torch.Tensor) -> tuple[float, torch.Tensor]:
        trials.append(float(t))
        return f_and_g(x + t * d)

    f_want, _, t_want, n_want = _strong_wolfe(
        obj_func, x0, start, d, f0, g0, torch.tensor(gtd, dtype=F64)
    )
    search = strong_wolfe(start, f0, gtd, float(d.abs().max()), max_ls=25)
    asked: list[float] = []
    t = next(search)
    try:
        while True:
            asked.append(t)
            f_t, g_t = f_and_g(x0 + t * d)
            t = search.send((f_t, float(g_t.dot(d)), len(asked) - 1))
    except StopIteration as end:
        f_got, _, t_got, n_got = end.value
    # torch mixes 0-d tensors into this arithmetic (its divisions may round by one ulp more).
    assert len(asked) == len(trials) and n_got == n_want
    for a, b in zip([*asked, t_got, f_got], [*trials, float(t_want), f_want]):
        assert math.isclose(a, b, rel_tol=1e-13)
    assert len(asked) > 1 or start == 1e-3


def test_backtracking_halves_until_armijo_holds_and_else_stays() -> None:
    search = backtracking(1.0, f=1.0, gtd=-1.0, max_ls=10)
    assert next(search) == 1.0
    assert search.send((2.0, 0.0, 0)) == 0.5  # no decrease: halve
    with pytest.raises(StopIteration) as end:
        search.send((0.9, 0.0, 1))  # 0.9 <= 1 - 1e-4 * 0.5: accepted
    assert end.value.value == (0.9, 1, 0.5, 2)
    search = backtracking(1.0, f=1.0, gtd=-1.0, max_ls=2)
    next(search)
    search.send((math.nan, 0.0, 0))
    with pytest.raises(StopIteration) as end:
        search.send((1.5, 0.0, 1))
    assert end.value.value == (1.0, -1, 0.0, 2)  # nothing acceptable: the model stays


def test_a_pair_without_curvature_is_not_stored_and_each_model_keeps_its_own_history() -> None:
    """torch.optim.LBFGS stores a pair (s, y) only when y.s > 1e-10. With s = [-0.5, 0.25, 0]
    (d times t) for both models: model 0's gradient did not change (y.s = 0) and model 1's
    curvature is negative (y.s = -0.75): neither is stored, and the direction is the steepest
    descent. Then model 1's y.s = 0.75 is stored (ro = 1/y.s, scale y.s/y.y) and its direction
    is the two-loop recursion's, while model 0 keeps an empty history."""
    weight = torch.nn.Parameter(torch.zeros(2, 3, dtype=F64))
    opt = StackedLBFGS([weight], [torch.ones(2, dtype=F64)], [0], 2, LbfgsOptions())
    both = torch.tensor([True, True])
    later = torch.tensor([False, False])

    def direction(g0: list[float], g1: list[float]) -> None:
        opt.prev_g = torch.tensor([[1.0, 0.0, 0.0]] * 2, dtype=F64)
        opt.d = torch.tensor([[-1.0, 0.5, 0.0]] * 2, dtype=F64)
        opt.t = [0.5, 0.5]
        opt.g = torch.tensor([g0, g1], dtype=F64)
        opt._direction(both, later)

    direction([1.0, 0.0, 0.0], [3.0, 1.0, 0.0])
    assert opt.count.tolist() == [0, 0]
    assert torch.equal(opt.d, -opt.g)
    direction([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])  # model 1: y = [-1, 1, 0], y.s = 0.75
    assert opt.count.tolist() == [0, 1]
    s, y = opt.s_hist[1, 0], opt.y_hist[1, 0]
    assert torch.equal(s, torch.tensor([-0.5, 0.25, 0.0], dtype=F64))
    assert math.isclose(float(opt.ro[1, 0]), 1 / 0.75)
    assert math.isclose(float(opt.h_diag[1]), 0.75 / 2.0)
    g = opt.g[1]
    alpha = float(s.dot(-g)) / 0.75
    r = (-g - alpha * y) * (0.75 / 2.0)
    r = r + (alpha - float(y.dot(r)) / 0.75) * s
    torch.testing.assert_close(opt.d[1], r, rtol=1e-15, atol=0)
    assert torch.equal(opt.d[0], torch.tensor([-1.0, 0.0, 0.0], dtype=F64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_lbfgs_on_cuda_equals_the_cpu_in_float64() -> None:
    """The regression case of the torch comparison on CUDA: the same evaluations per model and
    the same parameters as on the CPU, to rounding (cuBLAS sums in another order)."""
    layers, iterations = [1, 16, 16, 1], 40
    x, y = regression_data()
    runs = []
    for device in ("cpu", "cuda"):
        model = ensemble(list(VARIANTS), [0], layers).to(device)
        cfg = TrainConfig(optimizer="lbfgs", steps=iterations, log_every=10, max_evals=100_000)
        result = train(model, x.to(device), y.to(device), x.to(device), y.to(device), cfg)
        runs.append((result, [model.state_dict_of(i) for i in range(model.size)]))
    (cpu, cpu_states), (cuda, cuda_states) = runs
    assert torch.equal(cpu.records[-1].evals, cuda.records[-1].evals)  # type: ignore[arg-type]
    for a, b in zip(cpu_states, cuda_states):
        assert distance(a, b) < 1e-6


def test_a_zoom_down_to_a_point_ends_the_search() -> None:
    """With tolerance_change 0, a bracket that shrinks to one point ends the line search
    (torch's next trial would be NaN), instead of dividing by its zero width."""
    assert cubic_minimum(0.5, 1.0, -1.0, 0.5, 1.0, -1.0) == 0.5
    # A loss whose slope keeps the curvature condition from holding: f(t) = |t - 0.5|.
    search = strong_wolfe(1.0, f=0.5, gtd=-1.0, d_norm=1.0, max_ls=10_000, tolerance_change=0.0)
    t = next(search)
    asked = 0
    with pytest.raises(StopIteration) as end:
        while True:
            asked += 1
            t = search.send((abs(t - 0.5), 1.0 if t > 0.5 else -1.0, asked - 1))
    f_found, _, t_found, evals = end.value.value
    assert evals == asked < 200 and f_found <= 0.5 and 0.0 <= t_found <= 1.0


def test_a_verdict_says_when_lbfgs_stopped_one_variants_models_more_often() -> None:
    """Models stopped early by L-BFGS's tests trained for fewer iterations: where one variant
    has more of them than its baseline, the verdict says so, with the reason and the key that
    lets every model run; where both have as many, it says nothing."""
    from aaf_cli.pipeline import unequal_iterations

    stops: dict[str, list[str | None]] = {
        "fixed": [None, None, None],
        "gaaf": ["change", None, "change"],
        "rowdy": [None, "evals", None],
        "even": ["gradient", None, None],
    }
    text = unequal_iterations(stops, "gaaf", "fixed")
    assert text == (
        "L-BFGS stopped 2 of 3 gaaf models and 0 of 3 fixed models before their last "
        "iteration (loss change below tolerance_change): the two did not train for the same "
        "iterations (train.tolerance_change: 0 lets every model run them)"
    )
    assert "(a larger train.max_evals lets" in unequal_iterations(stops, "rowdy", "fixed")
    assert unequal_iterations(stops, "even", "rowdy") == ""
    # Already at 0, a key is no way out: the warning stays, without the advice.
    assert unequal_iterations(stops, "gaaf", "fixed", (1e-7, 0.0)).endswith(
        "the two did not train for the same iterations"
    )
