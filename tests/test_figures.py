"""Figures that read at a glance: what variants are called, what titles say, what is drawn once.

The figures are inspected through their matplotlib artists (the plot functions return them, and
``plots.save`` is wrapped to catch the ones a run writes), never by pixels.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from aaf_cli import plots
from aaf_cli.config import load_config
from aaf_cli.errors import ConfigError
from aaf_cli.naming import describe_variant, target_text, variant_label
from aaf_cli.overview import build_curves, curves_csv
from aaf_cli.pipeline import describe, execute
from aaf_cli.results import Band, Series
from aaf_cli.runs import RunFolder
from aaf_cli.schema import NAME_PATTERN
from aaf_cli.stats import quantile

from .conftest import SMOKE

QUICK = ["seeds=2", "train.steps=20", "train.log_every=5", "threads=1", "tune=off"]


def _names(*variants: str) -> list[str]:
    cfg = load_config(None, [f"variants=[{', '.join(variants)}]"])
    return [v.name for v in cfg.variants]


# --------------------------------------------------------------------------------------------
# Names and labels


def test_unnamed_variants_are_named_after_what_they_are() -> None:
    assert _names("{kind: fixed}", "{kind: global, n: 5}") == ["fixed", "global-n5"]
    assert _names("{kind: layer, slope_recovery: {weight: 1}}", "{kind: rowdy, K: 4}") == [
        "layer-sr",
        "rowdy-K4",
    ]
    # Two of a kind: what tells them apart is named, defaults included; identical ones numbered.
    assert _names("{kind: fixed}", "{kind: global, n: 5}", "{kind: global}", "{kind: fixed}") == [
        "fixed-1",
        "global-n5",
        "global-n10",
        "fixed-2",
    ]
    # A given name is kept; an unnamed variant that would take it gets a suffix.
    assert _names("{kind: fixed, name: global}", "{kind: global}") == ["global", "global-2"]


def test_given_names_must_still_be_unique() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["variants=[{kind: fixed, name: a}, {kind: global, name: a}]"])
    assert info.value.key == "variants"
    assert "variant names must be unique ('a' repeats)" in str(info.value)


def test_default_names_are_file_safe_unique_and_survive_a_reload(tmp_path: Path) -> None:
    variants = [
        "{kind: fixed}",
        "{kind: fixed, lr: 2.5e-2, activation: tanh, layers: [1, 7, 1]}",
        "{kind: global, n: 2.5, a0: 0.2}",
        "{kind: global, n: 4, a0: 0.25}",  # a0 = 1/n: nothing to say
        "{kind: neuron, slope_recovery: {weight: 0.5, form: code}}",
        "{kind: prelu, a0: -0.5}",
        "{kind: swish, beta0: 1.5}",
        "{kind: rational, degrees: [3, 2]}",
        "{kind: rational}",
        "{kind: layer, lr: 1.0e-6}",
        *(["{kind: fixed, layers: [1, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 1]}"] * 2),
    ]
    cfg = load_config(None, [f"variants=[{', '.join(variants)}]"])
    names = [v.name for v in cfg.variants]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(NAME_PATTERN, n) for n in names), names
    assert names[:4] == [
        "fixed",
        "fixed-tanh-lr0p025-layers1x7x1",
        "global-n2p5-a0_0p2",
        "global-n4",
    ]
    assert names[5] == "prelu-a0_m0p5" and names[-3] == "layer-lr1em06"
    # The resolved config (written to every run folder) loads back to the same names.
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert [v.name for v in load_config(path).variants] == names


def test_built_in_default_keeps_its_names_and_says_what_adaptive_is() -> None:
    cfg = load_config(None)
    labels = [variant_label(v.name, v.model_dump(mode="json")) for v in cfg.variants]
    assert labels == ["fixed", "adaptive (global, n=10)"]


@pytest.mark.parametrize(
    ("name", "entry", "label"),
    [
        ("global", {"kind": "global", "n": 10.0}, "global (n=10)"),
        ("global-n5", {"kind": "global", "n": 5.0}, "global-n5"),
        ("gaaf", {"kind": "global", "n": 10.0, "a0": 0.1}, "gaaf (global, n=10)"),
        ("g", {"kind": "global", "n": 10.0, "a0": 0.2}, "g (global, n=10, a0=0.2)"),
        ("fixed_lr5x", {"kind": "fixed", "lr": 0.025}, "fixed_lr5x (lr=0.025)"),
        ("fixed_elu", {"kind": "fixed", "activation": "elu"}, "fixed_elu"),
        ("llaaf_sr", {"kind": "layer", "n": 10.0, "slope_recovery": {}}, "llaaf_sr (layer, n=10)"),
        ("rowdy", {"kind": "rowdy", "n": 10.0, "K": 4}, "rowdy (n=10, K=4)"),
        ("prelu", {"kind": "prelu", "a0": 0.25}, "prelu"),
        ("wide", {"kind": "fixed", "layers": [1, 7, 1]}, "wide (fixed, layers 1x7x1)"),
    ],
)
def test_legend_labels_add_what_the_name_does_not_say(
    name: str, entry: dict[str, Any], label: str
) -> None:
    assert variant_label(name, entry) == label


def test_descriptions_name_slope_recovery_and_its_form() -> None:
    entry = {"kind": "neuron", "n": 10, "slope_recovery": {"weight": 2.0, "form": "code"}}
    assert describe_variant(entry) == "neuron, n=10, code-form slope recovery w=2"


# --------------------------------------------------------------------------------------------
# Titles


def test_custom_targets_are_titled_with_their_expression() -> None:
    cfg = load_config(SMOKE, ["target={expr: 'sin(3*x)*x', domain: [-2, 2]}", "name=mine"])
    assert describe(cfg) == "mine: y = sin(3*x)*x · [1x8x1] tanh"
    long = " + ".join(f"sin({k}*x)" for k in range(1, 30))
    title = describe(load_config(SMOKE, [f"target={{expr: '{long}', domain: [0, 1]}}"]))
    assert "expr" not in title and "y = sin(1*x) + sin(2*x)" in title and "…" in title
    assert len(title) < 120
    pieces = "[{when: 'x <= 0', expr: '0.2*sin(6*x)'}, {expr: '1 + x'}]"
    cfg = load_config(SMOKE, [f"target={{piecewise: {pieces}, domain: [-1, 1]}}"])
    assert (
        target_text(cfg.target.model_dump(mode="json"))
        == "y = 0.2*sin(6*x) if x <= 0; 1 + x otherwise"
    )


def test_titles_never_repeat_the_name() -> None:
    cfg = load_config(SMOKE, ["name=jcp_smooth", "target={name: jcp_smooth}"])
    title = describe(cfg)
    assert title.count("jcp_smooth") == 1
    assert title.startswith("jcp_smooth(x) = (x^3 - x) sin(7x) / 7 + sin(12x)")
    assert describe(load_config(SMOKE)).startswith("smoke: sine(x) = sin(freq x), freq=2")


# --------------------------------------------------------------------------------------------
# Figures a run writes


def _capturing(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Keep every figure instead of rendering it (rendering is most of a small run's time; the
    PNGs themselves are checked in test_cli)."""
    drawn: dict[str, Figure] = {}

    def capture(fig: Figure, path: Path, dpi: int = 130) -> None:
        drawn[Path(path).name] = fig

    monkeypatch.setattr(plots, "save", capture)
    return drawn


def _title(fig: Figure) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""  # type: ignore[attr-defined]


def _legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def _stop_after(calls: int) -> Callable[[], bool]:
    count = [0]

    def stop() -> bool:
        count[0] += 1
        return count[0] > calls

    return stop


def test_an_interrupted_runs_figures_say_so(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = _capturing(monkeypatch)
    cfg = load_config(SMOKE, QUICK)
    report = execute(cfg, runs_dir, stop=_stop_after(12))
    assert report.summary["status"] == "interrupted"
    done = report.summary["steps_done"]
    assert 0 < done < 20
    for name in ("loss_curves.png", "fit.png", "slopes.png"):
        assert f"INTERRUPTED at step {done} of 20" in _title(drawn[name]), name
    # A run that finished says nothing of the kind.
    drawn.clear()
    execute(cfg, runs_dir)
    assert all("INTERRUPTED" not in _title(fig) for fig in drawn.values())


def test_run_figures_label_variants_and_name_the_median_seed(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = _capturing(monkeypatch)
    cfg = load_config(SMOKE, [*QUICK, "seeds=3"])
    report = execute(cfg, runs_dir)
    loss = drawn["loss_curves.png"]
    # Legend below the panels, on the figure: never over the curves' ends.
    assert not any(ax.get_legend() for ax in loss.axes) and loss.legends
    assert _legend_texts(loss)[:2] == ["fixed", "adaptive (global, n=10)"]
    fit = drawn["fit.png"]
    assert "median seed by final test MSE (of 3)" in _title(fit)
    finals = {o["seed"]: o["final_test"] for o in report.summary["variants"]["fixed"]["per_seed"]}
    median = sorted(finals, key=finals.__getitem__)[1]
    assert f"fixed, median seed {median}" in _legend_texts(fit)


# --------------------------------------------------------------------------------------------
# Plot functions on constructed data


def _band(values: list[float], spread: float = 0.5) -> Band:
    steps = list(range(0, 10 * len(values), 10))
    return Band(steps, values, [v * spread for v in values], [v / spread for v in values], "iqr", 5)


def test_loss_curves_put_train_and_test_side_by_side_on_a_shared_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bands = {
        f"v{k}": {"train": _band([1.0, 0.5, 0.1]), "test": _band([1.1, 0.6, 0.2])} for k in range(5)
    }
    fig = plots.loss_curves(bands, tmp_path / "l.png", "t", threshold=0.05)
    train_ax, test_ax = fig.axes
    assert train_ax.get_shared_y_axes().joined(train_ax, test_ax)
    assert [line.get_ydata()[-1] for line in train_ax.get_lines()][:1] == [0.1]
    assert [line.get_ydata()[-1] for line in test_ax.get_lines()][:1] == pytest.approx([0.2])
    # Variants differ in colour and line style, both from the colour-blind-safe set.
    handles = fig.legends[0].legend_handles
    pairs = [(to_hex(h.get_color()), str(h.get_linestyle())) for h in handles[:5]]
    assert len(set(pairs)) == 5 and len({p[1] for p in pairs}) == 4
    assert {p[0] for p in pairs} <= {c.lower() for c in plots.PALETTE}
    # Five bands: faint fills (they would blend into brown) with outlines.
    fills = [c for c in train_ax.collections if isinstance(c, PolyCollection)]
    assert len(fills) == 5 and all((c.get_alpha() or 1) <= 0.05 for c in fills)
    # Two bands: plain fills.
    monkeypatch.setattr(plots, "save", lambda fig, path: None)  # one real rendering is enough
    few = plots.loss_curves(dict(list(bands.items())[:2]), tmp_path / "m.png", "t")
    assert [c.get_alpha() for c in few.axes[0].collections] == [0.12, 0.12]


def _param_series(variant: str, seed: int, params: dict[str, list[float]]) -> Series:
    n = len(next(iter(params.values())))
    return Series(variant, seed, steps=list(range(n)), params=params)


def test_slopes_have_medians_a_reference_a_shared_scale_and_one_legend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _capturing(monkeypatch)
    series = []
    for seed, growth in enumerate((1.0, 2.0, 4.0)):
        series.append(_param_series("g", seed, {"n*a": [1.0, 1.0 + growth]}))
        series.append(
            _param_series("l", seed, {"n*a[1]": [1.0, 1.5 * growth], "n*a[2]": [1.0, 0.5]})
        )
        series.append(_param_series("p", seed, {"a[1]": [0.25, 0.1 * seed]}))
    fig = plots.slopes(series, ["fixed", "g", "l", "p"], tmp_path / "s.png", "t", {"g": "g (x)"})
    g, layer, prelu = fig.axes[:3]
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
    texts = _legend_texts(fig)
    for expected in ("median over 3 seeds", "min-max over seeds", "n·a = 1: the fixed σ"):
        assert expected in texts
    assert [ax.get_ylabel() for ax in (g, layer, prelu)] == ["n·a", "n·a", "a (negative slope)"]
    assert g.get_shared_y_axes().joined(g, layer)
    assert not g.get_shared_y_axes().joined(g, prelu)
    # The median over seeds is drawn (not one line per seed), and n·a = 1 is marked.
    medians = [list(line.get_ydata()) for line in layer.get_lines()]
    assert [1.0, quantile([1.5, 3.0, 6.0], 0.5)] in medians
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in g.get_lines())
    assert not any(list(line.get_ydata()) == [1.0, 1.0] for line in prelu.get_lines())
    assert g.get_title() == "g (x): one a for all layers"


# --------------------------------------------------------------------------------------------
# Compare


def test_compare_draws_a_shared_baseline_once(
    runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _capturing(monkeypatch)
    a = execute(load_config(SMOKE, [*QUICK, "name=a"]), runs_dir).folder
    b = execute(load_config(SMOKE, [*QUICK, "name=b", "variants.1.n=5"]), runs_dir).folder
    c = execute(load_config(SMOKE, [*QUICK, "name=c", "train.lr=0.02"]), runs_dir).folder
    folders = [RunFolder(p) for p in (a, b, c)]
    curves = build_curves(folders)
    drawn = [(k.run, k.variant, k.runs) for k in curves]
    assert drawn == [
        (a.name, "fixed", (a.name, b.name)),  # identical configs but for the other variant
        (a.name, "adaptive", (a.name,)),
        (b.name, "adaptive", (b.name,)),
        (c.name, "fixed", (c.name,)),  # another learning rate: its own baseline
        (c.name, "adaptive", (c.name,)),
    ]
    assert [k.label for k in curves][1:3] == ["adaptive (global, n=10)", "adaptive (global, n=5)"]
    rows = list(
        csv.DictReader(io.StringIO(curves_csv(curves, "step", "auto", 0).split("\n", 1)[1]))
    )
    fixed_ab = [r for r in rows if r["variant"] == "fixed" and r["run"] == a.name]
    assert fixed_ab and {r["runs"] for r in fixed_ab} == {f"{a.name};{b.name}"}
    assert not [r for r in rows if r["variant"] == "fixed" and r["run"] == b.name]
    fig = plots.compare(curves, tmp_path / "cmp.png", "test MSE", "step")
    texts = _legend_texts(fig)
    shared = [t for t in texts if t.startswith("fixed (runs ")]
    assert len(shared) == 1 and a.name[11:] in shared[0] and b.name[11:] in shared[0]
    assert "sine(x) = sin(freq x), freq=2" in fig.axes[0].get_title()
    # The legend says what the shading is; bands are fills, never outlines that read as curves
    # (5 curves, 4 or more bands: the crowded case): one line per curve.
    assert any(t.startswith("shaded: ") and t.endswith(" over seeds") for t in texts), texts
    assert len(fig.axes[0].get_lines()) == len(curves) == 5
    # Same config, other numbers (as from another version of aaf): drawn apart, not merged.
    other = runs_dir / f"{b.name}-other"
    shutil.copytree(b, other)
    lines = (other / "metrics.csv").read_text().splitlines()
    test = lines[1].split(",").index("test_loss")
    for i, line in enumerate(lines[2:], start=2):
        cells = line.split(",")
        if cells[1] == "fixed":
            cells[test] = repr(float(cells[test]) * 1.01)
            lines[i] = ",".join(cells)
    (other / "metrics.csv").write_text("\n".join(lines) + "\n")
    apart = build_curves([folders[0], RunFolder(other)])
    assert [k.runs for k in apart if k.variant == "fixed"] == [(a.name,), (other.name,)]


def test_solution_error_maps_share_one_colour_scale(tmp_path: Path) -> None:
    """Brightness compares across variants: every |prediction - reference| map has the same
    log scale (from the smallest to the largest error of any variant); the slot beside the
    reference gives each shown prediction's relative L2 error."""
    from matplotlib.colors import LogNorm

    from aaf_cli.problems.pde import figures

    side = 8
    axes_values = [[i / (side - 1) for i in range(side)]] * 2
    reference = [float(i % side) + 1.0 for i in range(side * side)]
    small = [r + 1e-3 for r in reference]  # a good variant and a poor one
    large = [r * 1.5 for r in reference]
    fig = figures.solution(
        axes_values, ["x", "t"], reference, {"good": (0, small), "poor": (1, large)},
        tmp_path / "solution.png", "title",
    )  # fmt: skip
    norms = [im.norm for ax in fig.axes for im in ax.get_images() if isinstance(im.norm, LogNorm)]
    assert len(norms) == 2
    for n in norms:  # the smallest error of any variant, the largest of any
        assert (n.vmin, n.vmax) == (pytest.approx(1e-3), max(large) - max(reference))
    text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "good: 0.00" in text and "poor: 0.5" in text and "one colour scale" in text
