from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
SMOKE = CONFIGS / "smoke.yaml"


def pytest_configure(config: pytest.Config) -> None:
    """Several test processes (pytest-xdist) share the cores: one thread each, or torch's idle
    OpenMP threads spin against the other process (runs became many times slower). The
    processes the tests start inherit it; a test that pins a thread count still does."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "PYTEST_XDIST_WORKER" in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


def only_run(runs_dir: Path) -> Path:
    """The single run folder under ``runs_dir``."""
    folders = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def metrics_text(exp: Any) -> str:
    """An experiment's ``metrics.csv`` and ``parameters.csv`` as a run folder holds them."""
    from aaf_cli import runs
    from aaf_cli.experiment import tidy

    series, _ = tidy(exp)
    return runs.metrics_csv(series) + runs.parameters_csv(series)


def copy_of(folder: Path, tmp_path: Path) -> Path:
    """A copy of ``folder`` under ``tmp_path``, by the same name (mtimes kept)."""
    import shutil

    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)  # copy2: mtimes kept
    return copy
