"""Safe parsing and vectorised evaluation of user-written target expressions.

An expression such as ``"0.2*sin(6*x) if x <= 0 else 1 + 0.1*x*cos(18*x)"`` is parsed with
:func:`ast.parse` and checked against an allow-list of syntax nodes, names and functions. The
checked tree is then turned into a tree of small Python closures that call tensor methods; the
expression is never handed to ``eval``/``exec`` nor compiled to a code object, no attribute of
any user-named object is looked up, and no name outside the allow-list is resolved.

Every number is evaluated as a tensor in the dtype of the inputs, so ``9**9**9`` gives ``inf``
instead of an endless big-integer computation, and a division by zero gives ``inf``/``nan``
(the caller checks finiteness).

Importing this module does not import torch; torch is only needed once an expression is
evaluated on tensors.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "CONSTANTS",
    "FUNCTIONS",
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_NODES",
    "ExprError",
    "Expression",
    "parse",
    "parse_piecewise",
]

MAX_CHARS = 2000
"""Longest accepted expression, in characters."""

MAX_NODES = 400
"""Largest accepted expression, in syntax-tree nodes (numbers, names, operators, calls...)."""

MAX_DEPTH = 40
"""Deepest accepted nesting of the syntax tree."""

FUNCTIONS: dict[str, str] = {
    "sin": "sine",
    "cos": "cosine",
    "tan": "tangent",
    "asin": "inverse sine",
    "acos": "inverse cosine",
    "atan": "inverse tangent",
    "sinh": "hyperbolic sine",
    "cosh": "hyperbolic cosine",
    "tanh": "hyperbolic tangent",
    "exp": "exponential",
    "log": "natural logarithm",
    "log10": "base-10 logarithm",
    "log2": "base-2 logarithm",
    "sqrt": "square root",
    "abs": "absolute value",
    "sign": "sign: -1, 0 or 1",
    "floor": "round down",
    "ceil": "round up",
    "erf": "error function",
    "j0": "Bessel function of the first kind, order 0",
    "j1": "Bessel function of the first kind, order 1",
    "min": "min(a, b): the smaller of two values",
    "max": "max(a, b): the larger of two values",
    "atan2": "atan2(y, x): angle of the point (x, y)",
}
"""The functions an expression may call, with a short description of each."""

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan}
"""The named constants an expression may use."""

_SNIPPET_CHARS = 30
_NAME_CHARS = 30
_MAX_MESSAGE_CHARS = 299

Kind = Literal["number", "condition"]
_Node = Callable[["_Env"], "Tensor"]


class ExprError(ValueError):
    """An expression is invalid: bad syntax, a construct or name outside the allow-list, too big.

    ``str(exc)`` is always a single line of bounded length, e.g.
    ``name 'y' is not allowed at column 10 ('y'); variables: x; constants: pi, e, inf, nan; ...``.

    Attributes:
        message: What is wrong, without the position.
        column: 1-based column of the offending part, counted in characters from the start of the
            expression string (a multi-line expression counts as one line), or None.
        snippet: The offending part of the expression, shortened to about 30 characters, or None.
        hint: What is allowed instead (close matches, allowed names), or None.
    """

    def __init__(
        self,
        message: str,
        column: int | None = None,
        snippet: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.column = column
        self.snippet = snippet
        self.hint = hint
        text = message
        if column is not None:
            text += f" at column {column}"
        if snippet is not None:
            text += f" ({snippet!r})"
        if hint:
            text += f"; {hint}"
        text = " ".join(text.split())
        if len(text) > _MAX_MESSAGE_CHARS:
            text = text[: _MAX_MESSAGE_CHARS - 3] + "..."
        super().__init__(text)


@dataclass(frozen=True)
class _Env:
    """What a compiled expression sees while it runs: the inputs and a tensor to copy from."""

    values: Mapping[str, Tensor]
    like: Tensor


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression that can be evaluated on tensors.

    Build one with :func:`parse` or :func:`parse_piecewise`, not directly.

    Attributes:
        source: The expression as written (for :func:`parse_piecewise`, an equivalent single
            conditional expression).
        variables: The variable names the expression actually uses, sorted.
    """

    source: str
    variables: tuple[str, ...]
    _root: _Node = field(repr=False, compare=False)

    def evaluate(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """Evaluate the expression element-wise.

        Args:
            inputs: One floating-point tensor per variable (extra entries are ignored), all of
                the same shape, dtype and device.

        Returns:
            A new tensor of the inputs' shape, dtype and device. A constant expression is
            broadcast to that shape; with no inputs at all the result is a 0-d tensor of torch's
            default dtype. Invalid operations give ``inf``/``nan`` elements rather than errors.

        Raises:
            ExprError: An input for a used variable is missing, or the inputs are not
                floating-point tensors of one shape, dtype and device.
        """
        missing = [name for name in self.variables if name not in inputs]
        if missing:
            raise ExprError(f"no input given for variable {missing[0]!r}")
        tensors = list(inputs.values())
        if tensors:
            like = tensors[0]
            for tensor in tensors:
                if not tensor.is_floating_point():
                    raise ExprError(f"inputs must be floating-point tensors, not {tensor.dtype}")
                if (tensor.shape, tensor.dtype, tensor.device) != (
                    like.shape,
                    like.dtype,
                    like.device,
                ):
                    raise ExprError("inputs must all have the same shape, dtype and device")
        else:
            import torch

            like = torch.zeros(())
        result = self._root(_Env(values=inputs, like=like))
        if result.shape != like.shape:
            return result.expand(like.shape).contiguous()
        if any(result is tensor for tensor in tensors):
            return result.clone()
        return result


def parse(source: str, variables: Sequence[str] = ("x",)) -> Expression:
    """Parse and check an expression.

    Args:
        source: The expression, in Python syntax restricted to numbers, the given variables, the
            constants in :data:`CONSTANTS`, calls of :data:`FUNCTIONS`, arithmetic
            (``+ - * / ** % //``), comparisons (chained ones too), ``and``/``or``/``not`` and
            ``a if condition else b``.
        variables: The variable names the expression may use.

    Returns:
        The checked expression.

    Raises:
        ExprError: The expression is not a string, too long, empty, not valid syntax, uses
            anything outside the allow-list, is too large or too deeply nested, or uses a
            condition as a number (or a number as a condition). Also raised for invalid
            ``variables``.
    """
    allowed = _check_variables(variables)
    tree = _parse_tree(source)
    node, used = _Compiler(source, allowed).compile(tree, "number")
    return Expression(source=source, variables=tuple(sorted(used)), _root=node)


def parse_piecewise(
    pieces: Sequence[tuple[str | None, str]], variables: Sequence[str] = ("x",)
) -> Expression:
    """Parse a piecewise definition: a list of ``(condition, expression)`` pairs.

    The first piece whose condition holds gives the value. The last piece's condition may be
    None, meaning "otherwise"; where no condition holds the value is ``nan``.

    Args:
        pieces: ``(condition, expression)`` pairs, each string checked as by :func:`parse`
            (conditions must be comparisons, possibly combined with ``and``/``or``/``not``).
        variables: The variable names the pieces may use.

    Returns:
        The checked expression; its ``source`` is an equivalent single conditional expression.

    Raises:
        ExprError: Some piece is invalid; the message starts with e.g. ``piece 2 (when):``
            (``when`` for the condition, ``value`` for the expression).
    """
    allowed = _check_variables(variables)
    given: object = pieces
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
        raise ExprError("pieces must be a list of (condition, expression) pairs")
    if not pieces:
        raise ExprError("a piecewise expression needs at least one piece")
    compiled: list[tuple[_Node | None, _Node]] = []
    texts: list[tuple[str | None, str]] = []
    used: set[str] = set()
    for index, piece in enumerate(pieces, start=1):
        if not isinstance(piece, tuple) or len(piece) != 2:
            raise ExprError(f"piece {index}: must be a (condition, expression) pair")
        condition, value = piece
        cond_node: _Node | None = None
        cond_text: str | None = None
        if condition is None:
            if index != len(pieces):
                raise ExprError(f"piece {index} (when): only the last piece may omit its condition")
        else:
            with _in_piece(index, "when"):
                cond_tree = _parse_tree(condition)
                cond_node, cond_used = _Compiler(condition, allowed).compile(cond_tree, "condition")
            used |= cond_used
            cond_text = ast.unparse(cond_tree.body)
        with _in_piece(index, "value"):
            value_tree = _parse_tree(value)
            value_node, value_used = _Compiler(value, allowed).compile(value_tree, "number")
        used |= value_used
        value_text = ast.unparse(value_tree.body)
        if isinstance(value_tree.body, ast.IfExp):
            value_text = f"({value_text})"
        compiled.append((cond_node, value_node))
        texts.append((cond_text, value_text))

    source = ""
    for cond_text, value_text in texts:
        source += value_text if cond_text is None else f"{value_text} if {cond_text} else "
    if texts[-1][0] is not None:
        source += "nan"

    def run(env: _Env) -> Tensor:
        otherwise = compiled[-1]
        if otherwise[0] is None:
            result = otherwise[1](env)
            rest = compiled[:-1]
        else:
            result = env.like.new_full((), math.nan)
            rest = compiled
        for cond, value in reversed(rest):
            assert cond is not None
            result = value(env).where(cond(env), result)
        return result

    return Expression(source=source, variables=tuple(sorted(used)), _root=run)


@contextmanager
def _in_piece(index: int, part: str) -> Iterator[None]:
    """Prefix the message of an :class:`ExprError` raised inside with the piece it belongs to."""
    try:
        yield
    except ExprError as exc:
        prefix = f"piece {index} ({part}): "
        raise ExprError(prefix + exc.message, exc.column, exc.snippet, exc.hint) from None


def _check_variables(variables: Sequence[str]) -> tuple[str, ...]:
    if isinstance(variables, (str, bytes)) or not isinstance(variables, Sequence):
        raise ExprError("variables must be a list of names")
    result: list[str] = []
    for name in variables:
        if not isinstance(name, str) or not name.isidentifier() or name in _RESERVED:
            raise ExprError(f"invalid variable name {_short(repr(name))}")
        if name not in result:
            result.append(name)
    return tuple(result)


_RESERVED = frozenset(FUNCTIONS) | frozenset(CONSTANTS) | {"True", "False", "None"}


def _short(text: str, limit: int = _NAME_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_tree(source: str) -> ast.Expression:
    """Parse ``source`` into a syntax tree, cheaply rejecting what is too long or too big."""
    if not isinstance(source, str):
        raise ExprError(f"an expression must be a string, not {type(source).__name__}")
    if len(source) > MAX_CHARS:
        raise ExprError(f"expression too long: {len(source)} characters (max {MAX_CHARS})")
    if not source.strip():
        raise ExprError("expression is empty")
    if "\0" in source:
        raise ExprError("expression contains a null character", source.index("\0") + 1)
    try:
        with warnings.catch_warnings():
            # Tokenizer warnings (e.g. "1if") would otherwise be printed or, under -W error,
            # raised; the tree is checked node by node anyway.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise _syntax_error(source, exc) from None
    except (RecursionError, MemoryError):
        raise ExprError("expression is too deeply nested") from None
    except ValueError as exc:
        raise ExprError(f"invalid expression: {_short(str(exc), 80)}") from None
    _check_size(source, tree)
    return tree


def _line_starts(source: str) -> list[int]:
    starts = [0]
    starts.extend(match.end() for match in re.finditer(r"\r\n|\r|\n", source))
    return starts


def _syntax_error(source: str, exc: SyntaxError) -> ExprError:
    message = f"syntax error: {_short(exc.msg or 'invalid syntax', 80)}"
    column: int | None = None
    snippet: str | None = None
    starts = _line_starts(source)
    lineno = exc.lineno or 1
    if 1 <= lineno <= len(starts):
        start = starts[lineno - 1]
        end = starts[lineno] if lineno < len(starts) else len(source)
        line = source[start:end].rstrip("\r\n")
        offset = exc.offset or 0
        if offset < 1:
            # CPython reports an unexpected end of input at offset 0.
            message += " (unexpected end of expression)"
            column = len(source) + 1
        else:
            offset = min(offset, len(line) + 1)
            column = start + offset
            snippet = _short(line[offset - 1 :], _SNIPPET_CHARS).strip() or None
    return ExprError(message, column, snippet)


def _node_column(source: str, node: ast.AST) -> int | None:
    lineno = getattr(node, "lineno", None)
    col = getattr(node, "col_offset", None)
    if not isinstance(lineno, int) or not isinstance(col, int):
        return None
    starts = _line_starts(source)
    if not 1 <= lineno <= len(starts):
        return None
    start = starts[lineno - 1]
    line = source[start:]
    # ast offsets count UTF-8 bytes within the line; columns count characters.
    chars = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
    return start + chars + 1


def _node_snippet(source: str, node: ast.AST) -> str | None:
    try:
        segment = ast.get_source_segment(source, node)
    except (IndexError, ValueError):  # pragma: no cover - defensive, positions come from ast
        segment = None
    if not segment:
        return None
    return _short(" ".join(segment.split()), _SNIPPET_CHARS)


def _error_at(source: str, node: ast.AST, message: str, hint: str | None = None) -> ExprError:
    return ExprError(message, _node_column(source, node), _node_snippet(source, node), hint)


def _check_size(source: str, tree: ast.Expression) -> None:
    """Count the nodes and measure the nesting without recursion (the tree may be very deep)."""
    count = 0
    deepest: tuple[int, ast.AST] = (0, tree.body)
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (ast.expr, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)):
            count += 1
        if depth > deepest[0]:
            deepest = (depth, node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr_context):
                continue
            stack.append((child, depth + 1 if isinstance(child, ast.expr) else depth))
    if count > MAX_NODES:
        raise ExprError(f"expression too large: {count} nodes (max {MAX_NODES})")
    if deepest[0] > MAX_DEPTH:
        raise _error_at(
            source,
            deepest[1],
            f"expression too deeply nested: depth {deepest[0]} (max {MAX_DEPTH})",
        )


# --- What is allowed, and how it is computed -------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Tensor, Tensor], Tensor]] = {
    ast.Add: lambda a, b: a.add(b),
    ast.Sub: lambda a, b: a.sub(b),
    ast.Mult: lambda a, b: a.mul(b),
    ast.Div: lambda a, b: a.div(b),
    ast.Pow: lambda a, b: a.pow(b),
    ast.Mod: lambda a, b: a.remainder(b),
    ast.FloorDiv: lambda a, b: a.div(b, rounding_mode="floor"),
}

_COMPARE: dict[type[ast.cmpop], Callable[[Tensor, Tensor], Tensor]] = {
    ast.Lt: lambda a, b: a.lt(b),
    ast.LtE: lambda a, b: a.le(b),
    ast.Gt: lambda a, b: a.gt(b),
    ast.GtE: lambda a, b: a.ge(b),
    ast.Eq: lambda a, b: a.eq(b),
    ast.NotEq: lambda a, b: a.ne(b),
}


def _special(name: str, a: Tensor) -> Tensor:
    """``torch.special.<name>(a)`` (torch is imported where an expression is evaluated)."""
    import torch

    out: Tensor = getattr(torch.special, name)(a)
    return out


_UNARY_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sin": lambda a: a.sin(),
    "cos": lambda a: a.cos(),
    "tan": lambda a: a.tan(),
    "asin": lambda a: a.asin(),
    "acos": lambda a: a.acos(),
    "atan": lambda a: a.atan(),
    "sinh": lambda a: a.sinh(),
    "cosh": lambda a: a.cosh(),
    "tanh": lambda a: a.tanh(),
    "exp": lambda a: a.exp(),
    "log": lambda a: a.log(),
    "log10": lambda a: a.log10(),
    "log2": lambda a: a.log2(),
    "sqrt": lambda a: a.sqrt(),
    "abs": lambda a: a.abs(),
    "sign": lambda a: a.sign(),
    "floor": lambda a: a.floor(),
    "ceil": lambda a: a.ceil(),
    "erf": lambda a: a.erf(),
    "j0": lambda a: _special("bessel_j0", a),
    "j1": lambda a: _special("bessel_j1", a),
}

_BINARY_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "min": lambda a, b: a.minimum(b),
    "max": lambda a, b: a.maximum(b),
    "atan2": lambda y, x: y.atan2(x),
}

assert set(FUNCTIONS) == set(_UNARY_FUNCTIONS) | set(_BINARY_FUNCTIONS)

_OPERATOR_WORDS: dict[type[ast.AST], str] = {
    ast.BitOr: "bitwise operator '|' is not allowed",
    ast.BitAnd: "bitwise operator '&' is not allowed (use 'and')",
    ast.BitXor: "bitwise operator '^' is not allowed (use '**' for powers)",
    ast.LShift: "shift operator '<<' is not allowed",
    ast.RShift: "shift operator '>>' is not allowed",
    ast.MatMult: "matrix multiplication '@' is not allowed",
    ast.Invert: "bitwise operator '~' is not allowed (use 'not')",
    ast.Is: "'is' comparisons are not allowed (use '==')",
    ast.IsNot: "'is not' comparisons are not allowed (use '!=')",
    ast.In: "'in' tests are not allowed",
    ast.NotIn: "'not in' tests are not allowed",
}

_CONSTRUCT_WORDS: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Slice: "slices are not allowed",
    ast.Lambda: "lambda functions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Starred: "starred ('*') arguments are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (':=') are not allowed",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.Dict: "dictionaries are not allowed",
    ast.Set: "sets are not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
}


def _did_you_mean(name: str, candidates: Sequence[str]) -> str:
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {matches[0]!r}? " if matches else ""


class _Compiler:
    """Checks a syntax tree against the allow-list and turns it into closures over tensors."""

    def __init__(self, source: str, variables: tuple[str, ...]) -> None:
        self.source = source
        self.variables = variables
        self.used: set[str] = set()

    def compile(self, tree: ast.Expression, want: Kind) -> tuple[_Node, set[str]]:
        node = self._expect(tree.body, want)
        return node, self.used

    # Kinds: every allowed node is either a number or a condition (a boolean tensor); numbers
    # and conditions do not mix, so e.g. ``(x > 0) + 1`` and ``x if 1 else 2`` are errors.

    def _expect(self, node: ast.expr, want: Kind) -> _Node:
        compiled, kind = self._compile(node)
        if kind != want:
            if want == "condition":
                raise self._error(node, "condition must be a comparison (like x > 0)")
            raise self._error(
                node, "a condition (comparison, 'and', 'or', 'not') cannot be used as a number"
            )
        return compiled

    def _error(self, node: ast.AST, message: str, hint: str | None = None) -> ExprError:
        return _error_at(self.source, node, message, hint)

    def _names_hint(self) -> str:
        variables = ", ".join(self.variables) or "(none)"
        return (
            f"variables: {variables}; constants: {', '.join(CONSTANTS)}; "
            f"functions: {', '.join(FUNCTIONS)}"
        )

    def _compile(self, node: ast.expr) -> tuple[_Node, Kind]:
        if isinstance(node, ast.Constant):
            return self._constant(node), "number"
        if isinstance(node, ast.Name):
            return self._name(node), "number"
        if isinstance(node, ast.BinOp):
            return self._binop(node), "number"
        if isinstance(node, ast.UnaryOp):
            return self._unaryop(node)
        if isinstance(node, ast.Compare):
            return self._compare(node), "condition"
        if isinstance(node, ast.BoolOp):
            return self._boolop(node), "condition"
        if isinstance(node, ast.IfExp):
            return self._ifexp(node), "number"
        if isinstance(node, ast.Call):
            return self._call(node), "number"
        for construct, words in _CONSTRUCT_WORDS.items():
            if isinstance(node, construct):
                raise self._error(node, words)
        raise self._error(node, f"{type(node).__name__} expressions are not allowed")

    def _constant(self, node: ast.Constant) -> _Node:
        value = node.value
        if isinstance(value, bool):
            raise self._error(node, f"{value} is not allowed (use a comparison)")
        if isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            return lambda env: env.like.new_full((), number)
        if isinstance(value, str):
            raise self._error(node, "strings are not allowed")
        if isinstance(value, bytes):
            raise self._error(node, "bytes are not allowed")
        if isinstance(value, complex):
            raise self._error(node, "complex numbers are not allowed")
        if value is None:
            raise self._error(node, "None is not allowed")
        if value is Ellipsis:
            raise self._error(node, "'...' is not allowed")
        raise self._error(node, f"constants of type {type(value).__name__} are not allowed")

    def _name(self, node: ast.Name) -> _Node:
        name = node.id
        if not isinstance(node.ctx, ast.Load):
            raise self._error(node, "assignments are not allowed")
        if name in self.variables:
            self.used.add(name)
            return lambda env: env.values[name]
        if name in CONSTANTS:
            number = CONSTANTS[name]
            return lambda env: env.like.new_full((), number)
        if name in FUNCTIONS:
            raise self._error(node, f"function {name!r} must be called, e.g. {name}(x)")
        hint = _did_you_mean(name, [*self.variables, *CONSTANTS, *FUNCTIONS])
        raise self._error(node, f"name {_short(name)!r} is not allowed", hint + self._names_hint())

    def _binop(self, node: ast.BinOp) -> _Node:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise self._error(node, self._operator_words(node.op))
        left = self._expect(node.left, "number")
        right = self._expect(node.right, "number")
        return lambda env: op(left(env), right(env))

    def _operator_words(self, op: ast.AST) -> str:
        return _OPERATOR_WORDS.get(type(op), f"operator {type(op).__name__} is not allowed")

    def _unaryop(self, node: ast.UnaryOp) -> tuple[_Node, Kind]:
        if isinstance(node.op, ast.Not):
            operand = self._expect(node.operand, "condition")
            return (lambda env: operand(env).logical_not()), "condition"
        if isinstance(node.op, ast.USub):
            operand = self._expect(node.operand, "number")
            return (lambda env: operand(env).neg()), "number"
        if isinstance(node.op, ast.UAdd):
            return self._expect(node.operand, "number"), "number"
        raise self._error(node, self._operator_words(node.op))

    def _compare(self, node: ast.Compare) -> _Node:
        ops: list[Callable[[Tensor, Tensor], Tensor]] = []
        for cmpop in node.ops:
            op = _COMPARE.get(type(cmpop))
            if op is None:
                raise self._error(node, self._operator_words(cmpop))
            ops.append(op)
        operands = [self._expect(node.left, "number")]
        operands += [self._expect(item, "number") for item in node.comparators]

        def run(env: _Env) -> Tensor:
            # ``a < b < c`` means ``a < b and b < c`` with ``b`` computed once.
            left = operands[0](env)
            result: Tensor | None = None
            for op, operand in zip(ops, operands[1:]):
                right = operand(env)
                test = op(left, right)
                result = test if result is None else result.logical_and(test)
                left = right
            assert result is not None
            return result

        return run

    def _boolop(self, node: ast.BoolOp) -> _Node:
        values = [self._expect(value, "condition") for value in node.values]
        is_and = isinstance(node.op, ast.And)

        def run(env: _Env) -> Tensor:
            result = values[0](env)
            for value in values[1:]:
                other = value(env)
                result = result.logical_and(other) if is_and else result.logical_or(other)
            return result

        return run

    def _ifexp(self, node: ast.IfExp) -> _Node:
        test = self._expect(node.test, "condition")
        body = self._expect(node.body, "number")
        orelse = self._expect(node.orelse, "number")
        return lambda env: body(env).where(test(env), orelse(env))

    def _call(self, node: ast.Call) -> _Node:
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                raise self._error(func, "attribute access is not allowed")
            raise self._error(func, "only the allowed functions can be called, by name")
        name = func.id
        if name not in FUNCTIONS:
            if name in self.variables or name in CONSTANTS:
                raise self._error(func, f"{name!r} is not a function")
            hint = _did_you_mean(name, list(FUNCTIONS))
            raise self._error(
                func,
                f"unknown function {_short(name)!r}",
                f"{hint}functions: {', '.join(FUNCTIONS)}",
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self._error(arg, "starred ('*') arguments are not allowed")
        if node.keywords:
            keyword = node.keywords[0]
            if keyword.arg is None:
                raise self._error(keyword, "'**' arguments are not allowed")
            raise self._error(keyword, f"keyword arguments are not allowed in {name}()")
        arity = 2 if name in _BINARY_FUNCTIONS else 1
        if len(node.args) != arity:
            plural = "argument" if arity == 1 else "arguments"
            raise self._error(node, f"{name}() takes {arity} {plural}, got {len(node.args)}")
        args = [self._expect(arg, "number") for arg in node.args]
        if arity == 1:
            unary = _UNARY_FUNCTIONS[name]
            (only,) = args
            return lambda env: unary(only(env))
        binary = _BINARY_FUNCTIONS[name]
        first, second = args
        return lambda env: binary(first(env), second(env))
