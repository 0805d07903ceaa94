"""The sweep's fused fills + metrics kernel gives exactly simulate + compute_metrics, on real candles."""

from __future__ import annotations

import numpy as np
import pytest

from apps.backtest.engine.chunk import evaluate_fast, fused_metrics, run_chunk
from apps.backtest.engine.metrics import METRIC_KEYS, compute_metrics, jsonable
from apps.backtest.engine.ranking import LOWER_IS_BETTER
from apps.bots.strategies.registry import get_strategy_class
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fills import FillRules, simulate
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
        args = (arrays.close, arrays.high, arrays.low, arrays.open, arrays.volume, rules)
        assert fused_metrics(arrays, strategy.sweep_kernel(*args), rules, "5m") == expected  # its own kernel
        assert fused_metrics(arrays, strategy.sweep_kernel(*args, cache={}), rules, "5m") == expected
        assert evaluate_fast(arrays, out.action, rules, "5m") == expected  # the generic fused pass
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


# --- H8: blocked SMAs, fill-kernel equity pass, drawdown shortcut, indicator LRU -----------------------

from numba import njit  # noqa: E402

from apps.backtest.engine.cache import IndicatorLRU, data_fingerprint, process_indicator_cache  # noqa: E402
from apps.bots.strategies import indicators as ind  # noqa: E402
from apps.bots.strategies.sma_cross import cross_signals  # noqa: E402
from apps.bots.trading import equity as eq  # noqa: E402


@pytest.fixture(scope="module")
def eth_1m():
    return read_candle_csv(DATA_DIR / "binance_spot_2023" / "binance_ETH_USDT-1m.csv.gz", timeframe="1m",
                           time_label="open")


def exact_partials(x: np.ndarray, windows: list[int]) -> list[np.ndarray]:
    """The same SMA definition by an independent exact path (Shewchuk partials), for bit-for-bit references."""
    return [ind._window_sum_msum(np.ascontiguousarray(x, dtype=np.float64), n, float(n)) for n in windows]


def lines_and_signals(close: np.ndarray, fast_n: int, slow_n: int, warmup: int) -> tuple[np.ndarray, ...]:
    fast, slow = ind.window_means(close, [fast_n, slow_n])
    return (fast, slow, *cross_signals(fast, slow, warmup))


@pytest.mark.parametrize(("fast_n", "slow_n"), [(1, 2), (10, 50), (5, 240), (30, 1500), (20, 5000)])
def test_given_real_closes_when_the_blocked_smas_run_then_lines_are_bit_identical_to_the_exact_partials(
        eth_1m, fast_n, slow_n):
    close = eth_1m["close"].to_numpy()
    assert ind._limb_plan(close, slow_n)[0] == "limbs"  # the blocked path is the one under test
    for x in (close, close[:slow_n - 1], close[:slow_n + 3], close[: 3 * 1024 + 7]):
        got = ind.window_means(x, [fast_n, slow_n])
        assert [a.tobytes() for a in got] == [b.tobytes() for b in exact_partials(x, [fast_n, slow_n])]
    act = lines_and_signals(close, fast_n, slow_n, slow_n)[2]
    assert (act == 1).sum() > 3 and (act == -1).sum() > 3


def test_given_a_tail_of_the_closes_when_lines_and_signals_run_then_their_last_values_equal_the_full_runs(eth_1m):
    close = eth_1m["close"].to_numpy()
    full = lines_and_signals(close, 10, 300, 300)
    for t in (300, 4095, 4096, 20_001, len(close) - 1):
        tail = lines_and_signals(close[t - 300: t + 1], 10, 300, 300)
        assert tail[0][-1] == full[0][t] and tail[1][-1] == full[1][t]  # window-only: start-independent
        assert tail[2][-1] == full[2][t] and tail[3][-1] == full[3][t]


def test_given_nan_in_closes_when_window_means_then_the_special_path_gives_the_exact_partials_values(eth_1m):
    close = eth_1m["close"].to_numpy()[:5000].copy()
    close[1234] = np.nan
    got = ind.window_means(close, [10, 50])
    assert [a.tobytes() for a in got] == [b.tobytes() for b in exact_partials(close, [10, 50])]
    assert np.isnan(got[1][1234 + 49]) and not np.isnan(got[1][1234 + 50])


def test_given_a_cache_when_sma_cross_computes_then_fused_and_cached_paths_give_the_same_bits(eth_1m):
    arrays = CandleArrays.from_frame(eth_1m.iloc[:50_000])
    args = (arrays.close, arrays.high, arrays.low, arrays.open, arrays.volume)
    strategy = SMA({"fast": 7, "slow": 99})
    fused = strategy.compute(*args)
    cache = {("sma", "close", 7): ind.sma(arrays.close, 7)}  # one line cached: the unfused path
    split = strategy.compute(*args, cache=cache)
    assert fused.action.tobytes() == split.action.tobytes()
    assert fused.confidence.tobytes() == split.confidence.tobytes()
    assert fused.indicators["sma_slow"].tobytes() == cache[("sma", "close", 99)].tobytes()


def test_given_values_with_specials_when_scanned_then_the_bit_scan_matches_numpy():
    x = np.array([0.0, -0.0, 5e-324, -2.5, 3.0, np.nan, -np.inf, 1e308, 7.0])
    finite = np.abs(x[np.isfinite(x)])
    assert ind._scan(x) == (finite[finite > 0].min(), finite.max(), 2)
    assert ind._scan(np.zeros(4)) == (np.inf, 0.0, 0)
    assert ind._scan(np.array([np.nan, np.inf])) == (np.inf, 0.0, 2)


@pytest.mark.parametrize("rules", RULES)
def test_given_real_candles_when_simulated_then_the_fill_kernels_equity_pass_equals_a_separate_pass(eth_1m, rules):
    arrays = CandleArrays.from_frame(eth_1m)
    strategy = SMA({"fast": 10, "slow": 60})
    out = strategy.compute(arrays.close, arrays.high, arrays.low, arrays.open, arrays.volume)
    sim = simulate(arrays.timestamp, arrays.open, arrays.high, arrays.low, arrays.close, out.action, rules)
    assert sim.stats == eq.equity_stats(sim.equity, rules.initial_balance)
    with_stats = compute_metrics(sim, arrays.close, arrays.timestamp, "1m")
    sim.stats = None  # compute_metrics recomputes the pass from the equity
    assert compute_metrics(sim, arrays.close, arrays.timestamp, "1m") == with_stats
    assert with_stats["max_drawdown_pct"] < 0 and with_stats["closed_trades"] > 100


@njit
def _dd_one_by_one(e, initial):
    st = eq.dd_init(initial)
    for i in range(e.shape[0]):
        st = eq.dd_step(i, e[i], st)
    return eq.dd_final(e.shape[0], st)


@njit
def _dd_blocks(e, initial):
    st = eq.dd_init(initial)
    for b0 in range(0, e.shape[0], eq.STATS_BLOCK):
        st = eq.dd_block(e[b0:b0 + eq.STATS_BLOCK], b0, st)
    return eq.dd_final(e.shape[0], st)


def test_given_rising_falling_and_flat_equity_when_drawdowns_run_by_block_then_equal_to_candle_by_candle(eth_1m):
    close = eth_1m["close"].to_numpy()
    curves = [close, close[::-1].copy(), np.r_[close[:9000], np.full(9000, close[8999]), close[9000:20_000]],
              np.r_[close[:5000], -close[5000:6000], close[6000:12_000]]]  # a negative stretch: the slow path
    for e in curves:
        for initial in (float(e[0]), float(e.max()) * 2, float(e.min()) / 2):
            assert _dd_blocks(e, initial) == _dd_one_by_one(e, initial)


def test_given_a_byte_budget_when_the_indicator_lru_fills_then_least_recent_go_first_and_the_newest_stays():
    lru = IndicatorLRU(max_bytes=3 * 800)
    arrays = [np.full(100, float(i)) for i in range(5)]  # 800 bytes each
    for i in range(3):
        lru.put(("data", i), arrays[i])
    assert lru.get(("data", 0)) is arrays[0]  # now the most recent
    lru.put(("data", 3), arrays[3])
    assert lru.get(("data", 1)) is None and lru.get(("data", 0)) is arrays[0] and lru.nbytes == 3 * 800
    lru.put(("data", 4), np.zeros(1000))  # larger than the whole budget: kept alone for its chunk
    assert len(lru) == 1 and lru.get(("data", 4)) is not None


def test_given_the_same_content_in_new_arrays_when_fingerprinted_then_equal_and_a_changed_value_differs(btc_5m):
    a = CandleArrays.from_frame(btc_5m)
    b = CandleArrays.from_frame(btc_5m.copy())
    assert a.close is not b.close and data_fingerprint(a) == data_fingerprint(b)
    changed = btc_5m.copy()
    changed.loc[len(changed) // 2, "volume"] += 1e-9
    assert data_fingerprint(CandleArrays.from_frame(changed)) != data_fingerprint(a)


def test_given_two_chunks_of_one_data_set_when_run_with_the_process_cache_then_the_second_reuses_its_smas(btc_5m):
    lru = process_indicator_cache()
    lru.clear()
    first = CandleArrays.from_frame(btc_5m)
    second = CandleArrays.from_frame(btc_5m.copy())  # another load of the same data (the next task)
    sets = [{"fast": 5, "slow": 60}, {"fast": 10, "slow": 60}]
    run_chunk(first, SMA, sets[:1], RULES[0], "5m")
    cached = lru.view(second)
    sma60 = cached[("sma", "close", 60)]
    got = run_chunk(second, SMA, sets, RULES[0], "5m")
    assert cached[("sma", "close", 60)] is sma60  # reused, not recomputed
    assert sorted(cached) == [("sma", "close", 5), ("sma", "close", 10), ("sma", "close", 60)]
    plain = run_chunk(second, SMA, sets, RULES[0], "5m", cache={})
    assert [r["metrics"] for r in got] == [r["metrics"] for r in plain]
    assert all(r["metrics"]["closed_trades"] > 20 for r in got)
