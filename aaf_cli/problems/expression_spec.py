"""The ``target:`` section of an expression target: a named formula or your own expression,
its domain and how it is sampled (torch-free: loading a config imports no torch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from aaf_cli.problems.base import MSE_FACTS, Facts, Size
from aaf_cli.schema import MAX_INPUTS, MAX_POINTS, MAX_SEED, Strict, unknown
from aaf_cli.targets import TARGETS, grid_side

if TYPE_CHECKING:
    from aaf_cli.config import ExperimentConfig
    from aaf_cli.expr import Expression
    from aaf_cli.problems.base import Problem


class Piece(Strict):
    """One piece of a piecewise target: ``expr`` where ``when`` holds (no ``when``: otherwise)."""

    when: str | None = None
    expr: str


INPUT_NAMES = ("x", *(f"x{i}" for i in range(1, MAX_INPUTS + 1)))


def _parse_expression(source: str | Sequence[Piece]) -> Expression:
    """Parse with the safe expression parser; its error becomes a one-line ValueError."""
    from aaf_cli.expr import ExprError, parse, parse_piecewise

    try:
        if isinstance(source, str):
            return parse(source, INPUT_NAMES)
        return parse_piecewise([(p.when, p.expr) for p in source], INPUT_NAMES)
    except ExprError as exc:
        # The parser's hint lists every allowed input name (x, x1..x8); say it shorter here.
        hint = exc.hint or ""
        if "variables:" in hint:
            hint = (
                "variables: x (x1, x2, ... for several inputs), constants: pi, e; functions: "
                "see `aaf targets`"
            )
        short = ExprError(exc.message, exc.column, exc.snippet, hint or None)
        raise ValueError(str(short)) from None


class TargetConfig(Strict):
    """The synthetic regression target and how it is sampled."""

    kind: ClassVar[str] = "expression"
    facts: ClassVar[Facts] = MSE_FACTS

    name: str | None = Field(
        None, description="a registered target (see `aaf targets`); default sine"
    )
    expr: str | None = Field(
        None,
        description="your own target as an expression of x (x1, x2, ... for several inputs), "
        "e.g. '0.2*sin(6*x) if x <= 0 else 1 + 0.1*x*cos(18*x)'; needs a domain",
    )
    piecewise: list[Piece] | None = Field(
        None,
        description="your own target piece by piece: [{when: 'x <= 0', expr: ...}, {expr: ...}]",
        max_length=32,
    )
    params: dict[str, float | list[float]] = Field(
        default_factory=dict,
        description="the target's parameters, e.g. {freq: 4} for sine; default: the target's",
    )
    domain: tuple[float, float] = Field(
        description="[low, high] (of every input); default: the target's"
    )
    n_train: int = Field(
        ge=2,
        le=MAX_POINTS,
        description="training points; default: the target's, 300 for expressions; with d "
        "inputs a grid has round(n_train^(1/d)) points per axis",
    )
    n_test: int = Field(1000, ge=2, le=MAX_POINTS, description="test points (a uniform grid)")
    n_val: int = Field(
        200,
        ge=2,
        le=MAX_POINTS,
        description="validation points: drawn uniformly at random, apart from the training points "
        "and the test grid, with their own seed; every choice a run makes (tuning) reads them",
    )
    sampling: Literal["grid", "random"] = "grid"
    noise: float = Field(0.0, ge=0.0, description="std of Gaussian noise on training targets")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of random sampling and noise")
    resample: bool = Field(
        False,
        description="draw new training data (random points, noise) for every seed; all variants "
        "of one seed still share it",
    )

    @model_validator(mode="before")
    @classmethod
    def _target_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        custom = [k for k in ("expr", "piecewise") if data.get(k) is not None]
        if custom:
            if data.get("name") is not None or len(custom) > 1:
                given = [k for k in ("name", "expr", "piecewise") if data.get(k) is not None]
                raise ValueError(f"give one of name, expr or piecewise (got {', '.join(given)})")
            data.setdefault("n_train", 300)
            return data
        if data.get("name") is None:
            data["name"] = "sine"
        spec = TARGETS.get(data["name"]) if isinstance(data["name"], str) else None
        # An unknown name is reported by its own validator; placeholders avoid a second error.
        data.setdefault("domain", spec.domain if spec else (0.0, 1.0))
        data.setdefault("n_train", spec.n_train if spec else 2)
        given = data.get("params", {})
        if spec is not None and isinstance(given, Mapping):
            defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.params.items()}
            data["params"] = {**defaults, **given}
        return data

    @field_validator("name")
    @classmethod
    def _known_target(cls, name: str | None) -> str | None:
        if name is not None and name not in TARGETS:
            raise unknown("target", name, list(TARGETS))
        return name

    @field_validator("expr")
    @classmethod
    def _safe_expression(cls, expr: str | None) -> str | None:
        if expr is not None:
            _parse_expression(expr)
        return expr

    @field_validator("piecewise")
    @classmethod
    def _safe_pieces(cls, pieces: list[Piece] | None) -> list[Piece] | None:
        if pieces is not None:
            if not pieces:
                raise ValueError("piecewise needs at least one piece")
            _parse_expression(pieces)
        return pieces

    def expression(self) -> Expression | None:
        """Your own target, parsed, or None for a named target."""
        if self.expr is not None:
            return _parse_expression(self.expr)
        if self.piecewise is not None:
            return _parse_expression(self.piecewise)
        return None

    def variables(self) -> tuple[str, ...]:
        """The input variables the expression uses (x, or x1, x2, ...); () for named targets."""
        parsed = self.expression()
        return () if parsed is None else tuple(parsed.variables)

    @field_validator("domain")
    @classmethod
    def _ordered(cls, domain: tuple[float, float]) -> tuple[float, float]:
        if not domain[0] < domain[1]:
            raise ValueError(f"low must be below high (got [{domain[0]}, {domain[1]}])")
        return domain

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None and params and "name" in info.data:
            raise ValueError("params belong to named targets; write the numbers into expr")
        if name not in TARGETS:
            return params
        spec = TARGETS[name]
        for key, value in params.items():
            if key not in spec.params:
                valid = ", ".join(spec.params) or "none"
                raise ValueError(f"target '{name}' has no parameter '{key}' (valid: {valid})")
            if isinstance(spec.params[key], tuple) != isinstance(value, list):
                want = "a list of numbers" if isinstance(spec.params[key], tuple) else "a number"
                raise ValueError(f"parameter '{key}' of target '{name}' must be {want}")
            if isinstance(value, list) and not value:
                raise ValueError(f"parameter '{key}' of target '{name}' needs at least one number")
        return params

    def check_layers(self, layers: Sequence[int]) -> None:
        d = layers[0]
        if self.name is not None:
            if d != 1:
                raise ValueError(
                    f"model.layers: target '{self.name}' has one input, so layers must "
                    f"start with 1 (got {d}); use target.expr with x1, x2, ... for more"
                )
            return
        allowed = ("x",) if d == 1 else tuple(f"x{i}" for i in range(1, d + 1))
        wrong = [v for v in self.variables() if v not in allowed]
        if wrong:
            raise ValueError(
                f"target.expr: uses {', '.join(wrong)}, but the network has {d} input"
                f"{'s' if d > 1 else ''} (model.layers starts with {d}), so the variables are "
                f"{', '.join(allowed)}"
            )

    @property
    def per_seed(self) -> bool:
        return self.resample

    def size(self, inputs: int) -> Size:
        points = self.n_train
        if self.sampling == "grid":
            points = grid_side(points, inputs) ** inputs
        return Size(points, self.n_test, self.n_val)

    def problem(self, cfg: ExperimentConfig) -> Problem:
        from aaf_cli.problems.expression import ExpressionProblem

        return ExpressionProblem(cfg, self)

    @classmethod
    def claims(cls, section: Mapping[str, Any]) -> bool:
        return "data" not in section

    @classmethod
    def absolute_paths(cls, section: dict[str, Any], folder: Path) -> None:
        return None  # it names no file

    @classmethod
    def line(cls, section: Mapping[str, Any]) -> str:
        domain = section.get("domain")
        if isinstance(domain, list) and all(isinstance(v, (int, float)) for v in domain):
            domain = "[" + ", ".join(f"{v:.6g}" for v in domain) + "]"
        return (
            f"target: {section.get('name') or section.get('expr')} on {domain}, "
            f"{section.get('n_train')} {section.get('sampling', '')} training points, "
            f"noise {section.get('noise')}"
        )

    @classmethod
    def label(cls, section: Mapping[str, Any]) -> str | None:
        named = section.get("expr") or section.get("piecewise")
        return section.get("name") or ("expr" if named else None)

    @classmethod
    def title(cls, section: Mapping[str, Any]) -> str:
        from aaf_cli.naming import target_text

        return target_text(section)
