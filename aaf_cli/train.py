"""The training loop: every model of an ensemble takes each step at once.

Pure: no printing, no files. Metrics stay on the device between log steps and reach the host only
every ``log_every`` steps (and at the end), through the ``on_log`` callback.
"""

from __future__ import annotations

import contextlib
import math
import time
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import nn

from aaf_cli.config import TrainConfig
from aaf_cli.models import Groups

if TYPE_CHECKING:
    from aaf_cli.lbfgs import Evaluate, StackedLBFGS
    from aaf_cli.resume import Stage


@dataclass(frozen=True)
class LogRecord:
    """Metrics of every model at one logged step (host tensors of shape ``[M]``)."""

    step: int
    elapsed: float
    train_loss: torch.Tensor  # the data term (MSE) only
    test_loss: torch.Tensor  # NaN where the run measures no test data (a tuning phase)
    recovery: torch.Tensor  # S(a), NaN for models without slope recovery
    params: dict[str, torch.Tensor]  # logged activation parameters, NaN where a model has none
    val_loss: torch.Tensor | None = None  # the validation metric; None: no validation data
    # Function evaluations per model that reached this step ([M] long; None: one per step).
    evals: torch.Tensor | None = None

    def val(self) -> torch.Tensor:
        """The validation metric ``[M]`` (NaN without validation data)."""
        if self.val_loss is None:
            return torch.full_like(self.train_loss, math.nan)
        return self.val_loss


@dataclass
class TrainResult:
    """What a training run produced. Step indices are -1 where an event never happened."""

    records: list[LogRecord]
    steps_to_threshold: torch.Tensor
    diverged_at: torch.Tensor
    predictions: torch.Tensor
    wall_time: float
    steps_done: int
    interrupted: bool = False
    extra: dict[str, float | str] = field(default_factory=dict)
    #: Per model, why an L-BFGS phase stopped it before its last iteration (``lbfgs.
    #: STOP_REASONS``' keys, divergence left out), or None; empty without L-BFGS.
    stopped_early: list[str | None] = field(default_factory=list)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """The factor on every model's own (peak) learning rate at update ``step`` (0-based).

    Update s < ``warmup_steps`` uses s / warmup_steps (the first update has rate 0, as in the
    usual linear warmup from 0); then, with t = s - warmup_steps steps since the warmup and
    T = steps - warmup_steps: ``constant`` 1, ``cosine`` f + (1 - f)(1 + cos(pi t / T)) / 2 with
    f = ``min_lr_factor`` (it would reach f after the last update), ``exponential`` gamma^t,
    ``step`` gamma^(t // step_size). These are ``torch.optim.lr_scheduler``'s LambdaLR warmup
    followed, through SequentialLR at milestone ``warmup_steps``, by ConstantLR(factor=1),
    CosineAnnealingLR(T_max=T, eta_min=f * lr), ExponentialLR and StepLR.
    """
    warmup = cfg.warmup_steps
    if step < warmup:
        return step / warmup
    if cfg.schedule == "constant":
        return 1.0
    t = step - warmup
    params = cfg.effective_schedule()
    if cfg.schedule == "cosine":
        floor = params.get("min_lr_factor", 0.0)
        return floor + (1.0 - floor) * (1.0 + math.cos(math.pi * t / (cfg.steps - warmup))) / 2
    if cfg.schedule == "exponential":
        return params["gamma"] ** t
    return params["gamma"] ** (t // int(params["step_size"]))  # step


class _Stacked:
    """Parameters stacked along a model axis ``[M, ...]``, each with a learning rate per row.

    Several groups of models share one optimiser: ``offsets`` say where each parameter's rows
    start in the list of all models. A row whose rate is zero, or whose model is no longer
    active (diverged), is frozen exactly: its gradient is masked (a NaN gradient cannot reach
    its state) and its step is multiplied by a zero rate, so its values do not change. A
    schedule scales every rate by one factor per step (a factor of 0, the first step of a
    warmup, updates the optimiser state as torch does, not the values). ``decays`` holds each
    parameter's weight decay per row, or None where it has none. A parameter without a
    gradient at a step is frozen for that step (``train`` compiles no step for a loss that
    leaves a parameter without one: a compiled step hands every parameter a gradient).

    Every parameter becomes a view of one flat tensor (``flat``; their ``.data`` is rebound to
    it, values unchanged), and the rates, decays and model rows are spread to one value per
    element, so an update is a dozen operations whatever the number of layers. When the caller
    knows that every model is active (``all_active``) and no rate is zero, the masks are
    skipped: the masked update of an active row is the same arithmetic. ``factor`` and the bias
    corrections may be device tensors (a compiled or captured step) or Python floats.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        rates: Sequence[torch.Tensor],
        offsets: Sequence[int],
        decays: Sequence[torch.Tensor | None] | None = None,
    ) -> None:
        self.params = list(params)
        self.offsets = list(offsets)
        ref = self.params[0]
        if any(p.dtype != ref.dtype or p.device != ref.device for p in self.params):
            raise ValueError("stacked parameters must share one dtype and one device")
        per_row = [p.numel() // p.shape[0] for p in self.params]
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
            for p, view in zip(self.params, self.views(self.flat)):
                p.data = view

        def spread(values: Sequence[torch.Tensor]) -> torch.Tensor:
            """Per-row values ``[M_g]`` of every parameter as one value per element."""
            return torch.cat(
                [
                    v.reshape(-1).to(ref.device, ref.dtype).repeat_interleave(k)
                    for v, k in zip(values, per_row)
                ]
            )

        self.rate = spread(rates)
        self.row_of = spread(
            [torch.arange(s, s + p.shape[0]) for p, s in zip(self.params, self.offsets)]
        ).long()
        given = list(decays or [None] * len(self.params))
        self.decay: torch.Tensor | None = None
        if any(d is not None for d in given):
            self.decay = spread(
                [ref.new_zeros(p.shape[0]) if d is None else d for p, d in zip(self.params, given)]
            )
        # Known once, from the config: a zero rate is a frozen row whatever happens later.
        self.zero_rates = bool((self.rate <= 0).any())

    def views(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every parameter's slice of ``flat`` (a tensor laid out like ``self.flat``), in its
        shape."""
        out: list[torch.Tensor] = []
        at = 0
        for p in self.params:
            out.append(flat[at : at + p.numel()].view(p.shape))
            at += p.numel()
        return tuple(out)

    def _masked(
        self,
        active: torch.Tensor,
        factor: float | torch.Tensor,
        all_active: bool | None,
        l2: bool = False,
        flat_grad: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(gradient, rates times ``factor``) per element, or None when no parameter has a
        gradient; the gradient is ``flat_grad`` when given (one value per element of ``flat``:
        every parameter has one), else the parameters' ``.grad``; ``l2`` adds ``decay * param``
        to the gradient first; then the gradients of frozen rows are zeroed, unless no row can
        be frozen."""
        present: torch.Tensor | None = None
        if flat_grad is not None:
            grad = flat_grad
        else:
            grads = [p.grad for p in self.params]
            if all(g is None for g in grads):
                return None
            if any(g is None for g in grads):
                present = torch.cat(
                    [
                        torch.full((p.numel(),), g is not None, device=p.device)
                        for p, g in zip(self.params, grads)
                    ]
                )
            grad = torch.cat(
                [
                    p.new_zeros(p.numel()) if g is None else g.reshape(-1)
                    for p, g in zip(self.params, grads)
                ]
            )
        if l2 and self.decay is not None:
            grad = grad + self.decay * self.flat
        rate = self.rate
        if not (all_active and not self.zero_rates and present is None):
            keep = active[self.row_of]
            rate = rate * (keep if present is None else keep & present)
            grad = torch.where(rate > 0, grad, 0.0)
        if isinstance(factor, torch.Tensor) or factor != 1.0:
            rate = rate * factor
        return grad, rate


class StackedAdam(_Stacked):
    """Adam over stacked parameters; element for element ``torch.optim.Adam`` (no amsgrad), and
    with weight decay ``torch.optim.AdamW`` (decoupled: ``w *= 1 - lr_t * decay``)."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        rates: Sequence[torch.Tensor],
        offsets: Sequence[int],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decays: Sequence[torch.Tensor | None] | None = None,
    ) -> None:
        super().__init__(params, rates, offsets, decays)
        self.betas = betas
        self.eps = eps
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat)
        self.t = 0

    def state(self) -> list[torch.Tensor]:
        """The tensors that one step changes."""
        return [self.flat, self.m, self.v]

    def state_dict(self) -> dict[str, Any]:
        """The moments and the step count, copied to the CPU (the parameters are the
        model's)."""
        return {"m": self.m.to("cpu", copy=True), "v": self.v.to("cpu", copy=True), "t": self.t}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` gave, in place (a compiled or captured step keeps
        reading the same tensors)."""
        self.m.copy_(state["m"])
        self.v.copy_(state["v"])
        self.t = int(state["t"])

    def bias_corrections(self, t: int | None = None) -> tuple[float, float]:
        """``1 - beta1^t`` and ``sqrt(1 - beta2^t)`` after ``t`` steps (default ``self.t``), in
        double precision (Python floats), as torch.optim.Adam computes them."""
        t = self.t if t is None else t
        beta1, beta2 = self.betas
        bias1 = 1 - beta1**t
        return bias1, math.sqrt(1 - beta2**t)

    @torch.no_grad()
    def step(
        self,
        active: torch.Tensor,
        factor: float | torch.Tensor = 1.0,
        all_active: bool | None = None,
        corrections: tuple[torch.Tensor, torch.Tensor] | None = None,
        flat_grad: torch.Tensor | None = None,
    ) -> None:
        """One update of the active rows, at ``factor`` times their rates.

        ``all_active``: True when the caller knows every model is active (None: unknown).
        ``corrections``: the bias corrections as device tensors, from a step index on the device
        (a compiled or graph-captured step); by default they come from ``self.t`` (counted
        here) as Python floats.
        ``flat_grad``: the gradient of ``flat`` (a compiled step), else the parameters' ``.grad``.
        """
        beta1, beta2 = self.betas
        bias1: float | torch.Tensor
        bias2_sqrt: float | torch.Tensor
        if corrections is None:
            self.t += 1
            bias1, bias2_sqrt = self.bias_corrections()
        else:
            bias1, bias2_sqrt = corrections
        masked = self._masked(active, factor, all_active, flat_grad=flat_grad)
        if masked is None:
            return
        grad, rate = masked
        if self.decay is not None:
            self.flat.mul_(1 - rate * self.decay)
        self.m.lerp_(grad, 1 - beta1)
        self.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (self.v.sqrt() / bias2_sqrt).add_(self.eps)
        self.flat.sub_(self.m / denom * (rate / bias1))


class StackedSGD(_Stacked):
    """SGD (optionally with momentum) over stacked parameters, as ``torch.optim.SGD``; weight
    decay is its L2 term, ``decay * w`` added to the gradient before the momentum."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        rates: Sequence[torch.Tensor],
        offsets: Sequence[int],
        momentum: float = 0.0,
        decays: Sequence[torch.Tensor | None] | None = None,
    ) -> None:
        super().__init__(params, rates, offsets, decays)
        self.momentum = momentum
        # Zero before the first step: momentum x 0 + g is torch's first buffer, g, exactly.
        self.buffer = torch.zeros_like(self.flat) if momentum else None

    def state(self) -> list[torch.Tensor]:
        """The tensors that one step changes."""
        return [self.flat] + ([] if self.buffer is None else [self.buffer])

    def state_dict(self) -> dict[str, Any]:
        """The momentum buffer (None without momentum), copied to the CPU."""
        return {"buffer": None if self.buffer is None else self.buffer.to("cpu", copy=True)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` gave, in place."""
        if self.buffer is not None:
            self.buffer.copy_(state["buffer"])

    @torch.no_grad()
    def step(
        self,
        active: torch.Tensor,
        factor: float | torch.Tensor = 1.0,
        all_active: bool | None = None,
        corrections: tuple[torch.Tensor, torch.Tensor] | None = None,
        flat_grad: torch.Tensor | None = None,
    ) -> None:
        """One update of the active rows, at ``factor`` times their rates (``all_active`` and
        ``flat_grad`` as ``StackedAdam.step``; SGD has no bias corrections)."""
        masked = self._masked(active, factor, all_active, l2=True, flat_grad=flat_grad)
        if masked is None:
            return
        grad, rate = masked
        if self.buffer is not None:
            self.buffer.mul_(self.momentum).add_(grad)
            grad = self.buffer
        self.flat.sub_(grad * rate)


def weight_decays(model: Groups, cfg: TrainConfig) -> list[torch.Tensor | None]:
    """Each parameter's weight decay per model row (as ``model.rows`` orders them), or None
    where it has none.

    A model uses its variant's ``weight_decay``, else ``cfg.weight_decay``. It applies to the
    weights and biases of the linear layers; activation parameters (slopes, Rowdy and rational
    coefficients) only with ``cfg.decay_activation_params``: pulling a slope toward 0 changes
    the method being compared.
    """
    per_model = [
        cfg.weight_decay
        if m.spec is None or m.spec.weight_decay is None
        else float(m.spec.weight_decay)
        for m in model.members
    ]
    dense = {id(p) for g in model.ensembles() for p in g.decayed()}
    out: list[torch.Tensor | None] = []
    for p, _, start in model.rows(cfg.lr):
        rows = per_model[start : start + p.shape[0]]
        decayed = id(p) in dense or cfg.decay_activation_params
        out.append(
            torch.tensor(rows, dtype=p.dtype, device=p.device) if decayed and any(rows) else None
        )
    return out


if TYPE_CHECKING:
    from typing import TypeAlias

    #: The optimisers of a training phase.
    Optimizer: TypeAlias = "StackedAdam | StackedSGD | StackedLBFGS"


def stacked_optimizer(
    rows: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
    decays: Sequence[torch.Tensor | None],
    cfg: TrainConfig,
    models: int,
) -> StackedAdam | StackedSGD | StackedLBFGS:
    """``cfg.optimizer`` over ``rows`` (``Groups.rows``: each tensor with its per-model rates
    and first model) of ``models`` models, with each tensor's weight decay."""
    params, rates, offsets = zip(*rows)
    if cfg.optimizer == "lbfgs":
        from aaf_cli.lbfgs import StackedLBFGS

        return StackedLBFGS(params, rates, offsets, models, cfg.lbfgs_options())
    if cfg.optimizer == "adam":
        return StackedAdam(params, rates, offsets, cfg.betas, cfg.eps, decays)
    return StackedSGD(params, rates, offsets, cfg.momentum, decays)


def make_optimizer(
    model: Groups, cfg: TrainConfig, scale: float = 1.0
) -> StackedAdam | StackedSGD | StackedLBFGS:
    """One optimiser over the stacked tensors of every group, with a rate per model row.

    Every model uses ``cfg.lr`` unless its variant sets its own (the sceptical control: a fixed
    activation with a raised rate; times ``scale``, a phase's rate over ``train.lr``); the
    schedule (``lr_factor``) scales those rates. Weight decay as ``weight_decays`` says: AdamW's
    decoupled decay for adam, the L2 gradient term for sgd. L-BFGS uses the rates only to
    freeze rows whose rate is zero (its line search sets the steps).
    """
    return stacked_optimizer(model.rows(cfg.lr, scale), weight_decays(model, cfg), cfg, model.size)


#: One step's losses: the logged training metric ``[M]`` (detached), the loss minimised ``[M]``,
#: and extra values to log at that step (detached; an objective's terms).
Losses = tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


class Objective(Protocol):
    """What training minimises and measures: the MSE to the training values (``MseObjective``)
    or a problem's own loss (a PINN's).

    ``loss`` gives the step's ``Losses`` (the minimised loss before ``model.penalty()`` is
    added); ``evaluate`` (at logged steps, before that step's update) the test metric ``[M]``
    (NaN where the objective measures no test data), and extra values to log; ``validate`` the
    same metric on the validation points; ``optimizer`` the optimiser over the model and the
    trainable parameters of the objective's own, which live in ``modules``.
    ``threshold_on``: what ``train.threshold`` counts on, the training metric at every step
    (``train``) or the test metric at logged steps (``test``). ``capturable``: whether its
    eager step can be captured in a CUDA graph (else only a compiled one is).
    """

    threshold_on: Literal["train", "test"]
    capturable: bool

    def loss(self, model: Groups) -> Losses: ...

    def evaluate(self, model: Groups) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def validate(self, model: Groups) -> torch.Tensor: ...

    def modules(self) -> list[nn.Module]: ...

    def samples(self) -> torch.Tensor:
        """The inputs ``[N, d]`` (or ``[M, N, d]``) the loss evaluates the networks at, which
        a KAN's grid update fits its grids to."""
        ...

    def optimizer(
        self, model: Groups, cfg: TrainConfig, scale: float = 1.0
    ) -> StackedAdam | StackedSGD | StackedLBFGS: ...

    def prepare_compile(self, model: Groups, on: bool = True) -> str | None:
        """Make ``loss`` traceable by torch.compile; None if it now is, else why it cannot be
        (the run then trains eagerly and records the reason as ``compile_skipped``).
        ``on=False`` restores the eager form (after a failed compile)."""
        ...


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-model mean squared error ``[M]`` of predictions ``[M, N, out]``."""
    return (prediction - target).square().mean(dim=(1, 2))


class MseObjective:
    """The mean squared error to the training values, minimised; the MSE to the test and the
    validation values, measured (NaN where none is given). ``train.threshold`` counts on the
    training MSE at every step."""

    threshold_on: Literal["train", "test"] = "train"
    capturable = True

    def __init__(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor | None = None,
        y_test: torch.Tensor | None = None,
        x_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None,
    ) -> None:
        self.x_train, self.y_train = x_train, y_train
        self.test = None if x_test is None or y_test is None else (x_test, y_test)
        self.val = None if x_val is None or y_val is None else (x_val, y_val)

    def _measured(
        self, model: Groups, data: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        if data is None:
            return torch.full(
                (model.size,), math.nan, dtype=self.x_train.dtype, device=self.x_train.device
            )
        return mse(model(data[0]), data[1])

    def loss(self, model: Groups) -> Losses:
        metric = mse(model(self.x_train), self.y_train)
        return metric, metric, {}

    def samples(self) -> torch.Tensor:
        return self.x_train

    def evaluate(self, model: Groups) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self._measured(model, self.test), {}

    def validate(self, model: Groups) -> torch.Tensor:
        return self._measured(model, self.val)

    def modules(self) -> list[nn.Module]:
        return []

    def optimizer(
        self, model: Groups, cfg: TrainConfig, scale: float = 1.0
    ) -> StackedAdam | StackedSGD | StackedLBFGS:
        return make_optimizer(model, cfg, scale)

    def prepare_compile(self, model: Groups, on: bool = True) -> str | None:
        return None


#: ``compile: auto`` compiles a CPU run whose eager training is predicted to take at least
#: this long (``budget.predicted_seconds``). Measured on 2 cores (benchmarks/bench_peers.py): the
#: compiled step is 1.3-3.6x faster for small networks and 1.1-1.5x for deep ones and PDE runs,
#: after a cold compile of 4-12 s (15-20 s for a PDE loss; 0.2-3 s from Inductor's on-disk
#: cache): from two minutes on it pays even at 1.2x.
COMPILE_AUTO_CPU_SECONDS = 120.0
#: ... and a CUDA run of at least this many model-steps (models x steps). Measured on an H200
#: (benchmarks/gpu_check.sh): compiling saves ~0.3 us per model-step of a small network and
#: ~1.4 us of a deep one against the captured eager step, after a cold compile of 10-23 s.
COMPILE_AUTO_CUDA_MODEL_STEPS = 50_000_000


def use_compile(
    cfg: TrainConfig,
    device: torch.device,
    eager_seconds: float | None = None,
    models: int = 1,
) -> tuple[bool, str | None]:
    """Resolve ``train.compile`` from the config, the device, and the predicted eager training
    time on the CPU (``budget.predicted_seconds``, deterministic) or the number of ``models`` on
    CUDA; with the reason when ``auto`` decided.

    ``auto`` compiles on the CPU when the eager run is predicted to take
    ``COMPILE_AUTO_CPU_SECONDS`` or more (never without a prediction), and on CUDA for runs of
    ``COMPILE_AUTO_CUDA_MODEL_STEPS`` model-steps or more.
    """
    if cfg.compile != "auto":
        return bool(cfg.compile), None
    if device.type == "cuda":
        work = cfg.steps * models
        on = work >= COMPILE_AUTO_CUDA_MODEL_STEPS
        limit = f"{'>=' if on else '<'} {COMPILE_AUTO_CUDA_MODEL_STEPS:.0e}"
        return on, f"auto: {work:.2g} model-steps on CUDA ({limit})"
    if eager_seconds is None:
        return False, None
    on = eager_seconds >= COMPILE_AUTO_CPU_SECONDS
    limit = f"{'>=' if on else '<'} {COMPILE_AUTO_CPU_SECONDS:.0f} s"
    return on, f"auto: eager training predicted at {eager_seconds:.0f} s on the CPU ({limit})"


#: ``cuda_graph: auto`` captures the step when one elementwise pass over the hidden layers'
#: pre-activations (M x N x sum of widths values) is at most this many: below it a step is a few
#: hundred short kernels (a few dozen compiled) and launch overhead dominates (an estimate:
#: measure with benchmarks/gpu_check.sh).
GRAPH_AUTO_MAX_ELEMENTS = 1 << 26


def use_cuda_graph(cfg: TrainConfig, device: torch.device, model: Groups, points: int) -> bool:
    """Resolve ``train.cuda_graph``: never off CUDA (``true`` there is refused by validation);
    ``auto`` on CUDA for small networks (see ``GRAPH_AUTO_MAX_ELEMENTS``), compiled or not."""
    if device.type != "cuda" or cfg.cuda_graph is False:
        return False
    if cfg.cuda_graph is True:
        return True
    elements = sum(g.size * points * sum(g.layers[1:-1]) for g in model.ensembles())
    return elements <= GRAPH_AUTO_MAX_ELEMENTS


class _Book:
    """Per-model bookkeeping on the device, updated in place (a CUDA graph replays it):
    ``active`` (not diverged), ``reached`` (step of the first data loss under the threshold)
    and ``diverged`` (step of the first non-finite loss), -1 where it never happened."""

    TENSORS = ("active", "reached", "diverged")

    def __init__(self, size: int, device: torch.device) -> None:
        self.active = torch.ones(size, dtype=torch.bool, device=device)
        self.reached = torch.full((size,), -1, dtype=torch.long, device=device)
        self.diverged = torch.full((size,), -1, dtype=torch.long, device=device)
        # Host-side shortcuts (None: unknown, as on CUDA where a look would synchronise).
        self.all_active: bool | None = True
        self.all_reached = False

    @torch.no_grad()
    def update(
        self,
        step: int | torch.Tensor,
        data: torch.Tensor,
        loss: torch.Tensor,
        threshold: float | torch.Tensor,
    ) -> None:
        finite = torch.isfinite(loss)
        if self.all_active is None or not (self.all_active and bool(finite.all())):
            self.diverged.copy_(torch.where(self.active & ~finite, step, self.diverged))
            self.active &= finite
            if self.all_active is not None:
                self.all_active = bool(self.active.all())
        if not self.all_reached:
            newly = (self.reached < 0) & (data < threshold)
            self.reached.copy_(torch.where(newly, step, self.reached))

    @torch.no_grad()
    def reach(self, step: int, metric: torch.Tensor, threshold: float) -> None:
        """Record ``step`` for the models whose ``metric`` is first under ``threshold`` (an
        objective's test metric, counted at logged steps)."""
        newly = (self.reached < 0) & (metric < threshold)
        self.reached.copy_(torch.where(newly, step, self.reached))

    def refresh(self) -> None:
        """Update the host-side shortcuts where looking is cheap (not on CUDA)."""
        if self.all_active is not None:
            self.all_reached = bool((self.reached >= 0).all())

    def state_dict(self) -> dict[str, Any]:
        """The bookkeeping, copied to the CPU, with the host-side shortcuts."""
        tensors = {k: getattr(self, k).to("cpu", copy=True) for k in self.TENSORS}
        return {**tensors, "all_active": self.all_active, "all_reached": self.all_reached}

    @torch.no_grad()
    def restore(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` gave, in place (a captured step keeps its tensors)."""
        for k in self.TENSORS:
            getattr(self, k).copy_(state[k])
        if self.all_active is not None:  # None stays None: no host look on CUDA
            self.all_active = state["all_active"]
        self.all_reached = bool(state["all_reached"])


#: Adam's bias corrections ``1 - beta1^t`` and ``sqrt(1 - beta2^t)`` of one step, as tensors.
Corrections = tuple[torch.Tensor, torch.Tensor]


class Schedule:
    """The per-step values of a step run from the device: a step counter and, per step, the
    schedule's factor and Adam's bias corrections (None for SGD), computed on the host in double
    precision and stored in the parameters' dtype, as the eager step's Python floats meet them.
    At least ``pad`` more steps repeat the last values (warm-up steps of a short run); the tables
    are padded to a power of two, so that runs of other lengths reuse a compiled step."""

    def __init__(
        self,
        cfg: TrainConfig,
        optimizer: StackedAdam | StackedSGD,
        device: torch.device,
        pad: int,
        offset: int = 0,
    ) -> None:
        size = 1 << (max(cfg.steps, 1) + pad - 1).bit_length()
        self.offset = offset  # the run's step number of this schedule's first step (a phase's)

        def table(values: list[float]) -> torch.Tensor:
            padded = values + values[-1:] * (size - len(values))
            return torch.tensor(padded, dtype=optimizer.flat.dtype, device=device)

        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.factors = table([lr_factor(cfg, s) for s in range(cfg.steps)] or [0.0])
        self.corrections: Corrections | None = None
        if isinstance(optimizer, StackedAdam):
            counts = range(1, max(cfg.steps, 1) + 1)
            bias1, bias2 = zip(*(optimizer.bias_corrections(k) for k in counts))
            self.corrections = (table(list(bias1)), table(list(bias2)))

    def take(self) -> tuple[torch.Tensor, torch.Tensor, Corrections | None]:
        """This step's number in the run ``[1]`` (``offset`` plus the index), factor and
        corrections; the counter moves on, in place (on the device: inside a compiled or captured
        step)."""
        index = self.index.clone()
        corrections = None
        if self.corrections is not None:
            corrections = (self.corrections[0][index], self.corrections[1][index])
        factor = self.factors[index]
        self.index.add_(1)
        return index + self.offset, factor, corrections


#: One training step run from the device: takes its values from the ``Schedule`` and returns
#: (the data loss ``[M]`` of the parameters before the update, values to log).
DeviceBody = Callable[[Schedule], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class _DeviceStep:
    """The training step driven from the device: the step index, the schedule's factor and
    Adam's bias corrections are device tensors (``Schedule``), so a step needs no value from the
    host. The step is compiled (``train.compile``: ``fused_step``) and/or, on CUDA, captured as
    one CUDA graph (``capture``; ``train.cuda_graph``).

    A few warm-up steps run first (they compile, and a capture needs them; on CUDA on a side
    stream); the parameters, the optimiser's state and the bookkeeping are restored after them,
    so training starts from the same state as in eager mode, at step ``at`` of the phase (a
    resumed one: where its checkpoint was saved).
    """

    WARMUP = 3

    def __init__(
        self,
        body: DeviceBody,
        optimizer: StackedAdam | StackedSGD,
        book: _Book,
        cfg: TrainConfig,
        device: torch.device,
        offset: int = 0,
        at: int = 0,
    ) -> None:
        self.body = body
        self.device = device
        self.schedule = Schedule(cfg, optimizer, device, self.WARMUP, offset)
        self.threads = torch.get_num_threads()
        self.stance = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
        self.optimizer_state = optimizer.state()
        state = [*self.optimizer_state, book.active, book.reached, book.diverged]
        saved = [t.detach().clone() for t in state]
        self.graph: torch.cuda.CUDAGraph | None = None
        side = torch.cuda.Stream(device) if device.type == "cuda" else None  # type: ignore[no-untyped-call]
        try:
            if side is not None:
                side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                # The last warm-up step runs as every later step does (guards skipped), so
                # that what can fail fails here, where the caller falls back to eager mode.
                for k in range(self.WARMUP):
                    self._run(skip_guards=k == self.WARMUP - 1)
        finally:
            if side is not None:
                torch.cuda.current_stream(device).wait_stream(side)
            with torch.no_grad():
                for t, s in zip(state, saved):
                    t.copy_(s)
                self.schedule.index.fill_(at)

    def capture(self) -> None:
        """Capture the step as one CUDA graph; replays then run the graph. Off CUDA nothing is
        captured and a replay runs the same device-side step (how the CPU tests check it)."""
        if self.device.type != "cuda":
            return
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.out = self._run(skip_guards=True)
        self.graph = graph

    def _run(self, skip_guards: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        stance, threads = self.stance, torch.get_num_threads()
        if not skip_guards or stance is None or threads != self.threads:
            # All guards: a thread guard that has just changed the thread count recompiles the
            # step once (compiled CPU kernels are generated for one count).
            self.threads = threads
            return self.body(self.schedule)
        # Once compiled, nothing else that a compiled step's guards check changes from step to
        # step (the same objects, shapes and grad mode): only the guards that tell apart
        # compiled versions run (~10% of a small network's step).
        with stance("default", skip_guard_eval_unsafe=True):
            return self.body(self.schedule)

    def replay(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One training step; returns the data loss ``[M]`` of the parameters before it and the
        values to log."""
        if self.graph is None:
            return self._run(skip_guards=True)
        self.graph.replay()
        return self.out

    def peek(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The losses of the current parameters as a step computes them, without its update:
        one step runs, then the optimiser's state and the step counter are put back (the
        bookkeeping keeps the step, as eager mode's last step does). So every logged loss of a
        run from the device comes from the same kernels: an eager evaluation of the last step
        would round differently from compiled kernels on some CPUs."""
        saved = [t.detach().clone() for t in self.optimizer_state]
        index = self.schedule.index.clone()
        data, logged = self.replay()
        # The outputs of a captured graph live in its static buffers: copies, before restoring.
        out = data.clone(), {k: v.clone() for k, v in logged.items()}
        with torch.no_grad():
            for t, s in zip(self.optimizer_state, saved):
                t.copy_(s)
            self.schedule.index.copy_(index)
        return out


class _Stateless(nn.Module):
    """The training loss as a module over every trained tensor (the ensemble's and the
    objective's), so that ``torch.func.functional_call`` can evaluate it at given values."""

    def __init__(self, loss: Callable[[], Losses], parts: Sequence[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.loss = loss

    def forward(self) -> Losses:
        return self.loss()


def fused_step(
    losses: Callable[[], Losses],
    parts: Sequence[nn.Module],
    optimizer: StackedAdam | StackedSGD,
    book: _Book,
    threshold: float,
) -> DeviceBody:
    """The whole training step as one function for ``torch.compile(fullgraph=True)``: the
    losses at the parameters given as views of the optimiser's flat tensor
    (``torch.func.functional_call``), their gradients (``torch.func.grad``, concatenated into
    one flat gradient), the bookkeeping and the update. One graph, so the step is a few fused
    kernels with no autograd engine or Python between them.

    The same arithmetic as the eager step, except that every parameter gets a gradient (zero
    where the loss does not depend on it; ``train`` does not compile such a loss).
    """
    evaluate = fused_evaluation(losses, parts, optimizer)
    # A tensor, not a Python float that a compiled step would be specialised (recompiled) for.
    limit = torch.tensor(threshold, dtype=optimizer.flat.dtype, device=optimizer.flat.device)

    def step(schedule: Schedule) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, factor, corrections = schedule.take()
        data, loss, logged, grad = evaluate(optimizer.flat, book.active)
        book.update(index, data, loss, limit)
        optimizer.step(book.active, factor, None, corrections, flat_grad=grad)
        return data, logged

    return step


def eager_evaluation(losses: Callable[[], Losses], optimizer: _Stacked) -> Evaluate:
    """Every model's losses and flat gradient at given flat parameter values (written into
    ``optimizer.flat``, the parameters' storage); a model that is no longer active, or whose
    loss is not finite, gets a zero gradient."""

    def evaluate(
        values: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        with torch.no_grad():
            optimizer.flat.copy_(values)
        for param in optimizer.params:
            param.grad = None
        with torch.enable_grad():
            data, loss, logged = losses()
            keep = active & torch.isfinite(loss)
            torch.where(keep, loss, 0.0).sum().backward()  # type: ignore[no-untyped-call]
        grad = torch.cat(
            [
                p.new_zeros(p.numel()) if p.grad is None else p.grad.reshape(-1)
                for p in optimizer.params
            ]
        )
        return data.detach(), loss.detach(), logged, grad

    return evaluate


def fused_evaluation(
    losses: Callable[[], Losses], parts: Sequence[nn.Module], optimizer: _Stacked
) -> Evaluate:
    """``eager_evaluation`` as one function for ``torch.compile(fullgraph=True)``: the losses
    at the parameters given as views of the values (``torch.func.functional_call``) and their
    gradients (``torch.func.grad``), concatenated into one flat gradient (``fused_step`` takes
    its gradient from here; L-BFGS compiles it alone)."""
    holder = _Stateless(losses, parts)
    named = {id(p): name for name, p in holder.named_parameters()}
    if any(id(p) not in named for p in optimizer.params):
        raise ValueError("a trained tensor is neither the ensemble's nor the objective's")
    names = [named[id(p)] for p in optimizer.params]

    def total(
        values: tuple[torch.Tensor, ...], active: torch.Tensor
    ) -> tuple[torch.Tensor, Losses]:
        data, loss, logged = torch.func.functional_call(holder, dict(zip(names, values)), ())
        # The models still active after this step's bookkeeping, as the eager step masks them.
        keep = active & torch.isfinite(loss)
        return torch.where(keep, loss, 0.0).sum(), (data, loss, logged)

    def evaluate(
        values: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        grads, (data, loss, logged) = torch.func.grad(total, has_aux=True)(
            optimizer.views(values), active
        )
        # One gradient per parameter, concatenated: the compiled kernels write each into its
        # place (a gradient of the flat tensor itself would sum a padded copy per parameter).
        grad = torch.cat([g.reshape(-1) for g in grads])
        return data.detach(), loss.detach(), logged, grad

    return evaluate


class _Searched(Protocol):
    """What an L-BFGS phase that has ended tells the summary (``_early_stops``): its rounds of
    evaluations and why each model stopped."""

    rounds: int
    stopped: list[str | None]


@dataclass
class _SearchRecord:
    """``_Searched`` as saved in a checkpoint (the optimiser itself is not saved)."""

    rounds: int
    stopped: list[str | None]


def _search_records(searches: Sequence[_Searched]) -> list[_SearchRecord]:
    """A snapshot of the L-BFGS phases' records (their optimisers go on changing)."""
    return [_SearchRecord(s.rounds, list(s.stopped)) for s in searches]


class _Phase:
    """One training phase's stepper: ``step`` measures the losses of ``step`` (the data metric
    and logged values), does the bookkeeping and (``update``) one update; ``peek`` measures
    only; ``evals`` the phase's function evaluations per model that reached ``step``, ``final``
    all of the phase's; ``searched`` the phase's L-BFGS, once it has ended (none for a
    first-order phase)."""

    def step(self, step: int, update: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def peek(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def evals(self, step: int) -> list[int]:
        raise NotImplementedError

    def final(self, step: int) -> list[int]:
        return self.evals(step)

    def searched(self) -> list[_Searched]:
        return []


class _Ended(_Phase):
    """A phase restored from a checkpoint saved at its last step boundary: the next phase
    starts at this step, so it only hands on its evaluations (``evals``) and its L-BFGS
    record (``searches``); ``peek`` measures eagerly (a stop right after resuming)."""

    def __init__(
        self, losses: Callable[[], Losses], evals: list[int], searches: list[_Searched]
    ) -> None:
        self.losses, self.counted, self.searches = losses, evals, searches

    def peek(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            data, _, logged = self.losses()
        return data, logged

    def evals(self, step: int) -> list[int]:
        return list(self.counted)

    def searched(self) -> list[_Searched]:
        return list(self.searches)


def reason(exc: BaseException) -> str:
    """An exception as one short line for ``summary.json``."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def ungraded(losses: Callable[[], Losses], params: Sequence[torch.Tensor]) -> bool:
    """Whether some trained parameter gets no gradient from the loss (one probe evaluation)."""
    _, loss, _ = losses()
    grads = torch.autograd.grad(loss.sum(), list(params), allow_unused=True)
    return any(g is None for g in grads)


#: A code object per compiled function and model structure (``compile_once``).
_CODES: dict[tuple[Any, ...], types.CodeType] = {}


def compile_once(
    fn: Callable[..., Any], structure: tuple[Any, ...], backend: str = "inductor"
) -> Callable[..., Any]:
    """``torch.compile(fn, fullgraph=True)``, from a copy of ``fn`` whose code object is shared
    by the runs of one model ``structure`` only.

    Dynamo keeps its compiled entries, and counts recompiles against its limit (8), per code
    object. Runs of one structure reuse each other's entries (a tuning phase's compile serves
    the evaluation run); runs of other structures, sharing the one code object of
    ``fused_step``'s inner function, would each add an entry, and the ninth structure compiled
    in one process (a notebook, a sweep over widths, unpacked) failed with
    ``FailOnRecompileLimitHit`` and trained eagerly. (``backend``: Dynamo's, for tests.)"""
    key = (fn.__code__, structure)
    code = _CODES.setdefault(key, fn.__code__.replace())
    fresh = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return torch.compile(fresh, dynamic=False, fullgraph=True, backend=backend)


class _Phasing:
    """What the phases of one ``train`` call share, and the stepper of each: a first-order
    phase (eager, compiled and/or captured in a CUDA graph) or an L-BFGS phase (its
    evaluations compiled with the rest of the run). ``compiling`` turns off for the rest of
    the run when a compile fails; ``extra`` collects what the summary says about it."""

    def __init__(
        self,
        model: Groups,
        goal: Objective,
        losses: Callable[[], Losses],
        phases: list[TrainConfig],
        starts: list[int],
        book: _Book,
        threshold: float,
        compiling: bool,
        extra: dict[str, float | str],
        device: torch.device,
        points: int,
    ) -> None:
        self.model, self.goal, self.losses = model, goal, losses
        self.phases, self.starts, self.book, self.threshold = phases, starts, book, threshold
        self.compiling, self.extra, self.device, self.points = compiling, extra, device, points
        self.parts: list[nn.Module] = [model, *goal.modules()]

    def note_time(self, key: str, seconds: float) -> None:
        self.extra[key] = float(self.extra.get(key, 0.0)) + seconds

    def structure(self) -> tuple[Any, ...]:
        """What a compiled step of this run is specialised on, as far as the runs of a process
        differ: the ensembles' shapes and kinds, the objective, the points, dtype and device."""
        ensembles = self.model.ensembles()
        groups = tuple((tuple(e.layers), e.kind, e.base, e.size) for e in ensembles)
        dtype = ensembles[0].dtype
        return (groups, type(self.goal), self.points, str(dtype), str(self.device))

    def compile_failed(self, exc: BaseException) -> None:
        """Train eagerly from here on, and say why."""
        self.extra["compile_error"] = reason(exc)
        self.eager()

    def eager(self) -> None:
        """Train eagerly from here on."""
        self.goal.prepare_compile(self.model, on=False)
        self.compiling = False

    def stepper(self, k: int, opt: Optimizer, at: int = 0) -> _Phase:
        """The stepper of phase ``k`` from its step ``at`` on (L-BFGS phases: from their
        start)."""
        from aaf_cli.lbfgs import StackedLBFGS  # it builds on this module

        if isinstance(opt, StackedLBFGS):
            return self.quasi_newton(k, opt)
        return self.first_order(k, opt, at)

    def first_order(self, k: int, opt: StackedAdam | StackedSGD, at: int = 0) -> _Phase:
        """The stepper of a first-order phase from its step ``at`` on: eager, compiled and/or
        graph-captured (a device-side step counts from ``at``)."""
        phase, book = self.phases[k], self.book
        device_step: _DeviceStep | None = None
        if self.compiling:
            tic = time.perf_counter()
            shortcut = book.all_active
            book.all_active = None  # no host-side shortcuts inside a compiled step
            try:
                with warnings.catch_warnings():
                    # Inductor suggests TF32 matrix products; float32 here means float32.
                    warnings.filterwarnings("ignore", message=".*TensorFloat32")
                    fused = fused_step(self.losses, self.parts, opt, book, self.threshold)
                    compiled = compile_once(fused, self.structure())
                    device_step = _DeviceStep(
                        compiled, opt, book, phase, self.device, self.starts[k], at
                    )
            except Exception as exc:
                self.compile_failed(exc)
                book.all_active = None if self.device.type == "cuda" else shortcut
            self.note_time("compile_time_s", time.perf_counter() - tic)
        stepper = _FirstOrder(self, k, opt, device_step)
        if use_cuda_graph(phase, self.device, self.model, self.points) and (
            self.goal.capturable or device_step is not None
        ):
            tic = time.perf_counter()
            book.all_active = None  # a replay cannot take host-side shortcuts
            try:
                if stepper.device_step is None:

                    def replayed(
                        schedule: Schedule,
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
                        index, factor, corrections = schedule.take()
                        return stepper.body(index, factor, True, corrections)

                    stepper.device_step = _DeviceStep(
                        replayed, opt, book, phase, self.device, self.starts[k], at
                    )
                stepper.device_step.capture()
            except Exception as exc:
                self.extra["cuda_graph_error"] = reason(exc)
            self.note_time("cuda_graph_time_s", time.perf_counter() - tic)
        return stepper

    def quasi_newton(self, k: int, opt: StackedLBFGS) -> _Phase:
        """The stepper of an L-BFGS phase: one iteration per step; the evaluations compiled
        with the rest of the run."""
        evaluate: Evaluate = eager_evaluation(self.losses, opt)
        if self.compiling:
            tic = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*TensorFloat32")
                    fused = fused_evaluation(self.losses, self.parts, opt)
                    compiled: Evaluate = compile_once(fused, self.structure())
                    compiled(opt.flat.clone(), self.book.active.clone())  # compiles here
                evaluate = compiled
            except Exception as exc:
                self.compile_failed(exc)
            self.note_time("compile_time_s", time.perf_counter() - tic)
        return _QuasiNewton(self.book, opt, evaluate, self.threshold, self.phases[k].steps)


class _FirstOrder(_Phase):
    """A first-order phase's steps: from the device (compiled or replayed), else eager."""

    def __init__(
        self,
        run: _Phasing,
        k: int,
        opt: StackedAdam | StackedSGD,
        device_step: _DeviceStep | None,
    ) -> None:
        self.run, self.opt, self.device_step = run, opt, device_step
        self.phase, self.start = run.phases[k], run.starts[k]
        self.fused_ok = device_step is not None

    def body(
        self,
        step: int | torch.Tensor,
        factor: float | torch.Tensor,
        update: bool,
        corrections: Corrections | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The losses of step ``step``, the bookkeeping, and (``update``) one optimiser step
        (with the bias corrections given, else Adam's own)."""
        book, opt = self.run.book, self.opt
        data, loss, logged = self.run.losses()
        book.update(step, data, loss, self.run.threshold)
        if update:
            for param in opt.params:
                param.grad = None
            # With every model known active, the mask would multiply each gradient by one.
            total = loss if book.all_active else torch.where(book.active, loss, 0.0)
            total.sum().backward()  # type: ignore[no-untyped-call]
            opt.step(book.active, factor, book.all_active, corrections)
        return data, logged

    def step(self, step: int, update: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        local = step - self.start
        out = None
        if self.device_step is not None:
            try:
                # The last step only measures (no update): through the same kernels.
                out = self.device_step.replay() if update else self.device_step.peek()
            except Exception as exc:
                if self.device_step.graph is not None or not self.fused_ok:
                    raise
                # A compile during training failed (after the thread guard stepped down, say):
                # go on eagerly from this step, which has not run (Adam's count goes on).
                self.run.extra["compile_error"] = reason(exc)
                self.device_step = None
                if isinstance(self.opt, StackedAdam):
                    self.opt.t = local
        if out is not None:
            return out
        factor = lr_factor(self.phase, local) if update else 0.0
        return self.body(step, factor, update)

    def peek(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.device_step is not None:
            return self.device_step.peek()
        with torch.no_grad():
            data, _, logged = self.run.losses()
        return data, logged

    def evals(self, step: int) -> list[int]:
        return [step - self.start] * self.run.model.size


class _QuasiNewton(_Phase):
    """An L-BFGS phase's steps: one iteration of every model's L-BFGS per step."""

    def __init__(
        self, book: _Book, opt: StackedLBFGS, evaluate: Evaluate, threshold: float, iterations: int
    ) -> None:
        self.book, self.opt, self.evaluate = book, opt, evaluate
        self.threshold, self.iterations = threshold, iterations
        self.counted: list[int] | None = None

    def _started(self) -> Losses:
        if self.opt.values is None:
            self.opt.start(self.evaluate, self.book.active)
        assert self.opt.values is not None
        return self.opt.values

    def step(self, step: int, update: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        data, loss, logged = self._started()
        self.counted = list(self.opt.evals)  # the evaluations that reached this point
        self.book.update(step, data, loss, self.threshold)
        if update:
            self.opt.step(self.evaluate, self.book.active, self.iterations)
        return data, logged

    def peek(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        data, _, logged = self._started()
        return data, logged

    def evals(self, step: int) -> list[int]:
        return list(self.opt.evals) if self.counted is None else self.counted

    def final(self, step: int) -> list[int]:
        return list(self.opt.evals)

    def searched(self) -> list[_Searched]:
        return [self.opt]


def _will_compile(
    cfg: TrainConfig,
    device: torch.device,
    eager_seconds: float | None,
    model: Groups,
    goal: Objective,
    losses: Callable[[], Losses],
    optimizer: Optimizer,
    extra: dict[str, float | str],
) -> bool:
    """Whether the run's steps are compiled (``use_compile``), unless the objective cannot be
    traced or a trained parameter gets no gradient; ``extra`` says why not."""
    compiling, why = use_compile(cfg, device, eager_seconds, model.size)
    if why is not None:
        extra["compile_auto"] = why
    if compiling:
        blocker = goal.prepare_compile(model)
        if blocker is not None:
            extra["compile_skipped"] = blocker
            compiling = False
    if compiling and ungraded(losses, optimizer.params):
        # Eager mode freezes a parameter without a gradient; a compiled step would give it a
        # zero one and let Adam's momentum (or weight decay) move it.
        extra["compile_skipped"] = "a trained parameter gets no gradient from the loss"
        compiling = False
        goal.prepare_compile(model, on=False)
    return compiling


def _early_stops(searches: Sequence[_Searched], extra: dict[str, float | str]) -> list[str | None]:
    """Each model's first early stop in any of the L-BFGS phases ``searches`` (a divergence is
    reported apart); ``extra`` gets their rounds and the counts of each stopping test."""
    from aaf_cli.lbfgs import STOP_REASONS

    rounds = sum(opt.rounds for opt in searches)
    if rounds:
        extra["lbfgs_rounds"] = rounds
    stopped_early: list[str | None] = [
        next((r for r in reasons if r not in (None, "diverged")), None)
        for reasons in zip(*(opt.stopped for opt in searches))
    ]
    stops = [STOP_REASONS[r] for r in stopped_early if r is not None]
    if stops:
        counts = {r: stops.count(r) for r in dict.fromkeys(stops)}
        extra["lbfgs_stopped"] = "; ".join(f"{n} by {r}" for r, n in counts.items())
    return stopped_early


def train(
    model: Groups,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor | None,
    y_test: torch.Tensor | None,
    cfg: TrainConfig,
    on_log: Callable[[LogRecord], None] | None = None,
    stop: Callable[[], bool] | None = None,
    objective: Objective | None = None,
    on_step: Callable[[int], None] | None = None,
    eager_seconds: float | None = None,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    checkpoint: Stage | None = None,
) -> TrainResult:
    """Train every model of ``model`` for ``cfg.steps`` steps, in ``cfg.phases`` if given (each
    phase a fresh optimiser from where the last one stopped: Adam, SGD, or L-BFGS, whose step is
    one iteration of every model's own L-BFGS, ``aaf_cli.lbfgs``).

    Step s logs the losses of the parameters after s updates: step 0 is the initial network and
    the last logged step is ``cfg.steps``; the first step of every phase is logged too, and each
    record counts the function evaluations that reached it (``LogRecord.evals``). Each model
    minimises its MSE plus its slope-recovery term, if any; the threshold and the logged
    training loss use the MSE alone. A model whose loss becomes NaN or infinite is frozen from
    that step (its later losses stay non-finite) and the others go on unaffected. Metrics reach
    the host only at logged steps.

    Args:
        model: the ensemble (trained in place).
        x_train, y_train: ``[N, 1]`` shared by all models, or ``[M, N, 1]``.
        x_test, y_test: ``[N_test, 1]``, or None: no test metric (NaN; a tuning phase, whose
            choices may read validation data only), and no predictions.
        cfg: optimiser and schedule.
        on_log: called with every ``LogRecord`` as it is made.
        stop: polled before every step; returning True ends training early (``interrupted``).
        objective: what is minimised and measured (default: ``MseObjective`` of the data
            given; with another, ``x_train`` and ``y_train`` only give the device and
            ``x_val``, ``y_val`` are not read). Compiled (``train.compile``) when its
            ``prepare_compile`` allows.
        on_step: called with the step number before every step (``budget.ThreadGuard``; a
            compiled step recompiles once for a new thread count).
        eager_seconds: the predicted eager training time, for ``compile: auto`` on the CPU
            (``use_compile``; without it ``auto`` stays eager there).
        x_val, y_val: the validation data, measured at logged steps as the test data is (an
            objective validates on its own points: ``Objective.validate``).
        checkpoint: where this call saves its state now and then, and resumes from
            (``resume.Stage``; see below). None: no checkpoints.

    ``train.compile`` compiles the whole step (``fused_step``: losses, gradients, bookkeeping
    and update in one graph); ``train.cuda_graph`` captures the step, compiled or not, as one
    CUDA graph. Either runs it from the device (``_DeviceStep``). A step that fails to compile
    or capture runs eagerly, and ``extra`` says why.

    With a ``checkpoint``, the state is saved at step boundaries (before a step's grid update,
    phase change and measurement) as the stage's cadence says, and once more at the end of a
    run that was not interrupted (a stopped run saves nothing more). A call whose stage has a
    blob starts from it: the parameters and buffers of the ensemble and of the objective (a
    KAN's grids, with whether they are still shared), the optimiser's state (Adam's moments
    and count, SGD's momentum; a compiled or captured step's counter), the bookkeeping, the
    records so far, the phase and its evaluations, ``extra``, whether the run still compiles,
    torch's random state and the clock, so the records' times go on. Everything is copied in
    place before any step is compiled or captured. The records restored are handed to
    ``on_log`` first, and a finished stage's result is returned as saved, after its final
    parameters are restored, without training. The result then equals that of an
    uninterrupted run, number for number, but for the times and ``extra``'s checkpoint
    entries (``resume.Stage.entries``, present only with a ``checkpoint``).

    L-BFGS is not saved in the middle of a phase (its line searches are suspended coroutines):
    inside an L-BFGS phase a save that is due waits for the phase's last step boundary (or the
    end of the run), so there an attempt may train more than the cadence's steps past its last
    save. A compile that failed in the middle of a phase, before a save, is tried again after a
    resume (a failure at the start of a phase is remembered).
    """
    from aaf_cli.lbfgs import StackedLBFGS  # it builds on this module

    device = x_train.device
    if cfg.cuda_graph is True and device.type != "cuda":
        from aaf_cli.errors import ConfigError

        raise ConfigError(
            "config", "train.cuda_graph", f"true needs a CUDA device (training runs on {device})"
        )
    phases = cfg.phase_configs()
    starts = [sum(p.steps for p in phases[:k]) for k in range(len(phases))]
    total = cfg.steps
    goal: Objective = (
        MseObjective(x_train, y_train, x_test, y_test, x_val, y_val)
        if objective is None
        else objective
    )
    stage = checkpoint
    saved = None if stage is None else stage.open()
    if saved is not None:
        _check_saved(saved["state"], total, model.size)
        if saved["done"]:
            assert stage is not None
            return _finished(saved["state"], stage, model, goal, on_log)

    def new_optimizer(k: int) -> Optimizer:
        # A variant's own rate follows the phase's rate (its ratio to train.lr).
        return goal.optimizer(model, phases[k], phases[k].lr / cfg.lr)

    optimizer = new_optimizer(0)
    book = _Book(model.size, device)
    if device.type == "cuda":
        book.all_active = None  # no host look at device values between log steps
    records: list[LogRecord] = []
    interrupted = False
    extra: dict[str, float | str] = {}

    def losses() -> Losses:
        metric, loss, logged = goal.loss(model)
        penalty = model.penalty()
        return metric, loss if penalty is None else loss + penalty, logged

    # A threshold on the test metric counts at logged steps (see ``log``).
    threshold = cfg.threshold if goal.threshold_on == "train" else -math.inf

    compiling = _will_compile(cfg, device, eager_seconds, model, goal, losses, optimizer, extra)
    phasing = _Phasing(
        model, goal, losses, phases, starts, book, threshold, compiling, extra, device,
        x_train.shape[-2],
    )  # fmt: skip
    phase_index = 0
    # Function evaluations per model in the phases before the current one.
    done_before = torch.zeros(model.size, dtype=torch.long)
    searches: list[_Searched] = []  # the L-BFGS phases' optimisers, as they end
    first = 0  # the step training starts from (a resumed run's saved step)
    elapsed = 0.0  # the training time before it
    current: _Phase
    if saved is None:
        current = phasing.stepper(0, optimizer)
    else:
        state = saved["state"]
        first, phase_index, elapsed = saved["step"], state["phase"], state["elapsed"]
        _restore_tensors(state, model, goal)
        book.restore(state["book"])
        records.extend(state["records"])
        extra.update(state["extra"])
        done_before = state["done_before"].clone()
        searches = list(state["searches"])
        if phasing.compiling and not state["compiling"]:  # a compile failed before the save
            phasing.eager()
        ended = state["ended"]
        if ended is not None:  # saved at the phase's end: the next starts at this step
            current = _Ended(losses, list(ended["evals"]), list(ended["searches"]))
        else:
            if phase_index > 0:
                optimizer = new_optimizer(phase_index)
            assert not isinstance(optimizer, StackedLBFGS)
            optimizer.load_state_dict(state["optimizer"])
            # A compiled or captured step reads its step counter from the device.
            current = phasing.stepper(phase_index, optimizer, first - starts[phase_index])
    # The clock of training: a later phase's compile is left out of it, as the first's is.
    start = time.perf_counter() - elapsed
    if on_log is not None:
        for record in records:  # a resumed run's records so far
            on_log(record)

    def evals_now(step: int) -> torch.Tensor:
        return done_before + torch.tensor(current.evals(step), dtype=torch.long)

    @torch.no_grad()
    def evaluate() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Test loss, validation loss, S(a) and the logged parameters of the current parameters
        (on device)."""
        test, values = goal.evaluate(model)
        val = goal.validate(model)
        return test, val, model.recovery(), {**model.trajectories(), **values}

    def log(
        step: int,
        train_loss: torch.Tensor,
        logged: dict[str, torch.Tensor],
        now: tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
    ) -> None:
        test_loss, val_loss, recovery, params = now
        params = {**params, **logged}
        if goal.threshold_on == "test":
            book.reach(step, test_loss, cfg.threshold)

        # The copies to the host synchronise with the device: the clock is read after the work.
        # Copies even of float64 CPU tensors: a logged value may be a live parameter (one of
        # the objective's), which later steps would change inside the record.
        def host(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu", torch.float64, copy=True)

        record = LogRecord(
            step,
            time.perf_counter() - start,
            host(train_loss),
            host(test_loss),
            host(recovery),
            {k: host(v) for k, v in params.items()},
            host(val_loss),
            evals_now(step),
        )
        records.append(record)
        if on_log is not None:
            on_log(record)

    def snapshot(step: int, ended: bool) -> dict[str, Any]:
        """The state at the boundary of ``step`` (``ended``: the current phase's last)."""
        state = {
            **_tensor_state(model, goal),
            "steps": total,
            "models": model.size,
            "phase": phase_index,
            "elapsed": time.perf_counter() - start,
            "book": book.state_dict(),
            "records": list(records),
            "extra": dict(extra),
            "done_before": done_before.clone(),
            "searches": _search_records(searches),
            "compiling": phasing.compiling,
            "ended": None,
            "optimizer": None,
        }
        if ended:
            state["ended"] = {
                "evals": current.final(step),
                "searches": _search_records(current.searched()),
            }
        else:
            assert not isinstance(optimizer, StackedLBFGS)
            state["optimizer"] = optimizer.state_dict()
        return state

    def boundary_save(step: int) -> None:
        """Save at the boundary of ``step`` if the stage says so and the phase allows."""
        assert stage is not None
        if not stage.at(step) or step == total:  # the last: the final blob follows
            return
        ended = phase_index + 1 < len(phases) and step == starts[phase_index + 1]
        if isinstance(current, _QuasiNewton) and not ended:
            return  # inside an L-BFGS phase: at its last boundary
        stage.save(step, snapshot(step, ended))

    saver = None if stage is None else boundary_save

    step = first
    for step in range(first, total + 1):
        if stop is not None and stop():
            # The parameters have had `step` updates: that is the step logged and reported.
            interrupted = True
            break
        if saver is not None:
            saver(step)
        if on_step is not None:
            on_step(step)
        if step < total:
            for kan in model.grid_updates(step):
                kan.update_grid(goal.samples())
        if phase_index + 1 < len(phases) and step == starts[phase_index + 1]:
            searches.extend(current.searched())
            done_before = done_before + torch.tensor(current.final(step), dtype=torch.long)
            phase_index += 1
            tic = time.perf_counter()
            optimizer = new_optimizer(phase_index)
            current = phasing.stepper(phase_index, optimizer)
            start += time.perf_counter() - tic
        boundary = step == starts[phase_index] and step > 0
        logged = step % cfg.log_every == 0 or step == total or boundary
        # Measured before the update that this step makes (the parameters after `step` updates).
        now = evaluate() if logged else None
        data, logged_now = current.step(step, step < total)
        if now is not None:
            log(step, data, logged_now, now)
            book.refresh()

    if interrupted and (not records or records[-1].step != step):
        now = evaluate()
        data, logged_now = current.peek()
        log(step, data, logged_now, now)
    searches.extend(current.searched())
    stopped_early = _early_stops(searches, extra)
    with torch.no_grad():
        if x_test is None:
            predictions = torch.empty(model.size, 0, dtype=torch.float64)
        else:
            predictions = model(x_test)[..., 0].to("cpu", torch.float64)
    result = TrainResult(
        records=records,
        steps_to_threshold=book.reached.cpu(),
        diverged_at=book.diverged.cpu(),
        predictions=predictions,
        wall_time=time.perf_counter() - start,
        steps_done=step,
        interrupted=interrupted,
        extra=extra,
        stopped_early=stopped_early,
    )
    if stage is not None:
        if not interrupted:
            final = {**_tensor_state(model, goal), "steps": total, "models": model.size}
            stage.finish(step, {**final, "result": result})
        extra.update(stage.entries())
    return result


def _tensor_state(model: Groups, goal: Objective) -> dict[str, Any]:
    """The tensors of a checkpoint that are not the loop's: the ensemble's and the objective's
    parameters and buffers (CPU copies), whether each KAN's grids are still shared, and
    torch's random state (training draws no random numbers: kept so that it never matters)."""
    from aaf_cli.kan import KanEnsemble

    def copied(module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.to("cpu", copy=True) for k, v in module.state_dict().items()}

    return {
        "model": copied(model),
        "modules": [copied(m) for m in goal.modules()],
        "shared_grids": [g.shared_grids for g in model.ensembles() if isinstance(g, KanEnsemble)],
        "rng": torch.get_rng_state(),
    }


@torch.no_grad()
def _restore_tensors(state: dict[str, Any], model: Groups, goal: Objective) -> None:
    """Copy ``_tensor_state``'s tensors back in place (the tensors the optimiser's views, and
    any compiled step, see), and its flags and random state."""
    from aaf_cli.kan import KanEnsemble

    def restore(module: nn.Module, saved: dict[str, torch.Tensor]) -> None:
        tensors = module.state_dict()
        if tensors.keys() != saved.keys():
            raise ValueError("the checkpoint holds other tensors than this run's")
        for name, tensor in tensors.items():
            tensor.copy_(saved[name])

    restore(model, state["model"])
    modules = goal.modules()
    if len(modules) != len(state["modules"]):
        raise ValueError("the checkpoint holds other tensors than this run's")
    for module, saved in zip(modules, state["modules"]):
        restore(module, saved)
    kans = [g for g in model.ensembles() if isinstance(g, KanEnsemble)]
    for kan, shared in zip(kans, state["shared_grids"], strict=True):
        kan.shared_grids = bool(shared)
    torch.set_rng_state(state["rng"])


def _check_saved(state: dict[str, Any], steps: int, models: int) -> None:
    """Refuse a checkpoint of another run (other steps or models)."""
    if state["steps"] != steps or state["models"] != models:
        raise ValueError(
            f"the checkpoint is of a run of {state['models']} models and {state['steps']} "
            f"steps, not {models} models and {steps} steps"
        )


def _finished(
    state: dict[str, Any],
    stage: Stage,
    model: Groups,
    goal: Objective,
    on_log: Callable[[LogRecord], None] | None,
) -> TrainResult:
    """The result of a stage saved finished, its final parameters restored; its records are
    handed to ``on_log``."""
    _restore_tensors(state, model, goal)
    result: TrainResult = state["result"]
    if on_log is not None:
        for record in result.records:
            on_log(record)
    result.extra.update(stage.entries())
    return result
