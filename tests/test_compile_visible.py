"""Compiling you can see: shipped configs decide by ``compile: auto`` (so a shortened run does
not pay a cold compile of minutes), the progress bar says when the step is being compiled, and
the run's header and ``aaf show`` say what compiling cost or why it was skipped."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from typer.testing import CliRunner

import aaf_cli as aaf
from aaf_cli.budget import predicted_seconds
from aaf_cli.cli import app
from aaf_cli.progress import compiling
from aaf_cli.render import compile_words

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))
PDE_PAPERS = ["burgers", "burgers_lbfgs", "helmholtz", "burgers_inverse", "klein_gordon"]


def _fingerprint_script() -> ModuleType:
    """``scripts/metrics_fingerprint.py``: its ``shortened`` cuts a config the same way here."""
    spec = importlib.util.spec_from_file_location(
        "metrics_fingerprint", ROOT / "scripts" / "metrics_fingerprint.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shortened = _fingerprint_script().shortened


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_no_shipped_config_pins_compile_on(path: Path) -> None:
    train = (yaml.safe_load(path.read_text()) or {}).get("train") or {}
    assert train.get("compile", "auto") in ("auto", False), train.get("compile")


@pytest.mark.parametrize("name", PDE_PAPERS)
def test_a_paper_pde_run_compiles_whole_and_not_shortened(name: str) -> None:
    """The full run compiles (its eager training is predicted at minutes); the same config
    cut to about 300 steps (``--set train.steps=300``, or each phase's share of them) and 2
    seeds does not, and the bar says which."""
    path = ROOT / "configs" / "papers" / f"{name}.yaml"
    full = aaf.load_config(path)
    short = aaf.load_config(path, [*shortened(path, 300), "seeds=2"])
    assert full.train.compile == "auto"
    assert predicted_seconds(full) >= 120 > predicted_seconds(short)
    models = len(full.variants) * len(full.seed_list)
    assert compiling(full, models).startswith("compiling the training step")
    assert compiling(short, len(short.variants) * 2) == ""


def test_the_header_says_what_compiling_cost_or_why_it_was_skipped(tmp_path: Path) -> None:
    smoke = ROOT / "configs" / "pde_smoke.yaml"
    result = CliRunner().invoke(
        app,
        ["run", str(smoke), "--set", "train.steps=10", "--set", "tune=off", "-q",
         "--runs-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = aaf.open_run(Path(result.stdout.strip())).summary
    assert summary is not None and summary["compiled"] is False
    assert compile_words(summary) == (
        "; compile auto: eager training predicted at 0 s on the CPU (< 120 s), not compiled"
    )
    compiled = {"compiled": True, "compile_time_s": 24.46, "compile_auto": "auto: ..."}
    assert compile_words(compiled) == ", after 24.5 s compiling the step"
    assert compile_words({"compiled": False}) == ""  # compile: false, nothing to say
    failed = {"compiled": False, "compile_error": "InductorError: ...", "compile_time_s": 3.0}
    assert compile_words(failed) == "; the step failed to compile: trained eagerly"
