"""Rules the docs state for the compiled training step and the thread guard ("Against a JAX
ensemble", "Threads on a busy machine, and estimates"), each checked on a constructed case.

The compiled tests reuse the structures of tests/test_engine_fast.py (their compiled steps are
reused when both files run in one session) and compare compiled with eager results to rounding
(rtol 1e-9 in float64): compiled kernels round differently on other CPUs. The thread-guard tests
drive the guard and the core count from scripted /proc and /sys readings.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

import aaf_cli.budget as budget
from aaf_cli.budget import ThreadChoice, ThreadGuard, choose_threads
from aaf_cli.config import FixedVariant, GlobalVariant, TrainConfig
from aaf_cli.models import Ensemble, Groups, ModelSpec
from aaf_cli.train import StackedAdam, mse, train, weight_decays

from .test_engine_fast import frozen_row_groups

F64 = torch.float64
FIXED = FixedVariant(kind="fixed")
ADAPTIVE = GlobalVariant(kind="global", name="adaptive", n=10.0)


def mixed(layers: list[int], act: str, seeds: int, first_seed: int = 0) -> Groups:
    """Fixed and global-adaptive models per seed (tests/test_engine_fast.py's structure)."""
    chosen = range(first_seed, first_seed + seeds)
    fixed = [ModelSpec("fixed", s, "fixed", FIXED) for s in chosen]
    adaptive = [ModelSpec("adaptive", s, "global", ADAPTIVE) for s in chosen]
    return Groups(
        [
            Ensemble(layers, "fixed", act, fixed, dtype=F64),
            Ensemble(layers, "global", act, adaptive, dtype=F64),
        ]
    )


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-3, 3, 64, dtype=F64).unsqueeze(-1)
    return x, torch.sin(3 * x)


# ---- the compiled step


class _SpareObjective:
    """The MSE as an objective that also trains a tensor its loss never reads (with weight
    decay: a compiled step, which hands every parameter a gradient, would move it)."""

    def __init__(self, model: Groups, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.holder = nn.Module()
        self.holder.spare = nn.Parameter(torch.ones(model.size, 3, dtype=F64))

    threshold_on = "test"
    capturable = False

    def loss(self, model: Groups) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        metric = mse(model(self.x), self.y)
        return metric.detach(), metric, {}

    def evaluate(self, model: Groups) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return mse(model(self.x), self.y), {}

    def validate(self, model: Groups) -> torch.Tensor:
        return torch.full((model.size,), math.nan, dtype=F64)

    def modules(self) -> list[nn.Module]:
        return [self.holder]

    def optimizer(self, model: Groups, cfg: TrainConfig, scale: float = 1.0) -> StackedAdam:
        params, rates, offsets = zip(*model.rows(cfg.lr, scale))
        rows = torch.full((model.size,), cfg.lr, dtype=F64)
        decays = [*weight_decays(model, cfg), torch.full((model.size,), 0.1, dtype=F64)]
        return StackedAdam(
            [*params, self.holder.spare], [*rates, rows], [*offsets, 0], cfg.betas, cfg.eps, decays
        )

    def prepare_compile(self, model: Groups, on: bool = True) -> str | None:
        return None


def test_a_loss_that_leaves_a_parameter_without_a_gradient_is_not_compiled() -> None:
    """``compile: true`` with a trained tensor the loss never reads: the run trains eagerly and
    says why (``compile_skipped``); eager mode freezes that tensor bit for bit, under weight
    decay too, and the run is the eager run. (Nothing is compiled here.)"""
    x, y = data()
    cfg = TrainConfig(steps=12, log_every=4, lr=1e-2, compile=True)

    def run(compiled: bool) -> tuple[Any, _SpareObjective]:
        model = mixed([1, 5, 1], "tanh", 1)
        objective = _SpareObjective(model, x, y)
        cfg_run = cfg.model_copy(update={"compile": compiled})
        result = train(model, x, y, x, y, cfg_run, objective=objective)
        return result, objective

    result, objective = run(True)
    assert result.extra["compile_skipped"] == "a trained parameter gets no gradient from the loss"
    assert "compile_time_s" not in result.extra and "compile_error" not in result.extra
    assert torch.equal(objective.holder.spare.detach(), torch.ones(2, 3, dtype=F64))
    eager, _ = run(False)
    assert [r.step for r in result.records] == [0, 4, 8, 12]
    for a, b in zip(eager.records, result.records, strict=True):
        assert torch.equal(a.train_loss, b.train_loss)
    assert not torch.equal(result.records[0].train_loss, result.records[-1].train_loss)


def test_runs_of_other_lengths_reuse_the_compiled_step() -> None:
    """The step's tables (factors, bias corrections) are padded to a power of two, with room
    for the warm-up steps: a 40-step run after a 60-step one (both 64 long) compiles nothing
    new, and equals its eager run to rounding, threshold steps included."""
    from torch._dynamo.utils import counters

    layers, act = [1, 8, 8, 1], "tanh"
    x, y = data()
    cfg = TrainConfig(steps=60, log_every=1, lr=1e-2, threshold=0.2, compile=True)
    first = train(mixed(layers, act, 2), x, y, x, y, cfg)
    assert "compile_error" not in first.extra
    graphs = counters["stats"]["unique_graphs"]
    short = cfg.model_copy(update={"steps": 40, "threshold": 0.3})
    compiled = train(mixed(layers, act, 2, first_seed=3), x, y, x, y, short)
    assert "compile_error" not in compiled.extra
    assert counters["stats"]["unique_graphs"] == graphs  # reused, not compiled again
    eager = train(
        mixed(layers, act, 2, first_seed=3), x, y, x, y, short.model_copy(update={"compile": False})
    )
    assert len(compiled.records) == len(eager.records) == 41
    for a, b in zip(eager.records, compiled.records, strict=True):
        torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-9, atol=0)
        torch.testing.assert_close(a.test_loss, b.test_loss, rtol=1e-9, atol=0)
    assert torch.equal(compiled.steps_to_threshold, eager.steps_to_threshold)


def test_the_compiled_step_counts_the_threshold_on_the_data_loss() -> None:
    """Steps to threshold count the training data loss, not the loss minimised: with slope
    recovery (a penalty of ~0.8 added to an MSE of ~0.5) the compiled step reaches 0.5 at the
    steps eager mode does. (tests/test_engine_fast.py's frozen-row structure and schedule: the
    same compiled step.)"""

    def model() -> Groups:
        return frozen_row_groups([1, 8, 8, 1])

    x, y = data()
    cfg = TrainConfig(
        steps=40, log_every=5, lr=5e-3, schedule="cosine", warmup_steps=4, weight_decay=1e-2,
        threshold=0.5,
    )  # fmt: skip
    eager = train(model(), x, y, x, y, cfg)
    compiled = train(model(), x, y, x, y, cfg.model_copy(update={"compile": True}))
    assert "compile_error" not in compiled.extra and "compile_skipped" not in compiled.extra
    # Every model but the frozen one gets under 0.5; the slope-recovery ones (rows 2 and 3)
    # only on their data loss: with the penalty, their loss stays above 1.2.
    reached = eager.steps_to_threshold.tolist()
    assert reached[1] == -1 and all(step > 0 for k, step in enumerate(reached) if k != 1)
    assert all(r.recovery[2:].min() > 0.7 for r in eager.records)
    assert torch.equal(compiled.steps_to_threshold, eager.steps_to_threshold)
    for a, b in zip(eager.records, compiled.records, strict=True):
        torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-9, atol=0)


# ---- the thread guard, from scripted /proc readings

HZ = 1000
TICK_S = 0.125  # seconds between polls: exact in binary, so windows line up exactly


class _Proc:
    """A machine of ``cores`` CPUs (all ours, no quota) whose /proc the guard reads: each
    ``advance`` moves the clock by ``TICK_S``, our two threads busy all of it, other processes
    by ``others`` cores."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cores: int) -> None:
        self.now = 0.0
        self.busy = 0
        self.own = 0
        self.reads = 0
        monkeypatch.setattr(budget, "_busy_jiffies", self._busy)
        monkeypatch.setattr(budget, "_own_jiffies", lambda: self.own)
        monkeypatch.setattr(budget.os, "sysconf", lambda name: HZ)
        monkeypatch.setattr(budget.os, "sched_getaffinity", lambda pid: set(range(cores)))
        monkeypatch.setattr(budget, "usable_cores", lambda: cores)

    def _busy(self, allowed: set[str]) -> int:
        self.reads += 1
        return self.busy

    def clock(self) -> float:
        return self.now

    def advance(self, others: float) -> None:
        self.now += TICK_S
        ours = round(2 * TICK_S * HZ)
        self.own += ours
        self.busy += ours + round(others * TICK_S * HZ)


def test_the_guard_samples_twice_a_second_and_needs_two_samples_in_a_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Polled every 1/8 s, the guard reads /proc every 0.5 s: a burst of 0.8 cores for 0.25 s
    averages 0.4 cores over its sample (under half a core: no strike), and sustained contention
    drops the thread after two samples, 1 s after it began."""
    proc = _Proc(monkeypatch, cores=2)
    set_to: list[int] = []
    guard = ThreadGuard(ThreadChoice("auto", 2, "test", 2, 2.0), set_to.append, 0.5, proc.clock)
    assert guard.enabled and proc.reads == 1
    for step in range(1, 33):  # 4 s; the burst ends at steps 6 and 7 (0.625-0.875 s)
        proc.advance(0.8 if step in (6, 7) else 0.0)
        guard.poll(step)
    assert set_to == [] and guard.dropped is None
    assert proc.reads == 1 + 8  # one sample per 0.5 s, not one per poll
    for step in range(33, 41):  # another process takes a whole core from 4 s on
        proc.advance(1.0)
        guard.poll(step)
        assert (set_to == [1]) == (step == 40), step
    assert guard.dropped == "1 thread from step 40: other processes took 1.0 cores"


def _files(monkeypatch: pytest.MonkeyPatch, contents: dict[str, Callable[[], str]]) -> None:
    """``open`` inside aaf_cli.budget serves these paths' texts; any other path is missing."""

    def fake_open(path: str, *args: Any, **kwargs: Any) -> io.StringIO:
        if path not in contents:
            raise FileNotFoundError(path)
        return io.StringIO(contents[path]())

    monkeypatch.setattr(budget, "open", fake_open, raising=False)


def _stat(rows: dict[str, list[int]]) -> str:
    """A /proc/stat text: the aggregate line, one line per CPU, and the other lines."""
    total = [sum(col) for col in zip(*rows.values())]
    lines = ["cpu  " + " ".join(map(str, total))]
    lines += [f"cpu{cpu} " + " ".join(map(str, ticks)) for cpu, ticks in rows.items()]
    lines += ["intr 123 4 5", "ctxt 999", "btime 1700000000", "processes 42", "procs_running 2"]
    return "\n".join(lines) + "\n"


def test_free_cores_is_the_idle_time_of_the_allowed_cpus_over_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two of four CPUs are ours. Over the window, cpu0 was idle throughout and cpu1 busy for
    8 of 10 ticks (user 6, system 2; idle 1 and iowait 1 count as idle; guest time is part of
    user time, not counted twice): 1.0 + 0.2 = 1.2 free cores, whatever the CPUs did before
    the window and whatever the two CPUs that are not ours did. 1.2 free cores leave one
    thread: a core counts when 75% idle."""
    #        user nice system idle  iowait irq softirq steal guest guest_nice
    before = {
        0: [1000, 0, 500, 8000, 100, 0, 0, 0, 0, 0],
        1: [500, 0, 100, 9000, 50, 0, 0, 0, 0, 0],
        2: [9000, 0, 900, 100, 0, 0, 0, 0, 0, 0],
        3: [9000, 0, 900, 100, 0, 0, 0, 0, 0, 0],
    }
    after = {
        0: [1000, 0, 500, 8010, 100, 0, 0, 0, 0, 0],
        1: [506, 0, 102, 9001, 51, 0, 0, 0, 5, 0],
        2: [9000, 0, 900, 110, 0, 0, 0, 0, 0, 0],
        3: [9000, 0, 900, 110, 0, 0, 0, 0, 0, 0],
    }
    snapshots: Iterator[str] = iter([_stat(before), _stat(after)])
    _files(monkeypatch, {"/proc/stat": lambda: next(snapshots)})
    monkeypatch.setattr(budget.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(budget.time, "sleep", lambda seconds: None)
    free = budget.free_cores()
    assert free == pytest.approx(1.2, rel=1e-12)
    assert choose_threads("auto", 1e9, 2, free).threads == 1


def test_a_cpu_quota_caps_the_cores_and_keeps_the_guard_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four CPUs in the affinity mask; a cgroup quota of 1.5 CPUs makes 2 usable cores (a part
    of a core counts as one), 0.5 CPUs one; "max" or no cgroup file leaves all four. Under the
    quota /proc/stat counts the whole host's work, so the guard stays idle."""
    quota = {"text": "150000 100000\n"}
    _files(monkeypatch, {"/sys/fs/cgroup/cpu.max": lambda: quota["text"]})
    monkeypatch.setattr(budget.os, "sched_getaffinity", lambda pid: set(range(4)))
    monkeypatch.setattr(budget, "_busy_jiffies", lambda allowed: 0)
    monkeypatch.setattr(budget, "_own_jiffies", lambda: 0)
    auto2 = ThreadChoice("auto", 2, "test", 2, 2.0)
    assert budget.usable_cores() == 2
    assert not ThreadGuard(auto2, lambda n: None).enabled
    quota["text"] = "50000 100000\n"
    assert budget.usable_cores() == 1
    quota["text"] = "max 100000\n"
    assert budget.usable_cores() == 4
    assert ThreadGuard(auto2, lambda n: None).enabled
    _files(monkeypatch, {})
    assert budget.usable_cores() == 4


def test_the_runs_own_cpu_time_is_user_plus_system_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc/self/stat: utime and stime (fields 14 and 15) counted after the command name, which
    may hold spaces and parentheses; the children's times (16, 17) are not the run's."""
    line = "4242 (aaf (w) 1) R 1 4242 4242 0 -1 4194560 500 0 0 0 1234 56 7 8 20 0 3 0 100 9 9\n"
    _files(monkeypatch, {"/proc/self/stat": lambda: line})
    assert budget._own_jiffies() == 1234 + 56


def test_compiling_many_structures_in_one_process_never_hits_the_recompile_limit() -> None:
    """Dynamo counts recompiles per code object (8 by default): ``compile_once`` gives each
    model structure its own copy of the step's code, so a tenth structure still compiles (one
    shared code object failed there with FailOnRecompileLimitHit), and a run of a structure
    seen before reuses its entry (no new graph). Dynamo's own backend: the limit is Dynamo's,
    whatever compiles the graphs."""
    from torch._dynamo.utils import counters

    from aaf_cli.train import compile_once

    def step_of(weight: torch.Tensor) -> Any:
        def step(x: torch.Tensor) -> torch.Tensor:  # one code object for every weight
            return (x * weight).sin().sum()

        return step

    for k in range(10):  # ten shapes: ten structures
        weight = torch.linspace(0.0, 1.0, 3 + k, dtype=F64)
        compiled = compile_once(step_of(weight), ("limit-test", 3 + k), backend="eager")
        x = torch.ones(3 + k, dtype=F64)
        torch.testing.assert_close(compiled(x), (x * weight).sin().sum())
    graphs = counters["stats"]["unique_graphs"]
    again = compile_once(step_of(torch.zeros(5, dtype=F64)), ("limit-test", 5), backend="eager")
    assert float(again(torch.ones(5, dtype=F64))) == 0.0
    assert counters["stats"]["unique_graphs"] == graphs
