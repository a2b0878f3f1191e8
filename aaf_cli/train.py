"""The training loop: every model of an ensemble takes each step at once.

Pure: no printing, no files. Metrics stay on the device between log steps and reach the host only
every ``log_every`` steps (and at the end), through the ``on_log`` callback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from aaf_cli.config import TrainConfig
from aaf_cli.models import Groups


@dataclass(frozen=True)
class LogRecord:
    """Metrics of every model at one logged step (host tensors of shape ``[M]``)."""

    step: int
    elapsed: float
    train_loss: torch.Tensor  # the data term (MSE) only
    test_loss: torch.Tensor
    recovery: torch.Tensor  # S(a), NaN for models without slope recovery
    params: dict[str, torch.Tensor]  # logged activation parameters, NaN where a model has none


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
    active (diverged), is frozen exactly: its gradient is masked, so neither its optimiser state
    nor its values change. A schedule scales every rate by one factor per step (a factor of 0,
    the first step of a warmup, updates the optimiser state as torch does, not the values).
    ``decays`` holds each parameter's weight decay per row, or None where it has none.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        rates: Sequence[torch.Tensor],
        offsets: Sequence[int],
        decays: Sequence[torch.Tensor | None] | None = None,
    ) -> None:
        self.params = list(params)
        self.rates = [r.reshape(-1, *([1] * (p.dim() - 1))) for p, r in zip(params, rates)]
        self.offsets = list(offsets)
        self.decays = [
            None if d is None else d.reshape(r.shape)
            for d, r in zip(decays or [None] * len(self.params), self.rates)
        ]

    def _masked(
        self, active: torch.Tensor, factor: float, l2: bool = False
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(index, masked gradient, row rates times ``factor``) of every parameter that has a
        gradient; ``l2`` adds ``decay * param`` to the gradient before it is masked."""
        for i, (p, rate, start) in enumerate(zip(self.params, self.rates, self.offsets)):
            if p.grad is None:
                continue
            row_rate = rate * active[start : start + p.shape[0]].reshape(rate.shape)
            grad, decay = p.grad, self.decays[i]
            if l2 and decay is not None:
                grad = grad + decay * p
            grad = torch.where(row_rate > 0, grad, 0.0)
            yield i, grad, row_rate if factor == 1.0 else row_rate * factor


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
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, active: torch.Tensor, factor: float = 1.0) -> None:
        """One update of the active rows, at ``factor`` times their rates."""
        self.t += 1
        beta1, beta2 = self.betas
        # Bias corrections in Python floats (double precision), as torch.optim.Adam does.
        bias1 = 1 - beta1**self.t
        bias2_sqrt = math.sqrt(1 - beta2**self.t)
        for i, grad, row_rate in self._masked(active, factor):
            decay = self.decays[i]
            if decay is not None:
                self.params[i].mul_(1 - row_rate * decay)
            m, v = self.moments[i]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / bias2_sqrt).add_(self.eps)
            self.params[i].sub_(m / denom * (row_rate / bias1))


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
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self, active: torch.Tensor, factor: float = 1.0) -> None:
        """One update of the active rows, at ``factor`` times their rates."""
        for i, grad, row_rate in self._masked(active, factor, l2=True):
            if self.momentum:
                buf = self.buffers[i]
                if buf is None:
                    buf = self.buffers[i] = grad.clone()
                else:
                    buf.mul_(self.momentum).add_(grad)
                grad = buf
            self.params[i].sub_(grad * row_rate)


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
    dense = {id(p) for g in model.ensembles() for p in (*g.weights, *g.biases)}
    out: list[torch.Tensor | None] = []
    for p, _, start in model.rows(cfg.lr):
        rows = per_model[start : start + p.shape[0]]
        decayed = id(p) in dense or cfg.decay_activation_params
        out.append(
            torch.tensor(rows, dtype=p.dtype, device=p.device) if decayed and any(rows) else None
        )
    return out


def make_optimizer(model: Groups, cfg: TrainConfig) -> StackedAdam | StackedSGD:
    """One optimiser over the stacked tensors of every group, with a rate per model row.

    Every model uses ``cfg.lr`` unless its variant sets its own (the sceptical control: a fixed
    activation with a raised rate); the schedule (``lr_factor``) scales those rates. Weight decay
    as ``weight_decays`` says: AdamW's decoupled decay for adam, the L2 gradient term for sgd.
    """
    params, rates, offsets = zip(*model.rows(cfg.lr))
    decays = weight_decays(model, cfg)
    if cfg.optimizer == "adam":
        return StackedAdam(params, rates, offsets, cfg.betas, cfg.eps, decays)
    return StackedSGD(params, rates, offsets, cfg.momentum, decays)


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-model mean squared error ``[M]`` of predictions ``[M, N, out]``."""
    return (prediction - target).square().mean(dim=(1, 2))


def use_compile(cfg: TrainConfig, device: torch.device) -> bool:
    """Resolve ``train.compile``: deterministic, from the config and device alone."""
    if cfg.compile == "auto":
        return device.type == "cuda" and cfg.steps >= 2000
    return bool(cfg.compile)


def train(
    model: Groups,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    cfg: TrainConfig,
    on_log: Callable[[LogRecord], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train every model of ``model`` for ``cfg.steps`` steps.

    Step s logs the losses of the parameters after s updates: step 0 is the initial network and
    the last logged step is ``cfg.steps``. Each model minimises its MSE plus its slope-recovery
    term, if any; the threshold and the logged training loss use the MSE alone. A model whose
    loss becomes NaN or infinite is frozen from that step (its later losses stay non-finite) and
    the others go on unaffected.

    Args:
        model: the ensemble (trained in place).
        x_train, y_train: ``[N, 1]`` shared by all models, or ``[M, N, 1]``.
        x_test, y_test: ``[N_test, 1]``.
        cfg: optimiser and schedule.
        on_log: called with every ``LogRecord`` as it is made.
        stop: polled before every step; returning True ends training early (``interrupted``).
    """
    size = model.size
    device = x_train.device
    optimizer = make_optimizer(model, cfg)
    active = torch.ones(size, dtype=torch.bool, device=device)
    reached = torch.full((size,), -1, dtype=torch.long, device=device)
    diverged = torch.full((size,), -1, dtype=torch.long, device=device)
    records: list[LogRecord] = []
    interrupted = False
    extra: dict[str, float | str] = {}

    def training_loss() -> tuple[torch.Tensor, torch.Tensor]:
        data = mse(model(x_train), y_train)
        penalty = model.penalty()
        return data, data if penalty is None else data + penalty

    loss_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]] = training_loss
    if use_compile(cfg, device):
        compiled = torch.compile(training_loss, dynamic=False)
        tic = time.perf_counter()
        try:
            # Compile the forward and the backward graph now, so that compile time is measured
            # apart from training; the gradients of this call are discarded.
            compiled()[1].sum().backward()  # type: ignore[no-untyped-call]
            loss_fn = compiled
        except Exception as exc:
            extra["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        for p in model.parameters():
            p.grad = None
        extra["compile_time_s"] = time.perf_counter() - tic
    start = time.perf_counter()

    def log(step: int, train_loss: torch.Tensor) -> None:
        with torch.no_grad():
            test_loss = mse(model(x_test), y_test)
            recovery = model.recovery()
            params = model.trajectories()

        # The copies to the host synchronise with the device: the clock is read after the work.
        def host(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu", torch.float64)

        record = LogRecord(
            step,
            time.perf_counter() - start,
            host(train_loss),
            host(test_loss),
            host(recovery),
            {k: host(v) for k, v in params.items()},
        )
        records.append(record)
        if on_log is not None:
            on_log(record)

    step = 0
    for step in range(cfg.steps + 1):
        if stop is not None and stop():
            # The parameters have had `step` updates: that is the step logged and reported.
            interrupted = True
            break
        data, loss = loss_fn()
        with torch.no_grad():
            finite = torch.isfinite(loss)
            diverged = torch.where(active & ~finite, step, diverged)
            active = active & finite
            reached = torch.where((reached < 0) & (data < cfg.threshold), step, reached)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log(step, data)
        if step == cfg.steps:
            break
        for param in optimizer.params:
            param.grad = None
        torch.where(active, loss, 0.0).sum().backward()  # type: ignore[no-untyped-call]
        optimizer.step(active, lr_factor(cfg, step))

    if interrupted and (not records or records[-1].step != step):
        with torch.no_grad():
            log(step, mse(model(x_train), y_train))
    with torch.no_grad():
        predictions = model(x_test)[..., 0].to("cpu", torch.float64)
    return TrainResult(
        records=records,
        steps_to_threshold=reached.cpu(),
        diverged_at=diverged.cpu(),
        predictions=predictions,
        wall_time=time.perf_counter() - start,
        steps_done=step,
        interrupted=interrupted,
        extra=extra,
    )
