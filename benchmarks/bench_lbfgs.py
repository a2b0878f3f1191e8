"""Benchmark: batched L-BFGS on a PINN ensemble against a per-model ``torch.optim.LBFGS`` loop.

The Burgers PINN of ``bench_pinn.py`` (tanh [2, 20, 20, 20, 20, 1], 2000 collocation and 100
condition points, float32): M models (half fixed, half GAAF n = 10, paired by seed) run the
same number of L-BFGS iterations (strong Wolfe line search, history 100; tolerance_grad 0 and
tolerance_change 1e-12, so that no model stops early)

* ``loop``: each model a ``PlainMLP`` with its own ``torch.optim.LBFGS(max_iter=iterations,
  line_search_fn="strong_wolfe")``, one ``step(closure)`` per model, one model after another;
* ``eager``: aaf's engine, ``train`` with ``train.optimizer: lbfgs`` (one batched evaluation
  per round of every model's trial point; reverse-mode derivatives);
* ``compiled``: the same with ``train.compile: true`` (the evaluation compiled with
  forward-mode derivatives; the cold compile is reported apart).

Each figure is model-iterations per second, the median over interleaved repeats (every method
once per round, so that a change of load hits all alike), with the ratio to the loop, the
function evaluations per model-iteration (each model's own line search: the same count in the
batched run and the loop) and, for the ensemble, its batched evaluations per iteration (a
model does not wait for the others, so these are the slowest model's evaluations: a batched
evaluation of a model that has finished its iterations is wasted).

    python benchmarks/bench_lbfgs.py                          # docs/performance.md
    python benchmarks/bench_lbfgs.py --models 16 --iterations 30 --repeats 3 --threads 2
    python -m benchmarks.bench_lbfgs --device cuda --models 64     # benchmarks/gpu_check.sh
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

# aaf_cli first: it sets its OpenMP defaults before torch loads its runtime, as in `aaf run`.
import aaf_cli  # noqa: F401

# isort: split
import torch

from aaf_cli.config import TrainConfig
from aaf_cli.models import PlainMLP
from aaf_cli.problems.pde import parse_pde
from aaf_cli.problems.pde.problem import PdeProblem, build_problem
from aaf_cli.problems.pde.training import PinnObjective
from aaf_cli.train import train
from benchmarks.bench_pinn import BURGERS, LAYERS, ensemble, plain_models

DTYPE = torch.float32


def time_batched(
    problem: PdeProblem, models: int, iterations: int, compiled: bool, device: str = "cpu"
) -> tuple[float, float, float | None, float]:
    """(seconds, evaluations per model-iteration, compile seconds, batched evaluations per
    iteration) of one batched run."""
    model = ensemble(models, DTYPE, device)
    objective = PinnObjective(problem, model, DTYPE, torch.device(device))
    cfg = TrainConfig(
        optimizer="lbfgs",
        steps=iterations,
        log_every=iterations,
        tolerance_grad=0.0,
        tolerance_change=1e-12,
        max_evals=100 * iterations,
        compile=compiled,
    )
    x = torch.zeros(1, 1, dtype=DTYPE, device=device)
    result = train(model, x, x, x, x, cfg, objective=objective)
    if "compile_error" in result.extra:
        raise RuntimeError(f"compile_error: {result.extra['compile_error']}")
    last = result.records[-1]
    assert last.evals is not None
    compile_s = result.extra.get("compile_time_s")
    return (
        result.wall_time,
        float(last.evals.double().mean()) / iterations,
        None if compile_s is None else float(compile_s),
        float(result.extra["lbfgs_rounds"]) / iterations,
    )


def time_loop(
    problem: PdeProblem, models: int, iterations: int, device: str = "cpu"
) -> tuple[float, float]:
    """(seconds, evaluations per model-iteration) of the per-model torch.optim.LBFGS loop."""
    nets, pinn_loss = plain_models(problem, models, DTYPE, device)
    calls = 0
    tic = time.perf_counter()
    for net in nets:
        opt = torch.optim.LBFGS(
            net.parameters(),
            max_iter=iterations,
            max_eval=100 * iterations,
            tolerance_grad=0.0,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )

        def closure(net: PlainMLP = net, opt: torch.optim.LBFGS = opt) -> torch.Tensor:
            nonlocal calls
            calls += 1
            loss = pinn_loss(net)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        opt.step(closure)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - tic, calls / (models * iterations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip the compiled ensemble"
    )
    args = parser.parse_args()
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = build_problem(parse_pde(BURGERS))
    count, iterations = args.models, args.iterations
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s); PINN {LAYERS} tanh, "
        f"{problem.collocation.shape[0]} collocation + "
        f"{sum(c.points.shape[0] for c in problem.conditions)} condition points, float32; "
        f"{count} models x {iterations} L-BFGS iterations (strong Wolfe), {device}"
    )
    time_batched(problem, count, 2, False, device)  # warm-up
    compile_s = None
    if args.compile:
        compile_s = time_batched(problem, count, 2, True, device)[2]  # compiles
    time_loop(problem, 2, 2, device)
    rates: dict[str, list[float]] = {"loop": [], "eager": [], "compiled": []}
    evals: dict[str, list[float]] = {"loop": [], "eager": [], "compiled": []}
    rounds: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):  # interleaved
        for key in ("eager", "compiled") if args.compile else ("eager",):
            seconds, per, _, batched = time_batched(
                problem, count, iterations, key == "compiled", device
            )
            rates[key].append(count * iterations / seconds)
            evals[key].append(per)
            rounds[key].append(batched)
        seconds, per = time_loop(problem, count, iterations, device)
        rates["loop"].append(count * iterations / seconds)
        evals["loop"].append(per)
    loop = statistics.median(rates["loop"])
    labels = {
        "eager": f"ensemble of {count}, batched L-BFGS, eager",
        "compiled": f"ensemble of {count}, batched L-BFGS, compile: true",
        "loop": "per-model loop (nn.Module + torch.optim.LBFGS)",
    }
    for key, values in rates.items():
        if values:
            rate = statistics.median(values)
            runs = ", ".join(f"{v:.1f}" for v in values)
            batched = f", {statistics.median(rounds[key]):.2f} batched" if rounds.get(key) else ""
            print(
                f"{labels[key]:<50} {rate:7.1f} model-iterations/s  {rate / loop:5.2f}x the "
                f"loop  ({statistics.median(evals[key]):.2f} evaluations per iteration"
                f"{batched}; runs: {runs})"
            )
    if compile_s is not None:
        print(f"cold compile (not in the rates): {compile_s:.1f} s")


if __name__ == "__main__":
    main()
