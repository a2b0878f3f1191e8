"""Benchmark: the default thread choice on a busy and on a quiet machine.

Times whole ``aaf run -q`` commands (wall clock, start-up and figures included) and their
training time (``train_time_s`` of summary.json), interleaved and repeated:

* busy: with one CPU-bound process beside it (a Python busy loop in a subprocess), the default
  (``threads: auto``) against ``--set threads=1``. Acceptance: default <= 1.5x threads=1.
* quiet: nothing started beside it, the default against the old default: torch's own thread
  count (every core) with libgomp's spin-waiting threads, reproduced by importing torch before
  aaf_cli, so aaf's ``OMP_WAIT_POLICY=PASSIVE`` comes too late to apply.

The machine's load average is printed with each row: on a shared machine "quiet" only means
that this script started nothing else.

    python benchmarks/bench_threads.py                 # default config, 5000 steps, 3 rounds
    python benchmarks/bench_threads.py --quick         # 1000 steps, 2 rounds
    python benchmarks/bench_threads.py --config configs/papers/jcp_smooth.yaml --steps 500
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY_LOOP = "while True: pass"
OLD_DEFAULT = "import sys, torch; from aaf_cli.cli import main; sys.argv[0] = 'aaf'; main()"
NEW_DEFAULT = "import sys; from aaf_cli.cli import main; sys.argv[0] = 'aaf'; main()"


def aaf_run(code: str, args: list[str], runs_dir: Path) -> tuple[float, float, dict[str, str]]:
    """(wall seconds, training seconds, summary environment) of one ``aaf run -q``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    before = set(runs_dir.iterdir())
    tic = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, "run", *args, "-q", "--runs-dir", str(runs_dir)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - tic
    (folder,) = set(runs_dir.iterdir()) - before
    summary = json.loads((folder / "summary.json").read_text())
    return wall, float(summary["train_time_s"]), summary["environment"]


def table(
    title: str, cases: dict[str, tuple[str, list[str]]], rounds: int, base: list[str]
) -> None:
    results: dict[str, list[tuple[float, float, str]]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory(prefix="aaf-bench-threads-") as tmp:
        for r in range(rounds):
            for name, (code, extra) in cases.items():
                wall, trained, env = aaf_run(code, [*base, *extra], Path(tmp))
                load = os.getloadavg()[0]
                results[name].append((wall, trained, env.get("threads", "?")))
                print(
                    f"  round {r + 1} {name:22s} wall {wall:7.1f} s  train {trained:7.1f} s  "
                    f"threads {env.get('threads')} ({env.get('threads_reason', 'old default')})"
                    f"  load {load:.2f}",
                    flush=True,
                )
    print(f"\n{title}")
    header = (
        f"{'':24s} {'threads':>7s} {'wall s (median)':>16s} {'train s (median)':>17s} {'runs':>5s}"
    )
    print(header)
    print("-" * len(header))
    for name, rows in results.items():
        wall = statistics.median(w for w, _, _ in rows)
        trained = statistics.median(t for _, t, _ in rows)
        threads = "/".join(sorted({t for _, _, t in rows}))
        print(f"{name:24s} {threads:>7s} {wall:16.1f} {trained:17.1f} {len(rows):5d}")
    names = list(results)
    ratio = statistics.median(t for _, t, _ in results[names[0]]) / statistics.median(
        t for _, t, _ in results[names[1]]
    )
    print(f"train time {names[0]} / {names[1]}: {ratio:.2f}x\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a config file (default: the built-in default)")
    parser.add_argument("--steps", type=int, help="override train.steps (default: the config's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1000 steps, 2 rounds")
    parser.add_argument("--only", choices=["busy", "quiet"], help="run one of the two tables")
    args = parser.parse_args()
    steps = 1000 if args.quick and args.steps is None else args.steps
    rounds = 2 if args.quick else args.rounds
    base = [args.config] if args.config else []
    base += [f"--set=train.steps={steps}"] if steps else []
    print(
        f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
        f"aaf run {' '.join(base) or '(built-in default)'}; {rounds} rounds, interleaved"
    )
    if args.only != "quiet":
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        try:
            time.sleep(1.0)
            cases = {
                "default (auto)": (NEW_DEFAULT, []),
                "threads=1": (NEW_DEFAULT, ["--set=threads=1"]),
            }
            table("busy: one CPU-bound process beside each run", cases, rounds, base)
        finally:
            busy.kill()
            busy.wait()
    if args.only != "busy":
        # Before threads: auto, torch used one thread per core it may run on.
        old = [f"--set=threads={len(os.sched_getaffinity(0))}"]
        cases = {"default (auto)": (NEW_DEFAULT, []), "old default": (OLD_DEFAULT, old)}
        table("quiet: nothing started beside each run", cases, rounds, base)


if __name__ == "__main__":
    main()
