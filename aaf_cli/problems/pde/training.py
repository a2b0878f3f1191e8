"""A ``pde:`` experiment as an ordinary run: its data, its training objective, its records.

The regression engine (``train.train``) trains a PINN through its ``objective`` argument: every
model of every group still trains as one ensemble, with the same initial weights per seed, the
same points and the same optimiser. How the PDE's numbers map onto a run folder:

* ``metrics.csv``: ``train_loss`` is the total PINN loss (the weighted sum of the terms, without
  slope recovery), ``test_loss`` the relative L2 error ``||u - u*|| / ||u*||`` on the test grid
  (``pde.test_points``) against the exact or reference solution. ``train.threshold``, the
  summary's ``final_test``, the paired statistics, ``aaf compare``, ``aaf show`` and ``aaf list``
  therefore read the relative L2 error wherever a regression run reads its test MSE;
* ``terms.csv`` (long format: step, variant, seed, name, value): each loss term unweighted
  (``residual``, each condition by name, ``data``) and, for inverse problems, each identified
  parameter (``param:nu``);
* ``fit.csv``: the test grid, the solution there and each variant's median-seed prediction.

Logged values travel through ``LogRecord.params`` under the prefixes ``term:`` and ``param:``
(so that a packed sweep's slicing of records keeps them); ``experiment.series_of`` moves them to
``Series.terms``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from aaf_cli.problems.base import PARAM_PREFIX, TERM_PREFIX, is_logged_value
from aaf_cli.problems.pde.problem import PdeProblem, build_problem, validation_seed
from aaf_cli.problems.pde.residual import PdeParameters, PinnLoss, make_pinn_optimizer
from aaf_cli.problems.pde.spec import PdeConfig
from aaf_cli.runs import TERMS_COLUMNS, TERMS_HEADER, read_terms
from aaf_cli.targets import Dataset, torch_dtype

if TYPE_CHECKING:
    from aaf_cli.config import ExperimentConfig, TrainConfig
    from aaf_cli.experiment import ExperimentResult
    from aaf_cli.lbfgs import StackedLBFGS
    from aaf_cli.models import Groups
    from aaf_cli.problems.base import Drawing
    from aaf_cli.results import Series
    from aaf_cli.train import Losses, StackedAdam, StackedSGD

__all__ = [
    "PARAM_PREFIX",
    "RESERVED_NAMES",
    "TERMS_COLUMNS",
    "TERMS_HEADER",
    "TERM_PREFIX",
    "PdeDataset",
    "PinnObjective",
    "PinnProblem",
    "equation_text",
    "is_logged_value",
    "pde_dataset",
    "pde_summary",
    "read_terms",
    "terms_csv",
    "write_pde_figures",
]

METRICS = {
    "train": "total PINN loss: the weighted sum of the terms' mean squares (without slope "
    "recovery), as minimised",
    "test": "relative L2 error ||u - u*|| / ||u*|| on the test grid, against the exact or "
    "reference solution",
    "threshold": "steps to threshold count on the relative L2 error, at logged steps",
}
"""What a PDE run's train and test columns hold (the summary's ``metrics`` entry)."""


RESERVED_NAMES = ("residual", "data", "total")
"""Loss-term names a condition may not take (``spec`` refuses them)."""


@dataclass(frozen=True)
class PdeDataset(Dataset):
    """The data of a PDE run in the shape the engine and the run folder know: ``x_train`` the
    collocation points ``[N, d]``, ``y_train`` the forcing there ``[N, 1]``, ``x_test`` the test
    grid (the last input varying fastest), ``y_test`` the exact or reference solution there
    (NaN without either), ``x_val`` and ``y_val`` the validation points and the solution there;
    ``problem`` everything else, in float64 on the CPU."""

    problem: PdeProblem | None = None


def pde_dataset(
    pde: PdeConfig, dtype: torch.dtype, device: torch.device, source: str = "config"
) -> PdeDataset:
    """Compile ``pde`` (``build_problem``: points, forcing, conditions, test grid).

    Raises:
        ConfigError: the forcing, a condition value or the solution is not finite where needed.
    """
    problem = build_problem(pde, source)

    def values(points: torch.Tensor | None, known: torch.Tensor | None) -> torch.Tensor | None:
        if points is None:
            return None
        nan = torch.full(points.shape[:1], float("nan"), dtype=torch.float64)
        return (known if known is not None else nan)[:, None]

    tensors = (
        problem.collocation,
        problem.forcing[:, None],
        problem.test_points,
        values(problem.test_points, problem.test_values),
        problem.val_points,
        values(problem.val_points, problem.val_values),
    )
    x_train, y_train, x_test, y_test, x_val, y_val = (
        None if t is None else t.to(device=device, dtype=dtype) for t in tensors
    )
    assert x_train is not None and y_train is not None and x_test is not None
    assert y_test is not None
    return PdeDataset(x_train, y_train, x_test, y_test, x_val, y_val, problem)


class PinnObjective:
    """The PINN loss as ``train.Objective``: the total loss is logged as the training metric
    and minimised (plus each model's slope recovery, which ``train`` adds); the relative L2
    error is the test metric, at logged steps; each term and identified parameter is logged.

    Args:
        problem: the compiled problem.
        model: the ensemble (its members set the trainable parameters' learning rates).
        dtype, device: the ensemble's.
        test: whether the test grid is measured (a tuning phase measures validation only).
    """

    threshold_on: Literal["train", "test"] = "test"
    capturable = False

    def __init__(
        self,
        problem: PdeProblem,
        model: Groups,
        dtype: torch.dtype,
        device: torch.device,
        test: bool = True,
    ) -> None:
        self.pinn = PinnLoss(problem, dtype, device)
        self.params = PdeParameters.of(problem, model.members, dtype, device)
        self.test = test

    def loss(self, model: Groups) -> Losses:
        terms = self.pinn(model, self.params)
        logged = {TERM_PREFIX + k: v.detach() for k, v in terms.terms.items()}
        return terms.total.detach(), terms.total, logged

    def samples(self) -> torch.Tensor:
        return self.pinn.points

    def evaluate(self, model: Groups) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = {} if self.params is None else self.params.trajectories()
        error = self.pinn.relative_l2(model, "test" if self.test else "none")
        return error, {PARAM_PREFIX + k: v for k, v in values.items()}

    def validate(self, model: Groups) -> torch.Tensor:
        return self.pinn.relative_l2(model, "val")

    def modules(self) -> list[nn.Module]:
        return [] if self.params is None else [self.params]

    def optimizer(
        self, model: Groups, cfg: TrainConfig, scale: float = 1.0
    ) -> StackedAdam | StackedSGD | StackedLBFGS:
        return make_pinn_optimizer(model, self.params, cfg, scale)

    def prepare_compile(self, model: Groups, on: bool = True) -> str | None:
        """Forward-mode derivatives, which torch.compile can trace (nested reverse passes it
        cannot); the reason when they do not serve this model. ``on=False``: back to reverse
        mode."""
        return self.pinn.use_forward_mode(model, on)


def terms_csv(series: Sequence[Series]) -> str:
    """Every logged term and identified parameter, long format (``TERMS_COLUMNS``), in step
    order; names as logged (``term:residual``, ``param:nu``)."""
    from aaf_cli.runs import long_csv

    return long_csv(series, "terms", TERMS_HEADER, TERMS_COLUMNS)


def equation_text(pde: PdeConfig) -> str:
    """``u_t + u*u_x - nu*u_xx = 0`` (the forcing as written; ``f(exact)`` when derived)."""
    return PdeConfig.title({"operator": pde.operator, "forcing": pde.forcing, "exact": pde.exact})


def _final(values: Sequence[float]) -> float:
    return values[-1] if values else math.nan


def pde_summary(
    cfg: ExperimentConfig, series: Sequence[Series], variants: Sequence[str]
) -> dict[str, Any]:
    """The summary's ``metrics`` and ``pde`` entries: what the columns mean, the problem, and
    for inverse problems each variant's identified parameters (last logged value per seed,
    non-diverged seeds) beside the true values."""
    from aaf_cli.stats import Summary

    pde = cfg.pde
    assert pde is not None
    true = pde.true_params()
    identified: dict[str, Any] = {}
    for name, value in true.items():
        per_variant: dict[str, Any] = {}
        for v in variants:
            finals = [
                _final(s.terms.get(PARAM_PREFIX + name, []))
                for s in series
                if s.variant == v and s.diverged_at is None
            ]
            entry: dict[str, Any] = {
                **Summary.of(finals).as_dict(),
                "per_seed": {
                    str(s.seed): _final(s.terms.get(PARAM_PREFIX + name, []))
                    for s in series
                    if s.variant == v
                },
            }
            if value is not None:
                errors = [abs(f - value) / abs(value) for f in finals if math.isfinite(f)]
                entry["relative_error_median"] = (
                    sorted(errors)[(len(errors) - 1) // 2] if errors else None
                )
                entry["within_10_percent"] = sum(e <= 0.1 for e in errors)
            per_variant[v] = entry
        identified[name] = {"true": value, "variants": per_variant}
    solution = (
        {"exact": pde.exact}
        if pde.exact is not None
        else {"reference": pde.reference.name}
        if pde.reference is not None
        else {}
    )
    return {
        "metrics": dict(METRICS),
        "pde": {
            "equation": equation_text(pde),
            "inputs": {k: list(v) for k, v in pde.inputs.items()},
            **solution,
            "terms": pde.term_names(),
            "collocation": pde.collocation.points,
            "test_points": int(round(pde.test_points ** (1 / len(pde.inputs))) ** len(pde.inputs)),
            "identified": identified,
        },
    }


def write_pde_figures(folder: Path, pde: PdeConfig, drawing: Drawing) -> None:
    """``loss_curves.png`` (with the terms), ``solution.png`` and ``fit.csv`` (the test grid,
    the solution, each variant's median-seed prediction), ``params.png`` for inverse problems."""
    from aaf_cli import plots
    from aaf_cli.problems.pde import figures
    from aaf_cli.runs import table_csv, write_atomic

    exp, series, title, labels = drawing.exp, drawing.series, drawing.title, drawing.labels
    cfg = exp.config
    names = drawing.names
    figures.loss_curves(
        series,
        names,
        pde.term_names(),
        folder / "loss_curves.png",
        title,
        cfg.train.threshold,
        drawing.notes,
        labels,
        plots.phase_marks(cfg.train),
        plots.first_optimizer(cfg.train),
    )
    points = exp.data.x_test.double().cpu()
    solution = exp.data.y_test[:, 0].double().cpu().tolist()
    predictions = drawing.median_predictions()
    finals = {(o.variant, o.seed): o.final_test for o in drawing.outcomes}
    inputs = list(pde.input_names)
    dims = len(inputs)
    side = figures.grid_side(points.shape[0], dims)
    axes = [sorted(set(points[:, k].tolist()))[:side] for k in range(dims)]
    what = "exact solution" if pde.exact is not None else "reference"
    if pde.exact is not None or pde.reference is not None:
        figures.solution(
            axes,
            inputs,
            solution,
            predictions,
            folder / "solution.png",
            f"{title}\nfinal relative L2 error (median of the last 5% of logged steps) of "
            "each variant's median seed: "
            + ", ".join(
                f"{labels.get(v, v)} {finals[(v, seed)]:.3g}"
                for v, (seed, _) in predictions.items()
            ),
            labels,
            len(cfg.seed_list),
            what,
        )
    columns: dict[str, list[float]] = {n: points[:, k].tolist() for k, n in enumerate(inputs)}
    columns["solution"] = solution
    columns.update({f"{v}_seed{s}": p for v, (s, p) in predictions.items()})
    write_atomic(folder / "fit.csv", table_csv(columns))
    true = pde.true_params()
    if true:
        figures.params_figure(
            series,
            names,
            true,
            folder / "params.png",
            f"{title}\nidentified parameters",
            labels,
            plots.phase_marks(cfg.train),
            plots.first_optimizer(cfg.train),
        )


class PinnProblem:
    """A ``pde:`` config at run time: its compiled problem as data, the PINN loss as the
    objective, its terms and identified parameters in the summary and ``terms.csv``."""

    def __init__(self, cfg: ExperimentConfig, pde: PdeConfig) -> None:
        self.cfg = cfg
        self.pde = pde

    def dataset(self, device: torch.device, seeds: Sequence[int]) -> PdeDataset:
        return pde_dataset(self.pde, torch_dtype(self.cfg.dtype), device)

    def objective(self, data: Dataset, ensemble: Groups, test: bool) -> PinnObjective:
        assert isinstance(data, PdeDataset) and data.problem is not None
        dtype, device = torch_dtype(self.cfg.dtype), data.x_train.device
        return PinnObjective(data.problem, ensemble, dtype, device, test=test)

    def data_entry(self, exp: ExperimentResult) -> dict[str, Any]:
        """The summary's ``data`` entry (the keys a regression run's has, where they mean
        something)."""
        pde = self.pde
        return {
            "target": "pde",
            "expr": equation_text(pde),
            "inputs": self.cfg.model.layers[0],
            "domain": {k: list(v) for k, v in pde.inputs.items()},
            "n_train": int(exp.data.x_train.shape[-2]),
            "n_test": int(exp.data.x_test.shape[0]),
            "n_val": pde.val_points,
            "validation": "uniform random in the box, seed "
            f"{validation_seed(pde)} (apart from the collocation points and the test grid)",
            "sampling": pde.collocation.sampling,
            "noise": pde.data.noise if pde.data is not None else 0.0,
            "same_data_for_all_seeds": True,
        }

    def summary_entries(self, series: Sequence[Series]) -> dict[str, Any]:
        return pde_summary(self.cfg, series, [v.name for v in self.cfg.variants])

    def write_logs(self, folder: Path, series: Sequence[Series]) -> None:
        from aaf_cli.runs import write_atomic

        write_atomic(folder / "terms.csv", terms_csv(series))

    def write_figures(self, folder: Path, drawing: Drawing) -> None:
        write_pde_figures(folder, self.pde, drawing)
