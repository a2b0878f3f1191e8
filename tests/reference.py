"""A plain per-model PyTorch loop: the trusted reference the batched engine must reproduce."""

from __future__ import annotations

import torch

from aaf_cli.models import ModelSpec, PlainMLP, init_weights


def reference_run(
    spec: ModelSpec,
    layers: list[int],
    activation: str,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float,
    optimizer: str = "adam",
    momentum: float = 0.0,
    init: str = "torch",
) -> tuple[list[float], PlainMLP]:
    """Train one ``PlainMLP`` with ``torch.optim``; returns the data loss (MSE) before every
    step and after the last, and the trained network. The optimised loss adds the variant's
    slope-recovery term, if any."""
    base = getattr(spec.spec, "activation", None) or activation
    net = PlainMLP(layers, spec.kind, base, spec.spec, dtype=x.dtype)
    net.load_init(init_weights(layers, spec.seed, init))
    recovery = getattr(spec.spec, "slope_recovery", None)
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=spec.lr or lr)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=spec.lr or lr, momentum=momentum)
    losses = []
    for _ in range(steps):
        data = torch.nn.functional.mse_loss(net(x), y)
        losses.append(data.item())
        loss = data if recovery is None else data + recovery.weight * net.recovery()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(torch.nn.functional.mse_loss(net(x), y).item())
    return losses, net
