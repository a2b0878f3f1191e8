"""The size estimate and the thread choice: their structure and rules, not timings."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aaf_cli.budget import (
    FLOPS_PER_THREAD,
    SECOND_THREAD_FLOPS,
    ThreadChoice,
    ThreadGuard,
    choose_threads,
    crowded,
    estimate,
    free_cores,
    others_cores,
    train_seconds,
    usable_cores,
    workload,
)
from aaf_cli.config import ExperimentConfig, load_config
from aaf_cli.errors import ConfigError

from .conftest import CONFIGS, SMOKE

BIG = 10 * FLOPS_PER_THREAD
SMALL = FLOPS_PER_THREAD / 10


# The workload the estimates were calibrated and measured on: the default experiment as it was
# ([1, 20, 1], lr 1e-3), untuned.
CALIBRATED = ["model.layers=[1,20,1]", "train.lr=1e-3", "tune=off"]


def _cfg(*overrides: str) -> ExperimentConfig:
    return load_config(None, [*CALIBRATED, *overrides])


@pytest.mark.parametrize(("seeds", "measured_mib"), [(8, 2.7), (512, 174.2)])
def test_cuda_memory_estimate_is_within_2x_of_the_peak_measured_on_a_gpu(
    seeds: int, measured_mib: float
) -> None:
    """On CUDA: torch.cuda.max_memory_allocated of the default experiment with 16
    and 1024 models, measured on an H200 (benchmarks/gpu_check.sh stage 3; the docs). The CUDA
    estimate counts tensors alone; the CPU one adds the allocator's share of the peak RSS."""
    cfg = _cfg(f"seeds={seeds}")
    cuda = estimate(cfg, "cuda").memory_bytes / 2**20
    assert 0.5 <= measured_mib / cuda <= 2.0, (cuda, measured_mib)
    assert estimate(cfg, "cpu").memory_bytes > cuda
    assert estimate(cfg).memory_bytes == estimate(cfg, "cpu").memory_bytes  # device: auto


def test_estimate_grows_with_steps_models_and_width() -> None:
    base = estimate(_cfg("threads=1"))
    for more in ("train.steps=10000", "seeds=20", "model.layers=[1,40,1]", "target.n_train=600"):
        bigger = estimate(_cfg("threads=1", more))
        assert bigger.seconds > base.seconds, more
        assert bigger.memory_bytes >= base.memory_bytes, more
    assert estimate(_cfg("threads=1", "seeds=20")).models == 2 * base.models


def test_logging_costs_time() -> None:
    rare = train_seconds(_cfg("train.log_every=1000"))
    often = train_seconds(_cfg("train.log_every=1"))
    assert often > 1.1 * rare


def test_a_second_thread_shortens_only_a_large_workload() -> None:
    deep = _cfg("model.layers=[1,50,50,50,50,1]")
    assert train_seconds(deep, 2) < train_seconds(deep, 1)
    assert estimate(_cfg("threads=2")).threads == 2


def test_ops_follow_the_structure() -> None:
    # Counted with a TorchDispatchMode on the engine: 232 ops per step for the default
    # [1,20,1] fixed + global pair (see the comments in budget.py).
    assert workload(_cfg()).ops == 232
    one_group = workload(_cfg("variants=[{kind: global, n: 1}, {kind: global, n: 10, name: b}]"))
    two_groups = workload(_cfg("variants=[{kind: global, n: 1}, {kind: layer, n: 10}]"))
    assert one_group.ops < two_groups.ops
    assert workload(_cfg("model.layers=[1,20,20,1]")).ops > workload(_cfg()).ops


def test_describe_says_about_and_the_threads() -> None:
    text = estimate(load_config(SMOKE, [])).describe()
    assert "about" in text and "thread" in text
    assert "GFLOP" not in text


@pytest.mark.parametrize(
    ("requested", "flops", "cores", "free", "expected"),
    [
        (1, BIG, 2, 2.0, 1),  # a number in the config is used as given
        (3, SMALL, 2, 0.0, 3),
        ("auto", SMALL, 2, 2.0, 1),  # a small workload: one thread
        ("auto", SMALL, 64, 64.0, 1),
        ("auto", BIG, 2, 2.0, 2),  # a large one: every free core
        ("auto", BIG, 2, 1.9, 2),  # a core 90% idle counts as free
        ("auto", BIG, 2, 1.0, 1),  # another process holds one of two cores
        ("auto", BIG, 2, 1.5, 1),  # a half-busy core does not count
        ("auto", BIG, 2, 0.0, 1),  # never fewer than one
        ("auto", BIG, 2, None, 2),  # idle time unknown: trust the cores
        ("auto", BIG, 64, 64.0, 11),  # one thread per FLOPS_PER_THREAD, plus one
        ("auto", BIG, 64, 4.0, 4),  # never more than the free cores
        ("auto", FLOPS_PER_THREAD, 4, 4.0, 2),
        ("auto", SECOND_THREAD_FLOPS, 4, 4.0, 2),  # the break-even itself gets a second thread
        ("auto", 0.9 * SECOND_THREAD_FLOPS, 4, 4.0, 1),
        ("auto", 2 * FLOPS_PER_THREAD, 64, 64.0, 3),
    ],
)
def test_thread_choice_rules(
    requested: int | str, flops: float, cores: int, free: float | None, expected: int
) -> None:
    choice = choose_threads(requested, flops, cores, free)
    assert choice.threads == expected
    assert choice.reason
    record = choice.record()
    assert record["threads"] == str(expected) and record["threads_requested"] == str(requested)


def test_machine_probes_are_sane() -> None:
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    free = free_cores(0.02)
    assert free is None or 0.0 <= free <= cores


def test_threads_config_key() -> None:
    assert _cfg().threads == "auto"
    assert _cfg("threads=null").threads == "auto"  # configs written before auto existed
    assert _cfg("threads=3").threads == 3
    for bad in ("threads=0", "threads=two", "threads=1.5"):
        with pytest.raises(ConfigError, match="auto or a whole number"):
            _cfg(bad)


def test_the_run_records_its_thread_choice() -> None:
    from aaf_cli.experiment import run_experiment

    cfg = load_config(SMOKE, ["train.steps=2"])
    env = run_experiment(cfg).environment
    assert env["threads_requested"] == "auto"
    assert env["threads"] == "1"  # the smoke config is far below the break-even
    assert "small workload" in env["threads_reason"]
    assert float(env["free_cores"]) >= 0.0 and int(env["cores"]) >= 1
    forced = run_experiment(load_config(SMOKE, ["train.steps=2", "threads=2"])).environment
    assert forced["threads"] == "2" and forced["threads_reason"] == "set in the config"


def _openmp_env(env: dict[str, str]) -> tuple[str, str]:
    code = (
        "import os, aaf_cli; "
        "print(os.environ.get('OMP_WAIT_POLICY', '-'), os.environ.get('KMP_BLOCKTIME', '-'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    policy, blocktime = out.stdout.split()
    return policy, blocktime


def test_idle_threads_spin_briefly_unless_the_user_says_otherwise() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    # libgomp's own default (a short spin) stands; Intel/LLVM runtimes get a 1 ms block time.
    assert _openmp_env(env) == ("-", "1")
    user = {**env, "OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
    assert _openmp_env(user) == ("PASSIVE", "0")


def test_others_cores_subtracts_our_own_time() -> None:
    # 1 s at 100 ticks/s: 180 busy ticks on our CPUs, 100 of them ours -> others took 0.8 cores.
    assert others_cores(180, 100, 1.0, 100.0) == pytest.approx(0.8)
    assert others_cores(150, 200, 1.0, 100.0) == 0.0  # rounding of the tick counters
    assert others_cores(100, 0, 0.0, 100.0) == 0.0


class _Machine:
    """Scripted /proc samples for ThreadGuard: each poll advances the clock by one interval."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = 0
        self.own = 0

    @classmethod
    def installed(cls, monkeypatch: pytest.MonkeyPatch, cores: int) -> _Machine:
        """A machine of ``cores`` CPUs (all ours, no quota) whose /proc ThreadGuard reads."""
        import aaf_cli.budget as budget

        machine = cls()
        monkeypatch.setattr(budget, "_busy_jiffies", lambda allowed: machine.busy)
        monkeypatch.setattr(budget, "_own_jiffies", lambda: machine.own)
        monkeypatch.setattr(budget.os, "sysconf", lambda name: 100)
        monkeypatch.setattr(budget.os, "sched_getaffinity", lambda pid: set(range(cores)))
        monkeypatch.setattr(budget, "usable_cores", lambda: cores)
        return machine

    def clock(self) -> float:
        return self.now

    def advance(self, others: float) -> None:
        self.now += 0.5
        self.own += 100  # our two threads, busy half a second each
        self.busy += 100 + int(others * 50)


def test_thread_guard_drops_to_one_thread_on_sustained_contention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aaf_cli.budget as budget

    machine = _Machine.installed(monkeypatch, cores=2)
    set_to: list[int] = []
    auto2 = ThreadChoice("auto", 2, "test", 2, 2.0)
    guard = ThreadGuard(auto2, set_to.append, interval=0.5, clock=machine.clock)
    assert guard.enabled and guard.cores == 2
    guard.poll(1)  # no time has passed: no sample
    for step, others in enumerate([0.1, 1.0, 0.0, 1.0], start=2):
        machine.advance(others)
        guard.poll(step)
    assert set_to == [] and guard.dropped is None  # one busy sample at a time is a blip
    machine.advance(0.9)
    guard.poll(7)
    assert set_to == [1] and guard.dropped is not None and "step 7" in guard.dropped
    assert "0.9 cores" in guard.dropped and not guard.enabled
    machine.advance(1.0)
    guard.poll(8)
    assert set_to == [1]  # once
    # A count the user set, or one thread, is never changed.
    for choice in (
        ThreadChoice(2, 2, "set in the config", 2, None),
        ThreadChoice("auto", 1, "", 2, 2),
    ):
        assert not ThreadGuard(choice, set_to.append).enabled
    # A CPU quota below the CPUs we may run on: /proc/stat sees the host, the guard stays idle.
    monkeypatch.setattr(budget.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert not ThreadGuard(auto2, set_to.append).enabled


def test_thread_guard_counts_only_what_the_run_is_short_of(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On 8 cores, a process busy on one of the 6 spare cores is no reason to drop."""
    machine = _Machine.installed(monkeypatch, cores=8)
    set_to: list[int] = []
    guard = ThreadGuard(ThreadChoice("auto", 2, "test", 8, 8.0), set_to.append, 0.5, machine.clock)
    for step in range(10):
        machine.advance(3.0)  # three other processes: 3 of 6 spare cores
        guard.poll(step)
    assert set_to == [] and guard.enabled
    for step in range(10, 12):
        machine.advance(6.6)  # they now take every spare core, and more
        guard.poll(step)
    assert set_to == [1] and "6.6 cores" in str(guard.dropped)


def test_crowded_rule() -> None:
    assert crowded(0.5, 2, 2) and not crowded(0.4, 2, 2)
    assert not crowded(6.0, 8, 2) and crowded(6.5, 8, 2)
    assert crowded(0.5, 1, 2)  # more threads than cores: any other work crowds them


def test_thread_guard_sees_a_real_cpu_bound_process() -> None:
    """A busy loop started beside a two-thread training run makes it drop to one thread."""
    import torch

    from aaf_cli.experiment import build_ensemble, make_dataset
    from aaf_cli.train import train

    cfg = load_config(None, ["seeds=20", "train.steps=100000", "train.log_every=1000"])
    device = torch.device("cpu")
    data = make_dataset(cfg, device, list(range(20)))
    model = build_ensemble(cfg, device)
    previous = torch.get_num_threads()
    # Two CPUs for the run and the busy loop, whatever this machine has: they then compete.
    affinity = os.sched_getaffinity(0)
    if len(affinity) < 2:
        pytest.skip("needs two CPUs")
    two = set(sorted(affinity)[:2])
    os.sched_setaffinity(0, two)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(hog.pid, two)
    try:
        torch.set_num_threads(2)
        guard = ThreadGuard(ThreadChoice("auto", 2, "test", 2, 2.0), torch.set_num_threads, 0.2)
        deadline = time.monotonic() + 20

        def stop() -> bool:
            return guard.dropped is not None or time.monotonic() > deadline

        train(model, data.x_train, data.y_train, data.x_test, data.y_test, cfg.train,
              stop=stop, on_step=guard.poll)  # fmt: skip
        assert guard.dropped is not None, "no drop within 20 s beside a busy loop"
        assert torch.get_num_threads() == 1
    finally:
        hog.kill()
        hog.wait()
        torch.set_num_threads(previous)
        os.sched_setaffinity(0, affinity)


@pytest.mark.parametrize("case", ["regression", "pde"])
def test_thread_count_and_a_drop_leave_the_numbers_alone(case: str) -> None:
    """What lets the guard drop a thread in mid-run: 1 thread, 2 threads, and 2 threads
    dropped to 1 after 30 steps give bit-identical losses (120 models, so that the kernels
    split their work between the threads)."""
    import torch

    from aaf_cli.experiment import build_ensemble, make_dataset
    from aaf_cli.problems.pde.training import PinnObjective
    from aaf_cli.train import train

    if case == "regression":
        cfg = load_config(None, ["seeds=60", "train.steps=60", "train.log_every=5"])
    else:
        cfg = load_config(CONFIGS / "pde_smoke.yaml", ["seeds=30", "train.steps=40"])
    device = torch.device("cpu")
    previous = torch.get_num_threads()

    def losses(threads: int, drop_at: int | None) -> list[torch.Tensor]:
        torch.set_num_threads(threads)
        data = make_dataset(cfg, device)
        model = build_ensemble(cfg, device)
        objective = None
        if cfg.pde is not None:
            objective = PinnObjective(data.problem, model, torch.float32, device)  # type: ignore[attr-defined]

        def on_step(step: int) -> None:
            if step == drop_at:
                torch.set_num_threads(1)

        result = train(model, data.x_train, data.y_train, data.x_test, data.y_test, cfg.train,
                       objective=objective, on_step=on_step)  # fmt: skip
        out = [t for r in result.records for t in (r.train_loss, r.test_loss)]
        return [*out, result.predictions]

    try:
        one, two, dropped = losses(1, None), losses(2, None), losses(2, 30)
    finally:
        torch.set_num_threads(previous)
    for a, b, c in zip(one, two, dropped, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_shipped_configs_estimate() -> None:
    paths = sorted(CONFIGS.glob("*.yaml")) + sorted((CONFIGS / "papers").glob("*.yaml"))
    assert paths
    for path in paths:
        est = estimate(load_config(Path(path), []))
        assert 0.0 < est.seconds < 3600, path
        assert isinstance(choose_threads("auto", 0.0, 2, 2.0), ThreadChoice)
