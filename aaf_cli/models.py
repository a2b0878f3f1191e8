"""The batched MLP ensemble, and the plain per-model network it must agree with.

Every model of a group (variants of one kind x seeds) is one slice of stacked tensors: hidden
layer k holds weights ``[M, in, out]`` and biases ``[M, 1, out]``, and the activation parameters
lead with the model axis too (see ``activations.Family``). One forward pass computes all M
networks with batched matrix products, and the loss is the sum of the per-model mean losses, so
each model's gradient is exactly the one it would get if it were trained alone. Variants of
different kinds or base activations train as separate ensembles inside one ``Groups``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aaf_cli.activations import Slope, make_family, reference_activations, slope_recovery
from aaf_cli.kan import KanEnsemble, KanNet
from aaf_cli.stack import Stack


@dataclass(frozen=True)
class ModelSpec:
    """One member of an ensemble: which variant (and its config), which seed."""

    variant: str
    seed: int
    kind: str = "fixed"
    spec: Any = None  # the variant's config: n, a0, K, ... (None: a fixed variant)
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


class Ensemble(Stack):
    """M MLPs of the same shape and the same activation kind, evaluated and trained as one.

    Args:
        layers: widths ``[in, hidden..., out]``.
        kind: the activation family (``fixed``, ``global``, ``layer``, ...).
        base: the base activation sigma (ignored by prelu, swish and rational).
        members: one ``ModelSpec`` per model; members with the same seed start from the same
            weights, whatever their variant or group.
        init, init_std: weight initialisation (see ``init_weights``).
        dtype, device: of every tensor.
    """

    def __init__(
        self,
        layers: Sequence[int],
        kind: str,
        base: str,
        members: Sequence[ModelSpec],
        init: str = "torch",
        init_std: float = 0.1,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(members)
        self.layers = list(layers)
        self.kind = kind
        self.base = base
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
        self.family = make_family(
            kind, [m.spec for m in members], base, layers[1:-1], dtype, device
        )

    def decayed(self) -> list[nn.Parameter]:
        """The parameters a weight decay applies to: the layers' weights and biases (the
        activation's only with ``train.decay_activation_params``)."""
        return [*self.weights, *self.biases]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[M, N, out]`` for inputs ``[N, in]`` (shared) or ``[M, N, in]`` (per model)."""
        h = x
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            scale = self.family.prescale(k) if k < last else None
            if scale is not None:
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
            h = self.family.activate(z, k)
        raise AssertionError("unreachable: an ensemble has at least one layer")

    def state_dict_of(self, index: int) -> dict[str, torch.Tensor]:
        """Model ``index`` as a ``PlainMLP`` state dict (CPU tensors)."""
        state: dict[str, torch.Tensor] = {}
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            state[f"linears.{k}.weight"] = w[index].detach().T
            state[f"linears.{k}.bias"] = b[index, 0].detach()
        for key, value in self.family.state_of(index).items():
            state[f"activations.{key}"] = value.detach()
        return {k: v.cpu().clone() for k, v in state.items()}


#: One group's batched models: an MLP ensemble of one activation kind, or KANs.
AnyEnsemble = Ensemble | KanEnsemble


class Groups(nn.Module):
    """Several ensembles (one per kind and activation) trained by one loop as one model list.

    Models are numbered group after group; outputs, penalties and logged parameters are
    concatenated in that order.
    """

    def __init__(self, groups: Sequence[AnyEnsemble]) -> None:
        super().__init__()
        self.groups = nn.ModuleList(groups)  # registers the parameters
        self._ensembles = list(groups)  # the same, typed
        self.members = [m for g in groups for m in g.members]
        self.offsets = [0, *itertools.accumulate(g.size for g in groups)][:-1]
        self.recovering = any(g.family.recovering for g in groups)

    @property
    def size(self) -> int:
        return len(self.members)

    def ensembles(self) -> list[AnyEnsemble]:
        return self._ensembles

    def _placed(self) -> Iterator[tuple[AnyEnsemble, slice]]:
        """Each ensemble with the slice of the model axis its models occupy."""
        for g, start in zip(self._ensembles, self.offsets):
            yield g, slice(start, start + g.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [g(x if x.dim() == 2 else x[rows]) for g, rows in self._placed()]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _anchor(self) -> torch.Tensor:
        """A tensor of the models' dtype and device."""
        return next(self._ensembles[0].parameters())

    def _concat(self, parts: Sequence[torch.Tensor | None], fill: float) -> torch.Tensor:
        """Per-group ``[M_g]`` values as one ``[M]`` tensor, ``fill`` for groups without one."""
        ref = self._anchor()
        return torch.cat(
            [
                p if p is not None else ref.new_full((g.size,), fill)
                for p, g in zip(parts, self._ensembles)
            ]
        )

    def grid_updates(self, step: int) -> list[KanEnsemble]:
        """The KANs whose grids are refitted before ``step``."""
        return [g for g in self._ensembles if isinstance(g, KanEnsemble) and step in g.grid_steps]

    def penalty(self) -> torch.Tensor | None:
        """The slope-recovery terms ``[M]`` added to the losses, or None if no model has one."""
        if not self.recovering:
            return None
        return self._concat([g.family.penalty() for g in self._ensembles], 0.0)

    def recovery(self) -> torch.Tensor:
        """S(a) per model, NaN for models without slope recovery."""
        return self._concat([g.family.recovery() for g in self._ensembles], math.nan)

    def trajectories(self) -> dict[str, torch.Tensor]:
        """Logged activation parameters, name -> ``[M]`` (NaN for models without that name)."""
        ref = self._anchor()
        out: dict[str, torch.Tensor] = {}
        for g, rows in self._placed():
            for name, values in g.family.trajectories().items():
                if name not in out:
                    out[name] = ref.new_full((self.size,), math.nan)
                out[name][rows] = values.detach()
        return out

    def rows(
        self, default_lr: float, scale: float = 1.0
    ) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        return [
            row
            for g, start in zip(self._ensembles, self.offsets)
            for row in g.rows(default_lr, start, scale)
        ]

    def state_dict_of(self, index: int) -> dict[str, torch.Tensor]:
        """Model ``index`` (numbered across groups) as a ``PlainMLP`` state dict."""
        group, j = self.locate(index)
        return group.state_dict_of(j)

    def locate(self, index: int) -> tuple[AnyEnsemble, int]:
        """The ensemble holding model ``index`` and its position there."""
        for g, rows in self._placed():
            if rows.start <= index < rows.stop:
                return g, index - rows.start
        raise IndexError(index)


class PlainMLP(nn.Module):
    """One MLP as users write it: ``nn.Linear`` layers and its activation modules.

    ``activations`` holds one module per hidden layer, or one shared by all (global: one ``a``
    for every layer by design). Loads the checkpoints that ``aaf run`` writes.
    """

    def __init__(
        self,
        layers: Sequence[int],
        kind: str = "fixed",
        base: str = "tanh",
        spec: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.linears = nn.ModuleList(
            nn.Linear(i, o, dtype=dtype) for i, o in zip(layers[:-1], layers[1:])
        )
        self.activations = reference_activations(kind, spec, base, layers[1:-1], dtype)
        self.recovery_form = getattr(getattr(spec, "slope_recovery", None), "form", "paper")

    def activation(self, k: int) -> nn.Module:
        """Hidden layer k's activation (the shared one for global)."""
        return self.activations[0 if len(self.activations) == 1 else k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, output = self.linears
        for k, linear in enumerate(hidden):
            x = self.activation(k)(linear(x))
        out: torch.Tensor = output(x)
        return out

    def recovery(self) -> torch.Tensor:
        """S(a) of the slope kinds, from the raw ``a`` (not n*a), per the variant's form."""
        acts = [self.activation(k) for k in range(len(self.linears) - 1)]
        slopes = [act.a.mean() for act in acts if isinstance(act, Slope)]
        return slope_recovery(slopes, self.recovery_form)

    def load_init(self, weights: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> PlainMLP:
        """Copy ``init_weights`` output into the linear layers; returns self."""
        with torch.no_grad():
            for linear, (w, b) in zip(self.linears, weights):
                assert isinstance(linear, nn.Linear)
                linear.weight.copy_(w)
                linear.bias.copy_(b)
        return self


def load_checkpoint(path: str | Path, seed: int) -> PlainMLP | KanNet:
    """The network of one seed from ``checkpoints/<variant>.pt`` (read with
    ``weights_only=True``), in the dtype it was trained in: a ``PlainMLP``, or a ``KanNet``
    for the kan kind."""
    from pydantic import TypeAdapter

    from aaf_cli.config import Variant

    payload = torch.load(path, map_location="cpu", weights_only=True)
    config = dict(payload["config"])
    if config.get("slope") is not None:
        config.pop("slope_from", None)  # a control's s, found in its run, is its slope now
    spec = TypeAdapter(Variant).validate_python(config)
    state = payload["state_dicts"][payload["seeds"].index(seed)]
    dtype = next(iter(state.values())).dtype
    model: PlainMLP | KanNet
    if payload["kind"] == "kan":
        model = KanNet(payload["layers"], spec, dtype, payload["activation"])
    else:
        model = PlainMLP(payload["layers"], payload["kind"], payload["activation"], spec, dtype)
    model.load_state_dict(state)
    return model
