"""Training in phases (``train.phases``): Adam, then L-BFGS from where Adam stopped, with
logging, evaluation counts, thresholds and the variant rates carried across the boundary; and
the config errors of phases and L-BFGS."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from aaf_cli.config import TrainConfig, load_config
from aaf_cli.errors import ConfigError
from aaf_cli.lbfgs import StackedLBFGS
from aaf_cli.train import make_optimizer, train
from tests.test_lbfgs import ensemble, regression_data

F64 = torch.float64
LAYERS = [1, 16, 16, 1]


def phased(**changes: Any) -> TrainConfig:
    given: dict[str, Any] = {
        "lr": 1e-2,
        "log_every": 7,
        "threshold": 0.05,
        "phases": [{"optimizer": "adam", "steps": 30}, {"optimizer": "lbfgs", "steps": 20}],
    }
    return TrainConfig(**{**given, **changes})


def test_adam_then_lbfgs_equals_the_two_runs_one_after_the_other() -> None:
    """30 Adam steps then 20 L-BFGS iterations: the first 30 steps are a 30-step Adam run bit
    for bit; the rest is an L-BFGS run started where Adam stopped, bit for bit; the boundary
    is logged (log_every 7), evaluations count one per Adam step and L-BFGS's after;
    steps to threshold count across the phases."""
    x, y = regression_data()
    cfg = phased()
    assert cfg.steps == 50
    model = ensemble(["fixed", "global"], [0, 1], LAYERS)
    both = train(model, x, y, x, y, cfg)
    assert [r.step for r in both.records] == [0, 7, 14, 21, 28, 30, 35, 42, 49, 50]

    first = ensemble(["fixed", "global"], [0, 1], LAYERS)
    adam = train(first, x, y, x, y, TrainConfig(lr=1e-2, steps=30, log_every=7, threshold=0.05))
    for a, b in zip(adam.records, both.records):
        assert a.step == b.step and torch.equal(a.train_loss, b.train_loss)
    second = train(
        first, x, y, x, y, TrainConfig(optimizer="lbfgs", steps=20, log_every=1, threshold=0.05)
    )
    by_step = {r.step + 30: r for r in second.records}
    for r in both.records[5:]:
        assert torch.equal(r.train_loss, by_step[r.step].train_loss), r.step
        assert r.evals is not None and by_step[r.step].evals is not None
        assert torch.equal(r.evals, by_step[r.step].evals + 30)
    # Step 30: Adam's 30 evaluations, and L-BFGS's first one of the point Adam left (torch's
    # LBFGS counts it too).
    assert torch.equal(both.records[5].evals, torch.full((4,), 31))
    assert torch.equal(both.records[-1].evals, second.records[-1].evals + 30)
    assert (both.records[-1].evals > 50).all()  # an iteration costs one evaluation or more
    # Steps to threshold: Adam's where it got there, else L-BFGS's, in the run's step numbers.
    adam_reached = adam.steps_to_threshold
    lbfgs_reached = second.steps_to_threshold
    want = torch.where(adam_reached >= 0, adam_reached, lbfgs_reached + 30)
    want = torch.where((adam_reached < 0) & (lbfgs_reached < 0), -1, want)
    assert torch.equal(both.steps_to_threshold, want)
    assert (both.steps_to_threshold > 30).any()  # some model got there in the L-BFGS phase
    assert (both.records[-1].train_loss < 0.7 * both.records[5].train_loss).all()


def test_a_variants_own_rate_follows_each_phases_rate() -> None:
    """A variant at 3x train.lr trains at 3x each first-order phase's rate; L-BFGS takes no
    rate from it (its rows only tell frozen from trained)."""
    model = ensemble(["fixed", "global"], [0], LAYERS, **{"global": {"lr": 3e-2}})
    cfg = phased(phases=[{"optimizer": "adam", "steps": 5, "lr": 2e-3}])
    opt = make_optimizer(model, cfg.phase_configs()[0], scale=2e-3 / 1e-2)
    rates = sorted(set(opt.rate.tolist()))
    assert [round(r, 12) for r in rates] == [2e-3, 6e-3]
    lbfgs = make_optimizer(model, TrainConfig(optimizer="lbfgs", steps=5), scale=0.2)
    assert isinstance(lbfgs, StackedLBFGS) and bool(lbfgs.keep.any())
    assert lbfgs.options.lr == 1.0


def test_compiled_lbfgs_equals_eager_to_rounding() -> None:
    """compile: true traces the L-BFGS evaluation (losses and gradients) as one graph: the
    same line-search decisions and losses as eager mode, to rounding."""
    x, y = regression_data()
    runs = []
    for compiled in (False, True):
        model = ensemble(["fixed", "global"], [0], LAYERS)
        cfg = TrainConfig(optimizer="lbfgs", steps=25, log_every=5, compile=compiled)
        runs.append(train(model, x, y, x, y, cfg))
    eager, compiled_run = runs
    assert "compile_time_s" in compiled_run.extra and "compile_error" not in compiled_run.extra
    for a, b in zip(eager.records, compiled_run.records, strict=True):
        torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-4, atol=0)
        assert torch.equal(a.evals, b.evals)  # type: ignore[arg-type]


def experiment(train: dict[str, Any]) -> dict[str, Any]:
    return {"name": "phases", "seeds": 1, "train": train}


@pytest.mark.parametrize(
    ("train_section", "key", "words"),
    [
        (
            {"phases": [{"optimizer": "adamw", "steps": 10}]},
            "train.phases.0.optimizer",
            "'adam', 'sgd' or 'lbfgs'",
        ),
        (
            {"optimizer": "lbfgs", "schedule": "cosine"},
            "train.schedule",
            "lbfgs takes no learning-rate schedule",
        ),
        (
            {
                "schedule": "cosine",
                "phases": [{"optimizer": "adam", "steps": 10}, {"optimizer": "lbfgs", "steps": 5}],
            },
            "train.phases.1.schedule",
            "lbfgs takes no learning-rate schedule",
        ),
        ({"optimizer": "lbfgs", "history_size": 0}, "train.history_size", "greater than or equal"),
        (
            {"optimizer": "lbfgs", "weight_decay": 0.01},
            "train.weight_decay",
            "lbfgs minimises the loss as given",
        ),
        ({"history_size": 5}, "train.history_size", "no phase uses lbfgs"),
        (
            {"steps": 100, "phases": [{"optimizer": "adam", "steps": 10}]},
            "train.steps",
            "phases add up to 10",
        ),
        ({"phases": []}, "train.phases", "at least 1"),
        ({"optimizer": "lbfgs"}, "tune", "lbfgs (the only optimiser here) takes none"),
    ],
)
def test_phase_and_lbfgs_mistakes_name_the_key(
    train_section: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(experiment(train_section))
    assert caught.value.key == key and words in caught.value.message, str(caught.value)


def test_a_phases_keys_default_to_trains_and_lbfgs_to_rate_one() -> None:
    cfg = TrainConfig(
        lr=8e-4,
        betas=(0.8, 0.9),
        phases=[{"optimizer": "adam", "steps": 100}, {"optimizer": "lbfgs", "steps": 50}],
    )
    adam, lbfgs = cfg.phase_configs()
    assert (adam.lr, adam.betas, adam.steps) == (8e-4, (0.8, 0.9), 100)
    assert (lbfgs.lr, lbfgs.steps, lbfgs.optimizer) == (1.0, 50, "lbfgs")
    assert lbfgs.lbfgs_options().max_evals == 62  # torch's max_eval: 5/4 of the iterations
    assert math.isclose(TrainConfig(optimizer="lbfgs").lr, 1.0)


# --- the loss beside the error ------------------------------------------------------------


def outcomes_of(train: dict[str, list[float]], test: dict[str, list[float]]) -> list[Any]:
    from aaf_cli.results import ModelOutcome

    return [
        ModelOutcome(v, seed, tr, te, tr, te, 0, None, {}, None)
        for v in train
        for seed, (tr, te) in enumerate(zip(train[v], test[v]))
    ]


def test_a_lower_loss_that_is_not_a_lower_error_is_said_so() -> None:
    """GAAF's loss 3x lower on every seed, its error the same up to noise: the sentence gives
    both counts and ratios, and says the lower loss is not a resolved lower error; where both
    are lower it says so; the speed-up reads the baseline's own final loss."""
    from aaf_cli.results import Series, summarise

    base_loss = [1e-2, 2e-2, 1.5e-2, 1.2e-2, 3e-2, 2.5e-2]
    errors = [0.1, 0.3, 0.2, 0.25, 0.15, 0.4]
    noisy = [e * f for e, f in zip(errors, [1.3, 0.8, 1.1, 1.2, 0.7, 1.25])]
    outcomes = outcomes_of(
        {"fixed": base_loss, "gaaf": [x / 3 for x in base_loss]}, {"fixed": errors, "gaaf": noisy}
    )
    steps = [0, 10, 20, 30, 40]
    series = []
    for seed, level in enumerate(base_loss):
        # fixed reaches its final loss at step 40; gaaf is there by step 10 (4x sooner).
        series.append(Series("fixed", seed, steps, train=[1.0, 0.5, 0.1, 0.05, level]))
        series.append(
            Series("gaaf", seed, steps, train=[1.0, level, level / 2, level / 3, level / 3])
        )
    _, comparisons = summarise(
        outcomes, ["fixed", "gaaf"], "fixed", 1e-2, "relative L2 error", series, "PINN loss"
    )
    text = comparisons[0]["loss_against_error"]
    assert text.startswith("loss against error: gaaf's final PINN loss is lower on 6/6 seeds")
    assert "ratio 0.33 [0.33, 0.33]" in text
    assert "reaches fixed's final PINN loss 4x sooner (median of 6 of 6 pairs)" in text
    assert "its final relative L2 error is lower on 2/6 (ratio 1 [0.79, 1.4])" in text
    assert text.endswith(": the lower loss is not a resolved lower error")
    both = outcomes_of(
        {"fixed": base_loss, "gaaf": [x / 3 for x in base_loss]},
        {"fixed": errors, "gaaf": [e / 2 for e in errors]},
    )
    _, comparisons = summarise(both, ["fixed", "gaaf"], "fixed", 1e-2)
    assert comparisons[0]["loss_against_error"].endswith(
        "its final test MSE is lower on 6/6 (ratio 0.5 [0.5, 0.5]): lower in both"
    )


@pytest.mark.parametrize(
    ("speed", "said"),
    [
        (4.0, "4x sooner"),
        (1.04, "about as soon"),
        (0.96, "about as soon"),
        (0.5, "2x later"),
        (0.0, "only later"),
    ],
)
def test_reaching_the_baselines_loss_later_is_said_later(speed: float, said: str) -> None:
    """A median speed-up below 1 is a slow-down: "2x later", never "0.5x sooner"; one that
    rounds to 1 is "about as soon"; 0 (the baseline at its final loss from its first logged
    step, as in a run interrupted early) "only later"."""
    from aaf_cli.results import loss_against_error
    from aaf_cli.stats import compare_paired

    seeds = {0: None, 1: None, 2: None}
    train = compare_paired(
        "gaaf", "fixed", {0: 0.5, 1: 1.0, 2: 1.5}, {0: 1.0, 1: 2.0, 2: 3.0}, seeds, seeds
    )
    text = loss_against_error(train, train, (speed, 3, 3), "PINN loss", "error")
    assert f"reaches fixed's final PINN loss {said} (median of 3 of 3 pairs)" in text


def test_aaf_run_with_phases_writes_evaluations_the_figures_and_the_sentence(
    tmp_path: Any,
) -> None:
    """The real command on a two-phase config: metrics.csv counts evaluations (one per Adam
    step, then L-BFGS's), the header names both phases, the summary says how many models
    L-BFGS stopped and why, loss_error.png is written, and the verdict is followed by the
    loss against the error."""
    import csv
    import json

    import yaml
    from typer.testing import CliRunner

    from aaf_cli.cli import app

    config = {
        "name": "phased",
        "seeds": 3,
        "tune": {"seeds": 1},
        "target": {"name": "sine"},
        "model": {"layers": [1, 8, 8, 1], "activation": "tanh"},
        "variants": [{"kind": "fixed", "name": "fixed"}, {"kind": "global", "name": "gaaf"}],
        "train": {
            "lr": 1e-2,
            "log_every": 10,
            "phases": [{"optimizer": "adam", "steps": 40}, {"optimizer": "lbfgs", "steps": 20}],
        },
    }
    path = tmp_path / "phased.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())
    assert "60 steps (Adam 40 steps (lr 0.01), then L-BFGS 20 iterations" in words
    # Tuned: each variant's Adam rate chosen on validation data, through both phases.
    assert "at each variant's best learning rate" in words
    assert "loss against error: gaaf's final training MSE is lower on" in words
    (folder,) = (tmp_path / "runs").iterdir()
    with (folder / "metrics.csv").open() as fh:
        fh.readline()
        rows = list(csv.DictReader(fh))
    by_step = {int(r["step"]): int(r["evals"]) for r in rows if r["variant"] == "fixed"}
    assert by_step[40] == 41 and by_step[30] == 30
    assert by_step[60] > 60
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["phases"].startswith("Adam 40 steps")
    assert (folder / "loss_error.png").stat().st_size > 10_000
    assert "loss_against_error" in summary["comparisons"][0]


def test_the_identified_parameters_figure_marks_where_lbfgs_takes_over(tmp_path: Any) -> None:
    """params.png of an inverse run in phases: a dash-dotted line at the step where L-BFGS
    starts, and the legend names both optimisers."""
    from aaf_cli.problems.pde.figures import params_figure
    from aaf_cli.results import Series

    steps = [0, 50, 100, 150]
    series = [
        Series(v, s, steps, terms={"param:nu": [0.01, 0.006, 0.004, 0.0033]})
        for v in ("fixed", "gaaf")
        for s in (0, 1)
    ]
    fig = params_figure(
        series, ["fixed", "gaaf"], {"nu": 0.00318}, tmp_path / "params.png", "inverse",
        phases=[(100, "L-BFGS")], first="Adam",
    )  # fmt: skip
    (ax,) = fig.axes
    marks = [line for line in ax.lines if line.get_linestyle() == "-."]
    assert [list(line.get_xdata()) for line in marks] == [[100, 100]]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Adam then L-BFGS from step 100" in legend


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("train.phases=[{optimizer: adamw, steps: 5}]", "train.phases.0.optimizer"),
        ("train.history_size=0", "train.history_size"),
        ("train.schedule=cosine", "train.schedule: lbfgs takes no learning-rate schedule"),
    ],
)
def test_bad_phases_are_one_line_exit_2_and_no_folder(
    tmp_path: Any, override: str, words: str
) -> None:
    from typer.testing import CliRunner

    from aaf_cli.cli import app

    runs = tmp_path / "runs"
    extra = ["--set", "train.optimizer=lbfgs"] if "phases" not in override else []
    result = CliRunner().invoke(
        app, ["run", "configs/smoke.yaml", "--runs-dir", str(runs), *extra, "--set", override]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.output
    assert not runs.exists() or not any(runs.iterdir())


def test_set_and_sweep_reach_a_phases_keys(tmp_path: Any) -> None:
    """``--set train.phases.1.history_size=7`` and a sweep axis over the L-BFGS phase's
    steps: one run per point, each with its own phase length."""
    import json

    from typer.testing import CliRunner

    from aaf_cli.cli import app

    phases = "train.phases=[{optimizer: adam, steps: 20}, {optimizer: lbfgs, steps: 5}]"
    common = ["--set", "seeds=2", "--set", "tune=off", "--set", phases]
    shown = CliRunner().invoke(
        app,
        ["validate", "configs/smoke.yaml", *common, "--set", "train.steps=25", "--set",
         "train.phases.1.history_size=7"],
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "history_size: 7" in shown.output and "steps: 25" in shown.output
    config = tmp_path / "phased.yaml"
    config.write_text(
        "name: phased\nseeds: 2\ntune: off\nmodel: {layers: [1, 8, 1]}\n"
        "train:\n  phases:\n    - {optimizer: adam, steps: 20}\n"
        "    - {optimizer: lbfgs, steps: 5, history_size: 3}\n"
    )
    runs = tmp_path / "runs"
    swept = CliRunner().invoke(
        app,
        ["sweep", str(config), "--grid", "train.phases.1.steps=5,10", "--runs-dir", str(runs)],
    )
    assert swept.exit_code == 0, swept.output
    (sweep,) = runs.iterdir()
    done = sorted(
        json.loads(p.read_text())["steps_done"] for p in sweep.glob("points/*/summary.json")
    )
    assert done == [25, 30]


def test_a_model_that_diverged_under_sgd_stays_frozen_through_lbfgs() -> None:
    """A variant at 10 000x the rate overflows in the SGD phase: its parameters stay where
    they were when it did (a non-finite loss from there), L-BFGS leaves it alone (one look at
    its point, no stop reason), and the other model goes on training."""
    x, y = regression_data()
    model = ensemble(["fixed", "global"], [0], LAYERS, **{"global": {"lr": 100.0}})
    cfg = phased(phases=[{"optimizer": "sgd", "steps": 60}, {"optimizer": "lbfgs", "steps": 20}])
    result = train(model, x, y, x, y, cfg)
    diverged = result.diverged_at.tolist()
    assert diverged[0] == -1 and 0 < diverged[1] < 60
    at = {r.step: r for r in result.records}
    assert not torch.isfinite(at[80].train_loss[1]) and torch.isfinite(at[80].train_loss[0])
    assert at[80].train_loss[0] < 0.7 * at[60].train_loss[0]  # the healthy model trained on
    evals = {int(r.evals[1]) for r in result.records if r.evals is not None and r.step >= 60}
    assert evals == {61}  # 60 SGD steps, then L-BFGS's first look, and nothing more
    assert "lbfgs_stopped" not in result.extra
    frozen = model.state_dict_of(1)
    again = train(model, x, y, x, y, TrainConfig(optimizer="lbfgs", steps=5))
    assert again.diverged_at.tolist() == [-1, 0]
    for key, value in model.state_dict_of(1).items():
        assert torch.equal(value.nan_to_num(), frozen[key].nan_to_num())
