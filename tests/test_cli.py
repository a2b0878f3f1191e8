from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from aaf_cli import plots
from aaf_cli.cli import app
from aaf_cli.models import load_checkpoint
from aaf_cli.runs import new_run_dir, read_metrics

from .conftest import REPO, SMOKE, only_run

RUN_FILES = [
    "config.yaml",
    "metrics.csv",
    "parameters.csv",
    "timing.csv",
    "aggregates.csv",
    "fit.csv",
    "summary.json",
    "loss_curves.png",
    "fit.png",
    "slopes.png",
    "checkpoints/fixed.pt",
    "checkpoints/adaptive.pt",
]

runner = CliRunner()


def test_help_lists_every_command_with_help_text() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "validate", "targets", "kinds", "compare", "list", "show"):
        assert command in result.stdout
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and len(sub.stdout.splitlines()) > 3


def test_help_does_not_import_torch_or_matplotlib() -> None:
    code = (
        "import sys\n"
        "from aaf_cli.cli import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'aaf_cli.config') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout


def test_smoke_run_writes_every_file(runs_dir: Path) -> None:
    result = runner.invoke(app, ["run", str(SMOKE), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.stderr
    folder = only_run(runs_dir)
    assert folder.name.endswith("_smoke")
    assert str(folder) in result.stdout
    for name in RUN_FILES:
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert set(summary["variants"]) == {"fixed", "adaptive"}
    assert summary["steps_done"] == 100
    # The table reached the terminal.
    assert "final test" in result.stdout and "adaptive" in result.stdout
    # Resolved config reruns as it is.
    rerun = runner.invoke(app, ["validate", str(folder / "config.yaml")])
    assert rerun.exit_code == 0, rerun.stderr


def test_metrics_csv_holds_exactly_what_the_loss_figure_draws(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: dict[str, list[tuple[list[float], list[float]]]] = {}
    real_save = plots.save

    def capture(fig, path):  # type: ignore[no-untyped-def]
        # loss_curves.png: the training panel, then the test panel
        drawn[Path(path).name] = [
            (list(line.get_xdata()), list(line.get_ydata()))
            for ax in fig.axes[:2]
            for line in ax.get_lines()
        ]
        real_save(fig, path)

    monkeypatch.setattr(plots, "save", capture)
    result = runner.invoke(app, ["run", str(SMOKE), "--runs-dir", str(runs_dir), "--quiet"])
    assert result.exit_code == 0, result.stderr
    series = {(s.variant, s.seed): s for s in read_metrics(only_run(runs_dir) / "metrics.csv")}
    lines = drawn["loss_curves.png"]
    # One seed: the median is the seed itself. Lines come per variant, train panel first.
    expected = []
    for metric in ("train", "test"):
        for variant in ("fixed", "adaptive"):
            s = series[(variant, 0)]
            expected.append((s.steps, s.metric(metric)))
    curves = [(x, y) for x, y in lines if len(x) > 2]
    assert curves == expected


def test_installed_entry_point_runs_and_reruns_identically(tmp_path: Path) -> None:
    aaf = Path(sys.executable).parent / "aaf"
    assert aaf.exists(), "the console script is installed next to the interpreter"
    folders = []
    for _ in range(2):
        out = subprocess.run(
            [str(aaf), "run", str(SMOKE), "--runs-dir", str(tmp_path), "--quiet"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert out.returncode == 0, out.stderr
        folders.append(Path(out.stdout.strip().splitlines()[-1]))
    assert folders[0] != folders[1]
    first, second = ((f / "metrics.csv").read_bytes() for f in folders)
    assert first == second
    with (folders[0] / "metrics.csv").open() as fh:
        fh.readline()
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 21  # steps 0, 5, ..., 100 for two variants
    first_step = [r for r in rows if r["step"] == "0"]
    assert first_step[0]["train_loss"] == first_step[1]["train_loss"]


def test_checkpoints_load_with_weights_only_and_reproduce_the_fit(runs_dir: Path) -> None:
    result = runner.invoke(app, ["run", str(SMOKE), "--runs-dir", str(runs_dir), "-q"])
    assert result.exit_code == 0
    folder = only_run(runs_dir)
    payload = torch.load(folder / "checkpoints/adaptive.pt", weights_only=True)
    assert payload["seeds"] == [0]
    state = payload["state_dicts"][0]
    assert state["linears.0.weight"].shape == (8, 1)
    assert state["activations.0.n"].item() == 10.0
    summary = json.loads((folder / "summary.json").read_text())
    assert state["activations.0.a"].item() * 10 == pytest.approx(
        summary["variants"]["adaptive"]["final_params"]["n*a"]["median"], rel=1e-6
    )
    with (folder / "fit.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    x = torch.tensor([[float(r["x"])] for r in rows])
    for variant in ("fixed", "adaptive"):
        model = load_checkpoint(folder / f"checkpoints/{variant}.pt", 0)
        expected = torch.tensor([float(r[f"{variant}_seed0"]) for r in rows], dtype=torch.float64)
        with torch.no_grad():
            got = model(x)[:, 0].double()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_run_folder_names_never_clash(tmp_path: Path) -> None:
    from datetime import datetime

    now = datetime(2026, 1, 2, 3, 4, 5)
    names = [new_run_dir(tmp_path, "x", now).name for _ in range(3)]
    assert names == ["2026-01-02_03-04-05_x", "2026-01-02_03-04-05_x-2", "2026-01-02_03-04-05_x-3"]


def test_overrides_are_recorded_in_the_resolved_config(runs_dir: Path) -> None:
    args = ["run", str(SMOKE), "--runs-dir", str(runs_dir), "-q", "--set", "train.steps=10"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    text = (only_run(runs_dir) / "config.yaml").read_text()
    assert "# override: --set train.steps=10" in text
    assert "steps: 10\n" in text


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    docs = "\n".join(page.read_text() for page in sorted((REPO / "docs").glob("*.md")))
    for command in app.registered_commands:
        name = command.name or (command.callback.__name__ if command.callback else "")
        assert f"aaf {name}" in readme, name
        assert f"aaf {name}" in docs, name
        assert command.callback is not None and command.callback.__doc__


def test_aggregates_csv_equals_the_drawn_geometric_means_and_bands(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: dict[str, object] = {}
    real_save = plots.save

    def capture(fig, path):  # type: ignore[no-untyped-def]
        if Path(path).name == "loss_curves.png":
            axes = fig.axes[:2]  # the training panel, then the test panel
            # The geometric-mean lines (each seed's own curve is drawn thin beside them).
            drawn["lines"] = [
                list(line.get_ydata())
                for ax in axes
                for line in ax.get_lines()
                if line.get_linewidth() >= 1.5
            ]
            drawn["bands"] = [
                sorted(float(v) for v in c.get_paths()[0].vertices[:, 1])
                for ax in axes
                for c in ax.collections
            ]
        real_save(fig, path)

    monkeypatch.setattr(plots, "save", capture)
    args = ["run", str(SMOKE), "--runs-dir", str(runs_dir), "-q", "--set", "seeds=5"]
    assert runner.invoke(app, args).exit_code == 0
    with (only_run(runs_dir) / "aggregates.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["band"] for r in rows} == {"iqr"} and {r["seeds"] for r in rows} == {"5"}
    medians, bands = [], []
    for metric in ("train", "test"):
        for variant in ("fixed", "adaptive"):
            part = [r for r in rows if r["variant"] == variant and r["metric"] == metric]
            medians.append([float(r["geomean"]) for r in part])
            bands.append(sorted({float(r["low"]) for r in part} | {float(r["high"]) for r in part}))
    lines = [y for y in drawn["lines"] if len(y) > 2]  # type: ignore[attr-defined]
    assert lines == medians
    # fill_between's polygon runs along the low and back along the high values.
    polygons = [sorted(set(p)) for p in drawn["bands"]]  # type: ignore[attr-defined]
    assert polygons == bands


def test_all_kinds_config_runs_end_to_end(runs_dir: Path) -> None:
    config = REPO / "configs/all_kinds.yaml"
    result = runner.invoke(app, ["run", str(config), "--runs-dir", str(runs_dir), "-q"])
    assert result.exit_code == 0, result.stderr
    folder = only_run(runs_dir)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed"
    variants = summary["variants"]
    dense = (8 + 8) + (8 * 8 + 8) + (8 + 1)
    expected_counts = {
        "fixed": dense,
        "fixed_lr5x": dense,
        "fixed_elu": dense,
        "gaaf": dense + 1,
        "llaaf_sr": dense + 2,
        "nlaaf_sr": dense + 16,
        "rowdy": dense + 2 * (1 + 2 * 3),
        "prelu": dense + 2,
        "swish": dense + 2,
        "rational": dense + 2 * (6 + 4),
        "spline": dense + 16 * (5 + 3),
        "kan": (1 * 5 + 5 * 1) * (5 + 3 + 2),
        "steeper": dense,
    }
    assert {k: v["parameters"] for k, v in variants.items()} == expected_counts
    assert variants["fixed_elu"]["base_activation"] == "elu"
    assert variants["rational"]["base_activation"] is None
    # Per-layer trajectories in parameters.csv; S(a) only where slope recovery is on.
    with (folder / "parameters.csv").open() as fh:
        fh.readline()
        names: dict[str, set[str]] = {}
        for row in csv.DictReader(fh):
            names.setdefault(row["variant"], set()).add(row["parameter"])
    assert names["gaaf"] == {"n*a"}
    assert names["spline"] == {"max|c|[1]", "max|c|[2]"}
    # The control: tanh(s x) with s = gaaf's median final n*a, and its own verdict.
    control = summary["controls"]["variants"]["steeper"]
    assert control["slope_from"] == "gaaf" and control["slope"] > 0
    (check,) = summary["controls"]["comparisons"]
    assert check["variant"] == "gaaf" and check["baseline"] == "steeper"
    assert names["llaaf_sr"] == {"n*a[1]", "n*a[2]"}
    assert names["nlaaf_sr"] == {f"n*a[{k}] {s}" for k in (1, 2) for s in ("mean", "min", "max")}
    assert names["rowdy"] == {"n*a[1]", "n*a[2]", "max|n*a_j|[1]", "max|n*a_j|[2]"}
    assert "fixed" not in names
    with (folder / "metrics.csv").open() as fh:
        fh.readline()
        rows = list(csv.DictReader(fh))
    with_recovery = {r["variant"] for r in rows if r["recovery"]}
    assert with_recovery == {"llaaf_sr", "nlaaf_sr"}
    # Every checkpoint reloads (weights_only) into a plain network that reproduces fit.csv.
    with (folder / "fit.csv").open() as fh:
        fit = list(csv.DictReader(fh))
    x = torch.tensor([[float(r["x"])] for r in fit])
    for name in variants:
        column = next(c for c in fit[0] if c.startswith(f"{name}_seed"))
        seed = int(column.rsplit("seed", 1)[1])
        model = load_checkpoint(folder / f"checkpoints/{name}.pt", seed)
        with torch.no_grad():
            got = model(x)[:, 0].double()
        expected = torch.tensor([float(r[column]) for r in fit], dtype=torch.float64)
        # float32, and the plain modules order some operations differently: ~1e-5 apart.
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5, msg=name)


def test_force_runs_a_config_over_the_soft_limits(runs_dir: Path) -> None:
    args = ["run", str(SMOKE), "--runs-dir", str(runs_dir), "-q", "--set", "seeds=101"]
    refused = runner.invoke(app, [*args, "--set", "train.steps=5"])
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert not any(runs_dir.iterdir())
    forced = runner.invoke(app, [*args, "--set", "train.steps=5", "--force"])
    assert forced.exit_code == 0, forced.stderr
    summary = json.loads((only_run(runs_dir) / "summary.json").read_text())
    assert len(summary["seeds"]) == 101
