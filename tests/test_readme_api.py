"""The Python API block of the docs (docs/api.md) runs as written (in a scratch folder with the
repository's configs), and what its comments promise is there."""

from __future__ import annotations

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


def readme_api_block() -> str:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = text[text.index("# Python API\n") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


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
    assert run.status == "completed" and run.seeds == [0, 1, 2, 3, 4]
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
