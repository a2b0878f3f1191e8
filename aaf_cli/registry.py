"""Names the config may use, importable without torch.

The torch implementations live in ``activations.py`` under the same names (a test keeps the two in
step), so that loading and validating a config stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

# Base activations sigma(x): name -> formula shown in `aaf kinds` and in error messages.
ACTIVATIONS: dict[str, str] = {
    "elu": "x if x > 0 else exp(x) - 1",
    "tanh": "tanh(x)",
    "sigmoid": "1 / (1 + exp(-x))",
    "relu": "max(0, x)",
    "sin": "sin(x)",
    "softplus": "log(1 + exp(x))",
    "gelu": "x * Phi(x)",
    "silu": "x * sigmoid(x)",
    "leaky_relu": "max(0, x) + 0.01 * min(0, x)",
}


@dataclass(frozen=True)
class KindInfo:
    """An adaptive family: how hidden layer k is activated, its parameters and its source."""

    name: str
    formula: str
    parameters: str
    reference: str


KINDS: dict[str, KindInfo] = {
    info.name: info
    for info in (
        KindInfo("fixed", "sigma(L_k)", "none", "the baseline"),
        KindInfo(
            "global",
            "sigma(n * a * L_k)",
            "n >= 1 (default 10); a0 (default 1/n): one a shared by all hidden layers",
            "Jagtap, Kawaguchi, Karniadakis, J. Comput. Phys. 404 (2020), arXiv:1906.01170",
        ),
    )
}
