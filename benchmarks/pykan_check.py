"""Check: aaf's batched KANs (``aaf_cli.kan``) against pykan 0.2.8, the reference implementation.

For each KAN width (grid 5, order 3, silu base, grid range [-1, 1]: pykan's layer defaults)
and dtype (float32, what pykan users get, and float64), on f(x, y) = exp(sin(pi x) + y^2)
(pykan's tutorial function; 200 training points uniform in [-1, 1]^2, 1000 test points):

* same start: S pykan ``KAN(seed=s)`` copied into the S members of one aaf ``KanEnsemble``
  (coefficients, scales and grids): the largest |output difference| on 1000 points in
  [-1.5, 1.5]^2 (the grid, its extension and beyond), the largest |gradient difference| of each
  model's MSE (coef, scale_base, scale_sp), and, after both are trained with Adam (lr 1e-2,
  ``--steps``; pykan with ``torch.optim.Adam`` model by model, aaf with ``train`` on the whole
  ensemble), the largest relative difference between their training-loss curves;
* own starts: pykan ``KAN(seed=s)`` (its own defaults) against aaf's ``kan_init(seed=s)``
  (the same draws, in float64 the same numbers), trained the same way: the final train and
  test MSE of each, the median over the S seeds.

Neither side updates its grid while training (pykan's ``fit`` would, every 5 steps of its
first 50, unless ``update_grid=False``): what is compared is the model and Adam. pykan runs with
``save_act=False`` (no bookkeeping of activations for its plots and pruning) and
``symbolic_enabled=False`` (its symbolic branch, masked to exact zeros until a function is
fixed, costs a Python loop over the edges: 7x the time of a step); neither changes a number
(tests/test_pykan.py runs pykan as built). pykan in float32 is not deterministic from run to
run on the CPU (final losses differ in the 7th digit), so the float32 rows are rounding.
Prints a markdown table; about 5 minutes on one core with the defaults.

    pip install -e .[kan]
    python -m benchmarks.pykan_check                      # the README's table
    python -m benchmarks.pykan_check --seeds 3 --steps 300 --widths 2,5,1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import version

# aaf_cli first: it sets its OpenMP defaults before torch loads its runtime, as in `aaf run`.
import aaf_cli  # noqa: F401

# isort: split
import torch
from kan import KAN

from aaf_cli.config import KanVariant, TrainConfig
from aaf_cli.kan import KanEnsemble
from aaf_cli.models import Groups, ModelSpec
from aaf_cli.train import mse, train

GRID, ORDER, LR = 5, 3, 1e-2
SPEC = KanVariant(kind="kan", grid=GRID, order=ORDER)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """pykan makes its tensors in the default dtype."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def reference(width: Sequence[int], seed: int) -> KAN:
    model = KAN(width=list(width), grid=GRID, k=ORDER, seed=seed, auto_save=False)
    model.save_act = False
    model.symbolic_enabled = False
    return model


def ensemble(width: Sequence[int], seeds: Sequence[int], dtype: torch.dtype) -> KanEnsemble:
    return KanEnsemble(width, "silu", [ModelSpec("kan", s, "kan", SPEC) for s in seeds], dtype)


def copy_into(ens: KanEnsemble, index: int, model: KAN) -> None:
    with torch.no_grad():
        for k, layer in enumerate(model.act_fun):
            ens.coef[k][index].copy_(layer.coef)
            ens.scale_base[k][index].copy_(layer.scale_base)
            ens.scale_sp[k][index].copy_(layer.scale_sp)
            ens.knots(k)[index].copy_(layer.grid)


def data(n: int, seed: int, dtype: torch.dtype, half: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1) * half).to(dtype)


def target(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.sin(math.pi * x[:, :1]) + x[:, 1:2] ** 2)


def train_pykan(model: KAN, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    """The training loss before every Adam step and after the last."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(x) - y).square().mean()
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        losses.append((model(x) - y).square().mean().item())
    return losses


def train_aaf(ens: KanEnsemble, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """``[steps + 1, M]``: every model's training loss at every step."""
    result = train(Groups([ens]), x, y, None, None, TrainConfig(steps=steps, lr=LR, log_every=1))
    return torch.stack([r.train_loss for r in result.records])


def check(width: list[int], dtype: torch.dtype, seeds: int, steps: int) -> dict[str, float]:
    x, x_test, x_wide = data(200, 1, dtype), data(1000, 2, dtype), data(1000, 3, dtype, 1.5)
    y, y_test = target(x), target(x_test)
    out: dict[str, float] = {}
    with default_dtype(dtype):
        # Same start.
        models = [reference(width, s) for s in range(seeds)]
        ens = ensemble(width, range(seeds), dtype)
        for i, model in enumerate(models):
            copy_into(ens, i, model)
        wide = ens(x_wide)
        layers = range(len(width) - 1)
        params = [p for k in layers for p in (ens.coef[k], ens.scale_base[k], ens.scale_sp[k])]
        grads = torch.autograd.grad(mse(ens(x), y).sum(), params)
        forward = gradient = 0.0
        for i, model in enumerate(models):
            forward = max(forward, (model(x_wide) - wide[i]).abs().max().item())
            loss = (model(x) - y).square().mean()
            theirs = [p for la in model.act_fun for p in (la.coef, la.scale_base, la.scale_sp)]
            expected = torch.autograd.grad(loss, theirs)
            for u, v in zip(expected, grads):
                gradient = max(gradient, (u - v[i]).abs().max().item())
        curves = train_aaf(ens, x, y, steps)
        rel = 0.0
        for i, model in enumerate(models):
            ref = torch.tensor(train_pykan(model, x, y, steps), dtype=torch.float64)
            rel = max(rel, ((curves[:, i].double() - ref).abs() / ref).max().item())
        out.update(forward=forward, gradient=gradient, curves=rel)
        # Own starts.
        models = [reference(width, s) for s in range(seeds)]
        ens = ensemble(width, range(seeds), dtype)
        mine = train_aaf(ens, x, y, steps)[-1]
        with torch.no_grad():
            test_mine = mse(ens(x_test), y_test)
        theirs, test_theirs = [], []
        for model in models:
            theirs.append(train_pykan(model, x, y, steps)[-1])
            with torch.no_grad():
                test_theirs.append((model(x_test) - y_test).square().mean().item())
        out.update(
            train_pykan=statistics.median(theirs),
            train_aaf=statistics.median(mine.tolist()),
            test_pykan=statistics.median(test_theirs),
            test_aaf=statistics.median(test_mine.tolist()),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", nargs="+", default=["2,5,1", "2,10,10,1"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as set)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = [[int(v) for v in w.split(",")] for w in args.widths]
    print(
        f"torch {torch.__version__}, pykan {version('pykan')}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s); "
        f"grid {GRID}, order {ORDER}, silu; Adam lr {LR}, {args.steps} steps, "
        f"{args.seeds} seeds; f(x, y) = exp(sin(pi x) + y^2), 200 train / 1000 test points\n"
    )
    print(
        "| width | dtype | max \\|output diff\\| | max \\|grad diff\\| | max rel. loss-curve "
        "diff | train MSE pykan | train MSE aaf | test MSE pykan | test MSE aaf |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    tic = time.perf_counter()
    # pykan writes nothing with auto_save=False; a scratch folder in case it ever does.
    with tempfile.TemporaryDirectory() as scratch:
        cwd = os.getcwd()
        os.chdir(scratch)
        try:
            for width in widths:
                for dtype in (torch.float32, torch.float64):
                    r = check(width, dtype, args.seeds, args.steps)
                    print(
                        f"| {width} | {str(dtype).removeprefix('torch.')} | "
                        f"{r['forward']:.1e} | {r['gradient']:.1e} | {r['curves']:.1e} | "
                        f"{r['train_pykan']:.2e} | {r['train_aaf']:.2e} | "
                        f"{r['test_pykan']:.2e} | {r['test_aaf']:.2e} |",
                        flush=True,
                    )
        finally:
            os.chdir(cwd)
    print(
        "\nsame start: pykan's models copied into aaf's ensemble (output diff on [-1.5, 1.5]^2; "
        "grad of each model's MSE; loss curves over every step). MSEs: own starts (pykan "
        f"KAN(seed=s), aaf kan_init(seed=s)), median over seeds. "
        f"{time.perf_counter() - tic:.0f} s"
    )


if __name__ == "__main__":
    main()
