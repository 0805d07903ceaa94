"""Fill rules on real Binance BTC/USDT 1m candles (sample_data/binance_spot_2023, open labels shifted to close)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from apps.bots.trading.fills import Bar, FillRules, PortfolioState, simulate, step

FEE = 0.001


def load_btc_1m(data_dir) -> pd.DataFrame:
    df = pd.read_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz",
                     usecols=["timestamp", "open", "high", "low", "close", "volume"])
    df["timestamp"] = df["timestamp"].astype("int64") + 60_000  # open label -> close label
    return df


def sma_cross_actions(close: np.ndarray, fast: int = 10, slow: int = 50) -> np.ndarray:
    """Buy when SMA(fast) crosses above SMA(slow), sell when below (computed here, independent of the strategies)."""
    f = pd.Series(close).rolling(fast).mean().to_numpy()
    s = pd.Series(close).rolling(slow).mean().to_numpy()
    pf = np.r_[np.nan, f[:-1]]
    ps = np.r_[np.nan, s[:-1]]
    act = np.zeros(len(close), dtype=np.int8)
    act[(f > s) & (pf <= ps)] = 1
    act[(f < s) & (pf >= ps)] = -1
    return act


@functools.cache
def _btc_arrays(path: str) -> dict[str, np.ndarray]:
    from pathlib import Path

    df = load_btc_1m(Path(path))
    return {c: df[c].to_numpy() for c in df.columns}


@pytest.fixture
def btc(data_dir) -> dict[str, np.ndarray]:
    return _btc_arrays(str(data_dir))


def run(btc, action, rules=None, sl=slice(None)):
    return simulate(btc["timestamp"][sl], btc["open"][sl], btc["high"][sl], btc["low"][sl], btc["close"][sl],
                    action, rules or FillRules())


def only(n: int, **events: int) -> np.ndarray:
    """An action array of length n with buy/sell at the given bars: only(n, b=3, s=9)."""
    act = np.zeros(n, dtype=np.int8)
    for key, bar in events.items():
        act[bar] = 1 if key.startswith("b") else -1
    return act


def test_given_sma_cross_on_real_candles_when_simulated_then_first_fills_match_a_hand_computation(btc):
    # given
    c = btc["close"][:5000]
    act = sma_cross_actions(c)
    # when
    res = run(btc, act, sl=slice(0, 5000))
    # then: replay the first three round trips by hand
    cash = 10_000.0
    for t in res.trades[:3]:
        e, x = int(t["entry_bar"]), int(t["exit_bar"])
        assert act[e] == 1 and act[x] == -1
        amount = cash / (c[e] * (1 + FEE))
        entry_fee = amount * c[e] * FEE
        assert t["entry_price"] == c[e] and t["exit_price"] == c[x]
        assert t["amount"] == pytest.approx(amount, rel=1e-12)
        assert t["entry_fee"] == pytest.approx(entry_fee, rel=1e-12)
        exit_fee = amount * c[x] * FEE
        assert t["exit_fee"] == pytest.approx(exit_fee, rel=1e-12)
        assert t["fees"] == pytest.approx(entry_fee + exit_fee, rel=1e-12)
        new_cash = amount * c[x] - exit_fee
        assert t["pnl"] == pytest.approx(new_cash - cash, rel=1e-9)
        assert t["return_pct"] == pytest.approx((new_cash - cash) / (amount * c[e]) * 100, rel=1e-9)
        assert t["entry_time"] == btc["timestamp"][e] and t["exit_time"] == btc["timestamp"][x]
        assert t["exit_reason"] == "signal"
        assert t["cash_after_exit"] == pytest.approx(new_cash, rel=1e-12)
        cash = new_cash
    # every fill pays its fee: total fees = sum over closed trades (+ the open trade's entry fee)
    open_fee = res.open_trade["fees"] if res.open_trade else 0.0
    assert res.fees_paid == pytest.approx(res.trades["fees"].sum() + open_fee, rel=1e-12)
    assert np.all(res.trades["entry_fee"] > 0) and np.all(res.trades["exit_fee"] > 0)


def test_given_slippage_when_simulated_then_buys_fill_higher_and_sells_lower_on_the_same_bars(btc):
    # given
    c = btc["close"][:5000]
    act = sma_cross_actions(c)
    # when
    plain = run(btc, act, sl=slice(0, 5000))
    slipped = run(btc, act, FillRules(slippage=0.0005), sl=slice(0, 5000))
    # then
    assert np.array_equal(plain.trades["entry_bar"], slipped.trades["entry_bar"])
    assert np.array_equal(plain.trades["exit_bar"], slipped.trades["exit_bar"])
    np.testing.assert_allclose(slipped.trades["entry_price"], c[slipped.trades["entry_bar"]] * 1.0005, rtol=1e-15)
    np.testing.assert_allclose(slipped.trades["exit_price"], c[slipped.trades["exit_bar"]] * 0.9995, rtol=1e-15)
    assert slipped.final_equity < plain.final_equity


def test_given_an_open_gapping_below_the_stop_when_simulated_then_the_stop_fills_at_the_open(btc):
    # given: real candle 49723 opens at 28355.10, below candle 49722's close 28370.13
    i = 49722
    c, o = btc["close"], btc["open"]
    assert o[i + 1] < c[i]
    stop_loss = 0.0004  # stop = 28358.78 > open 28355.10
    assert c[i] * (1 - stop_loss) > o[i + 1]
    sl = slice(i - 5, i + 20)
    # when
    res = run(btc, only(25, b=5), FillRules(stop_loss=stop_loss, slippage=0.0001), sl=sl)
    # then
    t = res.trades[0]
    assert t["exit_reason"] == "stop_loss" and t["exit_bar"] == 6
    assert t["entry_price"] == pytest.approx(c[i] * 1.0001, rel=1e-15)
    assert t["exit_price"] == pytest.approx(o[i + 1] * 0.9999, rel=1e-15)  # the open, with slippage
    assert t["exit_fee"] == pytest.approx(t["amount"] * t["exit_price"] * FEE, rel=1e-12)


def test_given_an_open_gapping_above_the_target_when_simulated_then_take_profit_fills_at_the_open(btc):
    # given: real candle 1462 opens at 27536.09, above candle 1461's close 27526.29
    i = 1461
    c, o = btc["close"], btc["open"]
    take_profit = 0.0002  # target 27531.80 < open
    assert c[i] * (1 + take_profit) < o[i + 1]
    # when
    res = run(btc, only(20, b=5), FillRules(take_profit=take_profit), sl=slice(i - 5, i + 15))
    # then
    t = res.trades[0]
    assert (t["exit_reason"], t["exit_bar"], t["exit_price"]) == ("take_profit", 6, o[i + 1])


def test_given_a_stop_inside_a_later_candle_when_simulated_then_it_fills_at_the_stop_price(btc):
    # given: enter at bar e; the first later candle whose low reaches 0.2 % below the entry opened above that level
    c, o, lo = btc["close"], btc["open"], btc["low"]
    e = 20_000
    stop = c[e] * (1 - 0.002)
    first_hit = e + 1 + int(np.argmax(lo[e + 1:e + 200] <= stop))
    assert lo[first_hit] <= stop < o[first_hit]
    # when
    res = run(btc, only(e + 200, b=e), FillRules(stop_loss=0.002), sl=slice(0, e + 200))
    # then
    t = res.trades[0]
    assert (t["exit_reason"], t["exit_bar"]) == ("stop_loss", first_hit)
    assert t["exit_price"] == stop
    assert t["exit_fee"] == pytest.approx(t["amount"] * stop * FEE, rel=1e-12)


def test_given_a_stop_level_already_below_the_entry_candles_low_range_when_entered_then_no_exit_on_entry_candle(btc):
    # given: a candle whose low is far below its close, and a stop level above that low
    c, lo = btc["close"], btc["low"]
    drops = (c - lo) / c
    e = int(np.argmax(drops[100:60_000])) + 100
    stop_loss = drops[e] / 2  # stop = between low and close of the entry candle
    assert lo[e] < c[e] * (1 - stop_loss)
    # when
    res = run(btc, only(len(c), b=e), FillRules(stop_loss=stop_loss))
    # then: whatever happens later, the entry candle itself did not stop the trade out
    exits = res.trades["exit_bar"]
    assert len(exits) == 0 or exits[0] > e
    assert res.position[e] > 0


def test_given_both_levels_touched_in_one_candle_when_simulated_then_the_stop_loss_is_assumed_first(btc):
    # given: a later candle with a wide range; entry the candle before; levels inside that range around the open
    c, o, h, lo = btc["close"], btc["open"], btc["high"], btc["low"]
    room = np.minimum(o - lo, h - o) / c  # the open well inside the candle's range
    k = int(np.argmax(room[1:60_000])) + 1
    e = k - 1
    stop_loss = (c[e] - (lo[k] + min(o[k], c[e])) / 2) / c[e]
    take_profit = ((h[k] + max(o[k], c[e])) / 2 - c[e]) / c[e]
    assert lo[k] <= c[e] * (1 - stop_loss) < o[k] < c[e] * (1 + take_profit) <= h[k]
    # when
    res = run(btc, only(len(c), b=e), FillRules(stop_loss=stop_loss, take_profit=take_profit))
    # then
    t = res.trades[0]
    assert (t["exit_bar"], t["exit_reason"]) == (k, "stop_loss")
    assert t["exit_price"] == pytest.approx(c[e] * (1 - stop_loss), rel=1e-12)


def test_given_a_buy_signal_on_the_stop_candle_when_simulated_then_it_does_not_re_enter(btc):
    # given: the gap-down stop of candle 49723 with a buy signal on that same candle
    i = 49722
    act = only(25, b=5)
    act[6] = 1
    # when
    res = run(btc, act, FillRules(stop_loss=0.0004), sl=slice(i - 5, i + 20))
    # then
    assert len(res.trades) == 1 and res.trades[0]["exit_bar"] == 6
    assert res.open_trade is None
    assert res.position[6] == 0.0


def test_given_a_final_buy_when_simulated_then_the_open_trade_is_marked_to_market_without_exit_fee(btc):
    # given
    c = btc["close"][:3000]
    act = sma_cross_actions(c)
    last_buy = int(np.flatnonzero(act == 1)[-1])
    act[last_buy + 1:] = 0
    # when
    res = run(btc, act, sl=slice(0, 3000))
    # then
    ot = res.open_trade
    assert ot is not None and ot["entry_bar"] == last_buy and ot["entry_time"] == btc["timestamp"][last_buy]
    assert all(res.trades["exit_bar"] < last_buy)
    assert res.final_equity == pytest.approx(res.final_cash + ot["amount"] * c[-1], rel=1e-15)
    assert ot["unrealized_pnl"] == pytest.approx(ot["amount"] * c[-1] - ot["amount"] * ot["entry_price"] - ot["fees"])
    assert res.fees_paid == pytest.approx(res.trades["fees"].sum() + ot["fees"])


def test_given_repeated_buys_and_sells_when_simulated_then_a_buy_in_position_and_a_sell_when_flat_do_nothing(btc):
    # given: the clean crossover signals, and a noisy copy with a buy on every held candle and a sell on every flat one
    c = btc["close"][:5000]
    act = sma_cross_actions(c)
    a = run(btc, act, sl=slice(0, 5000))
    held = np.r_[False, (a.position[:-1] > 0) & (a.position[1:] > 0)]
    flat = np.r_[True, (a.position[:-1] == 0) & (a.position[1:] == 0)]
    noisy = act.copy()
    noisy[held & (act == 0)] = 1
    noisy[flat & (act == 0)] = -1
    assert (noisy == 1).sum() > 1000 and (noisy == -1).sum() > 1000
    # when
    b = run(btc, noisy, sl=slice(0, 5000))
    # then
    assert a.trades.tobytes() == b.trades.tobytes()
    assert a.equity.tobytes() == b.equity.tobytes()
    assert a.fees_paid == b.fees_paid


def test_given_the_same_inputs_when_simulated_twice_then_results_are_bit_identical(btc):
    # given
    act = sma_cross_actions(btc["close"])
    rules = FillRules(slippage=0.0002, stop_loss=0.01, take_profit=0.02)
    # when
    a, b = run(btc, act, rules), run(btc, act, rules)
    # then
    assert a.equity.tobytes() == b.equity.tobytes()
    assert a.trades.tobytes() == b.trades.tobytes()
    assert a.final_equity == b.final_equity and len(a.trades) > 100


def test_given_real_candles_when_stepped_one_by_one_then_every_fill_and_the_final_equity_equal_simulate(btc):
    # given: sl/tp/slippage/fraction all active so every rule is exercised
    n = 15_000
    act = sma_cross_actions(btc["close"][:n])
    rules = FillRules(fee=0.001, slippage=0.0003, fraction=0.9, stop_loss=0.004, take_profit=0.006,
                      initial_balance=2_500.0)
    res = run(btc, act, rules, sl=slice(0, n))
    assert {"signal", "stop_loss", "take_profit"} <= set(res.trades["exit_reason"].tolist())
    # when
    state = PortfolioState.initial(rules)
    fills = []
    equity = np.empty(n)
    for i in range(n):
        bar = Bar(int(btc["timestamp"][i]), btc["open"][i], btc["high"][i], btc["low"][i], btc["close"][i])
        state, new = step(state, bar, int(act[i]), rules)
        fills.extend(new)
        equity[i] = state.equity(btc["close"][i])
    # then
    buys = [f for f in fills if f.side == "buy"]
    sells = [f for f in fills if f.side == "sell"]
    t = res.trades
    assert len(sells) == len(t) and len(buys) == len(t) + (res.open_trade is not None)
    assert [f.timestamp for f in buys[: len(t)]] == t["entry_time"].tolist()
    assert [f.price for f in buys[: len(t)]] == t["entry_price"].tolist()
    assert [f.amount for f in buys[: len(t)]] == t["amount"].tolist()
    assert [f.fee for f in buys[: len(t)]] == t["entry_fee"].tolist()
    assert [f.timestamp for f in sells] == t["exit_time"].tolist()
    assert [f.price for f in sells] == t["exit_price"].tolist()
    assert [f.fee for f in sells] == t["exit_fee"].tolist()
    assert [f.reason for f in sells] == t["exit_reason"].tolist()
    assert [f.pnl for f in sells] == t["pnl"].tolist()
    assert [f.cash_after for f in sells] == t["cash_after_exit"].tolist()
    assert equity.tobytes() == res.equity.tobytes()
    assert state.equity(btc["close"][n - 1]) == res.final_equity
    assert state.fees_paid == pytest.approx(res.fees_paid, rel=1e-12)


def test_given_a_simulation_when_reading_cash_and_position_then_equity_is_cash_plus_position_times_close(btc):
    # given
    act = sma_cross_actions(btc["close"][:8000])
    # when
    res = run(btc, act, FillRules(fraction=0.5), sl=slice(0, 8000))
    # then
    np.testing.assert_allclose(res.cash + res.position * btc["close"][:8000], res.equity, rtol=1e-12)
    e = int(res.trades["entry_bar"][0])
    assert res.cash[e] == pytest.approx(5_000.0, rel=1e-12)  # half of the cash spent, fee included
    assert res.cash[e - 1] == 10_000.0 and res.position[e - 1] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"fee": -0.1}, "fee"), ({"slippage": 1.5}, "slippage"), ({"fraction": 0.0}, "fraction"),
     ({"stop_loss": 1.0}, "stop_loss"), ({"take_profit": -1}, "take_profit"),
     ({"initial_balance": 0}, "initial_balance"), ({"fee": float("nan")}, "fee")],
)
def test_given_an_invalid_rule_when_building_fill_rules_then_the_error_names_it(kwargs, name):
    # given / when / then
    with pytest.raises(ValueError, match=f"fill rule '{name}'"):
        FillRules(**kwargs)


def test_given_mismatched_arrays_when_simulating_then_the_error_names_the_array(btc):
    # given
    act = np.zeros(9, dtype=np.int8)
    # when / then
    with pytest.raises(ValueError, match="action has 9 rows, expected 10"):
        run(btc, act, sl=slice(0, 10))


def test_given_a_string_action_when_stepping_then_it_is_the_same_as_the_int_action(btc):
    # given
    rules = FillRules()
    bar = Bar(int(btc["timestamp"][0]), btc["open"][0], btc["high"][0], btc["low"][0], btc["close"][0])
    # when
    s1, f1 = step(PortfolioState.initial(rules), bar, "buy", rules)
    s2, f2 = step(PortfolioState.initial(rules), bar, 1, rules)
    # then
    assert s1 == s2 and f1 == f2 and f1[0].side == "buy"
    with pytest.raises(ValueError, match="action must be"):
        step(s1, bar, "long", rules)
