"""The README is a landing page whose links lead somewhere, and the documentation site builds
without a warning (MkDocs with the Material theme, the API reference from the docstrings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Markdown links and images: [text](target) and ![alt](target), the target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def nav_pages(nav: object) -> list[str]:
    """Every page file named in mkdocs.yml's nav, however deep the sections go."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def mkdocs_config() -> dict[str, object]:
    # mkdocs.yml may use !!python tags (theme extensions); the nav needs none of them.
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)
    assert isinstance(config, dict)
    return config


def test_the_readme_is_a_landing_page_of_at_most_300_lines() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, len(lines)


def test_every_relative_link_in_the_readme_points_to_a_file() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    assert targets, "the README links to no page of the docs"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).is_file()]
    assert missing == []


def test_every_page_of_the_nav_exists() -> None:
    pages = nav_pages(mkdocs_config()["nav"])
    assert "index.md" in pages and "api.md" in pages
    assert [p for p in pages if not (ROOT / "docs" / p).is_file()] == []


def test_the_site_builds_strictly_without_a_warning(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "api" / "index.html").is_file()


@pytest.mark.parametrize("page", ["README.md", "docs/clusters.md"])
def test_the_slurm_recipe_is_valid_bash(page: str) -> None:
    """The batch script that starts Ray inside a Slurm allocation parses as bash (its
    ``#SBATCH`` lines are comments to bash, options to sbatch)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    scripts = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "#SBATCH" in b]
    assert len(scripts) == 1, page
    script = scripts[0]
    assert "ray start --head" in script and "--ray-address" in script
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
