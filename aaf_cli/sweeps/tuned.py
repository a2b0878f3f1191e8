"""The tuned-baseline protocol (``aaf sweep --tune KEY``).

Phase 1 (tuning): the sweep's points, one per value of KEY, on the tuning seeds
``0..tune_seeds-1``. Each variant picks its own value of KEY: the one with the smallest median
*final validation* loss over the tuning seeds (the rule of a run's own tuning,
``aaf_cli.tuning``; a diverged seed counts as +inf; ties go to the smaller value, or the one
given first when values do not compare): no test number enters the choice. Phase 2
(evaluation): one ordinary run of the base config with every variant at its chosen value, on
fresh seeds ``1000..1000+eval_seeds-1`` (disjoint from the tuning seeds by construction, so the
luck of the selection does not inflate the verdict); its paired comparisons are the headline.
The points and the evaluation run train at the rates they are given (``tune: off``).

KEY is ``train.lr`` (each variant's ``lr`` in phase 2), ``train.weight_decay`` (each variant's
``weight_decay``) or ``variants.K.<field>`` (only variant K is tuned; the others keep the base
config's setting). KEY must be the sweep's only axis. Torch-free.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aaf_cli.config import ExperimentConfig, load_config
from aaf_cli.errors import ConfigError
from aaf_cli.runs import RunFolder, csv_buffer, num_text, write_atomic
from aaf_cli.schema import MAX_SEEDS
from aaf_cli.stats import outcome_words, reported_p
from aaf_cli.sweeps.records import PAIRED_COLUMNS
from aaf_cli.sweeps.spec import value_text
from aaf_cli.tuning import median_final

#: The evaluation seeds start here; the tuning seeds are 0..tune_seeds-1 (< this).
EVAL_SEED_START = 1000
TUNED_DIR = "tuned"
TUNED_FILE = "tuned.csv"
ALLOWED = "train.lr, train.weight_decay or variants.K.<field>"
CRITERION = (
    "median final validation loss over the tuning seeds (the median of its last 5% of logged "
    "points; a diverged seed counts as +inf); ties: the smaller value"
)
_VARIANT_KEY = re.compile(r"variants\.(\d+)\.([A-Za-z_][A-Za-z0-9_]*)")
_PER_VARIANT = {"train.lr": "lr", "train.weight_decay": "weight_decay"}


@dataclass(frozen=True)
class Protocol:
    """``--tune KEY --tune-seeds N --eval-seeds M``."""

    key: str
    tune_seeds: int = 5
    eval_seeds: int = 10

    @property
    def tuning(self) -> list[int]:
        return list(range(self.tune_seeds))

    @property
    def evaluation(self) -> list[int]:
        return [EVAL_SEED_START + i for i in range(self.eval_seeds)]

    def record(self) -> dict[str, Any]:
        return {
            "tune": self.key,
            "tune_seeds": self.tuning,
            "eval_seeds": self.evaluation,
            "criterion": CRITERION,
        }


def check_protocol(
    protocol: Protocol, keys: Sequence[str], random_keys: Sequence[str], base: ExperimentConfig,
    where: str,
) -> None:  # fmt: skip
    """The protocol fits the sweep: KEY is its one grid axis, settable per variant.

    Raises:
        ConfigError: one line naming the problem.
    """
    flag = ""
    if protocol.key not in keys or protocol.key in random_keys:
        shown = ", ".join(k for k in keys if k not in random_keys) or "none"
        raise ConfigError(where, flag, f"not a swept key (grid: {shown})")
    others = [k for k in keys if k != protocol.key]
    if others:
        raise ConfigError(
            where,
            flag,
            f"the tuned key must be the only swept key (also swept: {', '.join(others)})",
        )
    match = _VARIANT_KEY.fullmatch(protocol.key)
    if match is None and protocol.key not in _PER_VARIANT:
        raise ConfigError(where, flag, f"not settable per variant; tune {ALLOWED}")
    if match is not None and match.group(2) in ("name", "kind"):
        raise ConfigError(
            where, flag, f"variants.K.{match.group(2)} says which variant is which; tune a setting"
        )
    if match is not None and int(match.group(1)) >= len(base.variants):
        raise ConfigError(where, flag, f"there are {len(base.variants)} variants (0-based)")
    field_name = _PER_VARIANT.get(protocol.key)
    if field_name is not None:
        for i, v in enumerate(base.variants):
            if getattr(v, field_name) is not None:
                raise ConfigError(
                    where, flag, f"variants.{i}.{field_name} is set, so {protocol.key} does not "
                    f"reach variant {v.name}; remove it to tune it",
                )  # fmt: skip
    if not 1 <= protocol.tune_seeds <= EVAL_SEED_START:
        raise ConfigError(where, "tune seeds", f"must be from 1 to {EVAL_SEED_START}")
    if not 1 <= protocol.eval_seeds <= MAX_SEEDS:
        raise ConfigError(where, "eval seeds", f"must be from 1 to {MAX_SEEDS}")


def tuned_variants(key: str, variants: Sequence[str]) -> list[str]:
    """The variants KEY tunes: all of them, or variant K alone for ``variants.K.<field>``."""
    match = _VARIANT_KEY.fullmatch(key)
    return [variants[int(match.group(1))]] if match else list(variants)


def eval_overrides(key: str, variants: Sequence[str], chosen: Mapping[str, Any]) -> list[str]:
    """The ``--set`` overrides that put every tuned variant at its chosen value."""
    if _VARIANT_KEY.fullmatch(key):
        return [f"{key}={value_text(chosen[n])}" for n in chosen]
    field_name = _PER_VARIANT[key]
    return [
        f"variants.{i}.{field_name}={value_text(chosen[n])}"
        for i, n in enumerate(variants)
        if n in chosen
    ]


def select(values: Sequence[Any], finals: Sequence[Sequence[float]]) -> tuple[int, list[float]]:
    """The index of the chosen value and every candidate's criterion.

    ``finals[i]`` holds the per-seed final validation losses at ``values[i]``. The smallest
    median (``tuning.median_final``) wins; among equal medians the smaller value (the earlier
    one when values do not compare).
    """
    criteria = [median_final(f) for f in finals]

    def order(i: int) -> tuple[float, float, int]:
        v = values[i]
        size = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0
        return (criteria[i], size, i)

    return min(range(len(values)), key=order), criteria


def per_seed_val(summary: Mapping[str, Any], variant: str) -> list[float]:
    """A run's per-seed final validation loss of one variant (a diverged seed: +inf). Only
    validation: the test numbers of a tuning point are never read."""
    out = []
    for o in summary["variants"][variant].get("per_seed", []):
        value = o.get("final_val")
        diverged = o.get("diverged_at") is not None
        ok = isinstance(value, (int, float)) and math.isfinite(value) and not diverged
        out.append(float(value) if ok else math.inf)
    return out


@dataclass
class Choice:
    """Phase 1's outcome: each tuned variant's chosen value and every candidate's criterion."""

    chosen: dict[str, Any]
    criteria: dict[str, list[float]]


def choose(key: str, values: Sequence[Any], summaries: Sequence[Mapping[str, Any]]) -> Choice:
    """Each variant's choice from the points' summaries (one per value, in order)."""
    names = list(summaries[0]["variants"])
    chosen: dict[str, Any] = {}
    criteria: dict[str, list[float]] = {}
    for name in tuned_variants(key, names):
        index, crit = select(values, [per_seed_val(s, name) for s in summaries])
        chosen[name], criteria[name] = values[index], crit
    return Choice(chosen, criteria)


def eval_config(
    base_data: Mapping[str, Any],
    overrides: Sequence[str],
    protocol: Protocol,
    variants: Sequence[str],
    chosen: Mapping[str, Any],
) -> tuple[ExperimentConfig, list[str]]:
    """Phase 2's config (and its overrides): the base, fresh seeds, each variant's value."""
    tuning = f"seeds={value_text(protocol.tuning)}"  # phase 1's, replaced by fresh seeds
    sets = [
        *(o for o in overrides if o != tuning),
        f"seeds={value_text(protocol.evaluation)}",
        *eval_overrides(protocol.key, variants, chosen),
    ]
    return load_config(copy.deepcopy(dict(base_data)), sets), sets


def edge_notes(key: str, values: Sequence[Any], chosen: Mapping[str, Any]) -> list[str]:
    """A warning per variant whose choice is the smallest or largest numeric value tried:
    its best may lie beyond the grid."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != len(values) or len(values) < 2:
        return []
    lo, hi = min(numbers), max(numbers)
    return [
        f"{name}'s {key} {value_text(v)} is the {'largest' if v == hi else 'smallest'} value "
        "tried: its best may lie beyond the grid; widen it"
        for name, v in chosen.items()
        if v in (lo, hi)
    ]


# --------------------------------------------------------------------------------------------
# The headline and tuned.csv


def headline(
    key: str, chosen: Mapping[str, Any], summary: Mapping[str, Any], seeds: int
) -> list[str]:
    """One sentence per compared variant, e.g. 'at their best train.lr (fixed 3e-3, adaptive
    1e-3), adaptive wins against fixed on 8/10 fresh seeds; geometric-mean ratio of final test
    MSE 0.33 [0.20, 0.51, t interval]; Wilcoxon p = 0.01'."""
    at = ", ".join(f"{n} {value_text(v)}" for n, v in chosen.items())
    lines = []
    for c in summary.get("comparisons", []):
        pairs, wins = int(c.get("pairs") or 0), int(c.get("wins") or 0)
        losses = int(c["losses"]) if c.get("losses") is not None else pairs - wins
        words = outcome_words(c["variant"], c["baseline"], wins, losses, pairs, "fresh seeds")
        text = f"at their best {key} ({at}), {words}"
        if c.get("pairs") != seeds:
            text += f" (of {seeds}; the others diverged)"
        ratio, lo, hi = c.get("ratio_geomean"), c.get("ratio_ci_low"), c.get("ratio_ci_high")
        if isinstance(ratio, float) and math.isfinite(ratio):
            text += f"; geometric-mean ratio of final test MSE {ratio:.2g}"
            if isinstance(lo, float) and isinstance(hi, float) and math.isfinite(lo + hi):
                text += f" [{lo:.2g}, {hi:.2g}, t interval]"
        p = reported_p(c)
        if isinstance(p, float) and math.isfinite(p):
            text += f"; Wilcoxon p = {p:.2g}" + (" (Holm)" if (c.get("family") or 1) > 1 else "")
        lines.append(text)
    return lines


TUNED_COLUMNS_END = [
    "seeds",
    "diverged",
    "final_test_geomean",
    "test_at_best_val_geomean",
    *PAIRED_COLUMNS,
]


def tuned_rows(
    values: Sequence[Any], choice: Choice, summary: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """``tuned.csv``'s rows: per variant its choice, the criterion at each value, and the
    evaluation run's numbers."""
    from aaf_cli.sweeps.records import METRIC_COLUMNS, _fill

    names = list(summary["variants"]) if summary else list(choice.chosen)
    comparisons = {c["variant"]: c for c in (summary or {}).get("comparisons", [])}
    rows = []
    for name in names:
        row: dict[str, Any] = {"variant": name, "chosen": choice.chosen.get(name)}
        for value, crit in zip(values, choice.criteria.get(name, [None] * len(values))):
            row[f"criterion_at_{value_text(value)}"] = crit
        full: dict[str, Any] = {c: None for c in METRIC_COLUMNS}
        if summary is not None:
            full["baseline"] = summary["baseline"]
            _fill(full, summary, name, comparisons.get(name))
        row.update({c: full.get(c) for c in TUNED_COLUMNS_END})
        rows.append(row)
    return rows


def tuned_csv(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    line = (
        f"# aaf tuned baseline format 1; tuned key: {key}; chosen: the value with the smallest "
        f"criterion_at_<value> ({CRITERION}); the other columns: the evaluation run on fresh "
        "seeds (geometric means over seeds; ratio and p: paired by seed against the baseline, t "
        "interval on log ratios, Wilcoxon p, Holm-adjusted over the variants)"
    )
    columns = list(rows[0]) if rows else ["variant", "chosen"]
    out, writer = csv_buffer(line, columns)
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            if v is None:
                cells.append("")
            elif c == "chosen":
                cells.append(value_text(v))
            elif isinstance(v, float):
                cells.append(num_text(v) if math.isfinite(v) else ("inf" if v > 0 else ""))
            else:
                cells.append(str(v))
        writer.writerow(cells)
    return out.getvalue()


def write_tuned(
    sweep: Path,
    protocol: Protocol,
    values: Sequence[Any],
    choice: Choice,
    overrides: Sequence[str],
) -> dict[str, Any]:
    """Write ``tuned.csv`` from the evaluation run folder (if done); return sweep.yaml's
    ``tuned`` entry."""
    from aaf_cli.sweeps.records import DONE, point_status

    status = point_status(sweep / TUNED_DIR)
    summary = RunFolder(sweep / TUNED_DIR).summary if status in DONE else None
    rows = tuned_rows(values, choice, summary)
    write_atomic(sweep / TUNED_FILE, tuned_csv(rows, protocol.key))
    entry: dict[str, Any] = {
        "status": status,
        "folder": TUNED_DIR,
        "chosen": dict(choice.chosen),
        "criterion": {
            n: {value_text(v): c for v, c in zip(values, crit)}
            for n, crit in choice.criteria.items()
        },
        "overrides": list(overrides),
        "notes": edge_notes(protocol.key, values, choice.chosen),
    }
    if summary is not None:
        entry["verdict"] = headline(protocol.key, choice.chosen, summary, protocol.eval_seeds)
    return entry
