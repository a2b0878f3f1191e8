"""Benchmark: what tuning inside a run costs. The default ``aaf run`` (every variant's learning
rate chosen on validation data from three rates on three tuning seeds, then the comparison on
the run's ten seeds) against the same run with ``tune: off``, interleaved and repeated.

Times whole ``aaf run -q`` commands (wall clock: start-up and figures included) and their
training time (summary.json: ``train_time_s``, plus the tuning phase's ``tuning.train_time_s``).
Acceptance: tuned training <= 2x the untuned training (the tuning phase trains 18 models, the
comparison 20: both as one batched ensemble each, so the tuning costs less than a second run).

    python benchmarks/bench_tuning.py              # the default experiment, 3 rounds
    python benchmarks/bench_tuning.py --rounds 1 --set train.steps=1000
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

AAF = "import sys; from aaf_cli.cli import main; sys.argv[0] = 'aaf'; main()"
CASES = {"tune: off": ["--set=tune=off"], "tuned (default)": []}


def aaf_run(args: list[str], runs_dir: Path) -> tuple[float, float, dict[str, object]]:
    """(wall seconds, training seconds of both phases, summary) of one ``aaf run -q``."""
    before = set(runs_dir.iterdir())
    tic = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", AAF, "run", *args, "-q", "--runs-dir", str(runs_dir)],
        env=dict(os.environ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - tic
    (folder,) = set(runs_dir.iterdir()) - before
    summary = json.loads((folder / "summary.json").read_text())
    tuning = summary.get("tuning") or {}
    train = float(summary["train_time_s"]) + float(tuning.get("train_time_s") or 0.0)
    return wall, train, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    extra = [f"--set={s}" for s in args.set]
    load = os.getloadavg()[0]
    print(f"# {args.rounds} rounds, interleaved; load average at start {load:.2f}")
    walls: dict[str, list[float]] = {name: [] for name in CASES}
    trains: dict[str, list[float]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory(prefix="aaf-bench-tuning-") as tmp:
        runs_dir = Path(tmp)
        for k in range(args.rounds):
            for name, case in CASES.items():
                wall, train, summary = aaf_run([*case, *extra], runs_dir)
                walls[name].append(wall)
                trains[name].append(train)
                tuning = summary.get("tuning") or {}
                chosen = tuning.get("chosen") or {}
                shown = ", ".join(f"{n} {r:.3g}" for n, r in chosen.items()) or "-"
                print(
                    f"round {k + 1} {name:16s} wall {wall:6.1f} s  training {train:6.1f} s  "
                    f"threads {summary['environment']['threads']}  chosen: {shown}",
                    flush=True,
                )
    off = statistics.median(trains["tune: off"])
    on = statistics.median(trains["tuned (default)"])
    wall_off = statistics.median(walls["tune: off"])
    wall_on = statistics.median(walls["tuned (default)"])
    print(f"median training: tune: off {off:.1f} s, tuned {on:.1f} s: {on / off:.2f}x")
    ratio = wall_on / wall_off
    print(f"median wall:     tune: off {wall_off:.1f} s, tuned {wall_on:.1f} s: {ratio:.2f}x")
    ok = on <= 2.0 * off
    print(f"acceptance (tuned training <= 2x): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
