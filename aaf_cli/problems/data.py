"""A data file at run time: its rows split into training, validation and test parts.

The file is read once per process (``table_of``: cached by path, size and modification time),
split at random by ``target.split.seed`` (``datafile.split_rows``) and, with ``standardize``,
shifted and scaled by the training rows' own means and standard deviations, so that neither
the validation nor the test rows inform the scaling. Every model of every variant and seed
trains on the same rows; every choice a run makes (the tuning phase's rates, the step of
``test_at_best_val``) reads the validation rows; the verdict reads the test rows.

``fit.png`` plots each variant's median-seed prediction against the measured output on the test
rows (and, for one input, both against that input); ``fit.csv`` holds the test rows in the
file's units with each prediction. The summary's ``data`` entry holds the file's SHA-256, its
rows, the split's sizes and the scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aaf_cli.problems.base import Drawing, MseProblem
from aaf_cli.problems.data_spec import DataTargetConfig, split_of, table_of
from aaf_cli.problems.datafile import Scaling, fit_scaling
from aaf_cli.targets import Dataset

if TYPE_CHECKING:
    import numpy as np

    from aaf_cli.config import ExperimentConfig
    from aaf_cli.experiment import ExperimentResult
    from aaf_cli.results import Series


class DataProblem(MseProblem):
    """``target: {data: file, inputs: [...], output: y}`` at run time."""

    def __init__(self, cfg: ExperimentConfig, spec: DataTargetConfig) -> None:
        self.cfg = cfg
        self.spec = spec
        self.table = table_of(self.spec)
        self.split = split_of(self.spec, self.table.rows)
        self.scaling: Scaling | None = None
        if self.spec.standardize:
            train = self.split.train
            self.scaling = fit_scaling(
                self.table.x[train],
                self.table.y[train],
                names=[*self.spec.inputs, self.spec.output],
                path=self.spec.data,
            )

    def _part(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.table.x[rows], self.table.y[rows]
        if self.scaling is not None:
            x = (x - self.scaling.x_mean) / self.scaling.x_std
            y = (y - self.scaling.y_mean) / self.scaling.y_std
        return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())[:, None]

    def dataset(self, device: torch.device, seeds: Sequence[int]) -> Dataset:
        parts = (self.split.train, self.split.test, self.split.validation)
        (x_train, y_train), (x_test, y_test), (x_val, y_val) = (self._part(r) for r in parts)
        tensors = (x_train, y_train, x_test, y_test, x_val, y_val)
        return Dataset.on(tensors, device, self.cfg.dtype)

    def units(self) -> str:
        """What the losses' numbers are in."""
        if self.scaling is None:
            return f"squared units of {self.spec.output}, as in the file"
        return (
            f"units of {self.spec.output}'s training standard deviation "
            f"({self.scaling.y_std:.6g}) squared: the MSE of the standardized output"
        )

    def data_entry(self, exp: ExperimentResult) -> dict[str, Any]:
        s, split = self.spec, self.spec.split
        sizes = {
            "train": len(self.split.train),
            "validation": len(self.split.validation),
            "test": len(self.split.test),
        }
        scaling = None
        if self.scaling is not None:
            scaling = self.scaling.as_dict(s.inputs, s.output)
        return {
            "target": self.spec.path.name,
            "expr": None,
            "file": s.data,
            "sha256": self.table.sha256,
            "rows": self.table.rows,
            "columns": list(self.table.columns),
            "input_columns": list(s.inputs),
            "output": s.output,
            "inputs": len(s.inputs),
            "domain": None,
            "n_train": sizes["train"],
            "n_test": sizes["test"],
            "n_val": sizes["validation"],
            "split": {"validation": split.validation, "test": split.test, "seed": split.seed},
            "validation": f"a random {split.validation:g} of the file's rows (split seed "
            f"{split.seed}), apart from the training and test rows",
            "sampling": "the file's rows",
            "noise": None,
            "standardized": scaling,
            "same_data_for_all_seeds": True,
        }

    def summary_entries(self, series: Sequence[Series]) -> dict[str, Any]:
        units = self.units()
        return {
            "metrics": {
                "train": f"MSE on the training rows, in {units}",
                "test": f"MSE on the test rows, in {units}",
                "threshold": "steps to threshold count on the training MSE, at every step",
            }
        }

    def _original(self, values: np.ndarray, column: int | None) -> list[float]:
        """Standardized values back in the file's units (``column``: an input; None: y)."""
        if self.scaling is None:
            return [float(v) for v in values]
        if column is None:
            mean, std = self.scaling.y_mean, self.scaling.y_std
        else:
            mean = float(self.scaling.x_mean[column])
            std = float(self.scaling.x_std[column])
        return [float(v) * std + mean for v in values]

    def write_figures(self, folder: Path, drawing: Drawing) -> None:
        """``loss_curves.png``, ``fit.png`` (prediction against measurement on the test rows)
        and ``fit.csv`` (the test rows and each variant's median-seed prediction, in the
        file's units)."""
        import numpy as np

        from aaf_cli import plots, runs

        self.loss_curves(folder, drawing)
        spec, test, train = self.spec, self.split.test, self.split.train
        inputs = {n: self.table.x[test, k].tolist() for k, n in enumerate(spec.inputs)}
        measured = self.table.y[test].tolist()
        predictions = {
            v: (seed, self._original(np.asarray(p), None))
            for v, (seed, p) in drawing.median_predictions().items()
        }
        one = len(spec.inputs) == 1
        plots.parity(
            measured,
            predictions,
            folder / "fit.png",
            drawing.title,
            spec.output,
            drawing.labels,
            len(self.cfg.seed_list),
            along=(spec.inputs[0], inputs[spec.inputs[0]]) if one else None,
            training=(self.table.x[train, 0].tolist(), self.table.y[train].tolist())
            if one
            else None,
        )
        columns: dict[str, list[float]] = {**inputs, spec.output: measured}
        columns.update({f"{v}_seed{s}": p for v, (s, p) in predictions.items()})
        runs.write_atomic(folder / "fit.csv", runs.table_csv(columns))
