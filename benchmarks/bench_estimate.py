"""Benchmark: the time estimate (``aaf validate``'s "about ...") against measured training time.

Runs every shipped config (configs/*.yaml, configs/papers/*.yaml) in this process, the paper
configs shortened to ``--paper-steps`` steps (15000 in the files; the estimate gets the same
override), and prints predicted vs measured training time (``train_time_s``: the training loop,
without start-up and figures) and their ratio. The prediction uses the thread count the run
actually chose (``threads: auto`` unless ``--threads``). CPU time is printed beside the wall
clock: on a shared machine the wall clock includes waiting for a core.

    python benchmarks/bench_estimate.py               # the table in docs/performance.md
    python benchmarks/bench_estimate.py --quick       # papers at 300 steps
    python benchmarks/bench_estimate.py --fit         # the measurements budget.py is fitted on
    python benchmarks/bench_estimate.py --count-ops   # torch ops per step and per log, counted
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from aaf_cli.budget import train_seconds, workload
from aaf_cli.config import ExperimentConfig, load_config
from aaf_cli.experiment import build_ensemble, make_dataset, run_experiment
from aaf_cli.train import train

REPO = Path(__file__).resolve().parent.parent
DEEP = ["model.layers=[1,50,50,50,50,1]", "model.activation=tanh"]


def shipped(paper_steps: int) -> list[tuple[str, ExperimentConfig, list[str]]]:
    out = [("default", load_config(None, []), [])]
    for path in sorted((REPO / "configs").glob("*.yaml")):
        out.append((path.stem, load_config(path, []), []))
    for path in sorted((REPO / "configs" / "papers").glob("*.yaml")):
        overrides = [f"train.steps={paper_steps}"]
        out.append((f"papers/{path.stem}", load_config(path, overrides), overrides))
    return out


def compare(paper_steps: int, threads: str) -> None:
    print(
        f"# torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at start; papers at {paper_steps} steps; threads {threads}"
    )
    header = (
        f"{'config':28s} {'steps':>6s} {'thr':>3s} {'predicted s':>11s} {'measured s':>10s} "
        f"{'ratio':>6s} {'cpu s':>7s}"
    )
    print(header)
    print("-" * len(header))
    ratios = []
    for name, cfg, _ in shipped(paper_steps):
        cfg = cfg.model_copy(update={"threads": threads if threads == "auto" else int(threads)})
        cpu = time.process_time()
        exp = run_experiment(cfg)
        cpu = time.process_time() - cpu
        chosen = int(exp.environment["threads"])
        predicted = train_seconds(cfg, chosen)
        measured = exp.result.wall_time
        ratios.append(measured / predicted)
        print(
            f"{name:28s} {cfg.train.steps:6d} {chosen:3d} {predicted:11.2f} {measured:10.2f} "
            f"{measured / predicted:6.2f} {cpu:7.2f}",
            flush=True,
        )
    print(f"# ratio measured/predicted: min {min(ratios):.2f}, max {max(ratios):.2f}")
    print(f"# load average at end {os.getloadavg()[0]:.2f}")


def fit() -> None:
    """CPU time per step at one thread, no logging: the numbers budget.py's constants come from."""
    torch.set_num_threads(1)
    cases = {
        "deep x2": [*DEEP, "seeds=1"],
        "deep x4": [*DEEP, "seeds=2"],
        "deep x20": [*DEEP, "seeds=10"],
        "[1,20,1] x20": [],
    }
    for name, overrides in cases.items():
        cfg = load_config(None, [*overrides, "train.steps=200", "train.log_every=100000"])
        best = float("inf")
        for _ in range(3):
            cpu = time.process_time()
            run_experiment(cfg.model_copy(update={"threads": 1}))
            best = min(best, (time.process_time() - cpu) / 200)
        w = workload(cfg)
        print(
            f"{name:14s} ops {w.ops:5d}  {w.step_flops / 1e6:8.1f} MFLOP  "
            f"cpu {1000 * best:.3f} ms/step",
            flush=True,
        )


def count_ops() -> None:
    """aten operations per training step and per logged step, counted on the real engine."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            self.n += 1
            return func(*args, **(kwargs or {}))

    def ops(cfg: ExperimentConfig, steps: int, log_every: int) -> int:
        train_cfg = cfg.train.model_copy(update={"steps": steps, "log_every": log_every})
        device = torch.device("cpu")
        data = make_dataset(cfg, device)
        ensemble = build_ensemble(cfg, device)
        with Count() as counter:
            train(ensemble, data.x_train, data.y_train, data.x_test, data.y_test, train_cfg)
        return counter.n

    for name, cfg, _ in shipped(10):
        step = ops(cfg, 3, 1000) - ops(cfg, 2, 1000)
        log = (ops(cfg, 3, 1) - ops(cfg, 3, 1000)) / 2
        print(
            f"{name:28s} counted {step:5d} ops/step, {log:5.0f} ops/log; model {workload(cfg).ops}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-steps", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="papers at 300 steps")
    parser.add_argument("--threads", default="auto", help="auto (default) or a number")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--count-ops", action="store_true")
    args = parser.parse_args()
    if args.fit:
        fit()
    elif args.count_ops:
        count_ops()
    else:
        compare(300 if args.quick else args.paper_steps, args.threads)


if __name__ == "__main__":
    main()
