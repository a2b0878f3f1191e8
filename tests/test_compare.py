"""aaf compare, aaf list, aaf show: reading run folders back, and refusing broken ones."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aaf_cli.cli import app
from aaf_cli.results import by_variant
from aaf_cli.runs import read_metrics
from aaf_cli.stats import geometric_mean

from .conftest import SMOKE

runner = CliRunner()


def _run(runs_dir: Path, *overrides: str) -> Path:
    args = ["run", str(SMOKE), "--runs-dir", str(runs_dir), "-q"]
    for o in overrides:
        args += ["--set", o]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A one-seed smoke run and a newer three-seed run with another log interval and variants."""
    runs_dir = tmp_path_factory.mktemp("runs")
    first = _run(runs_dir)
    second = _run(
        runs_dir,
        "name=wider",
        "seeds=3",
        "train.steps=60",
        "train.log_every=4",
        "variants=[{kind: fixed}, {kind: global, n: 5, name: n5}]",
    )
    return runs_dir, first, second


def _read_csv(path: Path) -> tuple[str, list[dict[str, str]]]:
    with path.open() as fh:
        header = fh.readline()
        return header, list(csv.DictReader(fh))


def test_compare_writes_figure_and_csv_equal_to_the_runs_metrics(
    two_runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _runs_dir, first, second = two_runs
    out = tmp_path / "cmp.png"
    result = runner.invoke(app, ["compare", str(first), str(second), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, rows = _read_csv(out.with_suffix(".csv"))
    assert "smoothing: none" in header and "x: step" in header
    for folder, variants in ((first, ("fixed", "adaptive")), (second, ("fixed", "n5"))):
        groups = by_variant(read_metrics(folder / "metrics.csv"), variants)
        for variant in variants:
            mine = [r for r in rows if r["run"] == folder.name and r["variant"] == variant]
            seeds = groups[variant]
            assert [int(r["step"]) for r in mine] == seeds[0].steps
            for i, r in enumerate(mine):
                values = [s.test[i] for s in seeds]
                assert float(r["geomean"]) == pytest.approx(geometric_mean(values), rel=1e-12)
                assert float(r["geomean_raw"]) == float(r["geomean"])
                assert int(r["seeds"]) == len(seeds)
            assert {r["band"] for r in mine} == {"none" if len(seeds) == 1 else "minmax"}
    # The table names every run and variant, and the verdicts.
    for name in (first.name, second.name, "adaptive", "n5", "baseline"):
        assert name in result.stdout


def test_last_n_names_and_globs_pick_the_same_runs(
    two_runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    runs_dir, first, second = two_runs
    picked = {}
    for key, args in {
        "paths": [str(first), str(second)],
        "last": ["--last", "2"],
        "names": ["smoke", "wider"],
        "glob": [str(runs_dir / "*_*")],
    }.items():
        out = tmp_path / f"{key}.png"
        result = runner.invoke(
            app, ["compare", *args, "--runs-dir", str(runs_dir), "--out", str(out)]
        )
        assert result.exit_code == 0, (key, result.stderr)
        picked[key] = {r["run"] for r in _read_csv(out.with_suffix(".csv"))[1]}
    assert all(p == {first.name, second.name} for p in picked.values()), picked


def test_compare_options_smooth_time_variants_band_svg(
    two_runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _runs_dir, first, second = two_runs
    out = tmp_path / "cmp.svg"
    args = ["compare", str(first), str(second), "--out", str(out), "--smooth", "3"]
    args += ["--x", "time", "--variants", "fixed", "--band", "std", "--metric", "train"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert out.read_text().lstrip().startswith("<?xml")
    header, rows = _read_csv(out.with_suffix(".csv"))
    assert "smoothing: centred moving average of 3" in header and "x: seconds" in header
    assert {r["variant"] for r in rows} == {"fixed"} and {r["metric"] for r in rows} == {"train"}
    assert any(r["geomean"] != r["geomean_raw"] for r in rows)
    timing = {}
    with (second / "timing.csv").open() as fh:
        for t in csv.DictReader(fh):
            if t["variant"] == "fixed":
                timing[int(t["step"])] = float(t["seconds"])
    mine = [r for r in rows if r["run"] == second.name]
    assert [float(r["x"]) for r in mine] == [timing[int(r["step"])] for r in mine]
    assert {r["band"] for r in mine} == {"std"}


def test_default_output_goes_to_the_runs_dir(two_runs: tuple[Path, Path, Path]) -> None:
    runs_dir, first, _ = two_runs
    result = runner.invoke(app, ["compare", str(first), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.stderr
    figures = sorted(runs_dir.glob("compare_*.png"))
    assert figures and figures[-1].with_suffix(".csv").is_file()
    for f in runs_dir.glob("compare_*"):
        f.unlink()


def test_list_and_show(two_runs: tuple[Path, Path, Path]) -> None:
    runs_dir, first, second = two_runs
    result = runner.invoke(app, ["list", "--runs-dir", str(runs_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    entries = json.loads(result.stdout)
    assert [e["folder"] for e in entries] == [str(second), str(first)]  # newest first
    assert [e["status"] for e in entries] == ["completed", "completed"]
    assert entries[0]["variants"] == ["fixed", "n5"] and entries[0]["seeds"] == 3
    assert set(entries[1]["final_test"]) == {"fixed", "adaptive"}
    table = runner.invoke(app, ["list", "--runs-dir", str(runs_dir)])
    assert table.exit_code == 0 and first.name in table.stdout and "completed" in table.stdout
    show = runner.invoke(app, ["show", "wider", "--runs-dir", str(runs_dir)])
    assert show.exit_code == 0, show.stderr
    # The folder whole on the first line, or (a long path) its name, then the folder it is in.
    first_lines = show.stdout.splitlines()[:2]
    assert str(second) in first_lines[0] or (
        second.name in first_lines[0] and str(second.parent) in first_lines[1]
    )
    for fragment in ("completed", "variant n5: global", "metrics.csv", "n5"):
        assert fragment in show.stdout


def test_incomplete_and_interrupted_runs_are_listed_and_readable(
    two_runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, first, _ = two_runs
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    killed = runs_dir / "2026-01-01_00-00-00_killed"
    stopped = runs_dir / "2026-01-01_00-00-01_stopped"
    shutil.copytree(first, killed)
    shutil.copytree(first, stopped)
    (killed / "summary.json").unlink()
    summary = json.loads((stopped / "summary.json").read_text())
    summary["status"] = "interrupted"
    (stopped / "summary.json").write_text(json.dumps(summary))
    result = runner.invoke(app, ["list", "--runs-dir", str(runs_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    assert [e["status"] for e in json.loads(result.stdout)] == ["interrupted", "incomplete"]
    out = tmp_path / "c.png"
    result = runner.invoke(app, ["compare", str(killed), str(stopped), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "incomplete run" in result.stdout
    assert runner.invoke(app, ["show", str(killed)]).exit_code == 0


def _broken(first: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / f"2026-01-01_00-00-00_{name}"
    shutil.copytree(first, folder)
    return folder


BROKEN = {
    "corrupt summary": (
        lambda f: (f / "summary.json").write_text("{not json"),
        "summary.json is corrupt",
    ),
    "unknown summary version": (
        lambda f: (f / "summary.json").write_text('{"format_version": 99}'),
        "unknown format version 99",
    ),
    "corrupt metrics": (
        lambda f: (f / "metrics.csv").write_text("# aaf metrics format 1\nstep,variant\n"),
        "metrics.csv is corrupt",
    ),
    "unknown metrics version": (
        lambda f: (f / "metrics.csv").write_text("# aaf metrics format 7\n"),
        "unknown metrics format version '7'",
    ),
    "missing metrics": (lambda f: (f / "metrics.csv").unlink(), "metrics.csv is missing"),
    "missing config": (lambda f: (f / "config.yaml").unlink(), "config.yaml is missing"),
    "garbled row": (
        lambda f: (f / "metrics.csv").write_text(
            (f / "metrics.csv").read_text() + "100,fixed,zero,1,1,1,0\n"
        ),
        "malformed row",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_runs_give_one_line_and_exit_2(
    case: str, two_runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, first, _ = two_runs
    damage, message = BROKEN[case]
    folder = _broken(first, tmp_path, case.replace(" ", "-"))
    damage(folder)
    for command in (
        ["compare", str(first), str(folder), "--out", str(tmp_path / "c.png")],
        ["show", str(folder)],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.stdout)
        assert not (tmp_path / "c.png").exists() and not (tmp_path / "c.csv").exists()
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(folder) in lines[0] and message in lines[0], lines
        assert "Traceback" not in result.stderr
    # list (which reads summaries and configs, not every metrics file) marks and reports it.
    listing = runner.invoke(app, ["list", "--runs-dir", str(tmp_path), "--json"])
    if "summary" in case or "config" in case:
        assert listing.exit_code == 2 and message in listing.stderr
        assert json.loads(listing.stdout)[0]["status"] == "unreadable"


BAD_ARGS = {
    "no runs": ([], "give run folders"),
    "missing path": (["{tmp}/nope"], "no run folder or run named"),
    "not a run folder": (["{tmp}/plain"], "not a run folder"),
    "a file": (["{tmp}/plain/file.txt"], "is a file"),
    "glob matches nothing": (["{tmp}/zz*"], "no run folder matches"),
    "too few for --last": (["--last", "9", "--runs-dir", "{runs}"], "--last 9: only 2"),
    "bad suffix": (["{first}", "--out", "{tmp}/x.jpg"], ".png, .svg or .pdf"),
    "unknown variant": (["{first}", "--variants", "nope"], "'nope' is in none of the runs"),
    "bad band": (["{first}", "--band", "wide"], "--band must be one of"),
    "bad metric": (["{first}", "--metric", "loss"], "--metric must be one of"),
    "bad x": (["{first}", "--x", "epoch"], "--x must be one of"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_compare_arguments(
    case: str, two_runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    runs_dir, first, _ = two_runs
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "file.txt").write_text("x")
    args, message = BAD_ARGS[case]
    args = [a.format(tmp=tmp_path, runs=runs_dir, first=first) for a in args]
    result = runner.invoke(app, ["compare", *args])
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not list(tmp_path.glob("*.png"))


def test_an_empty_run_folder_is_incomplete_not_broken(tmp_path: Path) -> None:
    """A run killed between making its folder and writing config.yaml."""
    folder = tmp_path / "2026-01-01_00-00-00_smoke"
    folder.mkdir()
    listing = runner.invoke(app, ["list", "--runs-dir", str(tmp_path), "--json"])
    assert listing.exit_code == 0, listing.stderr
    assert json.loads(listing.stdout)[0]["status"] == "incomplete"
    result = runner.invoke(app, ["compare", str(folder), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 2 and "config.yaml is missing" in result.stderr


def test_a_run_given_twice_is_drawn_once_and_said_so(
    two_runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    runs_dir, first, _ = two_runs
    out = tmp_path / "c.png"
    args = ["compare", str(first), "smoke", "--runs-dir", str(runs_dir), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "given more than once" in result.stderr
    assert {r["run"] for r in _read_csv(out.with_suffix(".csv"))[1]} == {first.name}
