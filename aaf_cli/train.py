"""The training loop: every model of an ensemble takes each step at once.

Pure: no printing, no files. Metrics stay on the device between log steps and reach the host only
every ``log_every`` steps (and at the end), through the ``on_log`` callback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

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
    active (diverged), is frozen exactly: its gradient is masked (a NaN gradient cannot reach
    its state) and its step is multiplied by a zero rate, so its values do not change. A
    schedule scales every rate by one factor per step (a factor of 0, the first step of a
    warmup, updates the optimiser state as torch does, not the values). ``decays`` holds each
    parameter's weight decay per row, or None where it has none. A parameter without a
    gradient at a step is frozen for that step.

    Every parameter becomes a view of one flat tensor (``flat``; their ``.data`` is rebound to
    it, values unchanged), and the rates, decays and model rows are spread to one value per
    element, so an update is a dozen operations whatever the number of layers. When the caller
    knows that every model is active (``all_active``) and no rate is zero, the masks are
    skipped: the masked update of an active row is the same arithmetic. ``factor`` and the bias
    corrections may be device tensors (a captured CUDA graph) or Python floats.
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
        counts = [p.numel() for p in self.params]
        per_row = [n // p.shape[0] for p, n in zip(self.params, counts)]
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
            at = 0
            for p, n in zip(self.params, counts):
                p.data = self.flat[at : at + n].view_as(p)
                at += n

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

    def _masked(
        self,
        active: torch.Tensor,
        factor: float | torch.Tensor,
        all_active: bool | None,
        l2: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(gradient, rates times ``factor``) per element, or None when no parameter has a
        gradient; ``l2`` adds ``decay * param`` to the gradient first; then the gradients of
        frozen rows are zeroed, unless no row can be frozen."""
        grads = [p.grad for p in self.params]
        if all(g is None for g in grads):
            return None
        present: torch.Tensor | None = None
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

    def bias_corrections(self) -> tuple[float, float]:
        """``1 - beta1^t`` and ``sqrt(1 - beta2^t)`` after ``self.t`` steps, in double precision
        (Python floats), as torch.optim.Adam computes them."""
        beta1, beta2 = self.betas
        bias1 = 1 - beta1**self.t
        return bias1, math.sqrt(1 - beta2**self.t)

    @torch.no_grad()
    def step(
        self,
        active: torch.Tensor,
        factor: float | torch.Tensor = 1.0,
        all_active: bool | None = None,
        corrections: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """One update of the active rows, at ``factor`` times their rates.

        ``all_active``: True when the caller knows every model is active (None: unknown).
        ``corrections``: the bias corrections as device tensors (a CUDA graph replays the step
        with them); by default they come from ``self.t`` as Python floats.
        """
        self.t += 1
        beta1, beta2 = self.betas
        bias1, bias2_sqrt = corrections if corrections is not None else self.bias_corrections()
        masked = self._masked(active, factor, all_active)
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
        self.buffer: torch.Tensor | None = None

    def state(self) -> list[torch.Tensor]:
        """The tensors that one step changes."""
        return [self.flat] + ([] if self.buffer is None else [self.buffer])

    @torch.no_grad()
    def step(
        self,
        active: torch.Tensor,
        factor: float | torch.Tensor = 1.0,
        all_active: bool | None = None,
        corrections: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """One update of the active rows, at ``factor`` times their rates (``all_active`` as
        ``StackedAdam.step``; SGD has no bias corrections)."""
        masked = self._masked(active, factor, all_active, l2=True)
        if masked is None:
            return
        grad, rate = masked
        if self.momentum:
            if self.buffer is None:
                self.buffer = grad.clone()
            else:
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


class Objective(Protocol):
    """A training objective in place of the MSE to ``y_train`` (a PINN's loss: ``aaf_cli.pde``).

    ``loss`` gives (the logged training metric ``[M]``, detached; the loss minimised ``[M]``,
    before ``model.penalty()`` is added); ``evaluate`` (at logged steps, before that step's
    update) the test metric ``[M]`` that ``train.threshold`` counts on, and extra values to log;
    ``logged`` extra values of the last ``loss`` (its terms); ``optimizer`` the optimiser over
    the model and any parameters of the objective's own.
    """

    def loss(self, model: Groups) -> tuple[torch.Tensor, torch.Tensor]: ...

    def evaluate(self, model: Groups) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def logged(self) -> dict[str, torch.Tensor]: ...

    def optimizer(self, model: Groups, cfg: TrainConfig) -> StackedAdam | StackedSGD: ...

    def prepare_compile(self, model: Groups, on: bool = True) -> str | None:
        """Make ``loss`` traceable by torch.compile; None if it now is, else why it cannot be
        (the run then trains eagerly and records the reason as ``compile_skipped``).
        ``on=False`` restores the eager form (after a failed compile)."""
        ...


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-model mean squared error ``[M]`` of predictions ``[M, N, out]``."""
    return (prediction - target).square().mean(dim=(1, 2))


def use_compile(cfg: TrainConfig, device: torch.device) -> bool:
    """Resolve ``train.compile``: deterministic, from the config and device alone.

    ``auto`` compiles on CUDA for runs of 2000 steps or more; on the CPU it stays off: the eager
    step is within ~10% of the compiled one there (benchmarks/bench_peers.py) and a cold compile
    costs 15-25 s, more than a default run takes.
    """
    if cfg.compile == "auto":
        return device.type == "cuda" and cfg.steps >= 2000
    return bool(cfg.compile)


#: ``cuda_graph: auto`` captures the step when one elementwise pass over the hidden layers'
#: pre-activations (M x N x sum of widths values) is at most this many: below it a step is a few
#: hundred short kernels and launch overhead dominates (an estimate: measure with
#: benchmarks/gpu_check.sh).
GRAPH_AUTO_MAX_ELEMENTS = 1 << 26


def use_cuda_graph(cfg: TrainConfig, device: torch.device, model: Groups, points: int) -> bool:
    """Resolve ``train.cuda_graph``: never off CUDA (``true`` there is refused by validation);
    ``auto`` on CUDA for small networks (see ``GRAPH_AUTO_MAX_ELEMENTS``) when not compiling."""
    if device.type != "cuda" or cfg.cuda_graph is False:
        return False
    if cfg.cuda_graph is True:
        return True
    elements = sum(g.size * points * sum(g.layers[1:-1]) for g in model.ensembles())
    return not use_compile(cfg, device) and elements <= GRAPH_AUTO_MAX_ELEMENTS


class _Book:
    """Per-model bookkeeping on the device, updated in place (a CUDA graph replays it):
    ``active`` (not diverged), ``reached`` (step of the first data loss under the threshold)
    and ``diverged`` (step of the first non-finite loss), -1 where it never happened."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.active = torch.ones(size, dtype=torch.bool, device=device)
        self.reached = torch.full((size,), -1, dtype=torch.long, device=device)
        self.diverged = torch.full((size,), -1, dtype=torch.long, device=device)
        # Host-side shortcuts (None: unknown, as on CUDA where a look would synchronise).
        self.all_active: bool | None = True
        self.all_reached = False

    @torch.no_grad()
    def update(
        self, step: int | torch.Tensor, data: torch.Tensor, loss: torch.Tensor, threshold: float
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


class _Graphed:
    """The training step (loss, bookkeeping, backward, update) captured as one CUDA graph.

    The step index, the schedule's factor and Adam's bias corrections live on the device, so a
    replay needs nothing from the host. A few warm-up steps (needed before a capture) run first
    on a side stream; the parameters, the optimiser's state and the bookkeeping are restored
    after them, so training starts from the same state as in eager mode. Off CUDA nothing is
    captured and ``replay`` runs the same device-side step (how the CPU tests check it).
    """

    WARMUP = 3

    def __init__(
        self,
        body: Callable[[int | torch.Tensor, float | torch.Tensor, bool], torch.Tensor],
        optimizer: StackedAdam | StackedSGD,
        book: _Book,
        cfg: TrainConfig,
        device: torch.device,
    ) -> None:
        self.body = body
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        # In the parameters' dtype, as the eager step's Python float meets them; padded for the
        # warm-up steps of a short run.
        self.factors = torch.tensor(
            [lr_factor(cfg, s) for s in range(cfg.steps)] + [0.0] * self.WARMUP,
            dtype=optimizer.flat.dtype,
            device=device,
        )
        had_buffer = isinstance(optimizer, StackedSGD) and optimizer.buffer is not None
        state = [*optimizer.state(), book.active, book.reached, book.diverged]
        saved = [t.detach().clone() for t in state]
        t0 = getattr(optimizer, "t", 0)
        self.graph: torch.cuda.CUDAGraph | None = None
        try:
            if device.type == "cuda":
                stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
                stream.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(stream):
                    for _ in range(self.WARMUP):
                        self._run()
                torch.cuda.current_stream(device).wait_stream(stream)
            else:
                for _ in range(self.WARMUP):
                    self._run()
        finally:
            with torch.no_grad():
                for t, s in zip(state, saved):
                    t.copy_(s)
                self.step.zero_()
        if isinstance(optimizer, StackedSGD) and optimizer.buffer is not None and not had_buffer:
            # Made by the warm-up: zero, the first replay's momentum step copies the gradient.
            optimizer.buffer.zero_()
        if isinstance(optimizer, StackedAdam):
            optimizer.t = t0
        if device.type == "cuda":
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.data = self._run()

    def _run(self) -> torch.Tensor:
        data = self.body(self.step, self.factors[self.step], True)
        with torch.no_grad():
            self.step += 1
        return data

    def replay(self) -> torch.Tensor:
        """One training step; returns the data loss ``[M]`` of the parameters before it."""
        if self.graph is None:
            return self._run()
        self.graph.replay()
        return self.data


def train(
    model: Groups,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    cfg: TrainConfig,
    on_log: Callable[[LogRecord], None] | None = None,
    stop: Callable[[], bool] | None = None,
    objective: Objective | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train every model of ``model`` for ``cfg.steps`` steps.

    Step s logs the losses of the parameters after s updates: step 0 is the initial network and
    the last logged step is ``cfg.steps``. Each model minimises its MSE plus its slope-recovery
    term, if any; the threshold and the logged training loss use the MSE alone. A model whose
    loss becomes NaN or infinite is frozen from that step (its later losses stay non-finite) and
    the others go on unaffected. Metrics reach the host only at logged steps.

    Args:
        model: the ensemble (trained in place).
        x_train, y_train: ``[N, 1]`` shared by all models, or ``[M, N, 1]``.
        x_test, y_test: ``[N_test, 1]``.
        cfg: optimiser and schedule.
        on_log: called with every ``LogRecord`` as it is made.
        stop: polled before every step; returning True ends training early (``interrupted``).
        objective: minimised instead of the MSE (``x_train``, ``y_train`` then only give the
            device); ``train.threshold`` then counts on its test metric at logged steps.
            Compiled (``train.compile``) when its ``prepare_compile`` allows; never captured in
            a CUDA graph.
        on_step: called with the step number before every step (``budget.ThreadGuard``);
            not for a compiled step.
    """
    device = x_train.device
    if cfg.cuda_graph is True and device.type != "cuda":
        from aaf_cli.errors import ConfigError

        raise ConfigError(
            "config", "train.cuda_graph", f"true needs a CUDA device (training runs on {device})"
        )
    optimizer = make_optimizer(model, cfg) if objective is None else objective.optimizer(model, cfg)
    book = _Book(model.size, device)
    if device.type == "cuda":
        book.all_active = None  # no host look at device values between log steps
    records: list[LogRecord] = []
    interrupted = False
    extra: dict[str, float | str] = {}
    betas = cfg.betas

    def training_loss() -> tuple[torch.Tensor, torch.Tensor]:
        data = mse(model(x_train), y_train)
        penalty = model.penalty()
        return data, data if penalty is None else data + penalty

    def objective_loss() -> tuple[torch.Tensor, torch.Tensor]:
        assert objective is not None
        metric, loss = objective.loss(model)
        penalty = model.penalty()
        return metric, loss if penalty is None else loss + penalty

    loss_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]] = training_loss
    # The objective's threshold counts at logged steps, on its test metric (see the loop).
    threshold = cfg.threshold if objective is None else -math.inf
    compiling = use_compile(cfg, device)
    if objective is not None:
        loss_fn = objective_loss
        if compiling:
            blocker = objective.prepare_compile(model)
            if blocker is not None:
                extra["compile_skipped"] = blocker
                compiling = False
    if compiling:
        # Compiled CPU kernels fix their thread count when they are generated: nothing for a
        # thread guard to adjust.
        on_step = None
        compiled = torch.compile(loss_fn, dynamic=False)
        tic = time.perf_counter()
        try:
            # Compile the forward and the backward graph now, so that compile time is measured
            # apart from training; the gradients of this call are discarded.
            compiled()[1].sum().backward()  # type: ignore[no-untyped-call]
            loss_fn = compiled
        except Exception as exc:
            extra["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            if objective is not None:
                objective.prepare_compile(model, on=False)
        for p in (*model.parameters(), *optimizer.params):
            p.grad = None
        extra["compile_time_s"] = time.perf_counter() - tic

    def body(step: int | torch.Tensor, factor: float | torch.Tensor, update: bool) -> torch.Tensor:
        """The loss of step ``step``, the bookkeeping, and (``update``) one optimiser step."""
        data, loss = loss_fn()
        book.update(step, data, loss, threshold)
        if update:
            for param in optimizer.params:
                param.grad = None
            # With every model known active, the mask would multiply each gradient by one.
            total = loss if book.all_active else torch.where(book.active, loss, 0.0)
            total.sum().backward()  # type: ignore[no-untyped-call]
            corrections = None
            if isinstance(step, torch.Tensor) and isinstance(optimizer, StackedAdam):
                t = (step + 1).to(torch.float64)
                dtype = optimizer.flat.dtype
                corrections = (
                    (1 - betas[0] ** t).to(dtype),
                    (1 - betas[1] ** t).sqrt().to(dtype),
                )
            optimizer.step(book.active, factor, book.all_active, corrections)
        return data

    graphed: _Graphed | None = None
    if objective is None and use_cuda_graph(cfg, device, model, x_train.shape[-2]):
        tic = time.perf_counter()
        book.all_active = None  # a replay cannot take host-side shortcuts
        try:
            graphed = _Graphed(body, optimizer, book, cfg, device)
        except Exception as exc:
            extra["cuda_graph_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            book.all_active = None if device.type == "cuda" else True  # eager from the start
        extra["cuda_graph_time_s"] = time.perf_counter() - tic
    start = time.perf_counter()

    @torch.no_grad()
    def evaluate() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Test loss, S(a) and the logged parameters of the current parameters (on device)."""
        if objective is not None:
            test, values = objective.evaluate(model)
            return test, model.recovery(), {**model.trajectories(), **values}
        return mse(model(x_test), y_test), model.recovery(), model.trajectories()

    def log(
        step: int,
        train_loss: torch.Tensor,
        now: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
    ) -> None:
        test_loss, recovery, params = now
        if objective is not None:
            params = {**params, **objective.logged()}
            book.reach(step, test_loss, cfg.threshold)

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
        if on_step is not None:
            on_step(step)
        logged = step % cfg.log_every == 0 or step == cfg.steps
        # Measured before the update that this step makes (the parameters after `step` updates).
        now = evaluate() if logged else None
        if graphed is not None and step < cfg.steps:
            data = graphed.replay()
        else:
            data = body(step, lr_factor(cfg, step) if step < cfg.steps else 0.0, step < cfg.steps)
        if now is not None:
            log(step, data, now)
            book.refresh()

    if interrupted and (not records or records[-1].step != step):
        with torch.no_grad():
            if objective is not None:
                now = evaluate()
                log(step, objective.loss(model)[0], now)
            else:
                log(step, mse(model(x_train), y_train), evaluate())
    with torch.no_grad():
        predictions = model(x_test)[..., 0].to("cpu", torch.float64)
    return TrainResult(
        records=records,
        steps_to_threshold=book.reached.cpu(),
        diverged_at=book.diverged.cpu(),
        predictions=predictions,
        wall_time=time.perf_counter() - start,
        steps_done=step,
        interrupted=interrupted,
        extra=extra,
    )
