"""What a problem gives the rest of ``aaf``: the ``Problem`` protocol and its config side.

A problem is what a run's networks are fitted to: an expression target, a data file, a
differential equation. The experiment, the pipeline, the budget, the figures and the readers of
finished runs ask the problem; none of them tests which kind it is. A problem has two sides:

* its **section** (``ProblemSection``): the config section that poses it, torch-free, loaded
  and checked with the config. It says what the run's numbers are called (``Facts``), how large
  one step is (``Size``), and how the section reads in a stored config (``line``, ``label``);
* its **runtime** (``Problem``): built from a validated config, it makes the data, the training
  objective (None: the MSE to the training values), the summary's entries and the figures.

A new kind of problem is one module with both sides and one entry in ``problems.SECTIONS``
(and, for a new config key, a field of ``problems.ProblemSections``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch

    from aaf_cli.config import ExperimentConfig
    from aaf_cli.experiment import ExperimentResult
    from aaf_cli.models import Groups
    from aaf_cli.results import Band, ModelOutcome, Series
    from aaf_cli.targets import Dataset
    from aaf_cli.train import Objective


@dataclass(frozen=True)
class Facts:
    """What a problem's numbers are, in words: the same in a live run and a stored one.

    ``metric``: the test metric (``test MSE``, ``relative L2 error``); ``quantity``: the same
    without the split's word, as a tuning choice names it (``MSE``); ``loss``: the training
    metric; ``train_points``: what the training loss is computed on; ``columns``: the report
    table's titles of ``final_train``, ``final_val``, ``final_test``, ``last_test`` and
    ``test_at_best_val``; ``test_column``: a run list's title of the test metric, and
    ``test_name`` a report's;
    ``tracker``: the names of the train and test metrics in MLflow and TensorBoard;
    ``series``: what the logged train and test series are, as a comparison's axis says it.
    """

    metric: str
    quantity: str
    loss: str
    train_points: str
    columns: Mapping[str, str]
    test_column: str
    test_name: str
    tracker: tuple[str, str]
    series: tuple[str, str]


#: The facts of every problem whose metric is the mean squared error on held-out points.
MSE_FACTS = Facts(
    metric="test MSE",
    quantity="MSE",
    loss="training MSE",
    train_points="training points",
    columns={
        "final_train": "final train",
        "final_val": "final val",
        "final_test": "final test",
        "last_test": "last test",
        "test_at_best_val": "test at best val",
    },
    test_column="test",
    test_name="test MSE",
    tracker=("train_mse", "test_mse"),
    series=("training MSE (data loss)", "test MSE (data loss)"),
)


#: A problem's own logged values (``Objective.loss``'s and ``evaluate``'s extra values) travel
#: through ``LogRecord.params`` under these prefixes: its loss terms (``term:residual``) and
#: the parameters it identifies (``param:nu``). ``Series.terms`` and ``terms.csv`` hold them,
#: apart from the activation parameters.
TERM_PREFIX = "term:"
PARAM_PREFIX = "param:"


def is_logged_value(name: str) -> bool:
    """Whether a logged name is a problem's term or parameter (not an activation parameter)."""
    return name.startswith((TERM_PREFIX, PARAM_PREFIX))


@dataclass(frozen=True)
class Size:
    """How large one training step and one logged evaluation are (``budget``'s estimates).

    ``points``: points a training step evaluates the networks on; ``test_points`` and
    ``val_points``: points each logged step evaluates; ``order``: the highest derivative of
    the networks a step takes (0 for a regression loss)."""

    points: int
    test_points: int
    val_points: int
    order: int = 0


class ProblemSection(Protocol):
    """A problem's config section (``target:``, ``pde:``): torch-free."""

    #: The problem's kind, as a summary records it.
    kind: ClassVar[str]
    facts: ClassVar[Facts]

    @classmethod
    def claims(cls, section: Mapping[str, Any]) -> bool:
        """Whether a raw section given under this kind's config key is of this kind."""
        ...

    @classmethod
    def absolute_paths(cls, section: dict[str, Any], folder: Path) -> None:
        """Make the file paths the raw section names absolute, read from ``folder``."""
        ...

    def check_layers(self, layers: Sequence[int]) -> None:
        """Refuse a network whose inputs do not fit the problem: ValueError('key: message')."""
        ...

    def size(self, inputs: int) -> Size: ...

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        """The section as plain data (pydantic's)."""
        ...

    @property
    def per_seed(self) -> bool:
        """Whether each model seed gets its own training data (else one set serves all)."""
        ...

    def problem(self, cfg: ExperimentConfig) -> Problem:
        """The runtime side of ``cfg``, whose problem this section poses."""
        ...

    @classmethod
    def line(cls, section: Mapping[str, Any]) -> str:
        """The section as ``aaf show`` states it, from a stored config."""
        ...

    @classmethod
    def label(cls, section: Mapping[str, Any]) -> str | None:
        """The problem's short name in run lists (None: it has none)."""
        ...

    @classmethod
    def title(cls, section: Mapping[str, Any]) -> str:
        """The problem as a figure title names it: a formula, an equation, a file."""
        ...


class Problem(Protocol):
    """A problem at run time: built from a validated config (``ProblemSection.problem``)."""

    def dataset(self, device: torch.device, seeds: Sequence[int]) -> Dataset:
        """Training, validation and test data, made once and shared by every variant;
        ``seeds``: each model's seed in ensemble order (per-seed data follows it)."""
        ...

    def objective(self, data: Dataset, ensemble: Groups, test: bool) -> Objective | None:
        """The training objective in place of the MSE to ``y_train`` (None: the MSE)."""
        ...

    def data_entry(self, exp: ExperimentResult) -> dict[str, Any]:
        """The summary's ``data`` entry: where the numbers come from."""
        ...

    def summary_entries(self, series: Sequence[Series]) -> dict[str, Any]:
        """The problem's own summary entries beside ``data`` (none: {})."""
        ...

    def write_logs(self, folder: Path, series: Sequence[Series]) -> None:
        """The problem's own logged files beside ``metrics.csv`` (a PDE's ``terms.csv``)."""
        ...

    def write_figures(self, folder: Path, drawing: Drawing) -> None:
        """``loss_curves.png``, the fit or solution figure and ``fit.csv``."""
        ...


@dataclass(frozen=True)
class Drawing:
    """What a run's figures are drawn from: the experiment, its per-model histories and
    outcomes, the curves across seeds, the title, the notes under it (diverged seeds left
    out) and each variant's legend label."""

    exp: ExperimentResult
    series: Sequence[Series]
    outcomes: Sequence[ModelOutcome]
    bands: Mapping[str, Mapping[str, Band]]
    title: str
    notes: Sequence[str]
    labels: Mapping[str, str]

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.exp.config.variants]

    def median_predictions(self) -> dict[str, tuple[int, list[float]]]:
        """Each variant's median seed and its predictions on the test points (the models a
        fit figure shows); a variant whose every seed diverged has none."""
        from aaf_cli.results import by_variant, median_seed

        exp = self.exp
        index = {(m.variant, m.seed): i for i, m in enumerate(exp.members)}
        groups = by_variant(list(self.outcomes), self.names)
        predictions: dict[str, tuple[int, list[float]]] = {}
        for name in self.names:
            seed = median_seed(groups[name])
            if seed is not None:
                predictions[name] = (seed, exp.result.predictions[index[(name, seed)]].tolist())
        return predictions


class MseProblem:
    """What every regression problem shares: the MSE to the training values as the objective
    (``train``'s default), no summary entries or logged files of its own, and its loss curves."""

    def objective(self, data: Dataset, ensemble: Groups, test: bool) -> Objective | None:
        return None

    def summary_entries(self, series: Sequence[Series]) -> dict[str, Any]:
        return {}

    def write_logs(self, folder: Path, series: Sequence[Series]) -> None:
        return None

    @staticmethod
    def loss_curves(folder: Path, drawing: Drawing) -> None:
        """``loss_curves.png``: training and test MSE across seeds."""
        from aaf_cli import plots
        from aaf_cli.results import by_variant

        train = drawing.exp.config.train
        plots.loss_curves(
            drawing.bands, folder / "loss_curves.png", drawing.title, train.threshold,
            drawing.notes, drawing.labels, seeds_of=by_variant(list(drawing.series), drawing.names),
            phases=plots.phase_marks(train), first=plots.first_optimizer(train),
        )  # fmt: skip
