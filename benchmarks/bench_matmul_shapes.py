"""Benchmark: how fast batched matrix products of a width-20 PINN's layers run on this CPU.

The compiled PINN step of benchmarks/bench_pinn.py spends about half its time in products of
the shape ``[M, 8100, 20] @ [M, 20, 20]`` (values and three derivative streams of 2000-2100
points, 20 features). This prints their GFLOP/s against M (cache effects: one model's
operands fit in L2, sixteen's do not), in both layouts (points-major ``S @ W`` as the engine
uses, features-major ``W^T @ S``), beside an elementwise ``tanh`` rate and a large product.

    python benchmarks/bench_matmul_shapes.py --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

POINTS, WIDTH = 8100, 20


def seconds(fn: Callable[[], object], repeats: int = 100) -> float:
    for _ in range(3):
        fn()
    tic = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - tic) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(1024, 1024, generator=gen)
    peak = 2 * 1024**3 / seconds(lambda: big @ big, 20) / 1e9
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); large product (1024^2): "
        f"{peak:.0f} GFLOP/s"
    )
    print("| M | S @ W (points-major) | W^T @ S (features-major) | tanh |")
    print("|---:|---:|---:|---:|")
    for m in args.models:
        s = torch.randn(m, POINTS, WIDTH, generator=gen)
        w = torch.randn(m, WIDTH, WIDTH, generator=gen)
        st = torch.randn(m, WIDTH, POINTS, generator=gen)
        flops = 2 * m * POINTS * WIDTH * WIDTH
        rows = flops / seconds(partial(torch.bmm, s, w)) / 1e9
        cols = flops / seconds(partial(torch.bmm, w, st)) / 1e9
        tanh = m * POINTS * WIDTH / seconds(partial(torch.tanh, s)) / 1e9
        print(f"| {m} | {rows:.1f} GFLOP/s | {cols:.1f} GFLOP/s | {tanh:.2f} Gelem/s |")


if __name__ == "__main__":
    main()
