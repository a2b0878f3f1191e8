"""The expression parser: correctness against hand-written torch, hostile input, error messages."""

from __future__ import annotations

import ast
import builtins
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aaf_cli.expr import (
    CONSTANTS,
    FUNCTIONS,
    MAX_CHARS,
    MAX_DEPTH,
    MAX_NODES,
    ExprError,
    Expression,
    parse,
    parse_piecewise,
)

REPO = Path(__file__).resolve().parent.parent
X = torch.linspace(-2.0, 2.0, 101, dtype=torch.float64)


def run(source: str, x: torch.Tensor = X) -> torch.Tensor:
    return parse(source).evaluate({"x": x})


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    torch.testing.assert_close(actual, expected, equal_nan=True)


# --- Correctness ------------------------------------------------------------------------------


def test_piecewise_example_matches_hand_written_torch() -> None:
    got = run("0.2*sin(6*x) if x <= 0 else 1 + 0.1*x*cos(18*x)")
    expected = torch.where(X <= 0, 0.2 * torch.sin(6 * X), 1 + 0.1 * X * torch.cos(18 * X))
    close(got, expected)


@pytest.mark.parametrize(
    ("source", "reference"),
    [
        ("x", lambda x: x),
        ("-x + +x - -x", lambda x: x),
        ("x**3 - 2*x**2 + 0.5", lambda x: x**3 - 2 * x**2 + 0.5),
        ("2**-x", lambda x: 2.0 ** (-x)),
        ("-x**2", lambda x: -(x**2)),
        ("x % 0.7", lambda x: torch.remainder(x, 0.7)),
        ("x // 0.25", lambda x: torch.floor(x / 0.25)),
        ("pi * x + e", lambda x: math.pi * x + math.e),
        ("min(x, 0.5) + max(x, -0.5)", lambda x: x.clamp(max=0.5) + x.clamp(min=-0.5)),
        ("atan2(x, 0.5)", lambda x: torch.atan2(x, torch.full_like(x, 0.5))),
        ("atan2(1, x)", lambda x: torch.atan2(torch.ones_like(x), x)),
        ("exp(-x**2) * tanh(3*x)", lambda x: torch.exp(-(x**2)) * torch.tanh(3 * x)),
        (
            "abs(x) + sign(x) + floor(x) + ceil(x)",
            lambda x: x.abs() + x.sign() + x.floor() + x.ceil(),
        ),
        ("sqrt(abs(x)) + log(1 + x**2)", lambda x: x.abs().sqrt() + torch.log1p(x**2)),
        ("log10(2 + x) + log2(3 + x)", lambda x: torch.log10(2 + x) + torch.log2(3 + x)),
        ("erf(x) + sinh(x) - cosh(x)", lambda x: torch.erf(x) + torch.sinh(x) - torch.cosh(x)),
        (
            "asin(x / 2) + acos(x / 3) + atan(x) + tan(x / 4)",
            lambda x: torch.asin(x / 2) + torch.acos(x / 3) + torch.atan(x) + torch.tan(x / 4),
        ),
        ("1 if 0 < x < 1 else 0", lambda x: ((x > 0) & (x < 1)).double()),
        ("1 if -1 <= x < 0 <= x + 1.5 else 0", lambda x: ((x >= -1) & (x < 0)).double()),
        ("1 if x < -1 or x > 1 else 0", lambda x: ((x < -1) | (x > 1)).double()),
        ("1 if not x > 0 and x != -1 else 0", lambda x: ((x <= 0) & (x != -1)).double()),
        ("1 if x == 0 else 2", lambda x: torch.where(x == 0, 1.0, 2.0).double()),
        ("x if x > 1 else -x if x < -1 else 0", lambda x: torch.where(x.abs() > 1, x.abs(), 0.0)),
        ("1e3 * x + 1_000 + 0x10", lambda x: 1000 * x + 1016),
    ],
)
def test_matches_hand_written_torch(source: str, reference: Any) -> None:
    close(run(source), reference(X))


def test_constant_is_broadcast_to_the_input_shape() -> None:
    x = torch.zeros(3, 4, dtype=torch.float64)
    close(parse("3").evaluate({"x": x}), torch.full((3, 4), 3.0, dtype=torch.float64))
    close(parse("pi").evaluate({"x": x}), torch.full((3, 4), math.pi, dtype=torch.float64))
    assert parse("-2.5").variables == ()


def test_no_inputs_gives_a_scalar_of_the_default_dtype() -> None:
    got = parse("1 + 2", variables=()).evaluate({})
    assert got.shape == () and got.dtype == torch.get_default_dtype() and got.item() == 3.0


def test_two_dimensional_variables() -> None:
    x1 = torch.rand(7, 5, dtype=torch.float64)
    x2 = torch.rand(7, 5, dtype=torch.float64)
    expr = parse("sin(pi*x1) * cos(pi*x2) if x1 + x2 < 1 else x1*x2", variables=("x1", "x2"))
    assert expr.variables == ("x1", "x2")
    expected = torch.where(x1 + x2 < 1, torch.sin(math.pi * x1) * torch.cos(math.pi * x2), x1 * x2)
    close(expr.evaluate({"x1": x1, "x2": x2}), expected)


def test_variables_lists_only_used_names_sorted() -> None:
    expr = parse("x3 + sin(x1) + x3", variables=("x1", "x2", "x3"))
    assert expr.variables == ("x1", "x3")
    with pytest.raises(ExprError, match="no input given for variable 'x3'"):
        expr.evaluate({"x1": X})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_preserved(dtype: torch.dtype) -> None:
    x = torch.linspace(-1, 1, 11, dtype=dtype)
    for source in ("x*2 + 1", "7", "sin(x) if x > 0 else pi", "atan2(x, 2)"):
        got = parse(source).evaluate({"x": x})
        assert got.dtype == dtype and got.shape == x.shape, source


def test_float32_values_match() -> None:
    x = torch.linspace(-1, 1, 11, dtype=torch.float32)
    close(parse("0.1*x**2 + exp(x)").evaluate({"x": x}), 0.1 * x**2 + torch.exp(x))


def test_result_never_aliases_an_input() -> None:
    x = X.clone()
    got = parse("x").evaluate({"x": x})
    assert got is not x
    got += 1
    assert torch.equal(x, X)


def test_invalid_values_give_inf_and_nan_not_errors() -> None:
    got = run("1 / x + log(x) + 0 / (x - x)")
    assert got.isnan().all()
    assert run("1 / (x - x)").isinf().all()
    assert torch.isinf(run("9**9**9")).all()
    assert torch.isinf(run("1e999 * x**0")).all()
    assert torch.isinf(run("9" * 400)).all()  # an integer literal too big for a float
    assert run("x % 0").isnan().all()


def test_bad_inputs_are_rejected() -> None:
    expr = parse("x + y", variables=("x", "y"))
    with pytest.raises(ExprError, match="same shape"):
        expr.evaluate({"x": torch.zeros(3), "y": torch.zeros(4)})
    with pytest.raises(ExprError, match="same shape"):
        expr.evaluate({"x": torch.zeros(3), "y": torch.zeros(3, dtype=torch.float64)})
    with pytest.raises(ExprError, match="floating-point"):
        expr.evaluate({"x": torch.zeros(3, dtype=torch.int64), "y": torch.zeros(3)})


@pytest.mark.parametrize("variables", [("sin",), ("pi",), ("1x",), ("x.y",), ("True",), "x"])
def test_invalid_variable_names(variables: Any) -> None:
    with pytest.raises(ExprError):
        parse("1", variables=variables)


def test_public_tables() -> None:
    assert MAX_CHARS == 2000 and MAX_NODES == 400 and MAX_DEPTH == 40
    assert set(FUNCTIONS) >= {"sin", "cos", "erf", "min", "max", "atan2", "log10", "sign"}
    assert "where" not in FUNCTIONS
    assert CONSTANTS["pi"] == math.pi and CONSTANTS["e"] == math.e


# --- Piecewise --------------------------------------------------------------------------------


def test_piecewise_first_match_wins_and_otherwise() -> None:
    expr = parse_piecewise([("x <= 0", "0.2*sin(6*x)"), ("x < 1", "x**2"), ("x < 5", "7")])
    expected = torch.where(X <= 0, 0.2 * torch.sin(6 * X), torch.where(X < 1, X**2, 7.0))
    close(expr.evaluate({"x": X}), expected)
    with_otherwise = parse_piecewise([("x <= 0", "0.2*sin(6*x)"), (None, "1 + 0.1*x*cos(18*x)")])
    close(with_otherwise.evaluate({"x": X}), run("0.2*sin(6*x) if x <= 0 else 1 + 0.1*x*cos(18*x)"))


def test_piecewise_nan_where_no_condition_holds() -> None:
    got = parse_piecewise([("x < 0", "1"), ("x > 1", "2")]).evaluate({"x": X})
    gap = (X >= 0) & (X <= 1)
    assert got[gap].isnan().all()
    assert torch.equal(got[X < 0], torch.ones_like(got[X < 0]))
    assert torch.equal(got[X > 1], torch.full_like(got[X > 1], 2.0))


def test_piecewise_source_is_an_equivalent_expression() -> None:
    pieces: list[tuple[str | None, str]] = [
        ("x <= 0 and not x < -1", "0.2*sin(6*x)"),
        ("x < 1", "1 if x > 0.5 else 2"),
        ("x < 1.5", "x  # a comment"),
    ]
    expr = parse_piecewise(pieces)
    assert isinstance(expr, Expression) and expr.variables == ("x",)
    assert "\n" not in expr.source and "#" not in expr.source
    close(parse(expr.source).evaluate({"x": X}), expr.evaluate({"x": X}))
    last = parse_piecewise([*pieces, (None, "-x")])
    close(parse(last.source).evaluate({"x": X}), last.evaluate({"x": X}))


def test_piecewise_uses_two_variables() -> None:
    x1, x2 = torch.rand(2, 9, dtype=torch.float64)
    expr = parse_piecewise([("x1 < x2", "x1"), (None, "x2")], variables=("x1", "x2", "x3"))
    assert expr.variables == ("x1", "x2")
    close(expr.evaluate({"x1": x1, "x2": x2}), torch.minimum(x1, x2))


@pytest.mark.parametrize(
    ("pieces", "start"),
    [
        ([("x < 0", "1"), ("x < y", "2")], "piece 2 (when): name 'y'"),
        ([("x < 0", "1"), ("x > 0", "sn(x)")], "piece 2 (value): unknown function 'sn'"),
        ([("x", "1")], "piece 1 (when): condition must be a comparison"),
        ([("x < 0", "x > 0")], "piece 1 (value): a condition"),
        ([(None, "1"), ("x < 0", "2")], "piece 1 (when): only the last piece"),
        ([("x < 0", "")], "piece 1 (value): expression is empty"),
        ([("x <", "1")], "piece 1 (when): syntax error"),
        ([], "a piecewise expression needs at least one piece"),
    ],
)
def test_piecewise_errors_name_the_piece(pieces: Any, start: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_piecewise(pieces)
    assert str(info.value).startswith(start), str(info.value)


def test_piecewise_error_keeps_column_of_the_piece() -> None:
    with pytest.raises(ExprError) as info:
        parse_piecewise([("x < 0", "1"), ("x < y", "2")])
    assert info.value.column == 5 and info.value.snippet == "y"


# --- Hostile input ----------------------------------------------------------------------------

HOSTILE = [
    "__import__('os')",
    "__import__('os').system('true')",
    "().__class__",
    "x.__class__",
    "x.__class__.__bases__[0].__subclasses__()",
    "(1).__class__.__mro__",
    "open('/etc/passwd')",
    "eval('1')",
    "exec('1')",
    "compile('1', '', 'eval')",
    "globals()",
    "__builtins__",
    "lambda: 1",
    "(lambda: 1)()",
    "[i for i in x]",
    "(i for i in x)",
    "{i: i for i in x}",
    "x[0]",
    "x[1:2]",
    'f"{x}"',
    "f'{x.__class__}'",
    "(y := 2)",
    "'abc'",
    "b'x'",
    "1j",
    "True",
    "False",
    "None",
    "...",
    "x @ x",
    "x | 1",
    "x & 1",
    "x ^ 2",
    "x << 1",
    "~x",
    "x is x",
    "x in x",
    "[x]",
    "(x, x)",
    "{x}",
    "{1: x}",
    "*x",
    "await x",
    "(yield x)",
    "x if 1 else 2",
    "x if x else 2",
    "1 if x > 0 and 1 else 2",
    "not x",
    "(x > 0) + 1",
    "-(x > 0)",
    "x > 0",
    "sin(x > 0)",
    "sin(x, 2)",
    "sin()",
    "min(x)",
    "atan2(x, 1, 2)",
    "sin(x=1)",
    "sin(*x)",
    "sin(**x)",
    "sin",
    "x(1)",
    "pi(1)",
    "sin(x)(x)",
    "where(x > 0, 1, 2)",
    "x = 1",
    "import os",
    "x; 1",
    "y",
    "",
    "   \n\t ",
    "x\0",
    "\0",
    "x +",
    "1 +* 2",
    "\ud800",
    "(" * 10000 + "x" + ")" * 10000,
    "(" * 999 + "x" + ")" * 999,
    "-" * (MAX_CHARS - 1) + "x",
    "+".join(["x"] * 300),
    "sin(" * 45 + "x" + ")" * 45,
    "x" * (MAX_CHARS + 1),
]


@pytest.mark.parametrize("source", HOSTILE, ids=lambda s: repr(s[:30]))
def test_hostile_input_raises_expr_error_only(source: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ExprError) as info:
        parse(source)
    assert time.perf_counter() - start < 1.0
    text = str(info.value)
    assert "\n" not in text and len(text.splitlines()) == 1 and len(text) < 300, text


@pytest.mark.parametrize("source", [None, 1, b"x", ["x"]])
def test_non_strings_are_rejected(source: Any) -> None:
    with pytest.raises(ExprError, match="must be a string"):
        parse(source)


def test_ten_megabytes_fail_fast() -> None:
    source = "1+" * 5_000_000 + "1"
    start = time.perf_counter()
    with pytest.raises(ExprError, match="too long"):
        parse(source)
    assert time.perf_counter() - start < 1.0


def test_huge_power_does_not_hang() -> None:
    start = time.perf_counter()
    got = run("9**9**9**9 + (10**400)**10**400")
    assert time.perf_counter() - start < 1.0
    assert got.isinf().all()


def test_size_limits_are_reported() -> None:
    with pytest.raises(ExprError, match=r"expression too large: \d+ nodes \(max 400\)"):
        parse("+".join(["x"] * 300))
    with pytest.raises(ExprError, match=r"too deeply nested: depth \d+ \(max 40\)"):
        parse("sin(" * 45 + "x" + ")" * 45)
    # Just inside the limits.
    parse("sin(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1))
    parse("+".join(["x"] * 20))


def test_eval_exec_and_code_compilation_are_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    real_compile = builtins.compile
    ast_only: list[int] = []

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("eval/exec must not be used")

    def compile_to_ast_only(
        source: Any, filename: Any, mode: str, flags: int = 0, *args: Any, **kwargs: Any
    ) -> Any:
        # ast.parse itself calls compile(..., PyCF_ONLY_AST); anything else would be code.
        if not flags & ast.PyCF_ONLY_AST:
            raise AssertionError("compile to a code object must not be used")
        ast_only.append(flags)
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", compile_to_ast_only)
    for source in (
        "0.2*sin(6*x) if x <= 0 else 1 + 0.1*x*cos(18*x)",
        "1 if 0 < x < 1 and not x == 0.5 or x > 1.5 else min(x, 2) ** atan2(x, pi)",
        "3",
    ):
        got = parse(source).evaluate({"x": X})
        assert got.shape == X.shape
    piecewise = parse_piecewise([("x < 0", "erf(x)"), (None, "e**x")])
    assert piecewise.evaluate({"x": X}).shape == X.shape
    assert ast_only  # the guard was really in place


# --- Error messages ---------------------------------------------------------------------------


def test_unknown_name_message_has_column_snippet_and_allowed_names() -> None:
    with pytest.raises(ExprError) as info:
        parse("sin(x) + y")
    exc = info.value
    assert exc.column == 10 and exc.snippet == "y"
    assert exc.message == "name 'y' is not allowed"
    text = str(exc)
    assert text.startswith("name 'y' is not allowed at column 10 ('y'); variables: x;"), text
    assert "functions: sin, cos" in text and "\n" not in text


def test_did_you_mean() -> None:
    with pytest.raises(ExprError, match=r"unknown function 'sn' at column 1 .*did you mean 'sin'"):
        parse("sn(x)")
    with pytest.raises(ExprError, match="did you mean 'pi'"):
        parse("pii * x")
    with pytest.raises(ExprError, match="did you mean 'x2'"):
        parse("x1 + xx2", variables=("x1", "x2"))


def test_columns_count_characters_not_bytes() -> None:
    with pytest.raises(ExprError) as info:
        parse("x + 'é' + y")
    assert info.value.column == 5
    with pytest.raises(ExprError) as info:
        parse("(x +\n  y)")
    assert info.value.column == 8 and info.value.snippet == "y"


def test_syntax_error_has_a_column() -> None:
    with pytest.raises(ExprError) as info:
        parse("1 +* 2")
    assert info.value.message.startswith("syntax error") and info.value.column == 4
    with pytest.raises(ExprError, match="end of expression"):
        parse("x if x > 0 else")


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("x.real", "attribute access is not allowed"),
        ("x[0]", "subscripts are not allowed"),
        ("lambda: 1", "lambda"),
        ("[i for i in x]", "comprehensions are not allowed"),
        ('f"{x}"', "f-strings are not allowed"),
        ("(y := 2)", "assignment expressions"),
        ("'abc'", "strings are not allowed"),
        ("x @ x", "'@'"),
        ("x if 1 else 2", "condition must be a comparison"),
        ("sin(x, 2)", "sin() takes 1 argument, got 2"),
        ("sin(x=1)", "keyword arguments are not allowed"),
        ("x is x", "'is'"),
    ],
)
def test_constructs_are_named_in_plain_words(source: str, words: str) -> None:
    with pytest.raises(ExprError) as info:
        parse(source)
    assert words in info.value.message
    assert info.value.column is not None and info.value.snippet


def test_messages_stay_short_for_huge_names() -> None:
    with pytest.raises(ExprError) as info:
        parse("x + " + "a" * 1900, variables=[f"v{i}" for i in range(300)])
    text = str(info.value)
    assert len(text) < 300 and "\n" not in text
    assert info.value.snippet is not None and len(info.value.snippet) <= 30


# --- Properties -------------------------------------------------------------------------------

TOKENS = [
    "0", "1", "2.5", "1e3", "9", "x", "pi", "e", "+", "-", "*", "/", "**", "%", "//", "(", ")",
    "sin", "cos", "exp", "log", "min", "max", "atan2", "sqrt", "if", "else", "<=", "<", "==",
    "and", "or", "not", ".", "__class__", "[", "]", "'", '"', ",", "=", ":", "lambda", "y", "@",
]  # fmt: skip

SMALL = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)


def check_outcome(source: str) -> None:
    """The only acceptable outcomes: a working Expression, or an ExprError."""
    try:
        expr = parse(source)
    except ExprError as exc:
        text = str(exc)
        assert "\n" not in text and len(text) < 300
        return
    got = expr.evaluate({"x": SMALL})
    assert isinstance(got, torch.Tensor)
    assert got.shape == SMALL.shape and got.dtype == SMALL.dtype


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_random_text_parses_or_raises_expr_error(source: str) -> None:
    check_outcome(source)


leaves = st.one_of(
    st.sampled_from(["x", "pi", "e", "0", "1", "0.5"]),
    st.integers(0, 10**6).map(str),
    st.floats(0, 1e6, allow_nan=False, allow_infinity=False).map(repr),
)


def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binop = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**", "%", "//"]), children)
    comparison = st.tuples(children, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), children)
    compare = comparison.map(" ".join)
    condition = st.one_of(
        compare,
        compare.map(lambda c: f"not {c}"),
        st.tuples(compare, st.sampled_from(["and", "or"]), compare).map(" ".join),
        st.tuples(children, children, children).map(lambda t: f"{t[0]} < {t[1]} <= {t[2]}"),
    )
    unary = sorted(set(FUNCTIONS) - {"min", "max", "atan2"})
    return st.one_of(
        binop.map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"-{c}"),
        st.tuples(st.sampled_from(unary), children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(["min", "max", "atan2"]), children, children).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.tuples(children, condition, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
    )


valid_expressions = st.recursive(leaves, extend, max_leaves=16)


# Mostly-plausible tokens are repeated so that a fair share of the soup parses.
SOUP_TOKENS = TOKENS + ["x", "1", "+", "*", "(", ")", "sin", "x", "<=", "0"] * 3
pure_soup = st.lists(
    st.tuples(st.sampled_from(SOUP_TOKENS), st.sampled_from(["", " "])), min_size=1, max_size=14
).map(lambda pairs: "".join(token + sep for token, sep in pairs))


@st.composite
def mutated_valid(draw: st.DrawFn) -> str:
    """A valid expression with a few tokens inserted, deleted or replaced."""
    source = draw(valid_expressions)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(source)))
        cut = draw(st.integers(0, 3))
        source = source[:where] + draw(st.sampled_from(TOKENS)) + source[where + cut :]
    return source


token_soup = st.one_of(pure_soup, mutated_valid())


@settings(max_examples=500, deadline=None)
@given(token_soup)
def test_token_soup_parses_or_raises_expr_error(source: str) -> None:
    check_outcome(source)


@settings(max_examples=500, deadline=None)
@given(valid_expressions)
def test_valid_random_expressions_always_parse(source: str) -> None:
    expr = parse(source)
    assert set(expr.variables) <= {"x"}
    for dtype in (torch.float64, torch.float32):
        x = SMALL.to(dtype)
        got = expr.evaluate({"x": x})
        assert got.shape == x.shape and got.dtype == dtype


# --- Import hygiene ---------------------------------------------------------------------------


def test_importing_does_not_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import aaf_cli.expr, sys; print('torch' in sys.modules)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "False"
