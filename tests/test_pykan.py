"""aaf's KANs (``aaf_cli.kan``) against the reference implementation, ``pykan`` 0.2.8
(``pip install -e .[kan]``; skipped without it).

A pykan ``KAN`` (its ``MultKAN``) is built, its coefficients, scales and grids are copied into
an aaf ``KanEnsemble``, and both are compared in float64: outputs, gradients of an MSE,
``update_grid``, parameter counts, and 300 Adam steps from the same start. pykan's node and
subnode affine maps (scale 1, bias 0, not trained: ``affine_trainable=False``) and its
symbolic branch (masked to 0 until a function is fixed) add exact zeros and ones, so the
numerical KAN is all that is compared. The tolerances are a few orders above what was
measured (noted at each), far below what any difference in the formulas would give.

One difference, by design: an input constant over the samples given to ``update_grid`` keeps
its grid and splines in aaf; pykan's grid collapses to one point and its basis maps the 0/0 to
0, dropping that input's splines (``test_update_grid_constant_input``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch

pytest.importorskip("kan")

import numpy as np
from kan import KAN

from aaf_cli.config import TrainConfig
from aaf_cli.kan import KanEnsemble, KanNet, kan_init
from aaf_cli.models import Groups, ModelSpec
from aaf_cli.train import mse, train
from benchmarks.pykan_check import GRID, LR, ORDER, SPEC, copy_into, target, train_pykan

WIDTHS = [[2, 5, 1], [1, 4, 3, 1]]
F64 = torch.float64


@pytest.fixture(autouse=True)
def pykan_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """float64 by default (pykan makes its tensors in the default dtype), in a scratch folder
    (pykan writes checkpoints to ./model unless ``auto_save=False``), and the global random
    states that ``KAN(seed=...)`` reseeds (torch, numpy, random) restored afterwards."""
    dtype = torch.get_default_dtype()
    states = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    monkeypatch.chdir(tmp_path)
    torch.set_default_dtype(F64)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.random.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
    assert not any(tmp_path.iterdir()), "pykan wrote files"


def reference(width: Sequence[int], seed: int = 0, **kwargs: float) -> KAN:
    """A pykan KAN of aaf's defaults (grid 5, order 3, silu, grid_range [-1, 1])."""
    return KAN(width=list(width), grid=GRID, k=ORDER, seed=seed, auto_save=False, **kwargs)


def ensemble(width: Sequence[int], seeds: Sequence[int]) -> KanEnsemble:
    members = [ModelSpec("kan", s, "kan", SPEC) for s in seeds]
    return KanEnsemble(width, "silu", members, dtype=F64)


def pykan_params(model: KAN) -> list[torch.Tensor]:
    return [p for layer in model.act_fun for p in (layer.coef, layer.scale_base, layer.scale_sp)]


def aaf_params(ens: KanEnsemble) -> list[torch.Tensor]:
    layers = range(len(ens.layers) - 1)
    return [p for k in layers for p in (ens.coef[k], ens.scale_base[k], ens.scale_sp[k])]


def points(n: int, dim: int, seed: int, half: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, dim, generator=gen, dtype=F64) * 2 - 1) * half


def max_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return max((u - v).abs().max().item() for u, v in zip(a, b))


@pytest.mark.parametrize("width", WIDTHS)
def test_forward_and_gradients_match(width: list[int]) -> None:
    """Two pykan models (seeds 0 and 1) as the two members of one ensemble: outputs and the
    gradients of each model's MSE agree to rounding (measured: 1e-16 and 3e-16), on points
    inside the grid, on its extension and beyond it (where every B-spline is 0)."""
    models = [reference(width, seed) for seed in (0, 1)]
    ens = ensemble(width, (0, 1))
    for i, model in enumerate(models):
        copy_into(ens, i, model)
    x = points(300, width[0], seed=1, half=2.0)
    y = points(300, 1, seed=2)
    out = ens(x)
    for i, model in enumerate(models):
        assert (model(x) - out[i]).abs().max().item() < 1e-12
    grads = torch.autograd.grad(mse(out, y).sum(), aaf_params(ens))
    for i, model in enumerate(models):
        loss = (model(x) - y).square().mean()
        expected = torch.autograd.grad(loss, pykan_params(model))
        assert max_diff(expected, [g[i] for g in grads]) < 1e-10
        # The edge-by-edge KanNet (what checkpoints load into) agrees too.
        net = KanNet(width, SPEC, F64)
        net.load_state_dict(ens.state_dict_of(i))
        assert (net(x) - model(x)).abs().max().item() < 1e-12


@pytest.mark.parametrize("width", WIDTHS)
def test_update_grid_matches_pykan(width: list[int]) -> None:
    """``update_grid`` against pykan's ``model.update_grid(x)`` (layer after layer, each to its
    inputs through the layers before it as refitted), two models in one ensemble: knots agree
    to 4e-16, coefficients to 3e-15, outputs to 1.3e-16 (measured). The refits solve the same
    least squares (200 samples, G + k = 8 unknowns, well conditioned) by different routes: an
    SVD (aaf's ``pinv``) and ``torch.linalg.lstsq`` (LAPACK gelsy on the CPU), equal to
    rounding; the tolerances are 1e-12, 1e-10 and 1e-12."""
    models = [reference(width, seed) for seed in (0, 1)]
    ens = ensemble(width, (0, 1))
    for i, model in enumerate(models):
        copy_into(ens, i, model)
    x = points(200, width[0], seed=3)
    ens.update_grid(x)
    x_test = points(300, width[0], seed=4, half=1.5)
    out = ens(x_test)
    for i, model in enumerate(models):
        with torch.no_grad():
            before = model(x)
        model.update_grid(x)
        with torch.no_grad():
            after = model(x)
            assert (after - before).abs().max().item() > 1e-6  # the refit changed something
        for k, layer in enumerate(model.act_fun):
            assert (layer.grid - ens.knots(k)[i]).abs().max().item() < 1e-12
            assert (layer.coef - ens.coef[k][i]).abs().max().item() < 1e-10
        assert (model(x_test) - out[i]).abs().max().item() < 1e-12


def test_update_grid_constant_input() -> None:
    width = [2, 3, 1]
    model, ens = reference(width), ensemble(width, (0,))
    copy_into(ens, 0, model)
    x = points(200, 2, seed=3)
    x[:, 1] = 0.3
    before = ens(x)[0]
    knots = ens.knots(0)[0, 1].clone()
    model.update_grid(x)
    ens.update_grid(x)
    # aaf: the constant input keeps its grid, and the network its function at the samples
    # (to the refit's accuracy on the other input's new grid).
    assert torch.equal(ens.knots(0)[0, 1], knots)
    assert (ens(x)[0] - before).abs().max().item() < 1e-3
    assert torch.isfinite(ens(points(300, 2, seed=4))).all()
    # pykan: that input's grid collapsed and its splines dropped (finite, but changed).
    assert bool((model.act_fun[0].grid[1] == 0.3).all())


@pytest.mark.parametrize("width", WIDTHS)
def test_parameter_count(width: list[int]) -> None:
    """pykan trains G + k + 2 numbers per edge in its KAN layers, as aaf. Its symbolic front's
    affine parameters (c f(a x + b) + d: 4 per edge) also require gradients, but the symbolic
    branch is masked to 0, so their gradients are exactly 0 and Adam never moves them; the
    node and subnode affine maps are not trainable by default."""
    model, ens = reference(width), ensemble(width, (0,))
    trainable = [p for layer in model.act_fun for p in layer.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == ens.parameter_count()
    edges = sum(i * o for i, o in zip(width[:-1], width[1:]))
    assert ens.parameter_count() == edges * (GRID + ORDER + 2)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == ens.parameter_count() + 4 * edges
    for group in (model.node_scale, model.node_bias, model.subnode_scale, model.subnode_bias):
        assert not any(p.requires_grad for p in group)


@pytest.mark.parametrize("width", WIDTHS)
def test_init_as_pykan(width: list[int]) -> None:
    """aaf's ``kan_init(seed=s)`` is pykan's float64 ``KAN(seed=s)`` (noise_scale 0.3): the
    same draws in the same order (pykan's reseeded global generator, aaf's private one), the
    same knots (to rounding: pykan extends the grid by repeated subtraction), w_s = 1/sqrt(in)
    exactly, w_b and the fitted coefficients to rounding (measured 1.5e-16)."""
    ens = ensemble(width, (0,))
    for seed in (0, 1, 2):
        mine = kan_init(width, seed, GRID, ORDER, -1.0, 1.0)
        model = reference(width, seed)
        for k, (coef, base, sp) in enumerate(mine):
            layer = model.act_fun[k]
            assert (layer.grid - ens.knots(k)[0]).abs().max().item() < 1e-14
            assert torch.equal(sp, layer.scale_sp.detach())
            assert (base - layer.scale_base).abs().max().item() < 1e-14
            assert (coef - layer.coef).abs().max().item() < 1e-14
            assert base.abs().max() <= 1 / math.sqrt(width[k])
        if seed == 0:
            assert all(torch.equal(ens.coef[k][0], c) for k, (c, _, _) in enumerate(mine))


def test_adam_training_curves_match() -> None:
    """300 Adam steps (lr 1e-2) from the same start on 200 points of exp(sin(pi x) + y^2):
    pykan's KAN with ``torch.optim.Adam`` and aaf's ``train`` give the same loss at every step
    (measured: 4e-15 relative; a difference in the model or in Adam would show at 1e-8 or
    more) and the same final parameters."""
    width = [2, 5, 1]
    model, ens = reference(width), ensemble(width, (0,))
    copy_into(ens, 0, model)
    x = points(200, 2, seed=5)
    y = target(x)
    steps = 300
    expected = train_pykan(model, x, y, steps)  # torch.optim.Adam at LR (1e-2)
    result = train(Groups([ens]), x, y, None, None, TrainConfig(steps=steps, lr=LR, log_every=1))
    got = {r.step: r.train_loss[0].item() for r in result.records}
    assert sorted(got) == list(range(steps + 1))
    assert expected[-1] < expected[0] / 100  # it learned
    rel = max(abs(got[s] - e) / e for s, e in enumerate(expected))
    assert rel < 1e-10
    assert max_diff(pykan_params(model), [p[0] for p in aaf_params(ens)]) < 1e-10
