"""One experiment end to end, in memory: data, ensemble, training, per-model results.

Writing the run folder is ``runs.py``'s job and drawing is ``plots.py``'s; this module only turns
a config into numbers.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from aaf_cli import __version__
from aaf_cli.budget import ThreadChoice, ThreadGuard, plan_threads, predicted_seconds
from aaf_cli.config import ExperimentConfig
from aaf_cli.kan import KanEnsemble
from aaf_cli.models import AnyEnsemble, Ensemble, Groups, ModelSpec
from aaf_cli.problems import problem_of
from aaf_cli.problems.base import is_logged_value
from aaf_cli.results import ModelOutcome, Series, outcome
from aaf_cli.targets import Dataset, torch_dtype
from aaf_cli.train import LogRecord, TrainResult, train

if TYPE_CHECKING:
    from aaf_cli.resume import Checkpoints
    from aaf_cli.tuning import Tuning


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without it is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from aaf_cli.errors import ConfigError

        raise ConfigError("config", "device", "cuda was asked for, but no CUDA device is available")
    return torch.device(name)


def make_dataset(
    cfg: ExperimentConfig, device: torch.device, seeds: Sequence[int] | None = None
) -> Dataset:
    """Training, validation and test data, made once by the config's problem and shared by
    every variant (``problems``: sampled from an expression, read from a file, a PDE's
    compiled points).

    Every seed sees the same training data (``x_train`` is ``[N, d]``) unless the problem
    draws per seed (``target.resample``: ``[M, N, d]``, one slice per model, equal for the
    variants of a seed). ``seeds``: the seed of every model in ensemble order (default: this
    config's models; a packed sweep passes its own).
    """
    order = list(seeds) if seeds is not None else [m.seed for m in members(cfg)]
    return problem_of(cfg).dataset(device, order)


def groups_of(cfg: ExperimentConfig) -> dict[tuple[Any, ...], list[ModelSpec]]:
    """Every model of the experiment by group (``ExperimentConfig.group_key``), groups in
    order of first appearance, variant-major within a group, seeds in config order."""
    groups: dict[tuple[Any, ...], list[ModelSpec]] = {}
    for v in cfg.variants:
        models = [ModelSpec(v.name, seed, v.kind, v, v.lr) for seed in cfg.seed_list]
        groups.setdefault(cfg.group_key(v), []).extend(models)
    return groups


def members(cfg: ExperimentConfig) -> list[ModelSpec]:
    """Every model of the experiment, numbered as the ensembles hold them: group after group."""
    return [m for group in groups_of(cfg).values() for m in group]


def build_ensemble(
    cfg: ExperimentConfig,
    device: torch.device,
    groups: dict[tuple[Any, ...], list[ModelSpec]] | None = None,
) -> Groups:
    """One ensemble per group of variants; each seed starts from the same weights in every
    group, so every variant of a seed starts from identical weights. ``groups``: the models
    to build (default ``groups_of(cfg)``; a packed sweep passes the models of every point)."""
    groups = groups_of(cfg) if groups is None else groups
    dtype = torch_dtype(cfg.dtype)

    def build(key: tuple[Any, ...], group: list[ModelSpec]) -> AnyEnsemble:
        kind, base, layers = key[0], key[1], list(key[2])
        if kind == "kan":
            return KanEnsemble(layers, base, group, dtype=dtype, device=device)
        return Ensemble(
            layers,
            kind,
            base,
            group,
            init=cfg.model.init,
            init_std=cfg.model.init_std,
            dtype=dtype,
            device=device,
        )

    return Groups([build(key, group) for key, group in groups.items()])


class Located(Protocol):
    """Where each model of a result lives: ``Groups``, or a packed point's view of one."""

    def locate(self, index: int) -> tuple[AnyEnsemble, int]: ...

    def state_dict_of(self, index: int) -> dict[str, torch.Tensor]: ...


@dataclass
class ExperimentResult:
    """Numbers of one experiment, ready to be written and drawn.

    ``packing``: for a sweep point trained in one ensemble with other points, what it was
    packed with (recorded in the summary); None for a run of its own. ``tuning``: what the
    run's tuning phase chose (``aaf_cli.tuning``), None for an untuned run.
    """

    config: ExperimentConfig
    members: list[ModelSpec]
    data: Dataset
    result: TrainResult
    ensemble: Located
    environment: dict[str, str]
    packing: dict[str, Any] | None = None
    tuning: Tuning | None = None
    #: What the first stage found for the fixed controls' ``slope_from`` (``aaf_cli.controls``).
    controls: dict[str, Any] | None = None


def environment(
    device: torch.device, dtype: str, threads: ThreadChoice | None = None
) -> dict[str, str]:
    """Versions and machine facts recorded in the summary, with the thread choice and why."""
    env = {
        "aaf": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "dtype": dtype,
        "threads": str(torch.get_num_threads()),
        "argv": " ".join(sys.argv),
    }
    if threads is not None:
        env.update(threads.record())
        from aaf_cli import TORCH_LOADED_FIRST

        policy = os.environ.get("OMP_WAIT_POLICY", "")
        if TORCH_LOADED_FIRST and policy:
            # torch's OpenMP runtime read its settings when torch was imported, before aaf_cli.
            policy += " (set after torch was imported: may not be in effect)"
        env["omp_wait_policy"] = policy
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def set_threads(cfg: ExperimentConfig, choice: ThreadChoice | None = None) -> ThreadChoice:
    """Set torch's thread count for ``cfg`` (``auto``: from the workload and the free cores,
    see ``budget.choose_threads``; ``choice``: one made by the caller) and say what was chosen.
    The inter-op pool is left alone: the eager engine runs no inter-op parallel work, and its
    threads block, they do not spin."""
    choice = choice if choice is not None else plan_threads(cfg)
    torch.set_num_threads(choice.threads)
    return choice


def run_experiment(
    cfg: ExperimentConfig,
    on_log: Callable[[LogRecord], None] | None = None,
    stop: Callable[[], bool] | None = None,
    data: Dataset | None = None,
    groups: dict[tuple[Any, ...], list[ModelSpec]] | None = None,
    threads: ThreadChoice | None = None,
    test: bool = True,
    checkpoints: Checkpoints | None = None,
) -> ExperimentResult:
    """Sample the data, build the ensemble and train it.

    Args:
        cfg: a validated config.
        on_log: receives a ``LogRecord`` every ``train.log_every`` steps.
        stop: polled every step; True interrupts training (the result says so).
        data: the data, if already made (``checks.preflight`` makes it).
        groups: the models to train (default ``groups_of(cfg)``; ``sweeps.packing`` passes the
            models of several points, whose settings other than their own must equal ``cfg``'s).
        threads: the thread choice (default: ``cfg``'s).
        test: False measures no test data (a tuning phase: its choices read validation only).
        checkpoints: the job's checkpoints (``aaf_cli.resume``): training takes the next stage
            from them, saves into it and resumes from it.
    """
    device = resolve_device(cfg.device)
    previous = torch.get_num_threads()  # a caller's setting (a notebook's) is given back
    try:
        threads = set_threads(cfg, threads)
        groups = groups_of(cfg) if groups is None else groups
        if data is None:
            seeds = [m.seed for group in groups.values() for m in group]
            data = make_dataset(cfg, device, seeds)
        ensemble = build_ensemble(cfg, device, groups)
        objective = problem_of(cfg).objective(data, ensemble, test)
        guard = ThreadGuard(threads, torch.set_num_threads) if device.type == "cpu" else None
        result = train(
            ensemble,
            data.x_train,
            data.y_train,
            data.x_test if test else None,
            data.y_test if test else None,
            cfg.train,
            on_log=on_log,
            stop=stop,
            objective=objective,
            on_step=None if guard is None or not guard.enabled else guard.poll,
            eager_seconds=predicted_seconds(cfg, sum(len(g) for g in groups.values())),
            x_val=data.x_val,
            y_val=data.y_val,
            checkpoint=None if checkpoints is None else checkpoints.stage(),
        )
        env = environment(device, cfg.dtype, threads)
        if guard is not None and guard.dropped is not None:
            env["threads_dropped"] = guard.dropped
    finally:
        torch.set_num_threads(previous)
    return ExperimentResult(cfg, ensemble.members, data, result, ensemble, env)


def series_of(
    members: Sequence[ModelSpec],
    records: Sequence[LogRecord],
    diverged_at: Sequence[int | None] | None = None,
) -> list[Series]:
    """Per-model histories from log records. Without ``diverged_at`` (a run still going), a
    model counts as diverged from its first logged non-finite loss."""
    series = [Series(m.variant, m.seed) for m in members]
    for record in records:
        values = zip(
            record.train_loss.tolist(),
            record.test_loss.tolist(),
            record.recovery.tolist(),
            record.val().tolist(),
        )
        params = {k: v.tolist() for k, v in record.params.items()}
        evals = [record.step] * len(series) if record.evals is None else record.evals.tolist()
        for i, (s, (train_loss, test_loss, recovery, val)) in enumerate(zip(series, values)):
            s.steps.append(record.step)
            s.time.append(record.elapsed)
            s.train.append(train_loss)
            s.test.append(test_loss)
            s.recovery.append(recovery)
            s.val.append(val)
            s.evals.append(int(evals[i]))
            for name, column in params.items():
                if is_logged_value(name):  # a problem's own terms and parameters
                    s.terms.setdefault(name, []).append(column[i])
                elif not math.isnan(column[i]) or name in s.params:
                    s.params.setdefault(name, []).append(column[i])
            if diverged_at is None and s.diverged_at is None and not math.isfinite(train_loss):
                s.diverged_at = record.step
    if diverged_at is not None:
        for s, step in zip(series, diverged_at):
            s.diverged_at = step
    return series


def tidy(exp: ExperimentResult) -> tuple[list[Series], list[ModelOutcome]]:
    """Per-model histories and outcomes as plain Python numbers."""
    res = exp.result
    diverged = [_event(res.diverged_at[i]) for i in range(len(exp.members))]
    series = series_of(exp.members, res.records, diverged)
    outcomes = [outcome(s, _event(res.steps_to_threshold[i])) for i, s in enumerate(series)]
    return series, outcomes


def _event(step: torch.Tensor) -> int | None:
    value = int(step)
    return None if value < 0 else value
