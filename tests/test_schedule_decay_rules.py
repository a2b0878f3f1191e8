"""The rules of learning-rate schedules and weight decay, as known answers.

``tests/test_schedules.py`` trains the engine against ``torch.optim`` per model; here each rule
the documentation and ``train.lr_factor`` state is checked on its own, against values written out by
hand or against ``torch.optim.lr_scheduler`` on a single parameter:

* update s uses ``lr x factor(s)``: warmup s / W from 0, then with t = s - W, T = steps - W:
  cosine f + (1 - f)(1 + cos(pi t / T)) / 2 (f after the last update, not at it), exponential
  gamma^t, step gamma^(t // step_size) with gamma 0.1 by default;
* the factor scales each model's own rate (``train.lr`` or its variant's ``lr``); a row with rate
  0 stays frozen, bit for bit, whatever the schedule and the decay;
* weight decay: AdamW's decoupled w <- w (1 - lr_t d) before the Adam update, SGD's L2 term d w
  in the gradient; on the linear layers' weights and biases only, unless
  ``decay_activation_params`` (then also the slopes, Rowdy's and the rational unit's
  coefficients, PReLU's and Swish's parameters); a variant's ``weight_decay`` replaces
  ``train.weight_decay`` for that variant alone (0 included); the PDE coefficients of an inverse
  problem are never decayed.

The hand-written optimiser below steps a second copy of the ensemble (same seeds, so the same
initial weights) with the gradients of that copy: every model's update is computed from the
formulas above, in float64.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter
from torch.optim import lr_scheduler

from aaf_cli.config import TrainConfig, Variant
from aaf_cli.models import Ensemble, Groups, ModelSpec
from aaf_cli.problems.pde import parse_pde
from aaf_cli.problems.pde.training import PinnObjective, pde_dataset
from aaf_cli.train import lr_factor, mse, train

F64 = torch.float64
LAYERS = [1, 5, 5, 1]
ACTIVATION = "tanh"
ADAPTIVE_KINDS = ["global", "layer", "neuron", "rowdy", "prelu", "swish", "rational"]
BETAS = (0.9, 0.999)
EPS = 1e-8


def variant(kind: str, **settings: Any) -> Any:
    return TypeAdapter(Variant).validate_python({"kind": kind, **settings})


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-2, 2, 40, dtype=F64).unsqueeze(-1)
    return x, torch.sin(2 * x) + 0.2 * x


# --- lr_factor: the schedules' values --------------------------------------------------------


def factors(steps: int, **settings: Any) -> list[float]:
    cfg = TrainConfig.model_validate({"steps": steps, **settings})
    return [lr_factor(cfg, s) for s in range(steps)]


def test_warmup_rises_linearly_from_zero_then_hands_over_to_the_schedule() -> None:
    assert factors(10, warmup_steps=4) == [0.0, 0.25, 0.5, 0.75] + [1.0] * 6
    # After the warmup each schedule starts at its own t = 0, i.e. at 1.
    for schedule in (
        {"schedule": "cosine"},
        {"schedule": "exponential", "gamma": 0.5},
        {"schedule": "step", "step_size": 2},
    ):
        f = factors(12, warmup_steps=4, **schedule)
        assert f[:5] == [0.0, 0.25, 0.5, 0.75, 1.0], schedule


def test_cosine_schedule_known_values_with_floor_and_warmup() -> None:
    """T = steps - W = 24: t = 0 gives 1, t = T/2 gives f + (1 - f)/2, and the last update
    (t = T - 1) is still above the floor f, which would come after it."""
    f = factors(30, schedule="cosine", warmup_steps=6, min_lr_factor=0.2)
    assert f[6] == 1.0
    assert f[18] == pytest.approx(0.6, rel=1e-15)
    assert f[29] == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi * 23 / 24)) / 2, rel=1e-15)
    assert f[29] > 0.2 + 1e-3
    assert all(a > b for a, b in zip(f[6:], f[7:]))  # decreasing after the warmup
    plain = factors(10, schedule="cosine")  # no warmup, floor 0
    assert plain[0] == 1.0 and plain[5] == pytest.approx(0.5, rel=1e-15)
    assert plain[9] == pytest.approx((1 + math.cos(math.pi * 9 / 10)) / 2, rel=1e-15)


def test_exponential_schedule_counts_its_steps_from_the_end_of_the_warmup() -> None:
    f = factors(12, schedule="exponential", gamma=0.9, warmup_steps=5)
    assert f[:5] == [0.0, 0.2, 0.4, 0.6, 0.8]
    for t in range(7):
        assert f[5 + t] == pytest.approx(0.9**t, rel=1e-15), t
    assert factors(4, schedule="exponential", gamma=0.5) == [1.0, 0.5, 0.25, 0.125]


def test_step_schedule_decays_by_gamma_every_step_size_updates_after_the_warmup() -> None:
    """Default gamma 0.1; the first decay comes step_size updates after the warmup."""
    f = factors(15, schedule="step", step_size=4, warmup_steps=3)
    assert f[3:7] == [1.0] * 4
    assert f[7:11] == [pytest.approx(0.1, rel=1e-15)] * 4
    assert f[11:15] == [pytest.approx(0.01, rel=1e-15)] * 4
    g = factors(9, schedule="step", step_size=3, gamma=0.5)
    assert g == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


TORCH_CASES: dict[str, tuple[dict[str, Any], Any]] = {
    # aaf's settings, and the same schedule built from torch.optim.lr_scheduler (the defaults
    # written out, not read from aaf).
    "constant_warmup": (
        {"warmup_steps": 7},
        lambda opt: lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0),
    ),
    "cosine": (
        {"schedule": "cosine"},
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=0.0),
    ),
    "cosine_warmup_floor": (
        {"schedule": "cosine", "warmup_steps": 8, "min_lr_factor": 0.25},
        lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=32, eta_min=0.25 * 0.3),
    ),
    "exponential_warmup": (
        {"schedule": "exponential", "gamma": 0.93, "warmup_steps": 6},
        lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.93),
    ),
    "step_warmup_default_gamma": (
        {"schedule": "step", "step_size": 7, "warmup_steps": 3},
        lambda opt: lr_scheduler.StepLR(opt, step_size=7, gamma=0.1),
    ),
    "step": (
        {"schedule": "step", "step_size": 5, "gamma": 0.6},
        lambda opt: lr_scheduler.StepLR(opt, step_size=5, gamma=0.6),
    ),
}


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_rates_equal_torch_schedulers_chained_after_a_linear_warmup(case: str) -> None:
    """40 updates at peak 0.3: ``0.3 * lr_factor`` equals the rate torch's schedulers give a
    single-parameter optimiser (LambdaLR warmup, SequentialLR at the milestone W)."""
    settings, build = TORCH_CASES[case]
    cfg = TrainConfig.model_validate({"steps": 40, "lr": 0.3, **settings})
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    sched: lr_scheduler.LRScheduler = build(opt)
    warmup = cfg.warmup_steps
    if warmup:
        ramp = lr_scheduler.LambdaLR(opt, lambda s: s / warmup)
        sched = lr_scheduler.SequentialLR(opt, [ramp, build(opt)], milestones=[warmup])
    theirs = []
    for _ in range(cfg.steps):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [0.3 * lr_factor(cfg, s) for s in range(cfg.steps)]
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-17)


# --- A hand-written optimiser over a copy of the ensemble ----------------------------------------


def row_decays(model: Groups, cfg: TrainConfig) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Every parameter (group by group, as named), with each of its rows' rate and decay, from
    the rules alone."""
    out = []
    for g, offset in zip(model.ensembles(), model.offsets):
        members = model.members[offset : offset + g.size]
        rate = torch.tensor([cfg.lr if m.lr is None else m.lr for m in members], dtype=F64)
        own = [m.spec.weight_decay for m in members]
        wd = torch.tensor([cfg.weight_decay if d is None else d for d in own], dtype=F64)
        for name, p in g.named_parameters():
            dense = name.startswith(("weights.", "biases."))
            decay = wd if dense or cfg.decay_activation_params else torch.zeros_like(wd)
            shape = (-1,) + (1,) * (p.dim() - 1)
            out.append((name, rate.reshape(shape), decay.reshape(shape)))
    return out


def hand_train(
    model: Groups, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, factor: list[float]
) -> None:
    """``len(factor)`` updates of ``model`` in place: AdamW (decoupled decay, bias-corrected
    moments) or SGD with momentum and the L2 term, each row at its own rate times the factor."""
    params = [p for g in model.ensembles() for _, p in g.named_parameters()]
    rules = row_decays(model, cfg)
    beta1, beta2 = cfg.betas
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    buffers: list[torch.Tensor | None] = [None] * len(params)
    for step, f in enumerate(factor, start=1):
        for p in params:
            p.grad = None
        mse(model(x), y).sum().backward()
        with torch.no_grad():
            for k, (p, (_, rate, decay)) in enumerate(zip(params, rules)):
                g, lr = p.grad, rate * f
                assert g is not None
                if cfg.optimizer == "adam":
                    p.mul_(1 - lr * decay)
                    m[k] = beta1 * m[k] + (1 - beta1) * g
                    v[k] = beta2 * v[k] + (1 - beta2) * g * g
                    m_hat = m[k] / (1 - beta1**step)
                    v_hat = v[k] / (1 - beta2**step)
                    p.sub_(lr * m_hat / (v_hat.sqrt() + cfg.eps))
                else:
                    g = g + decay * p
                    previous = buffers[k]
                    buffers[k] = g if previous is None else cfg.momentum * previous + g
                    p.sub_(lr * buffers[k])


def assert_same_parameters(engine: Groups, hand: Groups, rtol: float = 1e-11) -> None:
    for g, h in zip(engine.ensembles(), hand.ensembles()):
        for (name, p), (_, q) in zip(g.named_parameters(), h.named_parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=rtol, atol=1e-14, msg=name)


# --- Weight decay: which parameters, at which value -----------------------------------------------


def decay_model(own: float) -> Groups:
    """A fixed group and one group per adaptive kind, each of three variants: train's decay,
    its own ``own``, and its own 0."""
    groups = []
    for kind in ["fixed", *ADAPTIVE_KINDS]:
        plain = variant(kind, name=kind)
        mine = variant(kind, name=f"{kind}-own", weight_decay=own)
        off = variant(kind, name=f"{kind}-off", weight_decay=0.0)
        specs = [ModelSpec(v.name, s, kind, v, v.lr) for s, v in enumerate((plain, mine, off))]
        groups.append(Ensemble(LAYERS, kind, ACTIVATION, specs, dtype=F64))
    return Groups(groups)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("activations", [False, True], ids=["dense-only", "activations-too"])
@pytest.mark.parametrize("train_decay", [0.0, 0.1], ids=["train-0", "train-0.1"])
def test_weight_decay_hits_exactly_the_parameters_the_rules_name(
    optimizer: str, activations: bool, train_decay: float
) -> None:
    """Three updates of every kind (fixed, GAAF, L-LAAF, N-LAAF, Rowdy, PReLU, Swish, rational),
    each with train's decay, its own 0.3 and its own 0, equal the hand-written AdamW / SGD-L2
    with the decays the rules give: the linear layers always, the activation parameters only
    with ``decay_activation_params``. (Rowdy's sine amplitudes start at 0, so the first update
    alone could not see their decay: hence three.)"""
    cfg = TrainConfig(
        optimizer=optimizer,
        lr=0.02,
        momentum=0.9 if optimizer == "sgd" else 0.0,
        steps=3,
        log_every=1,
        weight_decay=train_decay,
        decay_activation_params=activations,
    )
    x, y = data()
    engine, hand = decay_model(0.3), decay_model(0.3)
    train(engine, x, y, x, y, cfg)
    hand_train(hand, x, y, cfg, [1.0] * cfg.steps)
    assert_same_parameters(engine, hand)
    # Every decayed row is moved by its decay far beyond the tolerance: the same hand-written
    # run without any decay lands elsewhere on each of them.
    undecayed = decay_model(0.0)
    hand_train(undecayed, x, y, cfg.model_copy(update={"weight_decay": 0.0}), [1.0] * 3)
    params = [(p, q) for p, q in zip(hand.parameters(), undecayed.parameters())]
    for (name, _, decay), (p, q) in zip(row_decays(hand, cfg), params):
        rows = decay.reshape(-1) > 0
        if rows.any():
            assert not torch.allclose(p[rows], q[rows], rtol=1e-8, atol=0), name


def one_gaaf() -> Groups:
    spec = variant("global", name="gaaf")
    member = ModelSpec("gaaf", 0, "global", spec)
    return Groups([Ensemble(LAYERS, "global", ACTIVATION, [member], dtype=F64)])


def first_adamw(w: torch.Tensor, g: torch.Tensor, lr: float, decay: float) -> torch.Tensor:
    """AdamW's first step: m1_hat = g, v1_hat = g^2."""
    m_hat = (1 - BETAS[0]) * g / (1 - BETAS[0])
    v_hat = (1 - BETAS[1]) * g * g / (1 - BETAS[1])
    return w * (1 - lr * decay) - lr * m_hat / (v_hat.sqrt() + EPS)


def test_one_adamw_step_by_the_formula() -> None:
    """The first AdamW step of a slope and of a weight, written out: w1 = w0 (1 - lr d)
    - lr m1_hat / (sqrt(v1_hat) + eps) with m1_hat = g, v1_hat = g^2: the weight decays, the
    slope (default) does not, and with ``decay_activation_params`` it does."""
    x, y = data()
    for activations in (False, True):
        cfg = TrainConfig(lr=0.05, steps=1, weight_decay=0.4, decay_activation_params=activations)
        model, twin = one_gaaf(), one_gaaf()
        mse(twin(x), y).sum().backward()
        (group,) = twin.ensembles()
        a0, ga = group.family.a[0].detach().clone(), group.family.a[0].grad
        w0, gw = group.weights[1].detach().clone(), group.weights[1].grad
        assert ga is not None and gw is not None
        train(model, x, y, x, y, cfg)
        (trained,) = model.ensembles()

        torch.testing.assert_close(
            trained.weights[1].detach(), first_adamw(w0, gw, 0.05, 0.4), rtol=1e-13, atol=1e-16
        )
        expected_a = first_adamw(a0, ga, 0.05, 0.4 if activations else 0.0)
        torch.testing.assert_close(trained.family.a[0].detach(), expected_a, rtol=1e-13, atol=0)
        change = (trained.family.a[0].detach() - first_adamw(a0, ga, 0.05, 0.0)).abs().item()
        assert (change > 1e-3) == activations  # lr d a0 = 2e-3 when decayed


# --- Schedules: each model's own rate; a rate-0 row stays frozen --------------------------------

OWN_RATE_CASES = {
    "exponential_warmup": (
        {"schedule": "exponential", "gamma": 0.8, "warmup_steps": 2},
        [0.0, 0.5, 1.0, 0.8, 0.64, 0.512],
    ),
    "cosine_warmup_floor": (
        {"schedule": "cosine", "warmup_steps": 2, "min_lr_factor": 0.5},
        [0.0, 0.5, 1.0, 0.5 + 0.25 * (1 + math.cos(math.pi / 4))]
        + [0.75, 0.5 + 0.25 * (1 + math.cos(3 * math.pi / 4))],
    ),
    "step_warmup": (
        {"schedule": "step", "step_size": 2, "gamma": 0.3, "warmup_steps": 1},
        [0.0, 1.0, 1.0, 0.3, 0.3, 0.09],
    ),
}


def own_rate_model() -> Groups:
    """Models at train.lr, at their variant's own lr (fixed and GAAF: the sceptical control),
    and a row with rate 0, in two groups."""
    fixed = variant("fixed", name="fixed")
    fast = variant("fixed", name="fast", lr=0.05)
    gaaf = variant("global", name="gaaf")
    gaaf_own = variant("global", name="gaaf-own", lr=0.004)
    return Groups(
        [
            Ensemble(
                LAYERS,
                "fixed",
                ACTIVATION,
                [
                    ModelSpec("fixed", 0, "fixed", fixed),
                    ModelSpec("fast", 0, "fixed", fast, fast.lr),
                    ModelSpec("frozen", 1, "fixed", fixed, 0.0),
                ],
                dtype=F64,
            ),
            Ensemble(
                LAYERS,
                "global",
                ACTIVATION,
                [
                    ModelSpec("gaaf", 0, "global", gaaf),
                    ModelSpec("gaaf-own", 0, "global", gaaf_own, gaaf_own.lr),
                ],
                dtype=F64,
            ),
        ]
    )


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("case", list(OWN_RATE_CASES))
def test_schedule_scales_each_models_own_rate_and_leaves_a_rate_0_row_frozen(
    case: str, optimizer: str
) -> None:
    """Six updates with the factors written out by hand: every model equals the hand-written
    optimiser at its own peak (0.01 from train.lr, 0.05 and 0.004 of its variant) times the
    factor, with AdamW / L2 decay on everything; the rate-0 row's parameters do not change by
    a single bit."""
    settings, expected = OWN_RATE_CASES[case]
    cfg = TrainConfig.model_validate(
        {
            "optimizer": optimizer,
            "lr": 0.01,
            "momentum": 0.5 if optimizer == "sgd" else 0.0,
            "steps": 6,
            "log_every": 1,
            "weight_decay": 0.2,
            "decay_activation_params": True,
            **settings,
        }
    )
    assert [lr_factor(cfg, s) for s in range(cfg.steps)] == pytest.approx(expected, rel=1e-15)
    x, y = data()
    engine, hand = own_rate_model(), own_rate_model()
    (fixed_group, _) = engine.ensembles()
    start = [p.detach().clone() for p in fixed_group.parameters()]
    result = train(engine, x, y, x, y, cfg)
    hand_train(hand, x, y, cfg, expected)
    assert_same_parameters(engine, hand)
    after = [p.detach() for p in fixed_group.parameters()]
    assert all(torch.equal(p[2], s[2]) for p, s in zip(after, start))  # rate 0: frozen
    assert all(not torch.equal(p[0], s[0]) for p, s in zip(after, start))
    frozen_loss = torch.stack([r.train_loss[2] for r in result.records])
    assert torch.equal(frozen_loss, frozen_loss[:1].expand_as(frozen_loss))


# --- The coefficients of an inverse problem are never decayed -----------------------------------

INVERSE_BURGERS: dict[str, Any] = {
    "inputs": {"x": [-1, 1], "t": [0, 1]},
    "operator": "u_t + u*u_x - nu*u_xx",
    "params": {"nu": {"init": 0.02, "trainable": True, "lr": 0.03}},
    "conditions": [
        {"on": "t == 0", "value": "-sin(pi*x)", "points": 8},
        {"on": "x == -1 or x == 1", "value": "0", "points": 4},
    ],
    "reference": "burgers",
    "data": {"points": 16},
    "collocation": {"points": 24, "seed": 1},
    "test_points": 16,
}


def test_inverse_problem_coefficients_are_not_decayed_even_with_activation_decay() -> None:
    """Adam with weight_decay 0.5 on everything (activation parameters too): each model's nu
    makes the plain first Adam step at its own rate 0.03, nu1 = nu0 - 0.03 g / (|g| + eps),
    bit for bit the step of a run without decay, while the weights do decay."""
    d = pde_dataset(parse_pde(INVERSE_BURGERS), F64, torch.device("cpu"))
    assert d.problem is not None
    spec = variant("global", name="gaaf")
    nus, weights = [], []
    for decay in (0.5, 0.0):
        model = Groups(
            [
                Ensemble(
                    [2, 6, 6, 1],
                    "global",
                    ACTIVATION,
                    [ModelSpec("gaaf", s, "global", spec) for s in (0, 1)],
                    dtype=F64,
                )
            ]
        )
        cfg = TrainConfig(
            lr=1e-2, steps=1, log_every=1, weight_decay=decay, decay_activation_params=True
        )
        objective = PinnObjective(d.problem, model, F64, torch.device("cpu"))
        assert objective.params is not None
        nu0 = objective.params.values["nu"].detach().clone()
        terms = objective.pinn(model, objective.params)
        (g,) = torch.autograd.grad(terms.total.sum(), objective.params.values["nu"])
        train(model, d.x_train, d.y_train, d.x_test, d.y_test, cfg, objective=objective)
        nu1 = objective.params.values["nu"].detach().clone()
        torch.testing.assert_close(nu1, nu0 - 0.03 * g / (g.abs() + 1e-8), rtol=1e-14, atol=0)
        nus.append(nu1)
        weights.append(model.ensembles()[0].weights[1].detach().clone())
    assert torch.equal(nus[0], nus[1])
    assert not torch.allclose(weights[0], weights[1], rtol=1e-6, atol=0)
