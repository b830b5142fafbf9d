"""A safe arithmetic evaluator: walks the ``ast`` of an expression, never calls ``eval``.

Accepted: int and float literals, ``+ - * / // % **``, unary ``+``/``-`` and parentheses.
Everything else (names, calls, attributes, subscripts, comparisons, strings, ...) is rejected.
Limits keep one call cheap: expression length, nesting depth, exponent size and result magnitude.

Rejected input raises :class:`ToolArgumentsError`; arithmetic that cannot produce a real, finite
number in range (division by zero, overflow) raises :class:`ToolExecutionError`. Messages never
repeat the expression.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from agentstream.tools.exceptions import ToolArgumentsError, ToolExecutionError

Number = int | float

MAX_EXPRESSION_LENGTH = 200
MAX_DEPTH = 32
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e100
MAX_RESULT_DIGITS = 100
"""An integer power whose result would have more digits than this is refused before computing."""

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


def calculate(expression: str) -> str:
    """Evaluate and format: ``"2+3"`` → ``"5"``, ``"10/4"`` → ``"2.5"``."""
    return format_number(evaluate(expression))


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression safely; see the module docstring for what is allowed."""
    text = expression.strip()
    if not text:
        raise ToolArgumentsError("the expression is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ToolArgumentsError(f"the expression exceeds {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        raise ToolArgumentsError("the expression is not valid arithmetic") from exc
    return _eval(tree.body, depth=0)


def format_number(value: Number) -> str:
    """Integers (and floats with an exact integer value) without ``.0``; floats to 12 digits."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g")


def _eval(node: ast.expr, *, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise ToolArgumentsError(f"the expression is nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        return _check_magnitude(_literal(node.value))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, depth=depth + 1))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _eval(node.left, depth=depth + 1)
        right = _eval(node.right, depth=depth + 1)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _check_magnitude(_apply(_BINARY[type(node.op)], left, right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolArgumentsError("'^' is not supported; use '**' for powers")
    raise ToolArgumentsError(
        f"unsupported element in expression ({type(node).__name__}); "
        "only numbers, + - * / // % ** and parentheses are allowed"
    )


def _literal(value: object) -> Number:
    # bool is an int subclass: reject it along with strings, bytes, complex, None, Ellipsis.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolArgumentsError("only int and float numbers are allowed in the expression")
    return value


def _apply(op: Callable[[Number, Number], Number], left: Number, right: Number) -> Number:
    try:
        result = op(left, right)
    except ZeroDivisionError as exc:
        raise ToolExecutionError("division by zero") from exc
    except OverflowError as exc:
        raise ToolExecutionError("the result is too large") from exc
    if isinstance(result, complex):
        raise ToolExecutionError("the result is not a real number")
    return result


def _check_power(base: Number, exponent: Number) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolArgumentsError(f"exponents are limited to ±{MAX_EXPONENT}")
    # Refuse a huge integer power before computing it, from its digit count.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent * math.log10(abs(base)) > MAX_RESULT_DIGITS
    ):
        raise ToolExecutionError("the result is too large")


def _check_magnitude(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolExecutionError("the result is not a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolExecutionError(f"the result exceeds the magnitude limit of {MAX_MAGNITUDE:g}")
    return value
