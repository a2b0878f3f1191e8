"""Benchmark: a sweep packed into one ensemble, against its points run one after another, and
on Ray.

Times whole ``aaf sweep -q`` commands of the installed package (wall clock: start-up, every
point's run folder and figures, points.csv and sweep.png included), interleaved and repeated:

* ``shell loop``: one ``aaf run -q`` per point, one after another: what a user without
  ``aaf sweep`` does (each pays the interpreter start-up and its imports);
* ``sequential``: ``--no-pack``, each point its own experiment, one after another in one
  process (the shell loop less its start-ups);
* ``packed``: the default, the points trained as one ensemble and split back;
* ``ray``: ``--executor ray`` on a Ray instance the sweep starts on this machine (when
  ``aaf[ray]`` is installed), packed jobs as Ray tasks;
* ``ray 2 nodes``: ``--executor ray --ray-address`` of a two-node cluster (one CPU each)
  started on this machine before the rounds, as a user's cluster runs before their sweep:
  every node checked, the packs split over the nodes, folders written while the other node
  trains.

The default workload: a 5 (n) x 4 (lr) grid of the default experiment, 5 seeds,
2000 steps. Acceptance: packed >= 4x faster than the same points run one after another; Ray
within 1.5x of packed. Both "one after another" rows are printed. It also checks that all give
the same final test MSE per point and variant, and reports the training time apart (each job's
``train_time_s`` once): the rest is start-up, checks and writing each point's folder, which
packing does not change (it only writes them in parallel, one process per core).

    python benchmarks/bench_sweep.py                # the workload above, 2 rounds
    python benchmarks/bench_sweep.py --quick        # 300 steps, 1 round
    python benchmarks/bench_sweep.py --cases packed,"ray 2 nodes"
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_VALUES = ["1", "2", "5", "10", "20"]
LR_VALUES = ["3e-4", "1e-3", "3e-3", "1e-2"]
GRID = ["--grid", f"variants.1.n={','.join(N_VALUES)}", "--grid", f"train.lr={','.join(LR_VALUES)}"]


def aaf_sweep(extra: list[str], runs_dir: Path, steps: int, seeds: int) -> tuple[float, Path]:
    """(wall seconds, sweep folder) of one ``aaf sweep -q`` of the default experiment."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    tic = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "aaf_cli", "sweep", *GRID, "--set", f"seeds={seeds}",
         "--set", f"train.steps={steps}", "--runs-dir", str(runs_dir), "-q", *extra],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return time.perf_counter() - tic, Path(out.stdout.strip().splitlines()[-1])


def start_cluster(temp: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """A head and a worker node of one CPU each on this machine (``ray start --block``, no
    token: loopback only); their address and processes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    ray = str(Path(sys.executable).with_name("ray"))
    nodes = []
    for k, args in enumerate(
        [["--head", "--port", str(port), "--include-dashboard", "false"],
         ["--address", f"127.0.0.1:{port}"]]
    ):  # fmt: skip
        folder = temp / f"node{k}"
        folder.mkdir()
        log = folder / "start.log"
        nodes.append(
            subprocess.Popen(
                [
                    ray,
                    "start",
                    "--block",
                    "--num-cpus",
                    "1",
                    "--node-ip-address",
                    "127.0.0.1",
                    "--temp-dir",
                    str(folder),
                    "--disable-usage-stats",
                    *args,
                ],
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        deadline = time.monotonic() + 120
        while b"block forever" not in log.read_bytes():
            if nodes[-1].poll() is not None or time.monotonic() > deadline:
                stop_cluster(nodes)
                raise SystemExit(f"ray start failed: {log.read_text()}")
            time.sleep(0.1)
    return f"127.0.0.1:{port}", nodes


def stop_cluster(nodes: list[subprocess.Popen[bytes]]) -> None:
    for node in nodes:
        node.terminate()
    for node in nodes:
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def shell_loop(
    runs_dir: Path, steps: int, seeds: int
) -> tuple[float, dict[tuple[str, str], float], float]:
    """(wall seconds, geometric-mean final test MSE per (point, variant), training seconds) of one
    ``aaf run -q`` per grid point, one after another, numbered as the sweep numbers them."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out: dict[tuple[str, str], float] = {}
    trained = 0.0
    tic = time.perf_counter()
    for index, (n, lr) in enumerate((n, lr) for n in N_VALUES for lr in LR_VALUES):
        done = subprocess.run(
            [sys.executable, "-m", "aaf_cli", "run", "--set", f"variants.1.n={n}",
             "--set", f"train.lr={lr}", "--set", f"seeds={seeds}", "--set",
             f"train.steps={steps}", "--runs-dir", str(runs_dir), "-q"],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        summary = json.loads(
            (Path(done.stdout.strip().splitlines()[-1]) / "summary.json").read_text()
        )
        trained += float(summary["train_time_s"])
        for name, entry in summary["variants"].items():
            out[(str(index), name)] = float(entry["final_test"]["geomean"])
    return time.perf_counter() - tic, out, trained


def finals(folder: Path) -> dict[tuple[str, str], float]:
    """Geometric-mean final test MSE per (point, variant) from points.csv."""
    with (folder / "points.csv").open(newline="") as fh:
        fh.readline()  # the format line
        return {
            (row["point"], row["variant"]): float(row["final_test_geomean"])
            for row in csv.DictReader(fh)
        }


def training_seconds(folder: Path) -> float:
    """Training time of a sweep: each job's once (a packed job's points share theirs)."""
    jobs: dict[str, float] = {}
    for summary in folder.glob("points/*/summary.json"):
        data = json.loads(summary.read_text())
        packed = data.get("packed")
        key = json.dumps(packed["with"]) if packed else summary.parent.name
        jobs[key] = float(packed["train_time_s"] if packed else data["train_time_s"])
    return sum(jobs.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="300 steps, 1 round")
    parser.add_argument("--no-ray", action="store_true", help="leave the Ray executor out")
    parser.add_argument("--cases", help="comma-separated cases to run (default: all)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 300, 1
    cases: dict[str, list[str] | None] = {
        "shell loop": None,
        "sequential": ["--no-pack"],
        "packed": [],
    }
    if not args.no_ray:
        if importlib.util.find_spec("ray") is None:
            print("ray: not installed, left out (pip install 'aaf[ray]')")
        else:
            cases["ray"] = ["--executor", "ray"]
            cases["ray 2 nodes"] = ["--executor", "ray", "--ray-address", "(cluster)"]
    if args.cases:
        wanted = args.cases.split(",")
        cases = {k: v for k, v in cases.items() if k in wanted or k == "packed"}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the benchmark's own cluster has no token
    times: dict[str, list[float]] = {name: [] for name in cases}
    training: dict[str, list[float]] = {name: [] for name in cases}
    results: dict[str, dict[tuple[str, str], float]] = {}
    print(
        f"5 x 4 grid (variants.1.n x train.lr) of the default experiment, {args.seeds} seeds, "
        f"{args.steps} steps; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="aaf-bench-", dir="/tmp") as tmp:
        nodes: list[subprocess.Popen[bytes]] = []
        if "ray 2 nodes" in cases:
            address, nodes = start_cluster(Path(tmp))
            cases["ray 2 nodes"] = ["--executor", "ray", "--ray-address", address]
        try:
            run_rounds(args, cases, times, training, results, Path(tmp))
        finally:
            stop_cluster(nodes)
        ref = "sequential" if "sequential" in results else "packed"
        reference = results[ref]
        for name, got in results.items():
            assert got.keys() == reference.keys(), f"{name}: other points than {ref}"
            worst = max(abs(got[k] - v) / abs(v) for k, v in reference.items())
            print(f"  {name}: largest relative difference of a final test MSE vs {ref} "
                  f"{worst:.1e}")  # fmt: skip
    median = {name: statistics.median(t) for name, t in times.items()}
    trained = {name: statistics.median(t) for name, t in training.items()}
    print(
        "\n| how | median wall (s) | packed is faster by | training (s) | packed trains faster by |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, seconds in median.items():
        print(
            f"| {name} | {seconds:.1f} | {seconds / median['packed']:.2f}x | "
            f"{trained[name]:.1f} | {trained[name] / trained['packed']:.2f}x |"
        )


def run_rounds(
    args: argparse.Namespace,
    cases: dict[str, list[str] | None],
    times: dict[str, list[float]],
    training: dict[str, list[float]],
    results: dict[str, dict[tuple[str, str], float]],
    tmp: Path,
) -> None:
    """The rounds: every case once per round, interleaved."""
    for r in range(args.rounds):
        for name, extra in cases.items():
            runs_dir = tmp / f"{name.replace(' ', '_')}{r}"
            if extra is None:
                wall, results[name], trained = shell_loop(runs_dir, args.steps, args.seeds)
            else:
                wall, folder = aaf_sweep(extra, runs_dir, args.steps, args.seeds)
                results[name], trained = finals(folder), training_seconds(folder)
            times[name].append(wall)
            training[name].append(trained)
            print(
                f"  round {r}: {name:<10} {wall:7.1f} s, of which training "
                f"{training[name][-1]:5.1f} s  (load {os.getloadavg()[0]:.2f})"
            )


if __name__ == "__main__":
    main()
