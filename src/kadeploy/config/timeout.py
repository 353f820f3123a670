"""Timeout expressions of cluster files: `200 + 150 * Math.log(n)`.

Kadeploy3 `eval`ed these Ruby snippets (and forgot to define `n` at run time,
reference §13 quirk 1). Here they are parsed once with Python's `ast` and
evaluated by walking a whitelist of nodes, so that nothing but arithmetic on
numbers and `n` (the number of nodes) can ever run:

* numbers, the name `n`, parentheses;
* binary `+ - * / % **` and unary `+ -`;
* calls `Math.log(x[, base])`, `Math.log10`, `Math.log2`, `Math.sqrt`,
  `Math.exp`, `Math.ceil`, `Math.floor` (Ruby's `Math::log` spelling too).

Integer division follows Ruby (`7 / 2 == 3`), so that existing expressions
keep their values. Imports nothing from other rooms except `kadeploy.errors`.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from kadeploy.errors import ConfigError

#: Longest expression accepted: keeps parsing and evaluation trivially cheap.
MAX_EXPRESSION_LENGTH = 256

#: Node counts an expression is checked with when it is loaded.
CHECK_NODE_COUNTS = (1, 1000)

_MATH_FUNCTIONS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "log": (math.log, (1, 2)),
    "log10": (math.log10, (1,)),
    "log2": (math.log2, (1,)),
    "sqrt": (math.sqrt, (1,)),
    "exp": (math.exp, (1,)),
    "ceil": (math.ceil, (1,)),
    "floor": (math.floor, (1,)),
}

_BINARY_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod, ast.Pow)


class _Refused(Exception):
    """An expression uses something outside the whitelist."""


def _check(node: ast.AST) -> None:
    """Refuse any syntax outside the whitelist, before anything is evaluated."""
    if isinstance(node, ast.Expression):
        _check(node.body)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise _Refused(f"only numbers are allowed, not {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id != "n":
            raise _Refused(f"unknown name {node.id!r} (only n, the number of nodes, is defined)")
    elif isinstance(node, ast.BinOp):
        if not isinstance(node.op, _BINARY_OPERATORS):
            raise _Refused(f"operator {type(node.op).__name__} is not allowed")
        _check(node.left)
        _check(node.right)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.UAdd, ast.USub)):
            raise _Refused(f"operator {type(node.op).__name__} is not allowed")
        _check(node.operand)
    elif isinstance(node, ast.Call):
        func = node.func
        if not (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "Math"
            and func.attr in _MATH_FUNCTIONS
        ):
            allowed = ", ".join(f"Math.{name}" for name in _MATH_FUNCTIONS)
            raise _Refused(f"only calls to {allowed} are allowed")
        if node.keywords:
            raise _Refused("keyword arguments are not allowed")
        arities = _MATH_FUNCTIONS[func.attr][1]
        if len(node.args) not in arities:
            raise _Refused(f"Math.{func.attr} takes {' or '.join(map(str, arities))} argument(s)")
        for arg in node.args:
            _check(arg)
    elif isinstance(node, ast.Attribute):
        raise _Refused("attribute access is not allowed")
    else:
        raise _Refused(f"{type(node).__name__} is not allowed")


def _evaluate(node: ast.AST, n: int) -> int | float:
    """Evaluate a checked tree with Ruby's arithmetic."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, n)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return n
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, n)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.Call):
        function = _MATH_FUNCTIONS[node.func.attr][0]  # type: ignore[attr-defined]
        return function(*(_evaluate(arg, n) for arg in node.args))
    assert isinstance(node, ast.BinOp)
    left = _evaluate(node.left, n)
    right = _evaluate(node.right, n)
    both_integers = isinstance(left, int) and isinstance(right, int)
    if isinstance(node.op, ast.Add):
        return left + right
    if isinstance(node.op, ast.Sub):
        return left - right
    if isinstance(node.op, ast.Mult):
        return left * right
    if isinstance(node.op, ast.Div):
        return left // right if both_integers else left / right
    if isinstance(node.op, ast.Mod):
        return left % right
    # Pow: done in floats so that 10 ** 10 ** 10 overflows instead of hanging.
    result = float(left) ** float(right)
    if isinstance(result, complex):
        raise ValueError("complex result")
    return int(result) if both_integers and right >= 0 else result


class TimeoutExpr:
    """A timeout in seconds that may depend on `n`, the number of nodes.

    Build it from the YAML value (`120`, `"200 + 150 * Math.log(n)"`); an
    expression that is not plain arithmetic, or that does not give a finite,
    non-negative number for 1 and 1000 nodes, raises ConfigError naming it.
    """

    __slots__ = ("source", "_tree")

    def __init__(self, source: str | int | float) -> None:
        if isinstance(source, bool) or not isinstance(source, (str, int, float)):
            raise ConfigError(f"invalid timeout expression {source!r}: expected a number or an expression of n")
        self.source = str(source).strip()
        self._tree = self._parse(self.source)
        for count in CHECK_NODE_COUNTS:
            self.evaluate(count)

    @staticmethod
    def _parse(text: str) -> ast.Expression:
        if not text:
            raise ConfigError("invalid timeout expression \"\": it is empty")
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise ConfigError(f"invalid timeout expression: longer than {MAX_EXPRESSION_LENGTH} characters")
        python_text = text.replace("Math::", "Math.")
        try:
            tree = ast.parse(python_text, mode="eval")
        except SyntaxError:
            raise ConfigError(f"invalid timeout expression \"{text}\": syntax error") from None
        try:
            _check(tree)
        except _Refused as exc:
            raise ConfigError(f"invalid timeout expression \"{text}\": {exc}") from None
        return tree

    def evaluate(self, n: int) -> float:
        """Seconds for an operation on `n` nodes."""
        try:
            value = float(_evaluate(self._tree, n))
        except (ArithmeticError, ValueError) as exc:
            raise ConfigError(f"timeout expression \"{self.source}\" cannot be evaluated with n={n}: {exc}") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"timeout expression \"{self.source}\" gives {value} with n={n}: expected a finite number >= 0")
        return value

    def __str__(self) -> str:
        return self.source

    def __repr__(self) -> str:
        return f"TimeoutExpr({self.source!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TimeoutExpr):
            return self.source == other.source
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.source)

    @classmethod
    def _validate(cls, value: Any) -> TimeoutExpr:
        if isinstance(value, TimeoutExpr):
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"expected a number or an expression of n, got {type(value).__name__}")
        try:
            return cls(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @classmethod
    def __get_pydantic_core_schema__(cls, source_type: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda expr: expr.source),
        )
