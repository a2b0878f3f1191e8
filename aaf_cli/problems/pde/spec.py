"""The ``pde:`` section of an experiment config: a physics-informed problem, checked on load.

A problem is written as text: named inputs with intervals, a differential operator over ``u`` and
its derivatives (``u_x``, ``u_tt``, ``u_xt``, ...), a forcing, boundary and initial conditions,
and an exact (closed-form) or a named reference solution to measure the error against. Every
expression goes through the allow-list parser of ``aaf_cli.expr``; nothing is evaluated here, so
loading a config imports no torch (``problem.py`` evaluates).

Example (Burgers, the steep-front problem of Raissi et al. 2019 and Jagtap et al. 2020)::

    pde:
      inputs: {x: [-1, 1], t: [0, 1]}
      operator: u_t + u*u_x - nu*u_xx
      params: {nu: 0.0031830988618379067}
      conditions:
        - {on: "t == 0", value: "-sin(pi*x)", points: 50}
        - {on: "x == -1 or x == 1", value: "0", points: 50}
      reference: burgers

Names and rules:

* inputs are single lower-case letters other than ``u`` and ``e`` (``e`` is Euler's number), so
  a derivative name is unambiguous: ``u_xt`` is d2u/dx dt. Mixed derivatives may be written in
  any order (``u_tx`` is ``u_xt``); at most ``MAX_ORDER`` (3) derivatives.
* a condition holds on one or more faces of the domain: ``on: "t == 0"`` or
  ``on: "x == -1 or x == 1"``; its ``value`` is an expression of the inputs (and fixed params),
  optionally of a derivative (``derivative: u_t``).
* ``forcing: from_exact`` derives the forcing from ``exact`` by automatic differentiation (the
  method of manufactured solutions); a condition without ``value`` then takes the exact
  solution's value (or derivative) on its face.
* a parameter ``{init: 0.1, trainable: true}`` is learned per model from ``data`` (the inverse
  problem); ``true`` gives the value the data are made with, where the reference does not.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aaf_cli.errors import ConfigError
from aaf_cli.problems.base import Facts, Size

if TYPE_CHECKING:
    from aaf_cli.config import ExperimentConfig
    from aaf_cli.expr import Expression
    from aaf_cli.problems.base import Problem

#: A PDE run's numbers: the PINN loss is trained on, the relative L2 error of u is tested.
PDE_FACTS = Facts(
    metric="relative L2 error",
    quantity="relative L2 error",
    loss="PINN loss",
    train_points="the collocation and condition points",
    columns={
        "final_train": "final PINN loss",
        "final_val": "final val rel. L2",
        "final_test": "final test rel. L2",
        "last_test": "last test rel. L2",
        "test_at_best_val": "test rel. L2 at best val",
    },
    test_column="test rel. L2",
    test_name="test rel. L2",
    tracker=("pinn_loss", "rel_l2"),
    series=("training loss (total PINN loss)", "relative L2 error"),
)

__all__ = [
    "MAX_ORDER",
    "MAX_PDE_INPUTS",
    "REFERENCES",
    "Collocation",
    "Condition",
    "Face",
    "ObservedData",
    "Param",
    "PdeConfig",
    "ReferenceConfig",
    "ReferenceInfo",
    "Weights",
    "check_inputs",
    "derivative_index",
    "parse_pde",
]

MAX_ORDER = 3
"""Highest derivative order an operator or a condition may use."""

MAX_PDE_INPUTS = 3
"""Most inputs (coordinates) a problem may have."""

_MAX_POINTS = 1_000_000
_MAX_SEED = 2**31 - 1
_MAX_CONDITIONS = 32
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_INPUT = re.compile(r"^[a-df-tv-z]$")  # one letter; not e (Euler's number) nor u (the solution)
_ON_TOLERANCE = 1e-12


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _unknown(kind: str, name: str, valid: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ValueError(f"unknown {kind} '{name}'{hint} (valid: {', '.join(valid)})")


# --- Named reference solutions ----------------------------------------------------------------


class ReferenceInfo(BaseModel):
    """A reference solution ``aaf`` computes itself: what it needs and what it solves."""

    model_config = ConfigDict(frozen=True)

    name: str
    inputs: tuple[str, ...]
    params: dict[str, float]
    equation: str
    source: str


REFERENCES: dict[str, ReferenceInfo] = {
    "burgers": ReferenceInfo(
        name="burgers",
        inputs=("x", "t"),
        params={"nu": 0.01 / math.pi},
        equation="u_t + u*u_x = nu*u_xx on x in [-1, 1], t in [0, T], u(x, 0) = -sin(pi*x), "
        "u(-1, t) = u(1, t) = 0",
        source="Cole-Hopf formula by Gauss-Hermite quadrature (Basdevant et al., Computers & "
        "Fluids 14 (1986)); the data of Raissi et al., J. Comput. Phys. 378 (2019)",
    )
}
"""The named references (``reference: burgers``)."""


# --- Sections -----------------------------------------------------------------------------------


class Param(_Strict):
    """A PDE coefficient: fixed (``trainable: false``) or learned per model (the inverse
    problem)."""

    init: float = Field(description="the value (fixed), or the starting value (trainable)")
    trainable: bool = Field(False, description="learn it per model from `data`")
    true: float | None = Field(
        None,
        description="trainable only: the value the exact solution and the data are made with "
        "(default: the reference's parameter of the same name)",
    )
    scale: Literal["linear", "log"] = Field(
        "linear",
        description="trainable only: log learns log(value), which keeps it positive and moves "
        "it by factors (Raissi et al.'s Burgers code learns nu as exp(lambda))",
    )

    lr: float | None = Field(
        None,
        gt=0.0,
        le=100.0,
        description="trainable only: its learning rate; default: the model's (same schedule)",
    )

    @model_validator(mode="before")
    @classmethod
    def _a_number_is_a_fixed_value(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"init": data}
        if not isinstance(data, (Mapping, BaseModel)):
            raise ValueError(
                "a parameter is a number or {init: 0.1, trainable: true} "
                f"(got {str(data)[:40]!r})"
            )
        return data

    @field_validator("true", "scale", "lr")
    @classmethod
    def _only_if_trainable(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs only for keys that were given (their defaults are not validated); a default
        # written out (a resolved config's dump: true: null, scale: linear) is no setting.
        if not info.data.get("trainable", False) and value not in (None, "linear"):
            raise ValueError(
                f"{info.field_name} is only for trainable parameters (a fixed one is its init)"
            )
        if info.field_name == "scale" and value == "log" and not info.data.get("init", 0) > 0:
            raise ValueError(f"log needs a positive init, not {info.data.get('init')}")
        return value


class ReferenceConfig(_Strict):
    """A named reference solution and its parameters (``reference: burgers`` for short)."""

    name: str = Field(description="one of: " + ", ".join(REFERENCES))
    params: dict[str, float] = Field(
        default_factory=dict, description="the reference's parameters; default: its own"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in REFERENCES:
            raise _unknown("reference", name, list(REFERENCES))
        return name

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        name = info.data.get("name")
        if name not in REFERENCES:
            return params
        spec = REFERENCES[name]
        for key, value in params.items():
            if key not in spec.params:
                raise _unknown(f"parameter of reference '{name}'", key, list(spec.params))
            if not value > 0:
                raise ValueError(f"parameter '{key}' must be positive (got {value})")
        return params

    def resolved(self) -> dict[str, float]:
        """The reference's parameters, defaults included."""
        return {**REFERENCES[self.name].params, **self.params}


class Face(BaseModel):
    """One face of the domain: ``input == value`` with ``value`` an end of its interval."""

    model_config = ConfigDict(frozen=True)

    input: str
    value: float


class Condition(_Strict):
    """A boundary or initial condition: ``u`` (or a derivative) equals ``value`` on ``on``."""

    on: str = Field(description="where: 't == 0', 'x == -1 or x == 1' (faces of the domain)")
    value: str | None = Field(
        None,
        description="an expression of the inputs and fixed params; default: the exact "
        "solution's value (or derivative) there, or the reference's value",
    )
    derivative: str | None = Field(
        None, description="a derivative of u (u_t, u_x, ...) instead of u itself"
    )
    points: int = Field(100, ge=1, le=_MAX_POINTS, description="points, split over the faces")
    name: str | None = Field(
        None, pattern=_NAME, description="the loss term's name; default cond1, cond2, ..."
    )
    weight: float | None = Field(None, ge=0.0, le=1e8, description="default: weights.conditions")

    @model_validator(mode="before")
    @classmethod
    def _on_is_not_a_boolean(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML) reads an unquoted `on:` key as the boolean True.
        if isinstance(data, Mapping) and True in data and "on" not in data:
            data = dict(data)
            data["on"] = data.pop(True)
        return data


class Collocation(_Strict):
    """Where the residual is evaluated."""

    points: int = Field(2000, ge=1, le=_MAX_POINTS)
    sampling: Literal["grid", "random", "lhs"] = Field(
        "lhs",
        description="grid: round(points^(1/d)) per axis; random: uniform; lhs: Latin hypercube",
    )
    seed: int = Field(
        0, ge=0, le=_MAX_SEED, description="seed of the collocation and condition points"
    )


class ObservedData(_Strict):
    """Observations of the solution, drawn from the exact or reference solution (inverse
    problems)."""

    points: int = Field(2000, ge=1, le=_MAX_POINTS)
    noise: float = Field(0.0, ge=0.0, description="std of Gaussian noise added to the values")
    sampling: Literal["grid", "random", "lhs"] = "random"
    seed: int = Field(0, ge=0, le=_MAX_SEED)


class Weights(_Strict):
    """The weight of each loss term: total = residual*R + sum conditions*C_k + data*D."""

    residual: float = Field(1.0, ge=0.0, le=1e8)
    conditions: float = Field(
        1.0, ge=0.0, le=1e8, description="each condition's, unless it sets its own weight"
    )
    data: float = Field(1.0, ge=0.0, le=1e8)


class PdeConfig(_Strict):
    """A physics-informed problem: train u(inputs) so that ``operator(u) = forcing`` and the
    conditions hold (Raissi et al., J. Comput. Phys. 378 (2019); Jagtap et al., J. Comput.
    Phys. 404 (2020))."""

    kind: ClassVar[str] = "pde"
    facts: ClassVar[Facts] = PDE_FACTS

    inputs: dict[str, tuple[float, float]] = Field(
        description="the coordinates and their intervals, e.g. {x: [-1, 1], t: [0, 1]}",
        min_length=1,
        max_length=MAX_PDE_INPUTS,
    )
    params: dict[str, Param] = Field(
        default_factory=dict,
        description="coefficients: a number, or {init: 0.1, trainable: true} (inverse problem)",
    )
    exact: str | None = Field(None, description="the exact solution, an expression of the inputs")
    reference: ReferenceConfig | None = Field(
        None, description="a named reference solution: " + ", ".join(REFERENCES)
    )
    operator: str = Field(
        description="the differential operator, e.g. 'u_t + u*u_x - nu*u_xx'; the residual is "
        "operator - forcing"
    )
    forcing: str | None = Field(
        None, description="an expression of the inputs; from_exact: derived from exact; default 0"
    )
    conditions: list[Condition] = Field(default_factory=list, max_length=_MAX_CONDITIONS)
    collocation: Collocation = Field(default_factory=Collocation)
    data: ObservedData | None = Field(
        None,
        validate_default=True,
        description="observations of the solution; needed by trainable params",
    )
    weights: Weights = Field(default_factory=Weights)
    condition_loss: Literal["separate", "pooled"] = Field(
        "separate",
        description="separate: each condition its own mean square, times its weight; pooled: "
        "one mean square over every condition point (a point counts its condition's weight), "
        "as Raissi et al.'s and Jagtap et al.'s codes write the initial and boundary loss",
    )
    test_points: int = Field(
        10_000,
        ge=4,
        le=_MAX_POINTS,
        description="the grid the relative L2 error is measured on (round(n^(1/d)) per axis)",
    )
    val_points: int = Field(
        1000,
        ge=4,
        le=_MAX_POINTS,
        description="validation points, drawn uniformly in the box with their own seed: every "
        "choice a run makes (tuning) reads the relative L2 error there, never the test grid's",
    )

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, inputs: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (lo, hi) in inputs.items():
            if not _INPUT.match(name):
                raise ValueError(
                    f"input name '{name}' must be one lower-case letter other than u and e "
                    "(so that u_xt names a derivative unambiguously)"
                )
            if not lo < hi:
                raise ValueError(f"{name}: low must be below high (got [{lo}, {hi}])")
        return inputs

    @field_validator("reference", mode="before")
    @classmethod
    def _reference_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Param], info: ValidationInfo) -> dict[str, Param]:
        from aaf_cli.expr import CONSTANTS, FUNCTIONS

        inputs = info.data.get("inputs") or {}
        for name in params:
            if not name.isidentifier() or name.startswith("u_") or name == "u":
                raise ValueError(f"invalid parameter name '{name}'")
            if name in inputs or name in CONSTANTS or name in FUNCTIONS:
                what = "an input" if name in inputs else "a built-in name"
                raise ValueError(f"parameter name '{name}' is {what}; choose another")
        return params

    @field_validator("exact")
    @classmethod
    def _exact(cls, exact: str | None, info: ValidationInfo) -> str | None:
        if exact is not None:
            solution_expression(exact, info.data, "exact")
        return exact

    @field_validator("reference")
    @classmethod
    def _reference(
        cls, reference: ReferenceConfig | None, info: ValidationInfo
    ) -> ReferenceConfig | None:
        if reference is None:
            return None
        if info.data.get("exact") is not None:
            raise ValueError("give exact or reference, not both")
        inputs = info.data.get("inputs")
        if inputs is None:
            return reference
        spec = REFERENCES[reference.name]
        if tuple(inputs) != spec.inputs:
            raise ValueError(
                f"reference '{spec.name}' is a function of {', '.join(spec.inputs)} (in that "
                f"order), but the inputs are {', '.join(inputs)}"
            )
        if reference.name == "burgers":
            x, t = inputs["x"], inputs["t"]
            if tuple(x) != (-1.0, 1.0) or t[0] != 0.0:
                raise ValueError(
                    "reference 'burgers' solves x in [-1, 1] from t = 0 (got x in "
                    f"[{x[0]}, {x[1]}], t in [{t[0]}, {t[1]}]): " + spec.equation
                )
        return reference

    @field_validator("operator")
    @classmethod
    def _operator(cls, operator: str, info: ValidationInfo) -> str:
        if info.data.get("inputs") is None or "params" not in info.data:
            return operator  # the inputs' or params' own error is the one to tell
        parsed = operator_expression(operator, info.data)
        if not any(v == "u" or v.startswith("u_") for v in parsed.variables):
            raise ValueError(f"'{operator}' does not involve u or its derivatives")
        return operator

    @field_validator("forcing")
    @classmethod
    def _forcing(cls, forcing: str | None, info: ValidationInfo) -> str | None:
        if forcing is None or info.data.get("inputs") is None or "params" not in info.data:
            return forcing
        if forcing.strip() == "from_exact":
            if info.data.get("exact") is None:
                raise ValueError("from_exact needs an exact solution (the exact key)")
            return "from_exact"
        solution_expression(forcing, info.data, "forcing")
        return forcing

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, conditions: list[Condition], info: ValidationInfo) -> list[Condition]:
        inputs = info.data.get("inputs")
        if inputs is None or "params" not in info.data:
            return conditions
        names: set[str] = set()
        for k, cond in enumerate(conditions, start=1):
            where = f"condition {k} ({cond.on!r})"
            try:
                faces(cond.on, inputs)
                if cond.derivative is not None:
                    derivative_index(cond.derivative, tuple(inputs))
                if cond.value is not None:
                    solution_expression(cond.value, info.data, "value")
                elif info.data.get("exact") is None:
                    has_reference = info.data.get("reference") is not None
                    if not has_reference or cond.derivative is not None:
                        wanted = "exact" if has_reference else "exact or reference"
                        raise ValueError(f"value is missing (give it, or {wanted} to take it from)")
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            name = cond.name or f"cond{k}"
            if name in names or name in ("residual", "data", "total"):
                raise ValueError(f"{where}: the term name '{name}' is taken")
            names.add(name)
        return conditions

    @field_validator("data")
    @classmethod
    def _data(cls, data: ObservedData | None, info: ValidationInfo) -> ObservedData | None:
        params = info.data.get("params") or {}
        trainable = [k for k, v in params.items() if v.trainable]
        if data is None:
            if trainable:
                raise ValueError(
                    f"trainable parameter{'s' if len(trainable) > 1 else ''} "
                    f"{', '.join(trainable)} need observations to be learned from: add "
                    "data: {points: N, noise: sigma}"
                )
            return None
        if info.data.get("exact") is None and info.data.get("reference") is None:
            raise ValueError("data are drawn from the solution: give exact or reference")
        return data

    @model_validator(mode="after")
    def _measurable(self) -> PdeConfig:
        """A run is judged by its relative L2 error against a solution, and trains on at least
        one weighted term."""
        if self.exact is None and self.reference is None:
            raise ValueError(
                "give exact or reference: the runs are compared by their relative L2 error "
                "against a solution"
            )
        w = self.weights
        conditions = [w.conditions if c.weight is None else c.weight for c in self.conditions]
        data = w.data if self.data is not None else 0.0
        if w.residual == 0 and not any(c > 0 for c in conditions) and data == 0:
            raise ValueError("weights: every term's weight is 0, so nothing would be trained")
        return self

    @model_validator(mode="after")
    def _true_values(self) -> PdeConfig:
        """A trainable parameter that the exact solution, the forcing or a condition uses needs
        its true value; one the reference knows takes the reference's."""
        ref = self.reference.resolved() if self.reference is not None else {}
        texts = [t for t in (self.exact, self.forcing) if t not in (None, "from_exact")]
        texts += [c.value for c in self.conditions if c.value is not None]
        if self.forcing == "from_exact":
            texts.append(self.operator)
        for name, spec in self.params.items():
            if not isinstance(spec, Param) or not spec.trainable or spec.true is not None:
                continue
            if name in ref:
                continue
            if any(re.search(rf"\b{re.escape(name)}\b", t) for t in texts if t is not None):
                raise ValueError(
                    f"params.{name}: trainable and used by the exact solution, the forcing or "
                    "a condition's value: give the value the data are made with (true: ...)"
                )
        return self

    @model_validator(mode="after")
    def _agrees_with_the_reference(self) -> PdeConfig:
        """A parameter the reference also takes (Burgers' nu) must have the reference's value:
        the reference is computed at ``reference.params`` (default: its own), so a different
        fixed value, or a different ``true`` of a trainable one, would measure the error (and
        draw the data) against the solution of another equation, or state a true value the
        data were not made with."""
        if self.reference is None:
            return self
        ref = self.reference.resolved()
        name = self.reference.name
        for key, spec in self.params.items():
            if key not in ref:
                continue
            value = spec.true if spec.trainable else spec.init
            if value is None or math.isclose(value, ref[key], rel_tol=1e-9, abs_tol=0.0):
                continue
            what = f"params.{key}.true" if spec.trainable else f"params.{key}"
            raise ValueError(
                f"{what} is {value:.10g}, but reference '{name}' is computed at {key} = "
                f"{ref[key]:.10g} (the data and the error come from it): give the reference "
                f"the same value, reference: {{name: {name}, params: {{{key}: {value:.10g}}}}}"
            )
        return self

    # --- What the problem builder and the wiring read --------------------------------------

    @property
    def input_names(self) -> tuple[str, ...]:
        """The inputs, in the order the network takes them."""
        return tuple(self.inputs)

    def fixed_params(self) -> dict[str, float]:
        """The fixed parameters' values."""
        return {k: v.init for k, v in self.params.items() if not v.trainable}

    def trainable_params(self) -> dict[str, float]:
        """The trainable parameters' initial values, in config order."""
        return {k: v.init for k, v in self.params.items() if v.trainable}

    def param_rates(self) -> dict[str, float]:
        """The trainable parameters that set their own learning rate."""
        return {k: v.lr for k, v in self.params.items() if v.lr is not None}

    def log_params(self) -> tuple[str, ...]:
        """The trainable parameters learned on a log scale."""
        return tuple(k for k, v in self.params.items() if v.scale == "log")

    def true_params(self) -> dict[str, float | None]:
        """Each trainable parameter's true value (``true``, else the reference's parameter of
        the same name), or None where neither says (drawn as unknown)."""
        ref = self.reference.resolved() if self.reference is not None else {}
        out: dict[str, float | None] = {}
        for k, v in self.params.items():
            if v.trainable:
                out[k] = v.true if v.true is not None else ref.get(k)
        return out

    def solution_params(self) -> dict[str, float]:
        """The parameter values the exact solution, forcing and condition values see: fixed
        values and the true values of trainable ones."""
        out = self.fixed_params()
        out.update({k: v for k, v in self.true_params().items() if v is not None})
        return out

    def term_names(self) -> list[str]:
        """The loss terms, in order: residual, each condition, data (inverse problems)."""
        names = ["residual"]
        names += [c.name or f"cond{k}" for k, c in enumerate(self.conditions, start=1)]
        if self.data is not None:
            names.append("data")
        return names

    def check_layers(self, layers: Sequence[int]) -> None:
        try:
            check_inputs(self, layers)
        except ConfigError as exc:
            raise ValueError(f"{exc.key}: {exc.message}") from None

    @property
    def per_seed(self) -> bool:
        return False

    def size(self, inputs: int) -> Size:
        points = self.collocation.points + sum(c.points for c in self.conditions)
        points += self.data.points if self.data is not None else 0
        order = max((len(index) for index in self.derivatives()), default=0)
        return Size(points, self.test_points, self.val_points, order)

    def problem(self, cfg: ExperimentConfig) -> Problem:
        from aaf_cli.problems.pde.training import PinnProblem

        return PinnProblem(cfg, self)

    @classmethod
    def claims(cls, section: Mapping[str, Any]) -> bool:
        return True

    @classmethod
    def absolute_paths(cls, section: dict[str, Any], folder: Path) -> None:
        return None  # it names no file

    @classmethod
    def line(cls, section: Mapping[str, Any]) -> str:
        collocation = section.get("collocation") or {}
        return (
            f"pde: {section.get('operator')} = {section.get('forcing') or 0} on "
            f"{section.get('inputs')}, {collocation.get('points')} collocation points; train = "
            "total PINN loss, test = relative L2 error"
        )

    @classmethod
    def label(cls, section: Mapping[str, Any]) -> str | None:
        return None

    @classmethod
    def title(cls, section: Mapping[str, Any]) -> str:
        """``u_t + u*u_x - nu*u_xx = 0`` (the forcing as written; ``f from u = ...`` when
        derived from the exact solution)."""
        forcing = section.get("forcing") or "0"
        if forcing == "from_exact":
            forcing = f"f from u = {section.get('exact')}"
        return f"{section.get('operator')} = {forcing}"

    def derivatives(self) -> list[tuple[int, ...]]:
        """Every derivative (as sorted input indices) the operator and the conditions use."""
        inputs = self.input_names
        found: set[tuple[int, ...]] = set()
        parsed = operator_expression(self.operator, {"inputs": self.inputs, "params": self.params})
        for name in parsed.variables:
            if name.startswith("u_"):
                found.add(derivative_index(name, inputs))
        for cond in self.conditions:
            if cond.derivative is not None:
                found.add(derivative_index(cond.derivative, inputs))
        return sorted(found, key=lambda idx: (len(idx), idx))

    @property
    def inverse(self) -> bool:
        """Whether some parameter is learned (an inverse problem)."""
        return bool(self.trainable_params())


# --- Expressions ------------------------------------------------------------------------------


def derivative_index(name: str, inputs: Sequence[str]) -> tuple[int, ...]:
    """The derivative a name stands for, as sorted input indices: ``u_xt`` -> ``(0, 1)`` for
    inputs ``(x, t)``; ``u`` -> ``()``.

    Raises:
        ValueError: not ``u_`` followed by 1 to ``MAX_ORDER`` input names.
    """
    if name == "u":
        return ()
    listing = ", ".join(inputs)
    examples = ", ".join(f"u_{inputs[0]}{s}" for s in ("", inputs[0]))
    if len(inputs) > 1:
        examples += f", u_{inputs[0]}{inputs[1]}"
    if not name.startswith("u_") or len(name) == 2:
        raise ValueError(
            f"'{name}' is not a derivative name: write u_ followed by inputs, e.g. {examples}"
        )
    letters = name[2:]
    wrong = [c for c in letters if c not in inputs]
    if wrong:
        raise ValueError(
            f"unknown derivative '{name}': '{wrong[0]}' is not an input (inputs: {listing}); "
            f"derivatives are u_ followed by inputs, e.g. {examples}"
        )
    if len(letters) > MAX_ORDER:
        raise ValueError(f"'{name}' is of order {len(letters)}; at most {MAX_ORDER} is supported")
    return tuple(sorted(inputs.index(c) for c in letters))


def _names_in(source: str) -> list[tuple[str, ast.Name]]:
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []  # the parser itself reports it, with the column
    return [(n.id, n) for n in ast.walk(tree) if isinstance(n, ast.Name)]


def _allowed(data: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    inputs = tuple(data.get("inputs") or ())
    params = tuple(data.get("params") or ())
    return inputs, params


def _parse(source: str, variables: Sequence[str]) -> Expression:
    from aaf_cli.expr import ExprError, parse

    try:
        return parse(source, variables)
    except ExprError as exc:
        raise ValueError(str(exc)) from None


def solution_expression(source: str, data: Mapping[str, Any], what: str) -> Expression:
    """Parse an expression of the inputs and parameters (exact, forcing, a condition value)."""
    inputs, params = _allowed(data)
    for name, _ in _names_in(source):
        if name == "u" or name.startswith("u_"):
            raise ValueError(f"{what} is a function of the inputs: it cannot use '{name}'")
    return _parse(source, (*inputs, *params))


def operator_expression(source: str, data: Mapping[str, Any]) -> Expression:
    """Parse the operator, checking every derivative name it uses first."""
    inputs, params = _allowed(data)
    used: list[str] = []
    for name, _ in _names_in(source):
        if name.startswith("u_") and name not in params:
            derivative_index(name, inputs)
            if name not in used:
                used.append(name)
    # Derivative names up to order 2 are offered too, so that 'ux' gets "did you mean 'u_x'".
    offered = [f"u_{a}" for a in inputs] + [
        f"u_{a}{b}" for i, a in enumerate(inputs) for b in inputs[i:]
    ]
    return _parse(source, (*inputs, *params, "u", *used, *(n for n in offered if n not in used)))


def _number(node: ast.expr, text: str) -> float:
    """A constant of ``on``: numbers, pi, e, + - * / ** and unary minus."""
    value = node.value if isinstance(node, ast.Constant) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(node, ast.Name) and node.id in ("pi", "e"):
        return math.pi if node.id == "pi" else math.e
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _number(node.operand, text)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(
        node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
    ):
        a, b = _number(node.left, text), _number(node.right, text)
        try:
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Div):
                return a / b
            return float(a**b)
        except (ZeroDivisionError, OverflowError, TypeError):
            pass
    raise ValueError(f"'{text}': the side of '==' must be a number (like -1, 0, pi/2)")


def faces(on: str, inputs: Mapping[str, tuple[float, float]]) -> list[Face]:
    """The faces a condition's ``on`` names: ``"x == -1 or x == 1"`` -> two faces.

    Raises:
        ValueError: not ``input == number`` clauses joined by ``or``, an unknown input, or a
            value that is not an end of the input's interval (a condition must hold on the
            boundary of the domain).
    """
    shape = "write it as 'input == number', several joined by 'or' (e.g. 'x == -1 or x == 1')"
    try:
        tree = ast.parse(on, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ValueError(f"cannot read '{on}': {shape}") from None
    clauses = (
        tree.values if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.Or) else [tree]
    )
    out: list[Face] = []
    for clause in clauses:
        text = ast.unparse(clause)
        if not (
            isinstance(clause, ast.Compare)
            and len(clause.ops) == 1
            and isinstance(clause.ops[0], ast.Eq)
        ):
            raise ValueError(f"'{text}' is not an equation: {shape}")
        left, right = clause.left, clause.comparators[0]
        if isinstance(right, ast.Name) and not isinstance(left, ast.Name):
            left, right = right, left
        if not isinstance(left, ast.Name):
            raise ValueError(f"'{text}': one side of '==' must be an input: {shape}")
        name = left.id
        if name not in inputs:
            raise _unknown("input", name, list(inputs))
        value = _number(right, text)
        lo, hi = inputs[name]
        ends = [end for end in (lo, hi) if abs(value - end) <= _ON_TOLERANCE * max(1.0, abs(end))]
        if not ends:
            where = "outside" if not lo <= value <= hi else "inside"
            raise ValueError(
                f"{name} = {value:g} is {where} the domain ({name} in [{lo:g}, {hi:g}]), never "
                f"on its boundary: use {name} == {lo:g} or {name} == {hi:g}"
            )
        face = Face(input=name, value=ends[0])
        if face in out:
            raise ValueError(f"'{text}' repeats a face")
        out.append(face)
    return out


# --- Loading on its own, and the check against the network ------------------------------------


def _members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _walk(loc: Sequence[str | int]) -> tuple[list[str | int], type[BaseModel] | None]:
    """A pydantic error location without union-member tags ('float', 'Param'), and the model
    class that owns its last key (for 'valid keys' in messages)."""
    path: list[str | int] = []
    tp: Any = PdeConfig
    for part in loc:
        members = _members(tp)
        # Tags name a member: 'float', 'Param', 'function-after[_check(), Param]'.
        names = [getattr(m, "__name__", "") for m in members]
        tagged = [
            m
            for m, name in zip(members, names)
            if isinstance(part, str) and (part == name or part.endswith(f", {name}]"))
        ]
        if len(members) > 1 and tagged:
            tp = tagged[0]
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        path.append(part)
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        dicts = [m for m in members if typing.get_origin(m) is dict]
        lists = [m for m in members if typing.get_origin(m) in (list, tuple)]
        if models and isinstance(part, str) and part in models[0].model_fields:
            tp = models[0].model_fields[part].annotation
        elif dicts and isinstance(part, str):
            tp = typing.get_args(dicts[0])[1]
        elif lists and isinstance(part, int):
            tp = typing.get_args(lists[0])[0]
        else:
            tp = Any
    owner = [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return path, owner[0] if owner else None


def parse_pde(data: Any, source: str = "<mapping>", key: str = "pde") -> PdeConfig:
    """Validate a ``pde:`` section on its own (before it is part of ``ExperimentConfig``).

    Args:
        data: the section as plain data (a mapping).
        source: where it came from, for messages.
        key: the section's key path.

    Returns:
        The frozen, checked section.

    Raises:
        ConfigError: one line naming ``source``, the key (``pde.conditions``) and the problem,
            with the closest valid key for a typo.
    """
    try:
        return PdeConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A value that fits one member of a union (a number or {init, trainable}) but breaks a
        # rule of it is better told by that rule than by "not a valid number".
        specific = [e for e in errors if not str(e["type"]).endswith("_type")]
        error = specific[0] if specific else errors[0]
        loc, _ = _walk(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            _, owner = _walk(error["loc"][:-1])
            valid = list(owner.model_fields) if owner is not None else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            listing = f" (valid keys: {', '.join(valid)})" if valid else ""
            message = f"unknown key '{loc[-1]}'{hint}{listing}"
        elif error["type"] == "missing":
            message = "missing required key"
        more = len(errors) - 1
        if more:
            message += f" (and {more} more)"
        dotted = ".".join(str(p) for p in [key, *loc] if p != "")
        raise ConfigError(source, dotted, " ".join(message.split())) from None


def check_inputs(
    pde: PdeConfig, layers: Sequence[int], source: str = "config", key: str = "model.layers"
) -> None:
    """Check that the network takes one input per coordinate and gives one output.

    Raises:
        ConfigError: ``layers[0]`` is not the number of ``pde.inputs`` or ``layers[-1]`` is
            not 1.
    """
    d = len(pde.inputs)
    if layers[0] != d:
        raise ConfigError(
            source,
            key,
            f"the network must take the {d} input{'s' if d > 1 else ''} of pde.inputs "
            f"({', '.join(pde.inputs)}), so layers must start with {d} (got {list(layers)})",
        )
    if layers[-1] != 1:
        raise ConfigError(
            source, key, f"u is one number: layers must end with 1 (got {list(layers)})"
        )
