"""What variants and targets are called: default variant names, legend labels, target text.

Torch-free and pydantic-free: everything works on the plain mappings a config dumps to (and a run
folder's ``config.yaml`` holds), so a run read back from disk is labelled the same way as the run
that wrote it.

A variant without a ``name`` is named after what it is: its kind plus the settings that differ
from the kind's defaults (``global-n5``, ``layer-sr``, ``fixed-tanh``). Where several unnamed
variants share a kind, the settings that differ between them are named too, defaults included
(``global-n5`` and ``global-n10``); identical ones are numbered (``fixed-1``, ``fixed-2``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NAME_LIMIT = 60  # NAME_PATTERN allows 64; room is left for a "-NN" suffix
TEXT_LIMIT = 70  # characters of a target's expression shown in a title

# Settings shown even at their default value: without them "global" does not say what it is.
ALWAYS_SHOWN = {"n", "K"}
# The order settings are written in; any other setting follows in the config's order.
ORDER = (
    "activation", "n", "a0", "K", "slope_recovery", "beta0", "degrees", "lr", "weight_decay",
    "layers",
)  # fmt: skip
SHORT = {"weight_decay": "wd"}  # a long key's name in names and legends


@dataclass(frozen=True)
class Part:
    """One setting of a variant: how a legend writes it and how a name writes it."""

    key: str
    text: str  # "n=10"
    token: str  # "n10": letters, digits, '_' only, safe in file names
    default: bool  # the kind's default value


def _number(value: float) -> str:
    return f"{value:g}"


def _token_number(value: float) -> str:
    # Names allow [A-Za-z0-9_-] only: 0.025 -> 0p025, 1e+06 -> 1e06, -0.5 -> m0p5.
    return _number(value).replace("+", "").replace(".", "p").replace("-", "m")


def _defaults(kind: str) -> dict[str, Any]:
    """The kind's default settings, as the config dumps them (JSON mode)."""
    # Imported here: config.py imports this module to name variants while it validates them.
    from aaf_cli.config import VARIANT_CLASSES

    cls = VARIANT_CLASSES.get(kind)
    if cls is None:
        return {}
    out: dict[str, Any] = {}
    for key, field in cls.model_fields.items():
        if field.is_required():
            continue
        value = field.get_default(call_default_factory=True)
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _part(key: str, value: Any, entry: Mapping[str, Any]) -> tuple[str, str] | None:
    """(text, token) of one setting, or None where the value says nothing (a0 = 1/n)."""
    if value is None:
        return None
    if key == "activation":
        return str(value), str(value)
    if key == "a0" and entry.get("kind") in ("global", "layer", "neuron"):
        n = entry.get("n")
        if isinstance(n, (int, float)) and math.isclose(float(value) * n, 1.0, rel_tol=1e-12):
            return None  # the default start, n * a0 = 1, written out
    if key == "slope_recovery" and isinstance(value, Mapping):
        weight = float(value.get("weight", 1.0))
        code = value.get("form") == "code"
        text = ("code-form " if code else "") + "slope recovery"
        text += f" w={_number(weight)}" if weight != 1.0 else ""
        token = "sr" + (_token_number(weight) if weight != 1.0 else "")
        return text, token + ("_code" if code else "")
    if key == "degrees" and isinstance(value, (list, tuple)) and len(value) == 2:
        return f"degrees {value[0]}/{value[1]}", f"p{value[0]}q{value[1]}"
    if key == "layers" and isinstance(value, (list, tuple)):
        widths = "x".join(str(w) for w in value)
        return f"layers {widths}", f"layers{widths}"
    if isinstance(value, bool):
        return f"{key}={value}", f"{key}_{str(value).lower()}"
    if isinstance(value, (int, float)):
        short = SHORT.get(key, key)
        sep = "_" if short[-1:].isdigit() else ""  # a0=0.2 -> a0_0p2, not a00p2
        return f"{short}={_number(value)}", f"{short}{sep}{_token_number(value)}"
    if isinstance(value, str):
        return f"{key}={value}", f"{key}_{re.sub(r'[^A-Za-z0-9_]', '_', value)}"
    return key, key  # a nested setting not known here: named, not spelled out


def variant_parts(entry: Mapping[str, Any]) -> list[Part]:
    """Every setting that says what the variant is, in a fixed order (kind and name left out)."""
    kind = str(entry.get("kind", ""))
    defaults = _defaults(kind)
    keys = [k for k in ORDER if k in entry]
    keys += [k for k in entry if k not in ORDER and k not in ("kind", "name")]
    parts = []
    for key in keys:
        value = entry[key]
        is_default = key in defaults and _same(value, defaults[key])
        if is_default and key not in ALWAYS_SHOWN:
            continue
        shown = _part(key, value, entry)
        if shown is not None:
            parts.append(Part(key, shown[0], shown[1], is_default))
    return parts


def describe_variant(entry: Mapping[str, Any]) -> str:
    """'global, n=10', 'layer, n=10, slope recovery', 'fixed, lr=0.025'."""
    return ", ".join([str(entry.get("kind", "?")), *(p.text for p in variant_parts(entry))])


def _says(name: str, token: str) -> bool:
    """Whether ``name`` holds ``token`` as a whole '-'/'_'-separated piece."""
    pattern = rf"(^|[-_]){re.escape(token.lower())}($|[-_])"
    return re.search(pattern, name.lower()) is not None


def variant_label(name: str, entry: Mapping[str, Any]) -> str:
    """The legend text of a variant: its name, then in brackets whatever of its description the
    name does not already say: 'adaptive (global, n=10)', 'global (n=10)', 'global-n5', 'fixed'."""
    kind = str(entry.get("kind", ""))
    missing = [] if not kind or _says(name, kind) else [kind]
    missing += [p.text for p in variant_parts(entry) if not _says(name, p.token)]
    return f"{name} ({', '.join(missing)})" if missing else name


def _fit(name: str) -> str:
    return name if len(name) <= NAME_LIMIT else name[:NAME_LIMIT].rstrip("-_")


def default_names(entries: Sequence[Mapping[str, Any]], given: Sequence[str | None]) -> list[str]:
    """Names for every variant: the given ones kept, the others made from what they are.

    Args:
        entries: each variant's settings (as dumped), ``kind`` included.
        given: each variant's explicit name, or None where the config gave none.

    Returns:
        One name per variant, unique among themselves and the given ones.
    """
    names: list[str | None] = list(given)
    taken = {n for n in given if n is not None}
    unnamed = [i for i, n in enumerate(given) if n is None]
    parts = {i: variant_parts(entries[i]) for i in unnamed}
    by_kind: dict[str, list[int]] = {}
    for i in unnamed:
        by_kind.setdefault(str(entries[i].get("kind", "variant")), []).append(i)
    candidates: dict[int, str] = {}
    for kind, members in by_kind.items():
        # Where a kind appears more than once, the settings that tell its members apart are
        # named even at their default (global-n5 next to global-n10, not next to global).
        tokens = [{p.key: p.token for p in parts[i]} for i in members]
        keys = {k for t in tokens for k in t}
        differ = {k for k in keys if len({t.get(k) for t in tokens}) > 1}
        for i in members:
            chosen = [p.token for p in parts[i] if not p.default or p.key in differ]
            candidates[i] = _fit("-".join([kind, *chosen]))
    groups: dict[str, list[int]] = {}
    for i in unnamed:
        groups.setdefault(candidates[i], []).append(i)
    clashing = []
    for candidate, members in groups.items():
        if len(members) == 1 and candidate not in taken:
            names[members[0]] = candidate
            taken.add(candidate)
        else:
            clashing.append((candidate, members))
    for candidate, members in clashing:
        # Identical unnamed variants are numbered from 1; one that meets a given name from 2.
        k = 1 if len(members) > 1 else 2
        for i in members:
            while f"{candidate}-{k}" in taken:
                k += 1
            name = f"{candidate}-{k}"
            names[i] = name
            taken.add(name)
    return [n for n in names if n is not None]


def shorten(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def target_text(target: Mapping[str, Any], limit: int = TEXT_LIMIT) -> str:
    """The target as a title says it: 'sine(x) = sin(freq x), freq=2', 'y = sin(3*x)*x', or for a
    piecewise target 'y = a if x <= 0; b otherwise' (long expressions cut with an ellipsis)."""
    name, expr, pieces = target.get("name"), target.get("expr"), target.get("piecewise")
    if expr:
        return "y = " + shorten(str(expr), limit)
    if pieces:
        texts = [
            f"{p.get('expr')} if {p['when']}" if p.get("when") else f"{p.get('expr')} otherwise"
            for p in pieces
            if isinstance(p, Mapping)
        ]
        return "y = " + shorten("; ".join(texts), limit)
    if not name:
        return "?"
    from aaf_cli.targets import TARGETS

    spec = TARGETS.get(str(name))
    if spec is None:
        return str(name)
    params = target.get("params") or {}
    given = ", ".join(
        f"{k}={_number(v) if isinstance(v, (int, float)) else list(v)}" for k, v in params.items()
    )
    return f"{name}(x) = {shorten(spec.formula, limit)}" + (f", {given}" if given else "")
