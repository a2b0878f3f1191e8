"""The ``train:`` section: the optimiser, its schedule, its phases, logging and compiling.

Importable without torch, like the rest of the config (``config.ExperimentConfig`` holds it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from aaf_cli.schema import MAX_STEPS, Strict

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


class PhaseConfig(Strict):
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


class TrainConfig(Strict):
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
