"""A model whose loss becomes NaN or inf is frozen, reported, and harms no other model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from aaf_cli.config import load_config
from aaf_cli.experiment import run_experiment, tidy
from aaf_cli.pipeline import execute
from aaf_cli.runs import read_metrics

from .conftest import SMOKE

BASE = ["seeds=2", "train.optimizer=sgd", "train.lr=0.01", "model.activation=elu"]
TWO = "variants=[{kind: fixed}, {kind: global, name: adaptive}]"
# SGD with a learning rate 500 times too large: the loss overflows within a few steps.
THREE = (
    "variants=[{kind: fixed}, {kind: global, name: adaptive}, {kind: global, name: boom, lr: 5}]"
)


def test_diverging_model_is_frozen_and_the_others_are_untouched() -> None:
    with_boom = run_experiment(load_config(SMOKE, [*BASE, THREE]))
    without = run_experiment(load_config(SMOKE, [*BASE, TWO]))
    series_boom, outcomes = tidy(with_boom)
    series_plain, _ = tidy(without)
    diverged = {(o.variant, o.seed): o.diverged_at for o in outcomes if o.diverged}
    assert set(diverged) == {("boom", 0), ("boom", 1)}
    assert all(step is not None and step < 10 for step in diverged.values())
    # Every other model's trajectory is exactly the one it has without the diverging model.
    plain = {(s.variant, s.seed): s for s in series_plain}
    for s in series_boom:
        if s.variant != "boom":
            other = plain[(s.variant, s.seed)]
            assert s.train == other.train and s.test == other.test and s.params == other.params
            assert all(math.isfinite(v) for v in s.train)
    for i, m in enumerate(with_boom.members):
        if m.variant != "boom":
            j = [(k.variant, k.seed) for k in without.members].index((m.variant, m.seed))
            for a, b in zip(
                with_boom.ensemble.state_dict_of(i).values(),
                without.ensemble.state_dict_of(j).values(),
            ):
                assert torch.equal(a, b)


def test_diverged_model_parameters_stop_changing() -> None:
    short = run_experiment(load_config(SMOKE, [*BASE, THREE, "train.steps=20"]))
    long = run_experiment(load_config(SMOKE, [*BASE, THREE, "train.steps=60"]))
    for i, m in enumerate(short.members):
        if m.variant == "boom":
            for a, b in zip(
                short.ensemble.state_dict_of(i).values(), long.ensemble.state_dict_of(i).values()
            ):
                assert torch.equal(a, b) or (a.isnan() == b.isnan()).all()


def test_divergence_is_reported_in_metrics_summary_and_figure_notes(tmp_path: Path) -> None:
    report = execute(load_config(SMOKE, [*BASE, THREE]), tmp_path)
    summary = json.loads((report.folder / "summary.json").read_text())
    assert summary["status"].startswith("diverged:boom/seed0@")
    assert {(d["variant"], d["seed"]) for d in summary["diverged"]} == {("boom", 0), ("boom", 1)}
    assert summary["variants"]["boom"]["diverged"] == 2
    assert summary["variants"]["boom"]["final_test"]["n"] == 0
    assert summary["variants"]["adaptive"]["final_test"]["n"] == 2
    boom = [s for s in read_metrics(report.folder / "metrics.csv") if s.variant == "boom"]
    assert all(s.diverged_at is not None for s in boom)
    # aggregates.csv has no line for a variant whose every seed diverged.
    assert ",boom," not in "," + (report.folder / "aggregates.csv").read_text().replace("\n", ",")
    comparisons = {c["variant"]: c for c in summary["comparisons"]}
    assert comparisons["boom"]["pairs"] == 0
    assert "all diverged" in comparisons["boom"]["verdict"]
