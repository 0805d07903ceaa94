"""Bias checks: the built-ins pass on real data, a user strategy with a shift(-1) lookahead is caught, the warm-up
needed is measured and within what the recursive built-ins declare, parameter schemas reject bad values."""

from __future__ import annotations

import pytest

from apps.bots.strategies import BaseStrategy, Param
from apps.bots.strategies.checks import check_parameters, run_checks
from apps.bots.strategies.registry import get_strategy_class
from tests.apps.bots.strategies.conftest import load_candles
from tests.apps.bots.strategies.forms import FORMS, LookaheadBreakout


@pytest.fixture(scope="module")
def eth_15m():
    return load_candles("binance_ETH_USDT-15m.csv", "15m")


@pytest.mark.parametrize("name", ["sma_cross", "ema_cross", "rsi", "macd", "bollinger"])
def test_given_a_builtin_when_checked_then_no_problem_and_the_warmup_is_within_its_declared_history(name, eth_15m):
    report = run_checks(get_strategy_class(name), {}, eth_15m, rows=600)
    assert report.ok, report.table()
    strategy = get_strategy_class(name)({})
    assert report.warmup_needed is not None
    assert strategy.history_needed is not None and strategy.history_needed >= report.warmup_needed


def test_given_the_rsi_when_checked_then_the_table_shows_the_startup_differences(eth_15m):
    report = run_checks(get_strategy_class("rsi"), {"period": 14}, eth_15m, rows=100)
    row = next(r for r in report.rows if r.subject == "indicator rsi")
    assert "200: " in row.result and "2000: " in row.result
    assert 150 < report.warmup_needed < 400  # Wilder smoothing, alpha 1/14: ~ln(1e-9)/ln(13/14) candles


def test_given_a_populate_strategy_peeking_at_the_next_candle_when_checked_then_the_lookahead_is_caught(eth_15m):
    report = run_checks(LookaheadBreakout, {"window": 20}, eth_15m, rows=800)
    assert not report.ok
    bad = [r for r in report.rows if not r.ok]
    assert {r.check for r in bad} == {"lookahead"}
    assert {r.subject for r in bad} == {"vectorized vs process_data", "truncated data"}
    assert "action" in bad[0].result


@pytest.mark.parametrize("cls", FORMS)
def test_given_each_form_of_a_correct_strategy_when_checked_then_it_passes(cls, eth_15m):
    report = run_checks(cls, {"window": 20}, eth_15m.iloc[:1200], rows=300, cuts=5)
    assert report.ok, report.table()
    assert report.warmup_needed == 20


def test_given_a_schema_without_bounds_enforced_when_checked_then_the_accepting_parameter_is_a_problem():
    class Loose(BaseStrategy):
        name = "test_loose"
        params = (Param("n", int, 5, min=1, max=10),)

        def _validated(self, given):  # a broken override that skips validation
            return {"n": given.get("n", 5)}

        def populate(self, df):
            df["buy"] = df["sell"] = False
            return df

    rows = check_parameters(Loose, {})
    bad = {r.subject: r.result for r in rows if not r.ok}
    assert "n" in bad and "below min 0" in bad["n"] and "above max 11" in bad["n"]
    assert "unknown name" in bad
