"""Benchmark: aaf's KAN ensemble against a per-model loop of plain-torch KANs and against JAX.

Acceptance: a KAN ensemble of 16 models is >= 5x faster than a per-model loop of the same
layers in plain torch, interleaved in one session.

Workload: float32, f(x, y) = exp(sin(pi x) + y^2) at N points drawn uniformly from [-1, 1]^2
(one fixed sample), KANs of widths [2, 5, 1] (``small``) and [2, 10, 10, 1] (``deep``), grid G,
order k = 3, silu base branch, grid range [-1, 1], Adam (lr 1e-2), M models. A cell is
net:G:N:M (default: M = 16 of small at G = 5 on 200 and 1000 points and at G = 10 on 200,
and of deep at G = 5 on 200; ``--cells``, e.g. ``small:5:200:64``). Each cell is trained by

* ``loop``: M independent plain-torch KANs (``PlainKan``: efficient-KAN's layer with a
  standalone spline scaler, ``silu(x) @ W_b^T + B(x).flatten @ (W_s * coef)^T``, written here,
  none of aaf's classes), each with its own ``torch.optim.Adam``, one model after another;
  the first ``--loop-models`` (16) are timed (the rate is per model-step and every model has
  the same shape, so cells that differ only in M share one loop run per round);
* ``ensemble``: aaf's ``KanEnsemble`` of the M models in ``models.Groups``, trained by
  ``aaf_cli.train.train`` (eager: its stacked Adam and bookkeeping);
* ``adam``: the same ``KanEnsemble`` trained by a plain loop with ``torch.optim.Adam`` over its
  stacked parameters: the layer batching alone, without aaf's training engine;
* ``compiled`` (only with ``--methods``): aaf's ``train`` with ``compile: true``, the compile
  time reported apart;
* ``jax-jit``: the ensemble as an expert writes it in JAX (below), one ``jax.jit`` call per
  training step of all M models;
* ``jax-scan``: the same step under ``jax.lax.scan``, 50 steps per call (``min(50, steps)``,
  and the remainder in one more call, so that every method trains the same number of steps).

The JAX peer (``make_jax``): the parameters of the M models stacked on a leading model axis
(``coef [M, in, out, G + k]``, ``scale_base``, ``scale_sp [M, in, out]``, all trained), one
model's layer written point-last as aaf's ``KanEnsemble`` lays it out (the basis ``[in, G + k,
N]`` by the Cox-de Boor recursion in ``splines.basis_rows``' form, silu's row in front of each
input's, then one product ``[out, in (G + k + 1)] @ [in (G + k + 1), N]``), ``jax.vmap`` over
the models, each model's MSE summed, ``jax.grad`` and ``optax.adam``; XLA compiles the whole
step (forward, backward, update) into one program. Tried on one thread, M = 16, the cores busy
with other jobs: the explicit model axis (the same layers on ``[M, ...]`` arrays, one batched
product per layer) ran at 0.9-1.0x vmap's rate, so vmap is kept; with vmap, XLA evaluates the
first layer's basis once for all models, as their input is shared (aaf evaluates it per model).
Basis-last layouts (``[..., N, in, G + k]`` with an einsum per layer) ran 2-4x slower than
point-last. jax-jit pays per call for fresh temporaries: at small:5:1000:64 each step took 44k
minor page faults, about 70% of its time in the kernel (jax-scan reuses its buffers within a
call: 0.9k per step), so jax-scan is the peer the ratios use. JAX's compile time
(``lower().compile()`` of the step and of the scan, per cell, before the rounds) is reported
apart, not in the rates. JAX is optional: ``pip install -e '.[bench]'`` (jax, optax); without
it the JAX methods are skipped with a note.

Every model starts from aaf's ``kan_init`` of its seed (the loop's layers and JAX's stacked
arrays get the same numbers), so all methods do the same computation. Before timing, the script
checks that the loop's and the ensemble's loss trajectories of 4 models agree over 50 steps in
float64 (relative 1e-9); after timing, that model 0's float32 training loss after the timed
steps agrees between the loop and every other method, JAX's included (``--tolerance``, relative
1e-2).

The methods run interleaved (every thread count, cell and method once per round, the order of
the methods rotated from round to round) and each figure is the median over the rounds, in
model-steps per second (models trained times steps, over the training time; model building and
compiling are not timed); the table gives ensemble / loop, adam / loop and compiled / loop, and
ensemble / jax-scan and compiled / jax-scan. Torch's thread count is set per cell
(``--threads``, default 1 and 2). XLA's is set once per process, before JAX loads: one thread
(``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``) when every
``--threads`` is 1, else XLA's default (threads for every core) in every row; a user's
``XLA_FLAGS`` that sets ``xla_cpu_multi_thread_eigen`` wins. The script prints the JAX runs'
process CPU time over their wall time (about 1 on one core; jax-jit's Python dispatch can run
beside the step it dispatched before). The machine's cores are shared with whatever else runs
there: the load average is printed with every round. ``--profile`` prints torch.profiler
tables of each torch method's steps instead (forward / backward / optimizer, and aaf's basis
and feature assembly marked).

    PYTHONPATH=. python benchmarks/bench_kan.py --quick      # 1 thread, 2 cells (~30 s)
    PYTHONPATH=. python benchmarks/bench_kan.py              # the full table: ~2 min per
                                                             # thread count (much longer for 2
                                                             # threads beside busy processes)
    PYTHONPATH=. python benchmarks/bench_kan.py --threads 1 --cells small:5:200:16 \\
        --methods loop ensemble adam compiled jax-jit jax-scan
    PYTHONPATH=. python benchmarks/bench_kan.py --profile --threads 1 --cells small:5:1000:16
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# aaf_cli first: it sets its OpenMP defaults (KMP_BLOCKTIME) before torch loads its runtime, as
# in `aaf run`.
import aaf_cli  # noqa: F401

# isort: split
import torch
import torch.nn.functional as F
from torch import nn

from aaf_cli import splines
from aaf_cli.config import KanVariant, TrainConfig
from aaf_cli.kan import KanEnsemble, kan_init
from aaf_cli.models import Groups, ModelSpec
from aaf_cli.train import StackedAdam, TrainResult, train

NETS = {"small": [2, 5, 1], "deep": [2, 10, 10, 1]}
ORDER = 3
LO, HI = -1.0, 1.0
LR = 1e-2
METHODS = ["loop", "ensemble", "adam"]
JAX_METHODS = ["jax-jit", "jax-scan"]
SCAN = 50  # steps per lax.scan call
#: XLA on one thread; read once, when JAX loads.
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def specs(models: int, grid: int) -> list[ModelSpec]:
    variant = KanVariant(kind="kan", grid=grid, order=ORDER, grid_range=(LO, HI))
    return [ModelSpec("kan", s, "kan", variant) for s in range(models)]


def data(points: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [N, 2]`` uniform on [-1, 1]^2 (fixed sample), ``y = exp(sin(pi x0) + x1^2) [N, 1]``."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.rand(points, 2, generator=gen, dtype=torch.float64) * 2 - 1
    y = torch.exp(torch.sin(math.pi * x[:, :1]) + x[:, 1:] ** 2)
    return x.to(dtype), y.to(dtype)


# ------------------------------------------------------------------------------------------
# The plain-torch peer: one KAN as a user writes it (efficient-KAN's layout).


class PlainKanLayer(nn.Module):
    """efficient-KAN's ``KANLinear`` with a standalone spline scaler: ``silu(x) @ W_b^T +
    B(x).flatten(1) @ (W_s * coef).flatten(1)^T``, the B-spline basis by the Cox-de Boor
    recursion on a fixed uniform grid, no bias."""

    grid: torch.Tensor

    def __init__(
        self, coef: torch.Tensor, scale_base: torch.Tensor, scale_sp: torch.Tensor, grid: int
    ) -> None:
        super().__init__()
        fan_in = coef.shape[0]
        self.order = ORDER
        h = (HI - LO) / grid
        steps = torch.arange(-ORDER, grid + ORDER + 1, dtype=torch.float64)
        self.register_buffer("grid", (LO + steps * h).expand(fan_in, -1).contiguous())
        # [out, in] and [out, in, G + k], as efficient-KAN stores them.
        self.base_weight = nn.Parameter(scale_base.T.contiguous())
        self.spline_weight = nn.Parameter(coef.permute(1, 0, 2).contiguous())
        self.spline_scaler = nn.Parameter(scale_sp.T.contiguous())

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in, G + k]``."""
        g = self.grid
        x = x.unsqueeze(-1)
        b = ((x >= g[:, :-1]) & (x < g[:, 1:])).to(x.dtype)
        for k in range(1, self.order + 1):
            b = (x - g[:, : -(k + 1)]) / (g[:, k:-1] - g[:, : -(k + 1)]) * b[..., :-1] + (
                g[:, k + 1 :] - x
            ) / (g[:, k + 1 :] - g[:, 1:-k]) * b[..., 1:]
        return b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(F.silu(x), self.base_weight)
        scaled = self.spline_weight * self.spline_scaler.unsqueeze(-1)
        spline = F.linear(self.b_splines(x).flatten(1), scaled.flatten(1))
        return base + spline


class PlainKan(nn.Module):
    def __init__(self, layers: Sequence[int], seed: int, grid: int, dtype: torch.dtype) -> None:
        super().__init__()
        init = kan_init(layers, seed, grid, ORDER, LO, HI)
        self.layers = nn.ModuleList(PlainKanLayer(*w, grid) for w in init).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


# ------------------------------------------------------------------------------------------


@dataclass
class Timing:
    rate: float  # model-steps per second
    loss0: float  # model 0's training loss after the timed steps
    cpu: float = math.nan  # process CPU time over wall time of the timed steps (JAX only)


def loop_net(
    layers: list[int], grid: int, seed: int, dtype: torch.dtype
) -> tuple[PlainKan, torch.optim.Adam]:
    net = PlainKan(layers, seed, grid, dtype)
    return net, torch.optim.Adam(net.parameters(), lr=LR)


def loop_steps(
    net: PlainKan,
    opt: torch.optim.Adam,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    losses: list[torch.Tensor] | None = None,
) -> None:
    for _ in range(steps):
        loss = F.mse_loss(net(x), y)
        if losses is not None:
            losses.append(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()


def run_loop(
    layers: list[int],
    grid: int,
    models: int,
    steps: int,
    points: int,
    dtype: torch.dtype,
    record: bool = False,
) -> tuple[Timing, list[list[float]]]:
    """Models 0..models-1 one after another; ``record``: also each model's loss trajectory
    (the loss after 0..steps updates)."""
    x, y = data(points, dtype)
    elapsed = 0.0
    histories: list[list[float]] = []
    loss0 = math.nan
    for seed in range(models):
        net, opt = loop_net(layers, grid, seed, dtype)
        losses: list[torch.Tensor] = []
        tic = time.perf_counter()
        loop_steps(net, opt, x, y, steps, losses if record else None)
        elapsed += time.perf_counter() - tic
        with torch.no_grad():
            final = F.mse_loss(net(x), y).item()
        histories.append([v.item() for v in losses] + [final])
        if seed == 0:
            loss0 = final
    return Timing(models * steps / elapsed, loss0), histories


def ensemble_model(layers: list[int], grid: int, models: int, dtype: torch.dtype) -> Groups:
    return Groups([KanEnsemble(layers, "silu", specs(models, grid), dtype=dtype)])


def ensemble_steps(
    model: Groups, x: torch.Tensor, y: torch.Tensor, steps: int, record: bool = False
) -> TrainResult:
    """aaf's ``train``, eager; ``record``: log every step (the trajectories; the timed runs log
    only the first and last step)."""
    log_every = 1 if record else steps
    cfg = TrainConfig(steps=steps, lr=LR, log_every=log_every, compile=False, cuda_graph=False)
    return train(model, x, y, x, y, cfg)


def run_ensemble(
    layers: list[int],
    grid: int,
    models: int,
    steps: int,
    points: int,
    dtype: torch.dtype,
    record: bool = False,
) -> tuple[Timing, list[list[float]]]:
    """aaf's engine: ``KanEnsemble`` in ``Groups`` through ``train`` (eager)."""
    x, y = data(points, dtype)
    result = ensemble_steps(ensemble_model(layers, grid, models, dtype), x, y, steps, record)
    histories = [[r.train_loss[i].item() for r in result.records] for i in range(models)]
    final = result.records[-1].train_loss[0].item()
    return Timing(models * steps / result.wall_time, final), histories


def adam_steps(
    model: KanEnsemble, opt: torch.optim.Adam, x: torch.Tensor, y: torch.Tensor, steps: int
) -> None:
    for _ in range(steps):
        # Each model's MSE, summed: every model gets its own gradient.
        loss = (model(x) - y).square().mean(dim=(1, 2)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def run_adam(
    layers: list[int], grid: int, models: int, steps: int, points: int, dtype: torch.dtype
) -> Timing:
    """The same ``KanEnsemble`` with ``torch.optim.Adam`` over its stacked parameters."""
    x, y = data(points, dtype)
    model = KanEnsemble(layers, "silu", specs(models, grid), dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    tic = time.perf_counter()
    adam_steps(model, opt, x, y, steps)
    elapsed = time.perf_counter() - tic
    with torch.no_grad():
        final = (model(x)[0] - y).square().mean().item()
    return Timing(models * steps / elapsed, final)


# ------------------------------------------------------------------------------------------
# The JAX peer: the same ensemble as an expert writes it in JAX.


def jax_modules() -> tuple[Any, Any, Any]:
    """``jax``, ``jax.numpy`` and ``optax``, imported untyped: they are optional (optax has no
    type information), and the file type-checks the same with and without them."""
    return (
        importlib.import_module("jax"),
        importlib.import_module("jax.numpy"),
        importlib.import_module("optax"),
    )


def jax_setup(threads: Sequence[int]) -> str | None:
    """Load JAX (and optax) for float32 on the CPU, on one thread when every torch thread count
    is 1 (``XLA_ONE_THREAD``, set before JAX loads: XLA reads ``XLA_FLAGS`` once, so its
    threads cannot follow torch's from cell to cell); a user's ``XLA_FLAGS`` that sets
    ``xla_cpu_multi_thread_eigen`` wins. Returns a line that says what JAX runs with, or
    ``None`` when jax or optax is not installed."""
    flags = os.environ.get("XLA_FLAGS", "")
    if max(threads) == 1 and "jax" not in sys.modules and "multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_ONE_THREAD}".strip()
    try:
        jax, _, optax = jax_modules()
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", False)  # float32, whatever JAX_ENABLE_X64 says
    jax.config.update("jax_platforms", "cpu")
    flags = os.environ.get("XLA_FLAGS", "")
    one = "multi_thread_eigen=false" in flags
    return (
        f"JAX {jax.__version__} (optax {optax.__version__}) on {jax.default_backend()}, "
        f"float32, XLA_FLAGS={flags!r}: "
        + (
            "one thread"
            if one
            else "XLA's default threads (every core) in every row, whatever --threads says"
        )
    )


@dataclass
class JaxCell:
    step: Any  # one training step of all models, compiled
    scans: list[Any]  # the lax.scan calls that make up ``steps`` steps, compiled
    losses: Any  # every model's training loss [M], compiled
    state: Any  # (params, optimizer state) at the start: every run starts from it
    compile_jit: float  # seconds to compile ``step``
    compile_scan: float  # seconds to compile the scans


def make_jax(layers: list[int], grid: int, models: int, points: int, steps: int) -> JaxCell:
    """The ensemble in JAX: model s starts from ``kan_init`` of seed s (float32, as aaf's
    ``KanEnsemble`` casts it), every parameter stacked on a leading model axis; one model's
    forward pass point-last, as ``KanEnsemble._layer`` computes it, ``jax.vmap`` over the
    models, each model's MSE summed, ``optax.adam``. Compiled ahead of time (timed apart)."""
    jax, jnp, optax = jax_modules()

    x, y = data(points, torch.float32)
    xt = jnp.asarray(x.T.contiguous().numpy())  # [in, N], shared by the models
    yt = jnp.asarray(y.T.contiguous().numpy())  # [1, N]
    t = splines.knots(LO, HI, grid, ORDER, torch.float32).unsqueeze(-1)  # [T, 1]
    knots = jnp.asarray(t.numpy())
    # The knot spacings' reciprocals once per order, in float32 (as splines.basis_rows).
    inverse = [jnp.asarray((1 / (t[j:] - t[:-j])).numpy()) for j in range(1, ORDER + 1)]

    def basis(h: Any) -> Any:
        """``[in, G + k, N]`` for layer inputs ``[in, N]``: the Cox-de Boor recursion."""
        z = h[:, None, :]  # [in, 1, N]
        b = ((z >= knots[:-1]) & (z < knots[1:])).astype(h.dtype)
        for j in range(1, ORDER + 1):
            left = (z - knots[:-j]) * inverse[j - 1]  # (x - t_c) / (t_{c+j} - t_c)
            b = left[:, :-1] * b[:, :-1] + (1 - left[:, 1:]) * b[:, 1:]
        return b

    def forward(params: Any) -> Any:
        """One model's outputs ``[out, N]``."""
        h = xt
        for coef, scale_base, scale_sp in params:
            features = jnp.concatenate([jax.nn.silu(h)[:, None], basis(h)], axis=1)
            features = features.reshape(-1, h.shape[-1])  # [in (G + k + 1), N]
            w = jnp.concatenate([scale_base[..., None], scale_sp[..., None] * coef], axis=-1)
            w = w.transpose(1, 0, 2).reshape(coef.shape[1], -1)  # [out, in (G + k + 1)]
            h = w @ features
        return h

    def mse(params: Any) -> Any:
        return ((forward(params) - yt) ** 2).mean()

    per_model = jax.vmap(mse)
    opt = optax.adam(LR)

    def step(params: Any, state: Any) -> tuple[Any, Any]:
        grads = jax.grad(lambda p: per_model(p).sum())(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def scan(length: int) -> Callable[[Any, Any], Any]:
        def many(params: Any, state: Any) -> Any:
            def body(carry: Any, _: Any) -> tuple[Any, None]:
                return step(*carry), None

            carry, _ = jax.lax.scan(body, (params, state), None, length=length)
            return carry

        return many

    inits = [kan_init(layers, s, grid, ORDER, LO, HI) for s in range(models)]
    params = [
        tuple(
            jnp.asarray(torch.stack([w[k][j] for w in inits]).to(torch.float32).numpy())
            for j in range(3)
        )
        for k in range(len(layers) - 1)
    ]
    state = (params, opt.init(params))
    tic = time.perf_counter()
    compiled_step = jax.jit(step).lower(*state).compile()
    compile_jit = time.perf_counter() - tic
    chunk = min(SCAN, steps)
    lengths = [chunk] * (steps // chunk) + ([steps % chunk] if steps % chunk else [])
    tic = time.perf_counter()
    compiled = {n: jax.jit(scan(n)).lower(*state).compile() for n in set(lengths)}
    compile_scan = time.perf_counter() - tic
    losses = jax.jit(per_model).lower(params).compile()
    if losses(params).dtype != jnp.float32:
        raise SystemExit(f"JAX computes in {losses(params).dtype}, not float32")
    # One run of each outside the timings (first-touch of XLA's buffers).
    jax.block_until_ready(compiled_step(*state))
    jax.block_until_ready([compiled[n](*state) for n in compiled])
    return JaxCell(
        compiled_step,
        [compiled[n] for n in lengths],
        losses,
        state,
        compile_jit,
        compile_scan,
    )


def run_jax(cell: JaxCell, models: int, steps: int, scan: bool) -> Timing:
    """``steps`` steps of every model from the initial state: one call per step (jax-jit) or
    per ``lax.scan`` (jax-scan)."""
    jax, _, _ = jax_modules()
    params, state = cell.state
    cpu = time.process_time()
    tic = time.perf_counter()
    if scan:
        for many in cell.scans:
            params, state = many(params, state)
    else:
        for _ in range(steps):
            params, state = cell.step(params, state)
    jax.block_until_ready(params)
    elapsed = time.perf_counter() - tic
    cpu = time.process_time() - cpu
    final = float(cell.losses(params)[0])
    return Timing(models * steps / elapsed, final, cpu / elapsed)


def check_equivalence(layers: list[int], grid: int, points: int) -> float:
    """Largest relative difference between the loop's and the ensemble's loss trajectories of
    4 models over 50 steps, in float64."""
    _, ref = run_loop(layers, grid, 4, 50, points, torch.float64, record=True)
    _, got = run_ensemble(layers, grid, 4, 50, points, torch.float64, record=True)
    worst = 0.0
    for a, b in zip(ref, got):
        assert len(a) == len(b), (len(a), len(b))
        for u, v in zip(a, b):
            worst = max(worst, abs(u - v) / max(abs(u), 1e-300))
    if worst > 1e-9:
        raise SystemExit(
            f"{layers} G={grid}: the ensemble disagrees with the per-model loop in float64: "
            f"relative error {worst:.2e}"
        )
    return worst


# ------------------------------------------------------------------------------------------
# --profile: where one step's time goes.


@contextlib.contextmanager
def marked(targets: dict[tuple[Any, str], str]) -> Iterator[None]:
    """Wrap ``getattr(owner, name)`` in ``record_function(label)`` for every
    ``(owner, name): label``, restoring them on exit."""
    from torch.profiler import record_function

    saved = {key: getattr(*key) for key in targets}

    def wrap(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def inner(*a: Any, **k: Any) -> Any:
            with record_function(label):
                return fn(*a, **k)

        return inner

    try:
        for (owner, name), label in targets.items():
            setattr(owner, name, wrap(saved[owner, name], label))
        yield
    finally:
        for (owner, name), fn in saved.items():
            setattr(owner, name, fn)


#: What ``--profile`` marks: the step's phases and, in aaf, the layer's parts.
MARKS = {
    (KanEnsemble, "forward"): "## forward (KanEnsemble)",
    (PlainKan, "forward"): "## forward (PlainKan)",
    (torch.Tensor, "backward"): "## backward",
    (StackedAdam, "step"): "## optimizer (aaf StackedAdam)",
    (torch.optim.Adam, "step"): "## optimizer (torch Adam)",
    (splines, "basis"): "### basis (aaf splines.basis)",
    (PlainKanLayer, "b_splines"): "### basis (PlainKanLayer.b_splines)",
    (KanEnsemble, "_features"): "### features (basis + silu + cat + flatten)",
    (KanEnsemble, "_weights"): "### weights (scale * coef, cat, transpose, flatten)",
}


def profile(layers: list[int], grid: int, models: int, points: int, steps: int, rows: int) -> None:
    """torch.profiler over ``steps`` steps of one loop model, of the ensemble through aaf's
    ``train`` and of the ensemble with torch Adam: per step, the time of each marked phase
    (forward, backward, optimizer; in the forward, the basis and the feature / weight
    assembly: CPU time including children), and the ops by self time."""
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    x, y = data(points, torch.float32)
    net, opt = loop_net(layers, grid, 0, torch.float32)
    group = ensemble_model(layers, grid, models, torch.float32)
    kan = KanEnsemble(layers, "silu", specs(models, grid), dtype=torch.float32)
    kan_opt = torch.optim.Adam(kan.parameters(), lr=LR)
    cases: list[tuple[str, int, Callable[[], object]]] = [
        ("loop (PlainKan + torch Adam), 1 model", 1, lambda: loop_steps(net, opt, x, y, steps)),
        (
            f"ensemble (aaf train), {models} models",
            models,
            lambda: ensemble_steps(group, x, y, steps),
        ),
        (
            f"adam (KanEnsemble + torch Adam), {models} models",
            models,
            lambda: adam_steps(kan, kan_opt, x, y, steps),
        ),
    ]
    for title, count, run in cases:
        run()  # warm up (and train's first call)
        with (
            marked(MARKS),
            torch_profile(activities=[ProfilerActivity.CPU]) as prof,
            record_function("## all steps"),
        ):
            run()
        events = {e.key: e for e in prof.key_averages()}
        whole = events["## all steps"].cpu_time_total / steps
        print(
            f"\n{title}: {whole:.0f} us per step under the profiler "
            f"({whole / count:.0f} us per model-step)"
        )
        for key in sorted(k for k in events if k.startswith("##") and k != "## all steps"):
            e = events[key]
            per = e.cpu_time_total / steps
            print(f"  {key:<58}{per:>9.0f} us/step {100 * per / whole:>5.1f}%  ({e.count} calls)")
        ops = prof.key_averages()
        print(ops.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


@dataclass(frozen=True)
class Cell:
    net: str
    grid: int
    points: int
    models: int

    @classmethod
    def parse(cls, text: str) -> Cell:
        net, grid, points, models = text.split(":")
        if net not in NETS:
            raise argparse.ArgumentTypeError(f"unknown net {net!r} (valid: {', '.join(NETS)})")
        return cls(net, int(grid), int(points), int(models))

    def __str__(self) -> str:
        return f"{self.net}:{self.grid}:{self.points}:{self.models}"


#: net:G:N:M. The loop's rate does not depend on M (one model after another): cells that
#: differ only in M share one loop run per round.
CELLS = ["small:5:200:16", "small:10:200:16", "small:5:1000:16", "deep:5:200:16"]
QUICK_CELLS = ["small:5:200:16", "deep:5:200:16"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 thread, two cells, fewer steps and rounds"
    )
    parser.add_argument(
        "--cells",
        type=Cell.parse,
        nargs="+",
        default=None,
        metavar="NET:G:N:M",
        help=f"net (small, deep), grid G, points N, models M; default {' '.join(CELLS)} "
        f"(quick: {' '.join(QUICK_CELLS)})",
    )
    parser.add_argument("--steps", type=int, default=None, help="default 40 (quick 20)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (quick 3)")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="torch threads, set per cell; default 1 2 (quick 1); XLA's are set once: one thread "
        "when every one is 1, else XLA's default",
    )
    parser.add_argument(
        "--loop-models",
        type=int,
        default=16,
        help="time at most this many models of the per-model loop (the rate is per model-step)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=[*METHODS, "compiled", *JAX_METHODS],
        help=f"default: {' '.join(METHODS + JAX_METHODS)} (the JAX ones when jax and optax are "
        "installed); compiled: aaf's train with compile: true; compile times reported apart, "
        "not timed",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-2,
        help="relative tolerance of model 0's final float32 loss, loop vs every other method",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print torch.profiler tables instead of timing"
    )
    parser.add_argument("--profile-steps", type=int, default=20)
    args = parser.parse_args(argv)

    cells: list[Cell] = args.cells or [
        Cell.parse(c) for c in (QUICK_CELLS if args.quick else CELLS)
    ]
    steps = args.steps or (20 if args.quick else 40)
    args.threads = args.threads or ([1] if args.quick else [1, 2])
    rounds = args.rounds or (3 if args.quick else 5)
    methods: list[str] = args.methods or METHODS + JAX_METHODS
    jax_line = None
    if any(m in JAX_METHODS for m in methods) and not args.profile:
        jax_line = jax_setup(args.threads)
        if jax_line is None:
            print(
                "JAX not installed: `pip install -e '.[bench]'` (jax, optax) adds the jax-jit "
                "and jax-scan columns; skipping them"
            )
            methods = [m for m in methods if m not in JAX_METHODS]

    print(
        f"machine: {platform.machine()} ({os.cpu_count()} cores, load {load_average():.2f}), "
        f"torch {torch.__version__}, threads {args.threads} (set per cell; the cores are "
        f"shared with whatever else runs)"
    )
    if args.profile:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for c in cells:
                print(
                    f"\n=== profile: {c.net} {NETS[c.net]} G={c.grid} N={c.points} "
                    f"M={c.models}, {threads} thread(s), {args.profile_steps} steps ==="
                )
                profile(NETS[c.net], c.grid, c.models, c.points, args.profile_steps, 25)
        return

    print(
        f"float32, {steps} steps per model, lr {LR}, median of {rounds} interleaved rounds; "
        f"loop: {args.loop_models} models timed at most"
    )
    if jax_line:
        print(jax_line)
    torch.set_num_threads(max(args.threads))
    for net, grid in dict.fromkeys((c.net, c.grid) for c in cells):
        worst = check_equivalence(NETS[net], grid, 200)
        print(
            f"{net} {NETS[net]} G={grid}: ensemble == per-model loop (float64, 4 models, "
            f"50 steps, N=200, max rel. diff of the loss trajectories {worst:.1e})",
            flush=True,
        )
    jax_cells: dict[Cell, JaxCell] = {}
    if any(m in JAX_METHODS for m in methods):
        for c in cells:
            jax_cells[c] = make_jax(NETS[c.net], c.grid, c.models, c.points, steps)
        print(f"JAX: {len(cells)} cell(s) compiled", flush=True)

    results: dict[tuple[int, Cell, str], list[Timing]] = {}
    compile_s: list[float] = []
    loads: list[float] = []
    for r in range(rounds):
        loops: dict[tuple[int, str, int, int], Timing] = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            for c in cells:
                layers = NETS[c.net]
                order = methods[r % len(methods) :] + methods[: r % len(methods)]
                for method in order:
                    if method == "loop":
                        key = (threads, c.net, c.grid, c.points)
                        if key not in loops:
                            loops[key], _ = run_loop(
                                layers,
                                c.grid,
                                min(c.models, args.loop_models),
                                steps,
                                c.points,
                                torch.float32,
                            )
                        t = loops[key]
                    elif method == "ensemble":
                        t, _ = run_ensemble(
                            layers, c.grid, c.models, steps, c.points, torch.float32
                        )
                    elif method == "compiled":
                        t, setup = run_compiled(layers, c.grid, c.models, steps, c.points)
                        compile_s.append(setup)
                    elif method in JAX_METHODS:
                        t = run_jax(jax_cells[c], c.models, steps, scan=method == "jax-scan")
                    else:
                        t = run_adam(layers, c.grid, c.models, steps, c.points, torch.float32)
                    results.setdefault((threads, c, method), []).append(t)
        load = load_average()
        loads.append(load)
        print(f"round {r + 1}/{rounds} done (load {load:.2f})", flush=True)

    print_table(results, args.threads, cells, methods, args.tolerance)
    cores = os.cpu_count() or 1
    if max(args.threads) > 1 and max(loads) > cores - 1:
        print(
            f"\nnote: the load average reached {max(loads):.1f} on {cores} cores: other processes"
            " competed for the cores, and the multi-thread figures (spinning OpenMP threads "
            "beside them) say more about that than about the methods"
        )
    if compile_s:
        print(
            f"\ncompile time (not in the rates): first {compile_s[0]:.1f} s, later median "
            f"{statistics.median(compile_s[1:] or compile_s):.1f} s"
        )
    if jax_cells:
        print("\nJAX compile time (not in the rates), per cell: jit step; scan(s)")
        for c, cell in jax_cells.items():
            print(f"  {c}: {cell.compile_jit:.2f} s; {cell.compile_scan:.2f} s")
        for m in (m for m in methods if m in JAX_METHODS):
            ratios = [t.cpu for key, ts in results.items() if key[2] == m for t in ts]
            print(
                f"{m}: process CPU time / wall time of the timed steps: median "
                f"{statistics.median(ratios):.2f}, max {max(ratios):.2f} (1: one core busy)"
            )


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run_compiled(
    layers: list[int], grid: int, models: int, steps: int, points: int
) -> tuple[Timing, float]:
    """aaf's ``train`` with ``compile: true`` (float32); returns the compile time apart."""
    x, y = data(points, torch.float32)
    model = ensemble_model(layers, grid, models, torch.float32)
    cfg = TrainConfig(steps=steps, lr=LR, log_every=steps, compile=True, cuda_graph=False)
    result = train(model, x, y, x, y, cfg)
    if "compile_error" in result.extra:
        raise RuntimeError(f"compile_error: {result.extra['compile_error']}")
    final = result.records[-1].train_loss[0].item()
    setup = float(result.extra.get("compile_time_s", 0.0))
    return Timing(models * steps / result.wall_time, final), setup


def print_table(
    results: dict[tuple[int, Cell, str], list[Timing]],
    threads: list[int],
    cells: list[Cell],
    methods: list[str],
    tolerance: float,
) -> None:
    ratios = [
        (m, ref)
        for ref, of in (
            ("loop", ("ensemble", "adam", "compiled")),
            ("jax-scan", ("ensemble", "compiled")),
        )
        for m in of
        if m in methods and ref in methods
    ]
    print(
        "\nmodel-steps per second (median of the rounds [min-max]); ratios of the medians; "
        "loss0: model 0's training loss after the timed steps (the loop's, and the largest "
        "relative difference of the other methods' from it)"
    )
    print(
        "| threads | net | G | N | M | "
        + " | ".join(methods)
        + "".join(f" | {m} / {ref}" for m, ref in ratios)
        + " | loss0 loop | loss0 max rel. diff |"
    )
    print("|---:|---|---:|---:|---:|" + "---:|" * (len(methods) + len(ratios) + 2))
    failures = []
    for n in threads:
        for c in cells:
            times = {m: results[n, c, m] for m in methods}
            rate = {m: statistics.median(t.rate for t in times[m]) for m in methods}
            row = [
                f"{rate[m]:,.0f} [{min(t.rate for t in times[m]):,.0f}-"
                f"{max(t.rate for t in times[m]):,.0f}]".replace(",", " ")
                for m in methods
            ]
            # The acceptance ratios (against the loop) in bold.
            row += [
                f"**{rate[m] / rate[ref]:.2f}x**"
                if ref == "loop"
                else f"{rate[m] / rate[ref]:.2f}x"
                for m, ref in ratios
            ]
            # Model 0's loss after the timed steps: every method against the loop's.
            loop_loss = times["loop"][-1].loss0 if "loop" in times else math.nan
            worst = max(
                (abs(times[m][-1].loss0 - loop_loss) / abs(loop_loss) for m in methods),
                default=math.nan,
            )
            row += [f"{loop_loss:.5g}", f"{worst:.1e}"]
            if "loop" in times and not worst <= tolerance:
                failures.append(f"{n} thread(s) {c}: relative difference {worst:.2e}")
            print(
                f"| {n} | {c.net} {NETS[c.net]} | {c.grid} | {c.points} | {c.models} | "
                + " | ".join(row)
                + " |"
            )
    if failures:
        print("\nmodel 0's final loss differs between the methods:")
        print("  " + "\n  ".join(failures))
        raise SystemExit(1)
    if "loop" in methods:
        print(
            f"\nmodel 0's final float32 training loss: every method == loop to a relative "
            f"{tolerance:g} in every cell"
        )


if __name__ == "__main__":
    main()
