from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
SMOKE = CONFIGS / "smoke.yaml"


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
