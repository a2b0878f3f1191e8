"""``aaf report``: runs and sweeps as one self-contained HTML page, to attach to an email.

Everything is in the one file: the figures as embedded PNG (data URIs), the tables, every
verdict, the resolved config and the environment it ran in. No script, no stylesheet or font
from elsewhere: the page reads the same offline, in any browser, years later. Numbers are
those ``aaf show`` prints (the same rows, the same statistic: geometric means over seeds).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aaf_cli import __version__

if TYPE_CHECKING:
    from aaf_cli.api import Run
    from aaf_cli.sweeps.result import Sweep

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2.2em; border-bottom: 1px solid
#ccc; padding-bottom: 0.2em; } h3 { margin-top: 1.4em; }
.meta { color: #555; } .verdict { background: #f3f6fa; border-left: 4px solid #3a6ea5;
padding: 0.5em 0.8em; margin: 0.4em 0; } .note { color: #8a5a00; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } th { background: #f4f4f4; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #e0e0e0; }
figcaption { color: #555; font-size: 0.9em; } pre { background: #f7f7f7; padding: 0.8em;
overflow-x: auto; font-size: 0.85em; } nav li { margin: 0.15em 0; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool]) -> str:
    """An HTML table; ``numeric`` columns right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if is_num else f"<td>{esc(c)}</td>"
            for c, is_num in zip(row, numeric)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def key_values(mapping: Mapping[str, Any]) -> str:
    return table(["key", "value"], ((k, v) for k, v in mapping.items()), [False, False])


def run_section(run: Run, anchor: str) -> str:
    """One run: what it is, its verdicts, its table, its tuning, figures, config, environment."""
    from aaf_cli.problems import facts_of
    from aaf_cli.render import compile_words

    summary = run.summary or {}
    test = facts_of(run.config).test_name
    parts = [f'<h2 id="{anchor}">{esc(run.folder.name)}</h2>']
    meta = f"status {run.status}"
    if summary:
        meta += (
            f"; started {summary.get('started')}; {summary.get('duration_s', 0):.1f} s in all, "
            f"training {summary.get('train_time_s', 0):.1f} s{compile_words(summary)}; "
            f"{summary.get('steps_done')}/{summary.get('steps')} steps; "
            f"seeds {summary.get('seeds')}"
        )
    parts.append(f'<p class="meta">{esc(meta)}</p>')
    parts.append("<h3>Verdicts</h3>")
    verdicts = run.verdicts or ["no comparison yet: the run has not finished"]
    parts += [f'<p class="verdict">{esc(v)}</p>' for v in verdicts]
    parts += [f'<p class="verdict">{esc(v)}</p>' for v in run.loss_against_error]
    parts.append("<h3>Results (geometric means over seeds)</h3>")
    headers = ["variant", "seeds", "steps", f"final {test}", f"{test} at best val",
               "steps to threshold", "vs baseline"]  # fmt: skip
    rows = [
        [r.variant, r.seeds, r.steps, number(r.final_test, ".3e"), number(r.at_best_val, ".3e"),
         "never" if r.steps_to_threshold is None else f"{r.steps_to_threshold:.0f}", r.versus]
        for r in run.rows
    ]  # fmt: skip
    parts.append(table(headers, rows, [False, True, True, True, True, True, False]))
    tuning = summary.get("tuning") or {}
    if tuning.get("on"):
        parts.append("<h3>Tuning (learning rates chosen on validation data)</h3>")
        parts.append(f"<p>criterion: {esc(tuning.get('criterion', ''))}</p>")
        rows = []  # each variant: its chosen rate, the criterion at every rate tried
        for name, entry in (tuning.get("variants") or {}).items():
            tried = zip(entry.get("rates") or [], entry.get("criterion") or [])
            shown = ", ".join(f"{number(r)}: {number(c, '.3e')}" for r, c in tried)
            rows.append([name, number(entry.get("chosen")), shown])
        parts.append(table(["variant", "chosen rate", "criterion at each rate tried"], rows,
                           [False, True, False]))  # fmt: skip
        parts += [f'<p class="note">note: {esc(n)}</p>' for n in tuning.get("notes") or []]
    parts.append("<h3>Figures</h3>")
    parts += [figure(path, name) for name, path in run.figures.items()]
    config_file = run.folder / "config.yaml"
    if config_file.is_file():
        parts.append("<h3>Config (resolved)</h3>")
        parts.append(f"<pre>{esc(config_file.read_text(encoding='utf-8'))}</pre>")
    environment = summary.get("environment") or {}
    if environment:
        parts.append("<h3>Environment</h3>")
        parts.append(key_values(environment))
    return "\n".join(parts)


def sweep_section(sweep: Sweep, anchor: str) -> str:
    """One sweep: its axes, the tuned protocol's outcome, the points table, verdicts, figures
    and the base config."""
    assert sweep.folder is not None
    parts = [f'<h2 id="{anchor}">{esc(sweep.folder.name)}</h2>']
    done = sum(1 for p in sweep.points if p.status in ("completed", "diverged"))
    parts.append(
        f'<p class="meta">sweep {esc(sweep.name)}: {done}/{len(sweep.points)} points done, '
        f"status {esc(sweep.status)}; swept {esc('; '.join(sweep.describe_values()))}</p>"
    )
    tuned = sweep.tuned
    if tuned is not None:
        parts.append(f"<h3>Tuned baseline ({esc(tuned.key)})</h3>")
        parts.append(
            f"<p>each variant chose its {esc(tuned.key)} by the {esc(tuned.criterion)}: "
            + esc(", ".join(f"{n} {v}" for n, v in tuned.chosen.items()))
            + "</p>"
        )
        parts += [f'<p class="verdict">{esc(v)}</p>' for v in tuned.verdict]
        parts += [f'<p class="note">note: {esc(n)}</p>' for n in tuned.notes]
    parts.append("<h3>Points (geometric means over seeds)</h3>")
    columns = ["point", *sweep.keys, "variant", "status", "seeds", "final_test_geomean",
               "final_test_ci_low", "final_test_ci_high", "test_at_best_val_geomean",
               "steps_to_threshold", "wins", "pairs", "ratio", "p"]  # fmt: skip
    shown = [c for c in columns if any(c in r for r in sweep.table)]
    cells = [
        [number(r.get(c), ".3e" if "test" in c else ".3g") for c in shown] for r in sweep.table
    ]
    numeric = [c not in ("variant", "status") and c not in sweep.keys for c in shown]
    parts.append(table([c.replace("_", " ") for c in shown], cells, numeric))
    if sweep.verdicts:
        parts.append("<h3>Verdicts</h3>")
        parts += [f'<p class="verdict">{esc(v)}</p>' for v in sweep.verdicts]
    failed = [p for p in sweep.points if p.error]
    parts += [f'<p class="note">point {p.index} failed: {esc(p.error)}</p>' for p in failed]
    figures = sorted(sweep.folder.glob("*.png"))
    if figures:
        parts.append("<h3>Figures</h3>")
        parts += [figure(path, path.name) for path in figures]
    record = sweep.folder / "sweep.yaml"
    if record.is_file():
        parts.append("<h3>Sweep record (base config, axes)</h3>")
        parts.append(f"<pre>{esc(record.read_text(encoding='utf-8'))}</pre>")
    return "\n".join(parts)


def page(items: Sequence[Run | Sweep], generated: datetime) -> str:
    """The whole page: a title, a list of what it holds, then a section per run or sweep."""
    from aaf_cli.sweeps.result import Sweep

    sections, entries = [], []
    for i, item in enumerate(items):
        anchor = f"item{i}"
        if isinstance(item, Sweep):
            sections.append(sweep_section(item, anchor))
            assert item.folder is not None
            what = f"sweep {item.folder.name}"
        else:
            sections.append(run_section(item, anchor))
            what = f"run {item.folder.name}"
        entries.append(f'<li><a href="#{anchor}">{esc(what)}</a></li>')
    title = f"aaf report: {len(items)} {'item' if len(items) == 1 else 'items'}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>{esc(title)}</h1>\n"
        f'<p class="meta">written {generated.isoformat(timespec="seconds")} by aaf '
        f"{esc(__version__)}; every number across seeds is a geometric mean, every ratio "
        "paired by seed (the same initial weights for every variant)</p>\n"
        f"<nav><ul>{''.join(entries)}</ul></nav>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_report(
    specs: Sequence[str | Path], out: Path | None, runs_dir: Path, last: int | None = None
) -> tuple[Path, list[Run | Sweep]]:
    """Resolve RUN/SWEEP arguments (and ``--last N`` runs), read every one (any error before
    a byte is written), and write the page to ``out`` (default
    ``<runs_dir>/report_<timestamp>.html``)."""
    from aaf_cli.api import Run
    from aaf_cli.errors import UsageError
    from aaf_cli.runs import resolve_runs, write_atomic
    from aaf_cli.sweeps.records import find_sweep
    from aaf_cli.sweeps.result import Sweep

    items: list[Run | Sweep] = []
    for spec in specs:
        folder = find_sweep(str(spec), runs_dir)
        if folder is not None:
            items.append(Sweep.open(folder))
        else:
            items += [Run(r).read() for r in resolve_runs([str(spec)], runs_dir)]
    if last is not None:
        items += [Run(r).read() for r in resolve_runs([], runs_dir, last)]
    if not items:
        raise UsageError("give the runs or sweeps to report (folders, names, globs) or --last N")
    now = datetime.now()
    target = out or Path(runs_dir) / f"report_{now.strftime('%Y-%m-%d_%H-%M-%S')}.html"
    if target.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {target}: a report is an .html file")
    if not target.parent.is_dir():
        raise UsageError(f"--out {target}: no folder {target.parent}")
    text = page(items, now)
    write_atomic(target, text)
    return target, items
