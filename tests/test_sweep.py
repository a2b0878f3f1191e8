"""aaf sweep: the points, the sweep folder, bad input, resume, Ctrl-C, list/show, the API."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

import aaf_cli as aaf
from aaf_cli.cli import app
from aaf_cli.errors import ConfigError
from aaf_cli.runs import find_runs, is_run_folder
from aaf_cli.sweeps.figure import draw
from aaf_cli.sweeps.records import POINTS_FILE, SWEEP_FILE, newest_first
from aaf_cli.sweeps.spec import plan_sweep

from .conftest import REPO, SMOKE, copy_of

runner = CliRunner()
# float64: the equality of a point and a plain run is checked byte for byte.
BASE = ["train.steps=20", "seeds=2", "dtype=float64"]
GRID = ["--grid", "train.lr=0.01,0.03", "--grid", "variants.1.n=1,5"]
RUN_FILES = ("config.yaml", "metrics.csv", "parameters.csv", "summary.json", "loss_curves.png")


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def read_points(folder: Path) -> list[dict[str, str]]:
    with (folder / POINTS_FILE).open(encoding="utf-8", newline="") as fh:
        assert fh.readline().startswith("# aaf sweep points format 1;")
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2x2 grid of the smoke config through the CLI: its sweep folder."""
    runs_dir = tmp_path_factory.mktemp("sweep")
    args = ["sweep", str(SMOKE), *GRID, *sets(BASE), "--runs-dir", str(runs_dir), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.parent == runs_dir and folder.name.endswith("_smoke-lr-n")
    return folder


def test_grid_sweep_writes_every_file(swept: Path) -> None:
    assert (swept / SWEEP_FILE).is_file() and (swept / "sweep.png").stat().st_size > 10_000
    points = sorted(p.name for p in (swept / "points").iterdir())
    assert points == ["000", "001", "002", "003"]
    for name in points:
        folder = swept / "points" / name
        assert all((folder / f).is_file() for f in RUN_FILES), name
        assert (folder / "checkpoints" / "adaptive.pt").is_file()
        assert json.loads((folder / "summary.json").read_text())["status"] == "completed"
        assert is_run_folder(folder)  # an ordinary run folder
    record = yaml.safe_load((swept / SWEEP_FILE).read_text())
    assert record["status"] == "completed"
    assert [a["key"] for a in record["axes"]] == ["train.lr", "variants.1.n"]
    # A sweep over a learning rate trains at the rates it sweeps: untuned.
    assert record["base"]["overrides"] == [*BASE, "tune=off"]
    assert [p["values"] for p in record["points"]] == [
        {"train.lr": 0.01, "variants.1.n": 1},
        {"train.lr": 0.01, "variants.1.n": 5},
        {"train.lr": 0.03, "variants.1.n": 1},
        {"train.lr": 0.03, "variants.1.n": 5},
    ]
    assert {p["status"] for p in record["points"]} == {"completed"}
    rows = read_points(swept)
    assert len(rows) == 8  # point x variant
    assert [(r["point"], r["variant"]) for r in rows[:2]] == [("0", "fixed"), ("0", "adaptive")]
    assert [r["train.lr"] for r in rows] == ["0.01"] * 4 + ["0.03"] * 4
    assert [r["variants.1.n"] for r in rows[::2]] == ["1", "5", "1", "5"]
    for r in rows:
        assert r["status"] == "completed" and r["seeds"] == "2"
        summary = json.loads((swept / r["folder"] / "summary.json").read_text())
        v = summary["variants"][r["variant"]]
        assert float(r["final_test_geomean"]) == pytest.approx(
            v["final_test"]["geomean"], rel=1e-12
        )
        # The interval is the t interval of the mean log10 over the two seeds.
        finals = [o["final_test"] for o in v["per_seed"]]
        geomean = 10 ** (sum(math.log10(f) for f in finals) / 2)
        assert float(r["final_test_geomean"]) == pytest.approx(geomean, rel=1e-12)
        assert float(r["final_test_ci_low"]) < geomean < float(r["final_test_ci_high"])
        if r["variant"] == "fixed":
            assert r["baseline"] == "fixed" and r["wins"] == "" and r["verdict"] == ""
        else:
            c = summary["comparisons"][0]
            assert (int(r["wins"]), int(r["pairs"])) == (c["wins"], 2)
            assert float(r["ratio"]) == c["ratio_geomean"]
            assert float(r["p"]) == c["p_value"] and r["verdict"] == c["verdict"]


def test_each_point_equals_a_plain_run(swept: Path, tmp_path: Path) -> None:
    record = yaml.safe_load((swept / SWEEP_FILE).read_text())
    for point in record["points"]:
        plain = aaf.run(
            SMOKE, overrides=[*BASE, "tune=off", *point["overrides"]], runs_dir=tmp_path
        )
        mine = swept / point["folder"]
        assert (mine / "metrics.csv").read_bytes() == (plain.folder / "metrics.csv").read_bytes()
        # The point's config.yaml says how to rerun it: the same overrides.
        header = (mine / "config.yaml").read_text().split("\nname:")[0]
        assert all(f"# override: --set {o}" in header for o in point["overrides"])
        assert yaml.safe_load((mine / "config.yaml").read_text()) == plain.config


def test_random_draws_are_deterministic_and_within_bounds() -> None:
    random = {
        "train.lr": "loguniform(1e-4, 1e-2)",
        "train.weight_decay": "uniform(0, 0.5)",
        "model.activation": "choice(tanh, elu, sin)",
    }
    plan = plan_sweep(SMOKE, grid={"variants.1.n": [1, 5]}, random_axes=random, samples=20)
    again = plan_sweep(SMOKE, grid={"variants.1.n": [1, 5]}, random_axes=random, samples=20)
    other = plan_sweep(
        SMOKE, grid={"variants.1.n": [1, 5]}, random_axes=random, samples=20, sweep_seed=1
    )
    assert len(plan.points) == 40 and [p.values for p in plan.points] == [
        p.values for p in again.points
    ]
    assert [p.values for p in plan.points] != [p.values for p in other.points]
    draws = [p.values for p in plan.points[:20]]
    # Each random draw is crossed with every grid value.
    assert [p.values["variants.1.n"] for p in plan.points] == [1] * 20 + [5] * 20
    assert [
        {k: v for k, v in p.values.items() if k != "variants.1.n"} for p in plan.points[20:]
    ] == [{k: v for k, v in d.items() if k != "variants.1.n"} for d in draws]
    lrs = [d["train.lr"] for d in draws]
    assert all(1e-4 <= v <= 1e-2 for v in lrs)
    # log-uniform: about as many draws per decade
    assert 4 <= sum(v < 1e-3 for v in lrs) <= 16
    assert all(0 <= d["train.weight_decay"] <= 0.5 for d in draws)
    assert {d["model.activation"] for d in draws} == {"tanh", "elu", "sin"}
    assert [c.model.activation for c in plan.configs[:20]] == [d["model.activation"] for d in draws]


def test_the_example_sweep_file_plans_the_n_sweep() -> None:
    plan = plan_sweep(REPO / "sweeps" / "elu_n.yaml")
    assert plan.name == "elu_n" and plan.keys == ["variants.1.n"]
    assert [c.variants[1].n for c in plan.configs] == [1, 2, 5, 10, 20]
    assert {(len(c.seed_list), c.train.steps, c.target.name) for c in plan.configs} == {
        (5, 3000, "sine")
    }
    assert plan.base_source.endswith("configs/elu.yaml")


# (sweep file text or None, extra arguments, fragments of the one-line message)
BAD: dict[str, tuple[str | None, list[str], list[str]]] = {
    "bad point": (
        None,
        ["--grid", "train.lr=0.01,-1"],
        ["smoke.yaml: point 1 (train.lr=-1): train.lr: Input should be greater than 0"],
    ),
    "empty grid list": ("base: {smoke}\ngrid:\n  train.lr: []\n", [], ["grid.train.lr", "empty"]),
    "key in --grid and file": (
        "base: {smoke}\ngrid:\n  train.lr: [0.01, 0.1]\n",
        ["--grid", "train.lr=0.5"],
        ["train.lr", "swept twice"],
    ),
    "malformed --grid": (None, ["--grid", "train.lr"], ["--grid train.lr", "expected KEY=V1,V2"]),
    "overlapping swept keys": (
        None,
        ["--grid", "train.lr=1e-3,2e-3", "--grid", "train=[{{lr: 0.5, steps: 10}}]"],
        ["train", "overlaps the swept key train.lr"],
    ),
    "set under a swept key": (
        None,
        ["--grid", "train=[{{lr: 0.5, steps: 10}}]", "--set", "train.steps=10"],
        ["--set train.steps=10", "overlaps the swept key train"],
    ),
    "unknown distribution": (
        None,
        ["--random", "train.lr=logunifrom(1e-4,1e-2)", "--samples", "3"],
        ["unknown distribution 'logunifrom'", "did you mean 'loguniform'"],
    ),
    "samples without random": (
        None,
        ["--grid", "seeds=1,2", "--samples", "3"],
        ["samples", "needs a random axis"],
    ),
    "unknown sweep key": (
        "base: {smoke}\ngird:\n  train.lr: [0.1]\n",
        [],
        ["bad.yaml:2:1", "unknown key 'gird'", "did you mean 'grid'"],
    ),
    "protocol": (
        "base: {smoke}\ngrid: {{variants.1.n: [1, 5]}}\nprotocol: {{tune: train.lr}}\n",
        [],
        ["protocol.tune: not a swept key (grid: variants.1.n)"],
    ),
    "unknown swept key": (None, ["--grid", "train.lrr=1,2"], ["train.lrr", "did you mean 'lr'"]),
    "wrong value type": (None, ["--grid", "train.steps=ten,20"], ["train.steps", "integer"]),
    "nothing to sweep": (None, [], ["nothing to sweep"]),
    "base and config": (
        "base: {smoke}\nconfig: {{seeds: 2}}\ngrid: {{seeds: [1]}}\n",
        [],
        ["not both"],
    ),
    # Ray absent, an unreachable --ray-address: tests/test_ray.py (they need Ray or its absence).
    "ray address without ray": (
        None,
        ["--grid", "seeds=1,2", "--ray-address", "127.0.0.1:6379"],
        ["--ray-address needs --executor ray"],
    ),
    "max parallel 0": (None, ["--grid", "seeds=1,2", "--max-parallel", "0"], ["at least 1"]),
    "max parallel without ray": (
        None,
        ["--grid", "seeds=1,2", "--max-parallel", "2"],
        ["--max-parallel needs --executor ray"],
    ),
    "resume not a sweep": (None, ["--resume", "{tmp}"], ["not a sweep folder"]),
    "resume and grid": (None, ["--resume", "{tmp}", "--grid", "seeds=1,2"], ["alone"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_folder(case: str, tmp_path: Path) -> None:
    text, extra, fragments = BAD[case]
    runs_dir = tmp_path / "runs"
    target = str(SMOKE)
    if text is not None:
        target = str(tmp_path / "bad.yaml")
        Path(target).write_text(text.format(smoke=SMOKE))
    if "--resume" in extra:
        target = ""
    args = ["sweep", *([target] if target else []), *[a.format(tmp=tmp_path) for a in extra]]
    result = runner.invoke(app, [*args, "--runs-dir", str(runs_dir)])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not runs_dir.exists()


def test_installed_command_refuses_a_bad_point(tmp_path: Path) -> None:
    aaf_bin = Path(sys.executable).with_name("aaf")
    out = subprocess.run(
        [str(aaf_bin), "sweep", str(SMOKE), "--grid", "train.lr=0.01,-1", "--grid",
         "seeds=1,2", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"Error: {SMOKE}: point 2 (train.lr=-1, seeds=1): train.lr: Input should be greater "
        "than 0 (got -1)"
    )
    assert not (tmp_path / "runs").exists()


def test_dry_run_prints_points_and_estimate_and_writes_nothing(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    args = ["sweep", str(SMOKE), *GRID, *sets(BASE), "--runs-dir", str(runs_dir), "--dry-run"]
    result = runner.invoke(app, args, env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    assert "4 points (dry run: nothing written)" in result.stdout
    assert "0  train.lr=0.01, variants.1.n=1" in result.stdout
    assert "3  train.lr=0.03, variants.1.n=5" in result.stdout
    assert "estimate: 4 points, 16 models in all" in result.stdout
    assert not runs_dir.exists()
    # The soft limits apply to the whole sweep.
    big = ["sweep", str(SMOKE), "--grid", "seeds=60,70", "--set", "variants=[{kind: fixed}]",
           "--runs-dir", str(runs_dir), "--dry-run"]  # fmt: skip
    assert runner.invoke(app, big).exit_code == 0
    over = runner.invoke(app, [*big[:-1], "--set", "train.steps=300000", "--dry-run"])
    assert over.exit_code == 2 and "--force" in over.stderr and "point 0" in over.stderr
    assert not runs_dir.exists()
    # device: cuda on a machine without CUDA: refused here, checked on the nodes on Ray (as
    # the sweep itself does; the dry run connects to no cluster).
    cuda = [*args, "--set", "device=cuda"]
    if not torch.cuda.is_available():
        refused = runner.invoke(app, cuda)
        assert refused.exit_code == 2 and "cuda" in refused.stderr, refused.stderr
    on_ray = runner.invoke(app, [*cuda, "--executor", "ray"], env={"COLUMNS": "100"})
    assert on_ray.exit_code == 0, on_ray.stderr
    assert "4 points (dry run: nothing written)" in on_ray.stdout
    assert not runs_dir.exists()


def test_resume_runs_only_the_missing_points(swept: Path, tmp_path: Path) -> None:
    copy = copy_of(swept, tmp_path)
    (copy / "points" / "002" / "summary.json").unlink()
    kept = {p: (copy / "points" / p / "summary.json").stat().st_mtime_ns for p in ("000", "003")}
    result = runner.invoke(app, ["sweep", "--resume", str(copy), "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(copy)
    for p, mtime in kept.items():
        assert (copy / "points" / p / "summary.json").stat().st_mtime_ns == mtime
    for p in ("000", "001", "002", "003"):
        # Deterministic: the rerun point has the numbers it had.
        original, again = (f / "points" / p / "metrics.csv" for f in (swept, copy))
        assert original.read_bytes() == again.read_bytes()
    assert [r["status"] for r in read_points(copy)] == ["completed"] * 8


def test_ctrl_c_keeps_completed_points_and_marks_the_rest(tmp_path: Path) -> None:
    started: list[int] = []
    polls: list[int] = []

    def stop() -> bool:
        if started and started[-1] == 1:
            polls.append(1)
        return len(polls) > 5  # a few steps into point 1

    def on_point(event: Any) -> None:
        if event.phase == "start":
            started.append(event.index)

    result = aaf.sweep(
        SMOKE, grid={"variants.1.n": [1, 2, 5]}, overrides=BASE, runs_dir=tmp_path,
        stop=stop, on_point=on_point, pack=False,
    )  # fmt: skip
    assert result.status == "interrupted" and started == [0, 1]
    assert [p.status for p in result.points] == ["completed", "interrupted", "pending"]
    assert [r["status"] for r in read_points(result.folder)] == [
        "completed", "completed", "interrupted", "interrupted", "pending", "pending"
    ]  # fmt: skip
    assert yaml.safe_load((result.folder / SWEEP_FILE).read_text())["status"] == "interrupted"
    assert not (result.folder / "points" / "002").exists()
    assert result.points[1].run is not None and result.points[1].run.status == "interrupted"
    # --resume finishes it: point 1 from the start, point 2 new.
    resumed = aaf.sweep(resume=result.folder)
    assert resumed.status == "completed"
    assert [p.status for p in resumed.points] == ["completed"] * 3


def test_list_shows_a_sweep_as_one_row(swept: Path) -> None:
    result = runner.invoke(app, ["list", "--runs-dir", str(swept.parent), "--json"])
    assert result.exit_code == 0, result.stderr
    entries = json.loads(result.stdout)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["kind"] == "sweep" and entry["folder"] == str(swept)
    assert (entry["points"], entry["points_done"], entry["status"]) == (4, 4, "completed")
    assert entry["variants"] == ["fixed", "adaptive"] and entry["seeds"] == 2
    assert find_runs(swept.parent) == []  # the sweep is not a run; its points are
    table = runner.invoke(app, ["list", "--runs-dir", str(swept.parent)], env={"COLUMNS": "200"})
    assert entry["keys"] == ["train.lr", "variants.1.n"]
    assert "sweep of train.lr," in table.stdout and "variants.1.n: 4 points," in table.stdout
    assert "completed" in table.stdout and swept.name.endswith("_smoke-lr-n")
    assert "None" not in table.stdout


def test_newest_first_merges_runs_and_sweeps() -> None:
    entries = [
        {"folder": "r/2026-01-02_00-00-00_b"},
        {"folder": "r/2026-01-01_00-00-00_a"},
        {"folder": "r/2026-01-03_00-00-00_s", "kind": "sweep"},
    ]
    assert [e["folder"][-1] for e in newest_first(entries)] == ["s", "b", "a"]


def test_show_prints_the_points_table_and_a_point_is_a_run(swept: Path) -> None:
    result = runner.invoke(app, ["show", str(swept)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    out = " ".join(result.stdout.split())  # sentences wrap at 80 columns
    assert "sweep smoke-lr-n: 4/4 points done, status completed" in out
    assert "swept train.lr: 0.01, 0.03" in out and "swept variants.1.n: 1, 5" in out
    assert re.search(
        r"point 3 \(train.lr=0.03, variants.1.n=5\): adaptive (wins against|loses to|is even "
        r"with) fixed",
        out,
    )
    assert "baseline" in out and "final test" in out
    # By name under --runs-dir, too.
    named = runner.invoke(app, ["show", "smoke-lr-n", "--runs-dir", str(swept.parent)])
    assert named.exit_code == 0 and "4/4 points done" in named.stdout
    point = runner.invoke(app, ["show", str(swept / "points" / "003")])
    assert point.exit_code == 0, point.stderr
    assert "status: completed" in point.stdout and "variant adaptive: global (" in point.stdout
    assert "n=5.0" in point.stdout
    # compare takes the points, and names a sweep folder given as a run.
    drawn = runner.invoke(
        app, ["compare", str(swept / "points" / "000"), str(swept / "points" / "003"),
              "--out", str(swept.parent / "cmp.png")],
    )  # fmt: skip
    assert drawn.exit_code == 0, drawn.stderr
    wrong = runner.invoke(app, ["compare", str(swept)])
    assert wrong.exit_code == 2 and "is a sweep folder" in wrong.stderr


def test_the_api_returns_what_the_cli_wrote(swept: Path, tmp_path: Path) -> None:
    result = aaf.sweep(
        SMOKE, grid={"train.lr": [0.01, 0.03], "variants.1.n": [1, 5]}, overrides=BASE,
        runs_dir=tmp_path,
    )  # fmt: skip
    assert isinstance(result, aaf.Sweep) and result.status == "completed"
    assert result.keys == ["train.lr", "variants.1.n"] and len(result.points) == 4
    cli_rows = read_points(swept)
    assert len(result.table) == len(cli_rows) == 8
    for mine, theirs in zip(result.table, cli_rows):
        for column in (
            "final_test_geomean",
            "test_at_best_val_geomean",
            "ratio",
            "p",
            "final_test_ci_low",
        ):
            assert (mine[column] is None) == (theirs[column] == "")
            if mine[column] is not None:
                assert mine[column] == float(theirs[column])
        assert (mine["train.lr"], mine["variants.1.n"]) == (
            float(theirs["train.lr"]), int(theirs["variants.1.n"])
        )  # fmt: skip
    run = result.points[3].run
    assert run is not None and run.status == "completed" and run.config["train"]["lr"] == 0.03
    assert result.verdicts[0].startswith("point 0 (train.lr=0.01, variants.1.n=1): adaptive")
    assert aaf.Sweep.open(result.folder).table == result.table
    frame = result.to_pandas()
    assert list(frame["variant"]) == ["fixed", "adaptive"] * 4
    # sweep.png draws exactly the table's numbers: x the first key, a panel per second-key value.
    fig = draw(result.table, result.keys, tmp_path / "best.png", "title", "best")
    first = fig.axes[0]
    assert first.get_title() == "variants.1.n=1" and first.get_xscale() == "linear"
    fixed = [r for r in result.table if r["variant"] == "fixed" and r["variants.1.n"] == 1]
    line = first.get_lines()[0]
    assert list(line.get_xdata()) == [0.01, 0.03]
    assert list(line.get_ydata()) == [r["test_at_best_val_geomean"] for r in fixed]


def test_sweep_file_with_inline_config_and_set(tmp_path: Path) -> None:
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        "name: inline\nconfig:\n  name: tiny\n  target: {name: sine, n_train: 32, n_test: 64}\n"
        "  model: {layers: [1, 4, 1], activation: tanh}\n"
        "set: {seeds: 2, train.steps: 10, train.log_every: 5}\n"
        "random: {train.lr: 'loguniform(1e-3, 1e-1)'}\nsamples: 2\nsweep_seed: 7\n"
    )
    plan = plan_sweep(sweep_file)
    assert plan.name == "inline" and len(plan.points) == 2 and plan.sweep_seed == 7
    assert {(c.name, c.train.steps, len(c.seed_list)) for c in plan.configs} == {("tiny", 10, 2)}
    assert plan.points[0].values != plan.points[1].values
    with pytest.raises(ConfigError, match="is swept twice"):
        plan_sweep(sweep_file, random_axes={"train.lr": "uniform(0.1, 0.2)"})


def test_sigint_stops_the_sweep_keeps_its_points_and_exits_130(tmp_path: Path) -> None:
    aaf_bin = Path(sys.executable).with_name("aaf")
    proc = subprocess.Popen(
        [str(aaf_bin), "sweep", str(SMOKE), "--grid", "variants.1.n=1,5", "--runs-dir",
         str(tmp_path), "-q", "--set", "train.steps=1000000", "--set", "train.log_every=100",
         "--set", "train.compile=false", "--set", "tune=off", "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob("*/points/000/metrics.csv")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    folder = Path(out.strip().splitlines()[-1])
    # Both points differ only in n: packed, they train as one ensemble and stop together,
    # each written as an ordinary interrupted run.
    assert [r["status"] for r in read_points(folder)] == ["interrupted"] * 4
    assert yaml.safe_load((folder / SWEEP_FILE).read_text())["status"] == "interrupted"
    for point in ("000", "001"):
        summary = json.loads((folder / "points" / point / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["packed"]["points"] == 2
    assert not list(folder.rglob(".*tmp*"))


def test_list_valued_keys_and_api_grid_values() -> None:
    from aaf_cli.sweeps.spec import parse_grid_option

    assert parse_grid_option("model.layers=[1,8,1],[1,16,1]") == (
        "model.layers",
        [[1, 8, 1], [1, 16, 1]],
    )
    assert parse_grid_option("train.lr=[1e-3, 1e-2]") == ("train.lr", [1e-3, 1e-2])
    with pytest.raises(aaf.ConfigError, match="expected a list of values"):
        aaf.sweep(SMOKE, grid={"train.lr": 1e-3}, dry_run=True)


def test_two_numeric_keys_also_draw_heat_maps_with_every_cell_annotated(swept: Path) -> None:
    from aaf_cli.sweeps.figure import HEATMAP_FILE, draw_heatmap
    from aaf_cli.sweeps.records import point_rows, read_record

    assert (swept / HEATMAP_FILE).stat().st_size > 10_000
    record = read_record(swept)
    rows = point_rows(swept, record)
    fig = draw_heatmap(rows, record.keys, swept / "again.png", "t")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    # adaptive: 4 metric cells; fixed, which n does not touch: one column of 2 (one per
    # rate, n across); adaptive / fixed: 4 ratio cells
    ratios = sorted(t for t in texts if t.startswith("x"))
    expected = sorted(f"x{float(r['ratio']):.2g}" for r in rows if r["variant"] == "adaptive")
    assert len(texts) == 10 and ratios == expected
    fixed = next(ax for ax in fig.axes if ax.get_title().startswith("fixed (baseline)"))
    assert len(fixed.texts) == 2 and [t.get_text() for t in fixed.get_xticklabels()] == [
        "every variants.1.n"
    ]
    assert fixed.get_ylabel() == "train.lr"  # the key the baseline ignores went across
    # One colour bar for the two panels on the shared scale, one for the ratios.
    assert sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>") == 2
    assert draw_heatmap(rows, record.keys[:1], swept / "none.png", "t") is None
    from aaf_cli.sweeps.local import quantity_of

    assert quantity_of(record) == "test MSE"
    assert not (swept / "none.png").exists()


def test_a_sweep_is_named_by_what_it_sweeps() -> None:
    from aaf_cli.sweeps.spec import Axis, default_name

    base = aaf.load_config(SMOKE)
    axes = [Axis("variants.1.n", "grid", (1, 5)), Axis("train.lr", "grid", (0.01, 0.03))]
    assert default_name(base, axes) == "smoke-n-lr"
    two = [Axis("variants.1.n", "grid", (1,)), Axis("variants.2.n", "grid", (5,))]
    assert default_name(base, two) == "smoke-n1-n2"
    assert default_name(base, [Axis("model.layers", "grid", ([1, 4, 1],))]) == "smoke-layers"
    assert default_name(base, []) == "smoke-sweep"


def test_packed_points_share_their_jobs_time_and_the_closing_line_names_the_heat_map(
    tmp_path: Path,
) -> None:
    result = runner.invoke(
        app,
        ["sweep", str(SMOKE), *GRID, *sets([*BASE, "tune=off"]), "--runs-dir", str(tmp_path)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(lines) == 4
    times = [re.search(r"\(job of 4 packed points: ([\d.]+) s\)", line) for line in lines]
    assert all(times) and len({t.group(1) for t in times if t}) == 1  # one job, one time
    closing = " ".join(result.stdout.split())
    assert "sweep_heatmap.png (the heat map)" in closing
    assert (Path(result.stdout.strip().splitlines()[-1]) / "sweep_heatmap.png").is_file()


def test_resume_dry_run_lists_the_points_to_run_and_the_lines_count_to_n(
    swept: Path, tmp_path: Path
) -> None:
    copy = copy_of(swept, tmp_path)
    shutil.rmtree(copy / "points" / "001")
    (copy / "points" / "003" / "summary.json").unlink()
    files = sorted((str(p), p.stat().st_mtime_ns) for p in copy.rglob("*"))
    dry = runner.invoke(app, ["sweep", "--resume", str(copy), "--dry-run"], env={"COLUMNS": "100"})
    assert dry.exit_code == 0, dry.stderr
    assert "sweep smoke-lr-n: 4 points, 2 already done, 2 to run (dry run: nothing written)" in (
        dry.stdout
    )
    listed = re.findall(r"^\s+(\d)  train\.lr=", dry.stdout, re.MULTILINE)
    assert listed == ["1", "3"]
    assert "job 0: points 1, 3 as one ensemble (8 models)" in dry.stdout
    assert "estimate: 2 points, 8 models in all" in dry.stdout
    assert sorted((str(p), p.stat().st_mtime_ns) for p in copy.rglob("*")) == files
    planned = aaf.sweep(resume=copy, dry_run=True)
    assert planned.folder is None and planned.check is not None
    assert [p.status for p in planned.points] == ["completed", "planned", "completed", "planned"]
    assert len(planned.check.estimates) == 2
    # The run: [k/N] counts the points finished, the ones done before included.
    result = runner.invoke(app, ["sweep", "--resume", str(copy)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert [line.split(" (")[0] for line in lines] == ["[3/4] point 1", "[4/4] point 3"]
    done = runner.invoke(app, ["sweep", "--resume", str(copy), "--dry-run"])
    assert "4 points, 4 already done, 0 to run" in done.stdout
    assert "estimate:" not in done.stdout


def test_max_parallel_needs_ray_through_the_api_too(swept: Path, tmp_path: Path) -> None:
    from aaf_cli.sweeps.lock import LOCK_FILE

    with pytest.raises(aaf.UsageError, match=r"^--max-parallel needs --executor ray$"):
        aaf.sweep(SMOKE, grid={"seeds": [1, 2]}, runs_dir=tmp_path / "runs", max_parallel=2)
    assert not (tmp_path / "runs").exists()
    copy = copy_of(swept, tmp_path)
    with pytest.raises(aaf.UsageError, match="--max-parallel needs --executor ray"):
        aaf.sweep(resume=copy, max_parallel=2)
    assert not (copy / LOCK_FILE).exists()  # the lock a refused resume took is released
