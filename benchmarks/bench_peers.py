"""Benchmark: aaf's engine against its peers on the same workload.

Workload: float32, 300 points of sin(4x) on [-3, 3], Adam (lr 1e-3), half the models fixed and
half global (n = 10), for [1,20,1] ELU and [1,50,50,50,50,1] tanh at several M. Each cell is
trained by

* ``loop``: one ``nn.Module`` + ``torch.optim.Adam`` per model, one after another (the first
  ``--loop-models`` models are timed and the rate scaled);
* ``eager``: aaf's engine (``Groups`` of ``Ensemble`` s and ``aaf_cli.train.train``), default mode;
* ``compiled``: the same with ``train.compile: true``, the whole step compiled (compile time
  reported apart); on CUDA also captured as a CUDA graph (``cuda_graph: auto``);
* ``graphs``: the eager step captured as a CUDA graph (``train.cuda_graph: true``; CUDA only);
* ``jax-jit``: an expert JAX ensemble (stacked parameters, optax.adam), the whole step jitted;
* ``jax-scan``: the same with ``lax.scan`` over 50 steps per call.

The methods run interleaved (every cell and method once per round, the order rotated from
round to round) and each figure is the median over the rounds, in model-steps per second. The
table gives the ratios eager / JAX jit+scan and compiled / JAX jit+scan, and the achieved
GFLOP/s (6 flops per weight and point per step) beside a large-matmul rate measured in the same
run. JAX is optional: ``pip install -e '.[bench]'`` (jax, optax from PyPI); without it those
columns are skipped.

    python -m benchmarks.bench_peers --quick            # ~1-2 min: fewer steps, no compile
    python -m benchmarks.bench_peers                    # docs/performance.md (several minutes)
    python -m benchmarks.bench_peers --device cuda --nets small --models 1024 4096 16384
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# aaf_cli first: it sets its OpenMP defaults (KMP_BLOCKTIME) before torch loads its runtime, as
# in `aaf run`; torch's own thread count is kept (every core), as a user of the engine gets it.
import aaf_cli  # noqa: F401

# isort: split
import torch

from aaf_cli.config import FixedVariant, GlobalVariant, TrainConfig
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP, init_weights
from aaf_cli.train import train

NETS = {
    "small": ([1, 20, 1], "elu"),
    "deep": ([1, 50, 50, 50, 50, 1], "tanh"),
}
POINTS = 300
LR = 1e-3
N_SCALE = 10.0
SCAN = 50  # steps per lax.scan call
FIXED = FixedVariant(kind="fixed")
ADAPTIVE = GlobalVariant(kind="global", name="adaptive", n=N_SCALE)


def specs(models: int) -> list[ModelSpec]:
    """Half fixed, half global (n = 10), paired by seed; fixed first, as the engine groups."""
    half = models // 2
    fixed = [ModelSpec("fixed", s, "fixed", FIXED) for s in range(models - half)]
    return fixed + [ModelSpec("adaptive", s, "global", ADAPTIVE) for s in range(half)]


def data(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-3, 3, POINTS, device=device).unsqueeze(-1)
    return x, torch.sin(4 * x)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Timing:
    rate: float  # model-steps per second
    setup: float = 0.0  # compile / capture seconds, not in the rate


def run_loop(
    members: Sequence[ModelSpec], layers: list[int], act: str, steps: int, device: str
) -> Timing:
    x, y = data(device)
    elapsed = 0.0
    for m in members:
        net = PlainMLP(layers, m.kind, act, m.spec, dtype=torch.float32)
        net.load_init(init_weights(layers, m.seed)).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        sync(device)
        tic = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        sync(device)
        elapsed += time.perf_counter() - tic
    return Timing(len(members) * steps / elapsed)


def build(members: Sequence[ModelSpec], layers: list[int], act: str, device: str) -> Groups:
    groups: dict[str, list[ModelSpec]] = {}
    for m in members:
        groups.setdefault(m.kind, []).append(m)
    return Groups(
        [
            Ensemble(layers, kind, act, g, dtype=torch.float32, device=device)
            for kind, g in groups.items()
        ]
    )


def run_aaf(
    members: Sequence[ModelSpec],
    layers: list[int],
    act: str,
    steps: int,
    device: str,
    **options: Any,
) -> Timing:
    """aaf's engine through ``train``; ``options`` are TrainConfig fields (compile, cuda_graph)."""
    model = build(members, layers, act, device)
    x, y = data(device)
    cfg = TrainConfig(steps=steps, log_every=steps, lr=LR, **options)
    result = train(model, x, y, x, y, cfg)
    for key in ("compile_error", "cuda_graph_error"):
        if key in result.extra:
            raise RuntimeError(f"{key}: {result.extra[key]}")
    setup = float(result.extra.get("compile_time_s", 0.0)) + float(
        result.extra.get("cuda_graph_time_s", 0.0)
    )
    return Timing(len(members) * steps / result.wall_time, setup)


# ------------------------------------------------------------------------------------------
# The JAX peer: what an expert writes for an ensemble of this shape.


def jax_available() -> bool:
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class JaxCell:
    step: Callable[..., Any]
    scan: Callable[..., Any]
    state: Any
    compile_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def make_jax(members: Sequence[ModelSpec], layers: list[int], act: str) -> JaxCell:
    import jax
    import jax.numpy as jnp
    import optax

    fn = {"elu": jax.nn.elu, "tanh": jnp.tanh}[act]
    x = jnp.linspace(-3, 3, POINTS, dtype=jnp.float32)[:, None]
    y = jnp.sin(4 * x)

    def stacked(seeds: Sequence[int]) -> list[tuple[Any, Any]]:
        inits = [init_weights(layers, s) for s in seeds]
        return [
            (
                jnp.asarray(torch.stack([w[k][0].T for w in inits]).float().numpy()),
                jnp.asarray(torch.stack([w[k][1] for w in inits]).unsqueeze(1).float().numpy()),
            )
            for k in range(len(layers) - 1)
        ]

    fixed = [m.seed for m in members if m.kind == "fixed"]
    adaptive = [m.seed for m in members if m.kind == "global"]
    params = {
        "fixed": stacked(fixed),
        "global": stacked(adaptive),
        "a": jnp.full((len(adaptive), 1, 1), 1.0 / N_SCALE, dtype=jnp.float32),
    }

    def net(layer_params: list[tuple[Any, Any]], scale: Any) -> Any:
        h = x[None]  # [1, N, 1]
        for w, b in layer_params[:-1]:
            h = fn(scale * (h @ w + b))
        w, b = layer_params[-1]
        return h @ w + b  # [M, N, 1]

    def loss_fn(p: Any) -> Any:
        mse_f = ((net(p["fixed"], 1.0) - y) ** 2).mean(axis=(1, 2)).sum()
        mse_g = ((net(p["global"], N_SCALE * p["a"]) - y) ** 2).mean(axis=(1, 2)).sum()
        return mse_f + mse_g

    opt = optax.adam(LR)

    def step(p: Any, s: Any) -> tuple[Any, Any]:
        grads = jax.grad(loss_fn)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    def many(p: Any, s: Any) -> tuple[Any, Any]:
        def body(carry: Any, _: Any) -> tuple[Any, None]:
            return step(*carry), None

        carry, _ = jax.lax.scan(body, (p, s), None, length=SCAN)
        return carry  # type: ignore[no-any-return]

    jstep, jscan = jax.jit(step), jax.jit(many)
    state = (params, opt.init(params))
    tic = time.perf_counter()
    jax.block_until_ready(jstep(*state))
    jax.block_until_ready(jscan(*state))
    return JaxCell(jstep, jscan, state, time.perf_counter() - tic)


def run_jax(cell: JaxCell, models: int, steps: int, scan: bool) -> Timing:
    import jax

    p, s = cell.state
    tic = time.perf_counter()
    if scan:
        for _ in range(max(1, steps // SCAN)):
            p, s = cell.scan(p, s)
        done = max(1, steps // SCAN) * SCAN
    else:
        for _ in range(steps):
            p, s = cell.step(p, s)
        done = steps
    jax.block_until_ready(p)
    return Timing(models * done / (time.perf_counter() - tic))


# ------------------------------------------------------------------------------------------


def matmul_gflops(device: str, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    sync(device)
    tic = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def flops_per_model_step(layers: list[int]) -> float:
    """Forward 2, backward 4 flops per weight and point."""
    return 6.0 * POINTS * sum(i * o for i, o in zip(layers[:-1], layers[1:]))


MEMORY_PROBE = """
import resource, sys, torch
from aaf_cli.api import load_config
from aaf_cli.budget import estimate
from aaf_cli.experiment import build_ensemble, make_dataset
from aaf_cli.train import train

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0

cfg = load_config(None, ["seeds=%d", "train.steps=%d", "device=%s"])
device = torch.device(cfg.device if cfg.device != "auto" else "cpu")
before = rss("VmRSS:")
data = make_dataset(cfg, device)
model = build_ensemble(cfg, device)
train(model, data.x_train, data.y_train, data.x_test, data.y_test, cfg.train)
peak = rss("VmHWM:") - before
if device.type == "cuda":
    peak = torch.cuda.max_memory_allocated()
print(estimate(cfg, device.type).memory_bytes, peak)
"""


def memory_check(models: Sequence[int], device: str, steps: int = 50) -> None:
    """``aaf validate``'s memory estimate against the measured peak for the default experiment
    (half fixed, half adaptive) at these M: the peak RSS growth of a fresh process over its RSS
    before the data and models were made (CUDA: ``torch.cuda.max_memory_allocated``)."""
    import subprocess
    import sys

    print(f"\nmemory: aaf validate's estimate vs measured peak (default experiment, {steps} steps)")
    print("| M | estimate | measured peak | measured / estimate |")
    print("|---:|---:|---:|---:|")
    for m in models:
        code = MEMORY_PROBE % (m // 2, steps, device)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        est, peak = float(out[-2]), float(out[-1])
        print(
            f"| {m} | {est / 2**20:.1f} MiB | {peak / 2**20:.1f} MiB | {peak / est:.2f} |",
            flush=True,
        )


COLUMNS = {
    "loop": "loop",
    "eager": "aaf eager",
    "compiled": "aaf compile",
    "graphs": "aaf graphs",
    "jax-jit": "JAX jit",
    "jax-scan": "JAX jit+scan",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer steps and no compiled column (~1-2 min on 2 cores)",
    )
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument(
        "--models",
        type=int,
        nargs="+",
        default=[16, 64, 256],
        help="M for the small net (and the deep one unless --deep-models)",
    )
    parser.add_argument("--deep-models", type=int, nargs="+", default=None)
    parser.add_argument(
        "--steps", type=int, default=None, help="small net (default 500, quick 200)"
    )
    parser.add_argument(
        "--deep-steps", type=int, default=None, help="deep net (default 150, quick 50)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats (median)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=list(COLUMNS),
        help="default: loop eager compiled jax-jit jax-scan (quick: no compiled;"
        " cuda: graphs instead of JAX)",
    )
    parser.add_argument(
        "--loop-models",
        type=int,
        default=8,
        help="time only this many models of the per-model loop and scale",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--memory",
        type=int,
        nargs="*",
        default=None,
        metavar="M",
        help="only compare the memory estimate with the measured peak at these M (default 16 1024)",
    )
    args = parser.parse_args(argv)
    if args.memory is not None:
        memory_check(args.memory or [16, 1024], args.device)
        return

    steps = {
        "small": args.steps or (200 if args.quick else 500),
        "deep": args.deep_steps or (50 if args.quick else 150),
    }
    cuda = args.device.startswith("cuda")
    methods = args.methods or (
        ["loop", "eager", "compiled", "graphs"]
        if cuda
        else ["loop", "eager", *([] if args.quick else ["compiled"]), "jax-jit", "jax-scan"]
    )
    if any(m.startswith("jax") for m in methods) and not jax_available():
        print(
            "JAX not installed: `pip install -e '.[bench]'` (jax, optax) adds the JAX columns;"
            " skipping them"
        )
        methods = [m for m in methods if not m.startswith("jax")]
    cells = [
        (net, m)
        for net in args.nets
        for m in (args.deep_models or args.models if net == "deep" else args.models)
    ]

    peak = matmul_gflops(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = f", {torch.cuda.get_device_name()}" if cuda else ""
    print(
        f"machine: {platform.machine()} ({os.cpu_count()} cores, load {load:.2f}){gpu}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}"
    )
    print(
        f"large-matmul (2048^2, float32): {peak:.1f} GFLOP/s; steps small {steps['small']}, "
        f"deep {steps['deep']}; median of {args.rounds} interleaved rounds",
        flush=True,
    )

    jax_cells: dict[tuple[str, int], JaxCell] = {}
    results: dict[tuple[str, int, str], list[Timing]] = {}
    for r in range(args.rounds):
        for net, models in cells:
            layers, act = NETS[net]
            members = specs(models)
            n = steps[net]
            order = methods[r % len(methods) :] + methods[: r % len(methods)]
            for method in order:
                if method == "loop":
                    t = run_loop(members[: args.loop_models], layers, act, n, args.device)
                elif method == "eager":
                    t = run_aaf(
                        members, layers, act, n, args.device, compile=False, cuda_graph=False
                    )
                elif method == "compiled":
                    t = run_aaf(members, layers, act, n, args.device, compile=True)
                elif method == "graphs":
                    t = run_aaf(members, layers, act, n, args.device, cuda_graph=True)
                else:
                    if (net, models) not in jax_cells:
                        jax_cells[net, models] = make_jax(members, layers, act)
                    cell = jax_cells[net, models]
                    t = run_jax(cell, models, n, scan=method == "jax-scan")
                    t.setup = cell.compile_s
                results.setdefault((net, models, method), []).append(t)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    # On CUDA the compiled step is also captured as a CUDA graph (cuda_graph: auto).
    columns = {**COLUMNS, "compiled": "aaf compile+graph"} if cuda else COLUMNS
    print_table(results, cells, methods, peak, columns)


def print_table(
    results: dict[tuple[str, int, str], list[Timing]],
    cells: list[tuple[str, int]],
    methods: list[str],
    peak: float,
    columns: dict[str, str] = COLUMNS,
) -> None:
    ref = next(m for m in ("jax-scan", "loop", "eager", *methods) if m in methods)
    heads = [columns[m] for m in methods]
    ratios = [m for m in ("eager", "compiled", "graphs") if m in methods and m != ref]
    print(
        f"\nmodel-steps per second (median); ratios against {columns[ref]}; GFLOP/s of the "
        f"best aaf mode vs {peak:.0f} large-matmul"
    )
    print(
        "| net | M | "
        + " | ".join(heads)
        + "".join(f" | {columns[m]} / {columns[ref]}" for m in ratios)
        + " | aaf GFLOP/s (% of matmul) |"
    )
    print("|---|---:|" + "---:|" * (len(heads) + len(ratios) + 1))
    setups: list[str] = []
    for net, models in cells:
        layers, act = NETS[net]
        rate = {m: statistics.median(t.rate for t in results[net, models, m]) for m in methods}
        row = [f"{rate[m]:,.0f}".replace(",", " ") for m in methods]
        row += [f"{rate[m] / rate[ref]:.2f}" for m in ratios]
        best = max(rate[m] for m in ("eager", "compiled", "graphs") if m in rate)
        gflops = best * flops_per_model_step(layers) / 1e9
        row.append(f"{gflops:.1f} ({100 * gflops / peak:.0f}%)")
        print(f"| {layers} {act} | {models} | " + " | ".join(row) + " |")
        for m in methods:
            if m == "jax-jit":
                continue  # one compile per cell, reported under jax-scan (jit + scan)
            times = [t.setup for t in results[net, models, m] if t.setup]
            if times:
                setups.append(
                    f"{net} M={models} {m}: first {times[0]:.1f} s, "
                    f"later {statistics.median(times[1:] or times):.1f} s"
                )
    if setups:
        print("\ncompile/capture time (not in the rates):\n  " + "\n  ".join(setups))


if __name__ == "__main__":
    main()
