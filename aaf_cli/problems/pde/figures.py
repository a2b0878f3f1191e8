"""The figures of a PDE run: losses with their terms, the solution, identified parameters.

Same conventions as ``aaf_cli.plots`` (Agg canvas, Okabe-Ito colours, legends below the axes);
each function takes plain lists, writes one PNG atomically and returns the figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D

from aaf_cli.plots import (
    NEUTRAL,
    REFERENCE_STYLE,
    _band,
    _legend_columns,
    _positive,
    _seed_note,
    across_seeds,
    colour,
    legend_below,
    mark_phases,
    save,
    style,
    threshold_line,
    wrap,
)
from aaf_cli.problems.pde.training import PARAM_PREFIX, TERM_PREFIX
from aaf_cli.results import Band, Series, aggregate

__all__ = ["grid_side", "loss_curves", "params_figure", "solution"]


def _draw(
    ax: Axes, bands: Mapping[str, Band], crowded: bool, log: bool = True
) -> tuple[set[str], set[int]]:
    kinds: set[str] = set()
    seeds: set[int] = set()
    for i, band in enumerate(bands.values()):
        if not band.steps:
            continue
        values = _positive(band.center) if log else band.center
        ax.plot(band.steps, values, color=colour(i), ls=style(i), lw=1.6)
        if band.kind != "none":
            _band(ax, band.steps, band.low, band.high, colour(i), crowded, log=log)
            kinds.add(band.kind)
        seeds.add(band.seeds)
    return kinds, seeds


def loss_curves(
    series: Sequence[Series],
    variants: Sequence[str],
    terms: Sequence[str],
    path: Path,
    title: str,
    threshold: float | None,
    notes: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    phases: Sequence[tuple[int, str]] = (),
    first: str = "",
) -> Figure:
    """Top: the total PINN loss and the relative L2 error (with the threshold that steps to
    threshold count on); below: each loss term, unweighted. Median over seeds per variant with
    the seed band, log axes; ``phases`` (``plots.phase_marks``) dotted where an optimiser takes
    over from ``first``."""
    labels = labels or {}
    width = 11.0
    columns = 3 if len(terms) > 2 else 2
    rows = 1 + math.ceil(len(terms) / columns)
    fig = Figure(figsize=(width, 1.4 + 2.9 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    upper, lower = _two(fig, [1.25, rows - 1])
    total_ax, error_ax = upper.subplots(1, 2, sharex=True)
    term_axes = lower.subplots(rows - 1, columns, sharex=True, sharey=True, squeeze=False)
    flat = [ax for row in term_axes for ax in row]
    crowded = len(variants) >= 4
    by = {v: [s for s in series if s.variant == v] for v in variants}
    kinds: set[str] = set()
    seeds: set[int] = set()
    for ax, metric, what in (
        (total_ax, "train", "total PINN loss (weighted sum of the terms)"),
        (error_ax, "test", "relative L2 error on the test grid"),
    ):
        k, s = _draw(ax, {v: aggregate(by[v], metric) for v in variants}, crowded)
        kinds |= k
        seeds |= s
        ax.set_title(what, fontsize=9)
    for ax, term in zip(flat, terms):
        _draw(ax, {v: across_seeds(by[v], TERM_PREFIX + term, "terms") for v in variants}, crowded)
        ax.set_title(f"{term} (mean square)", fontsize=9)
    for ax in flat[len(terms) :]:
        ax.set_axis_off()
    handles: list[Any] = [
        Line2D([], [], color=colour(i), ls=style(i), lw=1.6, label=labels.get(v, v))
        for i, v in enumerate(variants)
    ]
    if threshold is not None:
        handles.append(threshold_line(error_ax, threshold, "relative L2 error"))
    marked = mark_phases([total_ax, error_ax, *flat[: len(terms)]], phases, first)
    if marked is not None:
        handles.append(marked)
    for ax in [total_ax, error_ax, *flat[: len(terms)]]:
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("step", fontsize=8)
    legend_below(fig, handles, _legend_columns(len(handles), width))
    lines = [title, _seed_note(seeds, kinds), *notes]
    fig.suptitle(wrap("\n".join(line for line in lines if line), width), fontsize=10)
    save(fig, path)
    return fig


def _two(fig: Figure, ratios: list[float]) -> tuple[SubFigure, SubFigure]:
    """Two stacked sub-figures with these height ratios."""
    upper, lower = np.asarray(fig.subfigures(2, 1, height_ratios=ratios)).reshape(-1)
    return upper, lower


def grid_side(count: int, dims: int) -> int:
    """Points per axis of a test grid of ``count`` points in ``dims`` inputs."""
    side: int = math.floor(float(count) ** (1.0 / dims) + 0.5)
    if side**dims != count:
        raise ValueError(f"{count} points are not a grid in {dims} inputs")
    return side


def _plane(values: Sequence[float], dims: int, side: int) -> list[list[float]]:
    """The values over the first two inputs (later inputs at their middle grid value) as rows
    of the second input: ``[row j][column i]`` (the grid's last input varies fastest)."""
    middle = side // 2
    rest = 0
    for _ in range(dims - 2):
        rest = rest * side + middle
    tail = side ** (dims - 2)
    return [[values[(i * side + j) * tail + rest] for i in range(side)] for j in range(side)]


def solution(
    axes_values: Sequence[Sequence[float]],
    inputs: Sequence[str],
    reference: Sequence[float],
    predictions: Mapping[str, tuple[int, Sequence[float]]],
    path: Path,
    title: str,
    labels: Mapping[str, str] | None = None,
    seeds: int = 1,
    what: str = "reference",
) -> Figure:
    """The reference (or exact) solution, each variant's median-seed prediction and its
    absolute error as heat maps over the first two inputs, then slices at three values of the
    time input (``t``, else the second input; for one input, the whole line).

    Args:
        axes_values: the grid's values of each input (``side`` each).
        inputs: the input names.
        reference: the solution on the grid (last input fastest).
        predictions: variant -> (seed, prediction on the grid).
        what: ``reference`` or ``exact solution``, for the titles.
    """
    labels = labels or {}
    dims = len(inputs)
    side = len(axes_values[0])
    width = 11.0
    if dims == 1:
        fig = Figure(figsize=(width, 7.0), layout="constrained")
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True)
        x = list(axes_values[0])
        top.plot(x, reference, color="black", lw=2.6, alpha=0.3, label=what)
        for i, (_, pred) in enumerate(predictions.values()):
            top.plot(x, pred, color=colour(i), ls=style(i), lw=1.3)
            err = [abs(p - r) for p, r in zip(pred, reference)]
            bottom.plot(x, _positive(err), color=colour(i), ls=style(i), lw=1.0)
        bottom.set_yscale("log")
        bottom.set_ylabel("|prediction - solution|")
        bottom.set_xlabel(inputs[0])
        handles = [Line2D([], [], color="black", lw=2.6, alpha=0.3, label=what)]
        handles += _variant_handles(predictions, labels, seeds)
        legend_below(fig, handles, _legend_columns(len(handles), width))
        fig.suptitle(wrap(title, width), fontsize=10)
        save(fig, path)
        return fig

    x_name, y_name = inputs[0], inputs[1]
    xs, ys = list(axes_values[0]), list(axes_values[1])
    extent = (min(xs), max(xs), min(ys), max(ys))
    rows = 1 + len(predictions)
    fig = Figure(figsize=(width, 3.0 * rows + 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    heat_fig, slice_fig = _two(fig, [3.0 * rows, 3.0])
    axes = heat_fig.subplots(rows, 2, squeeze=False)
    finite = [v for v in reference if math.isfinite(v)]
    scale: dict[str, Any] = {"cmap": "cividis"}
    if finite:
        scale.update(vmin=min(finite), vmax=max(finite))

    def heat(ax: Axes, values: Sequence[float], text: str, **kw: Any) -> None:
        image = ax.imshow(
            _plane(values, dims, side), origin="lower", extent=extent, aspect="auto", **kw
        )
        ax.set_title(wrap(text, 5.0, 9), fontsize=9)
        ax.set_xlabel(x_name, fontsize=8)
        ax.set_ylabel(y_name, fontsize=8)
        heat_fig.colorbar(image, ax=ax)

    later = ", ".join(f"{n} at its middle" for n in inputs[2:])
    heat(axes[0][0], reference, what + (f" ({later})" if later else ""), **scale)
    which = "median seed" if seeds > 1 else "seed"
    # One colour scale for every error map, so that brightness compares across variants.
    errors = {
        v: [max(abs(p - r), 1e-12) for p, r in zip(pred, reference)]
        for v, (_, pred) in predictions.items()
    }
    shown = [e for err in errors.values() for e in err if math.isfinite(e)]
    norm = LogNorm(vmin=max(min(shown, default=1e-8), 1e-8), vmax=max(shown, default=1.0))
    for r, (variant, (seed, pred)) in enumerate(predictions.items(), start=1):
        label = labels.get(variant, variant)
        heat(axes[r][0], pred, f"{label}, {which} {seed}: prediction", **scale)
        heat(
            axes[r][1], errors[variant], f"{label}: |prediction - {what}|", norm=norm, cmap="magma"
        )
    # The slot beside the reference: each shown prediction's error in one number.
    summary = axes[0][1]
    summary.set_axis_off()
    lines = [f"relative L2 error of the {which} shown,", "at the last step:"]
    norm_ref = math.sqrt(sum(r * r for r in reference if math.isfinite(r))) or 1.0
    for variant, (_, pred) in predictions.items():
        l2 = math.sqrt(sum((p - r) ** 2 for p, r in zip(pred, reference))) / norm_ref
        lines.append(f"  {labels.get(variant, variant)}: {l2:.3g}")
    lines.append("")
    lines.append("the error maps share one colour scale")
    summary.text(0.02, 0.95, "\n".join(lines), va="top", ha="left", fontsize=9,
                 family="monospace", transform=summary.transAxes)  # fmt: skip

    # Slices at three values of the time input (Raissi et al.'s Burgers figure).
    time_axis = inputs.index("t") if "t" in inputs[:2] else 1
    space_axis = 1 - time_axis
    space, times = (xs, ys) if time_axis == 1 else (ys, xs)
    picks = [round(f * (side - 1)) for f in (0.25, 0.5, 0.75)]
    slice_axes = slice_fig.subplots(1, 3, sharey=True)
    ref_plane = _plane(reference, dims, side)
    pred_planes = {v: _plane(p, dims, side) for v, (_, p) in predictions.items()}

    def line(plane: list[list[float]], k: int) -> list[float]:
        # plane[j][i]: j indexes the second input, i the first.
        if time_axis == 1:
            return plane[k]
        return [plane[j][k] for j in range(side)]

    for ax, k in zip(slice_axes, picks):
        ax.plot(space, line(ref_plane, k), color="black", lw=2.6, alpha=0.3)
        for i, variant in enumerate(predictions):
            ax.plot(space, line(pred_planes[variant], k), color=colour(i), ls=style(i), lw=1.2)
        ax.set_title(f"{inputs[time_axis]} = {times[k]:.3g}", fontsize=9)
        ax.set_xlabel(inputs[space_axis], fontsize=8)
        ax.grid(True, alpha=0.3)
    slice_axes[0].set_ylabel("u", fontsize=8)
    handles = [Line2D([], [], color="black", lw=2.6, alpha=0.3, label=what)]
    handles += _variant_handles(predictions, labels, seeds)
    slice_fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=_legend_columns(len(handles), width),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(wrap(title, width), fontsize=10)
    save(fig, path)
    return fig


def _variant_handles(
    predictions: Mapping[str, tuple[int, Sequence[float]]], labels: Mapping[str, str], seeds: int
) -> list[Any]:
    which = "median seed" if seeds > 1 else "seed"
    return [
        Line2D(
            [], [], color=colour(i), ls=style(i), lw=1.3, label=f"{labels.get(v, v)}, {which} {s}"
        )
        for i, (v, (s, _)) in enumerate(predictions.items())
    ]


def params_figure(
    series: Sequence[Series],
    variants: Sequence[str],
    true: Mapping[str, float | None],
    path: Path,
    title: str,
    labels: Mapping[str, str] | None = None,
    phases: Sequence[tuple[int, str]] = (),
    first: str = "",
) -> Figure:
    """Each identified PDE parameter against the step (median over seeds per variant with the
    seed band), its true value dashed; log y axis for positive values; ``phases``
    (``plots.phase_marks``) dash-dotted where an optimiser takes over from ``first``."""
    labels = labels or {}
    names = list(true)
    width = 7.5
    fig = Figure(figsize=(width, 1.6 + 3.0 * len(names)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    by = {v: [s for s in series if s.variant == v] for v in variants}
    kinds: set[str] = set()
    seeds: set[int] = set()
    for ax, name in zip(axes, names):
        bands = {v: across_seeds(by[v], PARAM_PREFIX + name, "terms") for v in variants}
        values = [x for b in bands.values() for x in b.center + b.low + b.high]
        value = true[name]
        log = all(math.isfinite(x) and x > 0 for x in values) and (value is None or value > 0)
        k, s = _draw(ax, bands, crowded=len(variants) >= 4, log=log)
        kinds |= k
        seeds |= s
        if value is not None:
            ax.axhline(value, color=NEUTRAL, lw=1.0, ls=REFERENCE_STYLE)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
        shown = f"true {value:.6g}" if value is not None else "true value unknown"
        ax.set_title(f"identified {name} ({shown}, dashed)", fontsize=9)
    axes[-1].set_xlabel("step")
    handles: list[Any] = [
        Line2D([], [], color=colour(i), ls=style(i), lw=1.6, label=labels.get(v, v))
        for i, v in enumerate(variants)
    ]
    handles.append(Line2D([], [], color=NEUTRAL, lw=1.0, ls=REFERENCE_STYLE, label="true value"))
    marked = mark_phases(list(axes), phases, first)
    if marked is not None:
        handles.append(marked)
    legend_below(fig, handles, _legend_columns(len(handles), width))
    fig.suptitle(wrap(f"{title}\n{_seed_note(seeds, kinds, 'median')}", width), fontsize=10)
    save(fig, path)
    return fig
