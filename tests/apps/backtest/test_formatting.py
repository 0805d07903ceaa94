"""The one formatter (apps.backtest.formatting): the numbers the issue quoted, and every kind of value."""

from __future__ import annotations

import math

import pytest

from apps.backtest.formatting import (
    format_amount,
    format_duration,
    format_metric,
    format_money,
    format_pct,
    format_price,
    format_time,
    format_value,
    metric_label,
)


@pytest.mark.parametrize(("key", "value", "text"), [
    ("pnl", -320.138, "-320.14"),
    ("total_return_pct", -3.20458, "-3.20%"),
    ("final_equity", 1234567.891, "1,234,567.89"),
    ("fees_paid", 0.0, "0.00"),
    ("sharpe", 1.23456, "1.23"),
    ("closed_trades", 1234, "1,234"),
    ("bars", 66087, "66,087"),
    ("start", 1679616060000, "2023-03-24 00:01 UTC"),
    ("max_drawdown_duration_ms", 3 * 86_400_000 + 4 * 3_600_000 + 5 * 60_000, "3d 04h 05m"),
    ("entry_price", 28123.456, "28,123.46"),
    ("entry_price", 0.000712345678, "0.000712346"),
    ("amount", 0.357142857142, "0.35714286"),
    ("profit_factor", None, "-"),
    ("sharpe", math.nan, "-"),
    ("-max_drawdown_pct", -12.3456, "-12.35%"),
])
def test_given_a_metric_when_formatted_then_it_follows_the_one_rule_for_its_kind(key, value, text):
    assert format_metric(key, value) == text


def test_given_each_formatter_when_called_then_missing_values_are_a_dash_and_units_are_consistent():
    assert [f(None) for f in (format_money, format_pct, format_price, format_amount, format_time,
                              format_duration)] == ["-"] * 6
    assert format_money(-0.004) == "-0.00" and format_pct(12.0) == "12.00%" and format_amount(2.0) == "2"
    assert format_time(1679616065000) == "2023-03-24 00:01:05 UTC"
    assert format_value(3.14159) == "3.14" and format_value(10_000) == "10,000" and format_value("x") == "x"
    assert metric_label("buy_hold_return_pct") == "buy & hold return %"
