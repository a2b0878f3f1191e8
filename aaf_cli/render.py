"""Terminal output: the tables and sentences of ``aaf run``, ``show``, ``compare`` and ``list``.

The presentation layer (it may import rich; the core never does). Every function takes plain
data (summary dicts, ``compare.Row`` objects, ``aaf list`` entries) and an optional rich
``Console`` to print on, so the same output can be rendered at any width in tests.

Tables are fitted to the console by hand rather than left to rich's squeezing, which shrinks
name columns to nothing and cuts numbers with an ellipsis. Each column has a priority: when the
table does not fit, the least important columns are dropped (and named under the table) until it
does. Numbers are never wrapped or cut; lists wrap between their items; run and variant names
wrap only at natural break points (``-`` before a letter, ``_``, ``/``, space) and only when even
the essential columns do not fit otherwise.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.cells import cell_len

from aaf_cli.problems import MSE_FACTS, Facts, facts_of, section_of, summary_facts

if TYPE_CHECKING:
    from rich.console import Console

    from aaf_cli.overview import Row

PIPED_WIDTH = 130
"""Width of output that goes to a pipe or file (unless ``COLUMNS`` says otherwise)."""

Justify = Literal["left", "right"]
Wrap = Literal["never", "name", "list"]
Cell = str | tuple[str, str]
"""A table cell: its text, or (text, rich style)."""

LIST_MIN = 16
"""Width below which a wrapped list column is dropped rather than narrowed further."""

_STATUS_STYLES = {
    "completed": "green",
    "interrupted": "yellow",
    "diverged": "red",
    "partial": "yellow",
    "failed": "red",
    "pending": "dim",
}


def console(width: int | None = None) -> Console:
    """A console on stdout: ``width`` if given; else the terminal's width (``COLUMNS`` wins, as
    rich reads it); piped output without ``COLUMNS`` gets a fixed 130 columns rather than rich's
    80-column fallback."""
    from rich.console import Console

    if width is None and not sys.stdout.isatty() and not os.environ.get("COLUMNS", "").isdigit():
        width = PIPED_WIDTH
    return Console(width=width)


def fmt(value: float | None, spec: str = ".2e") -> str:
    """A number as the tables print it ('-' for missing)."""
    return "-" if value is None else format(value, spec)


def params(final: Mapping[str, Any], most: int = 4) -> str:
    """Median final activation parameters, e.g. 'n*a 9.5' (neuron-wise: layer means only)."""
    shown = [
        f"{name} {fmt(stats['median'], '.3g')}"
        for name, stats in final.items()
        if not name.endswith((" min", " max"))
    ]
    if len(shown) > most:
        shown = [*shown[:most], f"+{len(shown) - most} more"]
    return ", ".join(shown) or "-"


# ---------------------------------------------------------------------------------------------
# Fitting a table to a width


@dataclass(frozen=True)
class Column:
    """A table column and how it may give way on a narrow console.

    Attributes:
        header: Heading (wraps between its words).
        priority: 0 for columns that are always shown; larger numbers are dropped first.
        justify: Alignment of the cells.
        wrap: ``never`` (numbers: always whole on one line), ``name`` (whole unless even the
            essential columns do not fit; then only at natural break points) or ``list`` (wraps
            between the items of a comma-separated list).
        squeeze: For ``name`` columns, the priority level at which the names may wrap at their
            break points before more important columns are dropped (None: only as a last
            resort).
    """

    header: str
    priority: float = 0
    justify: Justify = "left"
    wrap: Wrap = "never"
    squeeze: float | None = None


@dataclass(frozen=True)
class Layout:
    """The columns a table shows at a width: their indices and widths, and the dropped ones."""

    shown: list[int]
    widths: list[int]
    dropped: list[int]
    needed: int  # the console width at which every column is shown whole


def _cell_text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


# A name breaks after '_', '/' or a space, or after '-' when a letter follows: never inside a
# number such as 1e-3.
_NAME_BREAK = re.compile(r"(?<=[_/ ])|(?<=-)(?=[A-Za-z])")
# A list breaks after ", " and before " (" (as in "1200 (2/5 never)").
_LIST_BREAK = re.compile(r"(?<=, )|(?= \()")


def _atoms(text: str, wrap: Wrap) -> list[str]:
    """The pieces a cell may be wrapped between (each kept whole on one line)."""
    pieces: list[str] = []
    for line in text.split("\n"):
        if wrap == "name":
            pieces += [p for p in _NAME_BREAK.split(line) if p]
        elif wrap == "list":
            pieces += [p for p in _LIST_BREAK.split(line) if p]
        else:
            pieces.append(line)
    return pieces or [""]


def _width(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def _pack(pieces: Iterable[str], width: int) -> str:
    """Greedy line filling: pieces joined on a line while it fits (trailing spaces are free)."""
    lines: list[str] = []
    line = ""
    for piece in pieces:
        if line and _width((line + piece).rstrip()) > width:
            lines.append(line.rstrip())
            line = piece.lstrip()
        else:
            line += piece
    lines.append(line.rstrip())
    return "\n".join(lines)


def _wrap_cell(text: str, wrap: Wrap, width: int) -> str:
    if wrap == "never" or _width(text) <= width:
        return text
    return "\n".join(_pack(_atoms(line, wrap), width) for line in text.split("\n"))


def _table_width(widths: Iterable[int]) -> int:
    ws = list(widths)
    return sum(ws) + 3 * len(ws) + 1  # one space of padding each side, a border between


def _header_pieces(header: str) -> list[str]:
    return re.split(r"(?<= )", header)


def _piece_widths(pieces: Sequence[str]) -> list[tuple[int, int, int]]:
    """Per piece: its width, without trailing spaces, and without leading spaces."""
    return [(_width(p), _width(p.rstrip()), _width(p.lstrip())) for p in pieces]


def _count_lines(pieces: Sequence[tuple[int, int, int]], width: int) -> int:
    """The number of lines ``_pack`` makes of these pieces at ``width``."""
    count, line = 1, -1  # -1: nothing on the line yet
    for full, bare_end, bare_start in pieces:
        if line >= 0 and line + bare_end > width:
            count, line = count + 1, bare_start
        else:
            line = max(line, 0) + full
    return count


def _spread(
    columns: Sequence[Column],
    texts: Sequence[Sequence[str]],
    widths: dict[int, int],
    natural: Sequence[int],
    spare: int,
) -> None:
    """Hand out ``spare`` width (in place) where it saves the most lines of the table: each
    time, to the column whose smallest widening removes the most lines per character."""
    memo: dict[tuple[int, int], list[int]] = {}
    # Each cell as the widths of its pieces: counting lines is then integer arithmetic.
    pieces = {
        k: [_piece_widths(_header_pieces(columns[k].header))]
        + [_piece_widths(_atoms(t, columns[k].wrap)) for t in texts[k]]
        for k in widths
    }

    def lines(k: int, w: int) -> list[int]:
        if (k, w) not in memo:
            memo[k, w] = [_count_lines(cell, w) for cell in pieces[k]]
        return memo[k, w]

    def total(ws: dict[int, int]) -> int:
        per_column = [lines(k, w) for k, w in ws.items()]
        return sum(max(row) for row in zip(*per_column)) if per_column else 0

    current = total(widths)
    while spare > 0:
        best: tuple[float, float, int, int, int] | None = None
        for k, w in widths.items():
            for extra in range(1, min(spare, natural[k] - w) + 1):
                saved = current - total({**widths, k: w + extra})
                if saved > 0:
                    candidate = (saved / extra, -columns[k].priority, -k, k, extra)
                    best = candidate if best is None or candidate > best else best
                    break
        if best is None:
            return
        k, extra = best[3], best[4]
        widths[k] += extra
        spare -= extra
        current = total(widths)


def layout(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int) -> Layout:
    """Choose the columns to show at ``width`` and their widths (see the module docstring)."""
    n = len(columns)
    texts = [[_cell_text(row[k]) for row in rows] for k in range(n)]
    header_word = [max(_width(w) for w in c.header.split()) for c in columns]
    natural = [max([_width(c.header), *map(_width, texts[k])]) for k, c in enumerate(columns)]
    # Preferred minimum: numbers and names whole, lists wrapped to their longest item (but at
    # least LIST_MIN wide: a list of one item a line is hard to read), headings wrapped to their
    # longest word. Hard minimum: names wrapped at their break points too.
    preferred, hard = [], []
    for k, c in enumerate(columns):
        whole = max([header_word[k], *map(_width, texts[k])])
        pieces = max(
            [header_word[k], *(_width(a.strip()) for t in texts[k] for a in _atoms(t, c.wrap))]
        )
        preferred.append(min(whole, max(pieces, LIST_MIN)) if c.wrap == "list" else whole)
        hard.append(pieces)

    # Give way step by step, least important first: drop a column, or let a name column wrap at
    # its break points (at its ``squeeze`` level), until the table fits.
    steps = [(c.priority, 1, k) for k, c in enumerate(columns) if c.priority > 0]
    steps += [(c.squeeze, 0, k) for k, c in enumerate(columns) if c.squeeze is not None]
    widths = dict(enumerate(preferred))
    dropped: list[int] = []
    for _level, drop, k in sorted(steps, reverse=True):
        if _table_width(widths.values()) <= width:
            break
        if drop:
            del widths[k]
            dropped.append(k)
        elif k in widths:
            widths[k] = hard[k]
    if _table_width(widths.values()) > width:
        widths = {k: hard[k] for k in widths}  # the last resort: every name may wrap
    # Spare width first goes where it saves lines (unwrapping names and lists); then a less
    # important column dropped on the way may still fit beside the ones kept.
    _spread(columns, texts, widths, natural, width - _table_width(widths.values()))
    for k in sorted(dropped, key=lambda k: (columns[k].priority, k)):
        if _table_width([*widths.values(), preferred[k]]) <= width:
            widths[k] = preferred[k]
            dropped.remove(k)
    _spread(columns, texts, widths, natural, width - _table_width(widths.values()))
    shown = sorted(widths)
    return Layout(
        shown=shown,
        widths=[widths[k] for k in shown],
        dropped=sorted(dropped),
        needed=_table_width(preferred),
    )


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell] | None],
    width: int,
    title: str | None = None,
) -> tuple[Any, list[str]]:
    """A rich ``Table`` of ``rows`` fitted to ``width``, and a note naming the dropped columns
    (empty if none). A ``None`` row starts a new section."""
    from rich.table import Table
    from rich.text import Text

    real = [r for r in rows if r is not None]
    fit = layout(columns, real, width)
    # The title wraps at words like the sentences do ("0.9 s" stays on one line).
    head = wrap_text(title, _table_width(fit.widths), "", "") if title else None
    table = Table(title=Text(head) if head else None)
    for k, w in zip(fit.shown, fit.widths):
        c = columns[k]
        table.add_column(
            Text(_pack(_header_pieces(c.header), w)),
            justify=c.justify,
            width=w,
            no_wrap=True,
            overflow="fold",
        )
    for row in rows:
        if row is None:
            table.add_section()
            continue
        cells = []
        for k, w in zip(fit.shown, fit.widths):
            cell = row[k]
            text, style = (cell, "") if isinstance(cell, str) else cell
            cells.append(Text(_wrap_cell(text, columns[k].wrap, w), style=style))
        table.add_row(*cells)
    notes = []
    if fit.dropped:
        names = ", ".join(columns[k].header for k in fit.dropped)
        notes.append(
            f"(narrow terminal: columns {names} not shown; widen to {fit.needed} columns to see "
            "them)"
        )
    return table, notes


# ---------------------------------------------------------------------------------------------
# Sentences


# Spaces that must not become line breaks: inside a short bracketed interval "[0.1, 0.2]",
# around "=" ("p = 0.25") and before a unit of seconds ("0.9 s").
_GLUE = re.compile(r"\[[^\[\]\n]{0,40}\]| = |(?<=\d) s\b")
_NBSP = "\x00"


def wrap_text(text: str, width: int, indent: str = "  ", hanging: str = "    ") -> str:
    """``text`` wrapped at word boundaries to ``width``: never inside a number or a short
    bracketed interval; continuation lines indented by ``hanging``."""
    glued = _GLUE.sub(lambda m: m.group(0).replace(" ", _NBSP), text)
    lines = textwrap.wrap(
        glued,
        width=max(width, len(indent) + 10),
        initial_indent=indent,
        subsequent_indent=hanging,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\n".join(lines).replace(_NBSP, " ")


def _say(out: Console, text: str, style: str = "", indent: str = "  ") -> None:
    from rich.text import Text

    hanging = indent + "  "
    out.print(Text(wrap_text(text, out.width, indent, hanging), style=style), soft_wrap=True)


def _print_table(out: Console, table: Any, notes: Sequence[str]) -> None:
    out.print(table)
    for note in notes:
        _say(out, note, style="dim", indent="")


# ---------------------------------------------------------------------------------------------
# The tables


#: The report table's columns of a run's metrics (titled by its problem's ``Facts.columns``).
REPORT_METRICS = {
    "final_train": 6,
    "final_val": 5,
    "final_test": 0,
    "last_test": 7,
    "test_at_best_val": 4,
}


def compile_words(summary: Mapping[str, Any]) -> str:
    """What compiling cost the run's models, for a header: ``, after 24.5 s compiling the
    step``; why ``compile: auto`` left it eager (``; compile auto: eager training predicted at
    12 s on the CPU (< 120 s), not compiled``); nothing for a run told not to compile."""
    if summary.get("compiled"):
        return f", after {summary.get('compile_time_s', 0.0):.1f} s compiling the step"
    if summary.get("compile_error"):
        return "; the step failed to compile: trained eagerly"
    why = summary.get("compile_auto")
    if isinstance(why, str):
        return f"; compile {why}, not compiled"
    return ""


def variant_cell(name: str, v: Mapping[str, Any]) -> str:
    """A variant's name in a table, with the seeds that diverged or split off from the rest
    ('adaptive (2/5 on plateau)')."""
    apart = []
    if v.get("diverged"):
        apart.append(f"{v['diverged']} diverged")
    split = v.get("split")
    if split:
        how = "on plateau" if split["plateau"] == split["upper"] else "stalled"
        apart.append(f"{split['upper']}/{split['seeds']} {how}")
    return name + (f" ({', '.join(apart)})" if apart else "")


def report_table(summary: Mapping[str, Any], out: Console | None = None) -> None:
    """The result table of ``aaf run`` (from its ``summary.json``), then the verdicts and the
    tuning's notes.

    Every number across seeds is the geometric mean (``stats.CENTER``): the statistic the
    verdict's ratio is made of, so that the table and the verdict cannot tell apart stories.
    """
    out = out or console()
    variants: Mapping[str, Mapping[str, Any]] = summary["variants"]
    seeds = len(summary["seeds"])
    tuning = summary.get("tuning") or {}
    title = f"{summary['name']}: {summary['data']['target']}, {summary['steps_done']} steps"
    phased = summary.get("phases")
    if phased:
        title += f" ({phased})"
    if seeds > 1:
        title += f", geometric mean over {seeds} seeds"
    if tuning.get("on"):
        title += (
            f"; learning rates tuned on validation data ({tuning.get('train_time_s', 0):.1f} s), "
            f"then the run's models trained in {summary['train_time_s']:.1f} s"
        )
    else:
        title += f"; all models trained together in {summary['train_time_s']:.1f} s"
    title += compile_words(summary)
    threshold = summary.get("threshold")
    columns = [
        Column("variant", 0, wrap="name"),
        Column("lr (tuned)" if tuning.get("on") else "lr", 1, "right"),
    ]
    metrics = []
    titles = summary_facts(summary).columns
    for key, priority in REPORT_METRICS.items():
        column = Column(titles[key], priority, "right")
        # Summaries of older versions lack some (no validation, no last value): not shown.
        if any(key in v for v in variants.values()):
            columns.append(column)
            metrics.append(key)
    steps_header = "steps to threshold" if threshold is None else f"steps to {threshold:g}"
    sized = any("flops" in v for v in variants.values())  # older summaries lack FLOPs
    if sized:
        columns += [Column("params", 2, "right"), Column("FLOPs/point", 3, "right")]
    columns += [
        Column(steps_header, 2, "right", wrap="list"),
        Column("final parameters", 3, wrap="list"),
    ]
    rows: list[Sequence[Cell] | None] = []
    for name, v in variants.items():
        lr = v.get("effective_lr", v.get("lr"))
        rows.append(
            [
                variant_cell(name, v),
                fmt(lr, ".3g"),
                *[fmt((v.get(m) or {}).get("geomean")) for m in metrics],
                *([_size(v, "parameters"), _size(v, "flops")] if sized else []),
                _reach(v.get("steps_to_threshold") or {}, v.get("seeds")),
                params(v.get("final_params") or {}),
            ]
        )
    table, notes = fitted_table(columns, rows, out.width, title)
    _print_table(out, table, notes)
    for comparison in summary.get("comparisons") or []:
        if comparison.get("verdict"):
            _say(out, str(comparison["verdict"]))
        if comparison.get("loss_against_error"):
            _say(out, str(comparison["loss_against_error"]))
    for control in (summary.get("controls") or {}).get("comparisons") or []:
        _say(out, str(control["verdict"]))
    for note in tuning.get("notes") or []:
        _say(out, f"note: {note}", style="yellow")
    if summary.get("status", "completed") != "completed":
        _say(out, f"status: {summary['status']}", style="yellow")


def _size(v: Mapping[str, Any], key: str) -> str:
    """A count, with '=' where the variant was matched on it (``match:``)."""
    value = v.get(key)
    if value is None:
        return "-"
    matched = {"parameters": "params", "flops": "flops"}[key] == v.get("matched")
    return f"={value}" if matched else str(value)


def _reach(reach: Mapping[str, Any], seeds: Any) -> str:
    if reach.get("median") is None:
        return "never"
    text = f"{reach['median']:.0f}"
    if reach.get("never"):
        text += f" ({reach['never']}/{seeds} never)"
    return text


def versus_note(metric: str) -> str:
    """What the ``vs baseline`` column holds, for the test metric ``metric``."""
    return (
        f"vs baseline: seeds where the final {metric} is lower, geometric-mean ratio of final "
        f"{metric}s (below 1: better), Wilcoxon signed-rank p (Holm-adjusted where a run "
        "compares several variants with its baseline)"
    )


def print_rows(
    rows: Sequence[Row],
    title: str,
    out: Console | None = None,
    show_run: bool = True,
    facts: Facts = MSE_FACTS,
) -> None:
    """The table of ``aaf compare`` (and ``aaf show`` without the run column), then the
    verdicts. ``facts``: what the runs' numbers are (their problem's: a PDE run's test metric
    is the relative L2 error of the solution, not an MSE)."""
    out = out or console()
    test = facts.test_column
    columns = [
        Column("run", 0, wrap="name", squeeze=3),
        Column("variant", 0, wrap="name"),
        Column("seeds", 5, "right", wrap="list"),
        Column("steps", 6, "right"),
        Column(f"final {test}", 0, "right"),
        Column(f"{test} at best val", 2, "right"),
        Column("steps to thr.", 4, "right", wrap="list"),
        Column("vs baseline", 1, wrap="list"),
    ]
    cells: list[Sequence[Cell] | None] = []
    previous = None
    for r in rows:
        reach = "never" if r.steps_to_threshold is None else f"{r.steps_to_threshold:.0f}"
        if r.steps_to_threshold is not None and r.never:
            reach += f" ({r.never} never)"
        seeds = str(r.seeds) + (f" ({r.diverged} div.)" if r.diverged else "")
        if previous is not None and r.run != previous:
            cells.append(None)
        cells.append(
            [
                "" if r.run == previous else r.run,
                r.variant,
                seeds,
                str(r.steps),
                fmt(r.final_test),
                fmt(r.at_best_val),
                reach,
                r.versus,
            ]
        )
        previous = r.run
    if not show_run:
        columns = columns[1:]
        cells = [None if row is None else row[1:] for row in cells]
    table, notes = fitted_table(columns, cells, out.width, title)
    _print_table(out, table, notes)
    if not any("vs baseline" in n for n in notes):
        _say(out, versus_note(facts.metric), style="dim", indent="")
    for r in rows:
        if r.verdict:
            _say(out, f"{r.run}: {r.verdict}" if show_run else r.verdict)


def print_list(
    entries: Sequence[Mapping[str, Any]], runs_dir: Path | str, out: Console | None = None
) -> None:
    """The table of ``aaf list``: one row per run folder (entries of ``compare.describe_run``)."""
    out = out or console()
    columns = [
        Column("folder", 0, wrap="name", squeeze=2.5),
        Column("target", 3, wrap="name"),
        Column("variants", 4, wrap="list"),
        Column("seeds", 5, "right"),
        Column("steps", 1, "right"),
        Column("status", 0, wrap="list"),
        Column("final test (geo. mean)", 2, wrap="list"),
        Column("time", 6, "right"),
    ]
    rows: list[Sequence[Cell] | None] = []
    for e in entries:
        status = str(e["status"])
        folder = Path(str(e["folder"])).name
        if status == "unreadable":
            rows.append([folder, "", "", "", "", ("unreadable", "red"), "", ""])
            continue
        if e.get("steps") is None:
            steps = "-"
        elif e.get("steps_done") != e["steps"]:
            steps = f"{e.get('steps_done')}/{e['steps']}"
        else:
            steps = str(e["steps"])
        best = ", ".join(f"{k} {fmt(v)}" for k, v in (e.get("final_test") or {}).items())
        duration = e.get("duration_s")
        shown = status
        if e.get("kind") == "sweep":  # a sweep is one row (sweeps.records.describe_sweep)
            done = "" if status == "completed" else f"{e['points_done']}/"
            keys = ", ".join(e.get("keys") or [])
            shown = f"sweep of {keys}: {done}{e['points']} points, {status}"
        rows.append(
            [
                folder,
                str(e.get("target") or "-"),
                ", ".join(e.get("variants") or []) or "-",
                "-" if e.get("seeds") is None else str(e["seeds"]),
                steps,
                (shown, _STATUS_STYLES.get(status, "magenta")),
                best or "-",
                "-" if duration is None else f"{duration:.0f} s",
            ]
        )
    title = f"{len(entries)} run{'' if len(entries) == 1 else 's'} in {runs_dir}, newest first"
    table, notes = fitted_table(columns, rows, out.width, title)
    _print_table(out, table, notes)


# ---------------------------------------------------------------------------------------------
# aaf show


def highlights(config: Mapping[str, Any]) -> list[str]:
    """What a run was, in a few lines, from its resolved config (a plain mapping)."""
    from aaf_cli.config import phases_summary, schedule_summary

    def section(key: str) -> Mapping[str, Any]:
        value = config.get(key)
        return value if isinstance(value, dict) else {}

    model, train = section("model"), section("train")
    kind, problem = section_of(config)
    # A phase summary names each first-order phase's rate (L-BFGS has none of its own).
    optimiser = phases_summary(train) or f"{train.get('optimizer')} lr {train.get('lr')}"
    lines = [
        kind.line(problem),
        f"model: {model.get('layers')} {model.get('activation')}, init {model.get('init')}",
        f"train: {optimiser}, "
        f"{train.get('steps')} steps, threshold {train.get('threshold')}, dtype "
        f"{config.get('dtype')}{schedule_summary(train)}",
    ]
    for v in config.get("variants") or []:
        if isinstance(v, dict):
            shown = ", ".join(
                f"{k}={x}" for k, x in v.items() if k not in ("name", "kind") and x is not None
            )
            lines.append(
                f"variant {v.get('name')}: {v.get('kind')}" + (f" ({shown})" if shown else "")
            )
    return lines


def print_show(
    path: str,
    status: str,
    summary: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    rows: Sequence[Row],
    files: Sequence[tuple[str, int]],
    out: Console | None = None,
) -> None:
    """``aaf show``: the run's folder and status, config highlights, results table, verdicts and
    files."""
    from rich.text import Text

    out = out or console()
    head = Text.assemble((path, "bold"), f"  status: {status}")
    if head.cell_len <= out.width:
        out.print(head, highlight=False)
    else:
        # A long path: the run's own name on a line of its own, whole.
        where = Path(path)
        out.print(Text.assemble((where.name, "bold"), f"  status: {status}"), highlight=False)
        _say(out, f"in {where.parent}{os.sep}", indent="")
    if summary is not None:
        _say(
            out,
            f"started {summary.get('started')}, {summary['duration_s']:.1f} s "
            f"(training {summary['train_time_s']:.1f} s{compile_words(summary)}), "
            f"{summary['steps_done']}/{summary['steps']} steps, seeds {summary['seeds']}",
            indent="",
        )
    for line in highlights(config):
        _say(out, line)
    tuning = (summary or {}).get("tuning") or {}
    if tuning.get("on"):
        from aaf_cli.tuning import tuning_line

        _say(out, f"tuned: {tuning_line(tuning)} in {tuning.get('train_time_s', 0):.1f} s")
        for note in tuning.get("notes") or []:
            _say(out, f"note: {note}", style="yellow")
    facts = facts_of(config)
    print_rows(rows, "results (geometric means over seeds)", out, show_run=False, facts=facts)
    for control in ((summary or {}).get("controls") or {}).get("comparisons") or []:
        _say(out, str(control["verdict"]))
    if summary is not None and summary.get("status") != "completed":
        _say(out, f"status: {summary.get('status')}", style="yellow", indent="")
    out.print("files:", highlight=False)
    name_width = max((len(name) for name, _ in files), default=0)
    name_width = min(name_width, max(out.width - 20, 10))
    for name, size in files:
        out.print(f"  {name:{name_width}s} {size:>10,d} bytes", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# aaf sweep, aaf show SWEEP

SWEEP_NOTE = (
    "final test: geometric mean over seeds, interval: its 95% t interval; test at best val: at "
    "each seed's step of lowest validation loss; vs baseline: seeds where the final test MSE is "
    "lower, geometric-mean ratio, Wilcoxon p (Holm-adjusted over the point's variants)"
)


def points_note(folder: Path | None) -> str:
    """The sweep folder's files, as the closing line names them (the heat map when drawn)."""
    heat = folder is not None and (folder / "sweep_heatmap.png").is_file()
    return (
        "points.csv (every number), sweep.png (the figure), "
        + ("sweep_heatmap.png (the heat map), " if heat else "")
        + "points/<NNN>/ (the runs)"
    )


def _sweep_versus(row: Mapping[str, Any]) -> str:
    if row.get("variant") == row.get("baseline"):
        return "baseline"
    if not row.get("pairs"):
        return "-"
    parts = [f"{row['wins']}/{row['pairs']} wins"]
    if row.get("ratio") is not None:
        parts.append(f"x{row['ratio']:.2g}")
    if row.get("p") is not None and row["pairs"] >= 2:
        parts.append(f"p={row['p']:.2g}")
    return ", ".join(parts)


def print_sweep(
    sweep: Any, out: Console | None = None, verdicts: bool = False, folder: bool = True
) -> None:
    """The points table of a sweep (an ``aaf_cli.Sweep``): a row per point and variant, the
    swept values first; then, with ``verdicts``, each point's verdict sentences. ``folder``:
    the sweep folder first (``aaf sweep`` prints it last instead)."""
    from rich.text import Text

    from aaf_cli.sweeps.records import DONE
    from aaf_cli.sweeps.spec import short_text

    out = out or console()
    done = sum(1 for p in sweep.points if p.status in DONE)
    head = f"sweep {sweep.name}: {done}/{len(sweep.points)} points done, status {sweep.status}"
    if not folder or sweep.folder is None:
        pass
    elif len(str(sweep.folder)) <= out.width:
        out.print(Text(str(sweep.folder), style="bold"), highlight=False)
    else:  # a long path: the folder's own name whole on its line
        out.print(Text(sweep.folder.name, style="bold"), highlight=False, soft_wrap=True)
        _say(out, f"in {sweep.folder.parent}{os.sep}", indent="")
    _say(out, head, indent="")
    base = sweep.base or {}
    if base.get("source"):
        sets = " ".join(f"--set {o}" for o in base.get("overrides") or [])
        _say(out, f"base: {base['source']}" + (f" {sets}" if sets else ""))
    for line in sweep.describe_values():
        _say(out, f"swept {line}")
    columns = [Column("point", 0, "right")]
    columns += [Column(key, 0, wrap="name") for key in sweep.keys]
    columns += [
        Column("variant", 0, wrap="name"),
        Column("status", 3),
        Column("seeds", 6, "right"),
        Column("final test", 0, "right"),
        Column("interval", 4, wrap="list"),
        Column("test at best val", 5, "right"),
        Column("steps to thr.", 7, "right"),
        Column("vs baseline", 1, wrap="list"),
    ]
    cells: list[Sequence[Cell] | None] = []
    previous = None
    for r in sweep.table:
        point = int(r["point"])
        if previous is not None and point != previous:
            cells.append(None)
        first = point != previous
        status = str(r["status"])
        low, high = r.get("final_test_ci_low"), r.get("final_test_ci_high")
        cells.append(
            [
                str(point) if first else "",
                *[short_text(r.get(k)) if first else "" for k in sweep.keys],
                str(r["variant"]),
                (status, _STATUS_STYLES.get(status, "magenta")),
                "-" if r.get("seeds") is None else str(r["seeds"]),
                fmt(r.get("final_test_geomean")),
                "-" if low is None or high is None else f"{fmt(low)}, {fmt(high)}",
                fmt(r.get("test_at_best_val_geomean")),
                fmt(r.get("steps_to_threshold"), ".0f"),
                _sweep_versus(r),
            ]
        )
        previous = point
    table, notes = fitted_table(columns, cells, out.width, "points (geometric means over seeds)")
    _print_table(out, table, notes)
    _say(out, SWEEP_NOTE, style="dim", indent="")
    if verdicts:
        for sentence in sweep.verdicts:
            _say(out, sentence)
    for p in sweep.points:
        if p.error:
            _say(out, f"point {p.index} failed: {p.error}", style="red")
    if getattr(sweep, "tuned", None) is not None:
        print_tuned(sweep.tuned, out)
    if sweep.figure is not None:
        _say(out, f"in the sweep folder: {points_note(sweep.folder)}", style="dim", indent="")


def print_tuned(tuned: Any, out: Console) -> None:
    """The tuned-baseline protocol: how each variant chose, its choice, and the headline."""
    from aaf_cli.sweeps.spec import short_text

    def seeds(values: Sequence[int]) -> str:
        return f"{values[0]}..{values[-1]}" if len(values) > 1 else str(values[0])

    _say(
        out,
        f"tuned baseline: each variant chose its {tuned.key} by the {tuned.criterion} "
        f"(tuning seeds {seeds(tuned.tune_seeds)}); evaluated on fresh seeds "
        f"{seeds(tuned.eval_seeds)}",
        indent="",
    )
    for name, value in tuned.chosen.items():
        crit = tuned.criteria.get(name) or {}
        shown = ", ".join(f"{k}: {fmt(v)}" for k, v in crit.items())
        _say(out, f"{name}: {tuned.key}={short_text(value)} (median final validation {shown})")
    if tuned.status == "failed":
        _say(out, f"evaluation run failed: {tuned.error}", style="red")
    elif not tuned.verdict:
        _say(out, f"evaluation run: {tuned.status}", style="yellow")
    for sentence in tuned.verdict:
        _say(out, sentence, style="bold", indent="")
    for note in tuned.notes:
        _say(out, f"note: {note}", style="yellow", indent="")
    if tuned.verdict:
        _say(out, "in the sweep folder: tuned.csv (the choices), tuned/ (the evaluation run)",
             style="dim", indent="")  # fmt: skip


def _ranges(indices: Sequence[int]) -> str:
    """``0-3, 7, 9-10``: sorted indices as runs."""
    parts: list[str] = []
    run: list[int] = []
    for i in sorted(indices):
        if run and i != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(parts)


def print_sweep_plan(sweep: Any, out: Console | None = None) -> None:
    """``aaf sweep --dry-run``: the values of every point that would run, and their size (a
    resumed sweep: its points that are not done, and how many are)."""
    from aaf_cli.sweeps.records import DONE

    out = out or console()
    todo = [p for p in sweep.points if p.status == "planned"]
    done = len(sweep.points) - len(todo)
    what = f"sweep {sweep.name}: {len(sweep.points)} points"
    if done:
        what = f"{what}, {done} already done, {len(todo)} to run"
    _say(out, f"{what} (dry run: nothing written)", indent="")
    base = sweep.base or {}
    if base.get("source"):
        sets = " ".join(f"--set {o}" for o in base.get("overrides") or [])
        _say(out, f"base: {base['source']}" + (f" {sets}" if sets else ""))
    width = len(str(max(len(sweep.points) - 1, 0)))
    for p in todo:
        _say(out, f"{p.index:>{width}d}  {p.label}")
    tuned = getattr(sweep, "tuned", None)
    if tuned is not None and tuned.status not in DONE:
        _say(out, "then the tuned evaluation run (tuned/)", indent="")
    packs = sweep.check.packs if sweep.check is not None else []
    if packs and len(packs) < len(todo):
        _say(out, f"packing: {len(packs)} job{'s' if len(packs) > 1 else ''}", indent="")
        for k, pack in enumerate(packs):
            _say(
                out,
                f"job {k}: points {_ranges(pack.points)} as one ensemble ({pack.models} models)",
            )
    if sweep.check is not None:
        if sweep.check.estimates:  # a resumed sweep with every point done: nothing to train
            _say(out, f"estimate: {sweep.check.describe()}", indent="")
        if sweep.check.over_limits:
            _say(
                out,
                f"over the limits ({'; '.join(sweep.check.over_limits)}): runs with --force",
                style="yellow",
                indent="",
            )
