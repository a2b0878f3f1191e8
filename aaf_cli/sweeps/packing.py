"""Packing: sweep points that differ only in per-model settings train as one ensemble.

The engine already trains every model of an experiment at once, each with its own learning
rate, activation parameters and seed. Sweep points whose configs differ only in such
per-model settings (a variant's ``n``, ``a0``, ``lr``, slope recovery or weight decay, the
run's ``train.lr``, the seeds, and the name) are therefore one experiment
with more models: they are trained together and split back into one result per point, whose
numbers equal those of the point run alone (every model's arithmetic is its own; only the
batch it sits in changes). Points that differ in anything else (the network, the target, the
steps, the schedule, the dtype, ...) are trained apart.

Workers never write files: ``train_pack`` returns results and the driver writes each point's
ordinary run folder (``pipeline.write_run``), so an executor needs no shared filesystem.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from aaf_cli.budget import ThreadChoice, choose_threads, free_cores, usable_cores, workload
from aaf_cli.config import ExperimentConfig
from aaf_cli.experiment import ExperimentResult, Located, members, run_experiment
from aaf_cli.models import AnyEnsemble, ModelSpec
from aaf_cli.problems.base import is_logged_value
from aaf_cli.targets import Dataset
from aaf_cli.train import LogRecord, TrainResult

if TYPE_CHECKING:
    from aaf_cli.resume import Checkpoints

#: Most models one packed group trains (memory grows with it; more points make more groups).
MAX_PACK_MODELS = 4096
#: Config keys that may differ between the points of one pack (each model carries its own).
PER_MODEL = ("name", "seeds", "variants", "train.lr")


def pack_key(cfg: ExperimentConfig) -> str:
    """What must be equal for two points to train as one ensemble: the config without its
    per-model settings (``PER_MODEL``)."""
    data = cfg.model_dump(mode="json")
    for key in PER_MODEL:
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node.pop(last, None)
    return json.dumps(data, sort_keys=True)


def model_count(cfg: ExperimentConfig) -> int:
    return len(cfg.variants) * len(cfg.seed_list)


@dataclass(frozen=True)
class Pack:
    """Points (indices into the sweep's point list) that train as one experiment."""

    points: tuple[int, ...]
    models: int


def plan_packs(
    configs: Sequence[ExperimentConfig],
    pending: Sequence[int] | None = None,
    *,
    pack: bool = True,
    parts: int = 1,
    max_models: int = MAX_PACK_MODELS,
    fits: Callable[[Sequence[int]], bool] | None = None,
) -> list[Pack]:
    """Group the ``pending`` points (default: all) into packs, in order of first appearance.

    Args:
        configs: every point's config.
        pending: the points to run.
        pack: False runs every point alone (``--no-pack``).
        parts: split packs so that there are at least this many where the points allow it
            (parallel executors: one task per pack).
        max_models: most models per pack.
        fits: whether a pack of these points fits the machine (its estimated memory); one
            that does not is halved until it does (a single point is checked on its own).
    """
    todo = list(range(len(configs))) if pending is None else list(pending)
    if not pack:
        return [Pack((i,), model_count(configs[i])) for i in todo]
    compatible: dict[str, list[int]] = {}
    for i in todo:
        compatible.setdefault(pack_key(configs[i]), []).append(i)
    chunks: list[list[int]] = []
    for indices in compatible.values():
        chunk: list[int] = []
        size = 0
        for i in indices:
            n = model_count(configs[i])
            if chunk and size + n > max_models:
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(i)
            size += n
        chunks.append(chunk)
    if fits is not None:
        sized: list[list[int]] = []
        while chunks:
            chunk = chunks.pop(0)
            if len(chunk) > 1 and not fits(chunk):
                half = (len(chunk) + 1) // 2
                chunks[:0] = [chunk[:half], chunk[half:]]
            else:
                sized.append(chunk)
        chunks = sized
    while chunks and len(chunks) < parts:
        largest = max(chunks, key=len)
        if len(largest) < 2:
            break
        chunks.remove(largest)
        half = (len(largest) + 1) // 2
        chunks += [largest[:half], largest[half:]]
    chunks.sort(key=lambda c: c[0])
    return [Pack(tuple(c), sum(model_count(configs[i]) for i in c)) for c in chunks]


def pack_members(
    configs: Sequence[ExperimentConfig],
) -> tuple[dict[tuple[Any, ...], list[ModelSpec]], list[list[int]]]:
    """The models of every point by training group, and for each point the positions of its
    models (in the order the point alone would number them) in the packed ensemble.

    A point's ``train.lr`` becomes the rate of each of its models whose variant sets none. A
    model that several points have alike (same group, variant settings, seed and rate: the
    fixed baseline of an n sweep) is trained once and shared: its arithmetic is its own, so
    each point reads the numbers it would have made alone.
    """
    groups: dict[tuple[Any, ...], list[ModelSpec]] = {}
    first: dict[tuple[Any, ...], tuple[str, int]] = {}  # a model's identity -> its row's name
    alias: dict[tuple[int, str, int], tuple[str, int]] = {}
    for k, cfg in enumerate(configs):
        for v in cfg.variants:
            lr = v.lr if v.lr is not None else cfg.train.lr
            key = cfg.group_key(v)
            settings = json.dumps(v.model_dump(mode="json", exclude={"name"}), sort_keys=True)
            for seed in cfg.seed_list:
                identity = (key, settings, seed, lr)
                if identity not in first:
                    first[identity] = (f"{k}:{v.name}", seed)
                    groups.setdefault(key, []).append(
                        ModelSpec(f"{k}:{v.name}", seed, v.kind, v, lr)
                    )
                alias[(k, v.name, seed)] = first[identity]
    position = {
        (m.variant, m.seed): i for i, m in enumerate(m for group in groups.values() for m in group)
    }
    rows = [
        [position[alias[(k, m.variant, m.seed)]] for m in members(cfg)]
        for k, cfg in enumerate(configs)
    ]
    return groups, rows


def pack_threads(
    configs: Sequence[ExperimentConfig], threads: int | ThreadChoice | None = None
) -> ThreadChoice:
    """The thread choice of a pack: ``threads`` if the executor sets it (parallel tasks share
    the cores; a ``ThreadChoice`` is taken as made, ``auto`` with its guard), the config's
    number, or ``auto`` from the whole pack's work per step."""
    if isinstance(threads, ThreadChoice):
        return threads
    cores = usable_cores()
    if threads is not None:
        return choose_threads(threads, 0.0, cores, None)
    requested = configs[0].threads
    if requested != "auto":
        return choose_threads(requested, 0.0, cores, None)
    flops = sum(workload(c).step_flops for c in configs)
    return choose_threads("auto", flops, cores, free_cores())


class PointView:
    """One point's models inside a packed ensemble, numbered as the point alone numbers them."""

    def __init__(self, ensemble: Located, rows: Sequence[int]) -> None:
        self.ensemble = ensemble
        self.rows = list(rows)

    def locate(self, index: int) -> tuple[AnyEnsemble, int]:
        return self.ensemble.locate(self.rows[index])

    def state_dict_of(self, index: int) -> dict[str, torch.Tensor]:
        return self.ensemble.state_dict_of(self.rows[index])


def own_names(record: LogRecord, rows: torch.Tensor) -> set[str]:
    """The logged parameters some of these models have: a PDE run's terms and identified
    parameters (every model has them), and the activation parameters not NaN for all of
    them in a record of the initial networks (a model's own are finite at step 0)."""
    return {
        name
        for name, v in record.params.items()
        if is_logged_value(name) or not bool(torch.isnan(v[rows]).all())
    }


def slice_record(record: LogRecord, rows: torch.Tensor, names: set[str]) -> LogRecord:
    """The record of some models, with the logged parameters ``names`` (``own_names``): a
    run of those models alone logs those and no others."""
    return LogRecord(
        record.step,
        record.elapsed,
        record.train_loss[rows],
        record.test_loss[rows],
        record.recovery[rows],
        {name: v[rows] for name, v in record.params.items() if name in names},
        None if record.val_loss is None else record.val_loss[rows],
        None if record.evals is None else record.evals[rows],
    )


def split(
    exp: ExperimentResult,
    configs: Sequence[ExperimentConfig],
    rows: Sequence[Sequence[int]],
    labels: Sequence[str],
) -> list[ExperimentResult]:
    """One result per point from the result of their packed experiment."""
    res, data = exp.result, exp.data
    out: list[ExperimentResult] = []
    for cfg, point_rows in zip(configs, rows):
        idx = torch.tensor(point_rows, dtype=torch.long)
        names = own_names(res.records[0], idx) if res.records else set()
        result = TrainResult(
            records=[slice_record(r, idx, names) for r in res.records],
            steps_to_threshold=res.steps_to_threshold[idx],
            diverged_at=res.diverged_at[idx],
            predictions=res.predictions[idx],
            wall_time=res.wall_time,
            steps_done=res.steps_done,
            interrupted=res.interrupted,
            extra=dict(res.extra),
            stopped_early=[res.stopped_early[i] for i in point_rows] if res.stopped_early else [],
        )
        point_data = data
        if data.x_train.dim() == 3:  # per-seed data: each model's own slice
            on = idx.to(data.x_train.device)
            point_data = Dataset(data.x_train[on], data.y_train[on], data.x_test, data.y_test)
        packing = None
        if len(configs) > 1:
            packing = {
                "points": len(configs),
                "with": list(labels),
                "models": len(exp.members),
                "train_time_s": res.wall_time,
            }
        out.append(
            ExperimentResult(
                cfg,
                members(cfg),
                point_data,
                result,
                PointView(exp.ensemble, point_rows),
                dict(exp.environment),
                packing,
            )
        )
    return out


def train_pack(
    configs: Sequence[ExperimentConfig],
    *,
    labels: Sequence[str] = (),
    on_log: Callable[[list[LogRecord]], None] | None = None,
    stop: Callable[[], bool] | None = None,
    threads: int | ThreadChoice | None = None,
    data: Dataset | None = None,
    on_tuning_log: Callable[[list[LogRecord]], None] | None = None,
    on_phase: Callable[[str, Sequence[ExperimentConfig]], None] | None = None,
    checkpoints: Checkpoints | None = None,
) -> list[ExperimentResult]:
    """Train the points of one pack (``plan_packs``) as one experiment; one result per point,
    equal to what ``experiment.run_experiment`` gives for that point alone.

    Tuned points (``tune:``) train in two packs (``aaf_cli.tuning.train_tuned``): the tuning
    phases of all of them (a model that several points have alike, trained once), then their
    evaluations at the rates each chose.

    Args:
        configs: the points' configs; equal but for ``PER_MODEL`` (checked).
        labels: what each point is called in its summary's ``packed`` entry.
        on_log: at every logged step of the evaluation, the record of each point (in
            ``configs`` order); ``on_tuning_log`` the same in a tuning phase.
        stop: polled every step; True interrupts every point of the pack.
        threads: the thread count (default: ``pack_threads``).
        data: the first point's data when already made (``checks.preflight``).
        on_phase: told ``tuning`` and ``evaluation`` (with that phase's configs) as each starts.
        checkpoints: where the pack's training saves its state and resumes from
            (``aaf_cli.resume``): a rerun of the same pack with a fresh ``Checkpoints`` on the
            same store and job goes on from the last save and gives the same results. Each
            training of the pack (a tuning phase, a controls stage, the evaluation) is a stage.
    """
    from aaf_cli.controls import train_controlled

    if not configs:
        return []
    keys = {pack_key(c) for c in configs}
    if len(keys) > 1:
        raise ValueError("these points differ in more than per-model settings: not packable")

    def trainer(
        phase: Sequence[ExperimentConfig],
        test: bool,
        log: Callable[[list[LogRecord]], None] | None,
    ) -> list[ExperimentResult]:
        # The given data was made for the points' own seeds (it matters with target.resample).
        given = data if test or not phase[0].problem_section().per_seed else None
        return _train_pack(phase, labels, log, stop, threads, given, test, checkpoints)

    return train_controlled(
        configs, trainer, on_log=on_log, on_tuning_log=on_tuning_log, on_phase=on_phase
    )


def _train_pack(
    configs: Sequence[ExperimentConfig],
    labels: Sequence[str],
    on_log: Callable[[list[LogRecord]], None] | None,
    stop: Callable[[], bool] | None,
    threads: int | ThreadChoice | None,
    data: Dataset | None,
    test: bool,
    checkpoints: Checkpoints | None = None,
) -> list[ExperimentResult]:
    """One pack of untuned configs as one experiment (``train_pack``); ``test`` False: no
    test data (a tuning phase); ``checkpoints``: the pack's (``train_pack``)."""
    groups, rows = pack_members(configs)
    indices = [torch.tensor(r, dtype=torch.long) for r in rows]
    forward: Callable[[LogRecord], None] | None = None
    if on_log is not None:
        callback = on_log
        own: list[set[str]] = []

        def forward(record: LogRecord) -> None:
            if not own:  # the first record: the initial networks
                own.extend(own_names(record, idx) for idx in indices)
            callback([slice_record(record, idx, n) for idx, n in zip(indices, own)])

    cfg = configs[0]
    if data is not None and cfg.problem_section().per_seed and len(configs) > 1:
        data = None  # per-seed data in the pack's own model order
    exp = run_experiment(
        cfg,
        on_log=forward,
        stop=stop,
        data=data,
        groups=groups,
        threads=pack_threads(configs, threads),
        test=test,
        checkpoints=checkpoints,
    )
    names = list(labels) or [c.name for c in configs]
    return split(exp, configs, rows, names)
