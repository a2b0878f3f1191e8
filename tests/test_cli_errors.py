"""Bad input: one line on stderr naming the file and key, exit code 2, no run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aaf_cli.cli import app

from .conftest import SMOKE

runner = CliRunner()

# A heat-equation pde: section with holes for the cases below.
PDE = (
    "{target}model: {{layers: [{layers}, 8, 1]}}\n"
    "pde:\n"
    "  inputs: {{x: [0, 1], t: [0, 1]}}\n"
    "  operator: {op}\n"
    "  exact: {exact}\n"
    "  forcing: from_exact\n"
    "  conditions: [{{on: '{on}'}}]\n"
)
HEAT = "exp(-pi**2*t)*sin(pi*x)"

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
    # Numbers that must be finite.
    "lr nan": ("train:\n  lr: .nan\n", [], ["train.lr", "finite"]),
    "noise inf": ("target:\n  noise: .inf\n", [], ["target.noise", "finite"]),
    "domain reversed": ("target:\n  domain: [1, -1]\n", [], ["target.domain", "low must be"]),
    # Names never leave the runs directory.
    "name with a path": ("name: ../../etc/evil\n", [], ["name", "should match pattern"]),
    "name absolute": ("name: /tmp/x\n", [], ["name", "should match pattern"]),
    # YAML that would hang or blow up a naive loader.
    "alias bomb": (
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdef", "bcdefg")),
        [],
        ["too large", "aliases"],
    ),
    "anchor in itself": ("seeds: &x [*x]\n", [], ["nested too deeply"]),
    # Expression targets: never eval, errors point into the expression.
    "expr import": (
        "target:\n  expr: __import__('os').system('echo hi')\n  domain: [0, 1]\n",
        [],
        ["target.expr", "column"],
    ),
    "expr attribute": (
        "target:\n  expr: x.__class__\n  domain: [0, 1]\n",
        [],
        ["target.expr", "attribute access is not allowed", "column 1"],
    ),
    "expr unknown name": (
        "target:\n  expr: sin(x) + y\n  domain: [0, 1]\n",
        [],
        ["target.expr", "'y' is not allowed at column 10"],
    ),
    "expr syntax": ("target:\n  expr: 'sin(x'\n  domain: [0, 1]\n", [], ["target.expr"]),
    "expr too long": (
        "target:\n  expr: '" + "x+" * 3000 + "x'\n  domain: [0, 1]\n",
        [],
        ["target.expr", "too long"],
    ),
    "expr and name": (
        "target:\n  name: sine\n  expr: x\n  domain: [0, 1]\n",
        [],
        ["target", "give one of name, expr or piecewise"],
    ),
    "expr without domain": ("target:\n  expr: sin(x)\n", [], ["target.domain", "missing"]),
    "expr undefined on domain": (
        "target:\n  expr: log(x)\n  domain: [-1, 1]\n",
        [],
        ["target.expr", "not finite", "choose a domain"],
    ),
    "expr wrong variable": (
        "target:\n  expr: x1 * x2\n  domain: [0, 1]\n",
        [],
        ["target.expr", "uses x1, x2", "1 input"],
    ),
    "two inputs named target": (
        "model:\n  layers: [2, 8, 1]\n",
        [],
        ["model.layers", "has one input"],
    ),
    "piecewise bad piece": (
        "target:\n  piecewise: [{when: 'x < 0', expr: '1'}, {expr: 'x.real'}]\n  domain: [-1, 1]\n",
        [],
        ["target.piecewise", "piece 2"],
    ),
    # Kinds and their keys.
    "unknown kind": (
        "variants:\n  - {kind: globl}\n",
        [],
        ["variants.0.kind", "did you mean 'global'"],
    ),
    "key of another kind": (
        "variants:\n  - {kind: prelu, n: 10}\n",
        [],
        ["variants.0.n", "unknown key"],
    ),
    "recovery form": (
        "variants:\n  - {kind: layer, slope_recovery: {form: tf}}\n",
        [],
        ["variants.0.slope_recovery.form", "'paper' or 'code'"],
    ),
    "rowdy K": ("variants:\n  - {kind: rowdy, K: 1}\n", [], ["variants.0.K", "2"]),
    "rational degrees": (
        "variants:\n  - {kind: rational, degrees: [0, 4]}\n",
        [],
        ["variants.0.degrees", "degrees must be"],
    ),
    "no hidden layer": ("model:\n  layers: [1, 1]\n", [], ["model.layers", "at least 3"]),
    "seed too large": ("seeds: [99999999999999999999]\n", [], ["seeds.0", "less than or equal"]),
    "too many seeds": (
        "seeds: [" + ", ".join(str(i) for i in range(5000)) + "]\n",
        [],
        ["seeds", "at most 4096 seeds"],
    ),
    "empty coefficients": (
        "target:\n  name: polynomial\n  params: {coeffs: []}\n",
        [],
        ["target.params", "at least one number"],
    ),
    "variant layers": (
        "variants:\n  - {kind: fixed, layers: [2, 8, 1]}\n",
        [],
        ["variants.0.layers", "must start with the 1 input"],
    ),
    # Size: over the soft limits needs --force, and says how big.
    "too large": (
        None,
        ["run", "{smoke}", "--set", "seeds=300"],
        ["too large", "seeds 300 > 100", "memory", "--force"],
    ),
    "over the hard limit": (
        None,
        ["run", "{smoke}", "--set", "train.steps=1e12", "--force"],
        ["train.steps"],
    ),
    "not a config file": (None, ["run", "{tmp}/x.png"], ["no such file"]),
    # Checks that need the target evaluated or the machine looked at (checks.preflight).
    "expr not finite via set": (
        None,
        ["run", "{smoke}", "--set", "target={{expr: 'log(x)', domain: [-1, 1]}}"],
        ["target.expr", "not finite", "choose a domain"],
    ),
    "cuda without a gpu": (
        None,
        ["run", "{smoke}", "--set", "device=cuda"],
        ["device", "no CUDA device is available"],
    ),
    # Physics-informed configs: the pde: section.
    "pde unknown derivative": (
        PDE.format(op="u_t - u_q", exact=HEAT, on="t == 0", layers=2, target=""),
        [],
        ["pde.operator", "unknown derivative 'u_q'", "inputs: x, t"],
    ),
    "pde derivative of no input": (
        PDE.format(op="u_t - u_yy", exact=HEAT, on="t == 0", layers=2, target=""),
        [],
        ["pde.operator", "'y' is not an input"],
    ),
    "pde condition off the boundary": (
        PDE.format(op="u_t - u_xx", exact=HEAT, on="x == 5", layers=2, target=""),
        [],
        ["pde.conditions", "outside the domain", "never on its boundary"],
    ),
    "pde exact not finite": (
        PDE.format(op="u_t - u_xx", exact="t*log(x - 0.5)", on="t == 0", layers=2, target=""),
        [],
        ["pde.exact", "not finite"],
    ),
    "pde and target": (
        PDE.format(op="u_t - u_xx", exact=HEAT, on="t == 0", layers=2, target="target: {}\n"),
        [],
        ["give target", "or pde", "not both"],
    ),
    "pde layers": (
        PDE.format(op="u_t - u_xx", exact=HEAT, on="t == 0", layers=1, target=""),
        [],
        ["model.layers", "2 inputs of pde.inputs (x, t)"],
    ),
    "pde exact zero": (
        PDE.format(op="u_t - u_xx", exact="0*x", on="t == 0", layers=2, target=""),
        [],
        ["pde.exact", "is 0 on the whole test grid"],
    ),
    "pde no solution": (
        PDE.format(op="u_t - u_xx", exact=HEAT, on="t == 0", layers=2, target="")
        .replace(f"  exact: {HEAT}\n  forcing: from_exact\n", "")
        .replace("[{on: 't == 0'}]", "[{on: 't == 0', value: 'sin(pi*x)'}]"),
        [],
        ["pde", "give exact or reference"],
    ),
    "pde weights zero": (
        PDE.format(op="u_t - u_xx", exact=HEAT, on="t == 0", layers=2, target="")
        + "  weights: {residual: 0, conditions: 0}\n",
        [],
        ["pde", "every term's weight is 0"],
    ),
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


def _invoke(command: str, case: str, tmp_path: Path) -> tuple[int, str]:
    text, args, _ = CASES[case]
    config = tmp_path / "bad.yaml"
    if text is not None:
        config.write_text(text)
        args = ["run", str(config)]
    args = [command, *(a.format(tmp=tmp_path, smoke=SMOKE) for a in args[1:])]
    if command == "run":
        args += ["--runs-dir", str(tmp_path / "runs")]
    result = runner.invoke(app, args)
    return result.exit_code, result.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_validate_fails_exactly_as_run_does(case: str, tmp_path: Path) -> None:
    # One check path: whatever aaf run refuses before training, aaf validate refuses with the
    # same exit code and the same one-line message.
    if "cuda" in case and torch_cuda_available():
        pytest.skip("a CUDA device is available here")
    run_code, run_err = _invoke("run", case, tmp_path)
    validate_code, validate_err = _invoke("validate", case, tmp_path)
    # aaf validate goes on to list the config's other errors, if any, a line each.
    assert (validate_code, validate_err.splitlines()[0]) == (run_code, run_err.strip())
    assert run_code == 2 and run_err.count("\n") == 1


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_validate_reports_the_same_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  lr: 0\n")
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 2
    assert "train.lr" in result.stderr


def test_runs_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    result = runner.invoke(app, ["run", str(SMOKE), "--runs-dir", str(afile), "--quiet"])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: --runs-dir {afile}: is a file, expected a folder"


def test_a_bad_config_is_refused_before_torch_or_matplotlib_is_imported(tmp_path: Path) -> None:
    """A typo costs a fraction of a second: the config is read and checked first, and torch
    and matplotlib (seconds to import) are never loaded for a run that cannot start."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from aaf_cli.cli import app\n"
        "out = []\n"
        "for args in sys.argv[1:]:\n"
        "    r = CliRunner().invoke(app, json.loads(args))\n"
        "    out.append([r.exit_code, r.output.strip(), sorted(\n"
        "        m for m in ('torch', 'matplotlib') if m in sys.modules)])\n"
        "print(json.dumps(out))\n"
    )
    cases = [
        ["run", str(tmp_path / "missing.yaml")],
        ["run", str(SMOKE), "--set", "train.lr=abc"],
        ["run", str(SMOKE), "--set", "varaints.1.n=5"],
    ]
    done = subprocess.run(
        [sys.executable, "-c", code, *(json.dumps(c) for c in cases)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for (exit_code, output, imported), case in zip(results, cases):
        assert exit_code == 2 and output.startswith("Error: "), (case, output)
        assert imported == [], (case, imported)
    assert results[0][1] == f"Error: {tmp_path / 'missing.yaml'}: no such file"


def test_every_error_of_a_config_is_one_validate_away(tmp_path: Path) -> None:
    """``aaf run`` names the first error and counts the rest; ``aaf validate`` prints each, a
    line with its file, line, key and problem."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nseeds: -3\ntrain:\n  lr: abc\n  steps: 0\nvariants:\n"
        "  - {name: fixed, kind: fixed}\n"
    )
    run = runner.invoke(app, ["run", str(bad)])
    assert run.exit_code == 2
    assert run.stderr == (
        f"Error: {bad}:2:1: seeds: a seed count must be between 1 and 4096 (got -3) "
        "(and 2 more: aaf validate lists them all)\n"
    )
    check = runner.invoke(app, ["validate", str(bad)])
    assert check.exit_code == 2
    assert check.stderr.splitlines()[1:] == [
        f"Error: {bad}:4:3: train.lr: Input should be a valid number, unable to parse string as "
        "a number (got 'abc')",
        f"Error: {bad}:5:3: train.steps: Input should be greater than or equal to 1 (got 0)",
    ]
