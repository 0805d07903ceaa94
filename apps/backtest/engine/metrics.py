"""Backtest metrics from a SimResult (pure: numpy + numba, no Django). Every value is JSON-safe (NaN/inf -> None).

Definitions (n = number of candles, E_i = equity after candle i's fill, E_-1 = initial balance, ppy = candles in a
365-day year for the timeframe, r_i = E_i / E_(i-1) - 1 for i = 0..n-1, i.e. n per-candle returns incl. the first):

* total_return_pct = (final_equity / initial_balance - 1) * 100. final_equity marks an open position to the last close
  without an exit fee.
* cagr_pct = ((final / initial) ** (1 / years) - 1) * 100 with years = (last - first timestamp) / 365 days; None when
  the span is 0 or the power overflows (e.g. a few minutes of data).
* buy_hold_return_pct = (last close / first close - 1) * 100, gross (no fees), from the FIRST candle of the data
  (backtesting.py starts after the indicator warm-up; equal when the strategy has no warm-up / from the same bar).
* volatility_pct = std(r, ddof=1) * sqrt(ppy) * 100 (annualised per-candle volatility).
* sharpe = mean(r) / std(r, ddof=1) * sqrt(ppy), risk-free 0, arithmetic per-candle returns. NOT comparable to
  backtesting.py's Sharpe, which uses daily resampled returns, geometric mean annualisation and a different volatility
  formula; on 1m data the two differ widely, so we do not compare it.
* sortino = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(ppy) (downside deviation over ALL returns, target 0).
  mean and std come from sums of r - K, K = the mean of the first 1000 returns (the shifted-data algorithm: no
  cancellation when K is near the mean), each kept as 4 partial sums in candle order (candle i -> lane i % 4, lanes
  added in a fixed order at the end: deterministic, and no chain of dependent additions); one pass with the
  drawdowns (apps/bots/trading/equity.py),
  run by simulate's fill kernel, by `equity_stats` and by the sweep's fused kernel on
  the same equity values with the same helpers, so all give bit-identical metrics.
* Drawdown at candle i: E_i / max(E_-1..E_i) - 1 (the initial balance is the first peak). max_drawdown_pct is its
  minimum * 100, NEGATIVE (as backtesting.py), 0 when equity never fell. Equity here includes a fill's fee on the fill
  candle; backtesting.py books the fee of a close-filled order one candle later, so its close-to-close drawdown can
  differ by up to the fee (0.1 % points) at a fill candle.
  For the deepest drawdown: max_drawdown_start (time of its peak; the first candle when the peak is the initial
  balance), max_drawdown_trough (time of the low), max_drawdown_end (time of the first candle back at or above the
  peak, None if not recovered), max_drawdown_duration_bars / _ms (peak -> recovery, or -> last candle if not
  recovered).
* A drawdown episode = a maximal run of candles below the running peak (ends at recovery or at the data's end).
  avg_drawdown_pct = mean of the episodes' deepest drawdowns (negative); longest_drawdown_bars / _ms = the longest
  episode, peak -> recovery (or end), like backtesting.py's "Max. Drawdown Duration".
* calmar = cagr_pct / |max_drawdown_pct|; None without a drawdown or CAGR.
* Trade statistics are over CLOSED trades only (the open one is in `open_trade`): closed_trades; win_rate_pct = share
  with pnl > 0; profit_factor = sum of positive pnl / |sum of negative pnl| in quote (None without a losing trade;
  backtesting.py sums return percentages instead, which differs when trade sizes differ); gross_profit, gross_loss;
  expectancy = mean pnl (quote); expectancy_pct = mean return_pct (arithmetic, = backtesting.py's "Expectancy [%]");
  sqn = sqrt(n) * mean(pnl) / std(pnl, ddof=1) (as backtesting.py); best/worst_trade_pct = max/min return_pct;
  avg_trade_pct = geometric mean of return_pct ((prod(1 + r) ** (1/n) - 1) * 100, as backtesting.py's "Avg. Trade");
  avg/max_holding_bars and avg/max_holding_time_ms = exit - entry (candles, ms); max_consecutive_wins / _losses =
  longest run of pnl > 0 / pnl <= 0 in trade order. A trade's return_pct = pnl / (amount * entry_price) * 100.
* exposure_pct = candles during which a position existed at some moment (entry candle to exit candle inclusive, the
  open trade to the last candle) / n * 100, as backtesting.py's "Exposure Time [%]".
* fees_paid = all fees incl. the open trade's entry fee; final_equity; initial_balance; bars = n; start/end = first
  and last candle close time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

# The equity pass (returns' moments + drawdowns) lives in bots/trading/equity.py, shared bar by bar by simulate's fill
# kernel, equity_stats and the sweep's fused pass (bots/trading/fused.py): same helpers, same order, bit-identical.
from apps.bots.trading.equity import equity_stats
from apps.bots.trading.fills import SimResult
from apps.market.timeframes import periods_per_year

METRIC_KEYS: tuple[str, ...] = (
    "bars", "start", "end", "initial_balance", "final_equity", "total_return_pct", "cagr_pct", "buy_hold_return_pct",
    "volatility_pct", "sharpe", "sortino", "max_drawdown_pct", "max_drawdown_start", "max_drawdown_trough",
    "max_drawdown_end", "max_drawdown_duration_bars", "max_drawdown_duration_ms", "avg_drawdown_pct",
    "longest_drawdown_bars", "longest_drawdown_ms", "calmar", "closed_trades", "win_rate_pct", "profit_factor",
    "gross_profit", "gross_loss", "expectancy", "expectancy_pct", "sqn", "best_trade_pct", "worst_trade_pct",
    "avg_trade_pct", "avg_holding_bars", "max_holding_bars", "avg_holding_time_ms", "max_holding_time_ms",
    "exposure_pct", "fees_paid", "max_consecutive_wins", "max_consecutive_losses",
)


@njit(cache=True)
def _streaks(pnl):
    best_w = 0
    best_l = 0
    w = 0
    lo = 0
    for p in pnl:
        if p > 0.0:
            w += 1
            lo = 0
            if w > best_w:
                best_w = w
        else:
            lo += 1
            w = 0
            if lo > best_l:
                best_l = lo
    return best_w, best_l


def _num(x: Any) -> float | int | None:
    """JSON-safe scalar: Python int/float, None for NaN/inf/None."""
    if x is None:
        return None
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable(value: Any) -> Any:
    """Plain JSON types; NaN/inf become None (PostgreSQL jsonb and strict JSON reject them)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def compute_metrics(sim: SimResult, close: np.ndarray, timestamp: np.ndarray, timeframe: str
                    ) -> dict[str, float | int | None]:
    """All metrics of one simulation (definitions in the module docstring); keys in METRIC_KEYS order."""
    close = np.asarray(close, dtype=np.float64)
    ts = np.asarray(timestamp, dtype=np.int64)
    equity = np.ascontiguousarray(sim.equity, dtype=np.float64)
    n = equity.shape[0]
    if close.shape[0] != n or ts.shape[0] != n:
        raise ValueError(f"compute_metrics: close ({close.shape[0]}), timestamp ({ts.shape[0]}) and equity ({n}) "
                         "must have the same length")
    stats = getattr(sim, "stats", None)  # the fill kernel's equity pass over this same equity
    if stats is None and n:
        stats = equity_stats(equity, float(sim.initial_balance))
    open_entry = None if sim.open_trade is None else int(sim.open_trade["entry_bar"])
    return assemble_metrics(stats, close, ts, timeframe, initial=float(sim.initial_balance),
                            final=float(sim.final_equity), fees_paid=float(sim.fees_paid), columns=sim.columns,
                            open_entry_bar=open_entry)


def assemble_metrics(stats: tuple | None, close: np.ndarray, ts: np.ndarray, timeframe: str, *, initial: float,
                     final: float, fees_paid: float, columns: dict[str, np.ndarray], open_entry_bar: int | None
                     ) -> dict[str, float | int | None]:
    """The metrics dict from `equity_stats` (None when there are no candles), the closed trades' columns (as
    `SimResult.columns`) and the run's scalars: shared by compute_metrics and the sweep's fused kernel."""
    ppy = periods_per_year(timeframe)
    n = ts.shape[0]
    k = int(columns["pnl"].shape[0])
    m: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    m.update(bars=n, initial_balance=initial, final_equity=final, fees_paid=fees_paid,
             total_return_pct=(final / initial - 1.0) * 100.0, closed_trades=k,
             max_drawdown_pct=0.0, exposure_pct=0.0, max_consecutive_wins=0, max_consecutive_losses=0)
    if n == 0 or stats is None:
        return {key: _num(v) for key, v in m.items()}

    sqrt_ppy = math.sqrt(ppy)
    m["start"] = int(ts[0])
    m["end"] = int(ts[-1])
    span = int(ts[-1] - ts[0])
    if span > 0 and final > 0.0:
        try:
            m["cagr_pct"] = (math.exp(math.log(final / initial) * (365 * 86_400_000 / span)) - 1.0) * 100.0
        except OverflowError:
            m["cagr_pct"] = None
    if close[0] > 0:
        m["buy_hold_return_pct"] = (close[-1] / close[0] - 1.0) * 100.0

    mean, std, downside, max_dd, dd_peak, dd_trough, dd_end, avg_depth, lg_start, lg_end = stats
    if std == std:  # not NaN
        m["volatility_pct"] = std * sqrt_ppy * 100.0
        m["sharpe"] = mean / std * sqrt_ppy if std > 0.0 else None
    m["sortino"] = mean / downside * sqrt_ppy if downside > 0.0 else None
    m["max_drawdown_pct"] = max_dd * 100.0
    m["avg_drawdown_pct"] = avg_depth * 100.0
    m["longest_drawdown_bars"] = int(lg_end - lg_start)
    m["longest_drawdown_ms"] = int(ts[lg_end] - ts[lg_start])
    if max_dd < 0.0:
        m["max_drawdown_start"] = int(ts[dd_peak])
        m["max_drawdown_trough"] = int(ts[dd_trough])
        stop = dd_end if dd_end >= 0 else n - 1
        m["max_drawdown_end"] = int(ts[dd_end]) if dd_end >= 0 else None
        m["max_drawdown_duration_bars"] = int(stop - dd_peak)
        m["max_drawdown_duration_ms"] = int(ts[stop] - ts[dd_peak])
        if m["cagr_pct"] is not None:
            m["calmar"] = m["cagr_pct"] / abs(m["max_drawdown_pct"])
    else:
        m["max_drawdown_duration_bars"] = 0
        m["max_drawdown_duration_ms"] = 0

    t = columns
    exposed = int(np.sum(t["exit_bar"] - t["entry_bar"] + 1)) if k else 0
    if open_entry_bar is not None:
        exposed += n - int(open_entry_bar)
    m["exposure_pct"] = exposed / n * 100.0
    if k:
        pnl = t["pnl"]
        ret = t["return_pct"]
        bars = t["exit_bar"] - t["entry_bar"]
        held = t["exit_time"] - t["entry_time"]
        gross_profit = float(pnl[pnl > 0].sum())
        gross_loss = float(-pnl[pnl < 0].sum())
        mean_pnl = float(pnl.mean())
        m["win_rate_pct"] = float(np.count_nonzero(pnl > 0)) / k * 100.0
        m["gross_profit"] = gross_profit
        m["gross_loss"] = gross_loss
        m["profit_factor"] = gross_profit / gross_loss if gross_loss > 0 else None
        m["expectancy"] = mean_pnl
        m["expectancy_pct"] = float(ret.mean())
        if k > 1:
            scale = float(np.abs(pnl).max())  # huge balances: scale so the squares cannot overflow
            sd = float((pnl / scale).std(ddof=1)) * scale if scale > 0 else 0.0
            m["sqn"] = math.sqrt(k) * mean_pnl / sd if sd > 0 else None
        m["best_trade_pct"] = float(ret.max())
        m["worst_trade_pct"] = float(ret.min())
        growth = 1.0 + ret / 100.0
        if np.all(growth > 0):
            m["avg_trade_pct"] = (math.exp(float(np.log(growth).mean())) - 1.0) * 100.0
        m["avg_holding_bars"] = float(bars.mean())
        m["max_holding_bars"] = int(bars.max())
        m["avg_holding_time_ms"] = float(held.mean())
        m["max_holding_time_ms"] = int(held.max())
        m["max_consecutive_wins"], m["max_consecutive_losses"] = _streaks(pnl)
    return {key: _num(v) for key, v in m.items()}
