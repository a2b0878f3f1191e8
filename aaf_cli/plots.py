"""Every figure of aaf. Object-oriented matplotlib on the Agg canvas: no pyplot, no display.

Each function takes plain lists (never tensors) and writes one file atomically; the numbers it
draws are the ones the caller writes to CSV.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from aaf_cli.compare import Curve
from aaf_cli.results import Band, Series
from aaf_cli.runs import write_atomic

BAND_LABEL = {"iqr": "interquartile range", "minmax": "min-max", "std": "mean +- std", "none": ""}


def colour(index: int) -> str:
    return f"C{index % 10}"


def new_figure(width: float = 7.5, height: float = 4.5, rows: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False, height_ratios=[2, 1][:rows] or None)
    return fig, [ax for row in axes for ax in row]


def save(fig: Figure, path: Path, dpi: int = 130) -> None:
    """Render the figure (format from the suffix) and write it atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    write_atomic(path, buffer.getvalue())


def _positive(values: Sequence[float]) -> list[float]:
    """Log axes cannot show values <= 0 or non-finite ones: they become gaps."""
    return [v if math.isfinite(v) and v > 0 else math.nan for v in values]


def loss_curves(
    bands: Mapping[str, Mapping[str, Band]],
    path: Path,
    title: str,
    threshold: float | None = None,
    notes: Sequence[str] = (),
) -> None:
    """Median training (solid) and test (dashed) MSE per variant, with the seed band, log y."""
    fig, (ax,) = new_figure()
    kinds = set()
    seeds = set()
    for i, metrics in enumerate(bands.values()):
        for metric, style in (("train", "-"), ("test", "--")):
            band = metrics[metric]
            if not band.steps:
                continue
            ax.plot(band.steps, _positive(band.median), style, color=colour(i), lw=1.6)
            if band.kind != "none":
                ax.fill_between(
                    band.steps,
                    _positive(band.low),
                    _positive(band.high),
                    color=colour(i),
                    alpha=0.15 if metric == "test" else 0.25,
                    lw=0,
                )
                kinds.add(band.kind)
            seeds.add(band.seeds)
    if threshold is not None:
        ax.axhline(threshold, color="0.4", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE (data loss)")
    ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], color=colour(i), lw=2, label=v) for i, v in enumerate(bands)]
    handles += [
        Line2D([], [], color="0.3", ls="-", label="train"),
        Line2D([], [], color="0.3", ls="--", label="test"),
    ]
    if threshold is not None:
        handles.append(Line2D([], [], color="0.4", ls=":", label=f"threshold {threshold:g}"))
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    subtitle = _seed_note(seeds, kinds)
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=10)
    for k, note in enumerate(notes):
        ax.text(0.01, 0.02 + 0.05 * k, note, transform=ax.transAxes, fontsize=7, color="C3")
    save(fig, path)


def _seed_note(seeds: set[int], kinds: set[str]) -> str:
    if not seeds or max(seeds) <= 1:
        return ""
    count = str(max(seeds)) if len(seeds) == 1 else f"{min(seeds)}-{max(seeds)}"
    band = ", ".join(BAND_LABEL[k] for k in sorted(kinds))
    return f"median over {count} seeds" + (f", band: {band}" if band else "")


def fit(
    x_test: Sequence[float],
    y_test: Sequence[float],
    x_train: Sequence[float],
    y_train: Sequence[float],
    predictions: Mapping[str, tuple[int, Sequence[float]]],
    path: Path,
    title: str,
) -> None:
    """Target, training points and each variant's prediction (top); absolute error (bottom)."""
    fig, (top, bottom) = new_figure(7.5, 6.0, rows=2)
    top.plot(x_test, y_test, color="black", lw=2.2, alpha=0.35, label="target")
    top.plot(x_train, y_train, ".", color="0.4", ms=2.5, label=f"training points ({len(x_train)})")
    for i, (variant, (seed, pred)) in enumerate(predictions.items()):
        top.plot(x_test, pred, color=colour(i), lw=1.3, label=f"{variant} (seed {seed})")
        error = [abs(p - y) for p, y in zip(pred, y_test)]
        bottom.plot(x_test, _positive(error), color=colour(i), lw=1.0)
    top.set_ylabel("y")
    top.legend(fontsize=8, loc="best", framealpha=0.9)
    top.set_title(title, fontsize=10)
    bottom.set_yscale("log")
    bottom.set_ylabel("|prediction - target|")
    bottom.set_xlabel("x")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    save(fig, path)


def fit_2d(
    x_test: Sequence[Sequence[float]],
    y_test: Sequence[float],
    x_train: Sequence[Sequence[float]],
    predictions: Mapping[str, tuple[int, Sequence[float]]],
    path: Path,
    title: str,
) -> None:
    """Two inputs: the target with the training points, then per variant its prediction and its
    absolute error (log colour scale) as heat maps over the test grid."""
    from matplotlib.colors import LogNorm

    k = round(math.sqrt(len(y_test)))
    x1, x2 = x_test
    extent = (min(x1), max(x1), min(x2), max(x2))

    def heat(ax: Axes, values: Sequence[float], title: str, **scale: Any) -> None:
        # grid_points orders x1-major: row i of the picture is x2's i-th value.
        grid = [[values[a * k + b] for a in range(k)] for b in range(k)]
        image = ax.imshow(grid, origin="lower", extent=extent, aspect="auto", **scale)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax)

    rows = 1 + len(predictions)
    fig = Figure(figsize=(8.0, 3.0 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2, squeeze=False)
    fig.suptitle(title, fontsize=10)
    values = {"vmin": min(y_test), "vmax": max(y_test), "cmap": "viridis"}
    heat(axes[0][0], y_test, f"target, training points ({len(x_train[0])})", **values)
    axes[0][0].plot(x_train[0], x_train[1], ".", color="white", ms=1.5, alpha=0.6)
    axes[0][1].set_axis_off()
    for r, (variant, (seed, pred)) in enumerate(predictions.items(), start=1):
        heat(axes[r][0], pred, f"{variant} (seed {seed}): prediction", **values)
        error = [max(abs(p - y), 1e-12) for p, y in zip(pred, y_test)]
        norm = LogNorm(vmin=max(min(error), 1e-8), vmax=max(error))
        heat(axes[r][1], error, f"{variant}: |prediction - target|", norm=norm, cmap="magma")
    for row in axes:
        for ax in row:
            if ax.axison:
                ax.set_xlabel("x1", fontsize=8)
                ax.set_ylabel("x2", fontsize=8)
    save(fig, path)


def slopes(series: Sequence[Series], variants: Sequence[str], path: Path, title: str) -> None:
    """Activation parameters against the step: a panel per variant that has any, a colour per
    parameter (per layer), a thin line per seed; for neuron-wise slopes the per-layer mean as a
    line and the min-max over the layer's neurons as a band."""
    with_params = [v for v in variants if any(s.params for s in series if s.variant == v)]
    rows = max(len(with_params), 1)
    fig = Figure(figsize=(7.5, 1.2 + 2.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(title, fontsize=10)
    if not with_params:
        axes[0].text(
            0.5,
            0.5,
            "no trainable activation parameters (fixed variants only)",
            ha="center",
            va="center",
            transform=axes[0].transAxes,
        )
        axes[0].set_axis_off()
    for ax, variant in zip(axes, with_params):
        mine = [s for s in series if s.variant == variant]
        names = list(dict.fromkeys(_base_name(n) for s in mine for n in s.params))
        for s in mine:
            for k, name in enumerate(names):
                col = colour(k)
                if f"{name} mean" in s.params:
                    ax.plot(s.steps, s.params[f"{name} mean"], color=col, lw=0.9, alpha=0.8)
                    ax.fill_between(
                        s.steps,
                        s.params[f"{name} min"],
                        s.params[f"{name} max"],
                        color=col,
                        alpha=0.08,
                        lw=0,
                    )
                elif name in s.params:
                    ax.plot(s.steps, s.params[name], color=col, lw=0.9, alpha=0.8)
        handles = [Line2D([], [], color=colour(k), lw=2, label=n) for k, n in enumerate(names)]
        if any(f"{n} mean" in s.params for s in mine for n in names):
            handles.append(
                Line2D([], [], color="0.5", lw=6, alpha=0.25, label="min-max over neurons")
            )
        ax.legend(handles=handles, fontsize=7, loc="best", ncols=2 if len(handles) > 4 else 1)
        ax.set_title(f"{variant} ({len(mine)} seeds)", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("step")
    save(fig, path)


def _base_name(name: str) -> str:
    for suffix in (" mean", " min", " max"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


MARKERS = (None, "o", "s", "^", "v", "D")
THRESHOLD_STYLE = (0, (1, 4))
LINE_STYLES: tuple[str | tuple[int, tuple[int, ...]], ...] = (
    "-",
    "--",
    ":",
    "-.",
    (0, (5, 1, 1, 1, 1, 1)),
    (0, (8, 2)),
    (0, (1, 3)),
    (0, (3, 1, 1, 1)),
)


def compare(
    curves: Sequence[Curve],
    path: Path,
    title: str,
    x_label: str,
    threshold: float | None = None,
) -> None:
    """Several runs in one figure: colour by run, line style by variant, log y, seed bands."""
    fig, (ax,) = new_figure(8.5, 5.0)
    runs = list(dict.fromkeys(c.run for c in curves))
    variants = list(dict.fromkeys(c.variant for c in curves))
    # Folder names start with a timestamp; a date all runs share goes to the title instead.
    dates = {r[:11] for r in runs}
    shared = len(dates) == 1 and all(re.match(r"\d{4}-\d{2}-\d{2}_", r) for r in runs)
    short = {r: r[11:] if shared else r for r in runs}
    if shared:
        title += f" (runs of {next(iter(dates))[:10]})"
    handles = []
    for c in curves:
        col = colour(runs.index(c.run))
        k = variants.index(c.variant)
        style = LINE_STYLES[k % len(LINE_STYLES)]
        # Past the line styles, markers keep variants apart.
        marker = MARKERS[(k // len(LINE_STYLES)) % len(MARKERS)]
        (line,) = ax.plot(
            c.x,
            _positive(c.shown.median),
            linestyle=style,
            color=col,
            lw=1.6,
            marker=marker,
            markevery=max(1, len(c.x) // 12),
            markersize=4,
        )
        line.set_label(f"{short[c.run]} · {c.variant} ({c.raw.seeds} seeds)")
        handles.append(line)
        if c.raw.kind != "none":
            ax.fill_between(
                c.x, _positive(c.shown.low), _positive(c.shown.high), color=col, alpha=0.1, lw=0
            )
    if threshold is not None:
        ax.axhline(threshold, color="0.55", lw=0.8, ls=THRESHOLD_STYLE)
        handles.append(
            Line2D(
                [], [], color="0.55", lw=0.8, ls=THRESHOLD_STYLE, label=f"threshold {threshold:g}"
            )
        )
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("MSE")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.legend(
        handles=handles, loc="outside lower center", ncols=2 if len(handles) > 3 else 1, fontsize=8
    )
    save(fig, path)
