from __future__ import annotations

from typing import Any

import pytest
import torch

from aaf_cli.config import FixedVariant, GlobalVariant, TrainConfig
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP, init_weights
from aaf_cli.train import mse, train

from .reference import reference_run

F64 = torch.float64
FIXED = FixedVariant(kind="fixed")
ADAPTIVE = GlobalVariant(kind="global", name="adaptive", n=10.0)
FAST = GlobalVariant(kind="global", name="fast", n=5.0, a0=0.2, lr=3e-3)


def data(dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-3, 3, 120, dtype=dtype).unsqueeze(-1)
    return x, torch.sin(3 * x) + 0.3 * x


def specs(variant: Any, seeds: list[int]) -> list[ModelSpec]:
    return [ModelSpec(variant.name, s, variant.kind, variant, variant.lr) for s in seeds]


def fixed_and_global(
    layers: list[int], activation: str, seeds: list[int], dtype: torch.dtype = F64
) -> Groups:
    return Groups(
        [
            Ensemble(layers, "fixed", activation, specs(FIXED, seeds), dtype=dtype),
            Ensemble(
                layers,
                "global",
                activation,
                specs(ADAPTIVE, seeds) + specs(FAST, [2]),
                dtype=dtype,
            ),
        ]
    )


@pytest.mark.parametrize(
    ("layers", "activation", "optimizer", "momentum"),
    [
        ([1, 20, 1], "elu", "adam", 0.0),
        ([1, 12, 12, 1], "tanh", "adam", 0.0),
        ([1, 16, 1], "sin", "sgd", 0.9),
    ],
)
def test_ensemble_reproduces_per_model_training(
    layers: list[int], activation: str, optimizer: str, momentum: float
) -> None:
    """200 steps of the batched engine equal 200 steps of nn.Linear + torch.optim, per model."""
    x, y = data()
    model = fixed_and_global(layers, activation, [0, 1])
    lr = 1e-3
    cfg = TrainConfig(steps=200, log_every=1, lr=lr, optimizer=optimizer, momentum=momentum)
    result = train(model, x, y, x, y, cfg)
    engine_losses = torch.stack([r.train_loss for r in result.records])  # [steps+1, M]
    for i, spec in enumerate(model.members):
        losses, net = reference_run(spec, layers, activation, x, y, 200, lr, optimizer, momentum)
        # In float64 the trajectories agree to rounding over the whole run.
        torch.testing.assert_close(
            engine_losses[:10, i], torch.tensor(losses[:10], dtype=F64), rtol=1e-12, atol=0
        )
        torch.testing.assert_close(
            engine_losses[:, i], torch.tensor(losses, dtype=F64), rtol=1e-9, atol=1e-14
        )
        group, j = model.locate(i)
        state = group.state_dict_of(j)
        assert state.keys() == net.state_dict().keys()
        for key, value in net.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-9, atol=1e-12)


def test_float32_short_horizon_matches_too() -> None:
    x, y = data(torch.float32)
    model = fixed_and_global([1, 20, 1], "elu", [0], torch.float32)
    result = train(model, x, y, x, y, TrainConfig(steps=30, log_every=1, lr=1e-3))
    for i, spec in enumerate(model.members):
        losses, _ = reference_run(spec, [1, 20, 1], "elu", x, y, 30, 1e-3)
        got = torch.tensor([r.train_loss[i].item() for r in result.records], dtype=F64)
        torch.testing.assert_close(got, torch.tensor(losses, dtype=F64), rtol=1e-5, atol=0)


def test_variants_of_a_seed_start_identical_across_groups() -> None:
    x, y = data()
    model = fixed_and_global([1, 20, 1], "elu", [0, 1, 2])
    fixed, adaptive = model.ensembles()
    for wf, wa in zip([*fixed.weights, *fixed.biases], [*adaptive.weights, *adaptive.biases]):
        assert torch.equal(wf, wa[:3])  # seed s of fixed == seed s of adaptive
        assert not torch.equal(wf[0], wf[1])  # different seeds differ
    a_before = adaptive.family.a[0].detach().clone()
    result = train(model, x, y, x, y, TrainConfig(steps=50, log_every=10))
    step0 = result.records[0]
    assert step0.step == 0
    assert torch.equal(step0.train_loss[:3], step0.train_loss[3:6])
    assert torch.equal(step0.test_loss[:3], step0.test_loss[3:6])
    assert (adaptive.family.a[0] != a_before).all()
    assert list(fixed.parameters()) == [*fixed.weights, *fixed.biases]  # nothing else to train
    slopes = torch.stack([r.params["n*a"] for r in result.records])
    assert slopes[:, :3].isnan().all()  # fixed models have no n*a
    assert (slopes[0, 3:] == 1.0).all()


def test_fixed_member_equals_the_plain_network() -> None:
    x, _ = data()
    ens = Ensemble([1, 10, 10, 1], "fixed", "tanh", specs(FIXED, [4, 5]), dtype=F64)
    net = PlainMLP([1, 10, 10, 1], "fixed", "tanh").to(F64)
    net.load_init(init_weights([1, 10, 10, 1], 4))
    ref = torch.nn.Sequential(
        net.linears[0], torch.nn.Tanh(), net.linears[1], torch.nn.Tanh(), net.linears[2]
    )
    with torch.no_grad():
        torch.testing.assert_close(ens(x)[0], net(x), rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(ens(x)[0], ref(x), rtol=1e-14, atol=1e-14)


def test_per_model_loss_and_gradient_are_independent() -> None:
    """The summed loss gives each model exactly the gradient of its own mean loss."""
    x, y = data()
    ens = Ensemble([1, 6, 1], "global", "tanh", specs(ADAPTIVE, [0, 1, 2]), dtype=F64)
    mse(ens(x), y).sum().backward()
    grads_all = [p.grad.clone() for p in ens.parameters()]  # type: ignore[union-attr]
    for i in range(ens.size):
        ens.zero_grad()
        mse(ens(x), y)[i].backward()
        for p, g in zip(ens.parameters(), grads_all):
            torch.testing.assert_close(p.grad[i], g[i])  # type: ignore[index]


def test_threshold_step_is_the_first_step_below_it() -> None:
    x, y = data()
    model = fixed_and_global([1, 20, 1], "elu", [0])
    cfg = TrainConfig(steps=300, log_every=1, lr=1e-2, threshold=0.2)
    result = train(model, x, y, x, y, cfg)
    losses = torch.stack([r.train_loss for r in result.records])
    for i in range(model.size):
        below = (losses[:, i] < 0.2).nonzero()
        expected = int(below[0]) if len(below) else -1
        assert int(result.steps_to_threshold[i]) == expected


def test_an_interrupt_reports_the_step_the_parameters_are_at() -> None:
    """Stopped before step k: k updates were made, and the last record is step k's loss."""
    x, y = data()
    polls = []

    def stop() -> bool:
        polls.append(1)
        return len(polls) > 8  # steps 0..7 run, the 9th poll stops

    model = fixed_and_global([1, 20, 1], "elu", [0])
    result = train(model, x, y, x, y, TrainConfig(steps=100, log_every=5, lr=1e-3), stop=stop)
    assert result.interrupted and result.steps_done == 8
    assert [r.step for r in result.records] == [0, 5, 8]
    for i, spec in enumerate(model.members):
        losses, _ = reference_run(spec, [1, 20, 1], "elu", x, y, 8, 1e-3)
        assert result.records[-1].train_loss[i].item() == pytest.approx(losses[8], rel=1e-12)


def test_an_interrupt_before_the_first_step_still_logs_step_zero() -> None:
    x, y = data()
    model = fixed_and_global([1, 20, 1], "elu", [0])
    result = train(model, x, y, x, y, TrainConfig(steps=100), stop=lambda: True)
    assert result.interrupted and result.steps_done == 0
    assert [r.step for r in result.records] == [0]
