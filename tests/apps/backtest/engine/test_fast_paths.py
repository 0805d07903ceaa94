"""The sweep's fused fills + metrics kernel gives exactly simulate + compute_metrics, on real candles."""

from __future__ import annotations

import numpy as np
import pytest

from apps.backtest.engine.fills import FillRules, simulate
from apps.backtest.engine.metrics import METRIC_KEYS, compute_metrics
from apps.backtest.engine.sweep import LOWER_IS_BETTER, CandleArrays, evaluate_fast, jsonable, run_chunk
from apps.bots.strategies.registry import get_strategy_class
from apps.market.csvio import read_candle_csv
from tests.conftest import DATA_DIR

SMA = get_strategy_class("sma_cross")

RULES = [
    FillRules(fee=0.001),
    FillRules(fee=0.002, slippage=0.0005, fraction=0.5, stop_loss=0.01, take_profit=0.02, initial_balance=1e6),
    FillRules(fee=0.0, initial_balance=1e200),
]


@pytest.fixture(scope="module")
def btc_5m():
    return read_candle_csv(DATA_DIR / "binance_spot_2023" / "binance_BTC_USDT-5m.csv.gz", timeframe="5m",
                           time_label="open")


def reference(arrays: CandleArrays, action: np.ndarray, rules: FillRules) -> dict:
    sim = simulate(arrays.timestamp, arrays.open, arrays.high, arrays.low, arrays.close, action, rules)
    return jsonable(compute_metrics(sim, arrays.close, arrays.timestamp, "5m"))


@pytest.mark.parametrize("rules", RULES)
def test_given_real_candles_when_the_fused_kernel_runs_then_every_metric_equals_simulate_plus_metrics(btc_5m, rules):
    arrays = CandleArrays.from_frame(btc_5m)
    for fast_n, slow_n in ((5, 50), (20, 200)):
        strategy = SMA({"fast": fast_n, "slow": slow_n})
        out = strategy.compute(arrays.close, arrays.high, arrays.low, arrays.open, arrays.volume)
        expected = reference(arrays, out.action, rules)
        lines = (out.indicators["sma_fast"], out.indicators["sma_slow"], strategy.warmup)
        assert evaluate_fast(arrays, rules, "5m", lines=lines) == expected
        assert evaluate_fast(arrays, rules, "5m", action=out.action) == expected
        assert expected["closed_trades"] > 50 and list(expected) == list(METRIC_KEYS)


def test_given_a_strategy_overriding_compute_when_a_chunk_runs_then_the_generic_path_gives_the_same_metrics(btc_5m):
    class Wrapped(SMA):
        name = "h7_wrapped_sma_cross"

        def compute(self, *args, **kwargs):
            return super().compute(*args, **kwargs)

    arrays = CandleArrays.from_frame(btc_5m.iloc[:20_000])
    sets = [{"fast": 5, "slow": 60}, {"fast": 10, "slow": 120}]
    fused = run_chunk(arrays, SMA, sets, RULES[1], "5m", cache={})
    generic = run_chunk(arrays, Wrapped, sets, RULES[1], "5m", cache={})
    assert [r["metrics"] for r in fused] == [r["metrics"] for r in generic]
    assert all(r["error"] == "" and r["metrics"]["closed_trades"] > 10 for r in fused)


def test_given_lower_is_better_when_checked_then_every_name_is_a_real_metric_key():
    assert LOWER_IS_BETTER <= set(METRIC_KEYS)
    assert {"fees_paid", "volatility_pct", "max_drawdown_duration_ms", "avg_holding_time_ms"} <= LOWER_IS_BETTER
