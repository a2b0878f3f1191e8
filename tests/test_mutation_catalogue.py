"""The mutation catalogue of ``scripts/mutation_check.py`` stays applicable as the code changes.

Fast: nothing is mutated or run. Every original snippet must occur exactly once in its file
(an edit elsewhere that moves or rewrites it makes the entry stale, and this test says which),
and every test a mutant names must exist.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import REPO

SCRIPT = REPO / "scripts" / "mutation_check.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


check = _load()
NAMES = [m.name for m in check.CATALOGUE]


def test_catalogue_names_are_unique_and_cover_the_core_modules() -> None:
    assert len(NAMES) == len(set(NAMES))
    modules = {Path(e.file).stem for m in check.CATALOGUE for e in m.edits}
    assert {"stats", "results", "train", "activations", "models", "runs", "expr"} <= modules
    assert len(check.CATALOGUE) >= 30


@pytest.mark.parametrize("mutant", check.CATALOGUE, ids=NAMES)
def test_every_original_snippet_occurs_exactly_once(mutant: Any) -> None:
    problems = check.stale_edits(mutant, REPO)
    assert not problems, f"stale: update {mutant.name} in scripts/mutation_check.py: {problems}"


@pytest.mark.parametrize("mutant", check.CATALOGUE, ids=NAMES)
def test_every_named_test_exists(mutant: Any) -> None:
    assert mutant.tests
    for arg in mutant.tests:
        file, _, name = arg.partition("::")
        path = REPO / file
        assert path.is_file(), arg
        if name:
            assert re.search(rf"^def {re.escape(name)}\(", path.read_text(), re.MULTILINE), arg


def test_the_copy_leaves_out_environments_and_run_folders() -> None:
    for name in (".venv", "runs", ".git", "__pycache__"):
        assert name in check.IGNORED
