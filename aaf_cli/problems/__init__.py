"""The problems a run can fit, and the registry that names them (``base`` says what one gives).

* ``expression``: a named formula or your own expression of x (``target: {name: sine}``);
* ``data``: your own measurements, a CSV, NPZ or Parquet file (``target: {data: file.csv}``);
* ``pde``: a physics-informed problem, a differential equation with its conditions (``pde:``).

This module is the only place outside a problem's own modules that knows the kinds: the config
takes its problem sections from ``ProblemSections``, and everything else asks ``problem_of``
(a live config) or ``section_of`` (a stored one). Importing it imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Discriminator, Field, SerializerFunctionWrapHandler, Tag, model_serializer

from aaf_cli.problems.base import MSE_FACTS, Facts, Problem, ProblemSection, Size
from aaf_cli.problems.data_spec import DataTargetConfig
from aaf_cli.problems.expression_spec import TargetConfig
from aaf_cli.problems.pde.spec import PdeConfig
from aaf_cli.schema import Strict

if TYPE_CHECKING:
    from aaf_cli.config import ExperimentConfig

__all__ = [
    "KINDS",
    "MSE_FACTS",
    "SECTIONS",
    "DataTargetConfig",
    "Facts",
    "PdeConfig",
    "Problem",
    "ProblemSection",
    "ProblemSections",
    "Size",
    "TargetConfig",
    "absolute_paths",
    "facts_of",
    "problem_label",
    "problem_of",
    "problem_title",
    "section_of",
    "summary_facts",
]


#: Every problem section, by the config key it is given under, in the order the keys are
#: looked for (the first present poses the problem; ``target:`` is the default), each key's
#: kinds in the order they are asked whether a section is theirs (``claims``).
SECTIONS: dict[str, tuple[type[ProblemSection], ...]] = {
    "pde": (PdeConfig,),
    "target": (DataTargetConfig, TargetConfig),
}

#: Every kind of problem by the name a summary records (``summary.json``'s ``problem``).
KINDS: dict[str, type[ProblemSection]] = {
    cls.kind: cls for classes in SECTIONS.values() for cls in classes
}


def _kind_of(key: str, section: Mapping[str, Any]) -> type[ProblemSection]:
    """The kind of a raw section given under ``key``: the first of the key's kinds to claim it."""
    return next(cls for cls in SECTIONS[key] if cls.claims(section))


def _target_tag(value: Any) -> str:
    """Which kind a ``target:`` is (the tag of its union member)."""
    if isinstance(value, Mapping):
        return _kind_of("target", value).kind
    kind = getattr(value, "kind", None)  # a validated section; anything else is refused
    return kind if isinstance(kind, str) else TargetConfig.kind  # as not a mapping


#: The ``target:`` section: an expression target or a data file (error paths name neither tag).
Target = Annotated[
    Annotated[TargetConfig, Tag(TargetConfig.kind)]
    | Annotated[DataTargetConfig, Tag(DataTargetConfig.kind)],
    Discriminator(_target_tag),
]


class ProblemSections(Strict):
    """The sections that pose a config's problem: ``target:`` (an expression or a data file)
    or ``pde:``. ``ExperimentConfig`` inherits them."""

    target: Target = Field(
        default_factory=lambda: TargetConfig.model_validate({}),
        description="what the networks fit: a named target, your own expression, or a data "
        "file (target: {data: file.csv, inputs: [...], output: y}); default sine",
    )
    pde: PdeConfig | None = Field(
        None,
        description="a physics-informed problem, instead of target: the network u(inputs) is "
        "trained so that a differential equation and its conditions hold",
    )

    @model_serializer(mode="wrap")
    def _dump_one_section(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The section that poses the problem, not the other: a dump validates back (a PDE
        # config has no target: key, and a regression config's dump has no pde: key).
        data: dict[str, Any] = handler(self)
        data.pop("target" if self.pde is not None else "pde", None)
        return data

    def problem_section(self) -> ProblemSection:
        """The section that poses the problem (``SECTIONS``' order: ``pde:`` if given)."""
        return self.pde if self.pde is not None else self.target

    def problem_conflict(self) -> str | None:
        """Why the sections given cannot pose one problem, or None."""
        if self.pde is not None and "target" in self.model_fields_set:
            return (
                "give target (fit a given function or data) or pde (a physics-informed "
                "problem), not both"
            )
        return None


#: The runtime problems of the configs used last, newest last: (config, its problem).
_RUNTIME: list[tuple[ExperimentConfig, Problem]] = []
_RUNTIME_KEPT = 8


def problem_of(cfg: ExperimentConfig) -> Problem:
    """The runtime side of ``cfg``'s problem (its data, objective, summary and figures): one
    per config object, so that every part of a run (its data, its summary, its figures) sees
    the same one, read once (a data file changed on disk during a run is not read again)."""
    for kept, problem in _RUNTIME:
        if kept is cfg:
            return problem
    problem = cfg.problem_section().problem(cfg)
    _RUNTIME.append((cfg, problem))
    del _RUNTIME[:-_RUNTIME_KEPT]
    return problem


def section_of(
    config: Mapping[str, Any],
) -> tuple[type[ProblemSection], Mapping[str, Any]]:
    """The section class and the section of a stored (resolved) config: what a finished run's
    readers ask about its problem."""
    for key in SECTIONS:
        section = config.get(key)
        if isinstance(section, Mapping):
            return _kind_of(key, section), section
    return TargetConfig, {}


def facts_of(*configs: Mapping[str, Any]) -> Facts:
    """What stored configs' numbers are called: their problems' facts where all agree, else
    the mean squared error's (a comparison across kinds of problem speaks of its test metric)."""
    found = [section_of(c)[0].facts for c in configs]
    return found[0] if found and all(f == found[0] for f in found) else MSE_FACTS


def summary_facts(summary: Mapping[str, Any]) -> Facts:
    """What a finished run's numbers are called, from its ``summary.json`` (a summary written
    before it recorded its ``problem`` says a PDE by its data entry)."""
    kind = summary.get("problem")
    if kind is None:
        data = summary.get("data")
        kind = "pde" if isinstance(data, Mapping) and data.get("target") == "pde" else "expression"
    return KINDS.get(str(kind), TargetConfig).facts


def problem_label(config: Mapping[str, Any]) -> str | None:
    """A stored config's problem as a run list names it (a target's name, ``expr``, a data
    file's name; None for a problem without a short name)."""
    kind, section = section_of(config)
    return kind.label(section)


def problem_title(config: Mapping[str, Any]) -> str:
    """A stored config's problem as a figure title names it ("" where the config has none)."""
    kind, section = section_of(config)
    return kind.title(section) if section else ""


def absolute_paths(config: dict[str, Any], folder: Path) -> None:
    """Make every file path a raw config's problem section names absolute, read from
    ``folder`` (the folder of the file it was read from), in place: what a sweep keeps as its
    base then reads the same from anywhere."""
    for key in SECTIONS:
        section = config.get(key)
        if isinstance(section, dict):
            _kind_of(key, section).absolute_paths(section, folder)
