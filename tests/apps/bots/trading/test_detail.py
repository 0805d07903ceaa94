"""Intrabar detail: ambiguous stop-loss/take-profit candles resolved on 1m candles or raw trades (first touch), only
those candles read, missing detail reported and conservative; the one-candle `step` (live bots) makes the same fills
as the backtest's `simulate_detail`."""

from __future__ import annotations

import numpy as np
import pytest

from apps.bots.trading.detail import frame_source, simulate_detail
from apps.bots.trading.fills import Bar, FillRules, PortfolioState, simulate, step
from tests.apps.bots.strategies.conftest import load_candles

H = 3_600_000
M = 60_000


def hourly(rows):
    """(ts, o, h, l, c) arrays from (open, high, low, close) rows, close times 1h apart."""
    arr = np.array(rows, dtype=np.float64)
    ts = (np.arange(len(rows), dtype=np.int64) + 1) * H
    return ts, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]


RULES = FillRules(fee=0.001, slippage=0.001, stop_loss=0.02, take_profit=0.02)
# buy at 100 on candle 0; candle 1 touches both 98 (stop) and 102 (target); candle 2 and 3 plain
CANDLES = [(100, 100, 100, 100), (100, 103, 97, 101), (101, 101.5, 100.5, 101), (101, 101.2, 100.8, 101)]
ACTION = np.array([1, 0, 0, 0], dtype=np.int8)


def recording(source):
    asked = []

    def wrapped(bars):
        asked.extend(bars)
        return source(bars)

    return wrapped, asked


def test_given_a_candle_touching_both_levels_when_1m_detail_shows_the_target_first_then_take_profit_at_target():
    ts, o, h, lo, c = hourly(CANDLES)
    m_ts = np.array([H + M, H + 2 * M, H + 3 * M], dtype=np.int64)  # 1m candles closing inside candle 1
    m = (np.array([100, 101.5, 99.0]), np.array([101.5, 102.5, 99.5]), np.array([99.5, 101.0, 97.0]),
         np.array([101.5, 102.0, 98.0]))
    src, asked = recording(frame_source("1m", m_ts, m, ts, H))
    res, base, rep = simulate_detail(ts, o, h, lo, c, ACTION, RULES, "1m", src)
    assert base.trades["exit_reason"].tolist() == ["stop_loss"]  # candle-only: conservative stop-first
    assert res.trades["exit_reason"].tolist() == ["take_profit"]
    entry = 100 * 1.001
    assert res.trades["exit_price"][0] == pytest.approx(entry * 1.02 * 0.999, rel=1e-15)
    assert asked == [1]
    assert (rep.ambiguous_exits, rep.changed, rep.missing) == (1, 1, [])


def test_given_trades_detail_when_a_trade_jumps_past_the_stop_then_the_exit_fills_at_that_trades_price():
    ts, o, h, lo, c = hourly(CANDLES)
    t_ts = np.array([H + 1000, H + 2000, H + 3000, H + 4000], dtype=np.int64)
    prices = np.array([100.0, 99.0, 97.5, 103.0])  # stop = 98.098: first touch is the trade at 97.5
    res, _, rep = simulate_detail(ts, o, h, lo, c, ACTION, RULES, "trades", frame_source("trades", t_ts, (prices,),
                                                                                          ts, H))
    assert res.trades["exit_reason"].tolist() == ["stop_loss"]
    assert res.trades["exit_price"][0] == pytest.approx(97.5 * 0.999, rel=1e-15)
    assert rep.changed == 1


def test_given_no_detail_for_an_ambiguous_candle_then_it_is_reported_and_the_conservative_rule_stays():
    ts, o, h, lo, c = hourly(CANDLES)
    empty = np.zeros(0, dtype=np.int64)
    res, base, rep = simulate_detail(ts, o, h, lo, c, ACTION, RULES, "trades",
                                     frame_source("trades", empty, (np.zeros(0),), ts, H))
    assert rep.missing == [1] and rep.changed == 0
    assert res.trades.tolist() == base.trades.tolist()


@pytest.fixture(scope="module")
def btc():
    return load_candles("binance_BTC_USDT-1h.csv", "1h"), load_candles("binance_BTC_USDT-1m.csv.gz", "1m")


def test_given_real_btc_1h_with_tight_levels_when_1m_detail_is_used_then_only_ambiguous_candles_change(btc):
    from apps.bots.strategies.registry import create_strategy

    h1, m1 = btc
    rules = FillRules(stop_loss=0.003, take_profit=0.003)
    action = create_strategy("sma_cross", {"fast": 5, "slow": 20}).signals(h1)["action"].to_numpy()
    a = {k: h1[k].to_numpy() for k in ("timestamp", "open", "high", "low", "close")}
    src, asked = recording(frame_source("1m", m1["timestamp"].to_numpy(),
                                        tuple(m1[k].to_numpy() for k in ("open", "high", "low", "close")),
                                        a["timestamp"], H))
    res, base, rep = simulate_detail(a["timestamp"], a["open"], a["high"], a["low"], a["close"], action, rules,
                                     "1m", src)
    assert rep.ambiguous_exits >= 10 and rep.changed >= 1 and rep.missing == []
    assert len(asked) == rep.ambiguous_exits < len(h1) // 10  # detail read for the ambiguous candles only
    assert res.trades["exit_bar"].tolist() == base.trades["exit_bar"].tolist()  # same candles, other outcome
    changed = res.trades["exit_reason"] != base.trades["exit_reason"]
    assert set(res.trades["exit_reason"][changed]) == {"take_profit"}  # stop-first was too pessimistic there
    assert res.final_equity != base.final_equity
    # no detail asked: the plain simulate, bit for bit
    plain = simulate(a["timestamp"], a["open"], a["high"], a["low"], a["close"], action, rules)
    assert plain.trades.tolist() == base.trades.tolist()


def test_given_trades_when_a_bot_steps_candle_by_candle_with_detail_then_it_fills_as_the_backtest(btc):
    """replay == backtest with detail: `step` (live bots) with each candle's trades == simulate_detail."""
    from apps.bots.strategies.registry import create_strategy

    h1, m1 = btc
    # trades stand-in built from the real 1m candles (open, then the nearer extreme first, close), 4 per minute
    mt = m1["timestamp"].to_numpy() - M
    o, hi, lo_, cl = (m1[k].to_numpy() for k in ("open", "high", "low", "close"))
    near_high = (hi - o) < (o - lo_)
    first = np.where(near_high, hi, lo_)
    second = np.where(near_high, lo_, hi)
    t_ts = np.stack([mt, mt + 15_000, mt + 30_000, mt + 45_000], axis=1).ravel()
    t_px = np.stack([o, first, second, cl], axis=1).ravel()
    rules = FillRules(stop_loss=0.004, take_profit=0.005, slippage=0.0002)
    action = create_strategy("sma_cross", {"fast": 5, "slow": 20}).signals(h1)["action"].to_numpy()
    a = {k: h1[k].to_numpy() for k in ("timestamp", "open", "high", "low", "close")}
    src = frame_source("trades", t_ts, (t_px,), a["timestamp"], H)
    res, _, rep = simulate_detail(a["timestamp"], a["open"], a["high"], a["low"], a["close"], action, rules,
                                  "trades", src)
    assert rep.changed >= 1
    state = PortfolioState.initial(rules)
    fills = []
    for i in range(len(h1)):
        bar = Bar(int(a["timestamp"][i]), a["open"][i], a["high"][i], a["low"][i], a["close"][i])
        t = int(a["timestamp"][i])
        lo_i, hi_i = np.searchsorted(t_ts, t - H), np.searchsorted(t_ts, t)
        state, new = step(state, bar, int(action[i]), rules, detail=("trades", t_px[lo_i:hi_i]))
        fills += new
    sells = [(f.timestamp, f.reason, f.price) for f in fills if f.side == "sell"]
    expected = list(zip(res.trades["exit_time"].tolist(), res.trades["exit_reason"].tolist(),
                        res.trades["exit_price"].tolist(), strict=True))
    assert sells == expected
    assert state.equity(float(a["close"][-1])) == pytest.approx(res.final_equity, rel=1e-12)
