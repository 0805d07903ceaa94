"""Walk-forward (pure): window planning, durations, in-sample choice and out-of-sample evaluation on real candles."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.backtest.engine.chunk import run_chunk
from apps.backtest.engine.ranking import rank_results
from apps.backtest.engine.run import run_backtest
from apps.backtest.engine.space import expand_grid
from apps.backtest.engine.walkforward import WalkForwardError, plan_windows, to_candles, walk_forward
from apps.bots.strategies.registry import get_strategy_class
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fills import FillRules, simulate
from apps.market.csvio import read_candle_csv

SMA = get_strategy_class("sma_cross")
GRID = {"fast": [5, 10, 20], "slow": [50, 100]}


@pytest.fixture(scope="module")
def btc_15m():
    path = Path(__file__).resolve().parents[3] / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-15m.csv"
    return read_candle_csv(path, timeframe="15m", time_label="open")


def test_given_sizes_when_planning_then_windows_roll_by_step_and_the_last_test_fits():
    ws = plan_windows(100, 40, 20)
    assert [(w.train_start, w.test_start, w.test_end) for w in ws] == [(0, 40, 60), (20, 60, 80), (40, 80, 100)]
    ws = plan_windows(100, 40, 20, step=30)
    assert [(w.train_start, w.test_end) for w in ws] == [(0, 60), (30, 90)]


def test_given_too_little_data_when_planning_then_the_error_says_why():
    with pytest.raises(WalkForwardError, match="exceed the 50 candles"):
        plan_windows(50, 40, 20)


def test_given_durations_when_converted_then_candle_counts_follow_the_timeframe():
    assert to_candles("2d", "15m") == 192
    assert to_candles("12h", "1h") == 12
    assert to_candles(300, "1m") == 300
    assert to_candles("300", "1m") == 300
    with pytest.raises(WalkForwardError, match="not a whole number of 1h candles"):
        to_candles("90m", "1h")
    with pytest.raises(WalkForwardError, match="--train"):
        to_candles("ten days", "1h", what="--train")


def test_given_real_candles_when_walking_forward_then_train_choice_and_oos_metrics_are_consistent(btc_15m):
    rules = FillRules()
    arrays = CandleArrays.from_frame(btc_15m)
    sets = expand_grid(GRID)
    out = walk_forward(arrays, SMA, sets, rules, "15m", train=1000, test=500, metric="sharpe")
    windows = plan_windows(len(btc_15m), 1000, 500)
    assert len(out["windows"]) == len(windows) == 3
    for w, row in zip(windows, out["windows"], strict=True):
        train_best = rank_results(run_chunk(arrays.slice(w.train_start, w.train_end), SMA, sets, rules, "15m"),
                                  "sharpe")[0]
        assert row["parameters"] == train_best["parameters"]
        assert row["in_sample"]["sharpe"] == train_best["metrics"]["sharpe"]
        assert row["test_start"] == int(btc_15m["timestamp"].iloc[w.test_start])
        # Out of sample: signals with the train part as warm-up, fills on the test bars only.
        full = run_backtest(btc_15m.iloc[w.train_start:w.test_end].reset_index(drop=True),
                            SMA(row["parameters"]), rules, "15m")
        test = btc_15m.iloc[w.test_start:w.test_end]
        sim = simulate(test["timestamp"].to_numpy(), test["open"].to_numpy(), test["high"].to_numpy(),
                       test["low"].to_numpy(), test["close"].to_numpy(), full.action[w.test_start - w.train_start:],
                       rules)
        assert row["out_of_sample"]["bars"] == 500
        assert row["out_of_sample"]["final_equity"] == sim.final_equity
        assert row["out_of_sample"]["closed_trades"] == len(sim.trades)
    assert out["stitched_metrics"]["bars"] == 3 * 500
    assert out["stitched_equity"]["timestamp"][0] == out["windows"][0]["test_start"]
    assert out["stitched_equity"]["timestamp"][-1] == out["windows"][-1]["test_end"]
