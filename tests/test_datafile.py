from __future__ import annotations

import hashlib
import io
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy
import pytest
from numpy.typing import ArrayLike

from aaf_cli.errors import ConfigError
from aaf_cli.problems import datafile
from aaf_cli.problems.datafile import fit_scaling, max_bytes, read_table, split_rows

Writer = Callable[[Path], None]


def text(content: str) -> Writer:
    def write(path: Path) -> None:
        path.write_text(content, encoding="utf-8")

    return write


def raw(content: bytes) -> Writer:
    def write(path: Path) -> None:
        path.write_bytes(content)

    return write


def arrays(**columns: ArrayLike) -> Writer:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            numpy.savez(f, **columns)  # type: ignore[arg-type]

    return write


def folder(path: Path) -> None:
    path.mkdir()


def nothing(path: Path) -> None:
    pass


def zip_with_junk(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x1.npy", b"not an array")
        archive.writestr("y.npy", b"not an array")


def sparse(size: int) -> Writer:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            f.truncate(size)

    return write


X = numpy.arange(50.0)
GOOD = "x1,x2,y\n1,2,3\n4,5,6\n"

# (id, file name, writer, inputs, output, what the message must say besides the file's name)
BAD: list[tuple[str, str, Writer, list[str], str, list[str]]] = [
    ("missing", "data.csv", nothing, ["x1"], "y", ["no such file"]),
    ("directory", "data.csv", folder, ["x1"], "y", ["is a directory, not a data file"]),
    ("format", "data.txt", text(GOOD), ["x1"], "y", ["unknown format '.txt'", ".csv, .npz or"]),
    ("no-extension", "data", text(GOOD), ["x1"], "y", ["no file extension"]),
    ("empty", "data.csv", text(""), ["x1"], "y", ["the file is empty"]),
    ("blank", "data.csv", text("\n  \n"), ["x1"], "y", ["the file is empty"]),
    ("empty-npz", "data.npz", raw(b""), ["x1"], "y", ["the file is empty"]),
    ("header-only", "data.csv", text("x1,x2,y\n"), ["x1"], "y", ["no data rows (only a header)"]),
    (
        "no-column",
        "data.csv",
        text(GOOD),
        ["x1", "x3"],
        "y",
        ["no column 'x3' (columns: x1, x2, y)"],
    ),
    (
        "did-you-mean",
        "data.csv",
        text("temp,Load,y\n1,2,3\n"),
        ["tmep", "Load"],
        "y",
        ["no column 'tmep'", "did you mean 'temp'?"],
    ),
    (
        "case",
        "data.csv",
        text("temp,Load,y\n1,2,3\n"),
        ["temp", "load"],
        "y",
        ["no column 'load'", "did you mean 'Load'?"],
    ),
    (
        "semicolons",
        "data.csv",
        text("x1;x2;y\n1;2;3\n"),
        ["x1"],
        "y",
        ["no column 'x1' (columns: x1;x2;y)", "separated by commas"],
    ),
    (
        "no-output",
        "data.csv",
        text(GOOD),
        ["x1"],
        "z",
        ["no column 'z'"],
    ),
    (
        "duplicate",
        "data.csv",
        text("x,x,y\n1,2,3\n"),
        ["x"],
        "y",
        ["column 'x' appears twice in the header"],
    ),
    (
        "ragged",
        "data.csv",
        text("x1,x2,y\n1,2,3\n4,5\n"),
        ["x1"],
        "y",
        ["line 3 has 2 cells, the header has 3"],
    ),
    (
        "too-many-cells",
        "data.csv",
        text("x1,x2,y\n\n1,2,3,4\n"),
        ["x1"],
        "y",
        ["line 3 has 4 cells, the header has 3"],
    ),
    (
        "not-a-number",
        "data.csv",
        text("x1,x2,y\n1,2,3\n\n4,abc,6\n"),
        ["x1", "x2"],
        "y",
        ["line 4, column 'x2': 'abc' is not a number"],
    ),
    (
        "empty-cell",
        "data.csv",
        text("x1,x2,y\n1,2,3\n4,5,\n7,8,nan\n9,10, NaN \n"),
        ["x1", "x2"],
        "y",
        ["line 3, column 'y': missing value (empty or NaN)", "(3 rows like it"],
    ),
    (
        "one-nan",
        "data.csv",
        text("x1,x2,y\n1,2,3\n4,nan,6\n"),
        ["x1", "x2"],
        "y",
        ["line 3, column 'x2': missing value (empty or NaN); remove or fill the row"],
    ),
    (
        "infinite",
        "data.csv",
        text("x1,x2,y\n1,2,3\n4,5,-inf\n"),
        ["x1"],
        "y",
        ["line 3, column 'y': -inf is not finite"],
    ),
    (
        "overflow",
        "data.csv",
        text("x1,x2,y\n1e999,2,3\n"),
        ["x1"],
        "y",
        ["line 2, column 'x1': inf is not finite"],
    ),
    (
        "huge-cell",
        "data.csv",
        text("x1,x2,y\n1,2,3\n1," + "9" * 200_000 + ",3\n"),
        ["x1"],
        "y",
        ["line 3: not readable as CSV (field larger than field limit"],
    ),
    (
        "quoted-newline",
        "data.csv",
        text('x1,x2,y\n1,"2\n5",3\n'),
        ["x1", "x2"],
        "y",
        ["line 3, column 'x2': '2\\n5' is not a number"],
    ),
    (
        "not-utf8",
        "data.csv",
        raw(b"x1,x2,y\n1,2,3\n\xff,2,3\n"),
        ["x1"],
        "y",
        ["line 3 is not UTF-8 text"],
    ),
    (
        "npz-no-array",
        "data.npz",
        arrays(x1=X, y=X),
        ["x1", "x2"],
        "y",
        ["no column 'x2' (columns: x1, y)"],
    ),
    (
        "npz-lengths",
        "data.npz",
        arrays(x1=X, y=X[:40]),
        ["x1"],
        "y",
        ["array 'y' has 40 rows, 'x1' has 50"],
    ),
    (
        "npz-2d",
        "data.npz",
        arrays(x1=numpy.zeros((50, 2)), y=X),
        ["x1"],
        "y",
        ["array 'x1' has shape (50, 2); give one 1-D array per column"],
    ),
    (
        "npz-scalar",
        "data.npz",
        arrays(x1=numpy.float64(1.0), y=X),
        ["x1"],
        "y",
        ["array 'x1' has shape (); give one 1-D array per column"],
    ),
    (
        "npz-text",
        "data.npz",
        arrays(x1=numpy.array(["a", "b"]), y=X[:2]),
        ["x1"],
        "y",
        ["array 'x1' holds <U1, not numbers"],
    ),
    (
        "npz-objects",
        "data.npz",
        arrays(x1=numpy.array([1, "b"], dtype=object), y=X[:2]),
        ["x1"],
        "y",
        ["array 'x1' holds object, not numbers"],
    ),
    (
        "npz-nan",
        "data.npz",
        arrays(x1=X, y=numpy.where(X > 15, numpy.nan, X)),
        ["x1"],
        "y",
        ["row 16, column 'y': missing value (NaN)", "(34 rows like it"],
    ),
    (
        "npz-inf",
        "data.npz",
        arrays(x1=numpy.where(X == 7, numpy.inf, X), y=X),
        ["x1"],
        "y",
        ["row 7, column 'x1': inf is not finite"],
    ),
    ("npz-empty", "data.npz", arrays(x1=X[:0], y=X[:0]), ["x1"], "y", ["no data rows"]),
    (
        "npz-corrupt",
        "data.npz",
        raw(b"this is not a zip file"),
        ["x1"],
        "y",
        ["not a readable .npz file (not a zip archive"],
    ),
    (
        "npz-junk-member",
        "data.npz",
        zip_with_junk,
        ["x1"],
        "y",
        ["array 'x1' is unreadable ("],
    ),
    (
        "too-large",
        "data.csv",
        sparse(5 * 1024**3),
        ["x1"],
        "y",
        [
            "5.0 GB is more than this machine can read safely (limit 4.0 GB: a quarter of its "
            "memory; set AAF_MAX_DATA_BYTES to change it)"
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "writer", "inputs", "output", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD],
)
def test_bad_data_is_one_line_naming_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    writer: Writer,
    inputs: list[str],
    output: str,
    expected: list[str],
) -> None:
    monkeypatch.delenv("AAF_MAX_DATA_BYTES", raising=False)
    monkeypatch.setattr(datafile, "max_bytes", lambda: 4 * 1024**3)
    path = tmp_path / name
    writer(path)
    with pytest.raises(ConfigError) as caught:
        read_table(path, inputs, output, source="configs/mydata.yaml")
    err = caught.value
    message = str(err)
    assert "\n" not in message
    assert err.exit_code == 2
    assert message.startswith(f"configs/mydata.yaml: target.data: {path.resolve()}: ")
    for part in expected:
        assert part in message, (part, message)


def test_a_small_limit_makes_a_small_file_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AAF_MAX_DATA_BYTES", "10")
    assert max_bytes() == 10
    path = tmp_path / "data.csv"
    path.write_text(GOOD)
    with pytest.raises(ConfigError, match=r"20 bytes is more than .*limit 10 bytes"):
        read_table(path, ["x1"], "y")
    monkeypatch.setenv("AAF_MAX_DATA_BYTES", "ten")
    with pytest.raises(ConfigError, match="AAF_MAX_DATA_BYTES: 'ten' is not a positive"):
        max_bytes()
    monkeypatch.delenv("AAF_MAX_DATA_BYTES")
    assert max_bytes() > 0


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["x1", "y"], "target.inputs: 'y' is both an input and the output"),
        (["x1", "x2", "x1"], "target.inputs: input 'x1' is listed twice"),
        ([], "target.inputs: give at least one input column"),
    ],
)
def test_inputs_and_output_are_checked_first(
    tmp_path: Path, inputs: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        read_table(tmp_path / "absent.csv", inputs, "y", source="c.yaml")
    assert str(caught.value) == f"c.yaml: {message}"
    assert caught.value.exit_code == 2


def test_parquet_without_pandas_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError) as caught:
        read_table(path, ["x1"], "y")
    message = str(caught.value)
    assert "\n" not in message
    assert f"{path.resolve()}: reading .parquet needs pandas and pyarrow" in message
    assert "pip install 'aaf[parquet]'" in message


ROWS = [(0.1, -2.5, 3.0), (1e-3, 7.25, -0.0), (123456.789, 0.3, 1 / 3), (-4.0, 5e-300, 2.0)]


def write_good_csv(path: Path) -> None:
    lines = ["\ufeff x2 , note,x1,y"]  # a BOM, spaces around names, an unused text column
    for x1, x2, y in ROWS:
        lines.append(f"{x2!r}, text, {x1!r} ,{y!r}")
    lines.append("")  # a blank line is skipped
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_csv_reads_the_used_columns_in_the_inputs_order(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    write_good_csv(path)
    table = read_table(path, ["x1", "x2"], "y")
    assert table.path == path.resolve()
    assert table.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert table.rows == 4
    assert table.columns == ("x2", "note", "x1", "y")
    assert table.x.shape == (4, 2) and table.y.shape == (4,)
    assert table.x.dtype == numpy.float64 and table.y.dtype == numpy.float64
    assert not table.x.flags.writeable and not table.y.flags.writeable
    assert table.x.tolist() == [[x1, x2] for x1, x2, _ in ROWS]
    assert table.y.tolist() == [y for _, _, y in ROWS]
    swapped = read_table(path, ["x2", "x1"], "y")
    assert swapped.x.tolist() == [[x2, x1] for x1, x2, _ in ROWS]


def test_unused_columns_may_hold_anything(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x,junk,y\n1,,2\n3,nan,4\n5,inf,6\n")
    table = read_table(path, ["x"], "y")
    assert table.x[:, 0].tolist() == [1.0, 3.0, 5.0]
    assert table.y.tolist() == [2.0, 4.0, 6.0]


def test_npz_reads_the_same_values_as_the_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "data.csv"
    write_good_csv(csv_path)
    npz_path = tmp_path / "data.npz"
    numpy.savez(
        npz_path,
        x2=numpy.array([r[1] for r in ROWS]),
        x1=numpy.array([[r[0]] for r in ROWS]),  # [N, 1] is taken as a column
        y=numpy.array([r[2] for r in ROWS], dtype=numpy.float32).astype(numpy.float64),
        note=numpy.array(["a", "b", "c", "d"]),
    )
    from_csv = read_table(csv_path, ["x1", "x2"], "y")
    from_npz = read_table(npz_path, ["x1", "x2"], "y")
    assert from_npz.columns == ("x2", "x1", "y", "note")
    assert from_npz.rows == 4
    assert numpy.array_equal(from_npz.x, from_csv.x)
    assert numpy.allclose(from_npz.y, from_csv.y, rtol=1e-6)
    ints = tmp_path / "ints.npz"
    numpy.savez(ints, a=numpy.arange(3), b=numpy.array([True, False, True]))
    table = read_table(ints, ["a"], "b")
    assert table.x[:, 0].tolist() == [0.0, 1.0, 2.0] and table.y.tolist() == [1.0, 0.0, 1.0]


def test_parquet_reads_the_same_values_as_the_csv(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    pandas = pytest.importorskip("pandas")
    csv_path = tmp_path / "data.csv"
    write_good_csv(csv_path)
    path = tmp_path / "data.parquet"
    frame = pandas.DataFrame({"x2": [r[1] for r in ROWS], "x1": [r[0] for r in ROWS]})
    frame["y"] = [r[2] for r in ROWS]
    frame["note"] = ["a", "b", "c", "d"]
    frame.to_parquet(path)
    table = read_table(path, ["x1", "x2"], "y")
    expected = read_table(csv_path, ["x1", "x2"], "y")
    assert table.columns == ("x2", "x1", "y", "note")
    assert numpy.array_equal(table.x, expected.x) and numpy.array_equal(table.y, expected.y)

    frame.loc[2, "y"] = None
    frame.to_parquet(path)
    with pytest.raises(ConfigError, match=r"data.parquet: row 2, column 'y': missing value"):
        read_table(path, ["x1"], "y")
    with pytest.raises(ConfigError, match=r"column 'note' holds .*, not numbers"):
        read_table(path, ["note"], "x1")
    with pytest.raises(ConfigError, match=r"no column 'x3' \(columns: x2, x1, y, note\)"):
        read_table(path, ["x3"], "y")
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match=r"not a readable \.parquet file \(") as caught:
        read_table(path, ["x1"], "y")
    assert "\n" not in str(caught.value)


def test_a_large_csv_reads_quickly(tmp_path: Path) -> None:
    rng = numpy.random.default_rng(0)
    values = rng.normal(size=(100_000, 3))
    buffer = io.StringIO()
    buffer.write("a,b,c\n")
    numpy.savetxt(buffer, values, delimiter=",", fmt="%.17g")
    path = tmp_path / "big.csv"
    path.write_text(buffer.getvalue())
    start = time.perf_counter()
    table = read_table(path, ["c", "a"], "b")
    elapsed = time.perf_counter() - start
    assert table.rows == 100_000
    assert numpy.array_equal(table.x, values[:, [2, 0]]) and numpy.array_equal(
        table.y, values[:, 1]
    )
    assert elapsed < 2.0, elapsed


def test_split_sizes_are_disjoint_and_cover_every_row() -> None:
    split = split_rows(100, 0.1, 0.2, seed=3)
    assert (len(split.train), len(split.validation), len(split.test)) == (70, 10, 20)
    every = numpy.concatenate([split.train, split.validation, split.test])
    assert sorted(every.tolist()) == list(range(100))
    for part in (split.train, split.validation, split.test):
        assert part.dtype == numpy.int64
        assert numpy.all(numpy.diff(part) > 0)
    again = split_rows(100, 0.1, 0.2, seed=3)
    assert numpy.array_equal(again.test, split.test)
    assert numpy.array_equal(again.validation, split.validation)
    other = split_rows(100, 0.1, 0.2, seed=4)
    assert not numpy.array_equal(other.test, split.test)
    order = numpy.random.default_rng(3).permutation(100)
    assert split.validation.tolist() == sorted(order[:10].tolist())


@pytest.mark.parametrize(
    ("rows", "validation", "test", "message"),
    [
        (
            40,
            0.01,
            0.2,
            "validation 0.01 of 40 rows leaves the validation part empty; "
            "give at least 1/40 = 0.025",
        ),
        (40, 0.1, 0.0, "test 0 of 40 rows leaves the test part empty"),
        (40, 1.2, 0.1, "the validation fraction 1.2 is outside [0, 1)"),
        (40, 0.1, -0.1, "the test fraction -0.1 is outside [0, 1)"),
        (40, 0.5, 0.5, "validation 0.5 + test 0.5 leaves no rows for training"),
        (4, 0.4, 0.55, "validation 0.4 and test 0.55 of 4 rows leave the training part empty"),
        (2, 0.3, 0.3, "2 rows cannot be split"),
    ],
)
def test_bad_splits_are_refused(rows: int, validation: float, test: float, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        split_rows(rows, validation, test, 0, source="c.yaml", path="/d/data.csv")
    text = str(caught.value)
    assert text.startswith("c.yaml: target.split: /d/data.csv: ")
    assert message in text and "\n" not in text


def test_scaling_matches_numpy() -> None:
    rng = numpy.random.default_rng(1)
    x, y = rng.normal(3.0, 2.0, size=(30, 2)), rng.normal(-1.0, 0.5, size=30)
    scaling = fit_scaling(x, y, names=["a", "b", "out"])
    assert numpy.allclose(scaling.x_mean, x.mean(axis=0), rtol=0, atol=1e-12)
    assert numpy.allclose(scaling.x_std, x.std(axis=0), rtol=0, atol=1e-12)
    assert scaling.y_mean == pytest.approx(y.mean(), abs=1e-12)
    assert scaling.y_std == pytest.approx(y.std(), abs=1e-12)
    stored = scaling.as_dict(["a", "b"], "out")
    assert list(stored) == ["a", "b", "out"]
    assert stored["b"] == {"mean": float(x[:, 1].mean()), "std": float(x[:, 1].std())}
    assert all(type(v) is float for column in stored.values() for v in column.values())


def test_a_constant_column_cannot_be_standardised() -> None:
    x = numpy.column_stack([numpy.arange(5.0), numpy.full(5, 0.1)])
    with pytest.raises(ConfigError) as caught:
        fit_scaling(x, numpy.arange(5.0), source="c.yaml", path="d.csv", names=["a", "b", "y"])
    text = str(caught.value)
    assert text.startswith("c.yaml: target.standardize: d.csv: column 'b' is 0.1 in every")
    assert "\n" not in text
    with pytest.raises(ConfigError, match="column 'y' is 2 in every training row"):
        fit_scaling(x[:, :1], numpy.full(5, 2.0), names=["a", "y"])
