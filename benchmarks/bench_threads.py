"""Benchmark: the default thread choice on a quiet machine, beside a CPU-bound process, and
when one starts in the middle of a run.

Times whole ``aaf run -q`` commands (wall clock, start-up and figures included) and their
training time (``train_time_s`` of summary.json), interleaved and repeated, for two workloads:
the default experiment (20 models of [1, 20, 1], 22 MFLOP per step) and the same with 60 seeds
(120 models, 134 MFLOP); ``threads: auto`` picks two threads for both on a quiet 2-core machine.

* quiet: nothing started beside the run. The default (idle OpenMP threads spin a moment before
  they sleep) against ``OMP_WAIT_POLICY=PASSIVE`` (aaf's previous default: they sleep at once,
  and every operation pays a wake-up) and against ``threads=1``.
* busy: one CPU-bound process (a Python busy loop) beside the run from its start: the default
  against ``threads=1``. Acceptance: default <= 1.5x threads=1.
* busy mid-run: the busy loop starts 2 s into the run. The default (``budget.ThreadGuard``
  drops it to one thread) against ``threads=1`` and ``threads=2`` pinned (no guard: the
  spinning second thread fights the busy loop for the core). Acceptance: default <= 1.5x
  threads=1.

The machine's load average is printed with each row: on a shared machine "quiet" only means
that this script started nothing else.

    python benchmarks/bench_threads.py                 # 2000 steps, 2 rounds (~6 min)
    python benchmarks/bench_threads.py --quick         # 1000 steps, 1 round
    python benchmarks/bench_threads.py --only quiet
    python benchmarks/bench_threads.py --only break-even   # where a second thread pays
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BUSY_LOOP = "while True: pass"
AAF = "import sys; from aaf_cli.cli import main; sys.argv[0] = 'aaf'; main()"
WORKLOADS = {"20 models": [], "120 models": ["--set=seeds=60"]}
HOG_AFTER_S = 2.0

# name -> (extra arguments, extra environment)
Case = tuple[list[str], dict[str, str]]


def aaf_run(
    args: list[str], extra_env: dict[str, str], runs_dir: Path
) -> tuple[float, float, dict[str, str]]:
    """(wall seconds, training seconds, summary environment) of one ``aaf run -q``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    before = set(runs_dir.iterdir())
    tic = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", AAF, "run", *args, "-q", "--runs-dir", str(runs_dir)],
        env={**env, **extra_env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - tic
    (folder,) = set(runs_dir.iterdir()) - before
    summary = json.loads((folder / "summary.json").read_text())
    return wall, float(summary["train_time_s"]), summary["environment"]


class Hog:
    """A CPU-bound process beside each run: from its start, or ``after`` seconds into it."""

    def __init__(self, after: float | None) -> None:
        self.after = after
        self.proc: subprocess.Popen[bytes] | None = None
        self.timer: threading.Timer | None = None

    def __enter__(self) -> Hog:
        if self.after is None:
            return self
        self.timer = threading.Timer(self.after, self._start)
        self.timer.start()
        return self

    def _start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])

    def __exit__(self, *exc: object) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer.join()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def table(
    title: str,
    cases: dict[str, Case],
    rounds: int,
    base: list[str],
    hog: float | None,
    workloads: dict[str, list[str]] = WORKLOADS,
) -> None:
    print(f"\n## {title}", flush=True)
    results: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="aaf-bench-threads-") as tmp:
        for r in range(rounds):
            for workload, more in workloads.items():
                for name, (extra, extra_env) in cases.items():
                    with Hog(hog):
                        wall, trained, env = aaf_run([*base, *more, *extra], extra_env, Path(tmp))
                    threads = env.get("threads", "?")
                    if "threads_dropped" in env:
                        threads += "->1"
                    results.setdefault((workload, name), []).append((wall, trained, threads))
                    print(
                        f"  round {r + 1} {workload:10s} {name:28s} wall {wall:6.1f} s  "
                        f"train {trained:6.1f} s  threads {threads:4s} "
                        f"({env.get('threads_dropped') or env.get('threads_reason')})  "
                        f"load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
    print("\n| workload | setting | threads | wall s | train s | train vs first |")
    print("|---|---|---:|---:|---:|---:|")
    for workload in workloads:
        first = None
        for name in cases:
            rows = results[(workload, name)]
            wall = statistics.median(w for w, _, _ in rows)
            trained = statistics.median(t for _, t, _ in rows)
            first = trained if first is None else first
            threads = "/".join(sorted({t for _, _, t in rows}))
            print(
                f"| {workload} | {name} | {threads} | {wall:.1f} | {trained:.1f} | "
                f"{trained / first:.2f}x |"
            )
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a config file (default: the built-in default)")
    parser.add_argument("--steps", type=int, help="train.steps (default 2000; --quick 1000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1000 steps, 1 round")
    parser.add_argument(
        "--only", choices=["quiet", "busy", "mid-run", "break-even"], help="one table"
    )
    args = parser.parse_args()
    steps = args.steps or (1000 if args.quick else 2000)
    rounds = 1 if args.quick else args.rounds
    base = ([args.config] if args.config else []) + [f"--set=train.steps={steps}"]
    print(
        f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
        f"aaf run {' '.join(base)}; {rounds} rounds, interleaved"
    )
    one: Case = (["--set=threads=1"], {})
    if args.only == "break-even":
        # Where a second thread starts to pay (budget.FLOPS_PER_THREAD): the default
        # experiment with more and more seeds (22 MFLOP per step per 10 seeds), quiet.
        sizes = {f"{2 * k} models": [f"--set=seeds={k}"] for k in (2, 5, 10, 20, 30, 60)}
        cases = {"threads=1": one, "threads=2": (["--set=threads=2"], {})}
        table("break-even: one thread against two, quiet", cases, rounds, base, None, sizes)
        return
    if args.only in (None, "quiet"):
        cases = {
            "default": ([], {}),
            "OMP_WAIT_POLICY=PASSIVE": ([], {"OMP_WAIT_POLICY": "PASSIVE"}),
            "threads=1": one,
        }
        table("quiet: nothing started beside each run", cases, rounds, base, None)
    if args.only in (None, "busy"):
        cases = {"threads=1": one, "default": ([], {})}
        table(
            "busy: one CPU-bound process beside each run from its start", cases, rounds, base, 0.0
        )
    if args.only in (None, "mid-run"):
        cases = {
            "threads=1": one,
            "default": ([], {}),
            "threads=2 (no guard)": (["--set=threads=2"], {}),
        }
        table(
            f"busy mid-run: the process starts {HOG_AFTER_S:.0f} s into each run",
            cases,
            rounds,
            base,
            HOG_AFTER_S,
        )


if __name__ == "__main__":
    main()
