"""``aaf report``: one self-contained HTML page of runs and sweeps, checked as a reader meets
it, in a real headless browser (Playwright driving Chromium): it loads without a console
error, every embedded figure decodes, every table and verdict is there."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import aaf_cli as aaf
from aaf_cli.cli import app

from .conftest import SMOKE

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium and Playwright and sets this: there the browser test must run.
REQUIRED = os.environ.get("AAF_BROWSER_TESTS") == "1"


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tuned run, a PDE run and a 2-point sweep, reported on one page through the CLI."""
    runs_dir = tmp_path_factory.mktemp("report")
    run = aaf.run(SMOKE, overrides=["train.steps=30", "seeds=3"], runs_dir=runs_dir)
    pde = aaf.run(
        Path(SMOKE).with_name("pde_smoke.yaml"),
        overrides=["train.steps=20", "seeds=2", "tune=off"],
        runs_dir=runs_dir,
    )
    sweep = aaf.sweep(
        SMOKE, grid={"variants.1.n": [1, 5]}, overrides=["train.steps=20", "seeds=2", "tune=off"],
        runs_dir=runs_dir,
    )  # fmt: skip
    out = runs_dir / "report.html"
    result = runner.invoke(
        app, ["report", str(run.folder), "pde_smoke", "smoke-n", "--runs-dir", str(runs_dir),
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    return {"out": out, "run": run, "pde": pde, "sweep": sweep, "runs_dir": runs_dir}


def expected_verdicts(reported: dict[str, Any]) -> list[str]:
    run, pde, sweep = reported["run"], reported["pde"], reported["sweep"]
    return [*run.verdicts, *pde.verdicts, *sweep.verdicts]


def test_the_page_is_self_contained_and_holds_every_part(reported: dict[str, Any]) -> None:
    import html

    text = reported["out"].read_text(encoding="utf-8")
    # Nothing fetched from anywhere: no script, no remote or local file reference.
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert 'src="data:image/png;base64,' in text and 'src="file:' not in text
    plain = html.unescape(text)
    for verdict in expected_verdicts(reported):
        assert verdict in plain, verdict
    run, pde = reported["run"], reported["pde"]
    chosen = run.summary["tuning"]["chosen"]
    assert "Tuning (learning rates chosen on validation data)" in plain
    assert all(name in plain for name in chosen)
    assert (run.folder / "config.yaml").read_text() in plain  # the resolved config, whole
    assert run.summary["environment"]["torch"] in plain
    assert "final test rel. L2" in plain  # the PDE run's table names its metric
    assert "final test MSE" in plain
    assert plain.count("<img ") == sum(len(r.figures) for r in (run, pde)) + len(
        list(reported["sweep"].folder.glob("*.png"))
    )


def test_bad_report_input_is_one_line_exit_2_and_no_file(tmp_path: Path) -> None:
    nothing = runner.invoke(app, ["report", "--runs-dir", str(tmp_path)])
    assert nothing.exit_code == 2
    assert nothing.stderr.strip().startswith("Error: give the runs or sweeps to report")
    missing = runner.invoke(app, ["report", "nope", "--runs-dir", str(tmp_path)])
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_the_page_in_a_real_browser(reported: dict[str, Any]) -> None:
    if CHROMIUM is None and not REQUIRED:
        pytest.skip("no Chromium here (CI installs it: apt-get install chromium)")
    if REQUIRED:
        from playwright.sync_api import sync_playwright
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
        sync_playwright = sync_api.sync_playwright
    assert CHROMIUM is not None
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            # As root in a container, without a GPU or a network to call home to.
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url[:80]}"))
            page.goto(reported["out"].as_uri())
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth,"
                " i.naturalHeight])"
            )
            tables = page.evaluate(
                "Array.from(document.querySelectorAll('table')).map(t => t.rows.length)"
            )
            verdicts = page.evaluate(
                "Array.from(document.querySelectorAll('p.verdict')).map(p => p.innerText)"
            )
            headings = page.evaluate(
                "Array.from(document.querySelectorAll('h2')).map(h => h.innerText)"
            )
            links = page.evaluate(
                "Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'))"
            )
            targets = [page.evaluate(f"!!document.querySelector({json.dumps(h)})") for h in links]
        finally:
            browser.close()
    assert problems == []
    assert len(images) >= 8 and all(
        done and width > 100 and height > 100 for _, done, width, height in images
    ), images
    # Per run: results, environment (the tuned one: tuning too); the sweep: points.
    assert len(tables) == 2 + 1 + 2 + 1 and all(rows >= 2 for rows in tables), tables
    for verdict in expected_verdicts(reported):
        assert " ".join(verdict.split()) in [" ".join(v.split()) for v in verdicts], verdict
    run, pde, sweep = reported["run"], reported["pde"], reported["sweep"]
    assert headings == [run.folder.name, pde.folder.name, sweep.folder.name]
    assert len(links) == 3 and all(targets)  # the list at the top leads to each section
