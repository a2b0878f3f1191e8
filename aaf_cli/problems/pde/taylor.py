"""Forward-mode (Taylor) input derivatives of a batched ensemble, up to second order.

``residual.model_derivatives`` differentiates by nested reverse passes
(``torch.autograd.grad(create_graph=True)``), which works for every kind and any order but
cannot be compiled: ``torch.compile`` does not trace ``torch.autograd.grad``. This module
computes the same derivatives with plain tensor operations, pushing them forward through the
layers with the network. For a hidden layer ``h = sigma(z)``, ``z = h_prev W + b``:

    z_i  = h_prev_i W,          h_i  = sigma'(z) z_i
    z_ij = h_prev_ij W,         h_ij = sigma'(z) z_ij + sigma''(z) z_i z_j

(at the first layer ``z_i`` is row i of W and ``z_ij`` is 0). The derivative streams of a layer
are stacked along the point axis with its values, so that each layer is still one batched
matrix product, and the loss built from them trains by one ordinary backward pass. Compiled,
the elementwise work of a layer fuses into a few loops: a PINN's training step gets
~1.5x faster on the CPU (benchmarks/bench_pinn.py).

It serves kinds whose activation has a closed-form jet (``Family.has_jet``: fixed and the slope
kinds, every base activation) and derivatives up to second order; ``unsupported`` says why not
otherwise, and the caller then keeps the reverse-mode path. Tests check both paths against each
other and against per-model autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aaf_cli.models import AnyEnsemble, Ensemble, Groups

__all__ = ["taylor_derivatives", "unsupported"]

Index = tuple[int, ...]


def unsupported(model: Groups, wanted: Sequence[Index]) -> str | None:
    """Why ``taylor_derivatives`` cannot serve this ensemble and these derivatives, or None."""
    if any(len(index) > 2 for index in wanted):
        return "derivatives above second order need reverse mode"
    for group in model.ensembles():
        if not group.family.has_jet():
            return (
                f"the {group.kind} kind has no closed-form derivatives in forward mode "
                "(fixed, global, layer and neuron have)"
            )
    return None


def taylor_derivatives(
    model: Groups, points: torch.Tensor, rows: int, wanted: Sequence[Index]
) -> dict[Index, torch.Tensor]:
    """u at every point and its wanted derivatives at the first ``rows`` points, every model.

    Args:
        model: the ensemble (``unsupported(model, wanted)`` must be None).
        points: ``[N, d]``, shared by the models.
        rows: the derivatives are computed at ``points[:rows]`` only (the collocation points;
            the conditions and observations after them need u alone).
        wanted: derivatives as sorted input indices, at most second order.

    Returns:
        ``{(): u [M, N], index: [M, rows]}`` for every wanted index and the first-order ones
        that the second-order ones go through.
    """
    seconds = sorted({index for index in wanted if len(index) == 2})
    firsts = sorted({(i,) for index in wanted for i in index})
    parts = [_ensemble(g, points, rows, firsts, seconds) for g in model.ensembles()]
    if len(parts) == 1:
        return parts[0]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def _ensemble(
    group: AnyEnsemble,
    x: torch.Tensor,
    rows: int,
    firsts: Sequence[Index],
    seconds: Sequence[Index],
) -> dict[Index, torch.Tensor]:
    """``taylor_derivatives`` of one ensemble (one kind): the layers of ``Ensemble.forward``."""
    assert isinstance(group, Ensemble), "unsupported() refuses the KAN kind"
    n = x.shape[-2]
    last = len(group.weights) - 1
    family = group.family
    # Derivative streams of the current layer's pre-activation, by index. None: identically 0.
    dz: dict[Index, torch.Tensor | None] = {}
    dh: dict[Index, torch.Tensor] = {}  # those of the layer's input (its activation)
    h = x
    for k, (w, b) in enumerate(zip(group.weights, group.biases)):
        scale = family.prescale(k) if k < last else None
        if scale is not None:
            w, b = scale * w, scale * b  # sigma(s (h W + b)), as Ensemble.forward folds it
        if k == 0:
            z = torch.matmul(x, w) + b  # [M, N, out]
            for (i,) in firsts:
                dz[(i,)] = w[:, i : i + 1, :]  # [M, 1, out]: the same at every point
            for index in seconds:
                dz[index] = None
        else:
            streams = [dh[key] for key in (*firsts, *seconds)]
            stacked = torch.cat([h, *streams], dim=1) if streams else h
            out = torch.bmm(stacked, w)
            z = out[:, :n] + b
            for j, key in enumerate((*firsts, *seconds)):
                dz[key] = out[:, n + j * rows : n + (j + 1) * rows]
        if k == last:
            found: dict[Index, torch.Tensor] = {(): z[..., 0]}
            for key, value in dz.items():
                if value is None:
                    value = z.new_zeros(z.shape[0], rows, 1)
                found[key] = value.expand(-1, rows, -1)[..., 0]
            return found
        h, d1, d2 = family.jet(z, k)
        d1, d2 = d1[:, :rows], d2[:, :rows]
        dh = {}
        for key in firsts:
            first = dz[key]
            assert first is not None
            dh[key] = d1 * first
        for key in seconds:
            zi, zj = dz[(key[0],)], dz[(key[1],)]
            assert zi is not None and zj is not None
            curvature = d2 * zi * zj
            second = dz[key]
            dh[key] = curvature if second is None else torch.addcmul(curvature, d1, second)
    raise AssertionError("unreachable: an ensemble has at least one layer")
