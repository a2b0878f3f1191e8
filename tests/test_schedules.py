"""Learning-rate schedules and weight decay: the batched engine against torch.optim per model.

The reference is a plain ``PlainMLP`` per model trained by ``torch.optim.AdamW`` (or ``SGD`` with
``weight_decay``) and stepped by ``torch.optim.lr_scheduler``: a LambdaLR warmup from 0 chained by
SequentialLR to ConstantLR / CosineAnnealingLR / ExponentialLR / StepLR. The linear layers and
the activation parameters are two param groups, so the activation group's decay can be 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler

from aaf_cli.config import (
    FixedVariant,
    GlobalVariant,
    NeuronVariant,
    PReLUVariant,
    SlopeRecovery,
    TrainConfig,
    load_config,
)
from aaf_cli.errors import ConfigError
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP, init_weights
from aaf_cli.train import StackedAdam, StackedSGD, lr_factor, train, weight_decays

F64 = torch.float64
LAYERS = [1, 10, 10, 1]
ACTIVATION = "tanh"
FIXED = FixedVariant(kind="fixed")
GLOBAL = GlobalVariant(kind="global", name="gaaf", n=10.0)
# Its own peak rate and its own weight decay: the schedule scales 3e-3, not train.lr.
FAST = GlobalVariant(kind="global", name="fast", n=5.0, a0=0.2, lr=3e-3, weight_decay=0.2)
NEURON = NeuronVariant(kind="neuron", name="nlaaf", n=10.0, slope_recovery=SlopeRecovery())
PRELU = PReLUVariant(kind="prelu", name="prelu", weight_decay=0.0)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-3, 3, 100, dtype=F64).unsqueeze(-1)
    return x, torch.sin(3 * x) + 0.3 * x


def members(variant: Any, seeds: list[int]) -> list[ModelSpec]:
    return [ModelSpec(variant.name, s, variant.kind, variant, variant.lr) for s in seeds]


def ensembles() -> Groups:
    """Four groups: fixed (no activation parameters), global (two variants, one with its own lr
    and decay), neuron-wise with slope recovery, PReLU (a variant without decay)."""
    return Groups(
        [
            Ensemble(LAYERS, "fixed", ACTIVATION, members(FIXED, [0, 1]), dtype=F64),
            Ensemble(
                LAYERS, "global", ACTIVATION, members(GLOBAL, [0]) + members(FAST, [1]), dtype=F64
            ),
            Ensemble(LAYERS, "neuron", ACTIVATION, members(NEURON, [2]), dtype=F64),
            Ensemble(LAYERS, "prelu", ACTIVATION, members(PRELU, [0]), dtype=F64),
        ]
    )


def torch_schedule(
    opt: torch.optim.Optimizer, cfg: TrainConfig, lr: float
) -> lr_scheduler.LRScheduler:
    """What aaf's schedule means, in torch.optim.lr_scheduler's terms."""
    horizon = cfg.steps - cfg.warmup_steps
    main: lr_scheduler.LRScheduler
    if cfg.schedule == "cosine":
        floor = (cfg.min_lr_factor or 0.0) * lr
        main = lr_scheduler.CosineAnnealingLR(opt, T_max=horizon, eta_min=floor)
    elif cfg.schedule == "exponential":
        main = lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma or 0.0)
    elif cfg.schedule == "step":
        main = lr_scheduler.StepLR(opt, step_size=cfg.step_size or 0, gamma=cfg.gamma or 0.0)
    else:
        main = lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    if not cfg.warmup_steps:
        return main
    warmup = lr_scheduler.LambdaLR(opt, lambda s: s / cfg.warmup_steps)
    return lr_scheduler.SequentialLR(opt, [warmup, main], milestones=[cfg.warmup_steps])


def reference_run(
    spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig
) -> tuple[list[float], PlainMLP, list[float]]:
    """One model with torch.optim and torch's schedulers: data losses before every update and
    after the last, the trained network, and the rate of every update."""
    base = getattr(spec.spec, "activation", None) or ACTIVATION
    net = PlainMLP(LAYERS, spec.kind, base, spec.spec, dtype=x.dtype)
    net.load_init(init_weights(LAYERS, spec.seed))
    lr = spec.lr or cfg.lr
    wd = cfg.weight_decay if spec.spec.weight_decay is None else spec.spec.weight_decay
    groups: list[dict[str, Any]] = [{"params": list(net.linears.parameters()), "weight_decay": wd}]
    activation = list(net.activations.parameters())
    if activation:
        groups.append(
            {"params": activation, "weight_decay": wd if cfg.decay_activation_params else 0.0}
        )
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        opt = torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps)
    else:
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    sched = torch_schedule(opt, cfg, lr)
    recovery = getattr(spec.spec, "slope_recovery", None)
    losses, rates = [], []
    for _ in range(cfg.steps):
        data = torch.nn.functional.mse_loss(net(x), y)
        losses.append(data.item())
        loss = data if recovery is None else data + recovery.weight * net.recovery()
        opt.zero_grad()
        loss.backward()
        rates.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    with torch.no_grad():
        losses.append(torch.nn.functional.mse_loss(net(x), y).item())
    return losses, net, rates


SCHEDULES = {
    "cosine_warmup_adamw": dict(
        optimizer="adam",
        lr=2e-3,
        schedule="cosine",
        warmup_steps=10,
        min_lr_factor=0.1,
        weight_decay=0.05,
    ),
    "exponential_adamw": dict(
        optimizer="adam", lr=5e-3, schedule="exponential", gamma=0.97, weight_decay=0.01
    ),
    "step_warmup_adam": dict(
        optimizer="adam", lr=5e-3, schedule="step", warmup_steps=5, step_size=20, gamma=0.5
    ),
    "step_sgd_momentum_l2": dict(
        optimizer="sgd",
        lr=2e-2,
        momentum=0.9,
        schedule="step",
        step_size=25,
        gamma=0.3,
        weight_decay=0.02,
    ),
    "cosine_sgd_decay_activations": dict(
        optimizer="sgd",
        lr=3e-2,
        schedule="cosine",
        weight_decay=0.1,
        decay_activation_params=True,
    ),
    "constant_warmup_adamw_decay_activations": dict(
        optimizer="adam",
        lr=3e-3,
        warmup_steps=30,
        weight_decay=0.1,
        decay_activation_params=True,
    ),
}


@pytest.mark.parametrize("case", list(SCHEDULES))
def test_engine_matches_torch_schedulers_and_optimizers_per_model(case: str) -> None:
    """80 float64 steps: losses, rates and final parameters of every model equal torch's.

    Measured: rates within 1.4e-15, losses 1.3e-15, parameters 1.3e-13 (relative)."""
    cfg = TrainConfig.model_validate({**SCHEDULES[case], "steps": 80, "log_every": 1})
    x, y = data()
    model = ensembles()
    result = train(model, x, y, x, y, cfg)
    engine_losses = torch.stack([r.train_loss for r in result.records])  # [steps + 1, M]
    for i, spec in enumerate(model.members):
        losses, net, rates = reference_run(spec, x, y, cfg)
        peak = spec.lr or cfg.lr
        # The rates: aaf's closed form against torch's (partly recursive) schedulers.
        ours = [peak * lr_factor(cfg, s) for s in range(cfg.steps)]
        torch.testing.assert_close(ours, rates, rtol=1e-14, atol=0)
        torch.testing.assert_close(
            engine_losses[:, i], torch.tensor(losses, dtype=F64), rtol=1e-12, atol=0
        )
        group, j = model.locate(i)
        state = group.state_dict_of(j)
        assert state.keys() == net.state_dict().keys()
        for key, value in net.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-11, atol=1e-14)


def test_schedules_change_training_and_default_changes_nothing() -> None:
    """The tests above would pass for a schedule that is ignored by both sides: check that each
    case trains differently from the constant, undecayed run, and that the defaults give
    exactly the same numbers as an explicit constant schedule without decay."""
    x, y = data()
    plain = train(ensembles(), x, y, x, y, TrainConfig(steps=40, lr=5e-3))
    explicit = TrainConfig(steps=40, lr=5e-3, schedule="constant", warmup_steps=0, weight_decay=0.0)
    again = train(ensembles(), x, y, x, y, explicit)
    assert torch.equal(plain.records[-1].train_loss, again.records[-1].train_loss)
    assert all(lr_factor(TrainConfig(steps=40), s) == 1.0 for s in range(40))
    for case in ("cosine_warmup_adamw", "exponential_adamw", "step_warmup_adam"):
        cfg = TrainConfig.model_validate({**SCHEDULES[case], "steps": 40, "lr": 5e-3})
        other = train(ensembles(), x, y, x, y, cfg)
        assert not torch.isclose(
            other.records[-1].train_loss, plain.records[-1].train_loss, rtol=1e-6
        ).any(), case


def test_activation_parameters_are_not_decayed_unless_asked() -> None:
    model = ensembles()
    cfg = TrainConfig(weight_decay=0.05)
    dense = {id(p) for g in model.ensembles() for p in (*g.weights, *g.biases)}
    rows = model.rows(cfg.lr)
    default = weight_decays(model, cfg)
    both = weight_decays(model, cfg.model_copy(update={"decay_activation_params": True}))
    activation_rows = 0
    for (p, _, start), d, d_all in zip(rows, default, both):
        wanted = [0.2 if m.spec is FAST else 0.05 for m in model.members]
        wanted = [0.0 if m.spec is PRELU else w for w, m in zip(wanted, model.members)]
        wanted = wanted[start : start + p.shape[0]]
        if not any(wanted):  # PReLU sets weight_decay 0: nothing to decay
            assert d is None and d_all is None
        else:
            assert d_all is not None and d_all.tolist() == wanted
        if id(p) in dense and any(wanted):
            assert d is not None and d.tolist() == wanted
        elif id(p) not in dense:
            activation_rows += 1
            assert d is None  # slopes, PReLU slopes: never decayed by default
    assert activation_rows == 1 + 2 + 2  # global's a, neuron's a per layer, prelu's per layer
    # No decay anywhere unless asked for: train.weight_decay 0 and only FAST sets its own.
    no_decay = weight_decays(model, TrainConfig())
    assert [d is None for d in no_decay] == [
        not (id(p) in dense and FAST in [m.spec for m in model.members[start : start + len(p)]])
        for p, _, start in rows
    ]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_decay_activation_params_switches_the_slopes_decay(optimizer: str) -> None:
    """Off (the default), the slopes follow torch with an undecayed activation group; on, with
    a decayed one; and the two differ, so the equivalence is no accident of a weak decay."""
    x, y = data()
    spec = members(GLOBAL, [0])[0]
    slopes = {}
    for on in (False, True):
        cfg = TrainConfig(
            optimizer=optimizer, steps=50, lr=1e-2, weight_decay=0.5, decay_activation_params=on
        )
        model = Groups([Ensemble(LAYERS, "global", ACTIVATION, [spec], dtype=F64)])
        train(model, x, y, x, y, cfg)
        _, net, _ = reference_run(spec, x, y, cfg)
        engine_a = model.state_dict_of(0)["activations.0.a"]
        torch.testing.assert_close(
            engine_a, net.state_dict()["activations.0.a"], rtol=1e-10, atol=0
        )
        slopes[on] = engine_a
    assert not torch.allclose(slopes[False], slopes[True], rtol=1e-4)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_frozen_rows_stay_exact_under_schedule_and_decay(optimizer: str) -> None:
    """A diverged row (inf weights) is frozen: no decay, no L2 term, no NaN from inf * 0."""
    p = torch.tensor([[[1.0, -2.0]], [[float("inf"), 3.0]], [[0.5, 0.5]]], dtype=F64)
    p.grad = torch.tensor([[[0.1, 0.2]], [[float("nan"), 1.0]], [[0.3, -0.3]]], dtype=F64)
    rates = torch.tensor([0.1, 0.1, 0.1], dtype=F64)
    decays = [torch.tensor([0.5, 0.5, 0.5], dtype=F64)]
    opt: StackedAdam | StackedSGD
    if optimizer == "adam":
        opt = StackedAdam([p], [rates], [0], decays=decays)
    else:
        opt = StackedSGD([p], [rates], [0], momentum=0.9, decays=decays)
    active = torch.tensor([True, False, True])
    frozen = p[1].clone()
    for factor in (0.0, 0.5, 1.0):
        opt.step(active, factor)
    assert torch.equal(p[1], frozen)
    assert torch.isfinite(p[[0, 2]]).all()
    assert not torch.equal(p[0], torch.tensor([[1.0, -2.0]], dtype=F64))


@pytest.mark.parametrize(
    ("overrides", "key", "needle"),
    [
        (["train.schedule=cosin"], "train.schedule", "'cosine'"),
        (["train.weight_decay=-0.1"], "train.weight_decay", "greater than or equal to 0"),
        (["variants.1.weight_decay=-1"], "variants.1.weight_decay", "greater than or equal"),
        (["train.steps=100", "train.warmup_steps=100"], "train.warmup_steps", "less than"),
        (["train.warmup_steps=-1"], "train.warmup_steps", "greater than or equal to 0"),
        (["train.schedule=exponential"], "train.gamma", "required by schedule exponential"),
        (["train.schedule=step"], "train.step_size", "required by schedule step"),
        (["train.schedule=step", "train.step_size=0"], "train.step_size", "greater than"),
        (["train.gamma=0.9"], "train.gamma", "schedule constant does not use it"),
        (["train.schedule=cosine", "train.gamma=0.9"], "train.gamma", "used by: exponential"),
        (["train.min_lr_factor=0.1"], "train.min_lr_factor", "used by: cosine"),
        (["train.schedule=cosine", "train.min_lr_factor=1.5"], "train.min_lr_factor", "1"),
        (["train.schedule=exponential", "train.gamma=1.5"], "train.gamma", "less than or"),
        (["train.schedule=exponential", "train.gamma=0"], "train.gamma", "greater than 0"),
        (["train.decay_activation_params=maybe"], "train.decay_activation_params", "bool"),
    ],
)
def test_bad_schedule_settings_are_one_line_errors_naming_the_key(
    overrides: list[str], key: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert info.value.key == key
    assert needle in info.value.message
    assert "\n" not in str(info.value)


def test_schedule_defaults_are_resolved_into_the_config() -> None:
    """The resolved config (config.yaml of a run) says which values were used."""
    cfg = load_config(None, ["train.schedule=step", "train.step_size=7"]).train
    assert (cfg.gamma, cfg.step_size, cfg.min_lr_factor) == (None, 7, None)
    assert cfg.effective_schedule() == {"gamma": 0.1, "step_size": 7}
    cfg = load_config(None, ["train.schedule=cosine", "train.warmup_steps=50"]).train
    assert (cfg.min_lr_factor, cfg.gamma, cfg.step_size) == (None, None, None)
    assert cfg.effective_schedule() == {"min_lr_factor": 0.0}
    assert lr_factor(cfg, 0) == 0.0 and lr_factor(cfg, 25) == 0.5 and lr_factor(cfg, 50) == 1.0
    dumped = load_config(None, ["variants.0.weight_decay=0.01"]).model_dump(mode="json")
    assert dumped["variants"][0]["weight_decay"] == 0.01
    assert dumped["train"]["schedule"] == "constant"


def test_a_resolved_config_reloads_with_another_schedule(tmp_path: Path) -> None:
    """config.yaml of a run loads again, and --set can switch its schedule."""
    cfg = load_config(None, ["train.schedule=cosine", "train.steps=40"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    switched = load_config(path, ["train.schedule=constant"]).train
    assert switched.schedule == "constant" and switched.effective_schedule() == {}
    step = load_config(path, ["train.schedule=step", "train.step_size=5"]).train
    assert step.effective_schedule() == {"gamma": 0.1, "step_size": 5}
