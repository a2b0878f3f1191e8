from __future__ import annotations

import pytest
import torch

from aaf_cli.config import TrainConfig
from aaf_cli.models import Ensemble, ModelSpec, PlainMLP, init_weights
from aaf_cli.train import mse, train

from .reference import reference_run

F64 = torch.float64


def data(dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-3, 3, 120, dtype=dtype).unsqueeze(-1)
    return x, torch.sin(3 * x) + 0.3 * x


def members(seeds: list[int]) -> list[ModelSpec]:
    return [ModelSpec("fixed", s, 1.0, 1.0, False) for s in seeds] + [
        ModelSpec("adaptive", s, 10.0, 0.1, True) for s in seeds
    ]


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
    specs = members([0, 1]) + [ModelSpec("fast", 2, 5.0, 0.2, True, lr=3e-3)]
    lr = 1e-3
    ens = Ensemble(layers, activation, specs, dtype=F64)
    cfg = TrainConfig(steps=200, log_every=1, lr=lr, optimizer=optimizer, momentum=momentum)
    result = train(ens, x, y, x, y, cfg)
    engine_losses = torch.stack([r.train_loss for r in result.records])  # [steps+1, M]
    for i, spec in enumerate(specs):
        losses, net = reference_run(spec, layers, activation, x, y, 200, lr, optimizer, momentum)
        # In float64 the trajectories agree to rounding over the whole run.
        torch.testing.assert_close(
            engine_losses[:10, i], torch.tensor(losses[:10], dtype=F64), rtol=1e-12, atol=0
        )
        torch.testing.assert_close(
            engine_losses[:, i], torch.tensor(losses, dtype=F64), rtol=1e-9, atol=1e-14
        )
        state = ens.state_dict_of(i)
        for key, value in net.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-9, atol=1e-12)


def test_float32_short_horizon_matches_too() -> None:
    x, y = data(torch.float32)
    specs = members([0])
    ens = Ensemble([1, 20, 1], "elu", specs, dtype=torch.float32)
    result = train(ens, x, y, x, y, TrainConfig(steps=30, log_every=1))
    for i, spec in enumerate(specs):
        losses, _ = reference_run(spec, [1, 20, 1], "elu", x, y, 30, 1e-3)
        got = torch.tensor([r.train_loss[i].item() for r in result.records], dtype=F64)
        torch.testing.assert_close(got, torch.tensor(losses, dtype=F64), rtol=1e-5, atol=0)


def test_variants_of_a_seed_start_identical_and_only_adaptive_a_moves() -> None:
    x, y = data()
    ens = Ensemble([1, 20, 1], "elu", members([0, 1, 2]), dtype=F64)
    for w in [*ens.weights, *ens.biases]:
        assert torch.equal(w[:3], w[3:])  # seed s of fixed == seed s of adaptive
        assert not torch.equal(w[0], w[1])  # different seeds differ
    a_before = ens.a.detach().clone()
    result = train(ens, x, y, x, y, TrainConfig(steps=50, log_every=10))
    step0 = result.records[0]
    assert step0.step == 0
    assert torch.equal(step0.train_loss[:3], step0.train_loss[3:])
    assert torch.equal(step0.test_loss[:3], step0.test_loss[3:])
    assert torch.equal(ens.a[:3], a_before[:3])  # fixed: bit-for-bit unchanged
    assert (ens.a[3:] != a_before[3:]).all()
    slopes = torch.stack([r.slope for r in result.records])
    assert (slopes[:, :3] == 1.0).all()


def test_fixed_member_equals_the_plain_network() -> None:
    x, _ = data()
    ens = Ensemble([1, 10, 10, 1], "tanh", members([4]), dtype=F64)
    net = PlainMLP([1, 10, 10, 1], "tanh", trainable=False).to(F64)
    net.load_init(init_weights([1, 10, 10, 1], 4))
    with torch.no_grad():
        torch.testing.assert_close(ens(x)[0], net(x), rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(ens(x)[1], net(x), rtol=1e-14, atol=1e-14)


def test_checkpoint_state_dict_loads_into_plain_mlp() -> None:
    x, y = data()
    ens = Ensemble([1, 8, 1], "elu", members([0]), dtype=F64)
    train(ens, x, y, x, y, TrainConfig(steps=20))
    net = PlainMLP([1, 8, 1], "elu").to(F64)
    net.load_state_dict(ens.state_dict_of(1))
    with torch.no_grad():
        torch.testing.assert_close(net(x), ens(x)[1], rtol=1e-12, atol=1e-12)


def test_per_model_loss_and_gradient_are_independent() -> None:
    """The summed loss gives each model exactly the gradient of its own mean loss."""
    x, y = data()
    ens = Ensemble([1, 6, 1], "tanh", members([0, 1]), dtype=F64)
    mse(ens(x), y).sum().backward()
    grad_all = ens.weights[0].grad.clone()  # type: ignore[union-attr]
    for i in range(ens.size):
        ens.zero_grad()
        mse(ens(x), y)[i].backward()
        torch.testing.assert_close(ens.weights[0].grad[i], grad_all[i])  # type: ignore[index]


def test_threshold_step_is_the_first_step_below_it() -> None:
    x, y = data()
    ens = Ensemble([1, 20, 1], "elu", members([0]), dtype=F64)
    cfg = TrainConfig(steps=300, log_every=1, lr=1e-2, threshold=0.2)
    result = train(ens, x, y, x, y, cfg)
    losses = torch.stack([r.train_loss for r in result.records])
    for i in range(ens.size):
        below = (losses[:, i] < 0.2).nonzero()
        expected = int(below[0]) if len(below) else -1
        assert int(result.steps_to_threshold[i]) == expected
