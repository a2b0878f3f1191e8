"""``aaf run`` as a library call: config in, complete run folder out."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aaf_cli import plots, runs
from aaf_cli.checks import Checked, preflight
from aaf_cli.config import ExperimentConfig, phases_summary
from aaf_cli.experiment import (
    ExperimentResult,
    members,
    run_experiment,
    series_of,
    tidy,
)
from aaf_cli.models import ModelSpec
from aaf_cli.problems import problem_of
from aaf_cli.problems.base import Drawing
from aaf_cli.results import (
    Band,
    ModelOutcome,
    Series,
    aggregate,
    by_variant,
    compare_pairs,
    summarise,
)
from aaf_cli.resume import dumps
from aaf_cli.stats import verdict
from aaf_cli.train import LogRecord


@dataclass
class RunReport:
    """Where a run was written and what it found."""

    folder: Path
    summary: dict[str, Any]
    outcomes: list[ModelOutcome]


def baseline_of(cfg: ExperimentConfig) -> str:
    """The first fixed variant without a slope, or the first variant if none is."""
    name: str = cfg.baseline_variant.name
    return name


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def describe(cfg: ExperimentConfig) -> str:
    """A figure title: the run's name (left out where it is the problem's own), the problem as
    written (a named target's formula, your expression, an equation, a file), the network and
    its activation."""
    layers = "x".join(str(w) for w in cfg.model.layers)
    section = cfg.problem_section()
    stated = section.model_dump(mode="json")
    problem, own = section.title(stated), section.label(stated)
    head = problem if cfg.name == own else f"{cfg.name}: {problem}"
    return f"{head} · [{layers}] {cfg.model.activation}"


def status_of(interrupted: bool, outcomes: Sequence[ModelOutcome]) -> str:
    if interrupted:
        return "interrupted"
    diverged = [o for o in outcomes if o.diverged]
    if diverged:
        where = ",".join(f"{o.variant}/seed{o.seed}@{o.diverged_at}" for o in diverged[:5])
        more = f",+{len(diverged) - 5}" if len(diverged) > 5 else ""
        return f"diverged:{where}{more}"
    return "completed"


def early_stops(exp: ExperimentResult) -> dict[str, list[str | None]]:
    """Per variant, each model's early L-BFGS stop reason (None: it ran every iteration)."""
    out: dict[str, list[str | None]] = {}
    for member, reason in zip(exp.members, exp.result.stopped_early):
        out.setdefault(member.variant, []).append(reason)
    return out


def unequal_iterations(
    stops: dict[str, list[str | None]],
    variant: str,
    baseline: str,
    tolerances: tuple[float, float] = (1e-7, 1e-9),
) -> str:
    """A warning when L-BFGS stopped more of one variant's models early than of the other's
    (they did not train for the same iterations); "" otherwise. ``tolerances``: the largest
    ``tolerance_grad`` and ``tolerance_change`` of the run's L-BFGS phases (a key already at 0
    is not offered as the way out)."""
    from aaf_cli.lbfgs import STOP_REASONS

    counts = {v: sum(r is not None for r in stops.get(v, [])) for v in (variant, baseline)}
    if counts[variant] == counts[baseline]:
        return ""
    reasons = sorted({r for v in (variant, baseline) for r in stops.get(v, []) if r is not None})
    grad, change = tolerances
    hints = {"evals": "a larger train.max_evals"}
    if change > 0:
        hints |= {r: "train.tolerance_change: 0" for r in ("change", "step", "descent")}
    if grad > 0:
        hints["gradient"] = "train.tolerance_grad: 0"
    fixes = sorted({hints[r] for r in reasons if r in hints})
    return (
        f"L-BFGS stopped {counts[variant]} of {len(stops.get(variant, []))} {variant} models "
        f"and {counts[baseline]} of {len(stops.get(baseline, []))} {baseline} models before "
        f"their last iteration ({'; '.join(STOP_REASONS[r] for r in reasons)}): the two did "
        "not train for the same iterations"
        + (f" ({' or '.join(fixes)} lets every model run them)" if fixes else "")
    )


def build_summary(
    cfg: ExperimentConfig,
    exp: ExperimentResult,
    outcomes: list[ModelOutcome],
    started: datetime,
    folder: Path,
    series: list[Series],
) -> dict[str, Any]:
    names = [v.name for v in cfg.variants]
    baseline = baseline_of(cfg)
    groups = by_variant(outcomes, names)
    problem, facts = problem_of(cfg), cfg.problem_section().facts
    metric, loss = facts.metric, facts.loss
    stats, comparisons = summarise(
        outcomes, names, baseline, cfg.train.threshold, metric, series, loss
    )
    from aaf_cli import tuning

    tuned = exp.tuning.record() if exp.tuning is not None else tuning.untuned_record()
    # Untuned, with one rate for all: the comparison may be won by whom that rate suits. (Rates
    # of their own, as a tuned sweep's evaluation gives its variants, were chosen per variant.)
    shared = len({v.lr if v.lr is not None else cfg.train.lr for v in cfg.variants}) == 1
    stops = early_stops(exp)
    searches = [p for p in cfg.train.phase_configs() if p.optimizer == "lbfgs"]
    tolerances = (
        max((p.tolerance_grad for p in searches), default=0.0),
        max((p.tolerance_change for p in searches), default=0.0),
    )
    from aaf_cli import sizing

    # Each variant's batched group (its first model's).
    group_of = {
        v.name: exp.ensemble.locate(
            next(i for i, m in enumerate(exp.members) if m.variant == v.name)
        )[0]
        for v in cfg.variants
    }
    sizes = {
        v.name: {
            "parameters": group_of[v.name].parameter_count(),
            "flops": sizing.flops(v, group_of[v.name].layers),
        }
        for v in cfg.variants
    }
    by_name = {v.name: v for v in cfg.variants}
    checks = control_comparisons(cfg, exp, outcomes, metric)
    for c in [*comparisons, *checks]:
        size = sizing.size_words(
            c["variant"], c["baseline"], sizing.matched_by(cfg, by_name[c["variant"]]), sizes
        )
        if size:
            c["verdict"] += f"; {size}"
        if exp.tuning is not None:
            c["verdict"] = f"{tuning.tuning_line(tuned)}, {c['verdict']}"
        elif shared:
            c["verdict"] += f"; {tuning.UNTUNED_WARNING}"
        unequal = unequal_iterations(stops, c["variant"], c["baseline"], tolerances)
        if unequal:
            c["verdict"] += f"; {unequal}"
    variants: dict[str, Any] = {}
    for v in cfg.variants:
        entry: dict[str, Any] = {"kind": v.kind, **v.model_dump(exclude={"name", "kind"})}
        group = group_of[v.name]
        entry["base_activation"] = group.base if group.family.base else None
        entry.update(sizes[v.name])
        entry["matched"] = sizing.matched_by(cfg, v)
        # The rate it trained at: its own (a tuned run's choice), else train.lr.
        entry["effective_lr"] = v.lr if v.lr is not None else cfg.train.lr
        entry["layers"] = group.layers
        entry.update(stats[v.name])
        entry["per_seed"] = [o.__dict__ for o in groups[v.name]]
        variants[v.name] = entry
    finished = datetime.now()
    res = exp.result
    return {
        "format_version": runs.SUMMARY_FORMAT,
        "name": cfg.name,
        "folder": folder.name,
        "status": status_of(res.interrupted, outcomes),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": (finished - started).total_seconds(),
        "train_time_s": res.wall_time,
        "compiled": "compile_time_s" in res.extra and "compile_error" not in res.extra,
        **{k: v for k, v in res.extra.items() if k.startswith(("compile_", "lbfgs_"))},
        **cuda_graph_entries(res.extra),
        "steps": cfg.train.steps,
        "steps_done": res.steps_done,
        "phases": phases_summary(cfg.train.model_dump(mode="json")),
        "threshold": cfg.train.threshold,
        "seeds": cfg.seed_list,
        "baseline": baseline,
        "problem": cfg.problem_section().kind,
        "statistics": statistics_rules(),
        "tuning": tuned,
        "splits": splits_entry(cfg),
        **problem.summary_entries(series),
        "data": problem.data_entry(exp),
        "variants": variants,
        "comparisons": comparisons,
        **({"controls": {**exp.controls, "comparisons": checks}} if exp.controls else {}),
        "diverged": [
            {"variant": o.variant, "seed": o.seed, "step": o.diverged_at}
            for o in outcomes
            if o.diverged
        ],
        "environment": {**exp.environment, "git_commit": _git_commit()},
        **({"packed": exp.packing} if exp.packing is not None else {}),
    }


def control_comparisons(
    cfg: ExperimentConfig, exp: ExperimentResult, outcomes: list[ModelOutcome], metric: str
) -> list[dict[str, Any]]:
    """Each fixed control against the adaptive variant its s came from (``aaf_cli.controls``),
    as comparisons whose verdict answers the control's question."""
    from aaf_cli.controls import QUESTION

    found = (exp.controls or {}).get("variants", {})
    pairs = [(entry["slope_from"], name) for name, entry in found.items()]
    out = []
    for c in compare_pairs(outcomes, pairs):
        s = found[c.baseline]["slope"]
        text = verdict(c, cfg.train.threshold, metric)
        out.append(
            {**c.as_dict(), "question": QUESTION, "verdict": f"{QUESTION} (s = {s:.3g}): {text}"}
        )
    return out


def splits_entry(cfg: ExperimentConfig) -> dict[str, str]:
    """Which data each number of the run comes from, stated in the summary."""
    train = cfg.problem_section().facts.train_points
    return {
        "train": f"train_loss, final_train, best_train: the {train}",
        "validation": "val_loss, final_val, best_val: the validation points; every choice the "
        "run makes (the tuning phase's rates, the step of test_at_best_val) reads these alone",
        "test": "test_loss, final_test, last_test, test_at_best_val, the comparisons and "
        "verdicts: the test grid, read by no choice (best_test, the minimum over logged "
        "steps, describes the curve; nothing is chosen by it)",
    }


def statistics_rules() -> dict[str, Any]:
    """The rules behind the summary's numbers, stated in the summary itself."""
    from aaf_cli import stats

    return {
        "across_seeds": f"{stats.CENTER} of the seeds' values, in tables, figures and "
        "sweep.png alike (the median where stated: activation parameters)",
        "split": f"seeds whose final values sit {stats.SPLIT_DECADES:g}+ decades above the "
        "others (and no closer than the wider group is wide) are counted apart; those whose "
        f"training loss fell by less than {stats.PLATEAU_DROP:g}x stayed on the initial plateau",
        "final": stats.tail_rule(),
        "last": "the last logged point",
        "best": "the minimum over logged points",
        "ratio_interval": "Student's t on the log ratios (95%), at every seed count",
        "test": "two-sided Wilcoxon signed-rank on log ratios of final test MSE, exact up to "
        f"{stats.EXACT_WILCOXON_MAX_N} pairs without ties; Holm-adjusted across the variants "
        "compared with one baseline",
        "alpha": stats.ALPHA,
        "seeds_needed": f"paired-t sample size at {stats.POWER:.0%} power and level alpha / "
        "comparisons, at least what the exact test needs to reach that level",
    }


def curve_bands(series: Sequence[Series], variants: Sequence[str]) -> dict[str, dict[str, Band]]:
    groups = by_variant(series, variants)
    return {v: {m: aggregate(groups[v], m) for m in ("train", "test")} for v in variants}


def write_figures(
    folder: Path,
    cfg: ExperimentConfig,
    exp: ExperimentResult,
    series: list[Series],
    outcomes: list[ModelOutcome],
) -> None:
    from aaf_cli.naming import variant_label

    names = [v.name for v in cfg.variants]
    labels = {v.name: variant_label(v.name, v.model_dump(mode="json")) for v in cfg.variants}
    title = describe(cfg)
    if exp.result.interrupted:
        done, planned = exp.result.steps_done, cfg.train.steps
        title += f"\nINTERRUPTED at step {done:,} of {planned:,}: curves end there"
    bands = curve_bands(series, names)
    notes = [
        f"left out (diverged): {o.variant} seed {o.seed} at step {o.diverged_at}"
        for o in outcomes
        if o.diverged
    ]
    problem, facts = problem_of(cfg), cfg.problem_section().facts
    loss, error = facts.loss, facts.metric
    plots.loss_and_error(outcomes, names, folder / "loss_error.png", title, loss, error, labels)
    drawing = Drawing(exp, series, outcomes, bands, title, notes, labels)
    runs.write_atomic(folder / "aggregates.csv", runs.aggregates_csv(bands))
    problem.write_figures(folder, drawing)
    plots.slopes(series, names, folder / "slopes.png", f"{title}\nactivation parameters", labels)


def cuda_graph_entries(extra: dict[str, Any]) -> dict[str, Any]:
    """Whether the training step ran as a captured CUDA graph, with the capture time or the
    reason it fell back to eager; nothing for runs that never tried (the CPU)."""
    if "cuda_graph_time_s" not in extra:
        return {}
    entries: dict[str, Any] = {
        "cuda_graph": "cuda_graph_error" not in extra,
        "cuda_graph_time_s": extra["cuda_graph_time_s"],
    }
    if "cuda_graph_error" in extra:
        entries["cuda_graph_error"] = extra["cuda_graph_error"]
    return entries


def write_checkpoints(folder: Path, cfg: ExperimentConfig, exp: ExperimentResult) -> None:
    """One file per variant: a ``PlainMLP`` state dict per seed (``weights_only`` loadable)."""
    target = folder / "checkpoints"
    target.mkdir(exist_ok=True)
    for v in cfg.variants:
        indices = [i for i, m in enumerate(exp.members) if m.variant == v.name]
        located = [exp.ensemble.locate(i) for i in indices]
        payload = {
            "format_version": runs.SUMMARY_FORMAT,
            "variant": v.name,
            "kind": v.kind,
            "config": v.model_dump(mode="json"),
            "layers": cfg.layers_of(v),
            "activation": v.base or cfg.model.activation,
            "seeds": [exp.members[i].seed for i in indices],
            "state_dicts": [group.state_dict_of(j) for group, j in located],
        }
        runs.write_atomic(target / f"{v.name}.pt", dumps(payload))


def config_header(source: str, overrides: Sequence[str]) -> str:
    lines = [f"# resolved by aaf from {source}"]
    lines += [f"# override: --set {o}" for o in overrides]
    lines.append("# rerun with: aaf run <this file>")
    return "\n".join(lines) + "\n"


FLUSH_SECONDS = 5.0


class Flusher:
    """The ``on_log`` of a run: forwards each record, and keeps the metrics on disk current
    (``metrics_only``: only that file, in the metrics format: a tuning phase's)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        folder: Path,
        members: Sequence[ModelSpec],
        every: float,
        forward: Callable[[LogRecord], None] | None,
        metrics_only: str | None = None,
    ) -> None:
        self.problem = problem_of(cfg)
        self.folder = folder
        self.members = members
        self.every = every
        self.forward = forward
        self.metrics_only = metrics_only
        self.records: list[LogRecord] = []
        self.last: float | None = None

    def __call__(self, record: LogRecord) -> None:
        self.records.append(record)
        now = time.monotonic()
        if self.last is None or now - self.last >= self.every:
            self.last = now
            series = series_of(self.members, self.records)
            if self.metrics_only is not None:
                runs.write_atomic(self.folder / self.metrics_only, runs.metrics_csv(series))
            else:
                runs.write_atomic(self.folder / "metrics.csv", runs.metrics_csv(series))
                runs.write_atomic(self.folder / "parameters.csv", runs.parameters_csv(series))
                runs.write_atomic(self.folder / "timing.csv", runs.timing_csv(series))
                self.problem.write_logs(self.folder, series)
        if self.forward is not None:
            self.forward(record)


def execute(
    cfg: ExperimentConfig,
    runs_dir: Path,
    source: str = "<built-in default>",
    overrides: Sequence[str] = (),
    on_start: Callable[[Path], None] | None = None,
    on_log: Callable[[LogRecord], None] | None = None,
    stop: Callable[[], bool] | None = None,
    flush_every: float = FLUSH_SECONDS,
    force: bool = False,
    checked: Checked | None = None,
    folder: Path | None = None,
    on_tuning_log: Callable[[LogRecord], None] | None = None,
    on_phase: Callable[[str, Sequence[ExperimentConfig]], None] | None = None,
) -> RunReport:
    """Run one experiment and write its complete run folder.

    A tuned config (``tune:``) trains its tuning phase first (``aaf_cli.tuning``): its records
    go to ``on_tuning_log``, the evaluation's (the run's own models) to ``on_log`` and the
    folder's metrics; ``on_phase`` is told as each phase starts.

    Everything that can be checked before training is checked before the folder is made
    (``checks.preflight``, the same checks as ``aaf validate``), so bad input never leaves a
    folder behind. While training, ``metrics.csv`` and ``parameters.csv`` are rewritten
    (atomically) at the first logged step and then every ``flush_every`` seconds, so a killed
    run keeps what it had. ``summary.json`` is written last: its presence marks a finished
    folder. ``folder``: an empty folder to write into instead of a new timestamped one under
    ``runs_dir`` (a sweep's ``points/<NNN>/``).
    """
    if checked is None or checked.config is not cfg:
        checked = preflight(cfg, source, force)
    started = datetime.now()
    if folder is None:
        folder = runs.new_run_dir(runs_dir, cfg.name, started)
    start_run(folder, cfg, source, overrides)
    if on_start is not None:
        on_start(folder)
    flusher = Flusher(cfg, folder, members(cfg), flush_every, on_log)
    data = checked.data

    def trainer(
        configs: Sequence[ExperimentConfig],
        test: bool,
        log: Callable[[LogRecord], None] | None,
    ) -> list[ExperimentResult]:
        (phase,) = configs
        # Per-seed data (target.resample) is drawn for the seeds trained: the tuning seeds
        # get their own.
        same = not cfg.problem_section().per_seed or phase.seeds == cfg.seeds
        return [
            run_experiment(phase, on_log=log, stop=stop, data=data if same else None, test=test)
        ]

    from aaf_cli import controls, tuning

    tuning_log: Callable[[LogRecord], None] | None = on_tuning_log
    if cfg.tune is not None:  # the tuning phase's curves reach the disk too
        phase = tuning.tuning_config(cfg)
        tuning_log = Flusher(
            phase, folder, members(phase), flush_every, on_tuning_log, tuning.TUNING_METRICS
        )
    (exp,) = controls.train_controlled(
        [cfg], trainer, on_log=flusher, on_tuning_log=tuning_log, on_phase=on_phase
    )
    return write_run(folder, exp, started)


def start_run(folder: Path, cfg: ExperimentConfig, source: str, overrides: Sequence[str]) -> None:
    """The first file of a run folder: its resolved config (rerunnable as it stands)."""
    runs.write_atomic(folder / "config.yaml", cfg.to_yaml(config_header(source, overrides)))


def write_run(folder: Path, exp: ExperimentResult, started: datetime) -> RunReport:
    """Every file of a run folder after training (``start_run`` wrote its config): the
    metrics, figures, checkpoints and, last, ``summary.json``, whose presence marks the folder
    finished. Also how a sweep writes a point trained elsewhere (packed, or on a Ray worker)."""
    cfg = exp.config
    series, outcomes = tidy(exp)
    runs.write_atomic(folder / "metrics.csv", runs.metrics_csv(series))
    runs.write_atomic(folder / "parameters.csv", runs.parameters_csv(series))
    runs.write_atomic(folder / "timing.csv", runs.timing_csv(series))
    problem_of(cfg).write_logs(folder, series)
    write_figures(folder, cfg, exp, series, outcomes)
    if exp.tuning is not None:
        from aaf_cli import tuning

        runs.write_atomic(folder / tuning.TUNING_FILE, tuning.tuning_csv(exp.tuning))
        runs.write_atomic(folder / tuning.TUNING_METRICS, runs.metrics_csv(exp.tuning.series))
        plots.tuning_figure(
            exp.tuning, folder / tuning.TUNING_FIGURE, f"{describe(cfg)}\nlearning rates tried"
        )
    write_checkpoints(folder, cfg, exp)
    summary = build_summary(cfg, exp, outcomes, started, folder, series)
    runs.write_json(folder / "summary.json", summary)
    return RunReport(folder, summary, outcomes)
