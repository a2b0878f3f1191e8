"""aaf sweep --tune: the tuned-baseline protocol (selection, disjoint seeds, the evaluation run)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import aaf_cli as aaf
from aaf_cli.cli import app
from aaf_cli.errors import ConfigError
from aaf_cli.sweeps.records import SWEEP_FILE
from aaf_cli.sweeps.spec import plan_sweep
from aaf_cli.sweeps.tuned import (
    EVAL_SEED_START,
    TUNED_FILE,
    Protocol,
    choose,
    edge_notes,
    eval_overrides,
    select,
)
from aaf_cli.tuning import median_final

from .conftest import SMOKE

runner = CliRunner()
BASE = ["--set", "train.steps=30", "--set", "dtype=float64"]
LRS = "train.lr=0.003,0.01,0.03"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 3-value lr protocol on the smoke config (2 tuning seeds, 3 evaluation seeds)."""
    runs_dir = tmp_path_factory.mktemp("tuned")
    args = ["sweep", str(SMOKE), "--grid", LRS, "--tune", "train.lr", *BASE]
    args += ["--tune-seeds", "2", "--eval-seeds", "3", "--runs-dir", str(runs_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return Path(result.stdout.strip().splitlines()[-1]), result.stdout


def test_selection_is_the_argmin_of_the_median_final_validation_on_a_constructed_case() -> None:
    values = [1e-3, 3e-3, 1e-2, 3e-2]
    best = [
        [0.50, 0.40, 0.90],  # median 0.50
        [0.30, 0.20, 0.35],  # median 0.30  <- the argmin of the medians
        [0.01, 0.60, 0.70],  # median 0.60, though its minimum (0.01) is the smallest
        [math.inf, 0.25, math.nan],  # a diverged seed and a NaN count as +inf: median inf
    ]
    index, criteria = select(values, best)
    assert index == 1
    assert criteria == [0.5, 0.3, 0.6, math.inf]
    # A tie of medians goes to the smaller value, whatever order the values are given in.
    index, criteria = select([3e-2, 1e-3, 1e-2], [[0.2, 0.4, 0.3], [0.1, 0.3, 0.9], [1.0]])
    assert criteria == [0.3, 0.3, 1.0] and index == 1
    assert median_final([0.4, 0.1]) == pytest.approx(0.25)  # even: the mean of the middle two
    # From run summaries: each variant chooses on its own, by its validation values; the test
    # values say the opposite and are not read.
    summaries = [
        {"variants": {
            "fixed": {"per_seed": [{"final_val": f, "best_test": 1 / f, "final_test": 1 / f,
                                    "diverged_at": None} for f in fb]},
            "adaptive": {"per_seed": [{"final_val": a, "best_test": 1 / a, "final_test": 1 / a,
                                       "diverged_at": d} for a, d in ab]},
        }}
        for fb, ab in (
            ([0.5, 0.6, 0.7], [(0.1, None), (0.2, None), (0.3, None)]),
            ([0.2, 0.3, 0.1], [(0.01, 5), (0.02, 7), (0.3, None)]),  # diverged: +inf
        )
    ]  # fmt: skip
    choice = choose("train.lr", [1e-3, 1e-2], summaries)
    assert choice.chosen == {"fixed": 1e-2, "adaptive": 1e-3}
    assert choice.criteria == {"fixed": [0.6, 0.2], "adaptive": [0.2, math.inf]}
    # A per-variant key tunes that variant alone.
    only = choose("variants.1.n", [1, 10], summaries)
    assert list(only.chosen) == ["adaptive"] and only.chosen["adaptive"] == 1
    assert edge_notes("train.lr", [1e-3, 1e-2, 3e-2], {"fixed": 3e-2, "adaptive": 1e-2}) == [
        "fixed's train.lr 0.03 is the largest value tried: its best may lie beyond the grid; "
        "widen it"
    ]
    assert eval_overrides("variants.1.n", ["fixed", "adaptive"], {"adaptive": 5}) == [
        "variants.1.n=5"
    ]
    assert eval_overrides(
        "train.weight_decay", ["fixed", "adaptive"], {"fixed": 0.1, "adaptive": 0.0}
    ) == [
        "variants.0.weight_decay=0.1",
        "variants.1.weight_decay=0.0",
    ]


def test_tuning_and_evaluation_seeds_are_disjoint() -> None:
    for tune_seeds, eval_seeds in ((1, 1), (5, 10), (1000, 4096)):
        p = Protocol("train.lr", tune_seeds, eval_seeds)
        assert len(p.tuning) == tune_seeds and len(p.evaluation) == eval_seeds
        assert not set(p.tuning) & set(p.evaluation)
    assert Protocol("train.lr", 3, 2).evaluation == [EVAL_SEED_START, EVAL_SEED_START + 1]
    plan = plan_sweep(
        SMOKE, grid={"train.lr": [0.01, 0.03]}, tune="train.lr", tune_seeds=3,
        overrides=["seeds=[1000, 1001]"],  # the protocol's seeds win over the config's
    )  # fmt: skip
    assert [c.seeds for c in plan.configs] == [[0, 1, 2], [0, 1, 2]]


def test_the_protocol_writes_choices_and_an_ordinary_evaluation_run(
    tuned: tuple[Path, str], tmp_path: Path
) -> None:
    folder, stdout = tuned
    record = yaml.safe_load((folder / SWEEP_FILE).read_text())
    assert record["status"] == "completed"
    assert record["protocol"]["tune_seeds"] == [0, 1]
    assert record["protocol"]["eval_seeds"] == [1000, 1001, 1002]
    # The tuning points ran on the tuning seeds.
    for point in record["points"]:
        cfg = yaml.safe_load((folder / point["folder"] / "config.yaml").read_text())
        assert cfg["seeds"] == [0, 1]
    # Each variant chose the argmin of the median final validation loss over its points' tuning
    # seeds.
    sweep = aaf.Sweep.open(folder)
    assert sweep.tuned is not None and sweep.tuned.status == "completed"
    values = [p.values["train.lr"] for p in sweep.points]
    for name, chosen in sweep.tuned.chosen.items():
        medians = []
        for p in sweep.points:
            assert p.run is not None
            per_seed = p.run.summary["variants"][name]["per_seed"]
            medians.append(
                float(
                    sorted(o["final_val"] for o in per_seed)[0] * 0.5
                    + sorted(o["final_val"] for o in per_seed)[1] * 0.5
                )
            )
        assert chosen == values[min(range(len(values)), key=lambda i: (medians[i], values[i]))]
        assert list(sweep.tuned.criteria[name].values()) == pytest.approx(medians, rel=1e-12)
    # The evaluation run: an ordinary run folder, each variant at its value, fresh seeds...
    run = sweep.tuned.run
    assert run is not None and run.folder == folder / "tuned"
    cfg = yaml.safe_load((folder / "tuned" / "config.yaml").read_text())
    assert cfg["seeds"] == [1000, 1001, 1002]
    assert [v["lr"] for v in cfg["variants"]] == [
        sweep.tuned.chosen["fixed"],
        sweep.tuned.chosen["adaptive"],
    ]
    # ...whose numbers are those of a plain run of its config.
    plain = aaf.run(folder / "tuned" / "config.yaml", runs_dir=tmp_path)
    mine = (folder / "tuned" / "metrics.csv").read_bytes()
    assert mine == (plain.folder / "metrics.csv").read_bytes()
    # tuned.csv: per variant, the choice, the criterion at each value, the evaluation.
    with (folder / TUNED_FILE).open(encoding="utf-8", newline="") as fh:
        assert fh.readline().startswith("# aaf tuned baseline format 1;")
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == ["fixed", "adaptive"]
    summary = run.summary
    for r in rows:
        assert float(r["chosen"]) == sweep.tuned.chosen[r["variant"]]
        assert [float(r[f"criterion_at_{v}"]) for v in ("0.003", "0.01", "0.03")] == list(
            sweep.tuned.criteria[r["variant"]].values()
        )
        v = summary["variants"][r["variant"]]
        assert float(r["final_test_geomean"]) == pytest.approx(
            v["final_test"]["geomean"], rel=1e-12
        )
        assert r["seeds"] == "3"
    c = summary["comparisons"][0]
    assert (int(rows[1]["wins"]), int(rows[1]["pairs"])) == (c["wins"], c["pairs"])
    # The headline, printed by the CLI and by aaf show SWEEP.
    head = sweep.tuned.verdict[0]
    assert head.startswith(
        f"at their best train.lr (fixed {cfg['variants'][0]['lr']}, adaptive "
        f"{cfg['variants'][1]['lr']}), adaptive "
    )
    assert "/3 fresh seeds" in head
    assert "t interval" in head and "Wilcoxon p = " in head
    assert "median final validation loss over the tuning seeds" in " ".join(stdout.split())
    assert " ".join(head.split()[:12]) in " ".join(stdout.split())
    shown = runner.invoke(app, ["show", str(folder)])
    assert shown.exit_code == 0 and " ".join(head.split()[:12]) in " ".join(shown.stdout.split())


def test_the_tuned_sweeps_figure_marks_each_choice_and_carries_the_verdict(
    tuned: tuple[Path, str],
) -> None:
    from aaf_cli.sweeps.figure import draw
    from aaf_cli.sweeps.records import point_rows, read_record

    folder, _ = tuned
    sweep = aaf.Sweep.open(folder)
    assert sweep.tuned is not None and sweep.tuned.verdict
    record = read_record(folder)
    rows = point_rows(folder, record)
    fig = draw(
        rows, record.keys, folder / "again.png", "t", chosen=sweep.tuned.chosen,
        verdict=sweep.tuned.verdict,
    )  # fmt: skip
    stars = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    y_of = {(r["variant"], r["train.lr"]): float(r["final_test_geomean"]) for r in rows}
    drawn = sorted((float(s.get_xdata()[0]), float(s.get_ydata()[0])) for s in stars)
    expected = sorted((float(v), y_of[(name, v)]) for name, v in sweep.tuned.chosen.items())
    assert drawn == expected  # a star on each variant's line, at its chosen rate
    assert sweep.tuned.verdict[0].split(";")[0] in " ".join(fig._suptitle.get_text().split())
    # The sweep wrote the same figure itself (sweep.png after the evaluation run).
    assert (folder / "sweep.png").stat().st_size > 10_000


def test_resume_reruns_an_incomplete_evaluation_run(tuned: tuple[Path, str]) -> None:
    folder, _ = tuned
    before = (folder / "tuned" / "metrics.csv").read_bytes()
    (folder / "tuned" / "summary.json").unlink()  # as if killed before its summary
    swept = aaf.sweep(resume=folder, runs_dir=folder.parent)
    assert swept.status == "completed" and swept.tuned is not None
    assert (folder / "tuned" / "metrics.csv").read_bytes() == before


BAD = {
    "no tuning seeds": (
        ["--grid", "train.lr=0.01,0.1", "--tune", "train.lr", "--tune-seeds", "0"],
        f"Error: {SMOKE}: --tune-seeds: must be from 1 to 1000 (got 0)",
    ),
    "no evaluation seeds": (
        ["--grid", "train.lr=0.01,0.1", "--tune", "train.lr", "--eval-seeds", "0"],
        f"Error: {SMOKE}: --eval-seeds: must be from 1 to 4096 (got 0)",
    ),
    "tuning a name": (
        ["--grid", "variants.1.name=a,b", "--tune", "variants.1.name"],
        "Error: --tune variants.1.name: variants.K.name says which variant is which; tune a "
        "setting",
    ),
    "not in the grid": (
        ["--grid", "variants.1.n=1,5", "--tune", "train.lr"],
        "Error: --tune train.lr: not a swept key (grid: variants.1.n)",
    ),
    "not per variant": (
        ["--grid", "train.steps=10,20", "--tune", "train.steps"],
        "Error: --tune train.steps: not settable per variant; tune train.lr, "
        "train.weight_decay or variants.K.<field>",
    ),
    "another axis": (
        ["--grid", LRS, "--grid", "variants.1.n=1,5", "--tune", "train.lr"],
        "Error: --tune train.lr: the tuned key must be the only swept key (also swept: "
        "variants.1.n)",
    ),
    "random axis": (
        ["--random", "train.lr=loguniform(1e-3,1e-1)", "--samples", "2", "--tune", "train.lr"],
        "Error: --tune train.lr: not a swept key (grid: none)",
    ),
    "variant lr set": (
        ["--grid", LRS, "--tune", "train.lr", "--set", "variants.1.lr=0.1"],
        "Error: --tune train.lr: variants.1.lr is set, so train.lr does not reach variant "
        "adaptive; remove it to tune it",
    ),
    "seeds without tune": (
        ["--grid", LRS, "--eval-seeds", "3"],
        f"Error: {SMOKE}: --tune: --tune-seeds/--eval-seeds need --tune KEY",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_tune_input_is_one_line_exit_2_and_no_folder(case: str, tmp_path: Path) -> None:
    extra, message = BAD[case]
    runs_dir = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(SMOKE), *extra, "--runs-dir", str(runs_dir)])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.strip() == message
    assert not runs_dir.exists()


def test_a_sweep_file_protocol_plans_the_same(tmp_path: Path) -> None:
    file = tmp_path / "tune.yaml"
    file.write_text(
        f"base: {SMOKE}\ngrid:\n  variants.1.n: [1, 5]\n"
        "protocol: {tune: variants.1.n, tune_seeds: 2, eval_seeds: 4}\n"
    )
    plan = plan_sweep(file)
    assert plan.protocol == Protocol("variants.1.n", 2, 4)
    assert [c.seeds for c in plan.configs] == [[0, 1], [0, 1]]
    file.write_text(
        f"base: {SMOKE}\ngrid:\n  train.lr: [0.01, 0.1]\n"
        "protocol: {tune: train.lr, tune_seed: 3}\n"
    )
    with pytest.raises(ConfigError, match="did you mean 'tune_seeds'"):
        plan_sweep(file)


def test_the_evaluation_run_counts_in_the_size_limits(tmp_path: Path) -> None:
    args = ["sweep", str(SMOKE), "--grid", LRS, "--tune", "train.lr", "--eval-seeds", "300"]
    result = runner.invoke(app, [*args, "--runs-dir", str(tmp_path / "runs"), "--dry-run"])
    assert result.exit_code == 2
    assert "evaluation run: seeds 300 > 100" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_list_and_show_agree_on_a_tuned_sweep_without_its_evaluation_run(tmp_path: Path) -> None:
    import shutil

    from aaf_cli.sweeps.records import describe_sweep
    from aaf_cli.sweeps.result import Sweep

    swept = aaf.sweep(
        SMOKE,
        grid={"train.lr": [0.003, 0.01]},
        tune="train.lr",
        tune_seeds=1,
        eval_seeds=1,
        overrides=["train.steps=10"],
        runs_dir=tmp_path,
    )
    assert describe_sweep(swept.folder)["status"] == Sweep.open(swept.folder).status == "completed"
    shutil.rmtree(swept.folder / "tuned")
    assert describe_sweep(swept.folder)["status"] == Sweep.open(swept.folder).status == "partial"
