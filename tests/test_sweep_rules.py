"""Sweep rules the docs state, each pinned by a known answer or an invariant: weight decay,
a per-model setting, reaches each point of a pack; points that differ in the run's weight decay
train apart; ``--resume`` of finished points trains nothing and touches no point folder (a
diverged point is done; a tuned sweep only remakes its evaluation run); ``points.csv``'s
geometric means leave out diverged seeds and its p is Holm-adjusted over the point's variants.

Known answer of the weight-decay tests: one step of Adam in float64 from the initial weights
``w0`` is AdamW's first update ``w1 = w0 * (1 - lr * d) - lr * g / (|g| + eps')``, whose second
term does not depend on ``d``. So between the point with decay ``d`` and the point without, a
decayed model's linear weights and biases differ by exactly ``-lr * d * w0`` (to rounding), its
activation parameters (not decayed unless ``train.decay_activation_params``) not at all.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

import aaf_cli as aaf
from aaf_cli import plots
from aaf_cli.cli import app
from aaf_cli.config import ExperimentConfig, load_config
from aaf_cli.models import init_weights
from aaf_cli.sweeps import packing
from aaf_cli.sweeps.packing import plan_packs, train_pack
from aaf_cli.sweeps.records import POINTS_FILE, SWEEP_FILE

from .conftest import SMOKE, copy_of

runner = CliRunner()
# Each variant at its configured rate: a config that can tune the rates inside the run has
# that turned off (these tests pin the sweep's own arithmetic and files).
UNTUNED = ["tune=off"] if "tune" in ExperimentConfig.model_fields else []
LR = 0.01
# One AdamW step in float64, every setting it depends on spelled out.
ONE_STEP = [
    *UNTUNED,
    "seeds=[0,3]",
    "dtype=float64",
    "device=cpu",
    "model.layers=[1,8,1]",
    "model.init=torch",
    "train.optimizer=adam",
    f"train.lr={LR}",
    "train.betas=[0.9,0.999]",
    "train.eps=1e-8",
    "train.steps=1",
    "train.schedule=constant",
    "train.warmup_steps=0",
    "train.weight_decay=0.0",
    "train.decay_activation_params=false",
    "train.compile=false",
]
# Plain SGD on a ReLU network: lr 0.5 diverges on some seeds and variants, 0.01 on none.
THREE_VARIANTS = (
    "variants=[{name: fixed, kind: fixed}, {name: adaptive, kind: global, n: 10}, "
    "{name: slope1, kind: global, n: 1}]"
)
DIVERGING = [
    *UNTUNED,
    "dtype=float64",
    "device=cpu",
    "model.layers=[1,8,1]",
    "model.activation=relu",
    "model.init=torch",
    "train.optimizer=sgd",
    "train.momentum=0.0",
    "train.weight_decay=0.0",
    "train.steps=10",
    "train.log_every=5",
    "train.schedule=constant",
    "train.warmup_steps=0",
    "train.compile=false",
]
LRS = [0.01, 0.5]
# The two-sided 95% quantiles of Student's t (scipy.stats.t.ppf(0.975, df)).
T975 = {1: 12.706204736174707, 2: 4.302652729911275}
TOL = 1e-15  # float64 rounding of the update: w0 (1 - lr d) and w0 - u are within an ulp or two


def unrendered(mp: pytest.MonkeyPatch) -> None:
    """Figures are drawn but not rendered to PNG (most of a small sweep's time; these tests
    are about numbers and files)."""
    mp.setattr(plots, "save", lambda fig, path, dpi=130: None)


# --------------------------------------------------------------------------------------------
# Weight decay in packs: the known answer of AdamW's first step


def first_step_known_answer(
    decayed: dict[str, torch.Tensor],
    plain: dict[str, torch.Tensor],
    seed: int,
    layers: Sequence[int],
    decay: float,
) -> None:
    """``decayed`` and ``plain``: one model's state dict after one step with weight decay
    ``decay`` and without; the linear layers differ by ``-lr * decay * w0``, the rest not."""
    assert decayed.keys() == plain.keys()
    w0 = init_weights(layers, seed, "torch")
    for k, (w, b) in enumerate(w0):
        for name, init in ((f"linears.{k}.weight", w), (f"linears.{k}.bias", b)):
            expected = -LR * decay * init
            got = decayed[name] - plain[name]
            torch.testing.assert_close(got, expected, rtol=0, atol=TOL, msg=name)
    activation = [k for k in plain if not k.startswith("linears.")]
    for name in activation:
        assert torch.equal(decayed[name], plain[name]), name


def states(result: Any, variant: str) -> dict[int, dict[str, torch.Tensor]]:
    """A packed point's models of one variant, by seed, as state dicts."""
    return {
        m.seed: result.ensemble.state_dict_of(i)
        for i, m in enumerate(result.members)
        if m.variant == variant
    }


def one_step(*overrides: str) -> ExperimentConfig:
    return load_config(SMOKE, [*ONE_STEP, *overrides])


def test_a_variants_weight_decay_reaches_its_own_point_in_a_pack() -> None:
    """Points that differ only in ``variants.1.weight_decay`` are one ensemble (a per-model
    setting), but not one model: each point's decayed variant has its own decay."""
    decays = [0.0, 0.1, 0.3]
    configs = [one_step(f"variants.1.weight_decay={d}") for d in decays]
    assert [p.points for p in plan_packs(configs)] == [(0, 1, 2)]
    results = train_pack(configs)
    plain = {v: states(results[0], v) for v in ("fixed", "adaptive")}
    assert plain["adaptive"][0]["activations.0.a"].numel() == 1
    for decay, result in zip(decays[1:], results[1:]):
        for seed in (0, 3):
            first_step_known_answer(
                states(result, "adaptive")[seed], plain["adaptive"][seed], seed, [1, 8, 1], decay
            )
            fixed = states(result, "fixed")[seed]
            assert all(torch.equal(fixed[k], plain["fixed"][seed][k]) for k in fixed)
    # the fixed variant is alike in every point: trained once; the adaptive one per point
    assert results[0].packing is not None and results[0].packing["models"] == 2 + 3 * 2


def test_points_that_differ_in_the_runs_weight_decay_train_apart_each_with_its_own() -> None:
    """``train.weight_decay`` is not a per-model setting of a pack: each point trains with its
    own, which decays every variant's linear layers."""
    configs = [one_step(f"train.weight_decay={d}") for d in (0.0, 0.3)]
    results = [r for p in plan_packs(configs) for r in train_pack([configs[i] for i in p.points])]
    for variant in ("fixed", "adaptive"):
        for seed in (0, 3):
            first_step_known_answer(
                states(results[1], variant)[seed],
                states(results[0], variant)[seed],
                seed,
                [1, 8, 1],
                0.3,
            )
    assert [p.points for p in plan_packs(configs)] == [(0,), (1,)]


@pytest.fixture(scope="module")
def decay_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``aaf sweep`` over a variant's weight decay, one AdamW step: its folder."""
    runs_dir = tmp_path_factory.mktemp("decay")
    args = ["sweep", str(SMOKE), "--grid", "variants.1.weight_decay=0.0,0.3"]
    args += [a for o in ONE_STEP for a in ("--set", o)]
    with pytest.MonkeyPatch.context() as mp:
        unrendered(mp)
        result = runner.invoke(app, [*args, "--runs-dir", str(runs_dir), "--quiet"])
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return Path(result.stdout.strip().splitlines()[-1])


def checkpoint(folder: Path, variant: str) -> dict[int, dict[str, torch.Tensor]]:
    payload = torch.load(folder / "checkpoints" / f"{variant}.pt", weights_only=True)
    return dict(zip(payload["seeds"], payload["state_dicts"]))


def test_a_weight_decay_sweep_writes_each_points_own_checkpoints(decay_sweep: Path) -> None:
    plain, decayed = (decay_sweep / "points" / p for p in ("000", "001"))
    summary = json.loads((decayed / "summary.json").read_text())
    assert summary["packed"]["points"] == 2  # one ensemble...
    for seed in (0, 3):  # ...and each point's own numbers
        first_step_known_answer(
            checkpoint(decayed, "adaptive")[seed],
            checkpoint(plain, "adaptive")[seed],
            seed,
            [1, 8, 1],
            0.3,
        )
        fixed = checkpoint(decayed, "fixed")[seed]
        assert all(torch.equal(v, checkpoint(plain, "fixed")[seed][k]) for k, v in fixed.items())


# --------------------------------------------------------------------------------------------
# --resume of finished points


def snapshot(folder: Path, under: str = "points") -> dict[str, tuple[bytes, int] | None]:
    """Every file (bytes and mtime_ns) and folder under ``folder/under``."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted((folder / under).rglob("*"))
    }


@pytest.fixture
def trainings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of points every ``train_pack`` call of the sweep executor trained (and
    figures not rendered)."""
    unrendered(monkeypatch)
    calls: list[int] = []
    real = packing.train_pack

    def counted(configs: Sequence[ExperimentConfig], **kwargs: Any) -> Any:
        calls.append(len(configs))
        return real(configs, **kwargs)

    monkeypatch.setattr(packing, "train_pack", counted)
    return calls


def test_resume_of_a_finished_sweep_trains_nothing_and_touches_no_point(
    decay_sweep: Path, tmp_path: Path, trainings: list[int]
) -> None:
    copy = copy_of(decay_sweep, tmp_path)
    before = snapshot(copy)
    assert len(before) > 10
    result = runner.invoke(app, ["sweep", "--resume", str(copy), "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert trainings == []
    assert snapshot(copy) == before
    assert yaml.safe_load((copy / SWEEP_FILE).read_text())["status"] == "completed"


@pytest.fixture(scope="module")
def diverging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tuned sweep of three variants over two rates: the point at the larger rate diverges
    on some seeds (all of them for some variants)."""
    with pytest.MonkeyPatch.context() as mp:
        unrendered(mp)
        swept = aaf.sweep(
            SMOKE,
            grid={"train.lr": LRS},
            overrides=[*DIVERGING, THREE_VARIANTS],
            tune="train.lr",
            tune_seeds=3,
            eval_seeds=2,
            runs_dir=tmp_path_factory.mktemp("diverging"),
        )
    assert [p.status for p in swept.points] == ["completed", "diverged"]
    assert swept.status == "completed" and swept.folder is not None
    return swept.folder


def test_a_diverged_point_is_done_and_resume_leaves_it(
    diverging: Path, tmp_path: Path, trainings: list[int]
) -> None:
    """Divergence is a result: a sweep whose points completed or diverged is finished."""
    copy = copy_of(diverging, tmp_path)
    before = snapshot(copy), snapshot(copy, "tuned")
    events: list[Any] = []
    swept = aaf.sweep(resume=copy, on_point=events.append)
    assert (events, trainings) == ([], [])
    assert (snapshot(copy), snapshot(copy, "tuned")) == before
    assert swept.status == "completed"
    assert [p.status for p in swept.points] == ["completed", "diverged"]


def test_resume_of_a_tuned_sweep_remakes_only_its_missing_evaluation_run(
    diverging: Path, tmp_path: Path, trainings: list[int]
) -> None:
    """``tuned/`` deleted: resume makes it again (the same numbers) from the tuning points as
    they are, without training or rewriting any of them."""
    copy = copy_of(diverging, tmp_path)
    chosen = aaf.Sweep.open(copy).tuned
    assert chosen is not None
    metrics = (copy / "tuned" / "metrics.csv").read_bytes()
    shutil.rmtree(copy / "tuned")
    before = snapshot(copy)
    events: list[Any] = []
    again = aaf.sweep(resume=copy, on_point=events.append)
    assert (events, trainings) == ([], [])
    assert snapshot(copy) == before
    assert again.status == "completed" and again.tuned is not None
    assert again.tuned.status in ("completed", "diverged") and again.tuned.chosen == chosen.chosen
    assert (copy / "tuned" / "metrics.csv").read_bytes() == metrics


# --------------------------------------------------------------------------------------------
# points.csv: what its numbers are over


def points_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / POINTS_FILE).open(encoding="utf-8", newline="") as fh:
        fh.readline()
        return list(csv.DictReader(fh))


def summary_of(folder: Path, point: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((folder / "points" / point / "summary.json").read_text())
    return summary


def test_points_csv_geomeans_and_intervals_are_over_the_non_diverged_seeds(diverging: Path) -> None:
    """Every ``<metric>_geomean`` of points.csv and its t interval (on log10) are over the
    seeds that did not diverge, from each seed's ``<metric>`` in the point's summary. A
    diverged seed can have a finite value (its best before it diverged): it is left out, and a
    variant whose every seed diverged has none; one seed kept: no interval."""
    summary = summary_of(diverging, "001")
    rows = {r["variant"]: r for r in points_rows(diverging) if r["point"] == "1"}
    metrics = [c[: -len("_geomean")] for c in rows["fixed"] if c.endswith("_geomean")]
    assert metrics
    shapes: set[str] = set()
    finite_lost = 0
    for metric in metrics:
        for name, v in summary["variants"].items():
            row = rows[name]
            kept = [o[metric] for o in v["per_seed"] if o["diverged_at"] is None]
            lost = [o[metric] for o in v["per_seed"] if o["diverged_at"] is not None]
            assert int(row["diverged"]) == len(lost)
            finite_lost += sum(isinstance(x, float) and math.isfinite(x) for x in lost)
            cells = [row[f"{metric}_{end}"] for end in ("geomean", "ci_low", "ci_high")]
            if not kept:
                assert cells == ["", "", ""], (metric, name)
                shapes.add("none kept")
                continue
            logs = [math.log10(x) for x in kept]
            mean = sum(logs) / len(logs)
            assert float(cells[0]) == pytest.approx(10**mean, rel=1e-12), (metric, name)
            if len(logs) == 1:
                assert cells[1:] == ["", ""], (metric, name)
                continue
            sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
            half = T975[len(logs) - 1] * sd / math.sqrt(len(logs))
            assert float(cells[1]) == pytest.approx(10 ** (mean - half), rel=1e-9)
            assert float(cells[2]) == pytest.approx(10 ** (mean + half), rel=1e-9)
            if lost:
                shapes.add("some kept")
    assert shapes == {"none kept", "some kept"}
    assert finite_lost  # values the rule leaves out


def test_points_csv_p_is_holm_adjusted_over_the_points_variants(diverging: Path) -> None:
    """Two variants against the baseline: Holm multiplies the smaller p by 2 (at most 1) and
    raises the larger to at least that."""
    summary = summary_of(diverging, "000")
    raw = {c["variant"]: c["p_value"] for c in summary["comparisons"]}
    assert sorted(raw) == ["adaptive", "slope1"]
    low, high = sorted(raw, key=raw.__getitem__)
    adjusted = {low: min(1.0, 2 * raw[low])}
    adjusted[high] = max(adjusted[low], raw[high])
    assert adjusted != raw  # the adjustment changes something here
    rows = [r for r in points_rows(diverging) if r["point"] == "0" and r["variant"] in raw]
    assert len(rows) == 2
    assert {r["variant"]: float(r["p"]) for r in rows} == pytest.approx(adjusted, rel=1e-12)
