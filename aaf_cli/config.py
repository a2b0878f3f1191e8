"""Experiment config: YAML + ``--set`` overrides -> a typed, validated, frozen ``ExperimentConfig``.

This module is the one validation choke point: everything the user can type is checked here, and
every problem becomes a ``ConfigError`` that names the file, the key path (``train.lr``,
``variants.1.n``) and what is wrong, with the line in the YAML file where one is known.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from aaf_cli.errors import ConfigError
from aaf_cli.problems import ProblemSections, absolute_paths
from aaf_cli.registry import ACTIVATIONS
from aaf_cli.schema import (
    MAX_INPUTS,
    MAX_SEED,
    MAX_SEEDS,
    MAX_WIDTH,
    NAME_PATTERN,
    Strict,
    unknown,
)
from aaf_cli.train_config import (
    LBFGS_KEYS,
    OPTIMIZERS,
    PhaseConfig,
    TrainConfig,
    phases_summary,
    schedule_summary,
)
from aaf_cli.yamlfile import (
    Located,
    apply_override,
    one_line,
    parse_override,
    parse_yaml,
    read_text,
)

__all__ = [
    "DEFAULT_SOURCE",
    "LBFGS_KEYS",
    "OPTIMIZERS",
    "ExperimentConfig",
    "PhaseConfig",
    "TrainConfig",
    "TuneConfig",
    "Variant",
    "load_config",
    "parse_override",
    "phases_summary",
    "schedule_summary",
    "variant_parameters",
]

DEFAULT_SOURCE = "<built-in default>"


class ModelConfig(Strict):
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
            raise unknown("activation", name, list(ACTIVATIONS))
        return name

    @field_validator("layers")
    @classmethod
    def _scalar_output(cls, layers: list[int]) -> list[int]:
        if layers[-1] != 1:
            raise ValueError(f"the targets have one output: layers must end with 1 (got {layers})")
        if layers[0] > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs (got {layers[0]})")
        return layers


class SlopeRecovery(Strict):
    """The slope-recovery term w * S(a) added to the training loss (Jagtap et al., RSPA 2020)."""

    weight: float = Field(1.0, ge=0.0, le=1e6, description="w in loss = MSE + w * S(a)")
    form: Literal["paper", "code"] = Field(
        "paper",
        description="paper: S = 1 / mean_k exp(a_k); code: the authors' TF1 script, "
        "1 / sum_k exp(a_k) (= paper / (D-1))",
    )


class _Variant(Strict):
    #: Set on a variant whose widths ``match`` chose: the ``layers`` it was given (a
    #: one-element list; None inside where it gave none), which ``to_data`` hands back.
    _given_layers: list[list[int] | None] | None = PrivateAttr(None)

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

    match: Literal["params", "flops", "none"] | None = Field(
        None,
        description="choose this variant's hidden width so that its trainable parameters "
        "(params) or forward FLOPs per point (flops) are within 5% of the baseline's; none: "
        "keep its widths; default: the experiment's match",
    )

    def __eq__(self, other: object) -> bool:
        # Equal as configs: the widths a match started from (``_given_layers``) are
        # bookkeeping, not part of what the variant is.
        if not isinstance(other, BaseModel):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    @property
    def base(self) -> str | None:
        """The variant's own base activation, if its kind has one and it sets it."""
        return None

    @property
    def structure(self) -> tuple[Any, ...]:
        """What models of this kind must share to train in one ensemble, besides kind, base
        activation and widths (Rowdy's K, the rational degrees, a spline's grid)."""
        return ()


class _Based(_Variant):
    activation: str | None = Field(
        None, description="this variant's base activation; default: model.activation"
    )

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, name: str | None) -> str | None:
        if name is not None and name not in ACTIVATIONS:
            raise unknown("activation", name, list(ACTIVATIONS))
        return name

    @property
    def base(self) -> str | None:
        return self.activation


class FixedVariant(_Based):
    """The baseline: sigma(L_k) in every hidden layer; with a slope, sigma(s * L_k) with s
    fixed (the control of an adaptive slope: its steepness without its adaptivity)."""

    kind: Literal["fixed"]
    name: str = Field("fixed", pattern=NAME_PATTERN)
    slope: float | None = Field(
        None, gt=0.0, le=1e4, description="a fixed steepness s: sigma(s * x); default: none (1)"
    )
    slope_from: str | None = Field(
        None,
        description="take s from the named adaptive variant of this run (the median over "
        "seeds of its final mean n*a), trained first; the control answers 'adaptivity "
        "against a fixed steeper activation'",
    )

    @model_validator(mode="after")
    def _one_slope(self) -> FixedVariant:
        # (A run sets slope once slope_from's s is known, by copy, without validation.)
        if self.slope is not None and self.slope_from is not None:
            raise ValueError("give slope or slope_from, not both")
        return self

    @property
    def structure(self) -> tuple[Any, ...]:
        return (self.slope is not None or self.slope_from is not None,)


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

    @property
    def structure(self) -> tuple[Any, ...]:
        return (self.K,)


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

    @property
    def structure(self) -> tuple[Any, ...]:
        return (tuple(self.degrees),)


class _Spline(_Based):
    """A B-spline of order k on a grid of G intervals over grid_range (``aaf_cli.splines``)."""

    grid: int = Field(5, ge=1, le=1000, description="G: the spline grid's intervals")
    order: int = Field(
        3,
        ge=1,
        le=10,
        description="k: the B-splines' order, 1 (piecewise linear) to 10; 3: cubic (order 0, "
        "piecewise constant, has no derivative to train its inputs by)",
    )
    grid_range: tuple[float, float] = Field(
        (-1.0, 1.0), description="[lo, hi]: where the grid lies (extended by k intervals)"
    )

    @model_validator(mode="after")
    def _grid(self) -> _Spline:
        if self.order > self.grid:
            raise ValueError(
                f"order: a spline of order {self.order} needs a grid of at least "
                f"{self.order} intervals (grid is {self.grid})"
            )
        lo, hi = self.grid_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"grid_range: must be [lo, hi] with lo < hi (got [{lo}, {hi}])")
        return self


class GridUpdate(Strict):
    """Refit a KAN's grids to its layers' inputs during training (pykan's ``update_grid``):
    at steps 0, every, 2 every, ... below until (pykan's fit: every 5 below 50)."""

    every: int = Field(5, ge=1, le=1_000_000, description="steps between updates")
    until: int = Field(50, ge=1, le=10_000_000, description="no update from this step on")

    def steps(self) -> range:
        return range(0, self.until, self.every)


class KanVariant(_Spline):
    """KAN (Liu et al. 2024): a learnable B-spline plus w_b * b(x) on every edge, summed per
    output; replaces the layers of the MLP (its widths: the KAN's)."""

    kind: Literal["kan"]
    name: str = Field("kan", pattern=NAME_PATTERN)
    activation: str | None = Field(
        "silu", description="the base branch b(x) of every edge; default silu, as pykan"
    )
    grid_update: GridUpdate | None = Field(
        None,
        description="refit every grid to its layer's inputs at the training points, keeping "
        "the functions (least squares), as pykan's fit does ({every: 5, until: 50}); default "
        "off: the grid stays on grid_range",
    )

    @field_validator("grid_update", mode="before")
    @classmethod
    def _grid_update_switch(cls, value: Any) -> Any:
        return {} if value is True or value == "on" else (None if value is False else value)

    @property
    def structure(self) -> tuple[Any, ...]:
        update = self.grid_update
        steps = None if update is None else (update.every, update.until)
        return (self.grid, self.order, tuple(self.grid_range), steps)


class SplineVariant(_Spline):
    """An MLP with learnable B-spline activations: sigma(z) + sum_c c_c B_c(z), per hidden
    neuron or per hidden layer, with c = 0 at the start (the fixed network)."""

    kind: Literal["spline"]
    name: str = Field("spline", pattern=NAME_PATTERN)
    per: Literal["neuron", "layer"] = Field(
        "neuron", description="one spline per hidden neuron, or one per hidden layer"
    )

    @property
    def structure(self) -> tuple[Any, ...]:
        return (self.per, self.grid, self.order, tuple(self.grid_range))


AnyVariant = Union[  # noqa: UP007
    FixedVariant,
    GlobalVariant,
    LayerVariant,
    NeuronVariant,
    RowdyVariant,
    PReLUVariant,
    SwishVariant,
    RationalVariant,
    KanVariant,
    SplineVariant,
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


#: The kinds with a trainable slope n*a, which a fixed control's slope_from may name.
SLOPED_KINDS = ("global", "layer", "neuron", "rowdy")

#: The default learning-rate grid of a tuned run: each variant's rate times these factors.
TUNE_FACTORS = (1 / 3, 1.0, 3.0)
#: Tuning seeds start here (never an evaluation seed: the first ones not in ``seeds`` are taken).
TUNE_SEED_START = 1_000_000


class TuneConfig(Strict):
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


class RunSettings(Strict):
    """Where and how an experiment's models run: its name, seeds, device, threads, dtype
    (the first keys of ``ExperimentConfig``)."""

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


class ExperimentConfig(ProblemSections, RunSettings):
    """One experiment: a problem (``ProblemSections``: a target or a PDE), a network, the
    variants to compare, and how to train them."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    variants: list[Variant] = Field(default_factory=_default_variants, min_length=1, max_length=64)
    train: TrainConfig = Field(default_factory=TrainConfig)
    match: Literal["params", "flops"] | None = Field(
        None,
        description="compare at equal size: give every variant the hidden width that brings "
        "its trainable parameters (params) or forward FLOPs per point (flops) within 5% of "
        "the baseline's (a variant's own match overrides; none keeps its widths)",
    )
    tune: TuneConfig | None = Field(
        default_factory=TuneConfig,
        description="each variant's learning rate chosen on validation data before the "
        "comparison (default: on); off: every variant at its configured rate",
    )

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
        """The config as plain data that validates back to it, leaving out the names and the
        matched widths that were chosen automatically (so that overrides applied to it rename
        and resize those variants as the same overrides on the original YAML would)."""
        data = self.model_dump(mode="json")
        for v, entry in zip(self.variants, data["variants"]):
            if "name" not in v.model_fields_set:
                del entry["name"]
            if v._given_layers is not None:  # widths chosen by match: chosen afresh
                entry["layers"] = v._given_layers[0]
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
    def _inputs_match_problem(self) -> ExperimentConfig:
        conflict = self.problem_conflict()
        if conflict is not None:
            raise ValueError(conflict)
        self.problem_section().check_layers(self.model.layers)
        self._variant_layers(self.model.layers[0])
        return self

    def _variant_layers(self, inputs: int) -> None:
        for k, v in enumerate(self.variants):
            if v.layers is not None and (v.layers[0] != inputs or v.layers[-1] != 1):
                raise ValueError(
                    f"variants.{k}.layers: must start with the {inputs} input"
                    f"{'s' if inputs > 1 else ''} of model.layers and end with 1 "
                    f"(got {v.layers})"
                )

    @model_validator(mode="after")
    def _controls(self) -> ExperimentConfig:
        names = [v.name for v in self.variants]
        for k, v in enumerate(self.variants):
            source = getattr(v, "slope_from", None)
            if source is None:
                continue
            key = f"variants.{k}.slope_from"
            if source == v.name:
                raise ValueError(f"{key}: names the variant itself; name an adaptive variant")
            if source not in names:
                raise ValueError(
                    f"{key}: no variant is named '{source}' (variants: {', '.join(names)})"
                )
            kind = self.variants[names.index(source)].kind
            if kind not in SLOPED_KINDS:
                raise ValueError(
                    f"{key}: '{source}' is a {kind} variant, without a trainable slope n*a; "
                    f"name one of kind {', '.join(SLOPED_KINDS)}"
                )
        return self

    @model_validator(mode="after")
    def _match_sizes(self) -> ExperimentConfig:
        from aaf_cli import sizing

        baseline = self.baseline_variant
        for k, v in enumerate(self.variants):
            what = v.match if v.match is not None else self.match
            if what in (None, "none") or v is baseline:
                continue
            target = sizing.measure(what, baseline, self.layers_of(baseline))
            layers, count, within = sizing.matched_layers(what, v, self.layers_of(v), target)
            if not within:
                raise ValueError(
                    f"variants.{k}.match: no hidden width brings {v.name} within 5% of "
                    f"{baseline.name}'s {target} {sizing.unit(what)} (nearest: {count} at "
                    f"layers {layers}); change its depth (its layers) or set match: none"
                )
            matched = v.model_copy(update={"layers": layers})
            matched._given_layers = v._given_layers or [v.layers]
            self.variants[k] = matched
        return self

    @property
    def baseline_variant(self) -> Any:
        """The variant every other is compared with: the first fixed one without a slope,
        else the first."""
        return next(
            (v for v in self.variants if v.kind == "fixed" and not v.structure[0]),
            self.variants[0],
        )

    def group_key(self, variant: Any) -> tuple[Any, ...]:
        """Variants that can share one batched ensemble: same kind, base activation, widths
        and structure (Rowdy's K, the rational degrees, a spline's grid). n, a0, lr and slope
        recovery vary per model."""
        base = variant.base or self.model.activation
        return (variant.kind, base, tuple(self.layers_of(variant)), *variant.structure)

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
# Validation errors -> one line


def _default_tree() -> dict[str, Any]:
    return ExperimentConfig().model_dump(mode="json")


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(tp)]
    return [tp]


def _tags(tp: Any) -> dict[str, Any]:
    """The members of a union discriminated by ``Tag``s (``target:``), by tag."""
    tp = tp if typing.get_origin(tp) in (Union, types.UnionType) else _unwrap(tp)
    out: dict[str, Any] = {}
    for member in typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else ():
        if typing.get_origin(member) is Annotated:
            tag = next((m.tag for m in member.__metadata__ if isinstance(m, Tag)), None)
            if tag is not None:
                out[tag] = _unwrap(member)
    return out


def _walk(loc: Sequence[str | int]) -> tuple[list[str | int], type[BaseModel] | None]:
    """Clean a pydantic error location (drop union tags) and find the model that owns it."""
    path: list[str | int] = []
    tp: Any = ExperimentConfig
    for part in loc:
        members = _union_members(tp)
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(models) > 1:
            tagged = [m for m in models if _kind_literal(m) == part]
            tagged = tagged or [m for tag, m in _tags(tp).items() if tag == part]
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
        parts = keyed.group(1).split(".")
        return [int(p) if p.isdigit() else p for p in parts], keyed.group(2)
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


def _config_error(
    exc: ValidationError,
    source: str,
    located: Located,
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
    located: Located,
    overridden: Mapping[tuple[str | int, ...], str],
    others: tuple[str, ...] = (),
) -> ConfigError:
    """A ConfigError at ``path``: named by the ``--set`` that gave its value, else by its
    file, line and column."""
    dotted, message = one_line(".".join(str(p) for p in path)), one_line(message)
    for prefix in (tuple(path[:i]) for i in range(len(path), 0, -1)):
        if prefix in overridden:
            setting = one_line(overridden[prefix])
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
        located = Located()
    elif isinstance(path, Mapping):
        source = "<mapping>"
        data = copy.deepcopy(dict(path))
        located = Located()
    else:
        source = str(path)
        data, located = parse_yaml(read_text(Path(path)), source)
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"the top level must be a mapping of keys, got {_show(data)}")
    if isinstance(path, (str, Path)):
        absolute_paths(data, Path(path).parent)
    overridden: dict[tuple[str | int, ...], str] = {}
    for text in overrides:
        try:
            keys, value = parse_override(text)
            apply_override(data, keys, value, text, _default_tree())
        except ConfigError as exc:
            raise ConfigError(
                f"{source} ({one_line(exc.source)})", one_line(exc.key), one_line(exc.message)
            ) from None
        overridden[tuple(keys)] = text
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, source, located, overridden) from None
