"""Benchmark: the batched PINN loss against a per-model PyTorch loop, in one process.

A Burgers-sized PINN (2 inputs, tanh [2, 20, 20, 20, 20, 1], 2000 collocation points and 100
condition points, u_t + u u_x - nu u_xx): an ensemble of M models (half fixed, half GAAF n = 10,
paired by seed) trained by ``PinnLoss`` + the engine's optimiser, against the same M models
trained one after another as ``PlainMLP`` + ``torch.optim.Adam`` with the loss written out
(autograd on each model's own [N, 2] input). The ensemble trains through ``aaf_cli.train.train``
eagerly (reverse-mode derivatives, the default) and with ``train.compile: true`` (the whole
step compiled, forward-mode derivatives; the cold compile is timed apart). All are timed in
alternation (interleaved repeats), float32, and the median model-steps per second of each is
printed with its ratio to the loop.

    OMP_NUM_THREADS=1 python benchmarks/bench_pinn.py
    python benchmarks/bench_pinn.py --models 16 --steps 20 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from typing import Any

import torch
from pydantic import TypeAdapter

from aaf_cli.config import TrainConfig, Variant
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP
from aaf_cli.problems.pde import parse_pde
from aaf_cli.problems.pde.problem import PdeProblem, build_problem
from aaf_cli.problems.pde.training import PinnObjective
from aaf_cli.train import train

LAYERS = [2, 20, 20, 20, 20, 1]
BURGERS = {
    "inputs": {"x": [-1, 1], "t": [0, 1]},
    "operator": "u_t + u*u_x - nu*u_xx",
    "params": {"nu": 0.01 / math.pi},
    "conditions": [
        {"on": "t == 0", "value": "-sin(pi*x)", "points": 50},
        {"on": "x == -1 or x == 1", "value": "0", "points": 50},
    ],
    "collocation": {"points": 2000, "sampling": "lhs"},
    "reference": "burgers",
    "test_points": 100,
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ensemble(models: int, dtype: torch.dtype, device: str = "cpu") -> Groups:
    half = models // 2
    groups = []
    for kind, count in (("fixed", models - half), ("global", half)):
        if count:
            v: Any = TypeAdapter(Variant).validate_python(
                {"kind": kind, "n": 10} if kind == "global" else {"kind": kind}
            )
            specs = [ModelSpec(kind, s, kind, v) for s in range(count)]
            groups.append(Ensemble(LAYERS, kind, "tanh", specs, dtype=dtype, device=device))
    return Groups(groups)


class Batched:
    """The ensemble as ``aaf`` trains it: ``train`` with the PINN objective (the engine's loop,
    bookkeeping and optimiser); ``compiled``: ``train.compile: true``, the whole step compiled
    with forward-mode derivatives. Each timing trains a fresh ensemble for ``steps`` steps (the
    loss on the test grid is evaluated at its first and last step, as ``log_every = steps``
    does); the compiled step is compiled by the first timing (reported apart, with its warm-up
    steps) and reused by the later ones."""

    def __init__(
        self, problem: PdeProblem, models: int, dtype: torch.dtype, device: str, compiled: bool
    ) -> None:
        self.problem, self.models, self.dtype, self.device = problem, models, dtype, device
        self.compiled = compiled
        self.compile_s: float | None = None
        self.placeholder = torch.zeros(1, 1, dtype=dtype, device=device)  # gives the device

    def time(self, steps: int) -> float:
        model = ensemble(self.models, self.dtype, self.device)
        objective = PinnObjective(self.problem, model, self.dtype, torch.device(self.device))
        cfg = TrainConfig(lr=1e-3, steps=steps, log_every=steps, compile=self.compiled)
        x = self.placeholder
        result = train(model, x, x, x, x, cfg, objective=objective)
        if "compile_error" in result.extra:
            raise RuntimeError(f"compile_error: {result.extra['compile_error']}")
        if self.compiled and self.compile_s is None:
            self.compile_s = float(result.extra["compile_time_s"])
        return result.wall_time


def plain_models(
    problem: PdeProblem, models: int, dtype: torch.dtype, device: str = "cpu"
) -> tuple[list[PlainMLP], Any]:
    """The ensemble's models as ``PlainMLP`` s from the same start, and the Burgers loss of
    one of them written out (autograd on the model's own [N, 2] input)."""
    source = ensemble(models, dtype)
    nets = []
    for i in range(models):
        group, _ = source.locate(i)
        net = PlainMLP(LAYERS, group.kind, "tanh", source.members[i].spec, dtype=dtype)
        net.load_state_dict(source.state_dict_of(i))
        nets.append(net.to(device))
    col = problem.collocation.to(device, dtype)
    conditions = [
        (c.points.to(device, dtype), c.values.to(device, dtype)) for c in problem.conditions
    ]
    nu = problem.fixed_params["nu"]

    def loss(net: PlainMLP) -> torch.Tensor:
        x = col.clone().requires_grad_(True)
        u = net(x)[:, 0]
        (g,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        (gx,) = torch.autograd.grad(g[:, 0].sum(), x, create_graph=True)
        value = (g[:, 1] + u * g[:, 0] - nu * gx[:, 0]).square().mean()
        for points, values in conditions:
            value = value + (net(points)[:, 0] - values).square().mean()
        return value

    return nets, loss


def time_loop(
    problem: PdeProblem, models: int, steps: int, dtype: torch.dtype, device: str = "cpu"
) -> float:
    nets, pinn_loss = plain_models(problem, models, dtype, device)
    opts = [torch.optim.Adam(net.parameters(), lr=1e-3) for net in nets]
    sync(device)
    tic = time.perf_counter()
    for _ in range(steps):
        for net, opt in zip(nets, opts):
            loss = pinn_loss(net)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    sync(device)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip the compiled ensemble"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = build_problem(parse_pde(BURGERS))
    dtype = torch.float32
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s); PINN {LAYERS} tanh, "
        f"{problem.collocation.shape[0]} collocation + "
        f"{sum(c.points.shape[0] for c in problem.conditions)} condition points, float32, "
        f"{args.device}"
    )
    device, count, steps = args.device, args.models, args.steps
    eager = Batched(problem, count, dtype, device, compiled=False)
    compiled = Batched(problem, count, dtype, device, compiled=True) if args.compile else None
    eager.time(2)  # warm-up
    if compiled is not None:
        compiled.time(steps)  # compiles
    time_loop(problem, 2, 2, dtype, device)
    rates: dict[str, list[float]] = {"loop": [], "eager": [], "compiled": []}
    for _ in range(args.repeats):  # interleaved, so that load changes hit all alike
        rates["eager"].append(count * steps / eager.time(steps))
        if compiled is not None:
            rates["compiled"].append(count * steps / compiled.time(steps))
        rates["loop"].append(count * steps / time_loop(problem, count, steps, dtype, device))
    loop = statistics.median(rates["loop"])

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.0f}" for v in values)

    labels = {
        "eager": f"ensemble of {count}, eager (reverse-mode derivatives)",
        "compiled": f"ensemble of {count}, compile: true (forward mode)",
        "loop": "per-model loop (nn.Module + torch.optim.Adam, reverse mode)",
    }
    for key, values in rates.items():
        if values:
            rate = statistics.median(values)
            print(
                f"{labels[key]:<62} {rate:7.1f} model-steps/s  {rate / loop:5.2f}x the loop"
                f"  (runs: {runs(values)})"
            )
    if compiled is not None and compiled.compile_s is not None:
        print(f"cold compile (not in the rates): {compiled.compile_s:.1f} s")


if __name__ == "__main__":
    main()
