"""run_backtest on real Binance BTC/USDT candles with the built-in sma_cross strategy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from apps.backtest.engine.metrics import METRIC_KEYS
from apps.backtest.engine.run import run_backtest
from apps.bots.strategies.registry import get_strategy_class
from apps.bots.trading.fills import TRADE_FIELDS, FillRules, simulate
from apps.market.timeframes import TimeframeError


def load(data_dir, name: str = "binance_BTC_USDT-1m.csv.gz", tf_ms: int = 60_000) -> pd.DataFrame:
    df = pd.read_csv(data_dir / "binance_spot_2023" / name, usecols=["timestamp", "open", "high", "low", "close",
                                                                     "volume"])
    df["timestamp"] = df["timestamp"].astype("int64") + tf_ms  # open label -> close label
    return df


def sma_cross(fast: int = 10, slow: int = 50):
    return get_strategy_class("sma_cross")({"fast": fast, "slow": slow})


def test_given_real_candles_when_backtesting_sma_cross_then_to_dict_is_the_json_shape_and_matches_simulate(data_dir):
    # given
    df = load(data_dir).iloc[-20_000:].reset_index(drop=True)  # after the outage: no gap
    strategy = sma_cross()
    rules = FillRules(stop_loss=0.01)
    # when
    result = run_backtest(df, strategy, rules, "1m")
    out = result.to_dict()
    # then
    json.dumps(out, allow_nan=False)
    assert set(out) == {"metrics", "trades", "open_trade", "final_equity", "warnings"}
    assert list(out["metrics"]) == list(METRIC_KEYS)
    assert out["trades"] and all(list(t) == list(TRADE_FIELDS) for t in out["trades"])
    expected = simulate(df["timestamp"], df["open"], df["high"], df["low"], df["close"],
                        strategy.signals(df)["action"].to_numpy(), rules)
    assert [t["entry_time"] for t in out["trades"]] == expected.trades["entry_time"].tolist()
    assert [t["exit_reason"] for t in out["trades"]] == expected.trades["exit_reason"].tolist()
    assert out["final_equity"] == expected.final_equity == out["metrics"]["final_equity"]
    assert result.equity.tobytes() == expected.equity.tobytes()
    assert out["metrics"]["closed_trades"] == len(out["trades"])
    assert set(result.indicators) >= {"sma_fast", "sma_slow"}
    assert out["warnings"] == []


def test_given_the_real_binance_outage_when_backtesting_then_a_warning_names_the_missing_candles(data_dir):
    # given: the 1m file misses 80 candles on 2023-03-24 (open 12:40..13:59, i.e. close 12:41..14:00)
    df = load(data_dir)
    # when
    result = run_backtest(df, sma_cross(), FillRules(), "1m")
    # then
    assert result.warnings == [
        "80 candles missing in 1 gap, largest 80 candles at 2023-03-24 12:41:00 UTC (1679661660000); "
        "fills and metrics treat the data as continuous"
    ]


def test_given_no_candles_when_backtesting_then_it_warns_and_keeps_the_initial_balance(data_dir):
    # given
    df = load(data_dir).iloc[:0]
    # when
    out = run_backtest(df, sma_cross(), FillRules(initial_balance=500.0), "1m").to_dict()
    # then
    json.dumps(out, allow_nan=False)
    assert out["warnings"] == ["no candles in the selected range: nothing to backtest"]
    assert out["trades"] == [] and out["open_trade"] is None and out["final_equity"] == 500.0


def test_given_fewer_candles_than_the_warmup_when_backtesting_then_it_warns_no_trade_is_possible(data_dir):
    # given
    df = load(data_dir).iloc[:40]
    # when
    out = run_backtest(df, sma_cross(10, 50), FillRules(), "1m").to_dict()
    # then
    assert out["warnings"] == ["only 40 candles: sma_cross needs 50 warm-up candles before its first signal, "
                               "so no trade is possible"]
    assert out["trades"] == [] and out["metrics"]["closed_trades"] == 0


def test_given_a_long_run_when_downsampling_the_equity_curve_then_ends_and_the_max_drawdown_survive(data_dir):
    # given
    df = load(data_dir)
    result = run_backtest(df, sma_cross(), FillRules(), "1m")
    # when
    curve = result.equity_curve(max_points=500)
    # then
    eq = np.asarray(curve["equity"])
    assert 250 < len(eq) <= 500 and len(curve["timestamp"]) == len(eq)
    assert curve["timestamp"][0] == df["timestamp"].iloc[0] and curve["timestamp"][-1] == df["timestamp"].iloc[-1]
    assert np.all(np.diff(curve["timestamp"]) > 0)
    assert eq.min() == result.equity.min() and eq.max() == result.equity.max()
    full = np.r_[10_000.0, eq]
    dd = (full / np.maximum.accumulate(full) - 1).min() * 100
    assert dd == pytest.approx(result.metrics["max_drawdown_pct"], rel=1e-12)
    short = run_backtest(df.iloc[:300], sma_cross(), FillRules(), "1m").equity_curve(max_points=500)
    assert len(short["equity"]) == 300


def test_given_unsorted_candles_when_backtesting_then_the_error_names_the_row(data_dir):
    # given
    df = load(data_dir).iloc[:100].copy()
    df.loc[50, "timestamp"] = df.loc[10, "timestamp"]
    # when / then
    with pytest.raises(ValueError, match="strictly ascending; row 50"):
        run_backtest(df, sma_cross(), FillRules(), "1m")


def test_given_an_unknown_timeframe_when_backtesting_then_it_is_a_timeframe_error(data_dir):
    # given
    df = load(data_dir).iloc[:100]
    # when / then
    with pytest.raises(TimeframeError, match="unknown timeframe '2m'"):
        run_backtest(df, sma_cross(), FillRules(), "2m")


def test_given_1h_candles_declared_as_4h_when_backtesting_then_the_off_grid_candles_are_warned(data_dir):
    # given: real 1h candles declared as 4h
    df = load(data_dir, "binance_BTC_USDT-1h.csv", 3_600_000)
    # when
    result = run_backtest(df, sma_cross(5, 20), FillRules(), "4h")
    # then
    assert any("off the 4h grid" in w for w in result.warnings)
    assert result.metrics["bars"] == len(df)
