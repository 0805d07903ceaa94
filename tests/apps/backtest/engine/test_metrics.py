"""Metrics recomputed independently (pandas / plain Python) from real-data simulations."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from apps.backtest.engine.metrics import METRIC_KEYS, compute_metrics
from apps.bots.trading.fills import FillRules, simulate
from apps.market.timeframes import periods_per_year


def load(data_dir, name: str, tf_ms: int) -> pd.DataFrame:
    df = pd.read_csv(data_dir / "binance_spot_2023" / name, usecols=["timestamp", "open", "high", "low", "close",
                                                                     "volume"])
    df["timestamp"] = df["timestamp"].astype("int64") + tf_ms  # open label -> close label
    return df


def sma_cross_actions(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    f = pd.Series(close).rolling(fast).mean().to_numpy()
    s = pd.Series(close).rolling(slow).mean().to_numpy()
    pf, ps = np.r_[np.nan, f[:-1]], np.r_[np.nan, s[:-1]]
    act = np.zeros(len(close), dtype=np.int8)
    act[(f > s) & (pf <= ps)] = 1
    act[(f < s) & (pf >= ps)] = -1
    return act


def sim_of(df: pd.DataFrame, act: np.ndarray, rules: FillRules):
    return simulate(df["timestamp"].to_numpy(), df["open"].to_numpy(), df["high"].to_numpy(), df["low"].to_numpy(),
                    df["close"].to_numpy(), act, rules)


@pytest.fixture
def eth_1h(data_dir) -> pd.DataFrame:
    return load(data_dir, "binance_ETH_USDT-1h.csv", 3_600_000)


@pytest.fixture
def btc_1m(data_dir) -> pd.DataFrame:
    return load(data_dir, "binance_BTC_USDT-1m.csv.gz", 60_000)


def test_given_a_real_1h_backtest_when_computing_metrics_then_return_risk_and_ratio_definitions_hold(eth_1h):
    # given
    df = eth_1h
    close, ts = df["close"].to_numpy(), df["timestamp"].to_numpy()
    sim = sim_of(df, sma_cross_actions(close, 5, 20), FillRules(initial_balance=1_000.0))
    # when
    m = compute_metrics(sim, close, ts, "1h")
    # then
    eq = pd.Series(np.r_[1_000.0, sim.equity])
    r = eq.pct_change().dropna()
    ppy = periods_per_year("1h")
    assert ppy == 8760
    assert m["total_return_pct"] == pytest.approx((sim.equity[-1] / 1_000 - 1) * 100, rel=1e-12)
    years = (ts[-1] - ts[0]) / (365 * 86_400_000)
    assert m["cagr_pct"] == pytest.approx(((sim.final_equity / 1_000) ** (1 / years) - 1) * 100, rel=1e-9)
    assert m["buy_hold_return_pct"] == pytest.approx((close[-1] / close[0] - 1) * 100, rel=1e-12)
    assert m["volatility_pct"] == pytest.approx(r.std(ddof=1) * math.sqrt(ppy) * 100, rel=1e-9)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(ppy), rel=1e-9)
    downside = math.sqrt((r.clip(upper=0) ** 2).mean())
    assert m["sortino"] == pytest.approx(r.mean() / downside * math.sqrt(ppy), rel=1e-9)
    assert m["calmar"] == pytest.approx(m["cagr_pct"] / abs(m["max_drawdown_pct"]), rel=1e-12)
    assert m["bars"] == len(df) and (m["start"], m["end"]) == (ts[0], ts[-1])
    assert list(m) == list(METRIC_KEYS)


def test_given_a_real_backtest_when_computing_metrics_then_drawdown_facts_match_a_plain_recomputation(btc_1m):
    # given
    df = btc_1m.iloc[:20_000]
    close, ts = df["close"].to_numpy(), df["timestamp"].to_numpy()
    sim = sim_of(df, sma_cross_actions(close, 10, 50), FillRules())
    # when
    m = compute_metrics(sim, close, ts, "1m")
    # then: recompute with a plain loop (initial balance is the first peak)
    peak, peak_i = 10_000.0, 0
    dd = np.empty(len(sim.equity))
    episodes = []  # (peak index, end index, depth)
    cur = None
    for i, e in enumerate(sim.equity):
        if e >= peak:
            if cur is not None:
                episodes.append((cur[0], i, cur[1]))
                cur = None
            peak, peak_i = e, i
            dd[i] = 0.0
        else:
            dd[i] = e / peak - 1
            cur = (peak_i, min(dd[i], cur[1])) if cur else (peak_i, dd[i])
    if cur is not None:
        episodes.append((cur[0], len(dd) - 1, cur[1]))
    trough = int(np.argmin(dd))
    deepest = min(episodes, key=lambda ep: ep[2])
    longest = max(episodes, key=lambda ep: ep[1] - ep[0])
    assert m["max_drawdown_pct"] == pytest.approx(dd.min() * 100, rel=1e-12) and m["max_drawdown_pct"] < 0
    assert m["max_drawdown_trough"] == ts[trough]
    assert m["max_drawdown_start"] == ts[deepest[0]]
    recovered = deepest[1] < len(dd) - 1 or sim.equity[-1] >= sim.equity[deepest[0]]
    assert m["max_drawdown_end"] == (ts[deepest[1]] if recovered else None)
    assert m["max_drawdown_duration_bars"] == deepest[1] - deepest[0]
    assert m["max_drawdown_duration_ms"] == ts[deepest[1]] - ts[deepest[0]]
    assert m["avg_drawdown_pct"] == pytest.approx(np.mean([ep[2] for ep in episodes]) * 100, rel=1e-9)
    assert m["longest_drawdown_bars"] == longest[1] - longest[0]
    assert m["longest_drawdown_ms"] == ts[longest[1]] - ts[longest[0]]


def test_given_real_closed_trades_when_computing_metrics_then_trade_statistics_match_pandas(btc_1m):
    # given
    df = btc_1m.iloc[:30_000]
    close, ts = df["close"].to_numpy(), df["timestamp"].to_numpy()
    sim = sim_of(df, sma_cross_actions(close, 10, 50), FillRules(stop_loss=0.003, take_profit=0.004))
    t = sim.trades_frame()
    # when
    m = compute_metrics(sim, close, ts, "1m")
    # then
    pnl, ret = t["pnl"], t["return_pct"]
    assert m["closed_trades"] == len(t) > 100
    assert m["win_rate_pct"] == pytest.approx((pnl > 0).mean() * 100)
    assert m["gross_profit"] == pytest.approx(pnl[pnl > 0].sum())
    assert m["gross_loss"] == pytest.approx(-pnl[pnl < 0].sum())
    assert m["profit_factor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl < 0].sum())
    assert m["expectancy"] == pytest.approx(pnl.mean())
    assert m["expectancy_pct"] == pytest.approx(ret.mean())
    assert m["sqn"] == pytest.approx(math.sqrt(len(t)) * pnl.mean() / pnl.std(ddof=1))
    assert m["best_trade_pct"] == ret.max() and m["worst_trade_pct"] == ret.min()
    assert m["avg_trade_pct"] == pytest.approx(((1 + ret / 100).prod() ** (1 / len(t)) - 1) * 100, rel=1e-9)
    assert m["avg_holding_bars"] == pytest.approx((t["exit_bar"] - t["entry_bar"]).mean())
    assert m["max_holding_bars"] == (t["exit_bar"] - t["entry_bar"]).max()
    assert m["avg_holding_time_ms"] == pytest.approx((t["exit_time"] - t["entry_time"]).mean())
    assert m["max_holding_time_ms"] == (t["exit_time"] - t["entry_time"]).max()
    runs = [(k, len(list(g))) for k, g in itertools.groupby(pnl > 0)]
    assert m["max_consecutive_wins"] == max(n for k, n in runs if k)
    assert m["max_consecutive_losses"] == max(n for k, n in runs if not k)
    exposed = (t["exit_bar"] - t["entry_bar"] + 1).sum()
    if sim.open_trade:
        exposed += len(df) - sim.open_trade["entry_bar"]
    assert m["exposure_pct"] == pytest.approx(exposed / len(df) * 100)
    assert m["fees_paid"] == pytest.approx(sim.fees_paid) and m["final_equity"] == sim.final_equity


def test_given_no_trade_when_computing_metrics_then_undefined_values_are_none_and_json_safe(btc_1m):
    # given: a flat equity (no signal at all)
    df = btc_1m.iloc[:500]
    close, ts = df["close"].to_numpy(), df["timestamp"].to_numpy()
    sim = sim_of(df, np.zeros(len(df), dtype=np.int8), FillRules())
    # when
    m = compute_metrics(sim, close, ts, "1m")
    # then
    json.dumps(m, allow_nan=False)
    assert m["closed_trades"] == 0 and m["total_return_pct"] == 0.0 and m["max_drawdown_pct"] == 0.0
    assert m["sharpe"] is None and m["sortino"] is None and m["calmar"] is None
    assert m["win_rate_pct"] is None and m["profit_factor"] is None and m["sqn"] is None
    assert m["volatility_pct"] == 0.0 and m["exposure_pct"] == 0.0


def test_given_only_winning_trades_when_computing_metrics_then_profit_factor_is_none_not_infinite(eth_1h):
    # given: one hand-picked winning round trip on real candles
    df = eth_1h
    close, ts = df["close"].to_numpy(), df["timestamp"].to_numpy()
    lo_i = int(np.argmin(close[:300]))
    hi_i = lo_i + 1 + int(np.argmax(close[lo_i + 1:]))
    act = np.zeros(len(df), dtype=np.int8)
    act[lo_i], act[hi_i] = 1, -1
    # when
    m = compute_metrics(sim_of(df, act, FillRules()), close, ts, "1h")
    # then
    json.dumps(m, allow_nan=False)
    assert m["closed_trades"] == 1 and m["win_rate_pct"] == 100.0
    assert m["profit_factor"] is None and m["gross_loss"] == 0.0
    assert m["sqn"] is None  # one trade: no standard deviation
    assert m["max_consecutive_wins"] == 1 and m["max_consecutive_losses"] == 0


def test_given_a_few_minutes_of_data_when_computing_cagr_then_an_overflowing_power_is_none(btc_1m):
    # given: 30 minutes in which the strategy gains (CAGR would be astronomically large or tiny)
    df = btc_1m.iloc[:30]
    close, ts = df["close"].to_numpy(), df["timestamp"].to_numpy()
    act = np.zeros(30, dtype=np.int8)
    act[int(np.argmin(close[:10]))] = 1
    act[10 + int(np.argmax(close[10:]))] = -1
    # when
    m = compute_metrics(sim_of(df, act, FillRules(fee=0.0)), close, ts, "1m")
    # then
    json.dumps(m, allow_nan=False)
    assert m["total_return_pct"] > 0
    assert m["cagr_pct"] is None or math.isfinite(m["cagr_pct"])


def test_given_mismatched_lengths_when_computing_metrics_then_the_error_says_so(btc_1m):
    # given
    df = btc_1m.iloc[:50]
    sim = sim_of(df, np.zeros(50, dtype=np.int8), FillRules())
    # when / then
    with pytest.raises(ValueError, match="same length"):
        compute_metrics(sim, df["close"].to_numpy()[:49], df["timestamp"].to_numpy(), "1m")
