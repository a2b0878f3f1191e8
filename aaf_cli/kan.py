"""Kolmogorov-Arnold networks: M of them batched, and one as users write it.

A KAN layer (Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756, 2024) puts a
learnable function on every edge i -> j and sums them per output:

    y_j = sum_i  w_b[i, j] * b(x_i)  +  w_s[i, j] * sum_c coef[i, j, c] * B_c(x_i)

with b the base branch (silu in ``pykan``), B_c the G + k B-splines of order k on a grid of G
intervals (``aaf_cli.splines``), ``w_b`` (pykan's ``scale_base``), ``w_s`` (``scale_sp``) and
``coef`` trained: in * out * (G + k + 2) parameters per layer, no bias. Initialisation as
``pykan`` 0.2's ``KAN`` does it: coefficients fitted (least squares) to uniform noise of
amplitude 0.3 / G at the grid points, w_b uniform in +-1/sqrt(in), w_s = 1/sqrt(in).

``KanEnsemble`` holds M models' parameters stacked on a leading model axis and evaluates one
layer of all of them with a single batched product: the base branch and the basis values of
an input are concatenated, ``[M, N, in * (G + k + 1)]``, and multiplied by the matching stack of
w_b and w_s * coef. ``KanNet`` is one model written edge by edge as pykan writes it: what the
batched engine is tested against and what checkpoints load into.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from aaf_cli import splines
from aaf_cli.activations import Family, get_activation
from aaf_cli.stack import Stack

#: pykan 0.2's defaults: the amplitude of the noise the coefficients are fitted to (over G; its
#: ``KAN`` passes 0.3, its ``KANLayer`` alone would take 0.5), and the grid fraction taken
#: uniform (not from sample quantiles) when a grid is updated.
NOISE_SCALE = 0.3
GRID_EPS = 0.02


def kan_init(
    layers: Sequence[int], seed: int, grid: int, order: int, lo: float, hi: float
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(coef [in, out, G + k], scale_base [in, out], scale_sp [in, out])`` of every layer,
    in float64, from one seed (a private CPU generator: the same on every device and dtype)."""
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    t = splines.knots(lo, hi, grid, order, f64)
    points = splines.grid_points(t, order)  # [G + 1]
    out = []
    for fan_in, fan_out in zip(layers[:-1], layers[1:]):
        noise = torch.rand(grid + 1, fan_in, fan_out, generator=gen, dtype=f64) - 0.5
        noise *= NOISE_SCALE / grid
        # One fit per input: values [in, G + 1, out] at the grid points -> [in, out, G + k].
        coef = splines.fit(points.expand(fan_in, -1), noise.transpose(0, 1), t, order)
        bound = 1.0 / math.sqrt(fan_in)
        scale_base = (torch.rand(fan_in, fan_out, generator=gen, dtype=f64) * 2 - 1) * bound
        scale_sp = torch.full((fan_in, fan_out), bound, dtype=f64)
        out.append((coef, scale_base, scale_sp))
    return out


class KanFamily(Family):
    """What the training loop asks of a group's activation family, for a KAN: its base
    branch, and none of the slope kinds' extras (no recovery term, no logged parameters, no
    closed-form derivatives: a PINN takes a KAN's by reverse mode)."""

    kind = "kan"

    def has_jet(self) -> bool:
        return False


class KanEnsemble(Stack):
    """M KANs of the same widths, grid and order, evaluated and trained as one.

    The interface is ``models.Ensemble``'s (the training loop, the problems and the run folder
    treat both alike). Every model's grid is its own buffer ``[M, in, G + 2k + 1]`` per layer,
    so that ``update_grid`` can fit each model's grid to its own layer inputs.

    Args:
        layers: widths ``[in, hidden..., out]``.
        base: the base branch b(x).
        members: one ``ModelSpec`` per model; its ``spec`` carries grid, order and grid_range
            (equal within an ensemble).
        dtype, device: of every tensor.
    """

    kind = "kan"

    def __init__(
        self,
        layers: Sequence[int],
        base: str,
        members: Sequence[Any],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(members)
        self.layers = list(layers)
        self.base = base
        spec = self.members[0].spec
        self.grid, self.order = int(spec.grid), int(spec.order)
        lo, hi = (float(v) for v in spec.grid_range)
        self.fn = get_activation(base)
        per_seed = {
            s: kan_init(layers, s, self.grid, self.order, lo, hi)
            for s in dict.fromkeys(m.seed for m in self.members)
        }
        t = splines.knots_of(spec, dtype).to(device)
        self.coef = nn.ParameterList()
        self.scale_base = nn.ParameterList()
        self.scale_sp = nn.ParameterList()
        for k, fan_in in enumerate(layers[:-1]):
            for store, j in ((self.coef, 0), (self.scale_base, 1), (self.scale_sp, 2)):
                stacked = torch.stack([per_seed[m.seed][k][j] for m in self.members])
                store.append(nn.Parameter(stacked.to(device=device, dtype=dtype).contiguous()))
            self.register_buffer(f"knots{k}", t.expand(len(self.members), fan_in, -1).clone())
        self.family = KanFamily(base, layers[1:-1])
        #: Whether every model still has the same grids (until ``update_grid``).
        self.shared_grids = True
        update = getattr(spec, "grid_update", None)
        #: The steps before which ``update_grid`` runs (``KanVariant.grid_update``).
        self.grid_steps = frozenset(update.steps()) if update is not None else frozenset()

    def knots(self, k: int) -> torch.Tensor:
        """Layer k's knots ``[M, in, G + 2k + 1]``."""
        out: torch.Tensor = getattr(self, f"knots{k}")
        return out

    def decayed(self) -> list[nn.Parameter]:
        """The parameters a weight decay applies to: every one (a KAN's splines are its
        weights)."""
        return list(self.parameters())

    # Inside the stack activations are held point-last, ``[M, in, N]``: the basis values of a
    # layer are then ``[M, in, G + k, N]``, whose recursion runs along rows of N contiguous
    # points (the basis index last would make every operation a short strided loop), and a
    # layer is one product ``[M, out, F] @ [M, F, N]``.

    def _features(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``[M, in * (G + k + 1), N]`` from layer inputs ``[M, in, N]`` and their knots
        ``[M, in, T]`` (or without the model axis): each input's base branch, then its basis
        values."""
        b = splines.basis_rows(h, t, self.order)  # [M, in, G + k, N]
        features = torch.cat([self.fn(h).unsqueeze(-2), b], dim=-2)
        return features.flatten(-3, -2)

    def _weights(self, k: int) -> torch.Tensor:
        """``[M, out, in * (G + k + 1)]``, in ``_features``' order."""
        coef = self.coef[k] * self.scale_sp[k].unsqueeze(-1)  # [M, in, out, G + k]
        w = torch.cat([self.scale_base[k].unsqueeze(-1), coef], dim=-1)
        return w.transpose(1, 2).flatten(2)

    def _layer(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """Layer k: ``[M, in, N]`` -> ``[M, out, N]``."""
        return torch.bmm(self._weights(k), self._features(h, self.knots(k)))

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs ``[N, in]`` or ``[M, N, in]`` as ``[M, in, N]``."""
        return (x.expand(self.size, *x.shape) if x.dim() == 2 else x).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[M, N, out]`` for inputs ``[N, in]`` (shared) or ``[M, N, in]``."""
        first = 0
        if x.dim() == 2 and self.shared_grids:
            # Shared inputs on every model's same first grid: their features once, for all.
            features = self._features(x.T, self.knots(0)[0])  # [in * (G + k + 1), N]
            h = torch.matmul(self._weights(0), features)
            first = 1
        else:
            h = self._rows(x)
        for k in range(first, len(self.layers) - 1):
            h = self._layer(h, k)
        return h.transpose(1, 2)

    def layer_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's input ``[M, N, in]`` for inputs ``x``."""
        h = self._rows(x)
        out = []
        for k in range(len(self.layers) - 1):
            out.append(h.transpose(1, 2))
            h = self._layer(h, k)
        return out

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor) -> None:
        """Refit every model's grids to its own layer inputs at ``x``, keeping its functions
        (pykan's ``update_grid_from_samples``): each grid becomes GRID_EPS of a uniform grid
        over the samples' range plus 1 - GRID_EPS of the grid at their quantiles, and each
        edge's coefficients are refitted by least squares to the spline's values at the
        samples. An input whose samples are all equal keeps its grid (pykan's would collapse
        to one point and drop that input's splines)."""
        self.shared_grids = False
        h = self._rows(x)
        for k in range(len(self.layers) - 1):
            # Each layer's inputs from the layers before it as refitted (pykan reruns the
            # model before each layer).
            if k:
                h = self._layer(h, k - 1)
            t = self.knots(k)
            ordered = torch.sort(h, dim=-1).values  # [M, in, N]
            samples = ordered.shape[-1]
            ids = [int(samples / self.grid * i) for i in range(self.grid)] + [-1]
            adaptive = ordered[..., ids]  # [M, in, G + 1]
            span = (adaptive[..., -1:] - adaptive[..., :1]) / self.grid
            steps = torch.arange(self.grid + 1, dtype=h.dtype, device=h.device)
            uniform = adaptive[..., :1] + span * steps
            points = GRID_EPS * uniform + (1 - GRID_EPS) * adaptive
            spacing = (points[..., -1:] - points[..., :1]) / self.grid
            before = points[..., :1] - spacing * torch.arange(
                self.order, 0, -1, dtype=h.dtype, device=h.device
            )
            after = points[..., -1:] + spacing * torch.arange(
                1, self.order + 1, dtype=h.dtype, device=h.device
            )
            new = torch.cat([before, points, after], dim=-1)
            new = torch.where(spacing > 0, new, t)
            # The old spline values at the samples: [M, in, N, out].
            b = splines.basis(ordered, t.unsqueeze(-2), self.order)  # [M, in, N, G + k]
            values = torch.einsum("minc,mioc->mino", b, self.coef[k])
            self.coef[k].copy_(splines.fit(ordered, values, new, self.order))
            t.copy_(new)

    def state_dict_of(self, index: int) -> dict[str, torch.Tensor]:
        """Model ``index`` as a ``KanNet`` state dict (CPU tensors)."""
        state: dict[str, torch.Tensor] = {}
        for k in range(len(self.layers) - 1):
            state[f"kan.{k}.coef"] = self.coef[k][index].detach()
            state[f"kan.{k}.scale_base"] = self.scale_base[k][index].detach()
            state[f"kan.{k}.scale_sp"] = self.scale_sp[k][index].detach()
            state[f"kan.{k}.knots"] = self.knots(k)[index].detach()
        return {key: v.cpu().clone() for key, v in state.items()}


class KanLayer(nn.Module):
    """One KAN layer of one model, edge by edge as pykan's ``KANLayer`` computes it."""

    knots: torch.Tensor

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        grid: int,
        order: int,
        grid_range: Sequence[float],
        base: str,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.order = order
        self.fn = get_activation(base)
        lo, hi = (float(v) for v in grid_range)
        t = splines.knots(lo, hi, grid, order, dtype or torch.get_default_dtype())
        self.register_buffer("knots", t.expand(fan_in, -1).clone())
        self.coef = nn.Parameter(torch.zeros(fan_in, fan_out, grid + order, dtype=dtype))
        self.scale_base = nn.Parameter(torch.zeros(fan_in, fan_out, dtype=dtype))
        self.scale_sp = nn.Parameter(torch.ones(fan_in, fan_out, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = splines.basis(x, self.knots, self.order)  # [N, in, G + k]
        spline = torch.einsum("nic,ioc->nio", b, self.coef)  # every edge's spline
        edges = self.scale_base * self.fn(x).unsqueeze(-1) + self.scale_sp * spline
        return edges.sum(dim=1)


class KanNet(nn.Module):
    """One KAN as users write it (layer by layer, edge by edge); loads ``aaf run``'s KAN
    checkpoints. ``spec``: the variant's config (grid, order, grid_range); ``base``: the base
    branch it trained with (default: the spec's activation)."""

    def __init__(
        self,
        layers: Sequence[int],
        spec: Any,
        dtype: torch.dtype | None = None,
        base: str | None = None,
    ) -> None:
        super().__init__()
        base = base or spec.activation
        self.kan = nn.ModuleList(
            KanLayer(i, o, spec.grid, spec.order, spec.grid_range, base, dtype)
            for i, o in zip(layers[:-1], layers[1:])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.kan:
            x = layer(x)
        return x

    def load_init(
        self, weights: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> KanNet:
        """Copy ``kan_init`` output into the layers; returns self."""
        with torch.no_grad():
            for layer, (coef, base, sp) in zip(self.kan, weights):
                assert isinstance(layer, KanLayer)
                layer.coef.copy_(coef)
                layer.scale_base.copy_(base)
                layer.scale_sp.copy_(sp)
        return self
