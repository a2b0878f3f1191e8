"""The problem registry: every kind of problem answers the same questions, and nothing outside
``aaf_cli/problems`` asks which kind it has.

Also the tuned-baseline sweep protocol (``aaf sweep --tune``) on a data file, whose choice reads
the tuning points' validation rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aaf_cli.cli import app
from aaf_cli.config import load_config
from aaf_cli.problems import (
    KINDS,
    SECTIONS,
    DataTargetConfig,
    PdeConfig,
    TargetConfig,
    facts_of,
    problem_label,
    problem_of,
    problem_title,
    section_of,
    summary_facts,
)
from aaf_cli.problems.base import MSE_FACTS
from aaf_cli.problems.pde.spec import PDE_FACTS
from aaf_cli.tuning import median_final

from .test_data_problem import config_text, smooth_columns, write_csv

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aaf_cli"
runner = CliRunner()


def test_no_core_module_names_a_kind_of_problem() -> None:
    """Outside ``problems/`` no module says ``pde`` (in code, comments or names): every
    branch on the problem asks the problem instead."""
    named = [
        f"{path.relative_to(ROOT)}:{k}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "problems" not in path.relative_to(PACKAGE).parts
        for k, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\bpde\b|\bpde_|\.pde\b|cfg\.target\b", line)
    ]
    assert not named, "\n".join(named)


def test_the_problem_package_imports_neither_the_experiment_nor_torch_at_load() -> None:
    """Loading a config imports the sections only: the runtime sides (and torch) come when a
    run asks for them, and no module of ``problems`` imports the experiment or the pipeline
    outside type checking (the experiment and the PDE code no longer import each other)."""
    for path in sorted((PACKAGE / "problems").rglob("*.py")):
        top = [
            line
            for line in path.read_text().splitlines()
            if line.startswith(("from aaf_cli", "import aaf_cli"))
        ]
        assert not [t for t in top if re.search(r"experiment|pipeline|aaf_cli\.config", t)], path


@pytest.mark.parametrize("cls", list(KINDS.values()), ids=list(KINDS))
def test_every_section_answers_the_registry(cls: type[Any]) -> None:
    """The section side of the protocol on every registered kind."""
    names = ("check_layers", "size", "problem", "line", "label", "title", "per_seed", "claims")
    for name in (*names, "absolute_paths", "facts"):
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
    assert sum(cls in classes for classes in SECTIONS.values()) == 1
    assert KINDS[cls.kind] is cls


def sections(tmp_path: Path) -> dict[str, Any]:
    """One resolved config of each kind."""
    data = write_csv(tmp_path / "m.csv", smooth_columns(rows=60))
    (tmp_path / "d.yaml").write_text(config_text("m.csv"))
    return {
        "expression": load_config(ROOT / "configs" / "smoke.yaml"),
        "data": load_config(tmp_path / "d.yaml"),
        "pde": load_config(ROOT / "configs" / "pde_smoke.yaml"),
        "file": data,
    }


def test_each_kind_states_its_problem_from_a_stored_config(tmp_path: Path) -> None:
    """The readers of finished runs get the kind, the facts, the list label and the title from
    the stored (resolved) config alone."""
    cfgs = sections(tmp_path)
    expected = {
        "expression": (TargetConfig, MSE_FACTS, "sine", "sine(x) = sin(freq x), freq=2"),
        "data": (DataTargetConfig, MSE_FACTS, "m.csv", "y(x1, x2) from m.csv"),
        "pde": (PdeConfig, PDE_FACTS, None, None),
    }
    for kind, (cls, facts, label, title) in expected.items():
        stored = json.loads(json.dumps(cfgs[kind].model_dump(mode="json")))
        assert section_of(stored)[0] is cls
        assert facts_of(stored) == facts
        assert problem_label(stored) == label
        if title is not None:
            assert problem_title(stored) == title
        assert cfgs[kind].problem_section().kind == kind
    # A PDE's title is its equation, as its figures say it (a derived forcing named by the
    # solution it comes from).
    assert problem_title(cfgs["pde"].model_dump(mode="json")) == (
        "u_t - u_xx = f from u = exp(-pi**2*t)*sin(pi*x)"
    )
    # Runs of different kinds of problem compare on the MSE's words; of one kind, on theirs.
    dumps = [c.model_dump(mode="json") for c in (cfgs["pde"], cfgs["expression"])]
    assert facts_of(*dumps) == MSE_FACTS
    assert facts_of(dumps[0], dumps[0]) == PDE_FACTS


def test_a_summary_names_its_problem_and_older_ones_are_read_by_their_data_entry() -> None:
    assert summary_facts({"problem": "pde"}) == PDE_FACTS
    assert summary_facts({"problem": "data"}) == MSE_FACTS
    # Written before the summary recorded its problem: a PDE run says so in its data entry.
    assert summary_facts({"data": {"target": "pde"}}) == PDE_FACTS
    assert summary_facts({"data": {"target": "sine"}}) == MSE_FACTS


def test_the_runtime_side_of_every_kind_makes_its_data(tmp_path: Path) -> None:
    """``problem_of`` on each kind: the data has validation and test parts, and only the PDE
    brings its own objective."""
    import torch

    from aaf_cli.experiment import build_ensemble, make_dataset

    cfgs = sections(tmp_path)
    for kind in ("expression", "data", "pde"):
        cfg = cfgs[kind]
        data = make_dataset(cfg, torch.device("cpu"))
        assert data.x_val is not None and data.x_test.shape[0] > 0
        objective = problem_of(cfg).objective(data, build_ensemble(cfg, torch.device("cpu")), True)
        assert (objective is not None) == (kind == "pde")


def test_a_tuned_sweep_on_a_data_file_chooses_on_the_tuning_points_validation_rows(
    tmp_path: Path,
) -> None:
    """``aaf sweep --tune train.lr`` on a data file: each variant's rate is chosen on the tuning
    seeds by the validation rows (``tuned.csv``'s criterion is each point's final validation
    MSE), and the evaluation run reads the same file."""
    write_csv(tmp_path / "m.csv", smooth_columns(rows=120))
    (tmp_path / "base.yaml").write_text(config_text("m.csv", steps=30, name="tuned_data"))
    result = runner.invoke(
        app,
        [
            "sweep", str(tmp_path / "base.yaml"), "--grid", "train.lr=0.001,0.01",
            "--tune", "train.lr", "--tune-seeds", "2", "--eval-seeds", "2",
            "--set", "train.compile=false", "--set", "threads=1",
            "--runs-dir", str(tmp_path / "runs"), "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, (result.stdout, result.stderr)
    swept = Path(result.stdout.strip().splitlines()[-1])
    tuned = json.loads((swept / "tuned" / "summary.json").read_text())
    assert tuned["problem"] == "data" and tuned["data"]["rows"] == 120
    points = sorted(p for p in (swept / "points").iterdir() if p.is_dir())
    finals: dict[tuple[str, float], float] = {}
    for point in points:
        summary = json.loads((point / "summary.json").read_text())
        assert summary["data"]["sha256"] == tuned["data"]["sha256"]
        lr = summary["variants"]["fixed"]["effective_lr"]
        for name, v in summary["variants"].items():
            finals[(name, lr)] = median_final([s["final_val"] for s in v["per_seed"]])
    chosen = {v: entry["effective_lr"] for v, entry in tuned["variants"].items()}
    for name, lr in chosen.items():
        best = min((value, rate) for (v, rate), value in finals.items() if v == name)[1]
        assert lr == best, (name, chosen, finals)


def test_the_registry_lists_every_kind_once() -> None:
    assert set(KINDS) == {"expression", "data", "pde"}
    assert [c for classes in SECTIONS.values() for c in classes] == [
        PdeConfig,
        DataTargetConfig,
        TargetConfig,
    ]


def test_a_run_sees_one_reading_of_its_data_file(tmp_path: Path) -> None:
    """Every part of a run asks ``problem_of`` for its config: one runtime problem per config
    object, so a file rewritten during the run is not read again by the summary or the figures
    (they describe the rows the models trained on); a new config reads the new file."""
    import hashlib

    data = write_csv(tmp_path / "m.csv", smooth_columns(rows=60))
    (tmp_path / "d.yaml").write_text(config_text("m.csv"))
    cfg = load_config(tmp_path / "d.yaml")
    first = problem_of(cfg)
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    write_csv(data, smooth_columns(rows=61))  # rewritten mid-run: one more row
    again = problem_of(cfg)
    assert again is first and again.table.rows == 60 and again.table.sha256 == before
    fresh = problem_of(load_config(tmp_path / "d.yaml"))
    assert fresh.table.rows == 61


def test_validating_and_sizing_a_data_config_imports_no_torch() -> None:
    """The config side is torch-free: loading the shipped data config and estimating its size
    (which reads the file's row count) leave torch unimported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from aaf_cli.config import load_config\n"
        "from aaf_cli.budget import workload\n"
        f"cfg = load_config({str(ROOT / 'configs' / 'measured.yaml')!r})\n"
        "assert workload(cfg).points == 420, workload(cfg).points\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
