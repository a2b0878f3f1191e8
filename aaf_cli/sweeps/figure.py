"""``sweep.png``: the chosen metric against the first swept key, a line per variant.

The line is the geometric mean over seeds of the final test MSE (or, metric ``best``, the test
MSE at each seed's step of lowest validation loss) with its 95% t interval as a band — exactly
the ``*_geomean``/``*_ci_*`` columns of ``points.csv``. A second
swept key (and any after it) gives one panel per combination of its values. The x axis is
logarithmic when every value is positive and they span more than 10x; values that are not
numbers are placed evenly, in the order swept. Colours and line styles are those of
``aaf_cli.plots`` (Okabe-Ito), so a variant looks the same here as in its runs' figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from aaf_cli import plots
from aaf_cli.sweeps.records import DONE, METRIC_PREFIX
from aaf_cli.sweeps.spec import short_text

MAX_PANELS = 12
MAX_TICKS = 12
METRICS = tuple(METRIC_PREFIX)
#: How each metric reads on an axis: the words before the quantity.
METRIC_WORDS = {"final": "final", "best": "at best validation step:"}


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _lines(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict[int, str]]:
    """How rows group into lines: by variant name when every point has the same variants,
    else by position within the point (variants named after a swept value, global-n5, ...).
    Returns the line keys in order and the row -> key map (by row index)."""
    per_point: dict[int, list[str]] = {}
    for row in rows:
        per_point.setdefault(int(row["point"]), []).append(str(row["variant"]))
    same = len({tuple(v) for v in per_point.values()}) <= 1
    keys: dict[int, str] = {}
    position: dict[int, int] = {}
    for i, row in enumerate(rows):
        point = int(row["point"])
        k = position.get(point, 0)
        position[point] = k + 1
        keys[i] = str(row["variant"]) if same else f"variants.{k}"
    return list(dict.fromkeys(keys.values())), keys


def _seeds(done: Sequence[Mapping[str, Any]]) -> str:
    """The seed count of the drawn points: ``5``, or ``3-5`` where they differ."""
    seeds = sorted({int(r["seeds"]) for r in done if r.get("seeds") is not None})
    return "?" if not seeds else str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"


def _pending(rows: Sequence[Mapping[str, Any]], done: Sequence[Mapping[str, Any]]) -> int:
    return len({r["point"] for r in rows}) - len({r["point"] for r in done})


def draw(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    path: Path,
    title: str,
    metric: str = "final",
    quantity: str = "test MSE",
    chosen: Mapping[str, Any] | None = None,
    verdict: Sequence[str] = (),
) -> Any:
    """Draw the sweep's figure from its ``points.csv`` rows (done points only) to ``path``.
    ``quantity``: what the test metric is (a PDE sweep's is the relative L2 error). A tuned
    sweep gives each variant's ``chosen`` value of the first key (marked with a star on its
    line) and the evaluation's ``verdict`` (under the title).

    Returns the figure, or None when no point is done yet (nothing is written then).
    """
    done = [r for r in rows if r["status"] in DONE]
    if not done or not keys:
        return None
    x_key, panel_keys = keys[0], list(keys[1:])
    order, line_of = _lines(rows)
    line_index = {id(r): line_of[i] for i, r in enumerate(rows)}
    xs_all = list(dict.fromkeys(short_text(r[x_key]) for r in rows))
    raw_x = {short_text(r[x_key]): r[x_key] for r in rows}
    numeric = _numeric(list(raw_x.values()))
    positive = numeric and all(v > 0 for v in raw_x.values())
    log_x = positive and max(raw_x.values()) > 10 * min(raw_x.values())

    def x_of(row: Mapping[str, Any]) -> float:
        value = row[x_key]
        return float(value) if numeric else float(xs_all.index(short_text(value)))

    panels = list(dict.fromkeys(tuple(short_text(r[k]) for k in panel_keys) for r in rows))
    shown = panels[:MAX_PANELS]
    cols = min(len(shown), 3)
    grid_rows = math.ceil(len(shown) / cols)
    width = max(7.5, 4.3 * cols)
    fig = Figure(figsize=(width, 1.2 + 3.4 * grid_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(grid_rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    baselines = {str(r["baseline"]) for r in done}
    handles: dict[str, Any] = {}
    prefix = METRIC_PREFIX[metric]
    y_column = f"{prefix}_geomean"
    for ax, panel in zip(axes, shown):
        for i, line in enumerate(order):
            mine = [
                r
                for r in done
                if line_index[id(r)] == line
                and tuple(short_text(r[k]) for k in panel_keys) == panel
                and r.get(y_column) is not None
            ]
            mine.sort(key=x_of)
            if not mine:
                continue
            col, ls = plots.colour(i), plots.style(i)
            x = [x_of(r) for r in mine]
            y = [float(r[y_column]) for r in mine]
            ax.plot(x, y, color=col, ls=ls, lw=1.7, marker="o", ms=4)
            low = [r[f"{prefix}_ci_low"] for r in mine]
            high = [r[f"{prefix}_ci_high"] for r in mine]
            if any(v is not None for v in low):
                lo = [math.nan if v is None else float(v) for v in low]
                hi = [math.nan if v is None else float(v) for v in high]
                plots._band(ax, x, lo, hi, col, crowded=len(order) >= plots.OUTLINE_FROM)
            label = line + (" (baseline)" if line in baselines else "")
            handles.setdefault(
                line, Line2D([], [], color=col, ls=ls, lw=1.7, marker="o", ms=4, label=label)
            )
            if chosen is not None and line in chosen:
                at = [(xi, yi) for r, xi, yi in zip(mine, x, y) if r[x_key] == chosen[line]]
                for xi, yi in at:
                    ax.plot([xi], [yi], marker="*", ms=15, color=col, mec="black", mew=0.8, ls="")
                if at:
                    handles.setdefault(
                        "* chosen",
                        Line2D([], [], marker="*", ms=12, color="0.5", mec="black", mew=0.8,
                               ls="", label="each variant's choice (on validation data)"),
                    )  # fmt: skip
        ax.set_yscale("log")
        if log_x:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(xs_all)), xs_all, rotation=30 if len(xs_all) > 4 else 0)
        elif len(raw_x) <= MAX_TICKS:  # a grid: its values are the ticks
            ticks = sorted(raw_x.values())
            ax.set_xticks([float(v) for v in ticks], [short_text(v) for v in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True, which="major", alpha=0.3)
        if panel_keys:
            ax.set_title(", ".join(f"{k}={v}" for k, v in zip(panel_keys, panel)), fontsize=9)
        ax.set_xlabel(x_key)
        ax.tick_params(labelleft=True, labelbottom=True)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel(f"{METRIC_WORDS[metric]} {quantity}")
    plots.legend_below(fig, list(handles.values()), max(1, min(len(handles), int(width // 2.8))))
    lines = [
        title,
        f"{METRIC_WORDS[metric]} {quantity}: geometric mean over {_seeds(done)} seeds, band: its "
        "95% t interval",
    ]
    lines += list(verdict)
    if len(panels) > len(shown):
        lines.append(f"the first {len(shown)} of {len(panels)} panels")
    if _pending(rows, done):
        lines.append(f"{_pending(rows, done)} points not done: not drawn")
    fig.suptitle(plots.wrap("\n".join(lines), width), fontsize=10)
    plots.save(fig, path)
    return fig


HEATMAP_FILE = "sweep_heatmap.png"
#: Most values of either key a heat map shows (random draws are not a grid: not drawn).
MAX_HEATMAP_CELLS = 30


def _cells(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], line: str, column: str
) -> dict[tuple[float, float], float]:
    _, line_of = _lines(rows)
    out: dict[tuple[float, float], float] = {}
    for i, r in enumerate(rows):
        value = r.get(column)
        if line_of[i] == line and r["status"] in DONE and value is not None:
            out[(float(r[keys[0]]), float(r[keys[1]]))] = float(value)
    return out


def _constant_along(cells: Mapping[tuple[float, float], float], axis: int) -> bool:
    """Whether the cells' values stay the same along ``axis`` (0: the first key)."""
    groups: dict[float, set[float]] = {}
    for key, v in cells.items():
        groups.setdefault(key[1 - axis], set()).add(v)
    return bool(groups) and all(len(v) == 1 for v in groups.values())


def draw_heatmap(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    path: Path,
    title: str,
    metric: str = "final",
    quantity: str = "test MSE",
) -> Any:
    """Heat maps of a sweep over exactly two numeric keys (grid axes; at most
    ``MAX_HEATMAP_CELLS`` values each), written to ``path``: the metric
    (geometric mean over seeds) of every variant on one shared log colour scale, then each
    variant's paired ratio to the baseline (geometric mean of the per-seed ratios, < 1: the
    variant is better) on a diverging scale centred at 1, every cell annotated, a cell whose
    95% interval of the ratio excludes 1 outlined. Returns the figure, or None when the sweep
    does not qualify or no point is done (nothing is written then)."""
    from matplotlib.colors import LogNorm, TwoSlopeNorm
    from matplotlib.patches import Rectangle

    done = [r for r in rows if r["status"] in DONE]
    if len(keys) != 2 or not done:
        return None
    if not all(_numeric([r[k] for r in rows]) for k in keys):
        return None
    if any(len({float(r[k]) for r in rows}) > MAX_HEATMAP_CELLS for k in keys):
        return None  # a heat map of that many values is unreadable: sweep.png draws them
    order, _ = _lines(rows)
    baseline = str(done[0]["baseline"])
    column = f"{METRIC_PREFIX[metric]}_geomean"
    base_cells = _cells(rows, keys, baseline, column)
    if _constant_along(base_cells, 1) and not _constant_along(base_cells, 0):
        keys = [keys[1], keys[0]]  # the key the baseline ignores goes across: its panel narrows
    xs = sorted({float(r[keys[0]]) for r in rows})
    ys = sorted({float(r[keys[1]]) for r in rows})
    values = {line: _cells(rows, keys, line, column) for line in order}
    ratios = {line: _cells(rows, keys, line, "ratio") for line in order if line != baseline}
    ratio_lines = [line for line in ratios if ratios[line]]
    everything = [v for cells in values.values() for v in cells.values() if v > 0]
    if not everything:
        return None
    panels = len(order) + len(ratio_lines)
    cols = min(panels, 3)
    grid_rows = math.ceil(panels / cols)
    # A baseline that does not depend on the first key (an n sweep's fixed activation) is
    # one column of values, drawn narrow, not a panel of identical columns.
    narrow = grid_rows == 1 and len(xs) > 1 and _constant_along(values[baseline], 0)
    cell = 0.62
    widths = [
        (1.8 + cell) if narrow and line == baseline else (1.8 + cell * len(xs))
        for line in [*order, *ratio_lines][:cols]
    ]
    width = max(7.5, sum(widths))
    height = 1.6 + grid_rows * (1.3 + cell * len(ys))
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(
        grid_rows, cols, squeeze=False, gridspec_kw={"width_ratios": widths}
    ).ravel()
    norm = LogNorm(min(everything), max(everything))
    spread = [abs(math.log10(v)) for c in ratios.values() for v in c.values() if v > 0]
    limit = max(max(spread, default=0.0), 0.05)
    ratio_norm = TwoSlopeNorm(0.0, -limit, limit)
    grid_nan = [[math.nan] * len(xs) for _ in ys]

    def frame(ax: Any, label: str, panel_width: float) -> None:
        ax.set_xticks(range(len(xs)), [short_text(_plain(v)) for v in xs])
        ax.set_yticks(range(len(ys)), [short_text(_plain(v)) for v in ys])
        ax.set_xlabel(keys[0])
        ax.set_ylabel(keys[1])
        ax.set_title(plots.wrap(label, panel_width, 9), fontsize=9)

    k = 0
    metric_axes = []
    for line in order:
        ax = axes[k]
        k += 1
        metric_axes.append(ax)
        one = narrow and line == baseline
        grid = [row[:] for row in ([[math.nan] for _ in ys] if one else grid_nan)]
        for (x, y), v in values[line].items():
            grid[ys.index(y)][0 if one else xs.index(x)] = v if v > 0 else math.nan
        image = ax.imshow(grid, origin="lower", cmap="viridis", norm=norm, aspect="auto")
        # One column: one value per row (every cell of the row has it).
        cells = {(0 if one else xs.index(x), ys.index(y)): v for (x, y), v in values[line].items()}
        for (i, j), v in cells.items():
            shade = norm(v) if v > 0 else 0.0
            ax.text(i, j, f"{v:.1e}", ha="center", va="center", fontsize=7,
                    color="white" if shade < 0.6 else "black")  # fmt: skip
        suffix = " (baseline)" if line == baseline else ""
        frame(ax, f"{line}{suffix}: {METRIC_WORDS[metric]} {quantity}", widths[(k - 1) % cols])
        if one:
            ax.set_xticks([0], [f"every {keys[0]}"])
            ax.set_xlim(-0.5, 0.5)
            ax.set_xlabel("")
    # One colour bar for the panels that share the scale.
    fig.colorbar(image, ax=metric_axes, shrink=0.85, label=f"{METRIC_WORDS[metric]} {quantity}")
    intervals = {
        line: (
            _cells(rows, keys, line, "ratio_ci_low"),
            _cells(rows, keys, line, "ratio_ci_high"),
        )
        for line in ratio_lines
    }
    for line in ratio_lines:
        ax = axes[k]
        k += 1
        grid = [row[:] for row in grid_nan]
        for (x, y), v in ratios[line].items():
            grid[ys.index(y)][xs.index(x)] = math.log10(v) if v > 0 else math.nan
        image = ax.imshow(grid, origin="lower", cmap="PuOr", norm=ratio_norm, aspect="auto")
        low, high = intervals[line]
        for (x, y), v in ratios[line].items():
            i, j = xs.index(x), ys.index(y)
            shade = float(ratio_norm(math.log10(v))) if v > 0 else 0.5
            ax.text(i, j, f"x{v:.2g}", ha="center", va="center", fontsize=7,
                    color="white" if abs(shade - 0.5) > 0.3 else "black")  # fmt: skip
            lo, hi = low.get((x, y)), high.get((x, y))
            if lo is not None and hi is not None and (hi < 1 or lo > 1):
                ax.add_patch(Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, lw=1.6, ec="black"))
        frame(
            ax, f"{line} / {baseline}: ratio of {METRIC_WORDS[metric]} {quantity} (<1: {line} "
            "better)", widths[(k - 1) % cols],
        )  # fmt: skip
        bar = fig.colorbar(image, ax=ax, shrink=0.85)
        # Ticks a factor apart that reads: 10x steps on a wide scale, finer on a narrow one.
        fine = (-0.5, -0.3, -0.1, 0, 0.1, 0.3, 0.5)
        steps = (-2, -1, -0.5, 0, 0.5, 1, 2) if limit >= 0.6 else fine
        ticks = [t for t in steps if abs(t) <= limit]
        bar.set_ticks(ticks, labels=[f"{10**t:.2g}" for t in ticks])
    for ax in axes[k:]:
        ax.set_visible(False)
    lines = [
        title,
        f"geometric mean over {_seeds(done)} seeds; ratio: paired, per seed; outlined: its 95% "
        "interval excludes 1",
    ]
    if _pending(rows, done):
        lines.append(f"{_pending(rows, done)} points not done: blank")
    fig.suptitle(plots.wrap("\n".join(lines), width), fontsize=10)
    plots.save(fig, path)
    return fig


def _plain(value: float) -> Any:
    """A grid value as it was written: 5.0 -> 5, 0.001 stays."""
    return int(value) if float(value).is_integer() else value
