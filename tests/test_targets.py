from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from aaf_cli import activations, registry
from aaf_cli.cli import app
from aaf_cli.config import load_config
from aaf_cli.targets import TARGETS, evaluate_target, grid_points, sample_points, target_function

from .conftest import SMOKE

runner = CliRunner()


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


def _run(tmp_path: Path, target: str, layers: str, seeds: int) -> Path:
    """Run a tiny experiment on ``target`` through the CLI; returns its folder."""
    config = tmp_path / "mine.yaml"
    config.write_text(
        f"name: mine\nseeds: {seeds}\ntarget: {target}\n"
        f"model: {{layers: {layers}, activation: tanh}}\ntrain: {{steps: 20, log_every: 10}}\n"
    )
    result = runner.invoke(app, ["run", str(config), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert result.exit_code == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def test_expression_target_runs_end_to_end_and_equals_the_formula(tmp_path: Path) -> None:
    target = (
        "{expr: '0.2*sin(6*x) if x <= 0 else 1 + 0.1*x*cos(18*x)', domain: [-3, 3],"
        " n_train: 50, n_test: 101}"
    )
    folder = _run(tmp_path, target, "[1, 8, 1]", 1)
    with (folder / "fit.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    # The data is computed in float64 on the grid and cast to the run's float32.
    expected = evaluate_target("rspa_discontinuous", grid_points((-3.0, 3.0), 101, 1), {})
    got = torch.tensor([float(r["target"]) for r in rows], dtype=torch.float64)
    torch.testing.assert_close(got, expected[:, 0].float().double(), rtol=0, atol=0)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["data"]["target"] == "expr" and summary["data"]["expr"].startswith("0.2*sin")
    assert (folder / "fit.png").is_file()


def test_piecewise_target_equals_the_conditional_expression() -> None:
    base = ["target.name=null", "target.params={}", "target.domain=[-2, 2]"]
    one = load_config(SMOKE, [*base, "target.expr=x**2 if x < 0 else sin(x)"])
    pieces = load_config(
        SMOKE, [*base, "target.piecewise=[{when: 'x < 0', expr: 'x**2'}, {expr: sin(x)}]"]
    )
    x = grid_points((-2.0, 2.0), 41, 1)
    torch.testing.assert_close(target_function(one.target)(x), target_function(pieces.target)(x))


def test_two_input_expression_trains_and_draws_heat_maps(tmp_path: Path) -> None:
    target = "{expr: 'sin(3*x1) * cos(2*x2)', domain: [-1, 1], n_train: 100, n_test: 400}"
    folder = _run(tmp_path, target, "[2, 8, 1]", 2)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["data"]["inputs"] == 2 and summary["data"]["n_train"] == 100  # 10 x 10 grid
    with (folder / "fit.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 400 and {"x1", "x2", "target"} <= set(rows[0])
    for r in rows[::37]:
        x1, x2 = float(r["x1"]), float(r["x2"])
        assert float(r["target"]) == pytest.approx(math.sin(3 * x1) * math.cos(2 * x2), abs=1e-6)
    assert (folder / "fit.png").read_bytes()[:4] == b"\x89PNG"


def test_grid_points_in_several_dimensions() -> None:
    g = grid_points((0.0, 1.0), 30, 3)  # round(30 ** (1/3)) = 3 per axis
    assert g.shape == (27, 3)
    assert sorted(set(g[:, 2].tolist())) == [0.0, 0.5, 1.0]
