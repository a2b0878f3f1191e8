"""Training that resumes from a checkpoint (``aaf_cli.resume``): a pack killed in the middle
and run again on the same store gives, in float64, the very numbers of an uninterrupted run,
and trains only the steps after its last save.

A kill is an exception raised from ``on_log`` (``on_tuning_log`` in a tuning phase): the
attempt ends where it is and leaves the store as a dead worker would."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from aaf_cli import runs
from aaf_cli.config import ExperimentConfig, load_config
from aaf_cli.experiment import ExperimentResult, run_experiment
from aaf_cli.resume import Checkpoints, MemoryStore, dumps, loads
from aaf_cli.sweeps.packing import plan_packs, train_pack
from aaf_cli.train import LogRecord

from .conftest import CONFIGS, SMOKE
from .conftest import metrics_text as metrics

F64 = ["seeds=2", "dtype=float64", "train.log_every=5", "threads=1"]
#: The entries of ``TrainResult.extra`` that a checkpointed run adds.
STAGE_KEYS = {"resumed_from_step", "checkpoint_every_steps", "steps_trained"}


class Killed(Exception):
    """The worker died."""


def points(base: Any, *sets: str, each: Sequence[Sequence[str]]) -> list[ExperimentConfig]:
    """A pack: a point of ``base`` per entry of ``each`` (its per-model settings), untuned
    unless ``sets`` tune."""
    tune = [] if any(s.startswith("tune.") for s in sets) else ["tune=off"]
    return [load_config(base, [*F64, *tune, *sets, *own]) for own in each]


def smoke(*sets: str, each: Sequence[Sequence[str]] = ()) -> list[ExperimentConfig]:
    each = each or [["variants.1.n=1"], ["variants.1.n=10"]]
    return points(SMOKE, "train.steps=40", *sets, each=each)


@dataclass(frozen=True)
class Case:
    """A pack, its cadence (``every_steps``), the logged step at which the first attempt dies
    (in the tuning phase when ``in_tuning``), and where each stage's second attempt must start
    (None: from step 0)."""

    configs: Callable[[], list[ExperimentConfig]]
    every: int
    kill: int
    resumed: tuple[int | None, ...]
    in_tuning: bool = False


KAN = (
    "variants=[{name: kan, kind: kan, grid: 4, grid_update: {every: 5, until: 25}},"
    " {name: f, kind: fixed}]"
)
DIVERGING = ["variants.1.kind=rowdy", "variants.1.lr=100"]
TUNED = ["tune.seeds=2", "tune.lr=[0.003, 0.03]", "train.steps=30"]
CASES = {
    "adam": Case(smoke, 7, 23, (21,)),
    # Models reach the threshold (steps 9 and 15) and diverge (step 4) before the save.
    "sgd with momentum": Case(
        lambda: smoke(
            *["train.optimizer=sgd", "train.momentum=0.9", "train.lr=0.05", "train.threshold=0.3"],
            each=[["variants.1.n=1"], ["variants.1.n=10"], DIVERGING],
        ),
        7,
        23,
        (21,),
    ),
    # The L-BFGS phase saves nothing inside: the resume starts at its first step.
    "adam then lbfgs, killed in lbfgs": Case(
        lambda: smoke("train.phases=[{optimizer: adam, steps: 20}, {optimizer: lbfgs, steps: 20}]"),
        10,
        25,
        (20,),
    ),
    # ... and saves at its last step boundary, from where the next phase starts.
    "lbfgs then adam": Case(
        lambda: smoke("train.phases=[{optimizer: lbfgs, steps: 15}, {optimizer: adam, steps: 25}]"),
        7,
        20,
        (15,),
    ),
    "adam, sgd, adam": Case(
        lambda: smoke(
            "train.phases=[{optimizer: adam, steps: 10},"
            " {optimizer: sgd, steps: 15, momentum: 0.5}, {optimizer: adam, steps: 15}]"
        ),
        6,
        25,
        (24,),
    ),
    # Resumed (at 18) after the grid updates at 0, 5, 10 and 15, which gave each model grids
    # of its own, and before the one at 20.
    "kan with grid updates": Case(
        lambda: points(SMOKE, "train.steps=30", KAN, each=[["train.lr=0.01"], ["train.lr=0.02"]]),
        6,
        20,
        (18,),
    ),
    # An inverse problem: each model learns the PDE's coefficient k (the objective's tensor).
    "pde": Case(
        lambda: points(
            CONFIGS / "pde_smoke.yaml",
            *["train.steps=30", "pde.operator=u_t - k*u_xx", "pde.data={points: 64}"],
            "pde.params={k: {init: 0.5, 'true': 1.0, trainable: true}}",
            each=[["train.lr=0.01"], ["train.lr=0.02"]],
        ),
        8,
        20,
        (16,),
    ),
    # Two stages: the tuning phase's is restored finished, the evaluation's resumed.
    "tuned, killed in the evaluation": Case(
        lambda: smoke(*TUNED),
        7,
        20,
        (30, 14),
    ),
    "tuned, killed in the tuning phase": Case(
        lambda: smoke(*TUNED),
        7,
        20,
        (14, None),
        in_tuning=True,
    ),
}


def killer(step: int) -> Callable[[list[LogRecord]], None]:
    def on_log(records: list[LogRecord]) -> None:
        if records[0].step >= step:
            raise Killed(step)

    return on_log


def attempt(
    configs: list[ExperimentConfig],
    store: MemoryStore,
    every: int,
    kill: int | None = None,
    in_tuning: bool = False,
    **logs: Callable[[list[LogRecord]], None],
) -> tuple[list[ExperimentResult] | None, Checkpoints]:
    """One attempt of the job (a fresh ``Checkpoints`` on ``store``): its results, or None if
    it was killed at logged step ``kill``."""
    checkpoints = Checkpoints(store, math.inf, "job", every_steps=every)
    if kill is not None:
        logs["on_tuning_log" if in_tuning else "on_log"] = killer(kill)
    try:
        return train_pack(configs, checkpoints=checkpoints, **logs), checkpoints
    except Killed:
        return None, checkpoints


def same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Equal bit for bit (NaN included)."""
    if a is None or b is None:
        return a is None and b is None
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    return a.dtype == b.dtype and a.shape == b.shape and a.numpy().tobytes() == b.numpy().tobytes()


def numbers(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` without its times and the checkpoint entries."""
    return {k: v for k, v in extra.items() if not k.endswith("_s") and k not in STAGE_KEYS}


def assert_equal(want: list[ExperimentResult], got: list[ExperimentResult]) -> None:
    """Every number of each point's result equal: records, events, predictions, final
    parameters, the metrics files, and the tuning's choice."""
    assert len(want) == len(got)
    for w, g in zip(want, got):
        a, b = w.result, g.result
        assert [r.step for r in a.records] == [r.step for r in b.records]
        for p, q in zip(a.records, b.records):
            for name in ("train_loss", "test_loss", "recovery", "val_loss", "evals"):
                assert same(getattr(p, name), getattr(q, name)), (p.step, name)
            assert p.params.keys() == q.params.keys()
            assert all(same(p.params[k], q.params[k]) for k in p.params), p.step
        for name in ("steps_to_threshold", "diverged_at", "predictions"):
            assert same(getattr(a, name), getattr(b, name)), name
        assert (a.steps_done, a.interrupted, a.stopped_early) == (
            b.steps_done,
            b.interrupted,
            b.stopped_early,
        )
        assert numbers(a.extra) == numbers(b.extra)
        assert metrics(w) == metrics(g)
        for i in range(len(w.members)):
            sw, sg = w.ensemble.state_dict_of(i), g.ensemble.state_dict_of(i)
            assert sw.keys() == sg.keys() and all(same(sw[k], sg[k]) for k in sw)
        assert (w.tuning is None) == (g.tuning is None)
        if w.tuning is not None and g.tuning is not None:
            assert repr(w.tuning.variants) == repr(g.tuning.variants)
            assert runs.metrics_csv(w.tuning.series) == runs.metrics_csv(g.tuning.series)


@pytest.mark.parametrize("name", list(CASES))
def test_a_killed_pack_resumes_to_the_uninterrupted_result(name: str) -> None:
    case = CASES[name]
    configs = case.configs()
    assert len(plan_packs(configs)) == 1
    want = train_pack(configs)
    store = MemoryStore()
    killed, first = attempt(configs, store, case.every, case.kill, case.in_tuning)
    assert killed is None
    seen: list[int] = []
    got, second = attempt(configs, store, case.every, on_log=lambda r: seen.append(r[0].step))
    assert got is not None
    assert_equal(want, got)
    # The records restored reach on_log too: it sees the evaluation's whole history once.
    assert seen == [r.step for r in want[0].result.records]

    steps = configs[0].train.steps
    assert [s.resumed_from for s in second.stages] == list(case.resumed)
    assert all(s.every_steps == case.every for s in second.stages)
    for before, after in zip(first.stages, second.stages):
        if after.resumed_from is None:
            assert after.steps_trained == steps
            continue
        # Only the steps after the last save trained again (none of a finished stage).
        assert after.steps_trained == steps - after.resumed_from
        if after.resumed_from < steps:
            assert after.resumed_from > 0
            assert before.steps_trained + after.steps_trained < steps + case.every
    for g in got:
        extra = g.result.extra
        resumed = second.stages[-1].resumed_from
        assert extra["resumed_from_step"] == (-1 if resumed is None else resumed)
        assert extra["steps_trained"] == second.stages[-1].steps_trained
        assert extra["checkpoint_every_steps"] == case.every


def test_checkpoints_change_nothing_in_an_ordinary_run() -> None:
    """Saving at every step boundary changes no number; a run without checkpoints has no
    checkpoint entries, and equals a run of each point alone (as before)."""
    configs = smoke("train.phases=[{optimizer: adam, steps: 25}, {optimizer: lbfgs, steps: 15}]")
    plain = train_pack(configs)
    store = MemoryStore()
    checkpoints = Checkpoints(store, 0.0, "job")
    saved = train_pack(configs, checkpoints=checkpoints)
    assert_equal(plain, saved)
    assert not STAGE_KEYS & plain[0].result.extra.keys()
    assert {k: v for k, v in saved[0].result.extra.items() if k in STAGE_KEYS} == {
        "resumed_from_step": -1,
        "checkpoint_every_steps": 1,  # every_seconds 0: the first save, at step 1, fixed it
        "steps_trained": 40,
    }
    assert list(store.blobs) == ["job/0"] and loads(store.blobs["job/0"])["done"]
    assert metrics(plain[0]) == metrics(run_experiment(configs[0]))


def test_a_finished_job_is_restored_without_training() -> None:
    configs = smoke()
    store = MemoryStore()
    done, _ = attempt(configs, store, 7)
    again, checkpoints = attempt(configs, store, 7)
    assert done is not None and again is not None
    assert_equal(done, again)
    (stage,) = checkpoints.stages
    assert (stage.resumed_from, stage.steps_trained) == (40, 0)


class Clock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Recording(MemoryStore):
    """A store that remembers the step of every blob put."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def put(self, key: str, blob: bytes) -> None:
        self.steps.append(loads(blob)["step"])
        super().put(key, blob)


def test_the_first_save_fixes_the_cadence_and_a_resumed_attempt_keeps_it() -> None:
    """Saves every 5 s, on a clock read once at the start and once a step: the first save,
    at step 5, fixes the cadence at 5 steps; a resumed attempt whose clock stands still saves
    by that count."""
    configs = smoke()
    store = Recording()
    checkpoints = Checkpoints(store, 5.0, "job", clock=Clock())
    with pytest.raises(Killed):
        train_pack(configs, checkpoints=checkpoints, on_log=killer(10))
    assert store.steps == [5, 10] and checkpoints.stages[0].every_steps == 5
    store.steps.clear()
    frozen = Checkpoints(store, 5.0, "job", clock=lambda: 0.0)
    train_pack(configs, checkpoints=frozen)
    assert store.steps == [15, 20, 25, 30, 35, 40]  # the last: the finished stage's
    assert frozen.stages[0].every_steps == 5


def test_the_restored_optimizer_state_matters() -> None:
    """A blob whose Adam moments are zeroed resumes to other numbers: the equality above
    depends on the restore."""
    configs = smoke()
    want = train_pack(configs)
    store = MemoryStore()
    killed, _ = attempt(configs, store, 7, kill=23)
    assert killed is None
    blob = loads(store.blobs["job/0"])
    assert blob["step"] == 21
    blob["state"]["optimizer"]["m"].zero_()
    store.put("job/0", dumps(blob))
    got, _ = attempt(configs, store, 7)
    assert got is not None
    assert metrics(got[0]) != metrics(want[0])


def test_a_checkpoint_of_another_run_is_refused() -> None:
    store = MemoryStore()
    attempt(smoke(), store, 7, kill=23)
    longer = smoke("train.steps=50")
    with pytest.raises(ValueError, match="not 6 models and 50 steps"):
        attempt(longer, store, 7)


def test_stages_are_numbered_by_job_and_call() -> None:
    store = MemoryStore()
    checkpoints = Checkpoints(store, 1.0, "pack-3")
    assert [checkpoints.stage().key for _ in range(3)] == ["pack-3/0", "pack-3/1", "pack-3/2"]
    store.put("x", b"1")
    assert store.get("x") == b"1" and store.get("y") is None
    with pytest.raises(ValueError):
        Checkpoints(store, -1.0)


def test_a_compiled_run_resumes_its_step_counter() -> None:
    """A compiled step reads the step (the schedule and Adam's bias corrections) from a device
    counter: a resume sets it, or the numbers differ."""
    configs = smoke("train.compile=true", "train.schedule=cosine")
    want = train_pack(configs)
    assert "compile_error" not in want[0].result.extra
    store = MemoryStore()
    killed, _ = attempt(configs, store, 7, kill=23)
    assert killed is None
    got, second = attempt(configs, store, 7)
    assert got is not None and second.stages[0].resumed_from == 21
    assert_equal(want, got)
