"""Timeout expressions: Kadeploy3's Ruby arithmetic on n, evaluated without eval."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel

from kadeploy.config import TimeoutExpr
from kadeploy.errors import ConfigError


@pytest.mark.parametrize(
    ("source", "n", "expected"),
    [
        (120, 7, 120.0),
        ("120", 7, 120.0),
        (12.5, 1, 12.5),
        ("200 + 150 * Math.log(n)", 1, 200.0),
        ("200 + 150 * Math.log(n)", 100, 200 + 150 * math.log(100)),
        ("n * 2 + 10", 50, 110.0),
        ("Math.sqrt(n)*3", 16, 12.0),
        ("Math::sqrt(n) * 3", 25, 15.0),
        ("2 ** 3 + n", 1, 9.0),
        ("-(n) + 2000", 10, 1990.0),
        ("Math.log(n, 2) * 10", 8, 30.0),
        ("Math.log10(n) + Math.log2(n)", 1, 0.0),
        ("Math.ceil(n / 3.0)", 10, 4.0),
        ("Math.floor(Math.exp(1))", 1, 2.0),
        ("n % 7", 10, 3.0),
    ],
)
def test_expression_values(source, n, expected):
    assert TimeoutExpr(source).evaluate(n) == pytest.approx(expected)


def test_integer_division_follows_ruby():
    # Ruby: 7 / 2 == 3 (integers), 7 / 2.0 == 3.5
    assert TimeoutExpr("100 + n / 2").evaluate(7) == 103.0
    assert TimeoutExpr("100 + n / 2.0").evaluate(7) == 103.5


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("__import__('os').system('true')", "only calls to Math"),
        ("().__class__", "attribute access"),
        ("n.real", "attribute access"),
        ("open('/etc/passwd')", "only calls to Math"),
        ("Math.pow(n, 2)", "only calls to Math"),
        ("os.system('x')", "only calls to Math"),
        ("x + 1", "unknown name 'x'"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("[n]", "List is not allowed"),
        ("n if n else 1", "IfExp is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("n ^ 2", "BitXor is not allowed"),
        ("n << 2", "LShift is not allowed"),
        ("Math.sqrt(x=n)", "keyword arguments"),
        ("Math.sqrt(n, 2)", "takes 1 argument"),
        ("200 +", "syntax error"),
        ("", "empty"),
    ],
)
def test_refused_expressions_name_the_expression(source, reason):
    with pytest.raises(ConfigError) as info:
        TimeoutExpr(source)
    assert reason in info.value.message
    if source:
        assert source in info.value.message


@pytest.mark.parametrize("source", ["1 / (n - 1)", "10 ** 10 ** 10", "Math.exp(n)", "-n", "Math.sqrt(-n)"])
def test_expressions_failing_at_1_or_1000_nodes_are_refused(source):
    with pytest.raises(ConfigError) as info:
        TimeoutExpr(source)
    assert "n=1" in info.value.message or "n=1000" in info.value.message


def test_too_long_expression_is_refused():
    with pytest.raises(ConfigError, match="longer than"):
        TimeoutExpr("1 + " * 100 + "1")


def test_non_numeric_value_is_refused():
    with pytest.raises(ConfigError):
        TimeoutExpr(True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TimeoutExpr([1])  # type: ignore[arg-type]


def test_pydantic_field_accepts_numbers_and_expressions_and_dumps_the_source():
    class Model(BaseModel):
        reboot: TimeoutExpr

    model = Model.model_validate({"reboot": "200 + 150 * Math.log(n)"})
    assert model.reboot.evaluate(1) == 200.0
    assert model.model_dump() == {"reboot": "200 + 150 * Math.log(n)"}
    assert Model.model_validate({"reboot": 60}).reboot == TimeoutExpr("60")
