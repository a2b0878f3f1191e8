"""Base activations and the adaptive activation of one hidden layer.

References:
    Jagtap, Kawaguchi, Karniadakis, "Adaptive activation functions accelerate convergence in deep
    and physics-informed neural networks", J. Comput. Phys. 404 (2020), arXiv:1906.01170.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from aaf_cli import registry

Activation = Callable[[torch.Tensor], torch.Tensor]

# Same names as registry.ACTIVATIONS (a test keeps them in step).
ACTIVATIONS: dict[str, Activation] = {
    "elu": F.elu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "sin": torch.sin,
    "softplus": F.softplus,
    "gelu": F.gelu,
    "silu": F.silu,
    "leaky_relu": F.leaky_relu,
}


def get_activation(name: str) -> Activation:
    """The base activation called ``name``; unknown names list the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        valid = ", ".join(registry.ACTIVATIONS)
        raise ValueError(f"unknown activation '{name}' (valid: {valid})") from None


class ScaledActivation(nn.Module):
    """sigma(n * a * x) with a trainable scalar ``a`` (GAAF); ``trainable=False`` freezes ``a``.

    With ``a = 1/n`` the module equals sigma(x), so an adaptive network starts where the fixed one
    does. ``n`` is a buffer: it is part of the state dict and moves with ``.to()``, but is not
    trained. This per-model module is the reference the batched ensemble is tested against.
    """

    def __init__(
        self,
        base: str,
        n: float = 1.0,
        a0: float | None = None,
        trainable: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.fn = get_activation(base)
        # Made directly in the target dtype: a0 = 0.1 rounded to float32 and widened later is
        # not 0.1 in float64.
        self.register_buffer("n", torch.tensor(float(n), dtype=dtype))
        a0 = 1.0 / n if a0 is None else float(a0)
        self.a = nn.Parameter(torch.tensor(a0, dtype=dtype), trainable)

    n: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn((self.n * self.a) * x)

    def extra_repr(self) -> str:
        return f"base={self.base}, n={float(self.n):g}, trainable={self.a.requires_grad}"
