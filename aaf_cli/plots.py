"""Every figure of aaf. Object-oriented matplotlib on the Agg canvas: no pyplot, no display.

Each function takes plain lists (never tensors), writes one file atomically and returns the
figure (so tests can read what was drawn); the numbers it draws are the ones the caller writes to
CSV.

Conventions shared by every figure:

- Colours come from the Okabe-Ito palette (safe for the common colour-vision deficiencies), and
  line styles repeat on a different period, so two variants never share both colour and style
  and the figure still reads in grey.
- Legends sit below the axes, never over the ends of the curves.
- Seed bands are filled while few overlap; from ``OUTLINE_FROM`` bands on they are drawn as thin
  outlines over a faint fill, so overlapping bands do not blend into an unreadable brown.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Every figure draws on its own Agg canvas (FigureCanvasAgg), so no display is needed and the
# global backend is left alone: a notebook that imports aaf keeps drawing inline.
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from aaf_cli.overview import Curve
from aaf_cli.results import Band, Series, aggregate
from aaf_cli.runs import write_atomic

BAND_LABEL = {"iqr": "interquartile range", "minmax": "min-max", "std": "mean +- std", "none": ""}

# Okabe & Ito (2008), "Color Universal Design": blue, vermillion, bluish green, reddish purple,
# orange, sky blue; black last. Their yellow is left out: it does not show on white.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
SHARED = "#000000"  # curves that stand for several runs (compare), one a for all layers (slopes)
NEUTRAL = "0.35"
LineStyle = str | tuple[int, tuple[int, ...]]
LINE_STYLES: tuple[LineStyle, ...] = (
    "-",
    "--",
    ":",
    "-.",
    (0, (5, 1, 1, 1, 1, 1)),
    (0, (8, 2)),
    (0, (1, 3)),
    (0, (3, 1, 1, 1)),
)
VARIANT_STYLES = LINE_STYLES[:4]  # period 4 against the palette's 7: 28 distinct pairs
MARKERS = (None, "o", "s", "^", "v", "D")
THRESHOLD_STYLE = (0, (1, 4))
OUTLINE_FROM = 4  # bands drawn at once from which fills give way to outlines
REFERENCE_STYLE = (0, (6, 3))


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def style(index: int) -> LineStyle:
    return VARIANT_STYLES[index % len(VARIANT_STYLES)]


def new_figure(width: float = 7.5, height: float = 4.5, rows: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False, height_ratios=[2, 1][:rows] or None)
    return fig, [ax for row in axes for ax in row]


def warm_up() -> None:
    """Draw a small figure with a legend and a log axis, written nowhere: a fresh process's
    first figure loads the fonts and the renderer (about a second), so a writer process that
    warms up while training goes on has them ready for its first point."""
    fig, (ax,) = new_figure(2.0, 1.5)
    ax.semilogy([1, 2, 3], [1.0, 0.1, 0.01], label="warm")
    ax.set_title("warm")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png", dpi=50)


def save(fig: Figure, path: Path, dpi: int = 130) -> None:
    """Render the figure (format from the suffix) and write it atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    write_atomic(path, buffer.getvalue())


def threshold_line(ax: Axes, threshold: float, counted_on: str) -> Line2D:
    """Draw ``train.threshold`` on ``ax``; its legend handle names what it counts on."""
    ax.axhline(threshold, color=NEUTRAL, lw=0.9, ls=THRESHOLD_STYLE)
    label = f"threshold {threshold:g} ({counted_on})"
    return Line2D([], [], color=NEUTRAL, lw=0.9, ls=THRESHOLD_STYLE, label=label)


#: Optimiser names as figures and verdicts write them.
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "SGD", "lbfgs": "L-BFGS"}


def phase_marks(train: Any) -> list[tuple[int, str]]:
    """(step, "L-BFGS") at the start of every phase after the first, from a ``TrainConfig``;
    none without phases."""
    marks: list[tuple[int, str]] = []
    at = 0
    for k, phase in enumerate(train.phases or []):
        if k:
            marks.append((at, OPTIMIZER_NAMES.get(phase.optimizer, phase.optimizer)))
        at += phase.steps
    return marks


def first_optimizer(train: Any) -> str:
    """The optimiser that trains first (of a ``TrainConfig``), as written."""
    name = str(train.phases[0].optimizer if train.phases else train.optimizer)
    return OPTIMIZER_NAMES.get(name, name)


def mark_phases(axes: Sequence[Axes], marks: Sequence[tuple[int, str]], first: str) -> Any:
    """A dotted vertical line on every axis where a phase starts; the legend handle says
    which optimiser took over where (None without phases). ``first``: the first phase's
    optimiser, as written."""
    if not marks:
        return None
    for ax in axes:
        for step, _ in marks:
            ax.axvline(step, color=NEUTRAL, lw=0.9, ls="-.")
    parts = [first] + [f"{name} from step {step}" for step, name in marks]
    return Line2D([], [], color=NEUTRAL, lw=0.9, ls="-.", label=" then ".join(parts))


def _positive(values: Sequence[float]) -> list[float]:
    """Log axes cannot show values <= 0 or non-finite ones: they become gaps."""
    return [v if math.isfinite(v) and v > 0 else math.nan for v in values]


def wrap(text: str, width_in: float, fontsize: float = 10) -> str:
    """Break each line of a title so it fits a figure ``width_in`` inches wide."""
    # DejaVu Sans averages about 0.55 em per character.
    chars = max(30, int(width_in * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) if line else line for line in text.split("\n"))


def _band(
    ax: Axes,
    x: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    col: str,
    crowded: bool,
    log: bool = True,
    alpha: float = 0.2,
) -> None:
    """A seed band: filled while few are drawn; a faint fill with outlines when crowded."""
    lo, hi = (_positive(low), _positive(high)) if log else (list(low), list(high))
    if not crowded:
        ax.fill_between(x, lo, hi, color=col, alpha=alpha, lw=0)
        return
    ax.fill_between(x, lo, hi, color=col, alpha=0.05, lw=0)
    for edge in (lo, hi):
        ax.plot(x, edge, color=col, lw=0.6, alpha=0.55)


#: The width of a legend entry at font size 8: its handle and gap, and per character (inches).
LEGEND_HANDLE_IN, LEGEND_CHAR_IN = 0.45, 0.062


def legend_below(fig: Figure, handles: Sequence[Any], ncols: int) -> None:
    """The one legend of a figure, below its axes (never over the ends of the curves), in at
    most ``ncols`` columns, fewer where its longest label would not fit the figure's width."""
    longest = max((len(str(h.get_label())) for h in handles), default=0)
    entry = LEGEND_HANDLE_IN + LEGEND_CHAR_IN * longest
    fits = max(1, int(fig.get_figwidth() // entry))
    fig.legend(
        handles=list(handles),
        loc="outside lower center",
        ncols=min(ncols, fits),
        fontsize=8,
        frameon=False,
    )


def _legend_columns(count: int, width_in: float) -> int:
    return max(1, min(count, int(width_in // 2.8)))


def _seed_note(
    seeds: set[int], kinds: set[str], center: str = "geometric mean", traces: bool = False
) -> str:
    if not seeds or max(seeds) <= 1:
        return "one seed"
    count = str(max(seeds)) if len(seeds) == 1 else f"{min(seeds)}-{max(seeds)}"
    band = ", ".join(BAND_LABEL[k] for k in sorted(kinds) if BAND_LABEL[k])
    note = f"{center} over {count} seeds" + (f", band: {band} over seeds" if band else "")
    return note + ("; thin lines: each seed" if traces else "")


def _traces(ax: Axes, series: Sequence[Series], metric: str, col: str) -> None:
    """Every seed's own curve, thin and solid (dashes would break up into noise at this width),
    so that seeds which part ways show as two bundles."""
    for s in series:
        if s.diverged_at is None:
            ax.plot(s.steps, _positive(s.metric(metric)), color=col, lw=0.5, alpha=0.3)


def loss_curves(
    bands: Mapping[str, Mapping[str, Band]],
    path: Path,
    title: str,
    threshold: float | None = None,
    notes: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    seeds_of: Mapping[str, Sequence[Series]] | None = None,
    phases: Sequence[tuple[int, str]] = (),
    first: str = "",
) -> Figure:
    """Training and test MSE per variant, the geometric mean over seeds with the seed band and
    (``seeds_of``: each variant's series) every seed's own curve thin: two panels (training
    left, test right) sharing a log y axis; ``phases`` (``phase_marks``) dotted where an
    optimiser takes over from ``first``.

    Training and test losses of these noise-free targets lie almost on top of each other, so
    drawn in one panel one of them hides the other whatever its line style; side by side each
    reads, the shared axis shows the gap, and line style stays free to tell variants apart.
    """
    width = 11.0
    fig = Figure(figsize=(width, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    train_ax, test_ax = fig.subplots(1, 2, sharex=True, sharey=True)
    labels = labels or {}
    crowded = len(bands) >= OUTLINE_FROM
    kinds: set[str] = set()
    seeds: set[int] = set()
    handles: list[Any] = []
    for i, (variant, metrics) in enumerate(bands.items()):
        col, ls = colour(i), style(i)
        for ax, metric in ((train_ax, "train"), (test_ax, "test")):
            band = metrics[metric]
            if not band.steps:
                continue
            if seeds_of is not None and band.seeds > 1:
                _traces(ax, seeds_of.get(variant, []), metric, col)
            ax.plot(band.steps, _positive(band.center), color=col, ls=ls, lw=1.9)
            if band.kind != "none":
                _band(ax, band.steps, band.low, band.high, col, crowded, alpha=0.12)
                kinds.add(band.kind)
            seeds.add(band.seeds)
        handles.append(Line2D([], [], color=col, ls=ls, lw=1.7, label=labels.get(variant, variant)))
    if threshold is not None:
        # steps to threshold are counted on the training loss
        handles.append(threshold_line(train_ax, threshold, "training loss"))
    marked = mark_phases([train_ax, test_ax], phases, first)
    if marked is not None:
        handles.append(marked)
    for ax, what in ((train_ax, "training"), (test_ax, "test")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{what} MSE (data loss)", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    train_ax.set_ylabel("MSE (data loss)")
    test_ax.tick_params(labelleft=True)
    legend_below(fig, handles, _legend_columns(len(handles), width))
    lines = [title, _seed_note(seeds, kinds, traces=seeds_of is not None), *notes]
    fig.suptitle(wrap("\n".join(line for line in lines if line), width), fontsize=10)
    save(fig, path)
    return fig


def tuning_figure(tuning: Any, path: Path, title: str) -> Figure:
    """The tuning phase: each variant's criterion (the median final validation value over the
    tuning seeds) against the learning rate, every seed's value as a dot, the chosen rate
    ringed; log-log."""
    width = 7.5
    fig, (ax,) = new_figure(width, 4.6)
    handles: list[Any] = []
    for i, (name, v) in enumerate(tuning.variants.items()):
        col, ls = colour(i), style(i)
        finite = [(r, c) for r, c in zip(v.rates, v.criterion) if math.isfinite(c) and c > 0]
        if finite:
            ax.plot(*zip(*finite), color=col, ls=ls, lw=1.5, marker="o", ms=4)
        for rate, values in zip(v.rates, v.per_seed):
            dots = [x for x in values if math.isfinite(x) and x > 0]
            ax.plot([rate] * len(dots), dots, ".", color=col, ms=4, alpha=0.45)
        chosen = [c for r, c in zip(v.rates, v.criterion) if r == v.chosen and math.isfinite(c)]
        if chosen:
            ax.plot([v.chosen], chosen, "o", ms=12, mfc="none", mec=col, mew=1.8)
        edge = " (edge of the grid)" if v.at_edge else ""
        handles.append(
            Line2D([], [], color=col, ls=ls, marker="o", ms=4,
                   label=f"{name}: chosen {v.chosen:.3g}{edge}")
        )  # fmt: skip
    handles.append(
        Line2D([], [], ls="none", marker="o", ms=10, mfc="none", mec=NEUTRAL, label="chosen")
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"final validation {tuning.metric}")
    ax.grid(True, which="major", alpha=0.3)
    legend_below(fig, handles, _legend_columns(len(handles), width))
    seeds = len(tuning.seeds)
    note = (
        f"line: median over {seeds} tuning seeds (the criterion), dots: each seed; "
        "the run's own seeds then trained at the ringed rates"
    )
    fig.suptitle(wrap(f"{title}\n{note}", width), fontsize=10)
    save(fig, path)
    return fig


def _median_note(count: int) -> str:
    if count <= 1:
        return "one seed per variant"
    return f"each variant's median seed by final test MSE (of {count})"


def loss_and_error(
    outcomes: Sequence[Any],
    variants: Sequence[str],
    path: Path,
    title: str,
    loss: str,
    error: str,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Each seed's final training ``loss`` (left) and final test ``error`` (right) per variant,
    a thin grey line joining the variants of one seed, the geometric mean across seeds as a
    bar: whether a variant that lowers the loss lowers the error too, seed by seed."""
    labels = labels or {}
    width = 11.0
    fig = Figure(figsize=(width, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    by = {v: {o.seed: o for o in outcomes if o.variant == v and not o.diverged} for v in variants}
    seeds = sorted({s for v in variants for s in by[v]})
    for ax, field, what in ((axes[0], "final_train", loss), (axes[1], "final_test", error)):
        for seed in seeds:
            xs = [k for k, v in enumerate(variants) if seed in by[v]]
            ys = [getattr(by[variants[k]][seed], field) for k in xs]
            ax.plot(xs, ys, color=NEUTRAL, lw=0.7, alpha=0.45, zorder=1)
        for k, v in enumerate(variants):
            values = [getattr(o, field) for o in by[v].values()]
            values = [x for x in values if math.isfinite(x) and x > 0]
            ax.scatter([k] * len(values), values, color=colour(k), s=16, zorder=2, alpha=0.8)
            if values:
                center = math.exp(sum(math.log(x) for x in values) / len(values))
                ax.hlines(center, k - 0.28, k + 0.28, color=colour(k), lw=2.4, zorder=3)
        ax.set_xticks(range(len(variants)), [labels.get(v, v) for v in variants], fontsize=8)
        ax.set_xlim(-0.6, len(variants) - 0.4)
        ax.set_yscale("log")
        ax.grid(True, which="major", axis="y", alpha=0.3)
        ax.set_title(f"final {what}", fontsize=9)
    handles = [
        Line2D([], [], color=NEUTRAL, lw=0.7, label="one seed across the variants"),
        Line2D([], [], color="0.2", lw=2.4, label="geometric mean over seeds"),
    ]
    legend_below(fig, handles, 2)
    lines = [title, f"final {loss} against final {error}, seed by seed ({len(seeds)} seeds)"]
    fig.suptitle(wrap("\n".join(lines), width), fontsize=10)
    save(fig, path)
    return fig


def fit(
    x_test: Sequence[float],
    y_test: Sequence[float],
    x_train: Sequence[float],
    y_train: Sequence[float],
    predictions: Mapping[str, tuple[int, Sequence[float]]],
    path: Path,
    title: str,
    labels: Mapping[str, str] | None = None,
    seeds: int = 1,
) -> Figure:
    """Target, training points and each variant's prediction (top); absolute error (bottom).

    Each variant is drawn by one model, its median seed (``seeds``: how many it was picked from).
    """
    width = 7.5
    labels = labels or {}
    fig, (top, bottom) = new_figure(width, 6.4, rows=2)
    top.plot(x_test, y_test, color="black", lw=2.4, alpha=0.3, label="target")
    top.plot(x_train, y_train, ".", color="0.4", ms=2.5, label=f"training points ({len(x_train)})")
    for i, (variant, (seed, pred)) in enumerate(predictions.items()):
        col, ls = colour(i), style(i)
        label = f"{labels.get(variant, variant)}, {'median ' if seeds > 1 else ''}seed {seed}"
        top.plot(x_test, pred, color=col, ls=ls, lw=1.3, label=label)
        error = [abs(p - y) for p, y in zip(pred, y_test)]
        bottom.plot(x_test, _positive(error), color=col, ls=ls, lw=1.0)
    top.set_ylabel("y")
    bottom.set_yscale("log")
    bottom.set_ylabel("|prediction - target|")
    bottom.set_xlabel("x")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    handles, _ = top.get_legend_handles_labels()
    legend_below(fig, handles, _legend_columns(len(handles), width))
    fig.suptitle(wrap(f"{title}\n{_median_note(seeds)}", width), fontsize=10)
    save(fig, path)
    return fig


def fit_2d(
    x_test: Sequence[Sequence[float]],
    y_test: Sequence[float],
    x_train: Sequence[Sequence[float]],
    predictions: Mapping[str, tuple[int, Sequence[float]]],
    path: Path,
    title: str,
    labels: Mapping[str, str] | None = None,
    seeds: int = 1,
) -> Figure:
    """Two inputs: the target with the training points, then per variant its prediction and its
    absolute error (log colour scale) as heat maps over the test grid."""
    from matplotlib.colors import LogNorm

    labels = labels or {}
    k = round(math.sqrt(len(y_test)))
    x1, x2 = x_test
    extent = (min(x1), max(x1), min(x2), max(x2))

    def heat(ax: Axes, values: Sequence[float], title: str, **scale: Any) -> None:
        # grid_points orders x1-major: row i of the picture is x2's i-th value.
        grid = [[values[a * k + b] for a in range(k)] for b in range(k)]
        image = ax.imshow(grid, origin="lower", extent=extent, aspect="auto", **scale)
        ax.set_title(wrap(title, 3.6, 9), fontsize=9)
        fig.colorbar(image, ax=ax)

    rows = 1 + len(predictions)
    fig = Figure(figsize=(8.0, 3.0 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2, squeeze=False)
    fig.suptitle(wrap(f"{title}\n{_median_note(seeds)}", 8.0), fontsize=10)
    # cividis: perceptually uniform and readable with colour-vision deficiencies.
    values = {"vmin": min(y_test), "vmax": max(y_test), "cmap": "cividis"}
    heat(axes[0][0], y_test, f"target, training points ({len(x_train[0])})", **values)
    axes[0][0].plot(x_train[0], x_train[1], ".", color="white", ms=1.5, alpha=0.6)
    axes[0][1].set_axis_off()
    for r, (variant, (seed, pred)) in enumerate(predictions.items(), start=1):
        label = labels.get(variant, variant)
        which = f"{'median ' if seeds > 1 else ''}seed {seed}"
        heat(axes[r][0], pred, f"{label}, {which}: prediction", **values)
        error = [max(abs(p - y), 1e-12) for p, y in zip(pred, y_test)]
        norm = LogNorm(vmin=max(min(error), 1e-8), vmax=max(error))
        heat(axes[r][1], error, f"{label}: |prediction - target|", norm=norm, cmap="magma")
    for row in axes:
        for ax in row:
            if ax.axison:
                ax.set_xlabel("x1", fontsize=8)
                ax.set_ylabel("x2", fontsize=8)
    save(fig, path)
    return fig


def parity(
    measured: Sequence[float],
    predictions: Mapping[str, tuple[int, Sequence[float]]],
    path: Path,
    title: str,
    output: str,
    labels: Mapping[str, str] | None = None,
    seeds: int = 1,
    along: tuple[str, Sequence[float]] | None = None,
    training: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Figure:
    """Measured data against predictions on the test rows: each variant's median-seed
    prediction against the measured value (on the diagonal where they agree). ``along``: the
    one input's name and values, drawn as a second panel of the data and predictions against
    it (``training``: the training rows' input and output, shown faint)."""
    width = 7.5 if along is None else 11.0
    labels = labels or {}
    fig, axes = new_figure(width, 5.2, rows=1) if along is None else _two_panels(width)
    ax = axes[0]
    low, high = min(measured), max(measured)
    for i, (variant, (seed, pred)) in enumerate(predictions.items()):
        label = f"{labels.get(variant, variant)}, {'median ' if seeds > 1 else ''}seed {seed}"
        ax.plot(measured, pred, "o", color=colour(i), ms=3, alpha=0.6, label=label)
        low, high = min(low, *pred), max(high, *pred)
    ax.plot([low, high], [low, high], color="black", lw=1, alpha=0.5, label="prediction = data")
    ax.set_xlabel(f"measured {output} (test rows: {len(measured)})")
    ax.set_ylabel(f"predicted {output}")
    ax.grid(True, alpha=0.3)
    if along is not None:
        name, xs = along
        side = axes[1]
        if training is not None:
            rows = f"training rows ({len(training[0])})"
            side.plot(*training, ".", color="0.6", ms=2, label=rows)
        side.plot(xs, measured, "o", color="black", ms=3, alpha=0.7, label="test rows")
        order = sorted(range(len(xs)), key=lambda k: xs[k])
        for i, (_, (_, pred)) in enumerate(predictions.items()):
            side.plot([xs[k] for k in order], [pred[k] for k in order], color=colour(i),
                      ls=style(i), lw=1.3)  # fmt: skip
        side.set_xlabel(name)
        side.set_ylabel(output)
        side.grid(True, alpha=0.3)
    handles = [h for a in axes for h in a.get_legend_handles_labels()[0]]
    legend_below(fig, handles, _legend_columns(len(handles), width))
    fig.suptitle(wrap(f"{title}\n{_median_note(seeds)}", width), fontsize=10)
    save(fig, path)
    return fig


def _two_panels(width: float) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, 2))


# --------------------------------------------------------------------------------------------
# Activation parameters

SLOPE_FAMILIES = ("n*a", "max|n*a_j|")  # on the n*a scale: 1 is the fixed activation
FAMILY_TEXT = {
    "n*a": "n·a",
    "max|n*a_j|": "max_j |n·a_j|",
    "a": "a (negative slope)",
    "beta": "β",
    "slope@0": "slope at 0",
}
_LAYER = re.compile(r"^(.*)\[(\d+)\]$")


def _split(name: str) -> tuple[str, int | None]:
    """'n*a[2]' -> ('n*a', 2); 'n*a' -> ('n*a', None): one a for all layers."""
    match = _LAYER.match(name)
    return (match.group(1), int(match.group(2))) if match else (name, None)


def _base_name(name: str) -> str:
    for suffix in (" mean", " min", " max"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def across_seeds(series: Sequence[Series], key: str, field: str = "params") -> Band:
    """Median and band over seeds of one logged series of a ``Series`` mapping (``params``,
    or a PDE run's ``terms``), aligned by step like the losses; diverged seeds left out. (The
    median: parameters may be negative, which a geometric mean cannot take.)"""
    # aggregate() reads a metric; the logged values are handed to it in the 'train' slot.
    carriers = [
        Series(s.variant, s.seed, steps=s.steps, train=values[key], diverged_at=s.diverged_at)
        for s in series
        if key in (values := getattr(s, field))
    ]
    return aggregate(carriers, "train", center="median")


def slopes(
    series: Sequence[Series],
    variants: Sequence[str],
    path: Path,
    title: str,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Activation parameters against the step, a panel per variant that has any.

    In a panel: a colour per hidden layer (black where one parameter serves all layers), the
    median over seeds as a line and the seed band around it; neuron-wise slopes show the median
    of the layer's mean, with dotted lines for the layer's smallest and largest neuron. Panels on
    the n·a scale (GAAF, L-LAAF, N-LAAF, Rowdy) share their y axis and a dashed n·a = 1 line,
    where the adaptive activation equals the fixed one; one legend below serves every panel.
    """
    labels = labels or {}
    with_params = [v for v in variants if any(s.params for s in series if s.variant == v)]
    panels = max(len(with_params), 1)
    columns = 2 if panels > 3 else 1
    rows = math.ceil(panels / columns)
    width = 11.0 if columns == 2 else 7.5
    fig = Figure(figsize=(width, 1.6 + 2.4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, columns, sharex=True, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        ax.set_axis_off()
    fig.suptitle(wrap(title, width), fontsize=10)
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
        save(fig, path)
        return fig
    names_of = {
        v: list(dict.fromkeys(_base_name(n) for s in series if s.variant == v for n in s.params))
        for v in with_params
    }
    families_of = {v: list(dict.fromkeys(_split(n)[0] for n in names_of[v])) for v in with_params}
    slope_axes = [
        ax for ax, v in zip(axes, with_params) if all(f in SLOPE_FAMILIES for f in families_of[v])
    ]
    for ax in slope_axes[1:]:
        ax.sharey(slope_axes[0])  # comparable: all on the n·a scale (shared before drawing)
    layers_seen: set[int] = set()
    shared_a = neurons = False
    dashed: list[str] = []  # a panel's second parameter family (Rowdy's sine amplitudes)
    band_kinds: set[str] = set()
    seed_counts: set[int] = set()
    for ax, variant in zip(axes, with_params):
        mine = [s for s in series if s.variant == variant]
        names, families = names_of[variant], families_of[variant]
        for name in names:
            family, layer = _split(name)
            col = SHARED if layer is None else colour(layer - 1)
            ls: LineStyle = "-" if families.index(family) == 0 else "--"
            shared_a |= layer is None
            if layer is not None:
                layers_seen.add(layer)
            if ls == "--" and family not in dashed:
                dashed.append(family)
            wise = any(f"{name} mean" in s.params for s in mine)
            band = across_seeds(mine, f"{name} mean" if wise else name)
            if not band.steps:
                continue
            seed_counts.add(band.seeds)
            ax.plot(band.steps, band.center, color=col, ls=ls, lw=1.5)
            if band.kind != "none":
                band_kinds.add(band.kind)
                _band(ax, band.steps, band.low, band.high, col, crowded=False, log=False)
            if wise:
                neurons = True
                for edge in ("min", "max"):
                    spread = across_seeds(mine, f"{name} {edge}")
                    ax.plot(spread.steps, spread.center, color=col, ls=":", lw=0.9)
        if ax in slope_axes:
            ax.axhline(1.0, color=NEUTRAL, lw=0.9, ls=REFERENCE_STYLE, zorder=1)
        ax.set_ylabel("; ".join(FAMILY_TEXT.get(f, f) for f in families), fontsize=8)
        one = ": one a for all layers" if any(_split(n)[1] is None for n in names) else ""
        ax.set_title(f"{labels.get(variant, variant)}{one}", fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in axes[:panels]:
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("step", fontsize=8)
    handles: list[Any] = []
    if shared_a:
        handles.append(Line2D([], [], color=SHARED, lw=1.5, label="all hidden layers (one a)"))
    for layer in sorted(layers_seen):
        handles.append(Line2D([], [], color=colour(layer - 1), lw=1.5, label=f"layer {layer}"))
    count = max(seed_counts) if seed_counts else 0
    handles.append(
        Line2D([], [], color=NEUTRAL, lw=1.5, label=f"median over {count} seeds")
        if count > 1
        else Line2D([], [], color=NEUTRAL, lw=1.5, label="one seed")
    )
    for kind in sorted(band_kinds):
        handles.append(
            Patch(color=NEUTRAL, alpha=0.25, lw=0, label=f"{BAND_LABEL[kind]} over seeds")
        )
    if neurons:
        handles.append(
            Line2D([], [], color=NEUTRAL, ls=":", lw=0.9, label="smallest / largest neuron")
        )
    for family in dashed:
        text = FAMILY_TEXT.get(family, family)
        handles.append(Line2D([], [], color=NEUTRAL, ls="--", lw=1.5, label=f"dashed: {text}"))
    if slope_axes:
        handles.append(
            Line2D([], [], color=NEUTRAL, ls=REFERENCE_STYLE, lw=0.9, label="n·a = 1: the fixed σ")
        )
    legend_below(fig, handles, _legend_columns(len(handles), width))
    save(fig, path)
    return fig


# --------------------------------------------------------------------------------------------
# Several runs


def compare(
    curves: Sequence[Curve],
    path: Path,
    title: str,
    x_label: str,
    threshold: float | None = None,
    y_label: str = "MSE",
) -> Figure:
    """Several runs in one figure: colour by run, line style by variant, log y, seed bands.

    A curve that stands for several runs (a baseline their identical configs share, drawn once)
    is black and names the runs in its label.
    """
    width = 8.5
    fig, (ax,) = new_figure(width, 5.4)
    runs = list(dict.fromkeys(r for c in curves for r in (c.runs or (c.run,))))
    variants = list(dict.fromkeys(c.variant for c in curves))
    # Folder names start with a timestamp; a date all runs share goes to the title instead.
    dates = {r[:11] for r in runs}
    shared_date = len(dates) == 1 and all(re.match(r"\d{4}-\d{2}-\d{2}_", r) for r in runs)
    short = {r: r[11:] if shared_date else r for r in runs}
    if shared_date:
        title += f" (runs of {next(iter(dates))[:10]})"
    targets = {c.target for c in curves}
    if len(targets) == 1 and "" not in targets:
        title += f"\n{targets.pop()}"
    run_colours = PALETTE[:-1]  # black is kept for shared curves
    # Bands are fills only, never outlined: an outline reads as one more curve. Many of them
    # are fainter.
    crowded = sum(c.raw.kind != "none" for c in curves) >= OUTLINE_FROM
    handles: list[Any] = []
    for c in curves:
        together = len(c.runs) > 1
        col = SHARED if together else run_colours[runs.index(c.run) % len(run_colours)]
        k = variants.index(c.variant)
        # Past the line styles, markers keep variants apart.
        marker = MARKERS[(k // len(LINE_STYLES)) % len(MARKERS)]
        (line,) = ax.plot(
            c.x,
            _positive(c.shown.center),
            linestyle=LINE_STYLES[k % len(LINE_STYLES)],
            color=col,
            lw=1.6,
            marker=marker,
            markevery=max(1, len(c.x) // 12),
            markersize=4,
        )
        name = c.label or c.variant
        if together:
            together_runs = ", ".join(short[r] for r in c.runs)
            line.set_label(f"{name} (runs {together_runs}; {c.raw.seeds} seeds)")
        else:
            line.set_label(f"{short[c.run]} · {name} ({c.raw.seeds} seeds)")
        handles.append(line)
        if c.raw.kind != "none":
            # Runs compared are alike and their bands overlap much: lighter than in a run.
            lo, hi = _positive(c.shown.low), _positive(c.shown.high)
            ax.fill_between(c.x, lo, hi, color=col, alpha=0.07 if crowded else 0.12, lw=0)
    kinds = sorted({c.raw.kind for c in curves} - {"none"})
    if kinds:  # what the shading is, in the legend
        words = " / ".join(BAND_LABEL[k] for k in kinds)
        handles.append(Patch(color="0.6", alpha=0.3, lw=0, label=f"shaded: {words} over seeds"))
    if threshold is not None:
        ax.axhline(threshold, color="0.55", lw=0.8, ls=THRESHOLD_STYLE)
        handles.append(
            Line2D(
                [], [], color="0.55", lw=0.8, ls=THRESHOLD_STYLE, label=f"threshold {threshold:g}"
            )
        )
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(wrap(title, width), fontsize=10)
    legend_below(fig, handles, 2 if len(handles) > 3 else 1)
    save(fig, path)
    return fig
