"""Packing: sweep points that differ only in per-model settings train as one ensemble, and each
point's numbers equal those of the point run alone."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

import aaf_cli as aaf
from aaf_cli.config import ExperimentConfig, load_config
from aaf_cli.experiment import run_experiment
from aaf_cli.sweeps import writing
from aaf_cli.sweeps.packing import pack_key, plan_packs, train_pack

from .conftest import SMOKE
from .conftest import metrics_text as metrics

F64 = ["train.steps=30", "seeds=2", "dtype=float64", "tune=off"]
_WRITE_ONE = writing._write_one  # the real writer, for the fault-injection test


def smoke(*overrides: str) -> ExperimentConfig:
    return load_config(SMOKE, [*F64, *overrides])


POINTS = {
    # per-model settings of every sort: n, a0, train.lr, a variant's own lr, seeds, slope
    # recovery, weight decay, and a variant of another kind (its own group in the ensemble)
    "n and train.lr": [["variants.1.n=1", "train.lr=0.01"], ["variants.1.n=10", "train.lr=0.03"]],
    "seeds differ": [["seeds=[0,1]"], ["seeds=[1,5,7]"]],
    "variant lr and a0": [["variants.0.lr=0.05"], ["variants.1.a0=0.3"]],
    "kinds differ": [["variants.1.kind=neuron"], ["variants.1.kind=layer"], []],
    "slope recovery": [
        ["variants.1.kind=layer", "variants.1.slope_recovery={weight: 1.0}"],
        ["variants.1.kind=layer", "variants.1.weight_decay=0.01"],
    ],
    "variant order differs": [
        [],
        ["variants=[{name: adaptive, kind: global, n: 10}, {name: fixed, kind: fixed}]"],
    ],
    "resampled data": [["target.resample=true", "seeds=[0,2]"], ["target.resample=true"]],
}


@pytest.mark.parametrize("case", sorted(POINTS))
def test_a_packed_point_equals_the_point_alone_in_float64(case: str) -> None:
    configs = [smoke(*o) for o in POINTS[case]]
    assert len(plan_packs(configs)) == 1  # one ensemble
    packed = train_pack(configs)
    for cfg, result in zip(configs, packed):
        assert result.packing is not None and result.packing["points"] == len(configs)
        assert metrics(result) == metrics(run_experiment(cfg)), case


def test_float32_packed_points_match_alone_within_the_ensemble_tolerance() -> None:
    configs = [
        load_config(SMOKE, ["train.steps=60", "tune=off", f"variants.1.n={n}"]) for n in (1, 5, 10)
    ]
    for cfg, result in zip(configs, train_pack(configs)):
        alone = run_experiment(cfg)
        a = torch.stack([r.train_loss for r in alone.result.records])
        b = torch.stack([r.train_loss for r in result.result.records])
        # the engine's float32 ensemble-vs-alone tolerance (tests/test_engine.py)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_points_that_differ_in_more_than_per_model_settings_are_not_packed() -> None:
    configs = [
        smoke(),
        smoke("variants.1.n=5"),  # packs with the first
        smoke("train.steps=40"),
        smoke("model.layers=[1,16,1]"),
        smoke("target.params.freq=3.0"),
        smoke("dtype=float32"),
        smoke("train.lr=0.2", "name=other"),  # packs with the first
    ]
    assert [p.points for p in plan_packs(configs)] == [(0, 1, 6), (2,), (3,), (4,), (5,)]
    assert [p.points for p in plan_packs(configs, pack=False)] == [(i,) for i in range(7)]
    assert pack_key(configs[0]) == pack_key(configs[6]) != pack_key(configs[2])
    # only the pending points, split into at least `parts` jobs, and at most max_models each
    assert [p.points for p in plan_packs(configs, [0, 1, 6], parts=2)] == [(0, 1), (6,)]
    assert [p.points for p in plan_packs(configs, [0, 1, 6], max_models=8)] == [(0, 1), (6,)]
    assert plan_packs(configs, [0, 1, 6])[0].models == 12
    with pytest.raises(ValueError, match="not packable"):
        train_pack([configs[0], configs[2]])


def test_every_point_of_a_pack_starts_from_its_seeds_weights() -> None:
    """Fairness inside a pack: each variant of a seed starts from the same weights, whichever
    point it belongs to, and step-0 losses are equal across the points' same-seed models."""
    configs = [smoke("variants.1.n=1"), smoke("variants.1.n=10", "train.lr=0.5")]
    first = [r.result.records[0] for r in train_pack(configs)]
    torch.testing.assert_close(first[0].train_loss, first[1].train_loss, rtol=0, atol=0)


def packed_and_unpacked(tmp_path: Path, grid: dict[str, list[object]], base: list[str]) -> None:
    swept = {
        pack: aaf.sweep(SMOKE, grid=grid, overrides=base, runs_dir=tmp_path / str(pack), pack=pack)
        for pack in (True, False)
    }
    assert [p.status for p in swept[True].points] == ["completed"] * len(swept[True].points)
    for a, b in zip(swept[True].points, swept[False].points):
        assert a.run is not None and b.run is not None
        for name in ("metrics.csv", "parameters.csv", "fit.csv"):
            assert (a.run.folder / name).read_bytes() == (b.run.folder / name).read_bytes()
        for name in ("fit.png", "loss_curves.png", "slopes.png", "checkpoints/adaptive.pt"):
            assert (a.run.folder / name).is_file()
        packed = json.loads((a.run.folder / "summary.json").read_text())
        alone = json.loads((b.run.folder / "summary.json").read_text())
        assert packed["packed"]["points"] == len(swept[True].points) and "packed" not in alone
        assert (
            packed["variants"] == alone["variants"]
            and packed["comparisons"] == alone["comparisons"]
        )
    table = {
        pack: list(csv.DictReader(io.StringIO(s.points_csv.read_text().split("\n", 1)[1])))
        for pack, s in swept.items()
        if s.points_csv is not None
    }
    drop = {"run_folder"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in table[True]] == [
        {k: v for k, v in r.items() if k not in drop} for r in table[False]
    ]


def test_packed_and_unpacked_sweeps_write_the_same_numbers(tmp_path: Path) -> None:
    packed_and_unpacked(tmp_path, {"train.lr": [0.01, 0.03], "variants.1.n": [1, 5]}, F64)


def test_a_packed_point_loads_back_from_its_checkpoint(tmp_path: Path) -> None:
    """The checkpoint of a packed point is its own model: it reproduces the point's fit."""
    from aaf_cli.models import load_checkpoint

    swept = aaf.sweep(SMOKE, grid={"variants.1.n": [1, 5]}, overrides=F64, runs_dir=tmp_path)
    point = swept.points[1].run
    assert point is not None
    rows = list(csv.DictReader((point.folder / "fit.csv").open()))
    column = next(k for k in rows[0] if k.startswith("adaptive_seed"))
    model = load_checkpoint(point.folder / "checkpoints" / "adaptive.pt", seed=int(column[13:]))
    x = torch.tensor([[float(r["x"])] for r in rows], dtype=torch.float64)
    with torch.no_grad():
        expected = model.double()(x)[:, 0].tolist()
    assert [float(r[column]) for r in rows] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_packs_are_halved_until_they_fit_the_machine() -> None:
    configs = [smoke(f"variants.1.n={n}") for n in (1, 2, 3, 4, 5)]
    packs = plan_packs(configs, fits=lambda points: len(points) <= 2)
    assert [p.points for p in packs] == [(0, 1), (2,), (3, 4)]


def test_a_packed_job_too_large_for_memory_is_split_by_the_sweep() -> None:
    """A pack whose estimated memory passes the soft limit becomes several jobs."""
    from aaf_cli.budget import MAX_MEMORY_FRACTION, physical_memory
    from aaf_cli.sweeps.local import pack_estimate, plan_jobs
    from aaf_cli.sweeps.spec import plan_sweep

    plan = plan_sweep(
        SMOKE,
        grid={"train.lr": [0.01, 0.02, 0.03, 0.04]},
        overrides=["target.n_train=1000000", "seeds=200", "model.layers=[1,64,1]"],
    )
    memory = physical_memory()
    assert memory
    jobs = plan_jobs(plan, None, True, 1)
    assert len(jobs) > 1
    for job in jobs:
        size = pack_estimate([plan.configs[i] for i in job.points]).memory_bytes
        assert size <= MAX_MEMORY_FRACTION * memory or len(job.points) == 1


def test_a_parameter_that_becomes_nan_stays_in_the_packed_record() -> None:
    from aaf_cli.sweeps.packing import own_names, slice_record
    from aaf_cli.train import LogRecord

    rows = torch.tensor([0, 1])
    nan = float("nan")
    ones = torch.ones(3)
    b = torch.tensor([nan, nan, 2.0])
    first = LogRecord(0, 0.0, ones, ones, ones, {"a": torch.tensor([1.0, 1.0, nan]), "b": b})
    later = LogRecord(5, 1.0, ones, ones, ones, {"a": torch.tensor([nan, nan, nan]), "b": b})
    names = own_names(first, rows)
    assert names == {"a"}
    assert set(slice_record(later, rows, names).params) == {"a"}


def test_a_job_that_raises_marks_its_points_failed_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug or an out-of-memory error in one job: its points fail with one line, the other
    jobs complete (here: two jobs, since the steps differ)."""
    from aaf_cli.sweeps import packing

    real = packing.train_pack

    def flaky(configs: list[ExperimentConfig], **kwargs: object) -> list[object]:
        if configs[0].train.steps == 40:  # the second job
            raise RuntimeError("can't allocate memory\nsecond line")
        return real(configs, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(packing, "train_pack", flaky)
    swept = aaf.sweep(SMOKE, grid={"train.steps": [30, 40]}, overrides=F64[1:], runs_dir=tmp_path)
    assert [p.status for p in swept.points] == ["completed", "failed"]
    assert swept.status == "failed"
    errors = {r["error"] for r in swept.table if r["status"] == "failed"}
    assert errors == {"training failed: RuntimeError: can't allocate memory"}
    assert not (swept.points[1].folder or tmp_path / "none").exists()


def _dying_writer(index: int) -> tuple[dict[str, object] | None, str | None]:
    """Point 1's writer process dies, as if killed (module level: the pool pickles it)."""
    import os

    if index == 1:
        os._exit(9)
    return _WRITE_ONE(index)


def test_a_writer_that_dies_fails_its_point_and_does_not_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writing, "_write_one", _dying_writer)
    swept = aaf.sweep(SMOKE, grid={"variants.1.n": [1, 5, 10]}, overrides=F64, runs_dir=tmp_path)
    statuses = [p.status for p in swept.points]
    assert statuses[1] == "failed"
    failed = [r["error"] for r in swept.table if r["status"] == "failed"]
    assert failed and set(failed) == {"its writer process died before the folder was written"}
    monkeypatch.undo()
    resumed = aaf.sweep(resume=swept.folder)
    assert [p.status for p in resumed.points] == ["completed"] * 3


def test_random_axes_get_no_heat_map(tmp_path: Path) -> None:
    from aaf_cli.sweeps.figure import HEATMAP_FILE

    swept = aaf.sweep(
        SMOKE,
        random={"train.lr": "loguniform(1e-3,1e-1)", "variants.1.n": "uniform(1,10)"},
        samples=3,
        overrides=F64,
        runs_dir=tmp_path,
    )
    assert swept.folder is not None and (swept.folder / "sweep.png").is_file()
    assert not (swept.folder / HEATMAP_FILE).exists()


def test_a_model_every_point_has_alike_is_trained_once() -> None:
    """An n sweep: the fixed baseline (same settings, seeds and rate in every point) is one
    set of models in the pack, each point reads its numbers; other rates are other models."""
    configs = [smoke(f"variants.1.n={n}") for n in (1, 5, 10)]
    packed = train_pack(configs)
    assert packed[0].packing is not None and packed[0].packing["models"] == 3 * 2 + 2
    fixed = [p.result.records[-1].train_loss[:2] for p in packed]  # fixed comes first
    assert all(torch.equal(fixed[0], f) for f in fixed[1:])
    other = train_pack([smoke(), smoke("train.lr=0.02")])
    assert other[0].packing is not None and other[0].packing["models"] == 8
