"""What ``aaf compare``, ``aaf list`` and ``aaf show`` read and aggregate from run folders:
the drawn curves, the results tables and the one-line run descriptions.

(Not named ``compare``: that name is the public ``aaf_cli.compare`` function of the API.)

Everything here reads through ``runs.RunFolder`` and is torch-free. The curves a comparison draws
are the rows of its CSV, so the figure can always be checked against numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aaf_cli.errors import UsageError
from aaf_cli.naming import variant_label
from aaf_cli.problems import problem_label, problem_title
from aaf_cli.results import (
    Band,
    ModelOutcome,
    Series,
    aggregate,
    by_variant,
    outcome,
    summarise,
)
from aaf_cli.runs import SUMMARY_FORMAT, RunFolder, csv_buffer, num_text
from aaf_cli.stats import reported_p

METRICS = ("test", "train")
BANDS = ("auto", "iqr", "minmax", "std", "none")
X_AXES = ("step", "time")
COMPARE_FORMAT = 3  # 2: the runs column; 3: geometric means over seeds (were medians)
CSV_COLUMNS = [
    "run",
    "variant",
    "metric",
    "step",
    "x",
    "geomean",
    "low",
    "high",
    "band",
    "seeds",
    "geomean_raw",
    "low_raw",
    "high_raw",
    "runs",
]


@dataclass(frozen=True)
class Curve:
    """One drawn line with its band: a variant of a run, aggregated over its seeds.

    ``runs`` names every run the line stands for: more than ``run`` alone where runs of
    identical configs share the variant (a common baseline), which is then drawn once.
    """

    run: str
    variant: str
    metric: str
    steps: list[int]
    x: list[float]
    raw: Band
    shown: Band  # equal to raw unless smoothed
    runs: tuple[str, ...] = ()
    label: str = ""  # the variant's legend text: its name and what it is
    target: str = ""  # the run's target as a title writes it


def labels(runs: Sequence[RunFolder]) -> list[str]:
    """Short unique labels: folder names, or paths where two folders share a name."""
    names = [r.path.name for r in runs]
    return [str(r.path) if names.count(r.path.name) > 1 else r.path.name for r in runs]


def select_variants(runs: Sequence[RunFolder], wanted: Sequence[str] | None) -> list[list[str]]:
    """The variants to draw of each run; every wanted name must exist in some run, and every run
    must keep at least one (compare never drops a run silently)."""
    present = [r.variants for r in runs]
    if not wanted:
        return present
    everywhere = sorted({v for vs in present for v in vs})
    for name in wanted:
        if name not in everywhere:
            raise UsageError(
                f"--variants: '{name}' is in none of the runs (they have: {', '.join(everywhere)})"
            )
    chosen = [[v for v in vs if v in wanted] for vs in present]
    for run, vs in zip(runs, chosen):
        if not vs:
            raise UsageError(
                f"--variants: run {run.path} has none of {', '.join(wanted)} "
                f"(it has: {', '.join(run.variants)})"
            )
    return chosen


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average over ``window`` logged points, in log10 space (the axis is
    logarithmic); the window shrinks at the ends; non-positive or non-finite values stay gaps."""
    logs = [math.log10(v) if math.isfinite(v) and v > 0 else math.nan for v in values]
    half = window // 2
    out = []
    for i in range(len(logs)):
        part = [v for v in logs[max(0, i - half) : i + half + 1] if math.isfinite(v)]
        out.append(10 ** (sum(part) / len(part)) if part and math.isfinite(logs[i]) else math.nan)
    return out


def build_curves(
    runs: Sequence[RunFolder],
    metric: str = "test",
    band: str = "auto",
    variants: Sequence[str] | None = None,
    x: str = "step",
    smoothing: int = 0,
) -> list[Curve]:
    """Median and band per (run, variant) over non-diverged seeds, against step or seconds."""
    if metric not in METRICS:
        raise UsageError(f"--metric must be one of {', '.join(METRICS)} (got '{metric}')")
    if band not in BANDS:
        raise UsageError(f"--band must be one of {', '.join(BANDS)} (got '{band}')")
    if x not in X_AXES:
        raise UsageError(f"--x must be one of {', '.join(X_AXES)} (got '{x}')")
    if smoothing < 0:
        raise UsageError(f"--smooth must be 0 (off) or a window of logged points (got {smoothing})")
    chosen = select_variants(runs, variants)
    curves = []
    for run, label, names in zip(runs, labels(runs), chosen):
        groups = by_variant(run.series, names)
        timing = run.timing if x == "time" else {}
        for name in names:
            raw = aggregate(groups.get(name, []), metric, None if band == "auto" else band)
            if x == "time":
                seconds = timing.get(name, {})
                missing = [s for s in raw.steps if s not in seconds]
                if missing:
                    raise UsageError(
                        f"{run.path}: timing.csv has no time for {name} at step {missing[0]}"
                    )
                xs = [seconds[s] for s in raw.steps]
            else:
                xs = [float(s) for s in raw.steps]
            shown = raw
            if smoothing > 1:
                shown = Band(
                    raw.steps,
                    smooth(raw.center, smoothing),
                    smooth(raw.low, smoothing),
                    smooth(raw.high, smoothing),
                    raw.kind,
                    raw.seeds,
                )
            entry = _entries(run).get(name, {})
            curves.append(
                Curve(
                    label,
                    name,
                    metric,
                    list(raw.steps),
                    xs,
                    raw,
                    shown,
                    runs=(label,),
                    label=variant_label(name, entry) if entry else name,
                    target=problem_title(run.config),
                )
            )
    return merge_shared(curves, [_setup(run) for run in runs], labels(runs))


def _entries(run: RunFolder) -> dict[str, dict[str, Any]]:
    """The config entry of each variant of a run, by name."""
    items = run.config.get("variants")
    if not isinstance(items, list):
        return {}
    return {str(v["name"]): v for v in items if isinstance(v, dict) and "name" in v}


def _setup(run: RunFolder) -> dict[str, str]:
    """Per variant, everything in the run's resolved config that decides its curve: the config
    without the run's name, its thread count (speed, not numbers) and the other variants."""
    rest = {k: v for k, v in run.config.items() if k not in ("name", "threads", "variants")}
    return {
        name: json.dumps({**rest, "variant": entry}, sort_keys=True, default=str)
        for name, entry in _entries(run).items()
    }


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(u) and math.isnan(v)) or math.isclose(u, v, rel_tol=1e-9, abs_tol=0.0)
        for u, v in zip(a, b)
    )


def _same_curve(a: Curve, b: Curve) -> bool:
    return (
        a.steps == b.steps
        and (a.raw.kind, a.raw.seeds) == (b.raw.kind, b.raw.seeds)
        and all(
            _close(p, q)
            for p, q in (
                (a.x, b.x),
                (a.raw.center, b.raw.center),
                (a.raw.low, b.raw.low),
                (a.raw.high, b.raw.high),
                (a.shown.center, b.shown.center),
            )
        )
    )


def merge_shared(
    curves: Sequence[Curve], setups: Sequence[Mapping[str, str]], run_labels: Sequence[str]
) -> list[Curve]:
    """Draw once what several runs share: a variant (typically the fixed baseline) whose runs
    have identical configs apart from their names and other variants, and whose curves agree
    (they do, from the same seeds; a run made by another version of aaf might not, and is then
    kept apart). The kept curve lists every run it stands for."""
    setup_of = dict(zip(run_labels, setups))
    kept: list[Curve] = []
    for c in curves:
        key = setup_of.get(c.run, {}).get(c.variant)
        twin = next(
            (
                i
                for i, k in enumerate(kept)
                if key is not None
                and k.variant == c.variant
                and setup_of.get(k.run, {}).get(k.variant) == key
                and _same_curve(k, c)
            ),
            None,
        )
        if twin is None:
            kept.append(c)
        else:
            kept[twin] = replace(kept[twin], runs=(*kept[twin].runs, c.run))
    return kept


def curves_csv(curves: Sequence[Curve], x: str, band: str, smoothing: int) -> str:
    """Exactly the plotted series; ``geomean`` (the geometric mean over seeds) and ``low``/``high``
    are what is drawn, the ``_raw``
    columns the unsmoothed values (equal when smoothing is off); ``runs`` the runs a curve stands
    for, ';'-separated (several where identical configs share it and it is drawn once)."""
    smoothed = (
        f"centred moving average of {smoothing} logged points in log10 space"
        if smoothing > 1
        else "none"
    )
    out, writer = csv_buffer(
        f"# aaf compare format {COMPARE_FORMAT}; x: {'seconds' if x == 'time' else 'step'}; "
        f"band: {band}; smoothing: {smoothed}",
        CSV_COLUMNS,
    )
    for c in curves:
        for i, step in enumerate(c.steps):
            writer.writerow(
                [
                    c.run,
                    c.variant,
                    c.metric,
                    step,
                    *map(num_text, (c.x[i], c.shown.center[i], c.shown.low[i], c.shown.high[i])),
                    c.raw.kind,
                    c.raw.seeds,
                    *map(num_text, (c.raw.center[i], c.raw.low[i], c.raw.high[i])),
                    ";".join(c.runs or (c.run,)),
                ]
            )
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class Row:
    """One line of a compare/show table: a variant of a run, geometric means over its seeds."""

    run: str
    variant: str
    seeds: int
    diverged: int
    steps: int
    final_test: float | None  # the geometric mean over seeds, as every table shows it
    at_best_val: float | None  # the test metric at each seed's best validation step (geo. mean)
    steps_to_threshold: float | None
    never: int
    versus: str  # compact paired result against the baseline, e.g. "4/5 wins, x0.65, p=0.44"
    verdict: str  # the full sentence


def _logged_steps_to(series: Series, threshold: float | None) -> int | None:
    if threshold is None:
        return None
    return next((s for s, v in zip(series.steps, series.train) if v <= threshold), None)


def outcomes_of(run: RunFolder) -> list[ModelOutcome]:
    """Per-model outcomes from the metrics, under the current rules (used for runs without a
    summary, still going or killed, and for summaries of an older format). Steps to threshold
    come from the summary where it has them, else at the logging resolution."""
    threshold = run.threshold
    recorded: dict[tuple[str, int], int | None] = {}
    summary = run.summary
    if summary is not None:
        for name, v in summary["variants"].items():
            for o in v.get("per_seed", []):
                recorded[(name, int(o["seed"]))] = o.get("steps_to_threshold")
    return [
        outcome(
            s,
            recorded[(s.variant, s.seed)]
            if (s.variant, s.seed) in recorded
            else _logged_steps_to(s, threshold),
        )
        for s in run.series
    ]


def table_rows(run: RunFolder, label: str, variants: Sequence[str] | None = None) -> list[Row]:
    names = list(variants) if variants is not None else run.variants
    summary = run.summary
    note = ""
    if summary is not None and summary["format_version"] == SUMMARY_FORMAT:
        stats, comparisons = summary["variants"], summary.get("comparisons", [])
    else:
        # No summary (still going, or killed), or one of an older format: the same aggregates
        # from the logged metrics, under the current rules.
        outcomes = outcomes_of(run)
        baseline = run.baseline
        stats, comparisons = summarise(outcomes, run.variants, baseline, run.threshold or math.nan)
        if not any(o.variant == baseline for o in outcomes):
            comparisons = []
        note = " (incomplete run)" if summary is None else ""
    by_name = {c["variant"]: c for c in comparisons}
    rows = []
    for name in names:
        v = stats.get(name)
        if v is None:
            continue
        reach = v["steps_to_threshold"]
        c = by_name.get(name)
        rows.append(
            Row(
                run=label,
                variant=name,
                seeds=int(v["seeds"]),
                diverged=int(v["diverged"]),
                steps=run.steps_done,
                final_test=center(v["final_test"]),
                at_best_val=center(v.get("test_at_best_val") or {}),
                steps_to_threshold=reach["median"],
                never=int(reach["never"]),
                versus="baseline" if name == run.baseline else _versus(c) if c else "-",
                verdict=c["verdict"] + note if c and name != run.baseline else "",
            )
        )
    return rows


def center(stats: Mapping[str, Any]) -> float | None:
    """The across-seeds value of a summary's statistics entry: its geometric mean
    (``stats.CENTER``); None where it has none."""
    value = stats.get("geomean")
    return float(value) if isinstance(value, (int, float)) else None


def _versus(c: dict[str, Any]) -> str:
    """'4/5 wins, x0.65, p=0.44': seeds where the variant's final test MSE is lower, geometric
    mean ratio of final test MSEs, Wilcoxon p (Holm-adjusted when the run compared several
    variants with its baseline)."""
    if not c.get("pairs"):
        return "no pairs"
    parts = [f"{c['wins']}/{c['pairs']} wins"]
    ratio = c.get("ratio_geomean")
    p = reported_p(c)
    if isinstance(ratio, (int, float)) and math.isfinite(ratio):
        parts.append(f"x{ratio:.2g}")
    if c["pairs"] >= 2 and isinstance(p, (int, float)) and math.isfinite(p):
        parts.append(f"p={p:.2g}")
    return ", ".join(parts)


def describe_run(run: RunFolder) -> dict[str, Any]:
    """One entry of ``aaf list``: what, how big, how it ended, how good (final test metric,
    geometric mean over seeds)."""
    started = run.started
    entry: dict[str, Any] = {
        "folder": str(run.path),
        "name": run.label,
        "started": started.isoformat() if started else None,
        "target": None,
        "variants": [],
        "seeds": None,
        "steps": None,
        "steps_done": 0,
        "status": "incomplete",
        "final_test": {},
        "duration_s": None,
    }
    if not any(run.path.iterdir()):
        return entry  # made a moment ago by a run that is starting (or was killed right then)
    seeds = run.config.get("seeds")
    summary = run.summary
    if summary is not None:
        if summary["format_version"] == SUMMARY_FORMAT:
            entry["final_test"] = {
                k: center(v["final_test"]) for k, v in summary["variants"].items()
            }
        else:
            entry["final_test"] = {r.variant: r.final_test for r in table_rows(run, run.label)}
        entry["duration_s"] = summary.get("duration_s")
    elif (run.path / "metrics.csv").exists():
        entry["final_test"] = {row.variant: row.final_test for row in table_rows(run, run.label)}
    entry.update(
        name=run.name,
        target=problem_label(run.config),
        variants=run.variants,
        seeds=len(seeds) if isinstance(seeds, list) else seeds,
        steps=run.section("train").get("steps"),
        steps_done=run.steps_done,
        status=run.status,
    )
    return entry
