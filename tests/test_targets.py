from __future__ import annotations

import math

import pytest
import torch

from aaf_cli import activations, registry
from aaf_cli.targets import TARGETS, evaluate_target, sample_points


def test_registry_names_match_implementations() -> None:
    assert list(activations.ACTIVATIONS) == list(registry.ACTIVATIONS)


@pytest.mark.parametrize(
    ("name", "x", "expected"),
    [
        ("jcp_smooth", 0.5, (0.125 - 0.5) * math.sin(3.5) / 7 + math.sin(6.0)),
        ("jcp_discontinuous", -1.0, 0.2 * math.sin(-6.0)),
        ("jcp_discontinuous", 0.0, 0.0),  # x <= 0 takes the left branch
        ("jcp_discontinuous", 2.0, 1 + 0.2 * math.cos(24.0)),
        ("rspa_discontinuous", 2.0, 1 + 0.2 * math.cos(36.0)),
        ("sine", 0.3, math.sin(4 * 0.3)),
        ("polynomial", 1.2, 1.2**3 - 1.2),
        ("step", 0.1, 1.0),
        ("step", -0.1, 0.0),
    ],
)
def test_target_formulas(name: str, x: float, expected: float) -> None:
    value = evaluate_target(name, torch.tensor([[x]], dtype=torch.float64), {})
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_target_params_override_defaults() -> None:
    x = torch.tensor([[0.3]], dtype=torch.float64)
    assert evaluate_target("sine", x, {"freq": 2.0}).item() == pytest.approx(math.sin(0.6))
    assert evaluate_target("polynomial", x, {"coeffs": [1.0, 2.0]}).item() == pytest.approx(1.6)


def test_every_target_is_finite_on_its_domain() -> None:
    for spec in TARGETS.values():
        x = sample_points(spec.domain, spec.n_train, "grid", torch.Generator())
        assert x.shape == (spec.n_train, 1)
        assert x[0, 0].item() == spec.domain[0] and x[-1, 0].item() == spec.domain[1]
        assert torch.isfinite(evaluate_target(spec.name, x, {})).all()


def test_random_sampling_is_seeded_sorted_and_inside_the_domain() -> None:
    a = sample_points((-2.0, 1.0), 50, "random", torch.Generator().manual_seed(3))
    b = sample_points((-2.0, 1.0), 50, "random", torch.Generator().manual_seed(3))
    c = sample_points((-2.0, 1.0), 50, "random", torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a >= -2).all() and (a <= 1).all()
    assert torch.equal(a, a.sort(dim=0).values)
