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
    """Train one ``PlainMLP`` with ``torch.optim``; returns the loss before every step and after."""
    net = PlainMLP(layers, activation, spec.n, spec.a0, spec.trainable, dtype=x.dtype)
    net.load_init(init_weights(layers, spec.seed, init))
    params = [p for p in net.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=spec.lr or lr)
    else:
        opt = torch.optim.SGD(params, lr=spec.lr or lr, momentum=momentum)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(net(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        losses.append(torch.nn.functional.mse_loss(net(x), y).item())
    return losses, net
