"""The fixed control of an adaptive slope (``slope``, ``slope_from``; ``aaf_cli.controls``): a
run trains the source first, fixes s at the median over seeds of its final mean n*a, and
compares the source with sigma(s x); bad controls are refused before anything runs."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from aaf_cli import api
from aaf_cli.activations import Fixed
from aaf_cli.cli import app
from aaf_cli.config import ExperimentConfig, FixedVariant, load_config
from aaf_cli.controls import QUESTION
from aaf_cli.experiment import build_ensemble
from aaf_cli.models import PlainMLP, init_weights, load_checkpoint
from aaf_cli.pipeline import baseline_of

from .conftest import REPO, only_run

runner = CliRunner()

SEEDS = [0, 1, 2]
LAYERS = [1, 8, 8, 1]
CONFIG = """\
name: {name}
seeds: 3
tune: {tune}
target:
  name: sine
  params: {{freq: 2.0}}
  n_train: 64
  n_test: 128
model:
  layers: [1, 8, 8, 1]
  activation: tanh
variants:
  - {{kind: fixed}}
  - {{kind: global, name: g, n: 10}}
  - {{kind: fixed, name: control, slope_from: g}}
train:
  lr: 1.0e-2
  steps: 60
  log_every: 5
"""


def words(text: str) -> str:
    """``text`` with its line breaks and indents (a terminal's wrapping) as single spaces."""
    return " ".join(text.split())


def run_cli(tmp: Path, name: str, tune: str, quiet: bool) -> dict[str, Any]:
    """``aaf run`` of ``CONFIG``; its folder, output and summary."""
    path = tmp / "controls.yaml"
    path.write_text(CONFIG.format(name=name, tune=tune))
    runs = tmp / "runs"
    result = runner.invoke(
        app, ["run", str(path), "--runs-dir", str(runs), *(["--quiet"] if quiet else [])]
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    folder = only_run(runs)
    summary = json.loads((folder / "summary.json").read_text())
    return {"folder": folder, "stdout": result.stdout, "stderr": result.stderr, "summary": summary}


@pytest.fixture(scope="module")
def untuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_cli(tmp_path_factory.mktemp("untuned"), "untuned", "off", quiet=False)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_cli(tmp_path_factory.mktemp("tuned"), "tuned", "{seeds: 1}", quiet=True)


def checkpoint(folder: Path, variant: str) -> dict[str, Any]:
    payload: dict[str, Any] = torch.load(
        folder / "checkpoints" / f"{variant}.pt", map_location="cpu", weights_only=True
    )
    return payload


def final_parameters(folder: Path, variant: str, name: str) -> dict[int, float]:
    """Each seed's value of parameter ``name`` at the last logged step (parameters.csv)."""
    with open(folder / "parameters.csv", newline="") as f:
        rows = list(csv.reader(line for line in f if not line.startswith("#")))
    header, body = rows[0], rows[1:]
    assert header == ["step", "variant", "seed", "parameter", "value"]
    last = max(int(r[0]) for r in body)
    return {
        int(r[2]): float(r[4])
        for r in body
        if int(r[0]) == last and r[1] == variant and r[3] == name
    }


@pytest.mark.parametrize("which", ["untuned", "tuned"])
def test_control_slope_is_the_median_of_the_sources_final_steepness(
    which: str, request: pytest.FixtureRequest
) -> None:
    """Exact equality, not a tolerance: the run reads each seed's n*a as the float32 product
    n * a of the trained source (the same product taken here of the checkpoint's float32 a and
    n), a global variant's mean is of that one value, and the median of three seeds is the
    middle one, no arithmetic. The first stage trains g exactly as the comparison does (same
    seeds, data, ensemble group and, tuned, the same chosen rate), so the checkpoint of the
    second stage holds the very values s was read from."""
    run = request.getfixturevalue(which)
    folder, summary = run["folder"], run["summary"]
    assert summary["status"] == "completed" and summary["seeds"] == SEEDS
    payload = checkpoint(folder, "g")
    assert payload["seeds"] == SEEDS
    steepness = []
    for state in payload["state_dicts"]:
        a, n = state["activations.0.a"], state["activations.0.n"]
        assert a.dtype == n.dtype == torch.float32 and float(n) == 10.0
        steepness.append(float(a * n))
    entry = summary["controls"]["variants"]["control"]
    assert entry["slope_from"] == "g"
    assert entry["per_seed"] == steepness
    assert entry["slope"] == statistics.median(steepness)
    # The trained slopes moved away from their start (n*a = 1), so this is a real test.
    assert all(abs(s - 1.0) > 1e-3 for s in steepness)
    # parameters.csv at the last step says the same; the control's s is fixed, not logged.
    assert final_parameters(folder, "g", "n*a") == dict(zip(SEEDS, steepness))
    assert final_parameters(folder, "control", "s") == {}
    # The summary's control: a fixed variant at s, the size of the plain network, one more
    # FLOP per hidden neuron (s * z).
    variants = summary["variants"]
    control = variants["control"]
    assert control["kind"] == "fixed" and control["slope"] == entry["slope"]
    assert control["slope_from"] == "g" and control["layers"] == LAYERS
    assert control["parameters"] == variants["fixed"]["parameters"] == 97
    assert control["flops"] == variants["fixed"]["flops"] + 16
    assert summary["baseline"] == "fixed"
    # The checkpoint's config has s; the run's config.yaml keeps slope_from (it reruns).
    assert checkpoint(folder, "control")["config"]["slope"] == entry["slope"]
    rerun = load_config(folder / "config.yaml").variants[2]
    assert isinstance(rerun, FixedVariant)
    assert rerun.slope_from == "g" and rerun.slope is None


@pytest.mark.parametrize("which", ["untuned", "tuned"])
def test_the_controls_verdict(which: str, request: pytest.FixtureRequest) -> None:
    run = request.getfixturevalue(which)
    summary = run["summary"]
    s = summary["controls"]["variants"]["control"]["slope"]
    (comparison,) = summary["controls"]["comparisons"]
    assert (comparison["variant"], comparison["baseline"]) == ("g", "control")
    assert comparison["question"] == QUESTION
    assert comparison["pairs"] == 3
    sentence = f"{QUESTION} (s = {s:.3g}): g "
    verdict = comparison["verdict"]
    if which == "untuned":
        assert verdict.startswith(sentence)
        assert "the learning rates were not tuned" in verdict
    else:
        # A tuned run's verdicts start with the rates chosen.
        assert verdict.startswith("at each variant's best learning rate (fixed ")
        assert f", {sentence}" in verdict
    # The control is a variant of its own too: compared with the baseline as every other.
    assert {(c["variant"], c["baseline"]) for c in summary["comparisons"]} == {
        ("g", "fixed"),
        ("control", "fixed"),
    }
    # aaf show prints it; aaf run did (unless --quiet).
    shown = runner.invoke(app, ["show", str(run["folder"])])
    assert shown.exit_code == 0, shown.stderr
    assert words(verdict) in words(shown.stdout)
    if which == "untuned":
        assert words(verdict) in words(run["stdout"])
        # The first stage is announced (on stderr, with the progress).
        assert "first training g to read the learned steepness" in words(run["stderr"])


def test_the_controls_checkpoint_network_is_sigma_of_s_x(untuned: dict[str, Any]) -> None:
    """The checkpoint holds a plain network at s: loaded by hand into the per-model network
    with s, it computes tanh(s (W h + b)) of its own weights."""
    folder = untuned["folder"]
    s = untuned["summary"]["controls"]["variants"]["control"]["slope"]
    payload = checkpoint(folder, "control")
    assert payload["kind"] == "fixed" and payload["layers"] == LAYERS
    assert payload["activation"] == "tanh"
    spec = FixedVariant(kind="fixed", name="control", slope=s)
    x = torch.linspace(-1, 1, 33).unsqueeze(1)
    for seed, state in zip(payload["seeds"], payload["state_dicts"]):
        assert set(state) == {f"linears.{k}.{p}" for k in range(3) for p in ("weight", "bias")}
        net = PlainMLP(LAYERS, "fixed", "tanh", spec, torch.float32)
        net.load_state_dict(state)
        (act,) = net.activations
        assert isinstance(act, Fixed) and act.slope == s
        assert torch.equal(net(x), by_hand(state, x, "tanh", s)), seed


def test_load_checkpoint_of_a_control(untuned: dict[str, Any]) -> None:
    folder = untuned["folder"]
    s = untuned["summary"]["controls"]["variants"]["control"]["slope"]
    x = torch.linspace(-1, 1, 33).unsqueeze(1)
    payload = checkpoint(folder, "control")
    for seed, state in zip(SEEDS, payload["state_dicts"]):
        net = load_checkpoint(folder / "checkpoints" / "control.pt", seed)
        assert isinstance(net, PlainMLP)
        (act,) = net.activations
        assert isinstance(act, Fixed) and act.slope == s
        assert torch.equal(net(x), by_hand(state, x, "tanh", s))


def by_hand(
    state: dict[str, torch.Tensor], x: torch.Tensor, base: str, s: float | None
) -> torch.Tensor:
    """sigma(s z) layer by layer (sigma(z) with s None), from a PlainMLP state dict."""
    fn: Callable[[torch.Tensor], torch.Tensor] = torch.tanh if base == "tanh" else F.elu
    h = x
    for k in range(3):
        # Contiguous, as nn.Linear holds them: the same product, the same rounding.
        w, b = (state[f"linears.{k}.{p}"].contiguous() for p in ("weight", "bias"))
        z = F.linear(h, w, b)
        h = z if k == 2 else fn(z if s is None else s * z)
    return h


# --------------------------------------------------------------------------------------------
# An explicit slope, a layer-wise source, the baseline among sloped variants


@pytest.mark.parametrize("base", ["tanh", "elu"])
def test_an_explicit_slope_is_sigma_of_s_x_from_the_same_weights(base: str) -> None:
    cfg = ExperimentConfig.model_validate(
        {
            "seeds": [4, 9],
            "tune": False,
            "dtype": "float64",
            "model": {"layers": LAYERS, "activation": base},
            "variants": [
                {"kind": "fixed", "name": "steep", "slope": 3.1},
                {"kind": "global", "name": "g"},
                {"kind": "fixed", "name": "plain"},
            ],
        }
    )
    # The baseline: the first fixed variant without a slope, not the first in the list.
    assert cfg.baseline_variant.name == "plain" and baseline_of(cfg) == "plain"
    groups = build_ensemble(cfg, torch.device("cpu"))
    x = torch.linspace(-2, 2, 41, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        out = groups(x)
    steep = cfg.variants[0]
    seen = 0
    for i, m in enumerate(groups.members):
        if m.variant not in ("steep", "plain"):
            continue
        s = 3.1 if m.variant == "steep" else None
        weights = init_weights(LAYERS, m.seed)
        state = {}
        for k, (w, b) in enumerate(weights):
            state[f"linears.{k}.weight"], state[f"linears.{k}.bias"] = w, b
        expected = by_hand(state, x, base, s)
        # The engine folds s into the weights (sigma(s W h + s b)): equal up to rounding.
        torch.testing.assert_close(out[i], expected, rtol=1e-13, atol=1e-13)
        reference = PlainMLP(LAYERS, "fixed", base, steep if s else None, torch.float64)
        reference.load_init(weights)
        (act,) = reference.activations
        assert isinstance(act, Fixed) and act.slope == s
        with torch.no_grad():
            assert torch.equal(reference(x), expected)
        seen += 1
    assert seen == 4
    # The two differ: s = 3.1 is steeper.
    by_variant = {m.variant: out[i] for i, m in enumerate(groups.members) if m.seed == 4}
    assert not torch.allclose(by_variant["steep"], by_variant["plain"])


def test_a_layer_source_and_the_baseline_after_sloped_variants(tmp_path: Path) -> None:
    """s from a layer-wise slope: each model's mean over its layers of n*a_k, median over
    seeds; the sloped fixed variants listed first are not the baseline."""
    run = api.run(
        {
            "name": "layered",
            "seeds": 3,
            "tune": False,
            "dtype": "float64",
            "target": {"name": "sine", "params": {"freq": 2.0}, "n_train": 64, "n_test": 128},
            "model": {"layers": LAYERS, "activation": "tanh"},
            "variants": [
                {"kind": "fixed", "name": "control", "slope_from": "l"},
                {"kind": "fixed", "name": "steep", "slope": 3.1},
                {"kind": "layer", "name": "l", "n": 10},
                {"kind": "fixed", "name": "plain"},
            ],
            "train": {"lr": 1e-2, "steps": 60, "log_every": 10},
        },
        runs_dir=tmp_path,
    )
    summary = run.summary
    assert summary is not None and summary["status"] == "completed"
    assert summary["baseline"] == "plain"
    assert {c["baseline"] for c in summary["comparisons"]} == {"plain"}
    assert {c["variant"] for c in summary["comparisons"]} == {"control", "steep", "l"}
    payload = checkpoint(run.folder, "l")
    means = []
    for state in payload["state_dicts"]:
        slopes = [float(state[f"activations.{k}.n"] * state[f"activations.{k}.a"]) for k in (0, 1)]
        assert slopes[0] != slopes[1]  # two layers, two slopes: the mean is of both
        means.append(statistics.fmean(slopes))
    entry = summary["controls"]["variants"]["control"]
    # float64 throughout; the run averages the two layers with torch's mean: equal to 1e-12.
    assert entry["per_seed"] == pytest.approx(means, rel=1e-12)
    assert entry["slope"] == pytest.approx(statistics.median(means), rel=1e-12)
    assert entry["slope"] == statistics.median(entry["per_seed"])
    (comparison,) = summary["controls"]["comparisons"]
    assert (comparison["variant"], comparison["baseline"]) == ("l", "control")
    assert comparison["verdict"].startswith(f"{QUESTION} (s = {entry['slope']:.3g}): l ")
    # The explicit slope and the found one trained side by side, each at its own s.
    assert summary["variants"]["steep"]["slope"] == 3.1
    assert summary["variants"]["control"]["slope"] == entry["slope"]
    steep = load_checkpoint(run.folder / "checkpoints" / "steep.pt", 1)
    assert isinstance(steep, PlainMLP)
    (act,) = steep.activations
    assert isinstance(act, Fixed) and act.slope == 3.1
    x = torch.linspace(-1, 1, 17, dtype=torch.float64).unsqueeze(1)
    state = checkpoint(run.folder, "steep")["state_dicts"][1]
    with torch.no_grad():
        assert torch.equal(steep(x), by_hand(state, x, "tanh", 3.1))


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the key, exit code 2, no run folder

HEAD = "seeds: 1\nvariants:\n  - {kind: fixed}\n  - {kind: global, name: g}\n"
BAD: dict[str, tuple[str, list[str]]] = {
    "kan grid 0": (
        HEAD + "  - {kind: kan, grid: 0}\n",
        ["variants.2.grid", "greater than or equal to 1"],
    ),
    "spline order above grid": (
        HEAD + "  - {kind: spline, order: 4, grid: 3}\n",
        ["variants.2", "order", "at least 4 intervals (grid is 3)"],
    ),
    "kan order 0": (
        HEAD + "  - {kind: kan, order: 0}\n",
        ["variants.2.order", "greater than or equal to 1"],
    ),
    "slope_from a fixed variant": (
        HEAD + "  - {kind: fixed, name: c, slope_from: fixed}\n",
        ["variants.2.slope_from", "'fixed' is a fixed variant", "global, layer, neuron, rowdy"],
    ),
    "slope_from a kan": (
        HEAD + "  - {kind: fixed, name: c, slope_from: k}\n  - {kind: kan, name: k}\n",
        ["variants.2.slope_from", "'k' is a kan variant"],
    ),
    "slope_from itself": (
        HEAD + "  - {kind: fixed, name: c, slope_from: c}\n",
        ["variants.2.slope_from", "names the variant itself"],
    ),
    "slope_from missing": (
        HEAD + "  - {kind: fixed, name: c, slope_from: nope}\n",
        ["variants.2.slope_from", "no variant is named 'nope'", "(variants: fixed, g, c)"],
    ),
    "slope and slope_from": (
        HEAD + "  - {kind: fixed, name: c, slope: 2, slope_from: g}\n",
        ["variants.2", "give slope or slope_from, not both"],
    ),
    "no feasible width": (
        "seeds: 1\nmatch: params\nvariants:\n  - {kind: fixed, name: mlp}\n"
        "  - {kind: kan, name: kan, layers: [1, 4, 4, 4, 1]}\n",
        [
            "variants.1.match",
            "kan",
            "mlp's 481 parameters",
            "nearest: 400 at layers [1, 4, 4, 4, 1]",
        ],
    ),
    "kan grid_range empty": (
        HEAD + "  - {kind: kan, grid_range: [1, 1]}\n",
        ["variants.2", "grid_range", "lo < hi", "[1.0, 1.0]"],
    ),
    "spline grid_range reversed": (
        HEAD + "  - {kind: spline, grid_range: [2, -2]}\n",
        ["variants.2", "grid_range", "lo < hi"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_controls_and_splines_are_one_line_exit_2_no_folder(case: str, tmp_path: Path) -> None:
    text, fragments = BAD[case]
    config, runs = tmp_path / "bad.yaml", tmp_path / "runs"
    config.write_text(text)
    result = runner.invoke(app, ["run", str(config), "--runs-dir", str(runs)])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"Error: {config}:"), line
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in line, line
    assert not runs.exists()
    # aaf validate refuses it with the same line.
    check = runner.invoke(app, ["validate", str(config)])
    assert check.exit_code == 2 and check.stderr.splitlines()[0] == line


def test_the_installed_entry_point_refuses_bad_controls(tmp_path: Path) -> None:
    aaf = Path(sys.executable).parent / "aaf"
    assert aaf.exists(), "the console script is installed next to the interpreter"
    for case in ("slope_from itself", "no feasible width", "spline order above grid"):
        text, fragments = BAD[case]
        config, runs = tmp_path / f"{case.replace(' ', '_')}.yaml", tmp_path / "runs"
        config.write_text(text)
        out = subprocess.run(
            [str(aaf), "run", str(config), "--runs-dir", str(runs), "--quiet"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert out.returncode == 2, (case, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {config}:"), out.stderr
        for fragment in fragments:
            assert fragment in lines[0], lines[0]
        assert out.stdout == ""
        assert not runs.exists()


def test_a_bad_slope_from_given_by_set_names_the_set(tmp_path: Path) -> None:
    config, runs = tmp_path / "ok.yaml", tmp_path / "runs"
    config.write_text(HEAD + "  - {kind: fixed, name: c, slope_from: g}\n")
    assert runner.invoke(app, ["validate", str(config)]).exit_code == 0
    result = runner.invoke(
        app, ["run", str(config), "--set", "variants.2.slope_from=fixed", "--runs-dir", str(runs)]
    )
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "variants.2.slope_from" in line and "'fixed'" in line
    assert not runs.exists()


def test_a_bad_slope_from_points_at_its_line_or_its_set(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(HEAD + "  - {kind: fixed, name: c, slope_from: c}\n")
    result = runner.invoke(app, ["validate", str(config)])
    assert result.stderr.startswith(f"Error: {config}:5:")
    config.write_text(HEAD + "  - {kind: fixed, name: c, slope_from: g}\n")
    result = runner.invoke(app, ["validate", str(config), "--set", "variants.2.slope_from=c"])
    assert "(--set variants.2.slope_from=c)" in result.stderr


def test_reading_the_steepness_warns_nothing() -> None:
    """What the first stage reads of the source (a float of its trained slopes, which require
    grad) says nothing on the user's terminal: torch warns of such a float() once per process,
    hence a fresh one."""
    code = (
        "import torch\n"
        "from aaf_cli.config import ExperimentConfig\n"
        "from aaf_cli.experiment import build_ensemble\n"
        "for kind in ('global', 'layer', 'neuron', 'rowdy'):\n"
        "    cfg = ExperimentConfig.model_validate(\n"
        "        {'seeds': 1, 'tune': False, 'variants': [{'kind': kind}]})\n"
        "    (e,) = build_ensemble(cfg, torch.device('cpu')).ensembles()\n"
        "    print(e.family.steepness(0))\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.split() == ["1.0"] * 4 and out.stderr == ""


def test_a_packed_sweep_gives_every_point_its_own_control(tmp_path: Path) -> None:
    """``aaf sweep`` over the source's n: the points train packed, each point's control takes
    the s of that point's own source (the median of its seeds' final n*a, from its
    checkpoints), and each point's summary carries the control's verdict."""
    path = tmp_path / "sweep.yaml"
    path.write_text(CONFIG.format(name="swc", tune="off"))
    runs = tmp_path / "runs"
    result = runner.invoke(
        app, ["sweep", str(path), "--grid", "variants.1.n=2,10", "--runs-dir", str(runs), "-q"]
    )
    assert result.exit_code == 0, result.output
    points = sorted(runs.glob("*/points/*/summary.json"))
    assert len(points) == 2
    slopes = []
    for summary_path in points:
        summary = json.loads(summary_path.read_text())
        entry = summary["controls"]["variants"]["control"]
        checkpoint = torch.load(
            summary_path.parent / "checkpoints" / "g.pt", map_location="cpu", weights_only=True
        )
        found = [
            float(s["activations.0.a"] * s["activations.0.n"]) for s in checkpoint["state_dicts"]
        ]
        assert entry["per_seed"] == found
        assert entry["slope"] == statistics.median(found)
        assert summary["controls"]["comparisons"][0]["verdict"].startswith(QUESTION)
        slopes.append(entry["slope"])
    assert slopes[0] != slopes[1]
