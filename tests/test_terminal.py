"""Terminal output at 80, 120 and 200 columns: names whole, numbers never cut, nothing too wide.

Every table is parsed back into its cells (wrapped cells joined again) and compared with the
numbers in the run folders, formatted as the tables format them.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import tempfile
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from aaf_cli import render
from aaf_cli.cli import app
from aaf_cli.render import Column, fmt, layout, wrap_text
from aaf_cli.runs import RunFolder

from .conftest import SMOKE

runner = CliRunner()
WIDTHS = (80, 120, 200)
LONG_NAMES = [
    "fixed-tanh-baseline",
    "global-n10-recovery",
    "layer-n5-lr1e-3",
    "neuron-n10-recovery",
    "rowdy-K10",
    "neuron_n20_no_recovery",
]
LONG_VARIANTS = (
    "variants=[{kind: fixed, name: fixed-tanh-baseline}, "
    "{kind: global, n: 10, name: global-n10-recovery, slope_recovery: {weight: 1.0}}, "
    "{kind: layer, n: 5, name: layer-n5-lr1e-3, lr: 1.0e-3}, "
    "{kind: neuron, n: 10, name: neuron-n10-recovery, slope_recovery: {weight: 1.0}}, "
    "{kind: rowdy, K: 10, name: rowdy-K10}, "
    "{kind: neuron, n: 20, name: neuron_n20_no_recovery}]"
)


def _invoke(args: list[str], width: int) -> str:
    result = runner.invoke(app, args, env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _run(runs_dir: Path, width: int, *overrides: str, quiet: bool = True) -> tuple[Path, str]:
    args = ["run", str(SMOKE), "--runs-dir", str(runs_dir), "--set", "train.steps=20"]
    for o in overrides:
        args += ["--set", o]
    out = _invoke([*args, "-q"] if quiet else args, width)
    return Path(out.strip().splitlines()[-1]), out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three small run folders: six long-named variants over 3 seeds (its `aaf run` output at
    80 columns kept), a run with a long name, and a copy of that one under a plain name (a
    third run would only cost time)."""
    runs_dir = tmp_path_factory.mktemp("terminal") / "runs"
    long, run_output = _run(runs_dir, 80, "seeds=3", LONG_VARIANTS, quiet=False)
    named, _ = _run(runs_dir, 80, "name=second-run_with-long-name", "seeds=2")
    plain = runs_dir / "2020-01-01_00-00-00_plain"
    shutil.copytree(named, plain)
    return {"dir": runs_dir, "folders": [long, named, plain], "run_output": run_output}


def _summary(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    return data


# ---------------------------------------------------------------------------------------------
# Reading a rendered table back


def _join(parts: list[str]) -> str:
    """Lines of one wrapped cell joined again: names broke after '-', '_' or '/', lists and
    headings after a space."""
    text = ""
    for part in (p for p in parts if p):
        text += part if not text or text.endswith(("-", "_", "/")) else " " + part
    return text


def _table(output: str, anchor: str = "") -> tuple[list[str], list[list[str]]]:
    """The headings and the rows (cells joined across wrapped lines) of the first table; a row
    starts at a line whose ``anchor`` column (never wrapped: 'final test' or 'status') is
    filled."""
    lines = output.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("┏"))
    mid = next(i for i in range(top, len(lines)) if lines[i].startswith("┡"))
    end = next(i for i in range(mid, len(lines)) if lines[i].startswith("└"))
    head = [[c.strip() for c in line[1:-1].split("┃")] for line in lines[top + 1 : mid]]
    headers = [_join([h[k] for h in head]) for k in range(len(head[0]))]
    anchor = anchor or ("final test" if "final test" in headers else "status")
    at = headers.index(anchor)
    rows: list[list[list[str]]] = []
    for line in lines[mid + 1 : end]:
        if line.startswith("├"):
            continue
        cells = [c.strip() for c in line[1:-1].split("│")]
        if cells[at]:
            rows.append([[c] for c in cells])
        else:
            for k, c in enumerate(cells):
                rows[-1][k].append(c)
    return headers, [[_join(c) for c in row] for row in rows]


def _dropped(output: str) -> list[str]:
    flat = " ".join(output.split())
    match = re.search(r"\(narrow terminal: columns (.*?) not shown", flat)
    return match.group(1).split(", ") if match else []


def _check_lines(output: str, width: int) -> None:
    """Nothing cut short, no line over ``width``, but for paths: a folder is printed whole on
    a line of its own (for scripts to read), however long the tests' temporary folders are."""
    assert "…" not in output
    too_long = [
        line
        for line in output.splitlines()
        if len(line) > width and not Path(line.strip()).is_absolute()
    ]
    assert not too_long, too_long


def _reach(reach: dict[str, Any], seeds: int, long: bool) -> str:
    if reach["median"] is None:
        return "never"
    text = f"{reach['median']:.0f}"
    if reach["never"]:
        text += f" ({reach['never']}/{seeds} never)" if long else f" ({reach['never']} never)"
    return text


# ---------------------------------------------------------------------------------------------
# aaf run's table


def _check_report(output: str, summary: dict[str, Any], width: int) -> None:
    _check_lines(output, width)
    headers, rows = _table(output)
    dropped = _dropped(output)
    assert set(headers).isdisjoint(dropped)
    if width >= 200:
        assert not dropped
    assert "variant" in headers and "final test" in headers
    metrics = {
        "final train": "final_train",
        "final val": "final_val",
        "final test": "final_test",
        "last test": "last_test",
        "test at best val": "test_at_best_val",
    }
    assert [row[0] for row in rows] == [
        render.variant_cell(name, v) for name, v in summary["variants"].items()
    ]
    for row, (name, v) in zip(rows, summary["variants"].items()):
        cells = dict(zip(headers, row))
        assert cells["variant"].split(" (")[0] == name
        lr = next(h for h in headers if h.startswith("lr"))
        assert cells[lr] == fmt(v["effective_lr"], ".3g")
        for header, key in metrics.items():
            if header in cells:
                assert cells[header] == fmt(v[key].get("geomean"))
        steps = next((h for h in headers if h.startswith("steps to")), None)
        if steps:
            assert cells[steps] == _reach(v["steps_to_threshold"], v["seeds"], long=True)
        if "final parameters" in cells:
            assert cells["final parameters"] == render.params(v["final_params"])
    flat = " ".join(output.split())
    for comparison in summary["comparisons"]:
        assert " ".join(comparison["verdict"].split()) in flat


def test_run_prints_a_table_that_fits_80_columns(runs: dict[str, Any]) -> None:
    output = runs["run_output"]
    _check_report(output, _summary(runs["folders"][0]), 80)
    assert "(narrow terminal: columns" in output  # 6 long names and 7 columns do not fit


@pytest.mark.parametrize("width", WIDTHS)
def test_report_table_at_each_width(runs: dict[str, Any], width: int) -> None:
    out = Console(width=width, file=StringIO())
    summary = _summary(runs["folders"][0])
    render.report_table(summary, out)
    output = out.file.getvalue()  # type: ignore[attr-defined]
    _check_report(output, summary, width)


def test_report_table_reads_a_summary_without_the_newer_fields(runs: dict[str, Any]) -> None:
    summary = _summary(runs["folders"][0])
    for v in summary["variants"].values():
        for key in ("last_test", "final_val", "test_at_best_val"):
            v.pop(key, None)
    for c in summary["comparisons"]:
        for key in ("p_holm", "min_p", "notes"):
            c.pop(key, None)
    out = Console(width=120, file=StringIO())
    render.report_table(summary, out)
    output = out.file.getvalue()  # type: ignore[attr-defined]
    headers = _table(output)[0]
    assert "last test" not in headers and "final val" not in headers
    _check_report(output, summary, 120)


# ---------------------------------------------------------------------------------------------
# aaf compare and aaf show


def _check_rows(output: str, folders: list[Path], width: int, with_run: bool) -> None:
    _check_lines(output, width)
    headers, rows = _table(output)
    dropped = _dropped(output)
    if width >= 200:
        assert not dropped
    expected = []
    for folder in folders:
        summary = _summary(folder)
        for i, (name, v) in enumerate(summary["variants"].items()):
            cells = {
                "run": folder.name if i == 0 else "",
                "variant": name,
                "seeds": str(v["seeds"]),
                "steps": str(summary["steps_done"]),
                "final test": fmt(v["final_test"]["geomean"]),
                "test at best val": fmt(v["test_at_best_val"]["geomean"]),
                "steps to thr.": _reach(v["steps_to_threshold"], v["seeds"], long=False),
            }
            expected.append([cells[h] for h in headers if h in cells])
    assert "run" in headers or not with_run
    assert [[c for h, c in zip(headers, row) if h != "vs baseline"] for row in rows] == expected
    if "vs baseline" in headers:
        versus = [row[headers.index("vs baseline")] for row in rows]
        assert versus.count("baseline") == len(folders)


def _check_verdicts(output: str, folders: list[Path]) -> None:
    flat = " ".join(output.split())
    verdicts = [c["verdict"] for f in folders for c in _summary(f)["comparisons"]]
    assert len(verdicts) == 6
    for verdict in verdicts:
        assert " ".join(verdict.split()) in flat


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_table_of_two_runs(runs: dict[str, Any], width: int) -> None:
    core = importlib.import_module("aaf_cli.overview")
    folders = runs["folders"][:2]
    found = [RunFolder(f) for f in folders]
    rows = [r for f, label in zip(found, core.labels(found)) for r in core.table_rows(f, label)]
    out = Console(width=width, file=StringIO())
    render.print_rows(rows, "2 runs", out)
    output = out.file.getvalue()  # type: ignore[attr-defined]
    _check_rows(output, folders, width, with_run=True)
    _check_verdicts(output, folders)


def test_compare_command_at_80_columns(runs: dict[str, Any]) -> None:
    folders = runs["folders"][:2]
    # A short folder for the figure: a file's path is printed whole, whatever the width.
    out = Path(tempfile.mkdtemp(prefix="aaf-")) / "c.png"
    try:
        output = _invoke(["compare", *map(str, folders), "--out", str(out)], 80)
    finally:
        shutil.rmtree(out.parent)
    _check_rows(output, folders, 80, with_run=True)
    _check_verdicts(output, folders)


@pytest.mark.parametrize("width", WIDTHS)
def test_show(runs: dict[str, Any], width: int) -> None:
    folder = runs["folders"][0]
    output = _invoke(["show", str(folder)], width)
    _check_rows(output, [folder], width, with_run=False)
    assert folder.name in output.splitlines()[0]  # the run's name whole on the first line
    for name in LONG_NAMES:
        assert f"variant {name}:" in output
    assert "metrics.csv" in output


# ---------------------------------------------------------------------------------------------
# aaf list


@pytest.mark.parametrize("width", WIDTHS)
def test_list_three_runs(runs: dict[str, Any], width: int) -> None:
    output = _invoke(["list", "--runs-dir", str(runs["dir"])], width)
    _check_lines(output, width)
    entries = json.loads(_invoke(["list", "--runs-dir", str(runs["dir"]), "--json"], width))
    assert len(entries) == 3
    headers, rows = _table(output)
    if width >= 200:
        assert not _dropped(output)
    assert {"folder", "status"} <= set(headers)
    for row, e in zip(rows, entries):
        cells = dict(zip(headers, row))
        assert cells["folder"] == Path(e["folder"]).name
        assert cells["status"] == "completed"
        expected = {
            "steps": str(e["steps"]),
            "seeds": str(e["seeds"]),
            "target": e["target"],
            "variants": ", ".join(e["variants"]),
            "final test (geo. mean)": ", ".join(
                f"{k} {fmt(v)}" for k, v in e["final_test"].items()
            ),
            "time": f"{e['duration_s']:.0f} s",
        }
        for header, value in expected.items():
            if header in cells:
                assert cells[header] == value, header


# ---------------------------------------------------------------------------------------------
# The pieces


def test_layout_drops_low_priority_columns_and_keeps_numbers_whole() -> None:
    columns = [
        Column("name", 0, wrap="name"),
        Column("number", 0, "right"),
        Column("extra", 2, "right"),
        Column("more", 1, wrap="list"),
    ]
    rows = [["a-very-long-variant-name", "1.23e-04", "99999", "one, two, three"]]
    wide = layout(columns, rows, 200)
    assert wide.dropped == [] and wide.widths == [24, 8, 5, 15]
    narrow = layout(columns, rows, 60)  # 24 + 8 + 15 + 13 = 60: 'extra' goes, 'more' stays
    assert [columns[k].header for k in narrow.dropped] == ["extra"]
    # At 50 'more' must go too; then the narrower 'extra' fits again.
    assert [columns[k].header for k in layout(columns, rows, 50).dropped] == ["more"]
    assert narrow.widths[:2] == [24, 8] and narrow.needed == 24 + 8 + 5 + 15 + 13
    tiny = layout(columns, rows, 30)  # only the essential columns, the name wrapped
    assert tiny.shown == [0, 1] and tiny.widths[1] == 8 and tiny.widths[0] < 24
    table, notes = render.fitted_table(columns, rows, 30)
    out = Console(width=30, file=StringIO())
    out.print(table)
    text = out.file.getvalue()  # type: ignore[attr-defined]
    _check_lines(text, 30)
    assert "1.23e-04" in text and "not shown" in notes[0]
    assert _table(text, "number")[1] == [["a-very-long-variant-name", "1.23e-04"]]


def test_names_break_only_at_natural_points() -> None:
    assert render._atoms("neuron-n10-recovery", "name") == ["neuron-", "n10-", "recovery"]
    assert render._atoms("lr-1e-3_run", "name") == ["lr-1e-3_", "run"]  # not inside 1e-3
    assert render._atoms("20 (2/3 never)", "list") == ["20", " (2/3 never)"]


def test_sentences_wrap_at_words_never_inside_numbers_or_intervals() -> None:
    verdict = (
        "rowdy-K10 wins against fixed-tanh-baseline on 3/3 seeds; geometric-mean ratio of final "
        "test MSE 0.044 "
        "[0.0096, 0.2, t interval]; Wilcoxon p = 0.25 (Holm-adjusted over 5 variants: 1e-05)"
    )
    for width in range(30, 90):
        text = wrap_text(verdict, width)
        assert " ".join(text.split()) == verdict
        assert all(len(line) <= width for line in text.splitlines())
        for piece in ("0.044", "[0.0096, 0.2, t interval]", "p = 0.25", "1e-05)"):
            assert piece in text, (width, text)


def test_console_width_follows_columns_else_130_when_piped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert render.console().width == render.PIPED_WIDTH  # pytest's stdout is not a terminal
    monkeypatch.setenv("COLUMNS", "93")
    assert render.console().width == 93
    assert render.console(61).width == 61
