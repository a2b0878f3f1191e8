"""The PINN loss of a whole batched ensemble: per-model derivatives, residual, conditions, data.

The ensemble (``models.Groups``) maps inputs ``[M, N, d]`` to ``[M, N, 1]``, each model reading
its own slice. ``model_derivatives`` gives every model its own copy of the points (a leaf that
requires grad) and differentiates ``u.sum()`` with ``torch.autograd.grad(create_graph=True)``:
since model m's output at point n depends only on slice ``[m, n]``, the gradient of the sum at
``[m, n]`` is model m's own derivative there (see ``autodiff``). With one shared ``[N, d]``
input the same call would add up the M models' derivatives: the per-model copy is what makes
the batched derivatives right, and the tests check them against per-model ``nn.Module`` s.

All point sets (collocation, each condition, observations) go through one forward pass and one
backward pass per derivative level, concatenated along the point axis; each term then reads its
own rows. The loss of model m is its own weighted sum, so the summed loss gives every model the
gradient it would get alone, as in the regression engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from aaf_cli.problems.pde.autodiff import input_derivatives
from aaf_cli.problems.pde.problem import PdeProblem

if TYPE_CHECKING:
    from aaf_cli.config import TrainConfig
    from aaf_cli.lbfgs import StackedLBFGS
    from aaf_cli.models import Groups, ModelSpec
    from aaf_cli.train import StackedAdam, StackedSGD

__all__ = [
    "PdeParameters",
    "PinnLoss",
    "PinnTerms",
    "make_pinn_optimizer",
    "model_derivatives",
    "relative_l2",
]


def model_derivatives(
    model: nn.Module,
    points: torch.Tensor,
    size: int,
    wanted: Sequence[tuple[int, ...]],
    create_graph: bool = True,
) -> dict[tuple[int, ...], torch.Tensor]:
    """u and its input derivatives for every model of a batched ensemble.

    Args:
        model: maps ``[M, N, d]`` to ``[M, N, 1]``, model m reading slice m only (``Groups``,
            ``Ensemble``).
        points: ``[N, d]`` shared by all models, or ``[M, N, d]``.
        size: the number of models M.
        wanted: derivatives as sorted input indices (``(0,)`` u_x, ``(1, 1)`` u_tt).
        create_graph: keep the graph (for a loss that is trained on).

    Returns:
        ``{(): u, index: derivative}``, each ``[M, N]``.
    """
    base = points.detach()
    if base.dim() == 2:
        base = base.expand(size, *base.shape)
    # A fresh leaf per call, one slice per model: never differentiate through a shared input.
    coords = base.clone().requires_grad_(True)
    with torch.enable_grad():
        u = model(coords)[..., 0]
        return input_derivatives(u, coords, wanted, create_graph)


class PdeParameters(nn.Module):
    """Trainable PDE coefficients, one value per model (each model identifies its own).

    Args:
        initial: name -> initial value (``PdeConfig.trainable_params()``).
        members: the ensemble's models, in order (their learning rates are used).
        dtype, device: of the values.
        log: the names learned as ``exp(raw)`` (``scale: log``); the raw parameter starts at
            ``log(initial)``.
        rates: a learning rate of their own for some names (``lr:``), for every model.

    Attributes:
        values: name -> the raw trainable parameter ``[M]`` (the log of the value for ``log``
            names).
    """

    def __init__(
        self,
        initial: Mapping[str, float],
        members: Sequence[ModelSpec],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        log: Sequence[str] = (),
        rates: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.members = list(members)
        self.log = tuple(log)
        self.rates = dict(rates or {})
        self.values = nn.ParameterDict(
            {
                name: nn.Parameter(
                    torch.full(
                        (len(self.members),),
                        math.log(value) if name in self.log else float(value),
                        dtype=dtype,
                        device=device,
                    )
                )
                for name, value in initial.items()
            }
        )

    @classmethod
    def of(
        cls,
        problem: PdeProblem,
        members: Sequence[ModelSpec],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> PdeParameters | None:
        """The trainable coefficients of ``problem`` for ``members``; None if it has none."""
        if not problem.trainable_params:
            return None
        cfg = problem.config
        return cls(
            problem.trainable_params, members, dtype, device, cfg.log_params(), cfg.param_rates()
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        """name -> ``[M]`` values (with their graph)."""
        return {
            name: value.exp() if name in self.log else value for name, value in self.values.items()
        }

    def trajectories(self) -> dict[str, torch.Tensor]:
        """name -> ``[M]`` detached values, for logging."""
        return {name: value.detach() for name, value in self.as_dict().items()}

    def rows(
        self, default_lr: float, offset: int = 0, scale: float = 1.0
    ) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """Every parameter with its learning rate per model (its own ``lr``, else the model's:
        its variant's or ``default_lr``; an own rate times ``scale``, as ``Ensemble.rows``), in
        the form of ``Ensemble.rows``."""
        out = []
        for name, value in self.values.items():
            own = self.rates.get(name)
            lr = torch.tensor(
                [
                    own * scale if own is not None else default_lr if m.lr is None else m.lr * scale
                    for m in self.members
                ],
                dtype=value.dtype,
                device=value.device,
            )
            out.append((value, lr, offset))
        return out


@dataclass(frozen=True)
class PinnTerms:
    """The per-model losses of one evaluation.

    Attributes:
        total: the weighted sum that is minimised, ``[M]`` (without slope recovery).
        terms: each term's mean square, unweighted, ``[M]``: ``residual``, each condition by
            name, ``data``.
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


class PinnLoss:
    """The PINN loss of every model of an ensemble, on the points of a problem.

    Args:
        problem: the compiled problem (float64 CPU tensors; cast here).
        dtype, device: those of the ensemble.
    """

    def __init__(
        self,
        problem: PdeProblem,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.problem = problem
        self.dtype = dtype
        self.device = torch.device(device)

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=self.device, dtype=dtype)

        sets = [problem.collocation, *(c.points for c in problem.conditions)]
        if problem.data_points is not None:
            sets.append(problem.data_points)
        bounds = [0]
        for s in sets:
            bounds.append(bounds[-1] + s.shape[0])
        slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        self.points = cast(torch.cat(sets))
        self.collocation = slices[0]
        self.condition_rows = slices[1 : 1 + len(problem.conditions)]
        self.data_rows = slices[-1] if problem.data_points is not None else None
        self.forcing = cast(problem.forcing)
        self.condition_values = [cast(c.values) for c in problem.conditions]
        self.data_values = cast(problem.data_values) if problem.data_values is not None else None
        self.test_points = cast(problem.test_points)
        self.test_values = cast(problem.test_values) if problem.test_values is not None else None
        self.val_points = cast(problem.val_points) if problem.val_points is not None else None
        self.val_values = cast(problem.val_values) if problem.val_values is not None else None
        weights = problem.config.weights
        self.weights = {"residual": weights.residual, "data": weights.data}
        self.weights.update({c.name: c.weight for c in problem.conditions})
        self.condition_counts = {c.name: int(c.points.shape[0]) for c in problem.conditions}
        # Forward-mode derivatives (``taylor``), which torch.compile can trace: set by
        # ``use_forward_mode``. Their rows: the collocation points, or every point when a
        # condition prescribes a derivative.
        self.forward_mode = False
        needs = any(c.derivative != () for c in problem.conditions)
        self.derivative_rows = self.points.shape[0] if needs else self.collocation.stop

    def use_forward_mode(self, model: Groups, on: bool = True) -> str | None:
        """Switch to forward-mode derivatives (``taylor``) if they serve ``model`` and this
        problem; return None then, else the reason (and keep reverse mode).
        ``on=False`` switches back to reverse mode."""
        from aaf_cli.problems.pde.taylor import unsupported

        reason = unsupported(model, self.problem.derivatives) if on else None
        self.forward_mode = on and reason is None
        return reason

    def __call__(self, model: Groups, params: PdeParameters | None = None) -> PinnTerms:
        """Every model's loss and its terms (with the graph, for ``backward``).

        Args:
            model: the ensemble.
            params: the trainable coefficients (inverse problems), or None.
        """
        problem = self.problem
        if problem.trainable_params and params is None:
            raise ValueError(
                "this problem learns " + ", ".join(problem.trainable_params) + ": pass its "
                "PdeParameters (PdeParameters.of(problem, members, dtype, device))"
            )
        if self.forward_mode:
            from aaf_cli.problems.pde.taylor import taylor_derivatives

            found = taylor_derivatives(
                model, self.points, self.derivative_rows, problem.derivatives
            )
        else:
            found = model_derivatives(model, self.points, model.size, problem.derivatives)
        coefficients: dict[str, float | torch.Tensor] = dict(problem.fixed_params)
        if params is not None:
            coefficients.update(params.as_dict())
        rows = self.collocation
        at = {index: found[index][:, rows] for index in problem.operator.names.values()}
        points = self.points[rows].expand(model.size, -1, -1)
        residual = problem.operator(at, points, coefficients) - self.forcing
        terms = {"residual": residual.square().mean(dim=1)}
        for cond, rows, values in zip(
            problem.conditions, self.condition_rows, self.condition_values
        ):
            terms[cond.name] = (found[cond.derivative][:, rows] - values).square().mean(dim=1)
        if self.data_rows is not None and self.data_values is not None:
            terms["data"] = (found[()][:, self.data_rows] - self.data_values).square().mean(dim=1)
        pooled = problem.config.condition_loss == "pooled" and problem.conditions
        total = sum(
            (
                self.weights[name] * value
                for name, value in terms.items()
                if not (pooled and name in self.condition_counts)
            ),
            start=torch.zeros_like(terms["residual"]),
        )
        if pooled:
            # One mean square over every condition point: each condition's mean square
            # counts its share of the points.
            pooled_count = float(sum(count for count in self.condition_counts.values()))
            total = total + sum(
                (
                    self.weights[name] * (count / pooled_count) * terms[name]
                    for name, count in self.condition_counts.items()
                ),
                start=torch.zeros_like(total),
            )
        return PinnTerms(total, terms)

    def relative_l2(self, model: Groups, split: str = "test") -> torch.Tensor:
        """Each model's relative L2 error on the test grid (``split`` ``test``) or at the
        validation points (``val``), ``[M]``; NaN without an exact or reference solution (or
        for any other ``split``: nothing measured)."""
        sets = {
            "test": (self.test_points, self.test_values),
            "val": (self.val_points, self.val_values),
        }
        points, values = sets.get(split, (None, None))
        if points is None or values is None:
            return torch.full((model.size,), float("nan"), dtype=self.dtype, device=self.device)
        return relative_l2(model, points, values)


def relative_l2(model: nn.Module, points: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``||u_m - u*|| / ||u*||`` over ``points`` for every model m, ``[M]`` (no graph).

    Args:
        model: the ensemble; ``model(points)`` is ``[M, N, 1]`` for shared points ``[N, d]``.
        points: the test grid.
        values: the exact or reference solution there, ``[N]``.
    """
    with torch.no_grad():
        prediction = model(points)[..., 0]
        error = (prediction - values).square().sum(dim=1).sqrt()
        result: torch.Tensor = error / values.square().sum().sqrt()
        return result


def make_pinn_optimizer(
    model: Groups, params: PdeParameters | None, cfg: TrainConfig, scale: float = 1.0
) -> StackedAdam | StackedSGD | StackedLBFGS:
    """``train.make_optimizer`` over the ensemble, plus the trainable PDE coefficients (each
    model's own, at the model's learning rate, without weight decay)."""
    from aaf_cli.train import stacked_optimizer, weight_decays

    rows = model.rows(cfg.lr, scale)
    decays: list[torch.Tensor | None] = list(weight_decays(model, cfg))
    if params is not None:
        extra = params.rows(cfg.lr, scale=scale)
        rows += extra
        decays += [None] * len(extra)
    return stacked_optimizer(rows, decays, cfg, model.size)
