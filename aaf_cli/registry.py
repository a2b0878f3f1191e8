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
    "cos": "cos(x) (the base of Rowdy in the authors' code)",
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
    reference: str


JCP = "Jagtap, Kawaguchi, Karniadakis, J. Comput. Phys. 404 (2020), arXiv:1906.01170"
RSPA = "Jagtap, Kawaguchi, Karniadakis, Proc. R. Soc. A 476 (2020), arXiv:1909.12228"

KINDS: dict[str, KindInfo] = {
    info.name: info
    for info in (
        KindInfo(
            "fixed",
            "sigma(L_k); with slope s, sigma(s * L_k) (the control of an adaptive slope)",
            "the baseline",
        ),
        KindInfo("global", "sigma(n * a * L_k), one a shared by all hidden layers", JCP),
        KindInfo("layer", "sigma(n * a_k * L_k), one a per hidden layer (L-LAAF)", RSPA),
        KindInfo("neuron", "sigma(n * a_ki * (L_k)_i), one a per hidden neuron (N-LAAF)", RSPA),
        KindInfo(
            "rowdy",
            "sigma(n a L_k) + sum_{j=1}^{K-1} n a_j sin(j n F_j L_k), per hidden layer; "
            "a = F_j = 1/n, a_j = 0 at the start (the authors' code uses cos as sigma)",
            "Jagtap, Shin, Kawaguchi, Karniadakis, Neurocomputing 468 (2022), arXiv:2105.09513",
        ),
        KindInfo(
            "prelu",
            "max(0, x) + a * min(0, x), one a per hidden layer",
            "He et al., ICCV 2015, arXiv:1502.01852",
        ),
        KindInfo(
            "swish",
            "x * sigmoid(beta * x), one beta per hidden layer",
            "Ramachandran, Zoph, Le, arXiv:1710.05941",
        ),
        KindInfo(
            "rational",
            "P(x) / (1 + sum_k |b_k| |x|^k) (safe Pade unit), coefficients per hidden layer, "
            "initialised to fit leaky ReLU",
            "Molina, Schramowski, Kersting, ICLR 2020, arXiv:1907.06732",
        ),
        KindInfo(
            "spline",
            "sigma(L_k) + sum_c c_c B_c(L_k): a B-spline of order k on G intervals, per hidden "
            "neuron or layer, c = 0 at the start",
            "Yu, Yu, Wang, 'KAN or MLP: A Fairer Comparison', arXiv:2407.16674 (2024)",
        ),
        KindInfo(
            "kan",
            "y_j = sum_i w_b b(x_i) + w_s sum_c c_c B_c(x_i) on every edge i -> j (replaces the "
            "layers; its widths are the KAN's)",
            "Liu et al., 'KAN: Kolmogorov-Arnold Networks', arXiv:2404.19756 (2024)",
        ),
    )
}
