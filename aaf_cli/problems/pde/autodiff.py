"""Derivatives of point-wise functions with respect to their input coordinates, by autograd.

``input_derivatives`` serves both the networks (``u`` of shape ``[M, N]`` from inputs
``[M, N, d]``) and the exact solutions in float64 (``u`` of shape ``[N]`` from ``[N, d]``). It
differentiates ``u.sum()``: the gradient of a sum is the sum of the gradients, and
``d u[m, n] / d coords[m', n', :]`` is zero unless ``(m', n') == (m, n)`` when every model has
its own copy of the inputs and the function is point-wise (no batch statistics, no mixing
across points). Then the gradient of the sum at ``coords[m, n]`` is exactly the derivative of
``u[m, n]``, for all models and points in one backward pass. Had the M models shared one input
tensor ``[N, d]``, the same call would return the SUM over models of their derivatives.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["input_derivatives", "order_key"]


def order_key(index: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Sort derivatives by order, then by inputs: u, u_x, u_t, u_xx, u_xt, u_tt, ..."""
    return len(index), index


def input_derivatives(
    u: torch.Tensor,
    coords: torch.Tensor,
    wanted: Iterable[tuple[int, ...]],
    create_graph: bool = True,
) -> dict[tuple[int, ...], torch.Tensor]:
    """Derivatives of ``u`` with respect to the last axis of ``coords``.

    Each derivative is a sorted tuple of input indices: ``(0,)`` is u_x, ``(0, 1)`` u_xt and
    ``(1, 1)`` u_tt for inputs ``(x, t)``. One backward pass per distinct lower-order derivative
    that is needed gives all of its ``d`` partial derivatives at once (u_t and u_xx cost two
    passes: the gradient of u, then of u_x).

    Args:
        u: values of shape ``S`` computed point-wise from ``coords`` of shape ``[*S, d]``
            (which requires grad); each point's value must depend on its own coordinates only.
        coords: the inputs.
        wanted: the derivatives to compute.
        create_graph: keep the graph of the derivatives, so that a loss built from them can be
            differentiated again (training); False for values only.

    Returns:
        ``{(): u, index: derivative}`` for every wanted index (and the intermediate ones), each
        of shape ``S``. A derivative that does not depend on the inputs is zeros.
    """
    out: dict[tuple[int, ...], torch.Tensor] = {(): u}
    gradients: set[tuple[int, ...]] = set()
    dims = coords.shape[-1]
    indices = sorted({tuple(sorted(index)) for index in wanted}, key=order_key)
    top = max((len(index) for index in indices), default=0)

    def get(index: tuple[int, ...]) -> torch.Tensor:
        if index in out:
            return out[index]
        prefix = index[:-1]
        base = get(prefix)
        if prefix not in gradients:
            gradients.add(prefix)
            grad: torch.Tensor | None = None
            if base.requires_grad:
                (grad,) = torch.autograd.grad(
                    base.sum(),
                    coords,
                    # Derivatives that are differentiated again need their graph.
                    create_graph=create_graph or len(prefix) + 1 < top,
                    retain_graph=True,
                    allow_unused=True,
                )
            if grad is None:
                grad = torch.zeros_like(coords)
            for i in range(dims):
                out.setdefault(tuple(sorted((*prefix, i))), grad[..., i])
        return out[index]

    for index in indices:
        get(index)
    return out
