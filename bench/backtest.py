"""Benchmark: sma_cross 10/50 over 1,000,000 1m candles, trades + full metrics. Prints ONE JSON line.

Data: a geometric random walk of 1M closes whose per-minute log-return volatility is that of the real Binance BTC/USDT
1m sample (sample_data/binance_spot_2023), seeded, generated BEFORE any timing; open = previous close, high/low =
max/min(open, close) widened by half-normal noise of the same scale.

Timed (medians of 3 after an untimed warm-up, all in this run):
* ours: the product path = SmaCross(10, 50).compute (the strategy's vectorized signals) + fills.simulate +
  metrics.compute_metrics (the full metric set) on the arrays; what run_backtest does minus frame checks.
  Also reported split into signals / fills / metrics, "engine" = fills + metrics on given actions (this package; the
  signals are the strategy's), and the whole run_backtest (incl. DataFrame checks, gap scan).
* numba floor: a plain numba loop of the same rules over PRECOMPUTED SMAs (crossover with the strategy's 1e-9
  tolerance, all-in, 0.1 % fee, fill at close, final = cash + amount * last close); the SMAs are not timed.
* vectorbt 1.2: MA.run x2 + ma_crossed_above/below + Portfolio.from_signals (fees 0.001, all-in), incl. the MAs.
Every engine starts with cash 1e200 (this strategy loses ~0.2 % per round trip on 1m candles: equity ends ~1e-12 of
the start, and vectorbt treats cash < 1e-12 as zero) and the final/initial ratios are compared. vectorbt's final
equity is derived from its last order record (final_value() loses precision over many orders of magnitude).
detail (also alone: `bench/backtest.py --only detail`): a 1h backtest over a year with stop-loss 1 % / take-profit
2 % (sma_cross 10/50), candle-only vs `--detail 1m` vs `--detail trades` in the same run, each the whole
run_backtest (detail: simulate, ambiguous candles resolved, refill, metrics of both runs for the report). The year is
built from the REAL Binance BTC/USDT 1m sample (46 days, 2023-03-17..05-01) tiled 8 times end to end (each copy
scaled to start at the previous copy's last close, times shifted), resampled to 1h; the trades are a stand-in built
from those 1m candles (4 per minute: open, the nearer extreme, the other extreme, close). Detail rows are served from
memory (frame_source), as the DB path serves them after its one windowed query.
trades_equal: same number of trades and the same entry/exit candle indices in all three engines.
peak_rss_mb: process peak RSS right after our part (before vectorbt is imported); compile_s: our first call (numba
compile, or load from the on-disk cache when cache=True already compiled it).
allocator_tuned: tradebot.memory.tune_allocator() ran first, as in every worker process and backtest command (freed
large arrays stay in the heap: no page faults on fresh memory per run); the baselines run in the same process.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from numba import njit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.backtest.engine.metrics import compute_metrics  # noqa: E402
from apps.backtest.engine.run import run_backtest  # noqa: E402
from apps.bots.strategies.sma_cross import CROSS_TOLERANCE, SmaCross  # noqa: E402
from apps.bots.trading.fills import FillRules, simulate  # noqa: E402
from tradebot.memory import tune_allocator  # noqa: E402

N = 1_000_000
FAST, SLOW = 10, 50
FEE = 0.001
CASH = 1e200
REPEAT = 3


def make_candles(n: int, seed: int = 7) -> pd.DataFrame:
    real = pd.read_csv(ROOT / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", usecols=["close"])
    sigma = float(np.std(np.diff(np.log(real["close"].to_numpy()))))
    rng = np.random.default_rng(seed)
    close = 28_000.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
    open_ = np.r_[28_000.0, close[:-1]]
    hi = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, sigma / 2, n)))
    lo = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, sigma / 2, n)))
    ts = 1_672_531_200_000 + 60_000 * np.arange(1, n + 1, dtype=np.int64)  # close times from 2023-01-01
    vol = np.abs(rng.normal(5.0, 2.0, n))
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": hi, "low": lo, "close": close, "volume": vol})


@njit(cache=True)
def floor_loop(close, fast, slow, fee, cash0, tol_rel):
    """The reference: same rules, plain loop over precomputed SMAs. Returns (final equity, entries, exits)."""
    n = close.shape[0]
    cash = cash0
    amount = 0.0
    entries = np.empty(n // 2 + 1, np.int64)
    exits = np.empty(n // 2 + 1, np.int64)
    ne = 0
    nx = 0
    for i in range(1, n):
        d0 = fast[i - 1] - slow[i - 1]
        d1 = fast[i] - slow[i]
        t0 = abs(slow[i - 1]) * tol_rel
        t1 = abs(slow[i]) * tol_rel
        if amount == 0.0:
            if d1 > t1 and d0 <= t0:
                p = close[i]
                amount = cash / (p * (1.0 + fee))
                cash = cash - amount * p - amount * p * fee
                if cash < 0.0:
                    cash = 0.0
                entries[ne] = i
                ne += 1
        elif d1 < -t1 and d0 >= -t0:
            g = amount * close[i]
            cash = cash + g - g * fee
            amount = 0.0
            exits[nx] = i
            nx += 1
    return cash + amount * close[n - 1], entries[:ne].copy(), exits[:nx].copy()


def median_ms(fn, repeat: int = REPEAT) -> tuple[float, object]:
    out = None
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), out


def year_of_1h_from_real_1m(copies: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(1h candles, 1m candles) over ~a year: the real BTC/USDT 1m sample tiled `copies` times (see the docstring)."""
    real = pd.read_csv(ROOT / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz",
                       usecols=["timestamp", "open", "high", "low", "close", "volume"])
    real["timestamp"] = real["timestamp"] + 60_000  # open -> close label
    span = int(real["timestamp"].iloc[-1] - real["timestamp"].iloc[0]) + 60_000
    span = (span + 3_600_000 - 1) // 3_600_000 * 3_600_000  # whole hours, so every copy stays on the 1h grid
    parts = []
    scale = 1.0
    for k in range(copies):
        part = real.copy()
        part["timestamp"] = part["timestamp"] + k * span
        for col in ("open", "high", "low", "close"):
            part[col] = part[col] * scale
        scale = float(part["close"].iloc[-1]) / float(real["open"].iloc[0])
        parts.append(part)
    m1 = pd.concat(parts, ignore_index=True)
    bucket = (m1["timestamp"] - 1) // 3_600_000  # [t - 1h, t) <- 1m closes in (t - 1h, t]
    g = m1.groupby(bucket, sort=True)
    h1 = pd.DataFrame({"timestamp": (g["timestamp"].max() - 1) // 3_600_000 * 3_600_000 + 3_600_000,
                       "open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                       "close": g["close"].last(), "volume": g["volume"].sum()}).reset_index(drop=True)
    return h1, m1


def detail_bench() -> dict:
    from apps.bots.trading.detail import frame_source

    h1, m1 = year_of_1h_from_real_1m()
    strategy = SmaCross({"fast": FAST, "slow": SLOW})
    rules = FillRules(stop_loss=0.01, take_profit=0.02)
    ts = h1["timestamp"].to_numpy()
    cols = tuple(m1[k].to_numpy() for k in ("open", "high", "low", "close"))
    one_min = frame_source("1m", m1["timestamp"].to_numpy(), cols, ts, 3_600_000)
    o, hi, lo, cl = cols
    near_high = (hi - o) < (o - lo)
    mt = m1["timestamp"].to_numpy() - 60_000
    t_ts = np.stack([mt, mt + 15_000, mt + 30_000, mt + 45_000], axis=1).ravel()
    t_px = np.stack([o, np.where(near_high, hi, lo), np.where(near_high, lo, hi), cl], axis=1).ravel()
    trades = frame_source("trades", t_ts, (t_px,), ts, 3_600_000)
    run_backtest(h1, strategy, rules, "1h")
    run_backtest(h1, strategy, rules, "1h", detail=("1m", one_min))
    run_backtest(h1, strategy, rules, "1h", detail=("trades", trades))
    repeat = 15
    candle_ms, plain = median_ms(lambda: run_backtest(h1, strategy, rules, "1h"), repeat)
    m1_ms, with_1m = median_ms(lambda: run_backtest(h1, strategy, rules, "1h", detail=("1m", one_min)), repeat)
    tr_ms, with_tr = median_ms(lambda: run_backtest(h1, strategy, rules, "1h", detail=("trades", trades)), repeat)

    def summary(res) -> dict:
        d = res.detail
        return {"ambiguous_exits": d["ambiguous_exits"], "changed": d["changed"], "missing": d["missing"],
                "total_return_pct_diff": round(d["metric_diff"].get("total_return_pct", 0.0), 4),
                "sharpe_diff": round(d["metric_diff"].get("sharpe", 0.0), 4)}

    return {
        "detail_n_candles_1h": len(h1), "detail_n_candles_1m": len(m1), "detail_n_trades": int(t_px.shape[0]),
        "detail_closed_trades": int(plain.sim.n_trades),
        "candle_only_ms": round(candle_ms, 3), "detail_1m_ms": round(m1_ms, 3), "detail_trades_ms": round(tr_ms, 3),
        "detail_1m_ratio": round(m1_ms / candle_ms, 3), "detail_trades_ratio": round(tr_ms / candle_ms, 3),
        "detail_1m": summary(with_1m), "detail_trades": summary(with_tr),
        "detail_data": "real BTC/USDT 1m (46 days) tiled 8x to ~1 year, resampled to 1h; trades: 4 per real 1m candle",
    }


def main() -> None:
    if sys.argv[1:] == ["--only", "detail"]:
        tune_allocator()
        print(json.dumps({"bench": "backtest_detail", **detail_bench()}))
        return
    allocator_tuned = tune_allocator()  # what every backtest worker does (tradebot.memory); baselines share it
    df = make_candles(N)
    ts = df["timestamp"].to_numpy()
    o, h, lo, c, v = (np.ascontiguousarray(df[k].to_numpy()) for k in ("open", "high", "low", "close", "volume"))
    strategy = SmaCross({"fast": FAST, "slow": SLOW})
    rules = FillRules(fee=FEE, initial_balance=CASH)

    def ours():
        out = strategy.compute(c, h, lo, o, v)
        sim = simulate(ts, o, h, lo, c, out.action, rules)
        return sim, compute_metrics(sim, c, ts, "1m")

    t0 = time.perf_counter()
    ours()  # warm-up: compile or load the numba cache
    compile_s = time.perf_counter() - t0
    ours_ms, (sim, metrics) = median_ms(ours)
    action = strategy.compute(c, h, lo, o, v).action
    signals_ms, _ = median_ms(lambda: strategy.compute(c, h, lo, o, v))
    fills_ms, _ = median_ms(lambda: simulate(ts, o, h, lo, c, action, rules))
    metrics_ms, _ = median_ms(lambda: compute_metrics(sim, c, ts, "1m"))
    engine_ms, _ = median_ms(lambda: compute_metrics(simulate(ts, o, h, lo, c, action, rules), c, ts, "1m"))
    run_backtest(df, strategy, rules, "1m")
    run_backtest_ms, _ = median_ms(lambda: run_backtest(df, strategy, rules, "1m"))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    # the floor: same rules over precomputed SMAs
    from apps.bots.strategies import indicators as ind

    fast, slow = ind.sma(c, FAST), ind.sma(c, SLOW)
    floor_loop(c, fast, slow, FEE, CASH, CROSS_TOLERANCE)
    floor_ms, (floor_final, f_entries, f_exits) = median_ms(lambda: floor_loop(c, fast, slow, FEE, CASH,
                                                                                 CROSS_TOLERANCE))

    # vectorbt, incl. MAs and crossovers; first call compiles (untimed)
    import vectorbt as vbt

    close_s = pd.Series(c)

    def vbt_run():
        fma = vbt.MA.run(close_s, FAST)
        sma = vbt.MA.run(close_s, SLOW)
        return vbt.Portfolio.from_signals(close_s, fma.ma_crossed_above(sma), fma.ma_crossed_below(sma), fees=FEE,
                                          init_cash=CASH, freq="1min")

    vbt_run()
    vectorbt_ms, pf = median_ms(vbt_run)
    rec = pf.orders.values
    buys, sells = rec[rec["side"] == 0], rec[rec["side"] == 1]
    if len(rec) and rec["side"][-1] == 1:  # flat at the end: the last sell's proceeds are all the cash
        last = rec[-1]
        vbt_final = last["size"] * last["price"] - last["fees"]
    elif len(rec):  # open at the end: the cash before the last buy minus what it cost, plus the marked position
        last = rec[-1]
        prev_cash = (rec[-2]["size"] * rec[-2]["price"] - rec[-2]["fees"]) if len(rec) > 1 else CASH
        vbt_final = prev_cash - last["size"] * last["price"] - last["fees"] + last["size"] * c[-1]
    else:
        vbt_final = CASH

    t = sim.trades
    our_entries = np.r_[t["entry_bar"], [sim.open_trade["entry_bar"]] if sim.open_trade else []].astype(np.int64)
    trades_equal = bool(
        np.array_equal(our_entries, f_entries) and np.array_equal(t["exit_bar"], f_exits)
        and np.array_equal(our_entries, buys["idx"]) and np.array_equal(t["exit_bar"], sells["idx"])
    )
    ratio = sim.final_equity / CASH
    out = {
        "bench": "backtest",
        "n_candles": N,
        "data": "seeded geometric random walk, per-minute volatility of the real BTC/USDT 1m sample",
        "ours_ms": round(ours_ms, 3),
        "numba_floor_ms": round(floor_ms, 3),
        "vectorbt_ms": round(vectorbt_ms, 3),
        "ratio_vs_floor": round(ours_ms / floor_ms, 3),
        "ratio_vs_vectorbt": round(ours_ms / vectorbt_ms, 4),
        "ours_engine_ms": round(engine_ms, 3),
        "engine_ratio_vs_floor": round(engine_ms / floor_ms, 3),
        "ours_signals_ms": round(signals_ms, 3),
        "ours_fills_ms": round(fills_ms, 3),
        "ours_metrics_ms": round(metrics_ms, 3),
        "run_backtest_ms": round(run_backtest_ms, 3),
        "trades": int(len(t)),
        "open_trade": sim.open_trade is not None,
        "trades_equal": trades_equal,
        "final_ratio": ratio,
        "floor_final_ratio": floor_final / CASH,
        "vectorbt_final_ratio": float(vbt_final / CASH),
        "final_ratio_rel_diff_floor": abs(ratio / (floor_final / CASH) - 1.0),
        "final_ratio_rel_diff_vectorbt": abs(ratio / (vbt_final / CASH) - 1.0),
        "metrics_keys": len(metrics),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "peak_rss_mb_incl_vectorbt": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "compile_s": round(compile_s, 3),
        "allocator_tuned": allocator_tuned,
        "cpus": os.cpu_count(),
        **detail_bench(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
