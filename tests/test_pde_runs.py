"""PDE experiments as ordinary runs: ``aaf run`` on a ``pde:`` config, the engine's objective
against per-model PyTorch, bad input, and PDE points in ``aaf sweep``."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import TypeAdapter
from typer.testing import CliRunner

from aaf_cli.cli import app
from aaf_cli.config import TrainConfig, Variant, load_config
from aaf_cli.models import Ensemble, Groups, ModelSpec
from aaf_cli.problems.pde import parse_pde
from aaf_cli.problems.pde.problem import build_problem
from aaf_cli.problems.pde.residual import PinnLoss
from aaf_cli.problems.pde.training import PinnObjective, pde_dataset, read_terms
from aaf_cli.runs import read_metrics
from aaf_cli.train import LogRecord, train

from .conftest import CONFIGS, SMOKE, only_run
from .test_pde import SMALL_BURGERS, PlainModels, ensemble, section

F64 = torch.float64
PDE_SMOKE = CONFIGS / "pde_smoke.yaml"
PAPERS = ("burgers", "klein_gordon", "helmholtz", "burgers_inverse")
runner = CliRunner()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs_dir = tmp_path_factory.mktemp("pde_runs")
    result = runner.invoke(app, ["run", str(PDE_SMOKE), "--runs-dir", str(runs_dir), "--quiet"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return only_run(runs_dir)


def test_pde_smoke_run_writes_every_file(smoke_run: Path) -> None:
    for name in (
        "config.yaml",
        "metrics.csv",
        "parameters.csv",
        "timing.csv",
        "terms.csv",
        "aggregates.csv",
        "fit.csv",
        "loss_curves.png",
        "solution.png",
        "slopes.png",
        "summary.json",
        "checkpoints/fixed.pt",
        "checkpoints/gaaf.pt",
    ):
        path = smoke_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    for png in ("loss_curves.png", "solution.png"):
        assert (smoke_run / png).stat().st_size > 20_000
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert "relative L2" in summary["metrics"]["test"]
    assert summary["pde"]["terms"] == ["residual", "initial", "sides"]
    assert summary["data"]["target"] == "pde" and summary["data"]["n_train"] == 128
    # The resolved config reloads as it stands (no target: beside pde:).
    cfg = load_config(smoke_run / "config.yaml")
    assert cfg.pde is not None and "target" not in yaml.safe_load(
        (smoke_run / "config.yaml").read_text()
    )
    # metrics.csv: train = total PINN loss = the weighted sum of terms.csv's terms; test = the
    # relative L2 error, starting near 1 for a network that is near 0.
    series = read_metrics(smoke_run / "metrics.csv")
    read_terms(smoke_run / "terms.csv", series)
    for s in series:
        terms = [s.terms[f"term:{n}"] for n in ("residual", "initial", "sides")]
        total = [sum(values) for values in zip(*terms)]
        assert s.train == pytest.approx(total, rel=1e-5)
        assert 0.3 < s.test[0] < 3.0 and all(math.isfinite(v) for v in s.test)
    # Steps to threshold count on the relative L2 error, at logged steps.
    for o in (o for v in summary["variants"].values() for o in v["per_seed"]):
        mine = next(s for s in series if s.variant == o["variant"] and s.seed == o["seed"])
        hit = next((st for st, e in zip(mine.steps, mine.test) if e < summary["threshold"]), None)
        assert o["steps_to_threshold"] == hit


def test_show_list_and_compare_read_a_pde_run(smoke_run: Path) -> None:
    for args in (
        ["show", str(smoke_run)],
        ["list", "--runs-dir", str(smoke_run.parent)],
        ["compare", str(smoke_run), str(smoke_run), "--out", str(smoke_run.parent / "c.png")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
    assert "pde_smoke" in runner.invoke(app, ["list", "--runs-dir", str(smoke_run.parent)]).stdout


def test_compare_names_a_pde_metric_and_refuses_to_mix_it_with_mse(
    smoke_run: Path, tmp_path: Path
) -> None:
    import aaf_cli as aaf

    drawn = aaf.compare([smoke_run], out=tmp_path / "pde.png")
    assert drawn.figure.is_file()
    regression = aaf.run(SMOKE, overrides=["train.steps=10", "seeds=1"], runs_dir=tmp_path)
    out = tmp_path / "mixed.png"
    result = runner.invoke(
        app, ["compare", str(smoke_run), str(regression.folder), "--out", str(out)]
    )
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.strip() == (
        "Error: these runs measure different things (relative L2 error vs test MSE (data "
        "loss)): compare physics-informed runs with each other and regression runs with each "
        "other"
    )
    assert not out.exists()


def test_step_zero_losses_are_equal_across_the_variants_of_a_seed(smoke_run: Path) -> None:
    # GAAF starts at n*a = 1: the same function as the fixed network of its seed.
    series = read_metrics(smoke_run / "metrics.csv")
    first = {(s.variant, s.seed): (s.train[0], s.test[0]) for s in series}
    for seed in (0, 1):
        assert first[("fixed", seed)] == first[("gaaf", seed)]
    assert first[("fixed", 0)] != first[("fixed", 1)]


@pytest.mark.parametrize(
    ("inverse", "compiled"),
    [(False, False), (True, False), (True, True)],
    ids=["forward", "inverse", "inverse-compiled"],
)
def test_engine_training_equals_per_model_adam(inverse: bool, compiled: bool) -> None:
    """``train.train`` with the PINN objective, 100 steps in float64, equals every model
    trained alone as an nn.Module with torch.optim.Adam (GAAF, N-LAAF and fixed; for the
    inverse problem each model's own nu too). Also with ``compile: true``, which traces the
    loss with forward-mode derivatives (one cold compile, ~15 s)."""
    pde = SMALL_BURGERS
    if inverse:
        pde = section(
            pde,
            params={"nu": {"init": 0.02, "trainable": True, "scale": "log"}},
            data={"points": 32, "noise": 0.01},
        )
    config = parse_pde(pde)
    data = pde_dataset(config, F64, torch.device("cpu"))
    assert data.problem is not None
    problem = data.problem
    keys, seeds = ["fixed", "global", "neuron"], [0, 1]
    model = ensemble(keys, seeds)
    plains = PlainModels(model, inverse)
    cfg = TrainConfig(lr=3e-3, steps=100, log_every=1, threshold=1e-9, compile=compiled)
    records: list[LogRecord] = []
    objective = PinnObjective(problem, model, F64, torch.device("cpu"))
    result = train(
        model, data.x_train, data.y_train, data.x_test, data.y_test, cfg, records.append,
        objective=objective,
    )  # fmt: skip
    assert "compile_error" not in result.extra
    assert ("compile_time_s" in result.extra) == compiled
    assert objective.pinn.forward_mode == compiled
    single, nus = [], []
    for _ in range(cfg.steps + 1):
        nus.append(plains.nus())
        single.append(plains.step(problem))
    got = torch.stack([r.train_loss for r in records])
    torch.testing.assert_close(got, torch.stack(single), rtol=1e-9, atol=0)
    assert (got[-1] < 0.9 * got[0]).all()
    if inverse:
        logged = torch.stack([r.params["param:nu"] for r in records])
        torch.testing.assert_close(logged, torch.stack(nus), rtol=1e-9, atol=0)
    assert result.predictions.shape == (model.size, problem.test_points.shape[0])
    step0 = got[0].reshape(len(keys), len(seeds))
    if compiled:
        # Each kind's compiled kernels are fused apart: equal to rounding on any CPU.
        torch.testing.assert_close(step0[1], step0[0], rtol=1e-13, atol=0)
        torch.testing.assert_close(step0[2], step0[0], rtol=1e-13, atol=0)
    else:  # eager: n*a = 1 multiplies exactly, so the kinds start bit for bit alike
        assert torch.equal(step0[0], step0[1]) and torch.equal(step0[0], step0[2])


def test_compile_of_a_kind_without_forward_mode_trains_eagerly_and_says_why() -> None:
    """Rowdy has no closed-form jet: ``compile: true`` records why it did not compile and the
    run is exactly the eager one."""
    data = pde_dataset(parse_pde(SMALL_BURGERS), F64, torch.device("cpu"))
    assert data.problem is not None
    runs = []
    for compiled in (False, True):
        model = ensemble(["fixed", "rowdy"], [0])
        cfg = TrainConfig(lr=3e-3, steps=5, log_every=1, compile=compiled)
        objective = PinnObjective(data.problem, model, F64, torch.device("cpu"))
        runs.append(
            train(model, data.x_train, data.y_train, data.x_test, data.y_test, cfg,
                  objective=objective)
        )  # fmt: skip
    assert "compile_skipped" not in runs[0].extra
    assert runs[1].extra["compile_skipped"].startswith("the rowdy kind has no closed-form")
    assert "compile_time_s" not in runs[1].extra and "compile_error" not in runs[1].extra
    assert len(runs[0].records) == len(runs[1].records) == 6
    for a, b in zip(runs[0].records, runs[1].records):
        assert torch.equal(a.train_loss, b.train_loss)


def test_threshold_counts_on_the_relative_l2_error_at_logged_steps() -> None:
    config = parse_pde(SMALL_BURGERS)
    data = pde_dataset(config, F64, torch.device("cpu"))
    assert data.problem is not None
    model = ensemble(["fixed"], [0, 1])
    records: list[LogRecord] = []
    cfg = TrainConfig(lr=1e-2, steps=40, log_every=10, threshold=0.9)
    objective = PinnObjective(data.problem, model, F64, torch.device("cpu"))
    result = train(
        model, data.x_train, data.y_train, data.x_test, data.y_test, cfg, records.append,
        objective=objective,
    )  # fmt: skip
    for m in range(model.size):
        hit = next((r.step for r in records if float(r.test_loss[m]) < 0.9), -1)
        assert int(result.steps_to_threshold[m]) == hit


@pytest.mark.parametrize("name", PAPERS)
def test_shipped_papers_configs_validate_and_compile(name: str) -> None:
    cfg = load_config(CONFIGS / "papers" / f"{name}.yaml")
    assert cfg.pde is not None
    problem = build_problem(cfg.pde)
    assert problem.test_values is not None and torch.isfinite(problem.test_values).all()


def test_a_pde_run_inside_a_sweep(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    args = ["sweep", str(PDE_SMOKE), "--grid", "variants.1.n=5,10", "--set", "train.steps=20"]
    result = runner.invoke(app, [*args, "--runs-dir", str(runs_dir), "--quiet"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    folder = Path(result.stdout.strip().splitlines()[-1])
    points = sorted((folder / "points").iterdir())
    assert len(points) == 2
    finals = []
    for point in points:
        summary = json.loads((point / "summary.json").read_text())
        assert summary["status"] == "completed" and "pde" in summary
        assert (point / "solution.png").is_file() and (point / "terms.csv").is_file()
        series = read_metrics(point / "metrics.csv")
        read_terms(point / "terms.csv", series)
        assert all("term:residual" in s.terms for s in series)
        finals.append(summary["variants"]["gaaf"]["final_test"]["median"])
    assert finals[0] != finals[1]
    assert runner.invoke(app, ["show", str(folder)]).exit_code == 0
    # The sweep's figure says what its metric is: the relative L2 error, not a test MSE.
    from aaf_cli.sweeps.figure import draw
    from aaf_cli.sweeps.local import quantity_of
    from aaf_cli.sweeps.records import point_rows, read_record

    record = read_record(folder)
    assert quantity_of(record) == "relative L2 error"
    fig = draw(point_rows(folder, record), record.keys, tmp_path / "s.png", "t", "final",
               quantity_of(record))  # fmt: skip
    assert fig.axes[0].get_ylabel() == "final relative L2 error"
    assert "relative L2 error" in fig._suptitle.get_text()
    assert (folder / "sweep.png").is_file()


def test_slope_recovery_is_minimised_with_the_pinn_loss() -> None:
    """L-LAAF with slope recovery: the engine minimises the PINN loss plus the model's penalty
    (five plain SGD steps on a copy, written out by hand)."""
    problem = build_problem(parse_pde(SMALL_BURGERS))
    spec = TypeAdapter(Variant).validate_python(
        {"name": "sr", "kind": "layer", "n": 10, "slope_recovery": {"weight": 1.0}}
    )
    members = [ModelSpec("sr", s, "layer", spec, None) for s in (0, 1)]
    model = Groups([Ensemble([2, 8, 8, 1], "layer", "tanh", members, dtype=F64)])
    alone = copy.deepcopy(model)
    assert model.penalty() is not None
    data = pde_dataset(problem.config, F64, torch.device("cpu"))
    cfg = TrainConfig(optimizer="sgd", lr=1e-2, steps=5, log_every=1)
    records: list[LogRecord] = []
    objective = PinnObjective(problem, model, F64, torch.device("cpu"))
    train(
        model, data.x_train, data.y_train, data.x_test, data.y_test, cfg, records.append,
        objective=objective,
    )  # fmt: skip
    loss = PinnLoss(problem, F64)
    want = []
    params = list(alone.parameters())
    for _ in range(cfg.steps):
        pinn = loss(alone).total
        want.append(pinn.detach())
        penalty = alone.penalty()
        assert penalty is not None
        grads = torch.autograd.grad((pinn + penalty).sum(), params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(cfg.lr * g)
    got = torch.stack([r.train_loss for r in records[: cfg.steps]])
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-10, atol=0)
