"""An expression target at run time: points sampled on its domain, the MSE to its values.

Training points (a grid or random, optional noise, per seed with ``target.resample``), a test
grid and validation points drawn apart from both, all computed in float64 on the CPU and then
cast, so that the data do not depend on the device. ``fit.png`` shows the target, the training
points and each variant's median-seed prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aaf_cli.problems.base import Drawing, MseProblem
from aaf_cli.targets import (
    VALIDATION_STREAM,
    Dataset,
    grid_points,
    sample_points,
    target_function,
)

if TYPE_CHECKING:
    from aaf_cli.config import ExperimentConfig
    from aaf_cli.experiment import ExperimentResult
    from aaf_cli.problems.expression_spec import TargetConfig


def data_seed(target: TargetConfig, seed: int | None) -> int:
    """The generator seed of the training data: ``target.seed``, or one per model seed."""
    if seed is None:
        return target.seed
    return target.seed * 1_000_003 + seed + 1


def validation_seed(target: TargetConfig) -> int:
    """The generator seed of the validation points (stated in the summary)."""
    return VALIDATION_STREAM + target.seed


class ExpressionProblem(MseProblem):
    """A named or written target (``target: {name: ...}``, ``{expr: ...}``) at run time."""

    def __init__(self, cfg: ExperimentConfig, target: TargetConfig) -> None:
        self.cfg = cfg
        self.target = target
        self.inputs = cfg.model.layers[0]

    def _finite(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The target's values, or a ConfigError naming the first point where they are not
        finite."""
        bad = (~torch.isfinite(y)).reshape(-1).nonzero()
        if len(bad):
            from aaf_cli.errors import ConfigError

            point = ", ".join(f"{v:.6g}" for v in x[int(bad[0])].tolist())
            key = "target.expr" if self.target.expr is not None else "target"
            raise ConfigError(
                "config",
                key,
                f"the target is {y.reshape(-1)[int(bad[0])].item()} at x = ({point}) "
                f"({len(bad)} of {y.numel()} points not finite); choose a domain where it is "
                "defined",
            )
        return y

    def _sampled(self, n: int, sampling: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` points sampled on the domain by the generator ``seed``, with the target's
        values there and its noise (training and validation data alike)."""
        t = self.target
        gen = torch.Generator().manual_seed(seed)
        x = sample_points(t.domain, n, sampling, gen, self.inputs)
        y = self._finite(x, target_function(t)(x))
        if t.noise > 0:
            y = y + t.noise * torch.randn(y.shape, generator=gen, dtype=torch.float64)
        return x, y

    def training_data(self, seed: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The training points and values of the model seed ``seed`` (None: every seed's)."""
        t = self.target
        return self._sampled(t.n_train, t.sampling, data_seed(t, seed))

    def validation_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``target.n_val`` points drawn uniformly at random on the domain (apart from the
        training points and the test grid), with the target's values there and, like the
        training data, its noise: what every choice a run makes reads, so that the test data
        enters none."""
        return self._sampled(self.target.n_val, "random", validation_seed(self.target))

    def dataset(self, device: torch.device, seeds: Sequence[int]) -> Dataset:
        t = self.target
        if t.resample:
            order = list(seeds)
            per_seed = {s: self.training_data(s) for s in dict.fromkeys(order)}
            x_train = torch.stack([per_seed[s][0] for s in order])
            y_train = torch.stack([per_seed[s][1] for s in order])
        else:
            x_train, y_train = self.training_data(None)
        x_test = grid_points(t.domain, t.n_test, self.inputs)
        y_test = self._finite(x_test, target_function(t)(x_test))
        x_val, y_val = self.validation_data()
        tensors = (x_train, y_train, x_test, y_test, x_val, y_val)
        return Dataset.on(tensors, device, self.cfg.dtype)

    def data_entry(self, exp: ExperimentResult) -> dict[str, Any]:
        t = self.target
        return {
            "target": t.name or "expr",
            "expr": t.expr,
            "inputs": self.inputs,
            "domain": list(t.domain),
            "n_train": int(exp.data.x_train.shape[-2]),
            "n_test": int(exp.data.x_test.shape[0]),
            "n_val": t.n_val,
            "validation": "uniform random on the domain, seed "
            f"{validation_seed(t)} (apart from the training points and the test grid)",
            "sampling": t.sampling,
            "noise": t.noise,
            "same_data_for_all_seeds": not t.resample,
        }

    def write_figures(self, folder: Path, drawing: Drawing) -> None:
        """``loss_curves.png``, ``fit.png`` (one or two inputs; more: the numbers only) and
        ``fit.csv``: the test grid, the target there and each variant's median-seed
        prediction."""
        from aaf_cli import plots, runs

        self.loss_curves(folder, drawing)
        data, title, labels = drawing.exp.data, drawing.title, drawing.labels
        dims = data.x_test.shape[-1]
        x_cols = [data.x_test[:, k].double().cpu().tolist() for k in range(dims)]
        y_test = data.y_test[:, 0].double().cpu().tolist()
        index = {(m.variant, m.seed): i for i, m in enumerate(drawing.exp.members)}
        predictions = drawing.median_predictions()
        x_train_all, y_train_all = data.x_train, data.y_train
        if x_train_all.dim() == 3:  # resampled per seed: the points of the first plotted model
            first = next(iter(predictions.items()), None)
            k = index[(first[0], first[1][0])] if first else 0
            x_train_all, y_train_all = x_train_all[k], y_train_all[k]
        x_train = [x_train_all[:, k].double().cpu().tolist() for k in range(dims)]
        y_train = y_train_all.reshape(-1).double().cpu().tolist()
        seeds = len(self.cfg.seed_list)
        if dims == 1:
            plots.fit(
                x_cols[0], y_test, x_train[0], y_train, predictions, folder / "fit.png", title,
                labels, seeds,
            )  # fmt: skip
        elif dims == 2:
            plots.fit_2d(
                x_cols, y_test, x_train, predictions, folder / "fit.png", title, labels, seeds
            )
        # More inputs: no picture, the numbers are in fit.csv.
        columns: dict[str, list[float]] = (
            {"x": x_cols[0]} if dims == 1 else {f"x{k + 1}": c for k, c in enumerate(x_cols)}
        )
        columns["target"] = y_test
        columns.update({f"{v}_seed{s}": p for v, (s, p) in predictions.items()})
        runs.write_atomic(folder / "fit.csv", runs.table_csv(columns))
