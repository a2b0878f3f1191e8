"""User-facing text speaks for itself: no project-internal words (issue numbers, work sessions,
files that are not in the repository) in the README, the docs, the configs, the examples or the
package's own messages and docstrings."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTERNAL = re.compile(
    r"\bissues? #?\d+|\bsessions?\b|BACKGROUND\.md|DESIGN\.md|STYLE\.md|"
    r"previous engine|\.\./shared",
    re.IGNORECASE,
)
TEXT = ("*.md", "*.yaml", "*.py", "*.ipynb", "*.toml")


def user_facing() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for folder in ("docs", "configs", "examples", "aaf_cli"):
        for pattern in TEXT:
            files += sorted((ROOT / folder).rglob(pattern))
    return [f for f in files if f.is_file()]


def test_no_project_internal_words_in_user_facing_text() -> None:
    found = []
    for path in user_facing():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            # Ray's own word for a running instance ("session_..." folders) is Ray's, not ours.
            if INTERNAL.search(line) and "session_" not in line and "Ray session" not in line:
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert found == [], "\n".join(found)
    assert len(user_facing()) > 40  # the walk found the package, configs and docs
