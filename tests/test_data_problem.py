"""Data-file targets end to end: a CSV/NPZ of measurements instead of a formula.

The run folder's records (summary, fit.csv, the resolved config), reruns from anywhere, show and
compare, a sweep whose base config names its file relatively, tuning that reads the validation
rows and never the test rows, and the catalogue of bad data files: one line, exit code 2, no run
folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from aaf_cli.cli import app
from aaf_cli.config import load_config
from aaf_cli.experiment import make_dataset
from aaf_cli.models import load_checkpoint
from aaf_cli.problems.datafile import fit_scaling, split_rows

from .conftest import only_run

runner = CliRunner()

ROWS = 200
VALIDATION, TEST, SPLIT_SEED = 0.15, 0.25, 3
# Eager and single-threaded: two runs of one config give byte-identical numbers.
EXACT = ["--set", "train.compile=false", "--set", "threads=1"]


def smooth_columns(rows: int = ROWS, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-1.0, 2.0, rows)
    x2 = rng.uniform(0.5, 3.0, rows)
    return {"x1": x1, "x2": x2, "y": np.sin(2.0 * x1) * np.exp(-0.3 * x2) + 0.1 * x2}


def write_csv(path: Path, columns: dict[str, np.ndarray], text_column: bool = True) -> Path:
    """Columns as a CSV with exact (repr) floats, and an unused text column in between."""
    names = list(columns)
    header = [names[0], "label", *names[1:]] if text_column else names
    lines = [",".join(header)]
    for k, row in enumerate(zip(*(columns[n].tolist() for n in names))):
        cells = [repr(float(v)) for v in row]
        if text_column:
            cells.insert(1, f"sample {k}")
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def config_text(
    data: str,
    *,
    name: str = "measured",
    seeds: int = 2,
    steps: int = 40,
    inputs: str = "[x1, x2]",
    output: str = "y",
    layers: int = 2,
    split: str | None = None,
    tune: str = "off",
    dtype: str = "float32",
) -> str:
    split = split or f"{{validation: {VALIDATION}, test: {TEST}, seed: {SPLIT_SEED}}}"
    return (
        f"name: {name}\n"
        f"seeds: {seeds}\n"
        f"dtype: {dtype}\n"
        "target:\n"
        f"  data: {data}\n"
        f"  inputs: {inputs}\n"
        f"  output: {output}\n"
        f"  split: {split}\n"
        "  standardize: true\n"
        f"model: {{layers: [{layers}, 8, 1], activation: tanh}}\n"
        f"train: {{steps: {steps}, lr: 3.0e-3, log_every: 10}}\n"
        f"tune: {tune}\n"
    )


def summary_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    return data


def run_folder(result: Any) -> Path:
    """The folder a quiet ``aaf run`` printed last."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return Path(result.stdout.strip().splitlines()[-1])


def read_fit(folder: Path) -> list[dict[str, str]]:
    with (folder / "fit.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CSV of two inputs next to its config, run once from the CLI."""
    root = tmp_path_factory.mktemp("measured")
    project = root / "project"
    project.mkdir()
    columns = smooth_columns()
    data = write_csv(project / "m.csv", columns)
    config = project / "measured.yaml"
    config.write_text(config_text("m.csv"))
    runs = root / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the config is named relatively, its data relative to its folder
        result = runner.invoke(
            app, ["run", "project/measured.yaml", "--runs-dir", str(runs), "-q", *EXACT]
        )
    folder = only_run(runs)
    assert run_folder(result) == folder
    return {"root": root, "data": data, "config": config, "columns": columns, "folder": folder}


# --- 1. end to end --------------------------------------------------------------------------


def test_data_run_records_the_file_its_split_and_its_scaling(measured: dict[str, Any]) -> None:
    folder, data, columns = measured["folder"], measured["data"], measured["columns"]
    summary = summary_of(folder)
    assert summary["status"] == "completed"
    assert summary["problem"] == "data"
    entry = summary["data"]
    assert entry["file"] == str(data.resolve())
    assert entry["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert entry["rows"] == ROWS
    assert entry["columns"] == ["x1", "label", "x2", "y"]
    assert entry["input_columns"] == ["x1", "x2"] and entry["output"] == "y"
    assert entry["split"] == {"validation": VALIDATION, "test": TEST, "seed": SPLIT_SEED}
    assert entry["n_val"] == round(VALIDATION * ROWS) == 30
    assert entry["n_test"] == round(TEST * ROWS) == 50
    assert entry["n_train"] == ROWS - 30 - 50
    assert entry["n_train"] + entry["n_val"] + entry["n_test"] == ROWS
    # The scaling is the training rows' own mean and population std, of each used column.
    split = split_rows(ROWS, VALIDATION, TEST, SPLIT_SEED)
    assert len(split.train) == entry["n_train"]
    scaled = entry["standardized"]
    assert set(scaled) == {"x1", "x2", "y"}
    for name in ("x1", "x2", "y"):
        train = columns[name][split.train]
        assert scaled[name]["mean"] == pytest.approx(float(np.mean(train)), abs=1e-12)
        assert scaled[name]["std"] == pytest.approx(float(np.std(train)), abs=1e-12)
        # Not the whole file's statistics (the split did matter).
        assert scaled[name]["mean"] != pytest.approx(float(np.mean(columns[name])), abs=1e-9)
    assert "MSE on the test rows" in summary["metrics"]["test"]
    assert "MSE on the training rows" in summary["metrics"]["train"]
    assert "standard deviation" in summary["metrics"]["test"]
    assert summary["tuning"]["on"] is False


def test_fit_csv_holds_the_test_rows_in_file_units(measured: dict[str, Any]) -> None:
    folder, columns = measured["folder"], measured["columns"]
    assert (folder / "fit.png").stat().st_size > 1000
    assert (folder / "loss_curves.png").is_file() and (folder / "metrics.csv").is_file()
    rows = read_fit(folder)
    test = split_rows(ROWS, VALIDATION, TEST, SPLIT_SEED).test
    assert len(rows) == len(test)
    header = list(rows[0])
    assert header[:3] == ["x1", "x2", "y"]
    predictions = header[3:]
    assert len(predictions) == 2
    assert {p.rsplit("_seed", 1)[0] for p in predictions} == {"fixed", "adaptive"}
    # Exactly the file's values of the test rows, in the split's order (the file's repr floats
    # read back bit for bit).
    assert [float(r["y"]) for r in rows] == columns["y"][test].tolist()
    assert [float(r["x1"]) for r in rows] == columns["x1"][test].tolist()
    assert [float(r["x2"]) for r in rows] == columns["x2"][test].tolist()
    # Predictions in the file's units: each checkpoint's network on the standardized test
    # inputs, scaled back by the training rows' output mean and std.
    scaled = summary_of(folder)["data"]["standardized"]
    x = np.stack([columns["x1"][test], columns["x2"][test]], axis=1)
    x = (x - [scaled["x1"]["mean"], scaled["x2"]["mean"]]) / [
        scaled["x1"]["std"],
        scaled["x2"]["std"],
    ]
    for name in predictions:
        variant, seed = name.rsplit("_seed", 1)
        model = load_checkpoint(folder / "checkpoints" / f"{variant}.pt", int(seed))
        with torch.no_grad():
            out = model(torch.tensor(x, dtype=torch.float32))[:, 0].double().numpy()
        expected = out * scaled["y"]["std"] + scaled["y"]["mean"]
        got = np.array([float(r[name]) for r in rows])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5, err_msg=name)


def test_resolved_config_stores_the_data_path_absolute_and_reruns_from_anywhere(
    measured: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, data = measured["folder"], measured["data"]
    stored = yaml.safe_load((folder / "config.yaml").read_text())
    assert stored["target"]["data"] == str(data.resolve())
    assert Path(stored["target"]["data"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert not (elsewhere / "m.csv").exists()
    again = run_folder(
        runner.invoke(
            app, ["run", str(folder / "config.yaml"), "--runs-dir", str(tmp_path / "r"), "-q"]
        )
    )
    again = again if again.is_absolute() else elsewhere / again
    assert (again / "metrics.csv").read_bytes() == (folder / "metrics.csv").read_bytes()
    assert summary_of(again)["data"]["sha256"] == summary_of(folder)["data"]["sha256"]


# --- 2. show and compare --------------------------------------------------------------------


def test_show_names_the_file_and_its_columns(measured: dict[str, Any]) -> None:
    result = runner.invoke(app, ["show", str(measured["folder"])])
    assert result.exit_code == 0, result.stderr
    assert "m.csv" in result.stdout
    assert "x1" in result.stdout and "x2" in result.stdout
    assert "-> y" in result.stdout


def test_list_names_the_data_file(measured: dict[str, Any]) -> None:
    # Wide enough for every column (a narrow terminal leaves the target out, and says so).
    result = runner.invoke(
        app, ["list", "--runs-dir", str(measured["root"] / "runs")], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.stderr
    assert "m.csv" in result.stdout and "measured" in result.stdout


def test_csv_npz_and_parquet_of_the_same_numbers_train_alike(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    columns = smooth_columns(rows=90)
    write_csv(tmp_path / "d.csv", columns, text_column=False)
    np.savez(tmp_path / "d.npz", **columns)
    pandas.DataFrame(columns).to_parquet(tmp_path / "d.parquet")
    folders = {}
    for ext in ("csv", "npz", "parquet"):
        config = tmp_path / f"{ext}.yaml"
        config.write_text(config_text(f"d.{ext}", seeds=1, steps=20, name=ext))
        folders[ext] = run_folder(
            runner.invoke(
                app, ["run", str(config), "--runs-dir", str(tmp_path / "runs"), "-q", *EXACT]
            )
        )
    entries = {ext: summary_of(f)["data"] for ext, f in folders.items()}
    for ext, entry in entries.items():
        path = tmp_path / f"d.{ext}"
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (entry["rows"], entry["n_train"], entry["n_val"], entry["n_test"]) == (
            90,
            90 - round(VALIDATION * 90) - round(TEST * 90),
            round(VALIDATION * 90),
            round(TEST * 90),
        )
        assert entry["standardized"] == entries["csv"]["standardized"]
    metrics = {ext: (f / "metrics.csv").read_bytes() for ext, f in folders.items()}
    assert metrics["npz"] == metrics["csv"] and metrics["parquet"] == metrics["csv"]
    fits = {ext: (f / "fit.csv").read_bytes() for ext, f in folders.items()}
    assert fits["npz"] == fits["csv"] and fits["parquet"] == fits["csv"]


def test_compare_two_data_runs_writes_its_figure(measured: dict[str, Any], tmp_path: Path) -> None:
    project = measured["config"].parent
    other = run_folder(
        runner.invoke(
            app,
            [
                "run",
                str(measured["config"]),
                "--runs-dir",
                str(tmp_path / "runs"),
                "-q",
                "--set",
                "name=measured_b",
                "--set",
                "seeds=1",
                *EXACT,
            ],
        )
    )
    assert summary_of(other)["data"]["file"] == str(project / "m.csv")
    out = tmp_path / "compare.png"
    result = runner.invoke(
        app,
        [
            "compare",
            str(measured["folder"]),
            str(other),
            "--out",
            str(out),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert out.stat().st_size > 1000
    assert out.with_suffix(".csv").is_file()
    assert "Traceback" not in result.stdout + result.stderr


# --- 3. a sweep -----------------------------------------------------------------------------


def test_sweep_resolves_the_data_file_against_the_base_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    data = write_csv(project / "m.csv", smooth_columns(rows=120))
    (project / "base.yaml").write_text(config_text("m.csv", seeds=1, steps=20, name="base"))
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    sweep_file = sweeps / "lr.yaml"
    sweep_file.write_text(
        "name: data_lr\nbase: ../project/base.yaml\nset:\n  train.compile: false\n"
        "  threads: 1\ngrid:\n  train.lr: [0.001, 0.01]\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(
        app, ["sweep", str(sweep_file), "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    swept = Path(result.stdout.strip().splitlines()[-1])
    points = sorted(p for p in (swept / "points").iterdir() if p.is_dir())
    assert len(points) == 2
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    rates = []
    for point in points:
        summary = summary_of(point)
        assert summary["status"] == "completed"
        assert summary["problem"] == "data"
        assert summary["data"]["sha256"] == digest
        assert summary["data"]["file"] == str(data.resolve())
        assert summary["data"]["rows"] == 120
        stored = yaml.safe_load((point / "config.yaml").read_text())
        rates.append(stored["train"]["lr"])
    assert sorted(rates) == [0.001, 0.01]


def test_sweep_from_another_folder_never_reads_a_file_of_that_name_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command-line sweep of a base config: its points read the file beside the base config,
    not one of the same name in the working folder."""
    project = tmp_path / "project"
    project.mkdir()
    data = write_csv(project / "m.csv", smooth_columns(rows=120))
    base = project / "base.yaml"
    base.write_text(config_text("m.csv", seeds=1, steps=20, name="base"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    decoy = write_csv(elsewhere / "m.csv", smooth_columns(rows=90, seed=5))
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(
        app,
        [
            "sweep",
            str(base),
            "--grid",
            "seeds=1,2",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--quiet",
            *EXACT,
        ],
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    swept = Path(result.stdout.strip().splitlines()[-1])
    points = sorted(p for p in (swept / "points").iterdir() if p.is_dir())
    assert len(points) == 2
    for point in points:
        entry = summary_of(point)["data"]
        assert entry["file"] == str(data.resolve()), entry["file"]
        assert entry["file"] != str(decoy.resolve())
        assert entry["rows"] == 120
        assert entry["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()


def test_sweep_file_with_an_inline_config_reads_data_beside_the_sweep_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeps = tmp_path / "sweeps"
    sweeps.mkdir()
    data = write_csv(sweeps / "m.csv", smooth_columns(rows=100))
    inline = yaml.safe_load(config_text("m.csv", seeds=1, steps=20, name="inline"))
    inline["target"]["split"] = {"validation": 0.1, "test": 0.2, "seed": 0}
    (sweeps / "seeds.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "inline_seeds",
                "config": inline,
                "set": {"train.compile": False, "threads": 1},
                "grid": {"seeds": [1, 2]},
            }
        )
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(
        app,
        ["sweep", str(sweeps / "seeds.yaml"), "--runs-dir", str(tmp_path / "runs"), "--quiet"],
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    swept = Path(result.stdout.strip().splitlines()[-1])
    points = sorted(p for p in (swept / "points").iterdir() if p.is_dir())
    assert [summary_of(p)["data"]["file"] for p in points] == [str(data.resolve())] * 2
    assert {summary_of(p)["problem"] for p in points} == {"data"}


# --- 4. tuning reads the validation rows ----------------------------------------------------


def tuned_numbers(summary: dict[str, Any]) -> dict[str, Any]:
    """The tuning record's choices and validation numbers (no times)."""
    tuning = summary["tuning"]
    assert tuning["on"] is True and tuning["split"] == "validation"
    return {
        "chosen": tuning["chosen"],
        "seeds": tuning["seeds"],
        "variants": {
            name: {k: v[k] for k in ("rates", "per_seed", "criterion", "chosen")}
            for name, v in tuning["variants"].items()
        },
    }


def test_tuning_reads_the_validation_rows_and_never_the_test_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    columns = smooth_columns()
    split = split_rows(ROWS, VALIDATION, TEST, SPLIT_SEED)
    rng = np.random.default_rng(11)
    noisy_val = {**columns, "y": columns["y"].copy()}
    noisy_val["y"][split.validation] = rng.normal(0.0, 5.0, len(split.validation))
    noisy_test = {**columns, "y": columns["y"].copy()}
    noisy_test["y"][split.test] = rng.normal(0.0, 5.0, len(split.test))
    tune = "{lr: [1.0e-3, 1.0e-2], seeds: 1}"
    folders = {}
    for name, cols in (("plain", columns), ("val", noisy_val), ("test", noisy_test)):
        here = tmp_path / name
        here.mkdir()
        write_csv(here / "m.csv", cols)
        config = here / "c.yaml"
        config.write_text(
            config_text("m.csv", seeds=1, steps=30, tune=tune, dtype="float64", name=name)
        )
        folders[name] = run_folder(
            runner.invoke(
                app, ["run", str(config), "--runs-dir", str(tmp_path / "runs"), "-q", *EXACT]
            )
        )
    summaries = {name: summary_of(f) for name, f in folders.items()}
    # Training rows alike: the same scaling in all three.
    assert summaries["plain"]["data"]["standardized"] == summaries["val"]["data"]["standardized"]
    assert summaries["plain"]["data"]["standardized"] == summaries["test"]["data"]["standardized"]
    plain, val, test = (tuned_numbers(summaries[n]) for n in ("plain", "val", "test"))
    # Other test rows: the very same tuning, number for number ...
    assert test == plain
    # ... but reported test numbers that differ.
    assert (
        summaries["test"]["variants"]["fixed"]["final_test"]
        != summaries["plain"]["variants"]["fixed"]["final_test"]
    )
    # Other validation rows: other validation numbers for every variant and rate.
    for name in plain["variants"]:
        mine, theirs = plain["variants"][name]["per_seed"], val["variants"][name]["per_seed"]
        assert all(a != b for ra, rb in zip(mine, theirs) for a, b in zip(ra, rb)), name
    # The noisy validation rows (std 5 around 0, standardized by the training rows) cost far
    # more than the smooth ones.
    for name in plain["variants"]:
        assert min(val["variants"][name]["criterion"]) > 3 * max(
            plain["variants"][name]["criterion"]
        )


def test_dataset_validation_rows_are_the_split_validation_rows_standardized(
    tmp_path: Path,
) -> None:
    columns = smooth_columns()
    write_csv(tmp_path / "m.csv", columns)
    config = tmp_path / "c.yaml"
    config.write_text(config_text("m.csv", dtype="float64"))
    cfg = load_config(config)
    data = make_dataset(cfg, torch.device("cpu"))
    split = split_rows(ROWS, VALIDATION, TEST, SPLIT_SEED)
    x = np.stack([columns["x1"], columns["x2"]], axis=1)
    y = columns["y"]
    scaling = fit_scaling(x[split.train], y[split.train], names=["x1", "x2", "y"])
    assert data.x_val is not None and data.y_val is not None

    def scaled(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs = (x[rows] - scaling.x_mean) / scaling.x_std
        ys = (y[rows] - scaling.y_mean) / scaling.y_std
        return xs, ys[:, None]

    for (xt, yt), rows in (
        ((data.x_val, data.y_val), split.validation),
        ((data.x_test, data.y_test), split.test),
        ((data.x_train, data.y_train), split.train),
    ):
        assert xt.dtype == torch.float64
        want_x, want_y = scaled(rows)
        assert np.array_equal(xt.numpy(), want_x)
        assert np.array_equal(yt.numpy(), want_y)


# --- 5. bad data ----------------------------------------------------------------------------


def ten_rows(change: Callable[[int, list[str]], list[str]] | None = None) -> str:
    """Ten rows of x1, x2, y; ``change(i, cells)`` edits row i's cells."""
    lines = ["x1,x2,y"]
    for i in range(10):
        cells = [str(i), str((i * i) % 7), str(i * 0.5)]
        lines.append(",".join(change(i, cells) if change else cells))
    return "\n".join(lines) + "\n"


def cell(row: int, column: int, value: str) -> Callable[[int, list[str]], list[str]]:
    def change(i: int, cells: list[str]) -> list[str]:
        if i == row:
            cells[column] = value
        return cells

    return change


def extra_cell(row: int) -> Callable[[int, list[str]], list[str]]:
    return lambda i, cells: [*cells, "9"] if i == row else cells


def csv_file(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content, encoding="utf-8")


def npz_file(**columns: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **columns)

    return write


def directory(path: Path) -> None:
    path.mkdir()


def nothing(path: Path) -> None:
    pass


GOOD = csv_file(ten_rows())

# id: (file name, writer, config keywords, what the line says, whether it names the data file)
BAD: dict[str, tuple[str, Callable[[Path], None], dict[str, Any], list[str], bool]] = {
    "missing file": ("d.csv", nothing, {}, ["target.data", "no such file"], True),
    "directory": ("d.csv", directory, {}, ["is a directory, not a data file"], True),
    "unknown extension": (
        "d.txt",
        GOOD,
        {},
        ["unknown format '.txt'", "use .csv, .npz or .parquet"],
        True,
    ),
    "empty file": ("d.csv", csv_file(""), {}, ["the file is empty"], True),
    "header only": ("d.csv", csv_file("x1,x2,y\n"), {}, ["no data rows (only a header)"], True),
    "missing input column": (
        "d.csv",
        GOOD,
        {"inputs": "[x1, x3]"},
        ["no column 'x3'", "columns: x1, x2, y"],
        True,
    ),
    "missing output column": ("d.csv", GOOD, {"output": "z"}, ["no column 'z'"], True),
    "nan cell": (
        "d.csv",
        csv_file(ten_rows(cell(4, 2, "nan"))),
        {},
        ["line 6", "column 'y'", "missing value"],
        True,
    ),
    "empty cell": (
        "d.csv",
        csv_file(ten_rows(cell(2, 0, ""))),
        {},
        ["line 4", "column 'x1'", "missing value"],
        True,
    ),
    "non-numeric cell": (
        "d.csv",
        csv_file(ten_rows(cell(6, 0, "abc"))),
        {},
        ["line 8", "column 'x1'", "'abc' is not a number"],
        True,
    ),
    "infinite cell": (
        "d.csv",
        csv_file(ten_rows(cell(3, 1, "inf"))),
        {},
        ["line 5", "column 'x2'", "inf is not finite"],
        True,
    ),
    "ragged row": (
        "d.csv",
        csv_file(ten_rows(extra_cell(5))),
        {},
        ["line 7 has 4 cells, the header has 3"],
        True,
    ),
    "duplicate header column": (
        "d.csv",
        csv_file("x1,x2,x1,y\n" + "".join(f"{i},{i % 3},1,{i}\n" for i in range(10))),
        {},
        ["column 'x1' appears twice in the header"],
        True,
    ),
    "npz unequal lengths": (
        "d.npz",
        npz_file(x1=np.arange(10.0), x2=np.arange(9.0), y=np.arange(10.0)),
        {},
        ["array 'x2' has 9 rows, 'x1' has 10"],
        True,
    ),
    "npz 2-d array": (
        "d.npz",
        npz_file(x1=np.zeros((10, 2)), x2=np.arange(10.0), y=np.arange(10.0)),
        {},
        ["array 'x1' has shape (10, 2)", "1-D"],
        True,
    ),
    "split validation zero": (
        "d.csv",
        GOOD,
        {"split": "{validation: 0}"},
        ["target.split.validation", "greater than 0"],
        False,
    ),
    "split sums to one": (
        "d.csv",
        GOOD,
        {"split": "{validation: 0.5, test: 0.5}"},
        ["target.split", "leaves no rows for training"],
        False,
    ),
    "split too small for ten rows": (
        "d.csv",
        GOOD,
        {"split": "{validation: 0.01}"},
        ["target.split", "validation 0.01 of 10 rows", "validation part empty"],
        True,
    ),
    "output among inputs": (
        "d.csv",
        GOOD,
        {"inputs": "[x1, y]"},
        ["target.output", "'y' is both an input and the output"],
        False,
    ),
    "input listed twice": (
        "d.csv",
        GOOD,
        {"inputs": "[x1, x1]", "layers": 2},
        ["target.inputs", "'x1' is listed twice"],
        False,
    ),
    "layers not the inputs' count": (
        "d.csv",
        GOOD,
        {"layers": 3},
        ["model.layers", "2 inputs (x1, x2)", "must start with 2", "[3, 8, 1]"],
        False,
    ),
    "over the size limit": (
        "d.csv",
        GOOD,
        {"env": "10"},
        ["more than this machine can read safely", "limit 10 bytes", "AAF_MAX_DATA_BYTES"],
        True,
    ),
    "constant input column": (
        "d.csv",
        csv_file(ten_rows(lambda i, cells: [cells[0], "2", cells[2]])),
        {},
        ["target.standardize", "column 'x2'", "standard deviation is 0"],
        True,
    ),
}


def bad_case(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Writes the case's data file and config; returns (config, the data file's path)."""
    name, write, keywords, _, _ = BAD[case]
    keywords = dict(keywords)
    limit = keywords.pop("env", None)
    if limit is not None:
        monkeypatch.setenv("AAF_MAX_DATA_BYTES", limit)
    data = tmp_path / name
    write(data)
    config = tmp_path / "bad.yaml"
    config.write_text(config_text(name, seeds=1, steps=5, **keywords))
    return config, data.resolve()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line_exit_2_and_no_run_folder(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, data = bad_case(case, tmp_path, monkeypatch)
    _, _, _, fragments, names_file = BAD[case]
    runs = tmp_path / "runs"
    lines = {}
    for command in ("run", "validate"):
        extra = ["--runs-dir", str(runs)] if command == "run" else []
        result = runner.invoke(app, [command, str(config), *extra])
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        if command == "run":
            assert result.stdout == ""
        err = result.stderr.strip().splitlines()
        assert len(err) == 1, (command, result.stderr)
        line = err[0]
        assert line.startswith(f"Error: {config}"), line
        if names_file:
            assert str(data) in line, line
        for fragment in fragments:
            assert fragment in line, (command, line)
        lines[command] = line
    assert lines["run"] == lines["validate"]
    assert not runs.exists() or not any(runs.iterdir())


def test_the_installed_entry_point_says_the_same_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, data = bad_case("non-numeric cell", tmp_path, monkeypatch)
    aaf = Path(sys.executable).with_name("aaf")
    assert aaf.exists()
    runs = tmp_path / "runs"
    done = subprocess.run(
        [str(aaf), "run", str(config), "--runs-dir", str(runs)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr == (
        f"Error: {config}: target.data: {data}: line 8, column 'x1': 'abc' is not a number\n"
    )
    assert not runs.exists() or not any(runs.iterdir())


# --- 6. --set target.data -------------------------------------------------------------------


def test_set_target_data_is_read_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path in the config file is read from the file's folder; one given by ``--set``, as
    typed on the command line, from the working folder."""
    project = tmp_path / "project"
    project.mkdir()
    write_csv(project / "m.csv", smooth_columns(rows=60))
    write_csv(project / "other.csv", smooth_columns(rows=80, seed=3))
    write_csv(project / "only_beside_config.csv", smooth_columns(rows=70))
    config = project / "c.yaml"
    config.write_text(config_text("m.csv", seeds=1, steps=20))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    other = write_csv(cwd / "other.csv", smooth_columns(rows=40, seed=4))
    monkeypatch.chdir(cwd)
    runs = tmp_path / "runs"
    folder = run_folder(
        runner.invoke(
            app,
            [
                "run",
                str(config),
                "--set",
                "target.data=other.csv",
                "--runs-dir",
                str(runs),
                "-q",
                *EXACT,
            ],
        )
    )
    summary = summary_of(folder)
    assert summary["data"]["file"] == str(other.resolve())
    assert summary["data"]["rows"] == 40
    assert summary["data"]["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    text = (folder / "config.yaml").read_text()
    assert "# override: --set target.data=other.csv" in text
    assert yaml.safe_load(text)["target"]["data"] == str(other.resolve())
    # Without the override the config's own path is read beside it, from here too.
    cfg = load_config(config)
    assert cfg.target.data == str((project / "m.csv").resolve())  # type: ignore[union-attr]

    # A file beside the config but not in the working folder: the one-line missing-file
    # error names the path it resolved to.
    missing = (cwd / "only_beside_config.csv").resolve()
    for command in ("run", "validate"):
        extra = ["--runs-dir", str(runs)] if command == "run" else []
        result = runner.invoke(
            app, [command, str(config), "--set", "target.data=only_beside_config.csv", *extra]
        )
        assert result.exit_code == 2, (result.stdout, result.stderr)
        assert result.stderr == f"Error: {config}: target.data: {missing}: no such file\n"
    # A schema error of an override names the --set it came from.
    result = runner.invoke(app, ["validate", str(config), "--set", "target.split.validation=0"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {config} (--set target.split.validation=0): target.split.validation: "
        "Input should be greater than 0\n"
    )
    assert list(runs.iterdir()) == [folder]


def test_a_config_named_relatively_reads_its_data_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "a" / "b"
    project.mkdir(parents=True)
    data = write_csv(project / "m.csv", smooth_columns(rows=50), text_column=False)
    (project / "c.yaml").write_text(config_text("m.csv"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("a/b/c.yaml"))
    assert cfg.target.data == str(data.resolve())  # type: ignore[union-attr]
    result = runner.invoke(app, ["validate", "a/b/c.yaml"])
    assert result.exit_code == 0, result.stderr
    assert f"data: {data.resolve()}" in result.stdout
