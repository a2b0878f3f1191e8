"""The ``target:`` section of a data file: your own measurements in place of a formula.

    target:
      data: measurements.csv          # .csv, .npz or .parquet; relative to the config's folder
      inputs: [x1, x2]                # the columns the network reads, in this order
      output: y                       # the column it predicts
      split: {validation: 0.1, test: 0.2, seed: 0}
      standardize: true               # inputs and output to mean 0, std 1 (training rows' own)

A path in a config file is read from that file's folder (``absolute_paths``, applied as the file
is read); one given in a ``--set`` or a mapping, from the working directory. The resolved config
stores it absolute (a run folder's ``config.yaml`` reruns from anywhere). The file itself is read
when the run is sized (its row count) and its data made (``problems.data``), before any run
folder exists, once per run; its SHA-256, rows
and split sizes go into the summary. Torch-free.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from aaf_cli.problems.base import MSE_FACTS, Facts, Size
from aaf_cli.schema import MAX_INPUTS, MAX_SEED, Strict

if TYPE_CHECKING:
    from aaf_cli.config import ExperimentConfig
    from aaf_cli.problems.base import Problem
    from aaf_cli.problems.datafile import Split, Table


class DataSplit(Strict):
    """How a data file's rows are divided: random, by ``seed``, the rest for training."""

    validation: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="share of the rows for validation: what every choice a run makes reads",
    )
    test: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of the rows for the test: what the verdict reads"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the random split")

    @model_validator(mode="after")
    def _room_for_training(self) -> DataSplit:
        if self.validation + self.test >= 1.0:
            raise ValueError(
                f"validation {self.validation:g} + test {self.test:g} leaves no rows for "
                "training; keep their sum below 1"
            )
        return self


class DataTargetConfig(Strict):
    """A regression target read from a file of measurements (CSV, NPZ or Parquet)."""

    kind: ClassVar[str] = "data"
    facts: ClassVar[Facts] = MSE_FACTS

    data: str = Field(
        description="the file: .csv (a header row of column names), .npz (one 1-D array per "
        "column) or .parquet; a relative path is read from the config's folder"
    )
    inputs: list[str] = Field(
        min_length=1,
        max_length=MAX_INPUTS,
        description="the input columns, in the order the network reads them",
    )
    output: str = Field(description="the column the network predicts")
    split: DataSplit = Field(default_factory=DataSplit)
    standardize: bool = Field(
        True,
        description="shift and scale each input and the output to mean 0 and std 1 on the "
        "training rows (stated and stored in the summary); the losses are then in units of "
        "the output's std",
    )

    @field_validator("data")
    @classmethod
    def _resolved(cls, data: str) -> str:
        if not data.strip():
            raise ValueError("give the data file's path")
        return str(Path(data).expanduser().resolve())

    @classmethod
    def absolute_paths(cls, section: dict[str, Any], folder: Path) -> None:
        """Make the section's file path absolute, read from ``folder`` (the config file's)."""
        data = section.get("data")
        if isinstance(data, str) and data.strip() and not Path(data).expanduser().is_absolute():
            section["data"] = str(folder / data)

    @field_validator("inputs")
    @classmethod
    def _inputs_once(cls, inputs: list[str]) -> list[str]:
        repeated = sorted({c for c in inputs if inputs.count(c) > 1})
        if repeated:
            raise ValueError(f"column '{repeated[0]}' is listed twice")
        return inputs

    @field_validator("output")
    @classmethod
    def _output_apart(cls, output: str, info: ValidationInfo) -> str:
        if output in (info.data.get("inputs") or []):
            raise ValueError(f"'{output}' is both an input and the output")
        return output

    @property
    def path(self) -> Path:
        return Path(self.data)

    def check_layers(self, layers: Sequence[int]) -> None:
        d = len(self.inputs)
        if layers[0] != d:
            raise ValueError(
                f"model.layers: the data file gives {d} input{'s' if d > 1 else ''} "
                f"({', '.join(self.inputs)}), so layers must start with {d} (got {list(layers)})"
            )

    @property
    def per_seed(self) -> bool:
        return False

    def size(self, inputs: int) -> Size:
        parts = split_of(self, table_of(self).rows)
        return Size(len(parts.train), len(parts.test), len(parts.validation))

    def problem(self, cfg: ExperimentConfig) -> Problem:
        from aaf_cli.problems.data import DataProblem

        return DataProblem(cfg, self)

    @classmethod
    def claims(cls, section: Mapping[str, Any]) -> bool:
        return "data" in section

    @classmethod
    def line(cls, section: Mapping[str, Any]) -> str:
        split = section.get("split") or {}
        return (
            f"data: {section.get('data')}, inputs {section.get('inputs')} -> "
            f"{section.get('output')}, split validation {split.get('validation')} test "
            f"{split.get('test')} (seed {split.get('seed')}), standardized "
            f"{'yes' if section.get('standardize') else 'no'}"
        )

    @classmethod
    def label(cls, section: Mapping[str, Any]) -> str | None:
        return Path(str(section.get("data") or "")).name or None

    @classmethod
    def title(cls, section: Mapping[str, Any]) -> str:
        inputs = ", ".join(str(c) for c in section.get("inputs") or [])
        return f"{section.get('output')}({inputs}) from {cls.label(section)}"


@functools.lru_cache(maxsize=8)
def _read(path: str, stamp: tuple[int, ...], inputs: tuple[str, ...], output: str) -> Table:
    from aaf_cli.problems.datafile import read_table

    return read_table(Path(path), inputs, output)


def table_of(spec: DataTargetConfig) -> Table:
    """The file's used columns, read once while the file is unchanged: its device, inode,
    size, and modification and change times are the same (a copy that keeps the modification
    time still has a new change time, which no program can set). Numpy only."""
    try:
        st = spec.path.stat()
        stamp: tuple[int, ...] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        stamp = ()  # read_table says what is wrong with the path
    return _read(spec.data, stamp, tuple(spec.inputs), spec.output)


@functools.lru_cache(maxsize=32)
def _split(rows: int, validation: float, test: float, seed: int, path: str) -> Split:
    from aaf_cli.problems.datafile import split_rows

    return split_rows(rows, validation, test, seed, key="target.split", path=path)


def split_of(spec: DataTargetConfig, rows: int) -> Split:
    """The rows of each part (drawn once per file size and split)."""
    s = spec.split
    return _split(rows, s.validation, s.test, s.seed, spec.data)
