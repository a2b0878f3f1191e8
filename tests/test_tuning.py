"""Tuning inside a run: every variant's learning rate chosen on validation data, on tuning seeds
apart from the run's own, then an ordinary comparison at the chosen rates."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import aaf_cli as aaf
from aaf_cli import experiment, tuning
from aaf_cli.budget import estimate
from aaf_cli.cli import app
from aaf_cli.config import TUNE_SEED_START, load_config
from aaf_cli.problems.expression import validation_seed
from aaf_cli.runs import read_metrics
from aaf_cli.stats import tail_value
from aaf_cli.sweeps.records import SWEEP_FILE

from .conftest import SMOKE, only_run

runner = CliRunner()
# Three evaluation seeds, two tuning seeds per rate, float64 (exact comparisons).
SMALL = ["train.steps=40", "seeds=3", "tune.seeds=2", "dtype=float64", "train.log_every=4"]


def run(tmp: Path, *overrides: str) -> Path:
    return aaf.run(SMOKE, overrides=[*SMALL, *overrides], runs_dir=tmp).folder


def summary_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    return data


def flipped_test_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every dataset made from here on has its test targets negated: a network that fits the
    target well then scores badly on the test grid, so validation and test disagree about
    every rate."""
    real = experiment.make_dataset

    def make(*args: Any, **kwargs: Any) -> Any:
        data = real(*args, **kwargs)
        return type(data)(
            data.x_train, data.y_train, data.x_test, -data.y_test, data.x_val, data.y_val
        )

    monkeypatch.setattr(experiment, "make_dataset", make)


def test_no_test_number_enters_the_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the test grid's targets negated (validation and test disagree at every rate), the
    tuning phase is byte for byte the same and chooses the same rates; only the reported test
    numbers change. The tuning phase is not even given test data (its test column is empty)."""
    plain = run(tmp_path / "plain")
    with monkeypatch.context() as patch:
        flipped_test_grid(patch)
        flipped = run(tmp_path / "flipped")
    for name in (tuning.TUNING_FILE, tuning.TUNING_METRICS):
        assert (plain / name).read_bytes() == (flipped / name).read_bytes(), name
    a, b = summary_of(plain), summary_of(flipped)
    assert a["tuning"]["chosen"] == b["tuning"]["chosen"]
    assert a["variants"]["fixed"]["final_test"] != b["variants"]["fixed"]["final_test"]
    assert all(math.isnan(v) for s in read_metrics(plain / tuning.TUNING_METRICS) for v in s.test)


def test_each_variant_takes_the_rate_of_least_median_final_validation_loss(
    tmp_path: Path,
) -> None:
    """The choice recomputed from the tuning phase's own curves (tuning_metrics.csv): per rate,
    each tuning seed's final validation loss (the median of its last 5% of logged points), the
    median over the seeds; the smallest wins. tuning.csv and summary.json hold those numbers."""
    folder = run(tmp_path, "train.lr=0.01")
    summary = summary_of(folder)
    entry = summary["tuning"]
    assert entry["on"] and entry["split"] == "validation"
    seeds = entry["seeds"]
    assert seeds == [TUNE_SEED_START, TUNE_SEED_START + 1]
    curves = {(s.variant, s.seed): s for s in read_metrics(folder / tuning.TUNING_METRICS)}
    for name in ("fixed", "adaptive"):
        mine = entry["variants"][name]
        assert mine["rates"] == pytest.approx([0.01 / 3, 0.01, 0.03])
        criteria = []
        for k in range(3):
            finals = [tail_value(curves[(f"{name}@lr{k}", s)].val) for s in seeds]
            criteria.append(statistics.median(finals))
        assert mine["criterion"] == pytest.approx(criteria, rel=1e-12)
        best = min(range(3), key=lambda k: criteria[k])
        assert entry["chosen"][name] == pytest.approx(mine["rates"][best])
        assert summary["variants"][name]["effective_lr"] == pytest.approx(mine["rates"][best])
    text = (folder / tuning.TUNING_FILE).read_text()
    first, _, body = text.partition("\n")
    assert first.startswith("# aaf tuning format 1; chosen: the smallest median")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == 2 * 3 * 2  # variants x rates x tuning seeds
    for row in rows:
        mine = entry["variants"][row["variant"]]
        k = next(i for i, r in enumerate(mine["rates"]) if float(row["lr"]) == pytest.approx(r))
        assert float(row["criterion"]) == pytest.approx(mine["criterion"][k], rel=1e-12)
        assert row["chosen"] == str(int(mine["rates"][k] == mine["chosen"]))
        seed = int(row["seed"])
        final = tail_value(curves[(f"{row['variant']}@lr{k}", seed)].val)
        assert float(row["final_val"]) == pytest.approx(final, rel=1e-12)


def test_the_comparison_is_an_ordinary_run_at_the_chosen_rates(tmp_path: Path) -> None:
    """The evaluation phase equals a run with tune: off and every variant at the rate its
    tuning chose: the same metrics, number for number (float64)."""
    tuned = run(tmp_path / "tuned")
    chosen = summary_of(tuned)["tuning"]["chosen"]
    sets = [f"variants.{i}.lr={chosen[n]!r}" for i, n in enumerate(("fixed", "adaptive"))]
    plain = run(tmp_path / "plain", "tune=off", *sets)
    assert (tuned / "metrics.csv").read_text() == (plain / "metrics.csv").read_text()
    assert "tuning" in summary_of(plain) and not summary_of(plain)["tuning"]["on"]
    assert not (plain / tuning.TUNING_FILE).exists()


def test_tuning_seeds_are_never_the_runs_own() -> None:
    cfg = load_config(SMOKE, ["seeds=[0, 1000000, 1000002]", "tune.seeds=3"])
    assert tuning.tuning_seeds(cfg) == [1000001, 1000003, 1000004]
    phase = tuning.tuning_config(cfg)
    assert not set(phase.seed_list) & set(cfg.seed_list)
    assert phase.tune is None and len(phase.variants) == 2 * 3
    assert tuning.model_count(cfg) == (2 * 3 * 3, 2 * 3)
    assert estimate(cfg).tuning_models == 18 and estimate(cfg).models == 6
    # The phases' time adds up; untuned, there is no tuning phase.
    off = estimate(load_config(SMOKE, ["seeds=[0, 1000000, 1000002]", "tune=off"]))
    assert off.tuning_models == 0 and estimate(cfg).seconds > off.seconds


def test_a_choice_at_the_edge_of_the_grid_is_noted(tmp_path: Path) -> None:
    """A grid whose every rate is far too small: each variant takes the largest, and the run
    says its best may lie beyond the grid (summary, table)."""
    folder = run(tmp_path, "tune.lr=[1e-6, 1e-5]")
    entry = summary_of(folder)["tuning"]
    assert entry["chosen"] == {"fixed": 1e-5, "adaptive": 1e-5}
    assert entry["notes"] == [
        f"{n}'s learning rate 1e-05 is the largest tried: its best may lie beyond the grid; "
        "widen tune.lr"
        for n in ("fixed", "adaptive")
    ]
    shown = runner.invoke(app, ["show", str(folder)])
    assert shown.exit_code == 0


def test_verdicts_say_how_the_rates_were_set(tmp_path: Path) -> None:
    tuned = summary_of(run(tmp_path / "tuned"))
    chosen = tuned["tuning"]["chosen"]
    (c,) = tuned["comparisons"]
    assert c["verdict"].startswith(
        f"at each variant's best learning rate (fixed {chosen['fixed']:.3g}, adaptive "
        f"{chosen['adaptive']:.3g}; chosen on validation data, 2 tuning seeds), adaptive "
    )
    assert tuning.UNTUNED_WARNING not in c["verdict"]
    (off,) = summary_of(run(tmp_path / "off", "tune=off"))["comparisons"]
    assert off["verdict"].endswith(tuning.UNTUNED_WARNING)
    # Rates of their own (a tuned sweep's evaluation): not one shared rate, no warning.
    (own,) = summary_of(run(tmp_path / "own", "tune=off", "variants.0.lr=0.02"))["comparisons"]
    assert tuning.UNTUNED_WARNING not in own["verdict"]


def test_stopping_in_the_tuning_phase_writes_an_interrupted_run(tmp_path: Path) -> None:
    """A stop while tuning: the rates are chosen from the steps done, the comparison does not
    train (step 0 only), and the run folder is complete and says so."""
    polls = {"n": 0}

    def stop() -> bool:
        polls["n"] += 1
        return polls["n"] > 15

    result = aaf.run(SMOKE, overrides=SMALL, runs_dir=tmp_path, stop=stop)
    summary = result.summary
    assert summary["status"] == "interrupted"
    assert summary["tuning"]["interrupted"] and summary["tuning"]["steps_done"] == 15
    assert "tuning was interrupted at step 15" in summary["tuning"]["notes"][-1]
    assert all(s.steps == [0] for s in read_metrics(result.folder / "metrics.csv"))
    assert max(s.steps[-1] for s in read_metrics(result.folder / tuning.TUNING_METRICS)) == 15


def test_a_tuned_sweep_packs_the_tuning_phases_and_each_point_equals_its_run(
    tmp_path: Path,
) -> None:
    """An n sweep of tuned points: the tuning phases of both points train as one pack (the
    fixed variant's tuning models, alike in both, once), then the evaluations; each point
    equals the same point run on its own, number for number."""
    sets = [f"--set={o}" for o in SMALL]
    result = runner.invoke(
        app,
        ["sweep", str(SMOKE), "--grid", "variants.1.n=1,5", *sets, "--runs-dir",
         str(tmp_path / "sweep"), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    folder = only_run(tmp_path / "sweep")
    assert (folder / SWEEP_FILE).is_file()
    for k, n in enumerate((1, 5)):
        point = folder / "points" / f"{k:03d}"
        alone = run(tmp_path / f"alone{k}", f"variants.1.n={n}")
        for name in ("metrics.csv", tuning.TUNING_FILE, tuning.TUNING_METRICS):
            assert (point / name).read_text() == (alone / name).read_text(), (k, name)
        packed = summary_of(point)["packed"]
        # The evaluation pack: the fixed models, alike in both points (their tuning, shared,
        # chose one rate for both), trained once; each point's adaptive models.
        assert packed["models"] == 3 + 2 * 3


@pytest.mark.parametrize("swept", ["train.lr=0.01,0.03", "variants.1.lr=0.01,0.03"])
def test_a_sweep_over_a_learning_rate_trains_at_the_swept_rates(swept: str) -> None:
    from aaf_cli.sweeps.spec import plan_sweep

    key, _, values = swept.partition("=")
    plan = plan_sweep(SMOKE, grid={key: [float(v) for v in values.split(",")]})
    assert all(c.tune is None for c in plan.configs)
    assert "tune=off" in plan.overrides
    n = plan_sweep(SMOKE, grid={"variants.1.n": [1, 5]})
    assert all(c.tune is not None for c in n.configs)
    pinned = plan_sweep(SMOKE, grid={key: [0.01]}, overrides=["tune.seeds=2"])
    assert all(c.tune is not None for c in pinned.configs)  # the user's own word wins


def test_validation_points_are_their_own() -> None:
    """Uniform random points from their own seed: none of them a training point or on the test
    grid; with noise, validation targets carry noise of their own (the training data's noise
    does not repeat)."""
    cfg = load_config(SMOKE, ["target.noise=0.1", "target.n_val=50"])
    data = experiment.make_dataset(cfg, torch.device("cpu"))
    assert data.x_val is not None and data.y_val is not None
    assert data.x_val.shape == (50, 1)
    val = set(data.x_val[:, 0].tolist())
    assert not val & set(data.x_test[:, 0].tolist()) and not val & set(data.x_train[:, 0].tolist())
    gen = torch.Generator().manual_seed(validation_seed(cfg.target))
    lo, hi = cfg.target.domain
    drawn = torch.rand(50, 1, dtype=torch.float64, generator=gen) * (hi - lo) + lo
    torch.testing.assert_close(
        data.x_val.double(), drawn.sort(dim=0).values.to(torch.float32).double()
    )
    clean = torch.sin(2.0 * data.x_val.double())
    noise = data.y_val.double() - clean
    assert 0.05 < float(noise.std()) < 0.2  # the stated noise, drawn for these points
    other = experiment.make_dataset(
        load_config(SMOKE, ["target.noise=0.1", "target.seed=1"]), torch.device("cpu")
    )
    assert other.x_val is not None and not torch.equal(other.x_val[:50], data.x_val)


def test_a_tuned_sweeps_choices_read_no_test_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aaf sweep --tune`: with the test grid's targets negated, every point's validation numbers
    and so every choice are the same; only the reported test numbers change."""
    args = ["sweep", str(SMOKE), "--grid", "train.lr=0.003,0.03", "--tune", "train.lr",
            "--tune-seeds", "2", "--eval-seeds", "2", "--set", "train.steps=30",
            "--set", "dtype=float64", "-q"]  # fmt: skip
    plain = runner.invoke(app, [*args, "--runs-dir", str(tmp_path / "plain")])
    with monkeypatch.context() as patch:
        flipped_test_grid(patch)
        flipped = runner.invoke(app, [*args, "--runs-dir", str(tmp_path / "flipped")])
    assert plain.exit_code == flipped.exit_code == 0, (plain.stderr, flipped.stderr)
    a = aaf.Sweep.open(only_run(tmp_path / "plain"))
    b = aaf.Sweep.open(only_run(tmp_path / "flipped"))
    assert a.tuned is not None and b.tuned is not None
    assert a.tuned.chosen == b.tuned.chosen and a.tuned.criteria == b.tuned.criteria
    assert a.table != b.table  # the test numbers did change
