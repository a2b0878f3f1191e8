"""The batched MLP ensemble, and the plain per-model network it must agree with.

Every model of an experiment (variants x seeds) is one slice of stacked tensors: hidden layer k
holds weights ``[M, in, out]`` and biases ``[M, 1, out]``, and the activation parameter ``a`` is
``[M, 1, 1]``. One forward pass computes all M networks with batched matrix products, and the loss
is the sum of the per-model mean losses, so each model's gradient is exactly the one it would get
if it were trained alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from aaf_cli.activations import ScaledActivation, get_activation


@dataclass(frozen=True)
class ModelSpec:
    """One member of an ensemble: which variant, which seed, and its activation parameters."""

    variant: str
    seed: int
    n: float
    a0: float
    trainable: bool
    lr: float | None = None


def init_weights(
    layers: Sequence[int], seed: int, init: str = "torch", std: float = 0.1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Initial ``(weight [out, in], bias [out])`` of every layer, in float64, from one seed.

    The same seed gives the same weights on every device and dtype: they are drawn on the CPU in
    float64 from a private generator and cast later. ``torch`` reproduces ``nn.Linear``'s default
    (uniform in +-1/sqrt(fan_in) for weights and biases); ``xavier_normal``, ``xavier_uniform`` and
    ``normal`` (N(0, std^2), as in the RSPA code) use zero biases, as the papers' codes do.
    """
    gen = torch.Generator().manual_seed(seed)
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for fan_in, fan_out in zip(layers[:-1], layers[1:]):
        f64 = torch.float64
        if init == "torch":
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(fan_out, fan_in, generator=gen, dtype=f64) * 2 - 1) * bound
            b = (torch.rand(fan_out, generator=gen, dtype=f64) * 2 - 1) * bound
        else:
            if init == "xavier_normal":
                w = torch.randn(fan_out, fan_in, generator=gen, dtype=f64)
                w *= math.sqrt(2.0 / (fan_in + fan_out))
            elif init == "xavier_uniform":
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                w = (torch.rand(fan_out, fan_in, generator=gen, dtype=f64) * 2 - 1) * bound
            elif init == "normal":
                w = torch.randn(fan_out, fan_in, generator=gen, dtype=f64) * std
            else:
                raise ValueError(f"unknown init '{init}'")
            b = torch.zeros(fan_out, dtype=f64)
        out.append((w, b))
    return out


class Ensemble(nn.Module):
    """M MLPs of the same shape and base activation, evaluated and trained as one.

    Args:
        layers: widths ``[in, hidden..., out]``.
        activation: base activation name.
        members: one ``ModelSpec`` per model; members with the same seed start from the same
            weights, whatever their variant.
        init, init_std: weight initialisation (see ``init_weights``).
        dtype, device: of every tensor.
    """

    n: torch.Tensor
    trainable: torch.Tensor

    def __init__(
        self,
        layers: Sequence[int],
        activation: str,
        members: Sequence[ModelSpec],
        init: str = "torch",
        init_std: float = 0.1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.layers = list(layers)
        self.activation = activation
        self.members = list(members)
        self.act = get_activation(activation)
        per_seed = {
            s: init_weights(layers, s, init, init_std)
            for s in dict.fromkeys(m.seed for m in members)
        }
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k in range(len(layers) - 1):
            w = torch.stack([per_seed[m.seed][k][0].T for m in members])
            b = torch.stack([per_seed[m.seed][k][1] for m in members]).unsqueeze(1)
            w, b = w.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)
            self.weights.append(nn.Parameter(w.contiguous()))
            self.biases.append(nn.Parameter(b.contiguous()))
        self.a = nn.Parameter(torch.tensor([[[m.a0]] for m in members], dtype=dtype, device=device))
        self.register_buffer(
            "n", torch.tensor([[[m.n]] for m in members], dtype=dtype, device=device)
        )
        self.register_buffer(
            "trainable", torch.tensor([m.trainable for m in members], device=device)
        )

    @property
    def size(self) -> int:
        """Number of models M."""
        return len(self.members)

    def slopes(self) -> torch.Tensor:
        """The effective slope n*a of every model, ``[M]``."""
        return (self.n * self.a).reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[M, N, out]`` for inputs ``[N, in]`` (shared) or ``[M, N, in]`` (per model)."""
        scale = self.n * self.a
        h = x
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if k < last:
                # sigma(s * (h W + b)) = sigma(h (s W) + s b): scaling the small weight tensors
                # instead of the [M, N, width] pre-activations saves a full pass forward and two
                # backward; the activation's input changes only by rounding.
                w, b = scale * w, scale * b
            if h.dim() == 2 and h.shape[-1] == 1:
                # One shared input feature: the product is a broadcast multiply, no matmul needed.
                z = torch.addcmul(b, h, w)
            elif k == last and w.shape[-1] == 1:
                # One output: multiply-and-sum beats a matrix product with a single column.
                z = (h * w.transpose(1, 2)).sum(-1, keepdim=True) + b
            elif h.dim() == 2:
                z = torch.matmul(h, w) + b
            else:
                z = torch.baddbmm(b, h, w)
            if k == last:
                return z
            h = self.act(z)
        raise AssertionError("unreachable: an ensemble has at least one layer")

    def parameter_count(self) -> int:
        """Trainable parameters of one model (weights, biases and, if trained, its ``a``)."""
        dense = sum(i * o + o for i, o in zip(self.layers[:-1], self.layers[1:]))
        return dense + (1 if any(m.trainable for m in self.members) else 0)

    def state_dict_of(self, index: int) -> dict[str, torch.Tensor]:
        """Model ``index`` as a ``PlainMLP`` state dict (CPU tensors)."""
        state: dict[str, torch.Tensor] = {}
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            state[f"linears.{k}.weight"] = w[index].detach().T.cpu().clone()
            state[f"linears.{k}.bias"] = b[index, 0].detach().cpu().clone()
        state["activation.n"] = self.n[index].detach().reshape(()).cpu().clone()
        state["activation.a"] = self.a[index].detach().reshape(()).cpu().clone()
        return state


class PlainMLP(nn.Module):
    """One MLP as users write it: ``nn.Linear`` layers and one shared ``ScaledActivation``.

    The global adaptive activation shares ``a`` across hidden layers by design, so one module is
    reused (a layer-wise variant would need one module per layer). Loads the checkpoints that
    ``aaf run`` writes.
    """

    def __init__(
        self,
        layers: Sequence[int],
        activation: str,
        n: float = 1.0,
        a0: float | None = None,
        trainable: bool = True,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.linears = nn.ModuleList(
            nn.Linear(i, o, dtype=dtype) for i, o in zip(layers[:-1], layers[1:])
        )
        self.activation = ScaledActivation(activation, n, a0, trainable, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, output = self.linears
        for linear in hidden:
            x = self.activation(linear(x))
        out: torch.Tensor = output(x)
        return out

    def load_init(self, weights: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> PlainMLP:
        """Copy ``init_weights`` output into the linear layers; returns self."""
        with torch.no_grad():
            for linear, (w, b) in zip(self.linears, weights):
                assert isinstance(linear, nn.Linear)
                linear.weight.copy_(w)
                linear.bias.copy_(b)
        return self
