"""Benchmark: aaf's batched engine against a plain per-model PyTorch loop, in one process.

For each case (M models of one network on 300 points) it
1. checks that the engine reproduces the per-model loop's loss trajectories (float64, to float
   tolerance), then
2. times both in float32: (a) ``nn.Linear`` layers + the activation + ``torch.optim.Adam``,
   one model after another; (b) the engine, all M models at once,
and prints model-steps per second, the ratio, and achieved GFLOP/s beside this machine's
large-matmul GFLOP/s. Compile time (``--compile``) is printed apart and not counted.

    python benchmarks/bench_engine.py                # the table in docs/performance.md
    python benchmarks/bench_engine.py --device cuda --models 1024 --nets small
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Sequence

import torch
from pydantic import TypeAdapter

from aaf_cli.config import FixedVariant, GlobalVariant, TrainConfig, Variant
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP, init_weights
from aaf_cli.train import train

FIXED = FixedVariant(kind="fixed")
ADAPTIVE = GlobalVariant(kind="global", name="adaptive", n=10.0)

NETS = {
    "small": ([1, 20, 1], "elu"),  # the write-up's network
    "deep": ([1, 50, 50, 50, 50, 1], "tanh"),  # the papers' network
}
POINTS = 300


def specs(models: int, kind: str = "mixed") -> list[ModelSpec]:
    """``mixed``: half fixed, half global (n = 10), paired by seed, fixed first as the engine
    groups them; otherwise M models of one kind with its default settings."""
    if kind == "mixed":
        half = models // 2
        fixed = [ModelSpec("fixed", s, "fixed", FIXED) for s in range(models - half)]
        return fixed + [ModelSpec("adaptive", s, "global", ADAPTIVE) for s in range(half)]
    variant = TypeAdapter(Variant).validate_python({"kind": kind})
    return [ModelSpec(kind, s, kind, variant) for s in range(models)]


def data(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-3, 3, POINTS, dtype=dtype, device=device).unsqueeze(-1)
    return x, torch.sin(4 * x)


def plain_loop(
    members: Sequence[ModelSpec],
    layers: list[int],
    act: str,
    steps: int,
    device: str,
    dtype: torch.dtype,
    record: bool = False,
) -> tuple[float, list[list[float]]]:
    """(a): one nn.Module and one torch.optim.Adam per model, trained one after another."""
    x, y = data(device, dtype)
    histories = []
    elapsed = 0.0
    for m in members:
        net = PlainMLP(layers, m.kind, act, m.spec, dtype=dtype)
        net.load_init(init_weights(layers, m.seed)).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        losses = []
        _sync(device)
        tic = time.perf_counter()
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(net(x), y)
            if record:
                losses.append(loss.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        elapsed += time.perf_counter() - tic
        histories.append(losses)
    return elapsed, histories


def engine(
    members: Sequence[ModelSpec],
    layers: list[int],
    act: str,
    steps: int,
    device: str,
    dtype: torch.dtype,
    compile_: bool = False,
    record: bool = False,
) -> tuple[float, float, list[list[float]]]:
    """(b): the project's batched engine; returns (train seconds, compile seconds, histories)."""
    x, y = data(device, dtype)
    groups: dict[str, list[ModelSpec]] = {}
    for m in members:
        groups.setdefault(m.kind, []).append(m)
    model = Groups(
        [Ensemble(layers, kind, act, g, dtype=dtype, device=device) for kind, g in groups.items()]
    )
    assert model.members == list(members)
    cfg = TrainConfig(steps=steps, log_every=1 if record else steps, compile=compile_)
    result = train(model, x, y, x, y, cfg)
    histories = [[r.train_loss[i].item() for r in result.records[:-1]] for i in range(len(members))]
    compile_time = float(result.extra.get("compile_time_s", 0.0))
    return result.wall_time, compile_time, histories if record else []


def check_equivalence(
    layers: list[int], act: str, device: str, models: int = 4, kind: str = "mixed"
) -> float:
    """Largest relative difference of the loss trajectories over 100 steps in float64."""
    members = specs(models, kind)
    _, ref = plain_loop(members, layers, act, 100, device, torch.float64, record=True)
    _, _, got = engine(members, layers, act, 100, device, torch.float64, record=True)
    worst = 0.0
    for a, b in zip(ref, got):
        for u, v in zip(a, b):
            worst = max(worst, abs(u - v) / max(abs(u), 1e-300))
    if worst > 1e-9:
        raise SystemExit(f"engine disagrees with the per-model loop: relative error {worst:.2e}")
    return worst


def matmul_gflops(device: str, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    tic = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def flops_per_model_step(layers: list[int]) -> float:
    """Forward 2, backward 4 multiply-adds per weight and point."""
    return 6.0 * POINTS * sum(i * o for i, o in zip(layers[:-1], layers[1:]))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time the compiled engine")
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["mixed"],
        help="mixed (half fixed, half global; the docs' table) or kinds: global layer neuron "
        "rowdy prelu swish rational",
    )
    parser.add_argument(
        "--loop-models",
        type=int,
        default=0,
        help="time only this many models of the per-model loop and scale (0: all)",
    )
    args = parser.parse_args()

    peak = matmul_gflops(args.device)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"device {args.device}, threads {torch.get_num_threads()}"
    )
    print(f"large-matmul (2048^2, float32): {peak:.1f} GFLOP/s")
    header = (
        f"{'net':<24}{'M':>6}{'loop ms/s':>12}{'engine ms/s':>13}{'ratio':>8}{'engine GFLOP/s':>16}"
    )
    if args.compile:
        header += f"{'compiled ms/s':>15}{'ratio':>8}{'compile s':>11}"
    for kind in args.kinds:
        for net in args.nets:
            run_case(args, kind, net, header)


def run_case(args: argparse.Namespace, kind: str, net: str, header: str) -> None:
    layers, act = NETS[net]
    worst = check_equivalence(layers, act, args.device, kind=kind)
    print(
        f"\n{kind}, {net} {layers} {act}: engine == per-model loop (float64, 100 steps, "
        f"max rel. diff {worst:.1e})"
    )
    print(header)
    for models in args.models:
        members = specs(models, kind)
        timed = members[: args.loop_models] if args.loop_models else members
        loop_s, _ = plain_loop(timed, layers, act, args.steps, args.device, torch.float32)
        loop_rate = len(timed) * args.steps / loop_s
        eng_s, _, _ = engine(members, layers, act, args.steps, args.device, torch.float32)
        eng_rate = models * args.steps / eng_s
        gflops = eng_rate * flops_per_model_step(layers) / 1e9
        line = (
            f"{layers!s:<24}{models:>6}{loop_rate:>12.0f}{eng_rate:>13.0f}"
            f"{eng_rate / loop_rate:>7.1f}x{gflops:>16.2f}"
        )
        if args.compile:
            comp_s, comp_t, _ = engine(
                members, layers, act, args.steps, args.device, torch.float32, compile_=True
            )
            comp_rate = models * args.steps / comp_s
            line += f"{comp_rate:>15.0f}{comp_rate / loop_rate:>7.1f}x{comp_t:>11.1f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
