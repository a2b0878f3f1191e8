"""Read a regression experiment's measurements: a table of named numeric columns.

A data file is a CSV (comma-separated UTF-8 text whose first non-blank line names the columns),
an NPZ (``numpy.savez``: one named 1-D array per column) or a Parquet file. Some of its columns
are the network's inputs and one is its output; only those are read and checked, the others may
hold anything. Every problem with the data is a :class:`~aaf_cli.errors.ConfigError` whose message
is one line that starts with the file's resolved path.

Where a message names a row, a CSV's is the file's line number ("line 7": the header is line 1,
so the first data row is line 2; skipped blank lines still count, and a quoted cell that spans
lines counts its last), and an NPZ's or a Parquet's is the row's 0-based index ("row 6", the
row ``array[6]`` holds).
"""

from __future__ import annotations

import array
import csv
import difflib
import hashlib
import importlib
import math
import os
import re
import stat
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy
from numpy.typing import NDArray

from aaf_cli.errors import ConfigError

FORMATS = (".csv", ".npz", ".parquet")

_LIMIT_VARIABLE = "AAF_MAX_DATA_BYTES"
_DEFAULT_LIMIT = 4 * 1024**3
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")

Floats = NDArray[numpy.float64]
Indices = NDArray[numpy.int64]


def max_bytes() -> int:
    """The largest data file read, in bytes: a quarter of this machine's physical memory
    (4 GiB where that is unknown), or the environment variable ``AAF_MAX_DATA_BYTES`` when it is
    set, which must then be a positive integer."""
    text = os.environ.get(_LIMIT_VARIABLE, "").strip()
    if text:
        value = int(text) if text.isdecimal() else 0
        if value <= 0:
            raise ConfigError(
                "environment", _LIMIT_VARIABLE, f"{text!r} is not a positive number of bytes"
            )
        return value
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return _DEFAULT_LIMIT
    return memory // 4 if memory > 0 else _DEFAULT_LIMIT


@dataclass(frozen=True, eq=False)
class Table:
    """The used columns of a data file (its arrays are read-only: a Table may be shared)."""

    path: Path  # the file's resolved path
    sha256: str  # hex SHA-256 of the file's bytes
    rows: int
    columns: tuple[str, ...]  # every column the file has, in file order
    x: Floats  # [rows, len(inputs)], columns in the order of `inputs`
    y: Floats  # [rows]


@dataclass(frozen=True, eq=False)
class Split:
    """Row indices of each part, sorted ascending."""

    train: Indices
    validation: Indices
    test: Indices


@dataclass(frozen=True, eq=False)
class Scaling:
    """Means and population standard deviations of the inputs and the output."""

    x_mean: Floats
    x_std: Floats
    y_mean: float
    y_std: float

    def as_dict(self, inputs: Sequence[str], output: str) -> dict[str, dict[str, float]]:
        """``{column: {"mean": ..., "std": ...}}`` for every input and the output, as plain
        floats (for JSON)."""
        if len(inputs) != len(self.x_mean):
            raise ValueError(f"{len(inputs)} input names for {len(self.x_mean)} inputs")
        out = {
            name: {"mean": float(m), "std": float(s)}
            for name, m, s in zip(inputs, self.x_mean, self.x_std)
        }
        out[output] = {"mean": self.y_mean, "std": self.y_std}
        return out


class _File:
    """Makes the errors about one data file."""

    def __init__(self, path: Path, source: str, key: str) -> None:
        self.path, self.source, self.key = path, source, key

    def error(self, message: str) -> ConfigError:
        return ConfigError(self.source, self.key, f"{self.path}: {message}")


def _bare(name: str) -> str:
    return name if name.isprintable() else repr(name)


def _cell(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(err).__name__)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _size(n: int) -> str:
    value, unit = float(n), 0
    while value >= 1024 and unit < 4:
        value, unit = value / 1024, unit + 1
    return f"{n} bytes" if unit == 0 else f"{value:.1f} {('KB', 'MB', 'GB', 'TB')[unit - 1]}"


def _position(file: _File, columns: tuple[str, ...], name: str) -> int:
    """Where the column ``name`` is among ``columns``; a missing one is refused, with a guess."""
    if name in columns:
        return columns.index(name)
    shown = ", ".join(_bare(c) for c in columns[:20])
    if len(columns) > 20:
        shown += f", ... ({len(columns)} in all)"
    message = f"no column {name!r} (columns: {shown})"
    close = [c for c in columns if c.lower() == name.lower()]
    close = close or difflib.get_close_matches(name, columns, n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    elif len(columns) == 1 and any(sep in columns[0] for sep in ";\t|"):
        message += "; is the file separated by commas?"
    raise file.error(message)


def _no_duplicates(file: _File, columns: tuple[str, ...], place: str) -> None:
    seen: set[str] = set()
    for name in columns:
        if name and name in seen:
            raise file.error(f"column {name!r} appears twice in the {place}")
        seen.add(name)


def _check_finite(
    file: _File,
    used: Sequence[str],
    values: Sequence[Floats],
    place: Callable[[int], str] = "row {}".format,
    missing: str = "NaN",
) -> None:
    """Refuses the first row (by position, then column) that holds a NaN or an infinity."""
    first: tuple[int, int] | None = None
    for k, column in enumerate(values):
        bad = numpy.flatnonzero(~numpy.isfinite(column))
        if bad.size and (first is None or bad[0] < first[0]):
            first = (int(bad[0]), k)
    if first is not None:
        row, k = first
        value, where = float(values[k][row]), f"{place(row)}, column {used[k]!r}"
        if not math.isnan(value):
            raise file.error(f"{where}: {value} is not finite")
        count = int(numpy.isnan(values[k]).sum())
        more = f" ({count} rows like it in this column)" if count > 1 else ""
        raise file.error(f"{where}: missing value ({missing}); remove or fill the row{more}")


def _read_csv(file: _File, used: Sequence[str]) -> tuple[tuple[str, ...], list[Floats]]:
    with open(file.path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next((row for row in reader if any(c.strip() for c in row)), None)
            if header is None:
                raise file.error("the file is empty")
            columns = tuple(c.strip() for c in header)
            _no_duplicates(file, columns, "header")
            positions = [_position(file, columns, name) for name in used]
            data, lines = [array.array("d") for _ in used], array.array("q")
            for row in reader:
                if len(row) != len(columns):
                    if any(c.strip() for c in row):  # not a blank line
                        n, width = len(row), len(columns)
                        raise file.error(
                            f"line {reader.line_num} has {n} cells, the header has {width}"
                        )
                    continue
                lines.append(reader.line_num)
                for k, i in enumerate(positions):
                    try:
                        data[k].append(float(row[i] or "nan"))
                    except ValueError:
                        if row[i].strip():
                            where = f"line {reader.line_num}, column {used[k]!r}"
                            raise file.error(f"{where}: {_cell(row[i])} is not a number") from None
                        data[k].append(math.nan)
        except csv.Error as err:
            raise file.error(
                f"line {reader.line_num}: not readable as CSV ({_reason(err)})"
            ) from None
    if not lines:
        raise file.error("no data rows (only a header)")
    values = [numpy.frombuffer(d, dtype=numpy.float64) for d in data]
    _check_finite(file, used, values, lambda row: f"line {lines[row]}", "empty or NaN")
    return columns, values


def _read_npz(file: _File, used: Sequence[str]) -> tuple[tuple[str, ...], list[Floats]]:
    if not zipfile.is_zipfile(file.path):
        raise file.error("not a readable .npz file (not a zip archive of .npy arrays)")
    try:
        loaded = numpy.load(file.path, allow_pickle=False)
    except Exception as err:  # the type depends on the damage: OSError, ValueError, BadZipFile...
        raise file.error(f"not a readable .npz file ({_reason(err)})") from None
    values: list[Floats] = []
    with loaded as npz:
        columns = tuple(npz.files)
        for name in used:
            _position(file, columns, name)
        for name in used:
            try:
                column = npz[name]
            except Exception as err:  # object arrays need pickle, refused
                objects = isinstance(err, ValueError) and "allow_pickle" in str(err)
                problem = (
                    "holds object, not numbers" if objects else f"is unreadable ({_reason(err)})"
                )
                raise file.error(f"array {name!r} {problem}") from None
            if not isinstance(column, numpy.ndarray):  # a member that is not a .npy array
                raise file.error(f"array {name!r} is unreadable (not in .npy format)")
            if column.dtype.kind not in "biuf":
                raise file.error(f"array {name!r} holds {column.dtype}, not numbers")
            if column.ndim == 2 and column.shape[1] == 1:
                column = column[:, 0]
            if column.ndim != 1:
                shape = tuple(int(n) for n in column.shape)
                raise file.error(f"array {name!r} has shape {shape}; give one 1-D array per column")
            if values and len(column) != len(values[0]):
                raise file.error(
                    f"array {name!r} has {len(column)} rows, {used[0]!r} has {len(values[0])}"
                )
            values.append(numpy.asarray(column, dtype=numpy.float64))
    if len(values[0]) == 0:
        raise file.error("no data rows (the arrays are empty)")
    _check_finite(file, used, values)
    return columns, values


def _read_parquet(file: _File, used: Sequence[str]) -> tuple[tuple[str, ...], list[Floats]]:
    try:
        pandas = importlib.import_module("pandas")
        parquet = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise file.error(
            "reading .parquet needs pandas and pyarrow (pip install 'aaf[parquet]')"
        ) from None
    try:
        names = parquet.read_schema(file.path).names
    except Exception as err:  # pyarrow's errors are of many types (ArrowInvalid, OSError...)
        raise file.error(f"not a readable .parquet file ({_reason(err)})") from None
    columns = tuple(str(n) for n in names if not _PANDAS_INDEX.fullmatch(str(n)))
    _no_duplicates(file, columns, "file")
    for name in used:
        _position(file, columns, name)
    try:
        frame = pandas.read_parquet(file.path, columns=list(used), engine="pyarrow")
    except Exception as err:
        raise file.error(f"not a readable .parquet file ({_reason(err)})") from None
    values: list[Floats] = []
    for name in used:
        series = frame[name]
        if not pandas.api.types.is_numeric_dtype(series.dtype):
            raise file.error(f"column {name!r} holds {series.dtype}, not numbers")
        values.append(series.to_numpy(dtype=numpy.float64, na_value=numpy.nan))
    if len(frame) == 0:
        raise file.error("no data rows (the columns are empty)")
    _check_finite(file, used, values)
    return columns, values


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_table(
    path: Path,
    inputs: Sequence[str],
    output: str,
    source: str = "config",
    key: str = "target.data",
) -> Table:
    """Read the inputs' and the output's columns of a CSV, NPZ or Parquet file.

    ``path`` is used as given (a relative one from the working folder: resolving it against the
    config's folder is the caller's job). ``source`` and ``key`` name the config and its key in
    the errors; the errors about ``inputs`` and ``output`` themselves name the sibling key
    ``inputs`` (``target.inputs`` for ``target.data``). The file's size is checked against
    :func:`max_bytes` before anything is read. Every value of a used column must be a finite
    number; the other columns are not looked at.
    """
    inputs_key = key.rpartition(".")[0] + ".inputs" if "." in key else "inputs"
    if not inputs:
        raise ConfigError(source, inputs_key, "give at least one input column")
    for i, name in enumerate(inputs):
        if name == output:
            raise ConfigError(source, inputs_key, f"{name!r} is both an input and the output")
        if name in inputs[:i]:
            raise ConfigError(source, inputs_key, f"input {name!r} is listed twice")
    file = _File(Path(path).resolve(), source, key)
    try:
        info = os.stat(file.path)
    except (FileNotFoundError, NotADirectoryError):
        raise file.error("no such file") from None
    except OSError as err:
        raise file.error(f"cannot be read ({err.strerror or _reason(err)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise file.error("is a directory, not a data file")
    suffix = file.path.suffix.lower()
    if suffix not in FORMATS:
        what = f"unknown format {file.path.suffix!r}" if suffix else "no file extension"
        raise file.error(f"{what} (use .csv, .npz or .parquet)")
    if not stat.S_ISREG(info.st_mode):
        raise file.error("is not a regular file")
    limit = max_bytes()
    if info.st_size > limit:
        why = "a quarter of its memory; set {} to change it"
        why = "set by {}" if os.environ.get(_LIMIT_VARIABLE, "").strip() else why
        raise file.error(
            f"{_size(info.st_size)} is more than this machine can read safely "
            f"(limit {_size(limit)}: {why.format(_LIMIT_VARIABLE)})"
        )
    if info.st_size == 0:
        raise file.error("the file is empty")
    used = [*inputs, output]
    try:
        sha256 = _sha256(file.path)
        if suffix == ".csv":
            columns, values = _read_csv(file, used)
        else:
            columns, values = (_read_npz if suffix == ".npz" else _read_parquet)(file, used)
    except UnicodeDecodeError:
        with open(file.path, "rb") as f:  # the first line that does not decode
            line = next((n for n, text in enumerate(f, 1) if not _is_utf8(text)), 0)
        raise file.error(f"line {line} is not UTF-8 text; save the file as UTF-8") from None
    except OSError as err:
        raise file.error(f"cannot be read ({err.strerror or _reason(err)})") from None
    x, y = numpy.stack(values[:-1], axis=1), numpy.array(values[-1])
    x.setflags(write=False)  # a Table may be cached and shared: its arrays are read-only
    y.setflags(write=False)
    return Table(file.path, sha256, len(y), columns, x, y)


def split_rows(
    rows: int,
    validation: float,
    test: float,
    seed: int,
    source: str = "config",
    key: str = "target.split",
    path: str = "",
) -> Split:
    """A random split of ``rows`` rows: ``round(validation * rows)`` rows for validation,
    ``round(test * rows)`` for the test and the rest for training, the rows of each chosen by
    ``numpy.random.default_rng(seed).permutation(rows)`` (validation first, then test).

    Refuses a fraction outside [0, 1), fractions that sum to 1 or more, a negative seed, and a
    split that leaves any part empty (a fraction of 0 included). ``path``, when given, starts
    each message."""

    def error(message: str) -> ConfigError:
        return ConfigError(source, key, f"{path}: {message}" if path else message)

    for name, fraction in (("validation", validation), ("test", test)):
        if not 0 <= fraction < 1:
            raise error(f"the {name} fraction {fraction:g} is outside [0, 1)")
    if validation + test >= 1:
        raise error(
            f"validation {validation:g} + test {test:g} leaves no rows for training; "
            "keep their sum below 1"
        )
    if seed < 0:
        raise error(f"seed {seed} is negative; give an integer >= 0")
    if rows < 3:
        raise error(f"{rows} rows cannot be split into training, validation and test parts")
    sizes = {"validation": round(validation * rows), "test": round(test * rows)}
    for name, fraction in (("validation", validation), ("test", test)):
        if sizes[name] == 0:
            raise error(
                f"{name} {fraction:g} of {rows} rows leaves the {name} part empty; "
                f"give at least 1/{rows} = {1 / rows:.3g}"
            )
    cut = sizes["validation"] + sizes["test"]
    if cut >= rows:
        raise error(
            f"validation {validation:g} and test {test:g} of {rows} rows leave the training "
            "part empty; give smaller fractions"
        )
    order = numpy.random.default_rng(seed).permutation(rows).astype(numpy.int64)
    return Split(
        train=numpy.sort(order[cut:]),
        validation=numpy.sort(order[: sizes["validation"]]),
        test=numpy.sort(order[sizes["validation"] : cut]),
    )


def fit_scaling(
    x: Floats,
    y: Floats,
    source: str = "config",
    key: str = "target.standardize",
    path: str = "",
    *,
    names: Sequence[str],
) -> Scaling:
    """Means and population standard deviations (ddof=0) of the training rows given: ``x``
    [rows, inputs] and ``y`` [rows]. ``names`` are the columns' names, the inputs in ``x``'s
    order and then the output, for the messages. A column that is constant over these rows
    (it cannot be standardised) is refused, as is an empty ``x``. ``path``, when given, starts
    each message."""

    def error(message: str) -> ConfigError:
        return ConfigError(source, key, f"{path}: {message}" if path else message)

    x, y = numpy.asarray(x, dtype=numpy.float64), numpy.asarray(y, dtype=numpy.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],) or len(names) != x.shape[1] + 1:
        raise ValueError(f"x {x.shape}, y {y.shape} and {len(names)} names do not match")
    if x.shape[0] == 0:
        raise error("no training rows to standardise on")
    means, stds = [], []
    for name, column in zip(names, [*x.T, y]):
        mean, std = float(column.mean()), float(column.std())
        if column.max() == column.min() or std == 0:
            raise error(
                f"column {name!r} is {float(column[0]):g} in every training row; it cannot be "
                "standardised (its standard deviation is 0)"
            )
        if not math.isfinite(std):
            raise error(f"column {name!r} is too large to standardise (its std overflows)")
        means.append(mean)
        stds.append(std)
    return Scaling(numpy.array(means[:-1]), numpy.array(stds[:-1]), means[-1], stds[-1])
