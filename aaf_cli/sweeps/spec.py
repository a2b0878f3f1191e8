"""A sweep: its file format, the command line's ``--grid``/``--random``, and its points.

A sweep file (``aaf sweep sweeps/elu_n.yaml``)::

    name: elu_n                      # the sweep folder's name (default: the file's stem)
    base: ../configs/elu.yaml        # a config, relative to this file; or an inline config: {...}
    set: {seeds: 5}                  # overrides of the base, as --set (before the command line's)
    grid:                            # every combination of these values
      variants.1.n: [1, 2, 5, 10, 20]
    random:                          # times `samples` random draws of these (from sweep_seed)
      train.lr: loguniform(1e-4, 1e-2)
    samples: 4
    sweep_seed: 0

Keys are config key paths as ``--set`` takes them (list items by index). A file is a sweep
file when its top level has any of ``base``, ``config``, ``grid``, ``random``, ``samples`` or
``protocol``; otherwise it is an experiment config, the base of a sweep given on the command
line. Every point is built and validated here, before anything runs: a bad point is one
``ConfigError`` naming it and its values.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aaf_cli.config import DEFAULT_SOURCE, ExperimentConfig, _show, load_config
from aaf_cli.errors import ConfigError
from aaf_cli.problems import absolute_paths
from aaf_cli.schema import NAME_PATTERN
from aaf_cli.yamlfile import Located, one_line, parse_override, parse_yaml, read_text

if TYPE_CHECKING:
    from aaf_cli.sweeps.tuned import Protocol

#: Most points one sweep may have (a typo such as samples: 1e6 is refused before anything).
MAX_POINTS = 10_000
#: Top-level keys that make a YAML file a sweep file rather than an experiment config.
SWEEP_MARKERS = ("base", "config", "grid", "random", "samples", "protocol")
DISTRIBUTIONS = {
    "loguniform": "loguniform(LO,HI)",
    "uniform": "uniform(LO,HI)",
    "choice": "choice(a,b,...)",
}
#: Significant digits of a random draw from uniform/loguniform.
DIGITS = 4
# YAML 1.1 (PyYAML) reads 1e-3 as a string: it wants a dot and a signed exponent.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_DISTRIBUTION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$", re.DOTALL)


class ProtocolSpec(BaseModel):
    """``protocol: {tune: train.lr, tune_seeds: 5, eval_seeds: 10}`` (``sweeps.tuned``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tune: str
    tune_seeds: int = Field(5, ge=1, le=1000)
    eval_seeds: int = Field(10, ge=1, le=4096)


class SweepSpec(BaseModel):
    """The keys of a sweep file (unknown keys are errors, as in a config)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str | None = Field(None, pattern=NAME_PATTERN)
    base: str | None = Field(None, description="a config file, relative to the sweep file")
    config: dict[str, Any] | None = Field(None, description="an inline experiment config")
    set: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the base config, as --set KEY=VALUE"
    )
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    random: dict[str, str] = Field(default_factory=dict)
    samples: int | None = Field(None, ge=1, le=MAX_POINTS)
    sweep_seed: int = Field(0, ge=0, le=2**63 - 1)
    protocol: ProtocolSpec | None = None


# --------------------------------------------------------------------------------------------
# Values and distributions


def fix_number(value: Any) -> Any:
    """``1e-3`` as the float it means (YAML 1.1 leaves it a string); tuples as lists (as YAML
    has them), recursively; anything else unchanged."""
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [fix_number(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): fix_number(v) for k, v in value.items()}
    return value


def _lists(value: Any) -> Any:
    """Tuples as lists, recursively: the data as YAML writes and reads it."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _lists(v) for k, v in value.items()}
    return value


def parse_value(text: str, where: str, key: str) -> Any:
    """One value as YAML (a scalar, or a flow list/mapping), ``1e-3`` read as a number."""
    try:
        return fix_number(yaml.safe_load(text)) if text.strip() else None
    except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise ConfigError(where, key, f"{text.strip()!r} is not a valid YAML value") from None


def value_text(value: Any) -> str:
    """The value as ``--set`` takes it: YAML on one line that reads back as the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000, sort_keys=False)
    text = text.removesuffix("\n...\n").strip()
    return text


def short_text(value: Any, most: int = 40) -> str:
    text = value_text(value)
    return text if len(text) <= most else text[: most - 3] + "..."


@dataclass(frozen=True)
class Distribution:
    """A random axis: ``loguniform(LO,HI)``, ``uniform(LO,HI)`` or ``choice(a,b,...)``."""

    kind: str
    args: tuple[Any, ...]

    def sample(self, rng: random.Random) -> Any:
        """One draw; ``LO <= value <= HI`` for the continuous ones, rounded to
        ``DIGITS`` significant digits (a value that reads, and reruns, as written)."""
        u = rng.random()  # one uniform per draw: the sequence is stable across Python versions
        if self.kind == "choice":
            return copy.deepcopy(self.args[min(int(u * len(self.args)), len(self.args) - 1)])
        lo, hi = float(self.args[0]), float(self.args[1])
        if self.kind == "uniform":
            value = lo + (hi - lo) * u
        else:
            value = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)
        return min(max(float(f"{value:.{DIGITS}g}"), lo), hi)

    def text(self) -> str:
        return f"{self.kind}({', '.join(value_text(a) for a in self.args)})"


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets and quotes: ``a, [1, 2], {k: v}`` -> 3 items."""
    parts: list[str] = []
    depth, quote, current = 0, "", ""
    for c in text:
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += c
    parts.append(current)
    return parts


def parse_distribution(text: str, where: str, key: str) -> Distribution:
    """``loguniform(1e-4,1e-2)``, ``uniform(0,1)`` or ``choice(a,b,...)``, checked."""
    match = _DISTRIBUTION.match(str(text))
    valid = ", ".join(DISTRIBUTIONS.values())
    if match is None:
        raise ConfigError(where, key, f"expected a distribution, one of {valid} (got {text!r})")
    kind, inner = match.group(1), match.group(2)
    if kind not in DISTRIBUTIONS:
        close = difflib.get_close_matches(kind, list(DISTRIBUTIONS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(where, key, f"unknown distribution '{kind}'{hint} (valid: {valid})")
    items = [p.strip() for p in _split_top(inner)]
    if kind == "choice":
        if not inner.strip() or any(not p for p in items):
            raise ConfigError(where, key, f"choice needs values: choice(a,b,...) (got {text!r})")
        values = tuple(parse_value(p, where, key) for p in items)
        if len({value_text(v) for v in values}) != len(values):
            raise ConfigError(where, key, f"choice values repeat (got {text!r})")
        return Distribution(kind, values)
    try:
        lo, hi = (float(p) for p in items)
    except ValueError:
        raise ConfigError(
            where, key, f"{kind} needs two numbers: {DISTRIBUTIONS[kind]} (got {text!r})"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ConfigError(where, key, f"{kind} needs LO < HI, both finite (got {text!r})")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(where, key, f"loguniform needs 0 < LO < HI (got {text!r})")
    return Distribution(kind, (lo, hi))


# --------------------------------------------------------------------------------------------
# Command-line axes


def _key(key: str, where: str) -> str:
    key = key.strip()
    if not key:
        raise ConfigError(where, "", "expected KEY=VALUES, e.g. train.lr=1e-3,1e-2")
    try:
        parse_override(f"{key}=0")
    except ConfigError as exc:
        raise ConfigError(where, key, exc.message) from None
    return key


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """``--grid KEY=V1,V2,...`` (values YAML scalars) or ``--grid KEY=[V1, V2]`` (a flow list)."""
    where = f"--grid {text}"
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(where, "", "expected KEY=V1,V2,..., e.g. --grid train.lr=1e-3,1e-2")
    key = _key(key, where)
    raw = raw.strip()
    # One flow list is the list of values ([1e-3, 1e-2]); several at the top level are values
    # of a list-valued key ([1,8,1],[1,16,1] for model.layers).
    if raw.startswith("[") and len(_split_top(raw)) == 1:
        values = parse_value(raw, where, key)
        if not isinstance(values, list):
            raise ConfigError(where, key, f"expected a list of values (got {raw!r})")
        values = [fix_number(v) for v in values]
    else:
        parts = [p.strip() for p in _split_top(raw)] if raw else []
        if any(not p for p in parts):
            raise ConfigError(where, key, "an empty value between commas")
        values = [parse_value(p, where, key) for p in parts]
    return key, values


def parse_random_option(text: str) -> tuple[str, str]:
    """``--random KEY=loguniform(LO,HI)`` (checked here; drawn when the points are made)."""
    where = f"--random {text}"
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(
            where, "", "expected KEY=loguniform(LO,HI), uniform(LO,HI) or choice(...)"
        )
    key = _key(key, where)
    parse_distribution(raw, where, key)
    return key, raw.strip()


def options(texts: Sequence[str], parse: Any, flag: str) -> dict[str, Any]:
    """Repeated ``--grid``/``--random`` options as one mapping; a key given twice is an error."""
    out: dict[str, Any] = {}
    for text in texts:
        key, value = parse(text)
        if key in out:
            raise ConfigError(f"{flag} {text}", key, f"given twice by {flag}")
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# The plan: axes, points, configs


@dataclass(frozen=True)
class Axis:
    """A swept key: a grid of values, or a distribution drawn ``samples`` times."""

    key: str
    kind: str  # "grid" or "random"
    values: tuple[Any, ...] = ()
    distribution: Distribution | None = None

    def record(self) -> dict[str, Any]:
        if self.distribution is not None:
            return {"key": self.key, "kind": self.kind, "distribution": self.distribution.text()}
        return {"key": self.key, "kind": self.kind, "values": list(self.values)}


@dataclass(frozen=True)
class Point:
    """One experiment of the sweep: the swept keys' values."""

    index: int
    values: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        """The values as ``--set`` overrides (what the point's config.yaml records)."""
        return [f"{k}={value_text(v)}" for k, v in self.values.items()]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={short_text(v)}" for k, v in self.values.items())


@dataclass
class SweepPlan:
    """A sweep with every point built and validated: what the executor runs.

    ``base_data`` is the base config as given (before ``overrides``), from which each point's
    config is rebuilt; it is kept in ``sweep.yaml`` so a resumed sweep needs no other file.
    """

    source: str
    name: str
    base_source: str
    base_data: dict[str, Any]
    overrides: list[str]
    axes: list[Axis]
    samples: int | None
    sweep_seed: int
    base: ExperimentConfig
    points: list[Point]
    configs: list[ExperimentConfig]
    protocol: Protocol | None = None
    # The tuned protocol's evaluation run as planned (at the first values; the chosen ones
    # differ only in per-variant settings, so its size is the same): checked and sized too.
    evaluation: ExperimentConfig | None = None

    @property
    def keys(self) -> list[str]:
        return [a.key for a in self.axes]

    def point_overrides(self, index: int) -> list[str]:
        """Every ``--set`` that makes point ``index`` from the base config, in order."""
        return [*self.overrides, *self.points[index].overrides]

    def where(self, point: Point) -> str:
        return f"{self.source}: point {point.index} ({point.label})"


def default_name(base: ExperimentConfig, axes: Sequence[Axis]) -> str:
    """A sweep's name when none is given: the config's, then what it sweeps, by each key's
    last part (``elu-n-lr`` for ``variants.1.n`` and ``train.lr``; ``elu-n1-n2`` when two
    keys end alike), so that sweeps of one config tell apart in ``aaf list``."""
    parts = [a.key.split(".") for a in axes]
    leaves = [p[-1] for p in parts]
    words = [
        leaf + (p[-2] if leaves.count(leaf) > 1 and len(p) > 1 and p[-2].isdigit() else "")
        for leaf, p in zip(leaves, parts)
    ]
    name = "-".join([base.name, *(re.sub(r"[^A-Za-z0-9_-]+", "_", w) for w in words)])
    return name[:64].rstrip("-_") if axes else f"{base.name}-sweep"


def _spec_error(exc: ValidationError, source: str, located: Located) -> ConfigError:
    error = exc.errors()[0]
    loc = [p for p in error["loc"]]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if error["type"] == "extra_forbidden":
        key = str(loc[-1])
        nested = len(loc) > 1 and loc[0] == "protocol"
        valid = list((ProtocolSpec if nested else SweepSpec).model_fields)
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        message = f"unknown key '{key}'{hint} (valid keys: {', '.join(valid)})"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        if "input" in error and not isinstance(error["input"], (dict, list)):
            message += f" (got {_show(error['input'])})"
    mark = located.find(loc) or (None, None)
    dotted = one_line(".".join(str(p) for p in loc))
    return ConfigError(source, dotted, one_line(message + more), *mark)


def _is_sweep(data: Any) -> bool:
    return isinstance(data, Mapping) and any(k in data for k in SWEEP_MARKERS)


def read_spec(data: Mapping[str, Any], source: str, located: Located) -> SweepSpec:
    """Validate a sweep file's keys."""
    try:
        spec = SweepSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise _spec_error(exc, source, located) from None
    if spec.base is not None and spec.config is not None:
        mark = located.find(["config"]) or (None, None)
        raise ConfigError(
            source, "config", "give base: (a file) or config: (inline), not both", *mark
        )
    for key, values in spec.grid.items():
        where_key = f"grid.{key}"
        _key(key, source)
        if not values:
            mark = located.find(["grid", key]) or (None, None)
            raise ConfigError(source, where_key, "an empty list of values", *mark)
    for key, text in spec.random.items():
        _key(key, source)
        parse_distribution(text, source, f"random.{key}")
    for key in spec.set:
        _key(key, source)
    return spec


def _overlap(a: str, b: str) -> bool:
    """One key path lies inside the other (``train`` and ``train.lr``): setting both is
    ambiguous, since whichever comes last wins."""
    return a != b and (a.startswith(b + ".") or b.startswith(a + "."))


def _check_grid(key: str, values: Sequence[Any], where: str, shown: str) -> tuple[Any, ...]:
    if not values:
        raise ConfigError(where, shown, "an empty list of values")
    texts = [value_text(v) for v in values]
    repeated = next((t for i, t in enumerate(texts) if t in texts[:i]), None)
    if repeated is not None:
        raise ConfigError(where, shown, f"value {repeated} is given twice")
    return tuple(values)


def plan_sweep(
    target: ExperimentConfig | str | Path | Mapping[str, Any] | None = None,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    random_axes: Mapping[str, str] | None = None,
    samples: int | None = None,
    sweep_seed: int | None = None,
    overrides: Sequence[str] = (),
    name: str | None = None,
    tune: str | None = None,
    tune_seeds: int | None = None,
    eval_seeds: int | None = None,
) -> SweepPlan:
    """Read a sweep (a sweep file, or a base config with axes) and build every point.

    Args:
        target: a sweep file or a mapping with its keys; an experiment config (file, mapping or
            ``ExperimentConfig``) as the base; None for the built-in default experiment.
        grid: more grid axes (``{"train.lr": [1e-3, 1e-2]}``); a key the file's grid has too
            is an error.
        random_axes: more random axes (``{"train.lr": "loguniform(1e-4,1e-2)"}``).
        samples: random draws (over the file's ``samples``); needs a random axis.
        sweep_seed: the seed of the draws (over the file's ``sweep_seed``; default 0).
        overrides: ``--set`` overrides of the base config.
        name: the sweep's name (default: the file's ``name``, its stem, or ``<base>-sweep``).
        tune: the tuned-baseline protocol's key (over the file's ``protocol.tune``); its
            points then run on the tuning seeds (``sweeps.tuned``).
        tune_seeds: tuning seeds (default: the file's, else 5).
        eval_seeds: evaluation seeds (default: the file's, else 10).

    Raises:
        ConfigError: one line naming the file or option, the key and the problem; for a bad
            point, ``<source>: point 7 (train.lr=-1): train.lr: <problem>``.
    """
    spec = SweepSpec()
    base_input: Any = None
    base_source = DEFAULT_SOURCE
    sweep_file: Path | None = None
    source = DEFAULT_SOURCE
    if isinstance(target, ExperimentConfig):
        base_input, base_source, source = (
            target.to_data(),
            "<ExperimentConfig>",
            "<ExperimentConfig>",
        )
    elif isinstance(target, Mapping):
        source = "<mapping>"
        if _is_sweep(target):
            spec = read_spec(target, source, Located())
        else:
            base_input, base_source = _lists(dict(target)), source
    elif target is not None:
        source = str(target)
        data, located = parse_yaml(read_text(Path(target)), source)
        if _is_sweep(data):
            spec = read_spec(data, source, located)
            sweep_file = Path(target)
        else:
            base_input, base_source = Path(target), source
    if spec.base is not None:
        folder = sweep_file.parent if sweep_file is not None else Path()
        base_input = Path(os.path.normpath(folder / spec.base))
        base_source = str(base_input)
    elif spec.config is not None:
        base_input, base_source = copy.deepcopy(spec.config), f"{source}: config"
        if sweep_file is not None:  # its file paths are read from the sweep file's folder
            absolute_paths(base_input, sweep_file.parent)

    # The file's set: first, then the command line's --set (the later one wins).
    overrides = [*(f"{k}={value_text(fix_number(v))}" for k, v in spec.set.items()), *overrides]
    protocol = _protocol(spec, tune, tune_seeds, eval_seeds, source)
    if protocol is not None:  # the tuning points run on the tuning seeds (this wins last)
        overrides.append(f"seeds={value_text(protocol.tuning)}")
    # The base alone must be a valid config (its errors are told as they are, with lines).
    try:
        base = load_config(base_input, overrides)
    except ConfigError as exc:
        if base_input is not None and not isinstance(base_input, Path):
            raise ConfigError(
                exc.source.replace("<mapping>", base_source, 1), exc.key, exc.message
            ) from None
        raise
    if isinstance(base_input, Path):
        raw, _ = parse_yaml(read_text(base_input), base_source)
        base_data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        absolute_paths(base_data, base_input.parent)
    else:
        base_data = dict(base_input or {})

    # Axes: the file's, then the command line's; a key may be swept once.
    axes: list[Axis] = []
    swept: dict[str, str] = {}

    def add(axis: Axis, where: str) -> None:
        if axis.key in swept:
            raise ConfigError(where, axis.key, f"is swept twice (also by {swept[axis.key]})")
        for other in swept:
            if _overlap(axis.key, other):
                raise ConfigError(
                    where, axis.key, f"overlaps the swept key {other}: sweep one or the other"
                )
        swept[axis.key] = where
        axes.append(axis)

    for key, values in spec.grid.items():
        vals = [fix_number(v) for v in values]
        add(Axis(key, "grid", _check_grid(key, vals, source, f"grid.{key}")), f"{source} grid")
    for key, given in (grid or {}).items():
        key = _key(key, "grid")
        if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
            raise ConfigError("grid", key, f"expected a list of values (got {given!r})")
        vals = [fix_number(v) for v in given]
        add(Axis(key, "grid", _check_grid(key, vals, "--grid", key)), "--grid")
    for key, text in spec.random.items():
        add(Axis(key, "random", distribution=parse_distribution(text, source, f"random.{key}")),
            f"{source} random")  # fmt: skip
    for key, text in (random_axes or {}).items():
        key = _key(key, "random")
        add(
            Axis(key, "random", distribution=parse_distribution(text, "--random", key)),
            "--random",
        )
    n_samples = samples if samples is not None else spec.samples
    randoms = [a for a in axes if a.kind == "random"]
    if protocol is not None and axes:
        from aaf_cli.sweeps.tuned import check_protocol

        check_protocol(
            protocol, [a.key for a in axes], [a.key for a in axes if a.kind == "random"], base,
            f"--tune {protocol.key}" if tune is not None else f"{source}: protocol.tune",
        )  # fmt: skip
    if not axes:
        raise ConfigError(
            source,
            "",
            "nothing to sweep: give --grid KEY=V1,V2,... or --random KEY=loguniform(LO,HI) "
            "--samples N, or a sweep file with grid: or random:",
        )
    if n_samples is not None and not randoms:
        raise ConfigError(
            source, "samples", f"samples ({n_samples}) needs a random axis (--random or random:)"
        )
    if randoms and n_samples is None:
        raise ConfigError(source, "samples", "random axes need samples: N (--samples N)")
    if n_samples is not None and not 1 <= n_samples <= MAX_POINTS:
        raise ConfigError(source, "samples", f"must be from 1 to {MAX_POINTS} (got {n_samples})")
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key in swept:
            raise ConfigError(f"--set {text}", key, "is also swept; set it or sweep it")
        clash = next((k for k in swept if _overlap(key, k)), None)
        if clash is not None:
            raise ConfigError(
                f"--set {text}", key, f"overlaps the swept key {clash}: set one or the other"
            )
    seed = sweep_seed if sweep_seed is not None else spec.sweep_seed
    if not 0 <= seed <= 2**63 - 1:
        raise ConfigError(source, "sweep_seed", f"must be from 0 to 2**63-1 (got {seed})")

    grids = [a for a in axes if a.kind == "grid"]
    count = math.prod(len(a.values) for a in grids) * (n_samples or 1)
    if count > MAX_POINTS:
        raise ConfigError(source, "", f"{count} points: at most {MAX_POINTS} in one sweep")
    rng = random.Random(seed)
    draws = [
        {a.key: a.distribution.sample(rng) for a in randoms if a.distribution is not None}
        for _ in range(n_samples or 1)
    ]
    points: list[Point] = []
    for combo in itertools.product(*(a.values for a in grids)):
        for draw in draws:
            chosen = {a.key: copy.deepcopy(v) for a, v in zip(grids, combo)}
            chosen.update(draw)
            # In the order the axes were given (grid keys may follow random ones in a mapping).
            points.append(Point(len(points), {a.key: chosen[a.key] for a in axes}))

    untuned = untuned_override(protocol is not None, [a.key for a in axes], overrides)
    if untuned is not None:
        overrides = [*overrides, untuned]
        base = load_config(copy.deepcopy(base_data), overrides)
    plan = SweepPlan(
        source=source,
        name=name or spec.name or (sweep_file.stem if sweep_file else default_name(base, axes)),
        base_source=base_source,
        base_data=base_data,
        overrides=list(overrides),
        axes=axes,
        samples=n_samples,
        sweep_seed=seed,
        base=base,
        points=points,
        configs=[],
        protocol=protocol,
    )
    if not re.fullmatch(NAME_PATTERN, plan.name):
        raise ConfigError(
            "--name" if name else source,
            "name",
            f"letters, digits, - and _ only, at most 64 characters (got {plan.name!r})",
        )
    plan.configs = build_configs(plan)
    if protocol is not None:  # phase 2's config must be valid too (at the first values)
        from aaf_cli.sweeps.tuned import eval_config, tuned_variants

        names = [v.name for v in base.variants]
        first = {n: axes[0].values[0] for n in tuned_variants(protocol.key, names)}
        try:
            plan.evaluation = eval_config(base_data, plan.overrides, protocol, names, first)[0]
        except ConfigError as exc:
            raise ConfigError(f"{source}: evaluation run", exc.key, exc.message) from None
    return plan


def _protocol(
    spec: SweepSpec, tune: str | None, tune_seeds: int | None, eval_seeds: int | None,
    source: str,
) -> Protocol | None:  # fmt: skip
    given = spec.protocol
    key = tune if tune is not None else (given.tune if given is not None else None)
    if key is None:
        if tune_seeds is not None or eval_seeds is not None:
            raise ConfigError(source, "--tune", "--tune-seeds/--eval-seeds need --tune KEY")
        return None
    n_tune = tune_seeds if tune_seeds is not None else (given.tune_seeds if given else 5)
    n_eval = eval_seeds if eval_seeds is not None else (given.eval_seeds if given else 10)
    from aaf_cli.schema import MAX_SEEDS
    from aaf_cli.sweeps.tuned import EVAL_SEED_START

    # Checked here, before the points' seeds are built from them (an empty seed list would
    # blame a --set the user never wrote).
    for flag, n, most in (("--tune-seeds", n_tune, EVAL_SEED_START), ("--eval-seeds", n_eval,
                          MAX_SEEDS)):  # fmt: skip
        if not 1 <= n <= most:
            raise ConfigError(source, flag, f"must be from 1 to {most} (got {n})")
    from aaf_cli.sweeps.tuned import Protocol

    return Protocol(key.strip(), n_tune, n_eval)


_LR_KEY = re.compile(r"(train|variants\.\d+)\.lr")


def untuned_override(protocol: bool, swept: Sequence[str], overrides: Sequence[str]) -> str | None:
    """``tune=off`` where a sweep's points must train at the rates they are given: the tuned
    protocol (it is the tuning) and a sweep over a learning rate; None where the points keep
    their config's ``tune`` (or the user set it)."""
    given = [o.partition("=")[0].strip() for o in overrides]
    if any(k == "tune" or k.startswith("tune.") for k in [*given, *swept]):
        return None
    if protocol or any(_LR_KEY.fullmatch(k) for k in swept):
        return "tune=off"
    return None


def build_configs(plan: SweepPlan) -> list[ExperimentConfig]:
    """Every point's config, validated; the first bad point raises (naming its values)."""
    configs = []
    for point in plan.points:
        try:
            configs.append(
                load_config(copy.deepcopy(plan.base_data), plan.point_overrides(point.index))
            )
        except ConfigError as exc:
            raise ConfigError(plan.where(point), exc.key, exc.message) from None
    return configs
