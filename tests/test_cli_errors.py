"""Bad input: one line on stderr naming the file and key, exit code 2, no run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aaf_cli.cli import app

from .conftest import SMOKE

runner = CliRunner()

# (config file text or None for the smoke config, extra arguments, fragments of the message)
CASES = {
    "missing file": (None, ["run", "{tmp}/nope.yaml"], ["nope.yaml", "no such file"]),
    "directory": (None, ["run", "{tmp}"], ["is a directory"]),
    "yaml syntax": ("train:\n  lr: [1, 2\n", [], ["bad.yaml:3:1", "YAML syntax error"]),
    "unknown key": ("train:\n  stepz: 3\n", [], ["train.stepz", "did you mean 'steps'"]),
    "wrong type": ("train:\n  steps: many\n", [], ["train.steps", "valid integer", "'many'"]),
    "lr zero": ("train:\n  lr: 0\n", [], ["train.lr", "greater than 0"]),
    "lr negative": ("train:\n  lr: -1.0e-3\n", [], ["train.lr", "greater than 0"]),
    "zero width": (
        "model:\n  layers: [1, 0, 1]\n",
        [],
        ["model.layers.1", "greater than or equal to 1"],
    ),
    "n below one": (
        "variants:\n  - {kind: global, n: 0.5}\n",
        [],
        ["variants.0.n", "greater than or equal to 1"],
    ),
    "steps zero": ("train:\n  steps: 0\n", [], ["train.steps", "greater than or equal to 1"]),
    "unknown target": ("target:\n  name: moon\n", [], ["target.name", "valid: jcp_smooth"]),
    "unknown activation": (
        "model:\n  activation: relu6\n",
        [],
        ["model.activation", "did you mean 'relu'"],
    ),
    "python tag": (
        "name: !!python/object/apply:os.system ['echo hi']\n",
        [],
        ["unsupported tag", "!!python/object/apply:os.system"],
    ),
    "duplicate key": ("train:\n  lr: 1\n  lr: 2\n", [], ["bad.yaml:3:3", "train.lr", "duplicate"]),
    "not a mapping": ("- 1\n- 2\n", [], ["top level must be a mapping"]),
    "set without equals": (
        None,
        ["run", "{smoke}", "--set", "train.steps"],
        ["expected key.path=value"],
    ),
    "set bad index": (
        None,
        ["run", "{smoke}", "--set", "variants.7.n=2"],
        ["variants.7.n", "out of range"],
    ),
    "set bad value": (
        None,
        ["run", "{smoke}", "--set", "train.lr=-5"],
        ["--set train.lr=-5", "train.lr", "greater than 0"],
    ),
    "set empty key part": (None, ["run", "{smoke}", "--set", "train..lr=1"], ["empty part"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_no_run_folder(case: str, tmp_path: Path) -> None:
    text, args, fragments = CASES[case]
    runs = tmp_path / "runs"
    config = tmp_path / "bad.yaml"
    if text is not None:
        config.write_text(text)
        args = ["run", str(config)]
    args = [a.format(tmp=tmp_path, smoke=SMOKE) for a in args] + ["--runs-dir", str(runs)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr + result.stdout
    if text is not None:
        assert str(config) in lines[0]
    elif "--set" in args:
        assert str(SMOKE) in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not runs.exists() or not any(runs.iterdir())


def test_validate_reports_the_same_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  lr: 0\n")
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 2
    assert "train.lr" in result.stderr
