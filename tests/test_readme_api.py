"""The Python API blocks of the README and of the docs (docs/api.md) run as written (in a
scratch folder with the repository's configs), and what their comments promise is there."""

from __future__ import annotations

import html
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings(
    # MLflow's SQLite store trips a SQLAlchemy deprecation inside MLflow: not ours to fix.
    "ignore:The ``noload`` loader strategy:DeprecationWarning"
)


def python_block(path: Path, after: str) -> str:
    """The first ```python block after the line ``after`` of the file ``path``."""
    text = path.read_text(encoding="utf-8")
    section = text[text.index(after) :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


def readme_api_block() -> str:
    return python_block(ROOT / "docs" / "api.md", "# Python API\n")


@pytest.mark.slow
def test_the_readme_api_block_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    names: dict[str, Any] = {}
    exec(compile(readme_api_block(), "docs/api.md (Python API)", "exec"), names)
    run, h, tuned, sw = names["run"], names["h"], names["tuned"], names["sw"]
    assert run.status == "completed" and run.seeds == [0, 1, 2]
    slopes = h.params["n*a"]
    assert len(slopes) == len(h.steps) > 10 and all(math.isfinite(v) for v in slopes)
    assert slopes[0] == pytest.approx(1.0)  # n*a0 = 10 * 0.1 at the start
    assert all(t >= 0 for t in h.time) and h.time[-1] > 0
    assert set(run.summary["tuning"]["chosen"]) == {"fixed", "adaptive"}
    assert (tmp_path / "runs" / "cmp.png").is_file() and (tmp_path / "runs" / "tb").is_dir()
    assert sw.status == "completed" and len(sw.points) == 3
    assert set(tuned.chosen) == {"fixed", "adaptive"}
    assert tuned.verdict and all(isinstance(v, str) for v in tuned.verdict)
    # Everything it wrote is under runs/, nothing beside the configs.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "runs"]


def test_the_readme_landing_page_block_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pandas")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    names: dict[str, Any] = {}
    block = python_block(ROOT / "README.md", "## Commands\n")
    exec(compile(block, "README.md (Python API)", "exec"), names)
    run, h, frame = names["run"], names["h"], names["frame"]
    assert run.verdicts[0].startswith("at each variant's best learning rate")
    assert len(h.params["n*a"]) == len(h.steps) and h.params["n*a"][0] == pytest.approx(1.0)
    assert {"n*a", "time", "test"} <= set(frame.columns)
    page = tmp_path / "runs" / "elu.html"
    assert page.is_file() and run.verdicts[0].split(";")[0] in html.unescape(page.read_text())
