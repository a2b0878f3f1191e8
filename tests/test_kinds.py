"""Every adaptive kind: starts where it should, gets gradients, is registered, batched == plain."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter
from torch.func import functional_call

from aaf_cli.activations import ACTIVATIONS, rational_value, slope_recovery
from aaf_cli.config import TrainConfig, Variant, load_config, variant_parameters
from aaf_cli.experiment import build_ensemble
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP, init_weights
from aaf_cli.registry import ACTIVATIONS as NAMES
from aaf_cli.registry import KINDS
from aaf_cli.train import train

from .reference import reference_run

F64 = torch.float64
LAYERS = [1, 6, 5, 1]
VARIANTS: dict[str, dict[str, Any]] = {
    "fixed": {"kind": "fixed"},
    "global": {"kind": "global", "n": 10},
    "layer": {"kind": "layer", "n": 5},
    "neuron": {"kind": "neuron", "n": 10},
    "global_sr": {"kind": "global", "slope_recovery": {"weight": 0.5}},
    "layer_sr": {"kind": "layer", "slope_recovery": {"weight": 1.0}},
    "neuron_sr_code": {"kind": "neuron", "slope_recovery": {"weight": 2.0, "form": "code"}},
    "rowdy": {"kind": "rowdy", "n": 10, "K": 4},
    "rowdy_cos": {"kind": "rowdy", "n": 2, "K": 3, "activation": "cos"},
    "prelu": {"kind": "prelu"},
    "swish": {"kind": "swish", "beta0": 1.5},
    "rational": {"kind": "rational"},
    "rational_3_2": {"kind": "rational", "degrees": [3, 2]},
    "spline": {"kind": "spline"},
    "spline_layer": {"kind": "spline", "per": "layer", "grid": 4, "order": 2},
    "fixed_steep": {"kind": "fixed", "slope": 2.5},
}
STARTS_AT_FIXED = [
    *("global", "layer", "neuron", "global_sr", "layer_sr", "rowdy", "rowdy_cos"),
    *("spline", "spline_layer"),
]
#: Kinds that replace the MLP rather than its activation: tested in test_kan.py.
NOT_AN_ACTIVATION = {"kan"}


def variant(key: str) -> Any:
    return TypeAdapter(Variant).validate_python({"name": key.replace("_", "-"), **VARIANTS[key]})


def spec(key: str, seed: int = 0) -> ModelSpec:
    v = variant(key)
    return ModelSpec(v.name, seed, v.kind, v, v.lr)


def plain(key: str, seed: int = 0, base: str = "tanh") -> PlainMLP:
    v = variant(key)
    net = PlainMLP(LAYERS, v.kind, getattr(v, "activation", None) or base, v, dtype=F64)
    return net.load_init(init_weights(LAYERS, seed))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-2, 2, 50, dtype=F64).unsqueeze(-1)
    return x, torch.sin(3 * x)


def test_every_kind_is_in_the_registry_and_documented() -> None:
    assert set(KINDS) == {v["kind"] for v in VARIANTS.values()} | NOT_AN_ACTIVATION
    assert set(NAMES) == set(ACTIVATIONS)
    for info in KINDS.values():
        assert info.formula and info.reference
        assert variant_parameters(info.name)[0][0] == "name"


@pytest.mark.parametrize("key", STARTS_AT_FIXED)
def test_kind_starts_as_the_fixed_network(key: str) -> None:
    x, _ = data()
    base = VARIANTS[key].get("activation", "tanh")
    with torch.no_grad():
        fixed = plain("fixed", 3, base)(x)
        torch.testing.assert_close(plain(key, 3)(x), fixed, rtol=1e-14, atol=1e-14)
        ens = Ensemble(LAYERS, VARIANTS[key]["kind"], base, [spec(key, 3)], dtype=F64)
        torch.testing.assert_close(ens(x)[0], fixed, rtol=1e-14, atol=1e-14)


def _perturbed(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters moved off their initial values (so that e.g. Rowdy's F_j gets a gradient)."""
    gen = torch.Generator().manual_seed(1)
    return {
        name: (p.detach() + 0.1 * torch.randn(p.shape, generator=gen, dtype=F64)).requires_grad_()
        for name, p in net.named_parameters()
    }


@pytest.mark.parametrize("key", list(VARIANTS))
def test_gradients_reach_every_parameter(key: str) -> None:
    x, y = torch.linspace(-1.5, 1.5, 7, dtype=F64).unsqueeze(-1), torch.zeros(7, 1, dtype=F64)
    net = plain(key)
    params = _perturbed(net)
    buffers = dict(net.named_buffers())
    names = list(params)

    def loss(*values: torch.Tensor) -> torch.Tensor:
        out = functional_call(net, ({**dict(zip(names, values)), **buffers},), (x,))
        return (out - y).square().mean()

    assert torch.autograd.gradcheck(loss, tuple(params.values()), eps=1e-6, atol=1e-5)
    grads = torch.autograd.grad(loss(*params.values()), tuple(params.values()))
    for name, g in zip(names, grads):
        assert g.abs().sum() > 0, name


@pytest.mark.parametrize("key", list(VARIANTS))
def test_parameters_are_registered_saved_and_moved(key: str) -> None:
    net = plain(key)
    state = net.state_dict()
    for name, _ in net.named_parameters():
        assert name in state
    activation_params = [n for n, _ in net.named_parameters() if n.startswith("activations.")]
    ens = Ensemble(LAYERS, VARIANTS[key]["kind"], "tanh", [spec(key)], dtype=F64)
    assert ens.family.count() == sum(
        p.numel() for n, p in net.named_parameters() if n in activation_params
    )
    assert (VARIANTS[key]["kind"] == "fixed") == (not activation_params)
    moved = net.to(torch.float32)
    assert all(
        t.dtype == torch.float32 for t in moved.state_dict().values() if t.is_floating_point()
    )
    ens32 = ens.to(torch.float32)
    assert all(p.dtype == torch.float32 for p in ens32.parameters())
    assert all(b.dtype in (torch.float32, torch.bool) for b in ens32.buffers())


@pytest.mark.parametrize("key", list(VARIANTS))
def test_batched_kind_matches_the_per_model_reference(key: str) -> None:
    """40 Adam steps of two seeds in the batched ensemble == nn.Module + torch.optim.Adam."""
    x, y = data()
    members = [spec(key, 0), spec(key, 1)]
    base = VARIANTS[key].get("activation", "tanh")
    model = Groups([Ensemble(LAYERS, VARIANTS[key]["kind"], base, members, dtype=F64)])
    result = train(model, x, y, x, y, TrainConfig(steps=40, log_every=1, lr=5e-3))
    engine = torch.stack([r.train_loss for r in result.records])
    for i, m in enumerate(members):
        losses, net = reference_run(m, LAYERS, "tanh", x, y, 40, 5e-3)
        torch.testing.assert_close(
            engine[:, i], torch.tensor(losses, dtype=F64), rtol=1e-9, atol=1e-13
        )
        state = model.ensembles()[0].state_dict_of(i)
        assert state.keys() == net.state_dict().keys()
        for name, value in net.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-8, atol=1e-11)


def test_slope_recovery_equals_a_hand_computation() -> None:
    a = [torch.tensor(0.1, dtype=F64), torch.tensor(0.3, dtype=F64), torch.tensor(-0.2, dtype=F64)]
    total = math.exp(0.1) + math.exp(0.3) + math.exp(-0.2)
    assert slope_recovery(a, "paper").item() == pytest.approx(1 / (total / 3), rel=1e-15)
    assert slope_recovery(a, "code").item() == pytest.approx(1 / total, rel=1e-15)
    # Through the networks: layer-wise uses each layer's a, neuron-wise each layer's mean a.
    layer, neuron = plain("layer_sr"), plain("neuron_sr_code")
    with torch.no_grad():
        layer.activations[0].a.fill_(0.4)
        layer.activations[1].a.fill_(0.9)
        neuron.activations[0].a.copy_(torch.linspace(0, 1, 6, dtype=F64))  # mean 0.5
        neuron.activations[1].a.copy_(torch.linspace(-1, 0, 5, dtype=F64))  # mean -0.5
    assert layer.recovery().item() == pytest.approx(2 / (math.exp(0.4) + math.exp(0.9)))
    assert neuron.recovery().item() == pytest.approx(1 / (math.exp(0.5) + math.exp(-0.5)))
    # Global: the same a in every hidden layer (D-1 = 2 of them): S = 1 / exp(a) (paper).
    glob = plain("global_sr")
    assert glob.recovery().item() == pytest.approx(math.exp(-0.1))
    # Its gradient with respect to a is non-zero (built from the parameter, not its .data).
    (grad,) = torch.autograd.grad(layer.recovery(), [layer.activations[0].a])
    assert grad.item() == pytest.approx(-2 * math.exp(0.4) / (math.exp(0.4) + math.exp(0.9)) ** 2)


def test_batched_recovery_equals_the_reference() -> None:
    for key in ("global_sr", "layer_sr", "neuron_sr_code"):
        ens = Ensemble(LAYERS, VARIANTS[key]["kind"], "tanh", [spec(key)], dtype=F64)
        with torch.no_grad():
            for p in ens.family.parameters():
                p.add_(torch.linspace(0, 0.3, p.numel(), dtype=F64).reshape(p.shape))
        net = PlainMLP(LAYERS, VARIANTS[key]["kind"], "tanh", variant(key), dtype=F64)
        net.load_state_dict(ens.state_dict_of(0))
        torch.testing.assert_close(ens.family.recovery()[0], net.recovery(), rtol=1e-14, atol=0)
        weight = variant(key).slope_recovery.weight
        penalty = ens.family.penalty()
        assert penalty is not None
        torch.testing.assert_close(penalty[0], weight * net.recovery(), rtol=1e-14, atol=0)


def test_metrics_train_loss_is_the_data_loss_without_recovery() -> None:
    base = ["seeds=2", "train.steps=30", "train.log_every=1", "dtype=float64"]
    with_sr = load_config(None, [*base, "variants=[{kind: layer, slope_recovery: {weight: 5}}]"])
    without = load_config(None, [*base, "variants=[{kind: layer}]"])
    records = {}
    for name, cfg in (("sr", with_sr), ("plain", without)):
        from aaf_cli.experiment import run_experiment

        records[name] = run_experiment(cfg).result.records
    # Same start: the logged step-0 losses are the plain MSE for both.
    assert torch.equal(records["sr"][0].train_loss, records["plain"][0].train_loss)
    # The penalty changes training, and is logged apart.
    assert not torch.equal(records["sr"][-1].train_loss, records["plain"][-1].train_loss)
    assert records["plain"][0].recovery.isnan().all()
    # S(a) at the start, a = 1/n = 0.1 in every layer: 1 / exp(0.1).
    torch.testing.assert_close(
        records["sr"][0].recovery, torch.full((2,), math.exp(-0.1), dtype=F64)
    )


def test_rational_starts_near_leaky_relu_and_has_no_poles() -> None:
    x = torch.linspace(-3, 3, 601, dtype=F64)
    unit = plain("rational").activations[0]
    with torch.no_grad():
        err = (unit(x) - torch.nn.functional.leaky_relu(x, 0.01)).abs().max().item()
        assert err < 0.035
        big = rational_value(torch.linspace(-1e3, 1e3, 2001, dtype=F64), unit.num, -unit.den)
    assert torch.isfinite(big).all()  # |b| keeps the denominator >= 1 whatever the sign of b


def test_groups_split_by_kind_and_activation_and_share_initial_weights() -> None:
    cfg = load_config(
        None,
        [
            "seeds=2",
            "model.layers=[1, 6, 5, 1]",
            "variants=[{kind: fixed}, {kind: fixed, name: fixed-tanh, activation: tanh},"
            " {kind: global}, {kind: global, name: g5, n: 5}, {kind: neuron}, {kind: rowdy},"
            " {kind: prelu}, {kind: swish}, {kind: rational}]",
        ],
    )
    model = build_ensemble(cfg, torch.device("cpu"))
    groups = [(g.kind, g.base, [m.variant for m in g.members]) for g in model.ensembles()]
    assert groups == [
        ("fixed", "elu", ["fixed", "fixed"]),
        ("fixed", "tanh", ["fixed-tanh", "fixed-tanh"]),
        ("global", "elu", ["global", "global", "g5", "g5"]),  # different n, one group
        ("neuron", "elu", ["neuron", "neuron"]),
        ("rowdy", "elu", ["rowdy", "rowdy"]),
        ("prelu", "elu", ["prelu", "prelu"]),
        ("swish", "elu", ["swish", "swish"]),
        ("rational", "elu", ["rational", "rational"]),
    ]
    first = model.ensembles()[0]
    for g in model.ensembles()[1:]:
        for k in range(len(first.weights)):
            for j, m in enumerate(g.members):
                torch.testing.assert_close(
                    g.weights[k][j], first.weights[k][m.seed], rtol=0, atol=0
                )


def test_a_variant_with_its_own_layers_trains_in_its_own_group(tmp_path: Any) -> None:
    from aaf_cli.pipeline import execute

    cfg = load_config(
        None,
        [
            "seeds=2",
            "train.steps=10",
            "model.layers=[1, 6, 1]",
            "variants=[{kind: fixed}, {kind: global},"
            " {kind: fixed, name: wide, layers: [1, 7, 1]}]",
        ],
    )
    model = build_ensemble(cfg, torch.device("cpu"))
    assert [(g.kind, g.layers) for g in model.ensembles()] == [
        ("fixed", [1, 6, 1]),
        ("global", [1, 6, 1]),
        ("fixed", [1, 7, 1]),
    ]
    wide = model.ensembles()[2]
    torch.testing.assert_close(wide.weights[0][1].T, init_weights([1, 7, 1], 1)[0][0].float())
    summary = execute(cfg, tmp_path).summary
    assert {k: v["parameters"] for k, v in summary["variants"].items()} == {
        "fixed": 6 + 6 + 7,
        "global": 6 + 6 + 7 + 1,
        "wide": 7 + 7 + 8,
    }
    assert summary["variants"]["wide"]["layers"] == [1, 7, 1]


@pytest.mark.parametrize("n", [3.0, 7.0, 49.0, 97.0])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_step_zero_is_bit_for_bit_the_fixed_network_for_any_n(n: float, dtype: torch.dtype) -> None:
    """n * a0 is exactly 1 in the run's dtype, even where n * fl(1/n) is not (n = 49)."""
    x = torch.linspace(-2, 2, 50, dtype=dtype).unsqueeze(-1)
    fixed = Ensemble(LAYERS, "fixed", "tanh", [spec("fixed")], dtype=dtype)
    with torch.no_grad():
        reference = fixed(x)
        for kind in ("global", "layer", "neuron", "rowdy"):
            v = TypeAdapter(Variant).validate_python({"kind": kind, "n": n})
            ens = Ensemble(LAYERS, kind, "tanh", [ModelSpec(kind, 0, kind, v)], dtype=dtype)
            assert torch.equal(ens(x), reference), (kind, n)
