"""How big a run is before it starts: models, memory and time, and the limits that need --force.

The config schema has hard limits that no run may pass (a typo such as ``steps: 1e9``); these
are softer: a run over them is refused with an estimate of its memory and time, and ``aaf run
--force`` runs it anyway. Torch-free, so ``aaf validate`` stays light.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from aaf_cli import sizing
from aaf_cli.config import ExperimentConfig

SOFT_LIMITS = {
    "train.steps": 200_000,
    "target.n_train": 100_000,
    "model width": 1024,
    "seeds": 100,
    "models (variants x seeds)": 512,
}
MAX_HOURS = 6.0
MAX_MEMORY_FRACTION = 0.5
# Floats kept per hidden unit and point for the backward pass (pre-activation, activation,
# their gradients); Rowdy keeps K-1 more.
FLOATS_PER_UNIT = 4
# Per hidden unit and test point, the no-grad evaluation at log steps holds a pre-activation
# and an activation (CUDA: torch.cuda.max_memory_allocated agrees); on the CPU the peak RSS
# also keeps about as much again of the freed blocks (glibc does not return them at once).
TEST_FLOATS_PER_UNIT = {"cpu": 4, "cuda": 2}
# Memory a training process grows by whatever the size (allocator arenas, kernel workspaces):
# measured 16 MiB for 2 models of [1, 20, 1] on the CPU; CUDA's count is of tensors alone
# (benchmarks/bench_peers.py --memory).
BASE_BYTES = {"cpu": 16 * 2**20, "cuda": 0}

# --- The time model --------------------------------------------------------------------------
# The eager engine's step is many small torch operations (their count depends on the structure
# only: kinds, groups, depth), plus arithmetic that grows with models x points x weights:
#
#   step  = OPS x SECONDS_PER_OP + WORK / (RATE x speedup(threads))
#   log   = LOG_OPS_FRACTION x OPS x SECONDS_PER_OP + forward WORK on the test points / RATE
#   train = steps x step + (steps // log_every + 1) x log
#
# OPS: torch operations dispatched per training step, counted exactly on this engine with a
# TorchDispatchMode (aten calls in 1 vs 2 steps of `train`, /tmp-free recipe in
# benchmarks/bench_estimate.py --count-ops). Per group of variants that share one batched
# ensemble: (fixed part, per hidden layer); plus SHARED_OPS once (loss sum, divergence mask).
# Counted: fixed 116 / 200 ops at 1 / 3 hidden layers, global 144 / 252, layer 144 / 284,
# neuron 142 / 280, rowdy 198 / 446, rational 251 / 605, prelu 142 / 278, swish 143 / 281;
# slope recovery +25 / +47. The model below reproduces every shipped config's count within 4%
# (default 232 counted 232; jcp_* 536 vs 520; rspa_discontinuous 1313 vs 1283; all_kinds
# 1977 vs 1959).
SHARED_OPS = 28
GROUP_OPS: dict[str, tuple[int, int]] = {
    "fixed": (46, 42),
    "global": (62, 54),
    "layer": (46, 70),
    "neuron": (45, 69),
    "rowdy": (46, 124),
    "rational": (46, 177),
    "prelu": (46, 68),
    "swish": (46, 69),
    # Counted relative to fixed at the same depth (1 and 3 hidden layers of 8, eager): the
    # B-spline recursion makes a KAN step 4.2x / 6.2x fixed's operations, a spline-activation
    # step 2.7x / 4.7x; scaled onto fixed's row.
    "kan": (84, 378),
    "spline": (0, 300),
}
SLOPE_RECOVERY_OPS = (14, 11)
# A logged step: the test-set forward pass, S(a) and the trajectories, then copies to the host;
# counted 13-20% of a training step's operations.
LOG_OPS_FRACTION = 0.2
# WORK: 6 FLOPs per weight and point for the matrix products (forward 2, backward 4), and the
# elementwise activation work counted as ELEMENTWISE_FLOPS per hidden unit and point (tanh/ELU
# and their gradients run far below the matmul rate, so they weigh as ~28 weights each).
ELEMENTWISE_FLOPS = 28
# Fitted on this 2-core machine (AMD EPYC, torch 2.13, one thread) from the CPU time per step
# (the wall clock was useless: other work kept the load at 9-13 while this was measured) of
#   OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_estimate.py --fit
# deep [1,50x4,1] on 300 points: 3.28 / 4.52 / 13.38 ms per step at 2 / 4 / 20 models; least
# squares: 0.558 ms per added model (18.4 MFLOP) -> RATE 33 GFLOP/s, and 2.22 ms at no models
# for 536 counted ops -> 4.1 us per op (a profile against a JAX ensemble: 5-6 us).
# [1,20,1] x 20 models: 1.64 ms per step, 0.96 ms of it ops -> ELEMENTWISE_FLOPS ~ 28.
SECONDS_PER_OP = 4.1e-6
RATE = 33e9
# The share of the work a second thread takes over (thin batched matmuls and elementwise ops
# on [M, N, width] tensors); the per-op overhead does not shrink with threads.
THREAD_SPEEDUP = 1.7

# --- The thread choice -----------------------------------------------------------------------
# From this much work per step a second thread pays (idle OpenMP threads spinning briefly; the
# step is otherwise per-op overhead, and torch splits no elementwise op under 32k elements):
# `python benchmarks/bench_threads.py --only break-even` (2000 steps, 2 rounds, quiet) trained
# [1,20,1] x 10 models (11 MFLOP) in 0.99x the time of one thread, x 20 models (22 MFLOP)
# 0.74x, x 40 0.78x, x 60 0.75x, x 120 0.65x.
SECOND_THREAD_FLOPS = 20e6
# Beyond that, one more thread per this much work per step (set before threads spun, when a
# second thread paid only from 50 MFLOP; not re-measured above two cores).
FLOPS_PER_THREAD = 50e6
# A core counts as free when at least this much of it was idle.
FREE_CORE_IDLE = 0.75


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads a run uses, and why (recorded in summary.json)."""

    requested: int | str
    threads: int
    reason: str
    cores: int
    free_cores: float | None

    def record(self) -> dict[str, str]:
        free = "unknown" if self.free_cores is None else f"{self.free_cores:.2f}"
        return {
            "threads": str(self.threads),
            "threads_requested": str(self.requested),
            "threads_reason": self.reason,
            "cores": str(self.cores),
            "free_cores": free,
        }


def choose_threads(
    requested: int | str, step_flops: float, cores: int, free_cores: float | None
) -> ThreadChoice:
    """The thread count for a run: pure, so the rules can be tested.

    A number in the config is used as given. ``auto`` wants a second thread from
    ``SECOND_THREAD_FLOPS`` of work per step and one thread per ``FLOPS_PER_THREAD`` above that
    (at least one, at most ``cores``), and then no more than the cores that are free: a core
    counts when at least ``FREE_CORE_IDLE`` of it is idle. ``free_cores`` None (not
    measurable) trusts ``cores``.
    """
    cores = max(1, cores)
    if requested != "auto":
        n = int(requested)
        return ThreadChoice(requested, n, "set in the config", cores, free_cores)
    need = max(
        1 + int(step_flops // FLOPS_PER_THREAD), 2 if step_flops >= SECOND_THREAD_FLOPS else 1
    )
    if need == 1:
        reason = (
            f"a small workload ({step_flops / 1e6:.3g} MFLOP per step) gains nothing from "
            "a second thread"
        )
        return ThreadChoice(requested, 1, reason, cores, free_cores)
    want = min(cores, need)
    usable = cores if free_cores is None else int(free_cores + 1 - FREE_CORE_IDLE)
    usable = max(1, min(cores, usable))
    if usable < want:
        reason = f"the workload could use {want}, but only {usable} of {cores} cores are free"
        return ThreadChoice(requested, usable, reason, cores, free_cores)
    reason = f"{step_flops / 1e6:.3g} MFLOP per step; {usable} of {cores} cores free"
    return ThreadChoice(requested, want, reason, cores, free_cores)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _cpu_times() -> dict[str, tuple[int, int]]:
    """(idle, total) jiffies per CPU from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(v) for v in fields[:8]]
                out[name[3:]] = (ticks[3] + ticks[4], sum(ticks))
    return out


def free_cores(sample_s: float = 0.1) -> float | None:
    """Idle cores among those this process may use, sampled over ``sample_s`` seconds.

    /proc/stat over a short window sees a CPU-bound process that started a moment ago, and not
    the load of a run that just ended (the 1-minute load average lags both ways by a minute);
    where /proc/stat is missing, the load average stands in. None when neither is available.
    """
    cores = usable_cores()
    try:
        allowed = {str(c) for c in os.sched_getaffinity(0)}
        before = _cpu_times()
        time.sleep(sample_s)
        after = _cpu_times()
        idle = 0.0
        for cpu in allowed & before.keys() & after.keys():
            total = after[cpu][1] - before[cpu][1]
            if total > 0:
                idle += (after[cpu][0] - before[cpu][0]) / total
        if before.keys() & allowed:
            return min(float(cores), idle)
    except (OSError, AttributeError, ValueError):
        pass
    try:
        return max(0.0, cores - os.getloadavg()[0])
    except OSError:
        return None


#: Other processes' CPU use beyond the cores this run leaves free, in cores, that makes a
#: multi-threaded ``auto`` run drop to one thread (sustained over ``GUARD_STRIKES`` samples
#: ``GUARD_INTERVAL_S`` apart). Idle OpenMP
#: threads spin for a moment before they sleep (libgomp's default), which is what makes a second
#: thread pay on a quiet machine (M = 120 [1, 20, 1] models: 3.3 ms per step against 6.0 ms with
#: sleeping threads, benchmarks/bench_threads.py); beside a CPU-bound process the same spinning
#: takes 2x longer than one thread, so the run stops using the second thread once it sees one.
BUSY_CORES = 0.5
GUARD_INTERVAL_S = 0.5
GUARD_STRIKES = 2


def _own_jiffies() -> int:
    """CPU time of this process (all its threads, user + system) in clock ticks."""
    with open("/proc/self/stat") as f:
        # The command name (field 2) may hold spaces: count the fields after its ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _busy_jiffies(allowed: set[str]) -> int:
    """Non-idle clock ticks of the CPUs this process may run on."""
    return sum(total - idle for cpu, (idle, total) in _cpu_times().items() if cpu in allowed)


def crowded(others: float, cores: int, threads: int) -> bool:
    """Whether other processes' CPU use (``others`` cores) leaves this run's ``threads`` short
    of cores: more than ``BUSY_CORES`` beyond the ``cores - threads`` the run leaves free (on 2
    cores with 2 threads, half a core; on 8 cores, a browser on a spare core does not count)."""
    return others >= max(0, cores - threads) + BUSY_CORES


def others_cores(busy: int, own: int, seconds: float, hz: float) -> float:
    """Cores used by other processes over ``seconds``: the busy ticks of our CPUs less our own
    (our spinning threads count as ours), in cores."""
    if seconds <= 0:
        return 0.0
    return max(0.0, (busy - own) / hz / seconds)


class ThreadGuard:
    """Watches, while a run trains on several ``auto`` threads, for other processes taking
    the cores it needs, and then drops torch to one thread for the rest of the run
    (``dropped`` says when and why). Thread counts do not change the eager engine's numbers on
    the CPU (tested, also for a drop in mid-run), so a drop changes the speed only; a compiled
    step is compiled again for the new count, whose kernels may round differently in the last
    bit. ``poll`` is
    cheap: it reads the clock, and /proc twice a second.

    Idle where it cannot tell: without /proc, and where a CPU quota (a container's cgroup)
    allows fewer cores than the CPUs the process may run on (/proc/stat then counts the whole
    host's work).

    Args:
        choice: the run's thread choice; the guard is idle unless it is ``auto`` with > 1.
        set_threads: sets the thread count (``torch.set_num_threads``).
        interval: seconds between samples.
        clock: the time source (tests pass their own).
    """

    def __init__(
        self,
        choice: ThreadChoice,
        set_threads: Callable[[int], None],
        interval: float = GUARD_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.set_threads = set_threads
        self.interval = interval
        self.clock = clock
        self.dropped: str | None = None
        self.strikes = 0
        self.threads = choice.threads
        self.enabled = choice.requested == "auto" and choice.threads > 1
        self.hz = 100.0
        self.allowed: set[str] = set()
        self.cores = 1
        if self.enabled:
            try:
                self.hz = float(os.sysconf("SC_CLK_TCK"))
                self.allowed = {str(c) for c in os.sched_getaffinity(0)}
                self.cores = usable_cores()  # the machine's, not a Ray task's share of it
                self.last = (self.clock(), _busy_jiffies(self.allowed), _own_jiffies())
            except (OSError, AttributeError, ValueError, IndexError):
                self.enabled = False  # no /proc: the start-of-run choice stands
            if self.cores < len(self.allowed):
                self.enabled = False  # a CPU quota: /proc/stat sees the whole host

    def poll(self, step: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last[0] < self.interval:
            return
        try:
            sample = (now, _busy_jiffies(self.allowed), _own_jiffies())
        except (OSError, ValueError, IndexError):
            self.enabled = False
            return
        then, busy, own = self.last
        self.last = sample
        others = others_cores(sample[1] - busy, sample[2] - own, now - then, self.hz)
        self.strikes = self.strikes + 1 if crowded(others, self.cores, self.threads) else 0
        if self.strikes >= GUARD_STRIKES:
            self.set_threads(1)
            self.enabled = False
            self.dropped = f"1 thread from step {step}: other processes took {others:.1f} cores"


def plan_threads(cfg: ExperimentConfig) -> ThreadChoice:
    """The thread choice for ``cfg`` on this machine now (reads /proc when threads is auto)."""
    cores = usable_cores()
    if cfg.threads != "auto":
        return choose_threads(cfg.threads, 0.0, cores, None)
    return choose_threads("auto", workload(cfg).step_flops, cores, free_cores())


@dataclass(frozen=True)
class Workload:
    """What one training step and one logged step cost, by structure."""

    models: int
    points: int
    ops: int
    step_flops: float
    log_flops: float


#: A PINN step against a regression step on as many points (forward and backward), by the
#: highest derivative order: each order adds a backward pass that keeps its graph, and the
#: final backward goes through all of them. Calibrated on this 2-core CPU: Burgers (order 2,
#: 6x20 tanh, 2100 points, 15 models, float32) took 21.5 s for 200 steps on 1 thread under
#: load, where the regression estimate of as many points says ~7.5 s.
DERIVATIVE_STEP_FACTOR = {0: 1.0, 1: 2.0, 2: 3.0, 3: 5.0}

#: The activations a PINN step keeps (the derivatives' graphs), against a regression step.
DERIVATIVE_GRAPH_FACTOR = {0: 1.0, 1: 4.0, 2: 9.0, 3: 16.0}


def _order(cfg: ExperimentConfig) -> int:
    order = cfg.problem_section().size(cfg.model.layers[0]).order
    return min(order, max(DERIVATIVE_STEP_FACTOR))


def derivative_factor(cfg: ExperimentConfig) -> float:
    """How much more a step of ``cfg`` costs than a regression step on as many points (1 for a
    problem whose loss takes no derivative of the networks)."""
    return DERIVATIVE_STEP_FACTOR[_order(cfg)]


def workload(cfg: ExperimentConfig) -> Workload:
    """Operations and FLOPs per step of ``cfg``'s ensemble (torch-free)."""
    size = cfg.problem_section().size(cfg.model.layers[0])
    points = size.points
    seeds = len(cfg.seed_list)
    factor = derivative_factor(cfg)
    n_test = size.test_points + size.val_points
    ops = SHARED_OPS
    step_flops = 0.0
    log_flops = 0.0
    groups: dict[tuple[object, ...], tuple[str, int, bool]] = {}
    for v in cfg.variants:
        layers = cfg.layers_of(v)
        if v.kind in ("kan", "spline"):
            # Their B-splines' arithmetic (sizing.flops counts 2 per multiply-add; a weight
            # here counts 1).
            per_point = sizing.flops(v, layers) / 2
        else:
            weights = sum(i * o + o for i, o in zip(layers[:-1], layers[1:]))
            hidden = sum(layers[1:-1]) * getattr(v, "K", 1)
            per_point = weights + ELEMENTWISE_FLOPS * hidden
        step_flops += 6.0 * seeds * points * per_point * factor
        log_flops += 2.0 * seeds * n_test * per_point
        # Variants that share one batched ensemble share its operations.
        key = cfg.group_key(v)
        recovery = getattr(v, "slope_recovery", None) is not None
        _, _, seen = groups.get(key, (v.kind, len(layers) - 2, False))
        groups[key] = (v.kind, len(layers) - 2, seen or recovery)
    for kind, hidden_layers, recovery in groups.values():
        fixed, per_layer = GROUP_OPS.get(kind, GROUP_OPS["global"])
        if recovery:
            fixed += SLOPE_RECOVERY_OPS[0]
            per_layer += SLOPE_RECOVERY_OPS[1]
        ops += round((fixed + per_layer * hidden_layers) * factor)
    return Workload(len(cfg.variants) * seeds, points, ops, step_flops, log_flops)


#: Batched evaluations per L-BFGS iteration (strong Wolfe), measured on Burgers' PINN
#: (benchmarks/bench_lbfgs.py): each model's line search takes one most of the time (1.02-1.15
#: on average), and the ensemble runs as many as its slowest model needs (1.24-1.43).
LBFGS_EVALS_PER_ITERATION = 1.3


def train_seconds(cfg: ExperimentConfig, threads: int = 1) -> float:
    """Predicted training time on this machine (quiet) with ``threads`` threads."""
    w = workload(cfg)
    rate = RATE * (THREAD_SPEEDUP if threads > 1 else 1.0)
    step = w.ops * SECONDS_PER_OP + w.step_flops / rate
    log = LOG_OPS_FRACTION * w.ops * SECONDS_PER_OP + w.log_flops / rate
    steps = cfg.train.steps
    evaluations = sum(
        p.steps * (LBFGS_EVALS_PER_ITERATION if p.optimizer == "lbfgs" else 1.0)
        for p in cfg.train.phase_configs()
    )
    return evaluations * step + (steps // cfg.train.log_every + 1) * log


def predicted_seconds(cfg: ExperimentConfig, models: int | None = None) -> float:
    """The eager training time ``estimate`` predicts for ``cfg`` (deterministic: the thread
    count ``auto`` picks on an idle machine), scaled to ``models`` models when a job trains
    another number than the config's (a packed sweep); what ``compile: auto`` decides on."""
    est = estimate(cfg)
    return est.seconds * (models or est.models) / max(est.models, 1)


@dataclass(frozen=True)
class Estimate:
    models: int
    points: int
    memory_bytes: float
    seconds: float
    threads: int = 1
    tuning_models: int = 0  # a tuned run's tuning phase (trained before the ``models``)
    control_models: int = 0  # the first stage of slope_from controls (``aaf_cli.controls``)

    def describe(self) -> str:
        plural = "s" if self.threads > 1 else ""
        before = [f"{self.tuning_models} tuning models"] if self.tuning_models else []
        if self.control_models:
            before.append(f"{self.control_models} for the controls' slopes")
        tuning = f" (after {' and '.join(before)})" if before else ""
        return (
            f"{self.models} models{tuning} on {self.points} points: about "
            f"{_bytes(self.memory_bytes)} of memory and {_duration(self.seconds)} of training "
            f"on {self.threads} thread{plural} of a quiet machine"
        )


def estimate(cfg: ExperimentConfig, device: str | None = None) -> Estimate:
    """Memory (activations and optimizer state) and training time, from the structure alone.

    Deterministic: the time assumes the thread count ``auto`` picks on an idle machine (or the
    configured one), not the load of the moment. The memory is the peak RSS growth on the CPU
    and the peak of allocated tensors on CUDA: ``device`` (``cpu`` or ``cuda``) is where the run
    trains; by default ``cfg.device``, with ``auto`` counted as the CPU. A tuned run
    (``tune:``) trains its tuning phase first: the time of both phases, the larger memory.
    """
    from aaf_cli.controls import first_stage, sources, without_controls

    if sources(cfg):
        first = estimate(first_stage(cfg), device)
        rest = estimate(without_controls(cfg), device)
        return replace(
            rest,
            memory_bytes=max(first.memory_bytes, rest.memory_bytes),
            seconds=first.seconds + rest.seconds,
            control_models=first.models + first.tuning_models,
        )
    if cfg.tune is not None:
        from aaf_cli.tuning import tuning_config

        phase = estimate(tuning_config(cfg), device)
        own = estimate(cfg.model_copy(update={"tune": None}), device)
        return Estimate(
            own.models,
            own.points,
            max(phase.memory_bytes, own.memory_bytes),
            phase.seconds + own.seconds,
            own.threads,
            phase.models,
        )
    where = "cuda" if (device or cfg.device).startswith("cuda") else "cpu"
    w = workload(cfg)
    threads = choose_threads(cfg.threads, w.step_flops, usable_cores(), None).threads
    widths = [cfg.layers_of(v) for v in cfg.variants]
    hidden = max(sum(layers[1:-1]) for layers in widths)
    weights = max(sum(i * o + o for i, o in zip(ls[:-1], ls[1:])) for ls in widths)
    extra = max((getattr(v, "K", 1) for v in cfg.variants), default=1)
    size = 8 if cfg.dtype == "float64" else 4
    test_points = cfg.problem_section().size(cfg.model.layers[0]).test_points
    # A PDE step keeps the graphs of its derivatives; the test grid is evaluated without one.
    kept = w.points * DERIVATIVE_GRAPH_FACTOR[_order(cfg)] * FLOATS_PER_UNIT
    per_unit = max(kept, test_points * TEST_FLOATS_PER_UNIT[where])
    activations = w.models * per_unit * hidden * extra * size
    state = w.models * weights * 4 * size  # weights, gradients, two Adam moments
    seconds = train_seconds(cfg, threads)
    memory = BASE_BYTES[where] + activations + state
    return Estimate(w.models, w.points, float(memory), seconds, threads)


def over_limits(cfg: ExperimentConfig, est: Estimate) -> list[str]:
    """Which soft limits the config passes, in words; empty if none."""
    values = {
        "train.steps": cfg.train.steps,
        "target.n_train": est.points,
        "model width": max(max(cfg.layers_of(v)) for v in cfg.variants),
        "seeds": len(cfg.seed_list),
        "models (variants x seeds)": max(est.models, est.tuning_models),
    }
    out = [
        f"{key} {value} > {SOFT_LIMITS[key]}"
        for key, value in values.items()
        if value > SOFT_LIMITS[key]
    ]
    if est.seconds > MAX_HOURS * 3600:
        out.append(f"estimated time over {MAX_HOURS:g} h")
    memory = physical_memory()
    if memory and est.memory_bytes > MAX_MEMORY_FRACTION * memory:
        out.append(f"estimated memory over half of this machine's {_bytes(memory)}")
    return out


def physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
