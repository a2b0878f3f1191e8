"""Experiment config: YAML + ``--set`` overrides -> a typed, validated, frozen ``ExperimentConfig``.

This module is the one validation choke point: everything the user can type is checked here, and
every problem becomes a ``ConfigError`` that names the file, the key path (``train.lr``,
``variants.1.n``) and what is wrong, with the line in the YAML file where one is known.
"""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from aaf_cli.errors import ConfigError
from aaf_cli.pde.spec import PdeConfig, check_inputs

if TYPE_CHECKING:
    from aaf_cli.expr import Expression
from aaf_cli.registry import ACTIVATIONS
from aaf_cli.targets import TARGETS

DEFAULT_SOURCE = "<built-in default>"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

# Upper bounds that keep a typo (steps: 1e9) from starting a run that never ends.
MAX_STEPS = 10_000_000
MAX_POINTS = 1_000_000
MAX_WIDTH = 4096
MAX_SEEDS = 4096
MAX_SEED = 2**31 - 1  # seed values: torch generators take 64-bit seeds; leave room for mixing
MAX_INPUTS = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _unknown(kind: str, name: str, valid: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ValueError(f"unknown {kind} '{name}'{hint} (valid: {', '.join(valid)})")


class Piece(_Strict):
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


class TargetConfig(_Strict):
    """The synthetic regression target and how it is sampled."""

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
            raise _unknown("target", name, list(TARGETS))
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

    @property
    def label(self) -> str:
        """The target's name, or 'expr' for your own."""
        return self.name or "expr"

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


class ModelConfig(_Strict):
    """The network shared by every variant: layer widths, base activation and initialisation."""

    layers: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] = Field(
        default_factory=lambda: [1, 20, 20, 1],
        min_length=3,
        max_length=64,
        description="widths: inputs, hidden layers (at least one), output",
    )
    activation: str = "elu"
    init: Literal["torch", "xavier_normal", "xavier_uniform", "normal"] = Field(
        "torch",
        description="torch: nn.Linear's default; xavier_*: Glorot with zero biases; "
        "normal: N(0, init_std^2) weights with zero biases",
    )
    init_std: float = Field(0.1, gt=0.0)

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, name: str) -> str:
        if name not in ACTIVATIONS:
            raise _unknown("activation", name, list(ACTIVATIONS))
        return name

    @field_validator("layers")
    @classmethod
    def _scalar_output(cls, layers: list[int]) -> list[int]:
        if layers[-1] != 1:
            raise ValueError(f"the targets have one output: layers must end with 1 (got {layers})")
        if layers[0] > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs (got {layers[0]})")
        return layers


class SlopeRecovery(_Strict):
    """The slope-recovery term w * S(a) added to the training loss (Jagtap et al., RSPA 2020)."""

    weight: float = Field(1.0, ge=0.0, le=1e6, description="w in loss = MSE + w * S(a)")
    form: Literal["paper", "code"] = Field(
        "paper",
        description="paper: S = 1 / mean_k exp(a_k); code: the authors' TF1 script, "
        "1 / sum_k exp(a_k) (= paper / (D-1))",
    )


class _Variant(_Strict):
    lr: float | None = Field(
        None, gt=0.0, le=100.0, description="this variant's learning rate; default: train.lr"
    )
    weight_decay: float | None = Field(
        None,
        ge=0.0,
        le=100.0,
        description="this variant's weight decay; default: train.weight_decay",
    )
    layers: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] | None = Field(
        None,
        min_length=3,
        max_length=64,
        description="this variant's own widths (e.g. a parameter-matched control); default: "
        "model.layers",
    )

    @property
    def base(self) -> str | None:
        """The variant's own base activation, if its kind has one and it sets it."""
        return None


class _Based(_Variant):
    activation: str | None = Field(
        None, description="this variant's base activation; default: model.activation"
    )

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, name: str | None) -> str | None:
        if name is not None and name not in ACTIVATIONS:
            raise _unknown("activation", name, list(ACTIVATIONS))
        return name

    @property
    def base(self) -> str | None:
        return self.activation


class FixedVariant(_Based):
    """The baseline: sigma(L_k) in every hidden layer."""

    kind: Literal["fixed"]
    name: str = Field("fixed", pattern=NAME_PATTERN)


class _Slope(_Based):
    n: float = Field(10.0, ge=1.0, le=1e4, description="fixed scale factor, n >= 1")
    a0: float | None = Field(None, gt=0.0, le=1e4, description="initial a; default 1/n (n*a0 = 1)")
    slope_recovery: SlopeRecovery | None = Field(
        None, description="add w * S(a) to the loss; default: off"
    )

    @property
    def a_init(self) -> float:
        """a0, or 1/n (the engine picks the nearest float with n * a == 1 exactly)."""
        return self.a0 if self.a0 is not None else 1.0 / self.n


class GlobalVariant(_Slope):
    """GAAF: sigma(n * a * L_k) with one trainable ``a`` shared by all hidden layers."""

    kind: Literal["global"]
    name: str = Field("global", pattern=NAME_PATTERN)


class LayerVariant(_Slope):
    """L-LAAF: sigma(n * a_k * L_k), one trainable ``a_k`` per hidden layer."""

    kind: Literal["layer"]
    name: str = Field("layer", pattern=NAME_PATTERN)


class NeuronVariant(_Slope):
    """N-LAAF: sigma(n * a_ki * (L_k)_i), one trainable ``a`` per hidden neuron."""

    kind: Literal["neuron"]
    name: str = Field("neuron", pattern=NAME_PATTERN)


class RowdyVariant(_Based):
    """Rowdy: sigma(n a L) + sum_{j=1}^{K-1} n a_j sin(j n F_j L), per hidden layer."""

    kind: Literal["rowdy"]
    name: str = Field("rowdy", pattern=NAME_PATTERN)
    n: float = Field(10.0, ge=1.0, le=1e4, description="fixed scale factor, n >= 1")
    K: int = Field(10, ge=2, le=64, description="number of terms (K-1 sine terms)")


class PReLUVariant(_Variant):
    """PReLU: max(0, x) + a * min(0, x) with one trainable ``a`` per hidden layer."""

    kind: Literal["prelu"]
    name: str = Field("prelu", pattern=NAME_PATTERN)
    a0: float = Field(0.25, ge=-100.0, le=100.0, description="initial negative slope")


class SwishVariant(_Variant):
    """Swish: x * sigmoid(beta * x) with one trainable ``beta`` per hidden layer."""

    kind: Literal["swish"]
    name: str = Field("swish", pattern=NAME_PATTERN)
    beta0: float = Field(1.0, ge=-100.0, le=100.0, description="initial beta")


class RationalVariant(_Variant):
    """Rational (Pade) unit P(x) / (1 + sum_k |b_k| |x|^k), coefficients per hidden layer."""

    kind: Literal["rational"]
    name: str = Field("rational", pattern=NAME_PATTERN)
    degrees: tuple[int, int] = Field(
        (5, 4), description="[numerator, denominator] degrees; initialised to fit leaky ReLU"
    )

    @field_validator("degrees")
    @classmethod
    def _degrees(cls, degrees: tuple[int, int]) -> tuple[int, int]:
        p, q = degrees
        if not (1 <= p <= 8 and 0 <= q <= 8):
            raise ValueError(f"degrees must be [1..8, 0..8] (got [{p}, {q}])")
        return degrees


AnyVariant = Union[  # noqa: UP007
    FixedVariant,
    GlobalVariant,
    LayerVariant,
    NeuronVariant,
    RowdyVariant,
    PReLUVariant,
    SwishVariant,
    RationalVariant,
]
Variant = Annotated[AnyVariant, Field(discriminator="kind")]
VARIANT_CLASSES: dict[str, type[_Variant]] = {
    cls.model_fields["kind"].annotation.__args__[0]: cls for cls in typing.get_args(AnyVariant)
}


def variant_parameters(kind: str) -> list[tuple[str, str, str]]:
    """(key, default, description) of every key a variant of ``kind`` accepts besides kind."""
    out = []
    fields = VARIANT_CLASSES[kind].model_fields
    for key in ["name", *(k for k in fields if k not in ("name", "kind"))]:
        field = fields[key]
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump()
        shown = "-" if default is None else repr(default)
        if isinstance(default, tuple):
            shown = repr(list(default))
        description = field.description or ""
        if key == "name":
            shown = "auto"
            description = (
                f"default: named after what it is ('{default}', or with its non-default "
                "settings, e.g. 'global-n5', 'layer-sr')"
            )
        out.append((key, shown, description))
    return out


#: The default learning-rate grid of a tuned run: each variant's rate times these factors.
TUNE_FACTORS = (1 / 3, 1.0, 3.0)
#: Tuning seeds start here (never an evaluation seed: the first ones not in ``seeds`` are taken).
TUNE_SEED_START = 1_000_000


class TuneConfig(_Strict):
    """Tuning inside the run: every variant's learning rate is chosen from a small grid on
    tuning seeds, by the validation loss, before the comparison on the run's own seeds."""

    lr: list[Annotated[float, Field(gt=0.0, le=100.0)]] | None = Field(
        None,
        min_length=2,
        max_length=16,
        description="the learning rates tried (the same for every variant); default: each "
        "variant's own rate (its lr, else train.lr) times 1/3, 1 and 3",
    )
    seeds: int = Field(
        3,
        ge=1,
        le=64,
        description="tuning seeds per rate: fresh seeds from 1000000 on, never the run's own",
    )

    @field_validator("lr")
    @classmethod
    def _distinct(cls, rates: list[float] | None) -> list[float] | None:
        if rates is not None and len(set(rates)) != len(rates):
            raise ValueError(f"rates repeat (got {rates})")
        return sorted(rates) if rates is not None else None

    def grid(self, rate: float) -> list[float]:
        """The rates tried for a variant whose own rate is ``rate``."""
        return list(self.lr) if self.lr is not None else [rate * f for f in TUNE_FACTORS]

    def seed_list(self, taken: Sequence[int]) -> list[int]:
        """The tuning seeds: the first ``seeds`` integers from ``TUNE_SEED_START`` on that are
        not in ``taken`` (the evaluation seeds)."""
        used, seed = set(taken), TUNE_SEED_START
        out: list[int] = []
        while len(out) < self.seeds:
            if seed not in used:
                out.append(seed)
            seed += 1
        return out


def _default_variants() -> list[Variant]:
    return [
        FixedVariant(kind="fixed", name="fixed"),
        GlobalVariant(kind="global", name="adaptive", n=10.0),
    ]


# The schedules that use each schedule parameter, with its default there (None: required).
_SCHEDULE_PARAMETERS: dict[str, dict[str, float | None]] = {
    "min_lr_factor": {"cosine": 0.0},
    "gamma": {"exponential": None, "step": 0.1},
    "step_size": {"step": None},
}


#: The optimisers a training phase can use.
OPTIMIZERS = ("adam", "sgd", "lbfgs")
#: Keys that only L-BFGS reads.
LBFGS_KEYS = ("history_size", "line_search", "tolerance_grad", "tolerance_change", "max_evals")


class PhaseConfig(_Strict):
    """One training phase: an optimiser for some steps, continuing from the previous phase's
    parameters (a fresh optimiser state). A key left out is taken from ``train`` (``lr``:
    1.0 for lbfgs, torch.optim.LBFGS's default)."""

    optimizer: Literal["adam", "sgd", "lbfgs"]
    steps: int = Field(ge=1, le=MAX_STEPS, description="steps (lbfgs: iterations) of this phase")
    lr: float | None = Field(None, gt=0.0, le=100.0)
    betas: tuple[float, float] | None = None
    eps: float | None = Field(None, gt=0.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    weight_decay: float | None = Field(None, ge=0.0, le=100.0)
    schedule: Literal["constant", "cosine", "exponential", "step"] | None = None
    warmup_steps: int | None = Field(None, ge=0)
    min_lr_factor: float | None = Field(None, ge=0.0, le=1.0)
    gamma: float | None = Field(None, gt=0.0, le=1.0)
    step_size: int | None = Field(None, ge=1)
    history_size: int | None = Field(None, ge=1, le=1000)
    line_search: Literal["strong_wolfe", "backtracking"] | None = None
    tolerance_grad: float | None = Field(None, ge=0.0)
    tolerance_change: float | None = Field(None, ge=0.0)
    max_evals: int | None = Field(None, ge=1)


class TrainConfig(_Strict):
    """Optimiser and schedule, the same for every variant (a variant may set its own peak
    ``lr`` and ``weight_decay``; the schedule scales each model's own rate)."""

    optimizer: Literal["adam", "sgd", "lbfgs"] = Field(
        "adam",
        description="lbfgs: torch.optim.LBFGS per model, batched (lr 1.0 unless set; no "
        "schedule or weight decay)",
    )
    lr: float = Field(
        3e-3,
        gt=0.0,
        le=100.0,
        description="peak learning rate; with tune on, the middle of each variant's grid (the "
        "default 3e-3 tries 1e-3, 3e-3 and 9e-3)",
    )
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd only")
    weight_decay: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="adam: decoupled, as torch.optim.AdamW (w -= lr_t * wd * w); sgd: L2 added "
        "to the gradient, as torch.optim.SGD; on the linear layers' weights and biases",
    )
    decay_activation_params: bool = Field(
        False,
        description="also decay the activation parameters (a, beta, rational coefficients); "
        "off: decaying a slope toward 0 changes the method",
    )
    steps: int = Field(5000, ge=1, le=MAX_STEPS)
    schedule: Literal["constant", "cosine", "exponential", "step"] = Field(
        "constant", description="learning-rate factor after warmup, applied to every model's lr"
    )
    warmup_steps: int = Field(
        0, ge=0, description="linear warmup: update s < warmup_steps uses lr * s / warmup_steps"
    )
    min_lr_factor: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        validate_default=True,
        description="cosine only: the final rate as a fraction of the peak lr; default 0",
    )
    gamma: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        validate_default=True,
        description="exponential (required): factor per step; step: factor per step_size "
        "steps, default 0.1",
    )
    step_size: int | None = Field(
        None, ge=1, validate_default=True, description="step only (required): steps per decay"
    )
    log_every: int = Field(10, ge=1)
    threshold: float = Field(1e-2, gt=0.0, description="data-loss level for 'steps to reach'")
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the whole training step (losses, gradients, update) as one "
        "graph; auto: on the CPU when the eager training is predicted to take 120 s or more (a "
        "cold compile costs 4-20 s there), on CUDA for 5e7 model-steps (models x steps) or more",
    )
    cuda_graph: bool | Literal["auto"] = Field(
        "auto",
        description="capture the training step, compiled or not, as one CUDA graph (launch "
        "overhead of small networks); auto: on CUDA for small networks; needs device cuda",
    )
    history_size: int = Field(
        100, ge=1, le=1000, description="lbfgs: curvature pairs kept per model (torch's default)"
    )
    line_search: Literal["strong_wolfe", "backtracking"] = Field(
        "strong_wolfe",
        description="lbfgs: strong_wolfe (torch.optim.LBFGS's; 1-3 evaluations an iteration) or "
        "backtracking (Armijo, halving; mostly one evaluation)",
    )
    tolerance_grad: float = Field(
        1e-7, ge=0.0, description="lbfgs: a model stops when its largest gradient element is below"
    )
    tolerance_change: float = Field(
        1e-9, ge=0.0, description="lbfgs: a model stops when its loss or step changes less"
    )
    max_evals: int | None = Field(
        None,
        ge=1,
        description="lbfgs: function evaluations per model and phase; default 5/4 of its steps "
        "(torch.optim.LBFGS's max_eval)",
    )
    phases: list[PhaseConfig] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="train in phases, e.g. adam then lbfgs (the usual PINN protocol); each "
        "phase takes the keys it leaves out from train; train.steps is their total",
    )

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if data.get("optimizer") == "lbfgs" and data.get("lr") is None:
            data["lr"] = 1.0
        phases = data.get("phases")
        if isinstance(phases, list) and data.get("steps") is None:
            counts = [p.get("steps") if isinstance(p, Mapping) else None for p in phases]
            whole = [c for c in counts if isinstance(c, int) and c >= 1]
            if counts and len(whole) == len(counts):
                data["steps"] = sum(whole)
        return data

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"each beta must be in [0, 1) (got {list(betas)})")
        return betas

    @field_validator("warmup_steps")
    @classmethod
    def _warmup(cls, warmup: int, info: ValidationInfo) -> int:
        steps = info.data.get("steps")
        if warmup and steps is not None and warmup >= steps:
            raise ValueError(f"must be less than train.steps ({warmup} >= {steps})")
        return warmup

    @field_validator("min_lr_factor", "gamma", "step_size")
    @classmethod
    def _schedule_parameter(cls, value: float | None, info: ValidationInfo) -> float | None:
        schedule = info.data.get("schedule")
        if schedule is None:  # the schedule itself is invalid: that error is the one to tell
            return value
        users = _SCHEDULE_PARAMETERS[str(info.field_name)]
        if schedule not in users:
            if value is not None:
                raise ValueError(
                    f"set to {value!r}, but schedule {schedule} does not use it (used by: "
                    f"{', '.join(users)})"
                )
            return None
        if value is None and users[schedule] is None:
            raise ValueError(f"required by schedule {schedule}, but not set (None)")
        # An optional parameter left unset stays None here (its default is applied by
        # ``effective_schedule``), so that a resolved config.yaml still loads after --set
        # changes its schedule.
        return value

    def phase_configs(self) -> list[TrainConfig]:
        """Each phase as a whole train section (its own optimiser, steps and keys, the rest
        from ``train``); ``[self]`` without phases."""
        if not self.phases:
            return [self]
        base = self.model_dump(exclude={"phases"})
        out = []
        for phase in self.phases:
            data = dict(base)
            given = phase.model_dump(exclude_none=True)
            if phase.optimizer == "lbfgs" and "lr" not in given:
                given["lr"] = 1.0
            if "schedule" in given:  # a phase's own schedule brings its own parameters
                for key in (*_SCHEDULE_PARAMETERS, "warmup_steps"):
                    data[key] = given.get(key, 0 if key == "warmup_steps" else None)
            data.update(given)
            if phase.optimizer != "lbfgs":
                data["max_evals"] = None
            out.append(TrainConfig.model_validate(data))
        return out

    def uses_lbfgs(self) -> bool:
        """Whether some phase (or the one optimiser) is L-BFGS."""
        return any(p.optimizer == "lbfgs" for p in self.phase_configs())

    def phase_problems(self) -> list[tuple[str, str]]:
        """(key path under ``train``, what is wrong) for every phase that cannot run as set
        (``ExperimentConfig`` reports the first)."""
        problems: list[tuple[str, str]] = []
        phases = self.phases or []
        if phases and self.steps != sum(p.steps for p in phases):
            problems.append(
                (
                    "steps",
                    f"set to {self.steps}, but train.phases add up to "
                    f"{sum(p.steps for p in phases)} steps; leave it out, or set each phase's "
                    "steps (train.phases.K.steps)",
                )
            )
        try:
            configs = self.phase_configs()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            return [*problems, (f"phases.{where}" if where else "phases", message)]
        for k, cfg in enumerate(configs):
            prefix = f"phases.{k}." if phases else ""
            if cfg.optimizer != "lbfgs":
                continue
            if cfg.schedule != "constant" or cfg.warmup_steps:
                problems.append(
                    (
                        prefix + ("schedule" if cfg.schedule != "constant" else "warmup_steps"),
                        f"lbfgs takes no learning-rate schedule (got {cfg.schedule}"
                        f"{f', warmup_steps {cfg.warmup_steps}' if cfg.warmup_steps else ''}): "
                        "its line search sets every step's length; use schedule: constant",
                    )
                )
            if cfg.weight_decay:
                problems.append(
                    (
                        prefix + "weight_decay",
                        f"lbfgs minimises the loss as given (got weight_decay "
                        f"{cfg.weight_decay}); decay weights in an adam or sgd phase",
                    )
                )
        if not self.uses_lbfgs():
            # Set to another value than the default (a resolved config.yaml lists them all).
            fields = TrainConfig.model_fields
            given = {k for k in LBFGS_KEYS if getattr(self, k) != fields[k].default}
            given |= {k for p in phases for k in LBFGS_KEYS if getattr(p, k) is not None}
            if given:
                key = sorted(given)[0]
                problems.append(
                    (key, f"is an lbfgs option, but no phase uses lbfgs (optimizer: "
                     f"{', '.join(p.optimizer for p in configs)})")
                )  # fmt: skip
        return problems

    def lbfgs_options(self) -> Any:
        """The ``lbfgs.LbfgsOptions`` of an lbfgs train section (or phase)."""
        from aaf_cli.lbfgs import LbfgsOptions

        return LbfgsOptions(
            lr=self.lr,
            history_size=self.history_size,
            line_search=self.line_search,
            tolerance_grad=self.tolerance_grad,
            tolerance_change=self.tolerance_change,
            max_evals=self.max_evals if self.max_evals is not None else self.steps * 5 // 4,
        )

    def effective_schedule(self) -> dict[str, float]:
        """The schedule parameters in effect, defaults included (e.g. step's gamma 0.1)."""
        out: dict[str, float] = {}
        for key, users in _SCHEDULE_PARAMETERS.items():
            if self.schedule in users:
                value = getattr(self, key)
                default = users[self.schedule]
                chosen = value if value is not None else default
                if chosen is not None:
                    out[key] = chosen
        return out


def phases_summary(train: Mapping[str, Any]) -> str:
    """``"Adam 2000 steps (lr 0.0008), then L-BFGS 2000 iterations (strong_wolfe, history 50)"``
    for a resolved ``train`` section (a plain mapping) with phases or L-BFGS; ``""`` for one
    first-order optimiser (the train line says it)."""
    names = {"adam": "Adam", "sgd": "SGD", "lbfgs": "L-BFGS"}
    phases = train.get("phases") or []
    if not phases and train.get("optimizer") != "lbfgs":
        return ""
    parts = []
    for phase in phases or [train]:
        optimizer = phase.get("optimizer") or train.get("optimizer")
        if optimizer == "lbfgs":
            search = phase.get("line_search") or train.get("line_search") or "strong_wolfe"
            history = phase.get("history_size") or train.get("history_size") or 100
            parts.append(f"L-BFGS {phase.get('steps')} iterations ({search}, history {history})")
        else:
            lr = phase.get("lr") if phase.get("lr") is not None else train.get("lr")
            parts.append(
                f"{names.get(str(optimizer), optimizer)} {phase.get('steps')} steps (lr {lr})"
            )
    return ", then ".join(parts)


def schedule_summary(train: Mapping[str, Any]) -> str:
    """``", cosine schedule (warmup_steps 100), weight decay 0.01"`` for a resolved ``train``
    section (a plain mapping) whose schedule or weight decay is not the default; ``""`` when
    both are (runs made before schedules existed have neither key)."""
    parts = []
    schedule = train.get("schedule") or "constant"
    defaults = {k: users.get(schedule) for k, users in _SCHEDULE_PARAMETERS.items()}
    values = {k: train.get(k) if train.get(k) is not None else defaults[k] for k in defaults}
    params = [f"warmup_steps {train['warmup_steps']}"] if train.get("warmup_steps") else []
    params += [f"{k} {v}" for k, v in values.items() if v]
    if schedule != "constant" or params:
        parts.append(f"{schedule} schedule" + (f" ({', '.join(params)})" if params else ""))
    if train.get("weight_decay"):
        also = " (activation parameters too)" if train.get("decay_activation_params") else ""
        parts.append(f"weight decay {train['weight_decay']}{also}")
    return "".join(", " + p for p in parts)


class ExperimentConfig(_Strict):
    """One experiment: a target, a network, the variants to compare, and how to train them."""

    name: str = Field("elu", pattern=NAME_PATTERN)
    seeds: int | list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        10, description="a count (seeds 0..N-1) or a list of seeds"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = Field(
        "auto",
        description="CPU threads; auto: two or more only for a workload large enough to gain "
        "from them, and never more than the cores free when the run starts",
    )
    dtype: Literal["float32", "float64"] = "float32"
    target: TargetConfig = Field(default_factory=lambda: TargetConfig.model_validate({}))
    model: ModelConfig = Field(default_factory=ModelConfig)
    variants: list[Variant] = Field(default_factory=_default_variants, min_length=1, max_length=64)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig | None = Field(
        default_factory=TuneConfig,
        description="each variant's learning rate chosen on validation data before the "
        "comparison (default: on); off: every variant at its configured rate",
    )
    pde: PdeConfig | None = Field(
        None,
        description="a physics-informed problem (aaf_cli.pde), instead of target: the network "
        "u(inputs) is trained so that a differential equation and its conditions hold",
    )

    @model_serializer(mode="wrap")
    def _dump_target_or_pde(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # One of the two sections: a dump validates back (a PDE config has no target: key,
        # and a regression config's dump is what it was before pde: existed).
        data: dict[str, Any] = handler(self)
        data.pop("target" if self.pde is not None else "pde", None)
        return data

    @field_validator("tune", mode="before")
    @classmethod
    def _tune_switch(cls, tune: Any) -> Any:
        # YAML reads `off` and `on` as booleans.
        if tune is False or tune is None or tune == "off":
            return None
        if tune is True or tune == "on":
            return {}
        return tune

    @field_serializer("tune")
    def _tune_off(self, tune: TuneConfig | None) -> Any:
        return False if tune is None else tune.model_dump(mode="json")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads_null_is_auto(cls, threads: Any) -> Any:
        # Configs written before `auto` existed say `threads: null` (torch's default then).
        if threads is None or threads == "auto":
            return "auto"
        if isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads <= 1024:
            return threads
        raise ValueError(f"must be auto or a whole number from 1 to 1024 (got {threads!r})")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: int | list[int]) -> int | list[int]:
        if isinstance(seeds, int):
            if not 1 <= seeds <= MAX_SEEDS:
                raise ValueError(f"a seed count must be between 1 and {MAX_SEEDS} (got {seeds})")
        elif not seeds:
            raise ValueError("the list of seeds is empty")
        elif len(seeds) > MAX_SEEDS:
            raise ValueError(f"at most {MAX_SEEDS} seeds (got {len(seeds)})")
        elif len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat (got {seeds})")
        return seeds

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, variants: list[Variant]) -> list[Variant]:
        """Given names must be unique; a variant without one is named after what it is
        (``naming.default_names``: ``global-n5``, ``layer-sr``; ``fixed-1``, ``fixed-2`` for
        identical ones)."""
        from aaf_cli.naming import default_names

        given = [v.name if "name" in v.model_fields_set else None for v in variants]
        explicit = [n for n in given if n is not None]
        repeated = sorted({n for n in explicit if explicit.count(n) > 1})
        if repeated:
            raise ValueError(f"variant names must be unique ('{repeated[0]}' repeats)")
        entries = [v.model_dump(mode="json", exclude={"name"}) for v in variants]
        names = default_names(entries, given)
        out = []
        for v, g, name in zip(variants, given, names):
            if g is None:
                v = v.model_copy(update={"name": name})
                # Still "not given": a config re-validated with overrides (the API's
                # load_config(cfg, overrides)) names it afresh after what it then is.
                v.model_fields_set.discard("name")
            out.append(v)
        return out

    def to_data(self) -> dict[str, Any]:
        """The config as plain data that validates back to it, leaving out the names that were
        chosen automatically (so that overrides applied to it rename those variants as the
        same overrides on the original YAML would)."""
        data = self.model_dump(mode="json")
        for v, entry in zip(self.variants, data["variants"]):
            if "name" not in v.model_fields_set:
                del entry["name"]
        return data

    @model_validator(mode="after")
    def _phases_can_run(self) -> ExperimentConfig:
        problems = self.train.phase_problems()
        if problems:
            key, message = problems[0]
            raise ValueError(f"train.{key}: {message}")
        if self.tune is not None and all(
            p.optimizer == "lbfgs" for p in self.train.phase_configs()
        ):
            raise ValueError(
                "tune: on tunes each variant's learning rate, and lbfgs (the only optimiser "
                "here) takes none: its line search sets every step; set tune: off"
            )
        return self

    @model_validator(mode="after")
    def _graphs_need_cuda(self) -> ExperimentConfig:
        if self.train.cuda_graph is True and self.device == "cpu":
            raise ValueError(
                "train.cuda_graph: true needs device: cuda (a CUDA graph captures GPU work); "
                "use auto or false on the CPU"
            )
        return self

    @model_validator(mode="after")
    def _inputs_match_target(self) -> ExperimentConfig:
        d = self.model.layers[0]
        if self.pde is not None:
            if "target" in self.model_fields_set:
                raise ValueError(
                    "give target (fit a given function) or pde (a physics-informed problem), "
                    "not both"
                )
            try:
                check_inputs(self.pde, self.model.layers)
            except ConfigError as exc:
                raise ValueError(f"{exc.key}: {exc.message}") from None
            self._variant_layers(d)
            return self
        named = self.target.name is not None
        if named and d != 1:
            raise ValueError(
                f"model.layers: target '{self.target.name}' has one input, so layers must "
                f"start with 1 (got {d}); use target.expr with x1, x2, ... for more"
            )
        self._variant_layers(d)
        if named:
            return self
        allowed = ("x",) if d == 1 else tuple(f"x{i}" for i in range(1, d + 1))
        wrong = [v for v in self.target.variables() if v not in allowed]
        if wrong:
            raise ValueError(
                f"target.expr: uses {', '.join(wrong)}, but the network has {d} input"
                f"{'s' if d > 1 else ''} (model.layers starts with {d}), so the variables are "
                f"{', '.join(allowed)}"
            )
        return self

    def _variant_layers(self, inputs: int) -> None:
        for k, v in enumerate(self.variants):
            if v.layers is not None and (v.layers[0] != inputs or v.layers[-1] != 1):
                raise ValueError(
                    f"variants.{k}.layers: must start with the {inputs} input"
                    f"{'s' if inputs > 1 else ''} of model.layers and end with 1 "
                    f"(got {v.layers})"
                )

    def layers_of(self, variant: Any) -> list[int]:
        """A variant's widths: its own, or ``model.layers``."""
        return list(variant.layers) if variant.layers is not None else list(self.model.layers)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def to_yaml(self, header: str = "") -> str:
        """The fully resolved config as YAML, loadable again by ``load_config``."""
        body = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        return header + body


# --------------------------------------------------------------------------------------------
# Loading


class _Located:
    """Line and column (1-based) of every key path in a YAML document."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str | int, ...], tuple[int, int]] = {}

    def find(self, path: Sequence[str | int]) -> tuple[int, int] | None:
        path = tuple(path)
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return None


MAX_YAML_NODES = 100_000


def _locate(node: yaml.Node, source: str, path: tuple[str | int, ...], out: _Located) -> None:
    out.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if len(out.marks) > MAX_YAML_NODES:
        # Anchors used many times over ("billion laughs") would otherwise take forever.
        raise ConfigError(
            source,
            "",
            f"the YAML document is too large (over {MAX_YAML_NODES} values once "
            "aliases are expanded)",
            node.start_mark.line + 1,
            node.start_mark.column + 1,
        )
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                dotted = ".".join(str(p) for p in (*path, key))
                raise ConfigError(
                    source, dotted, "duplicate key", line, key_node.start_mark.column + 1
                )
            seen.add(key)
            _locate(value_node, source, (*path, key), out)
            # An error about a key's value points at the key's line.
            out.marks[path + (key,)] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _locate(item, source, (*path, i), out)


def _parse_yaml(text: str, source: str) -> tuple[Any, _Located]:
    located = _Located()
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return {}, located
            _locate(node, source, (), located)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except ConfigError as exc:  # a duplicate key, whose name may hold a line break
        raise ConfigError(source, _one_line(exc.key), exc.message, exc.line, exc.column) from None
    except RecursionError:
        raise ConfigError(
            source, "", "YAML nested too deeply, or an anchor inside itself"
        ) from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # PyYAML's constructors fail like this on 2020-02-30, !!int x, !!bool x, 5000-digit ints.
        problem = _one_line(str(exc).split(";")[0])
        raise ConfigError(source, "", f"invalid YAML value: {problem}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            tag = problem.split("tag", 1)[1].strip().strip("'")
            tag = tag.replace("tag:yaml.org,2002:", "!!")
            problem = f"unsupported tag '{tag}' (configs are plain YAML: no tags)"
        else:
            problem = f"YAML syntax error: {problem}"
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise ConfigError(source, "", _one_line(problem), line, column) from None
    except yaml.reader.ReaderError as exc:  # a control character; str(exc) has two lines
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        problem = str(exc).splitlines()[0]
        raise ConfigError(source, "", f"invalid YAML: {problem}", line, column) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", _one_line(f"invalid YAML: {exc}")) from None
    return data, located


def _read_text(path: Path) -> str:
    source = str(path)
    try:  # exists() raises too: a name too long, a folder that cannot be searched
        if not path.exists():
            raise ConfigError(source, "", "no such file")
        if path.is_dir():
            raise ConfigError(source, "", "is a directory, expected a YAML file")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# --set overrides


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Split ``key.path=value`` into a path (list indices as ints) and a YAML-parsed value."""
    where = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(where, "", "expected key.path=value, e.g. --set train.steps=200")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise ConfigError(where, key, "empty part in the key path")
    path: list[str | int] = [
        # Not int() of a 5000-digit index: Python refuses (ValueError) to convert one.
        int(p) if p.strip().removeprefix("-").isdecimal() and len(p) < 100 else p.strip()
        for p in parts
    ]
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(where, key, f"value is not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(where, key, "value is nested too deeply") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # PyYAML's constructors fail like this on 2020-02-30, !!int x, !!bool x, 5000-digit ints.
        problem = str(exc).split(";")[0]
        raise ConfigError(where, key, f"value is not valid YAML: {problem}") from None
    return path, value


def _default_tree() -> dict[str, Any]:
    return ExperimentConfig().model_dump(mode="json")


def apply_override(data: dict[str, Any], path: Sequence[str | int], value: Any, text: str) -> None:
    """Set ``value`` at ``path`` in the raw config, materialising defaults along the way."""
    where = f"--set {text}"
    dotted = ".".join(str(p) for p in path)
    defaults: Any = _default_tree()
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        defaults = _child(defaults, part)
        if isinstance(node, list):
            if not isinstance(part, int):
                raise ConfigError(where, dotted, f"'{part}' is not a list index")
            if not -len(node) <= part < len(node):
                prefix = ".".join(str(p) for p in path[:depth]) or "the config"
                raise ConfigError(
                    where, dotted, f"index {part} is out of range ({prefix} has {len(node)} items)"
                )
        elif isinstance(node, dict):
            if isinstance(part, int):
                part = str(part)
            if not last and part not in node:
                # A missing list (the default variants) is filled in so items can be indexed; a
                # missing section starts empty, so target-dependent defaults still apply.
                node[part] = copy.deepcopy(defaults) if isinstance(defaults, list) else {}
        else:
            prefix = ".".join(str(p) for p in path[:depth])
            raise ConfigError(where, dotted, f"'{prefix}' holds a value, not a section")
        if last:
            node[part] = value
        else:
            node = node[part]


def _child(tree: Any, part: str | int) -> Any:
    if isinstance(tree, dict):
        return tree.get(str(part))
    if isinstance(tree, list) and isinstance(part, int) and -len(tree) <= part < len(tree):
        return tree[part]
    return None


# --------------------------------------------------------------------------------------------
# Validation errors -> one line


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(tp)]
    return [tp]


def _walk(loc: Sequence[str | int]) -> tuple[list[str | int], type[BaseModel] | None]:
    """Clean a pydantic error location (drop union tags) and find the model that owns it."""
    path: list[str | int] = []
    tp: Any = ExperimentConfig
    for part in loc:
        members = _union_members(tp)
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) > 1:
            tagged = [m for m in models if _kind_literal(m) == part]
            if tagged:
                tp = tagged[0]
                continue
        if len(members) > 1 and not models and isinstance(part, str):
            continue  # the tag of a plain union member ('int', 'list[float]'): not a key
        model = models[0] if len(models) == 1 else None
        path.append(part)
        mappings = [m for m in members if typing.get_origin(m) is dict]
        if mappings and isinstance(part, str):
            tp = typing.get_args(mappings[0])[1]  # a key of target.params: on to its value
            continue
        if model is not None and isinstance(part, str) and part in model.model_fields:
            tp = model.model_fields[part].annotation
            continue
        sequences = [m for m in members if typing.get_origin(m) in (list, tuple)]
        if sequences and isinstance(part, int):
            args = typing.get_args(sequences[0])
            tp = args[0] if args else Any
            continue
        tp = Any
    owner = [m for m in _union_members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return path, owner[0] if len(owner) == 1 else None


def _kind_literal(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("kind")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return str(args[0]) if args else None


def _describe(error: Mapping[str, Any]) -> tuple[list[str | int], str]:
    loc = list(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        path, owner = _walk(loc[:-1])
        key = str(loc[-1])
        valid = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listing = f" (valid keys: {', '.join(valid)})" if valid else ""
        return [*path, key], f"unknown key '{key}'{hint}{listing}"
    path, _ = _walk(loc)
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    # Checks across sections (ExperimentConfig's own validators) name their key first.
    keyed = re.match(r"^([a-z_]+(?:\.[a-z_0-9]+)*): (.*)$", message)
    if keyed and "." not in keyed.group(1) and keyed.group(1) not in ExperimentConfig.model_fields:
        keyed = None  # "word: ..." is a key only when it is a section of the config
    if not path and keyed:
        return list(keyed.group(1).split(".")), keyed.group(2)
    if kind == "missing":
        return path, "missing required key"
    if kind == "union_tag_not_found":
        from aaf_cli.registry import KINDS

        return [*path, "kind"], f"missing 'kind' (one of: {', '.join(KINDS)})"
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        from aaf_cli.registry import KINDS

        valid = [k for k in KINDS if k in message] or list(KINDS)
        close = difflib.get_close_matches(str(tag), valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return [*path, "kind"], f"unknown kind '{tag}'{hint} (valid: {', '.join(valid)})"
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return path, f"expected a mapping of keys, got {_show(error.get('input'))}"
    shown = _show(error.get("input"))
    if "input" in error and not isinstance(error["input"], (dict, list)) and shown not in message:
        message += f" (got {shown})"
    return path, message


def _show(value: Any) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int over 4300 digits, a list nested too deeply
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped as repr() would."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _config_error(
    exc: ValidationError,
    source: str,
    located: _Located,
    overridden: Mapping[tuple[str | int, ...], str],
) -> ConfigError:
    errors = exc.errors()
    # A value that fits one member of a union (seeds: a count or a list) but breaks a rule of
    # it is better told by that rule than by "not a valid integer" from the other member.
    first = errors[0]
    if str(first["type"]).endswith("_type"):
        specific = [e for e in errors if not str(e["type"]).endswith("_type")]
        if specific and tuple(specific[0]["loc"][:1]) == tuple(first["loc"][:1]):
            errors = [specific[0]] + [e for e in errors if e is not specific[0]]
    # The other member of such a union fails at the same path too: not a second error.
    chosen = tuple(errors[0]["loc"])
    errors = [errors[0]] + [
        e
        for e in errors[1:]
        if not (
            str(e["type"]).endswith("_type")
            and (
                chosen[: len(e["loc"])] == tuple(e["loc"])
                or tuple(e["loc"])[: len(chosen)] == chosen
            )
        )
    ]
    described = [_describe(e) for e in errors]
    others = tuple(str(_located_error(p, m, source, located, overridden)) for p, m in described[1:])
    path, message = described[0]
    if others:
        message += f" (and {len(others)} more: aaf validate lists them all)"
    return _located_error(path, message, source, located, overridden, others)


def _located_error(
    path: list[str | int],
    message: str,
    source: str,
    located: _Located,
    overridden: Mapping[tuple[str | int, ...], str],
    others: tuple[str, ...] = (),
) -> ConfigError:
    """A ConfigError at ``path``: named by the ``--set`` that gave its value, else by its
    file, line and column."""
    dotted, message = _one_line(".".join(str(p) for p in path)), _one_line(message)
    for prefix in (tuple(path[:i]) for i in range(len(path), 0, -1)):
        if prefix in overridden:
            setting = _one_line(overridden[prefix])
            return ConfigError(f"{source} (--set {setting})", dotted, message, others=others)
    line, column = located.find(path) or (None, None)
    return ConfigError(source, dotted, message, line, column, others)


def load_config(
    path: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """Load, override and validate an experiment config.

    Args:
        path: a YAML file, a mapping of the same keys (messages name it ``<mapping>``), or None
            for the built-in default experiment.
        overrides: ``key.path=value`` strings applied in order (list items by index).

    Returns:
        The frozen, fully resolved config.

    Raises:
        ConfigError: naming the file, the key path and the problem.
    """
    if path is None:
        source = DEFAULT_SOURCE
        data: Any = {}
        located = _Located()
    elif isinstance(path, Mapping):
        source = "<mapping>"
        data = copy.deepcopy(dict(path))
        located = _Located()
    else:
        source = str(path)
        data, located = _parse_yaml(_read_text(Path(path)), source)
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"the top level must be a mapping of keys, got {_show(data)}")
    overridden: dict[tuple[str | int, ...], str] = {}
    for text in overrides:
        try:
            keys, value = parse_override(text)
            apply_override(data, keys, value, text)
        except ConfigError as exc:
            raise ConfigError(
                f"{source} ({_one_line(exc.source)})", _one_line(exc.key), _one_line(exc.message)
            ) from None
        overridden[tuple(keys)] = text
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, source, located, overridden) from None
