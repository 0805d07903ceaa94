"""Intrabar detail: resolve stop-loss / take-profit exits inside a candle on finer data (1m candles or raw trades).

The rule is specified once, in the fills module docstring ("Intrabar detail"). Pure: numpy + numba, no Django; the
caller supplies the detail rows of the candles it asks about (`DetailSource`), so only ambiguous candles are ever read.

Why a second pass is exact: an ambiguous candle (a level inside [low, high], no gap at the open) ALWAYS exits, with or
without detail (candle-only: stop-first; detail: the first touch, or the conservative rule when the detail does not
touch). So every fill happens on the same candle in both runs; only the exit reason and price of ambiguous candles
differ (and, through the cash, the amounts after them). `simulate_detail` therefore runs `simulate` once, resolves
the ambiguous exits it made, and refills with those exits fixed (`_bar` for every other candle: one set of rules).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from apps.bots.trading.fills import (
    EV_BUY,
    EV_NONE,
    EV_STOP_LOSS,
    EV_TAKE_PROFIT,
    FillRules,
    SimResult,
    _bar,
    _exit,
    open_trade_of,
    simulate,
    trade_columns,
)

DETAIL_SOURCES = ("1m", "trades")

#: detail rows of one candle: ("1m", (open, high, low, close) arrays in time order) or ("trades", price array)
DetailRows = Any
#: callable(candle indexes, ascending int64 array) -> (starts, stops, columns): the detail rows of candle k are
#: columns[j][starts[k]:stops[k]] (starts == stops: missing). columns = (open, high, low, close) for "1m", (price,)
#: for "trades". One call per run, for the ambiguous candles only.
DetailSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]]


@njit(cache=True)
def _first_touch_candles(o, h, lo, stop, target, use_sl, use_tp):  # pragma: no cover - compiled
    """(event, level, resolved) on finer candles in time order: each is checked with the candle rule; resolved False
    when none touches a level; a finer candle that touches both levels without a gap is stop-first (conservative)."""
    for j in range(o.shape[0]):
        if use_sl and o[j] <= stop:
            return EV_STOP_LOSS, o[j], True
        if use_tp and o[j] >= target:
            return EV_TAKE_PROFIT, o[j], True
        if use_sl and lo[j] <= stop:
            return EV_STOP_LOSS, stop, True
        if use_tp and h[j] >= target:
            return EV_TAKE_PROFIT, target, True
    return EV_NONE, 0.0, False


@njit(cache=True)
def _first_touch_trades(price, stop, target, use_sl, use_tp):  # pragma: no cover - compiled
    """(event, level, resolved): the first trade at or beyond a level fills at ITS price."""
    for j in range(price.shape[0]):
        p = price[j]
        if use_sl and p <= stop:
            return EV_STOP_LOSS, p, True
        if use_tp and p >= target:
            return EV_TAKE_PROFIT, p, True
    return EV_NONE, 0.0, False


@njit(cache=True)
def _resolve_all(trades, starts, stops, c0, c1, c2, stop, target, use_sl, use_tp):  # pragma: no cover - compiled
    """`_first_touch_*` for many candles at once: (event, level, resolved) arrays; rows j in [starts[k], stops[k])."""
    m = starts.shape[0]
    event = np.zeros(m, np.int64)
    level = np.zeros(m, np.float64)
    ok = np.zeros(m, np.bool_)
    for k in range(m):
        a, z = starts[k], stops[k]
        if trades:
            e, lv, r = _first_touch_trades(c0[a:z], stop[k], target[k], use_sl, use_tp)
        else:
            e, lv, r = _first_touch_candles(c0[a:z], c1[a:z], c2[a:z], stop[k], target[k], use_sl, use_tp)
        event[k] = e
        level[k] = lv
        ok[k] = r
    return event, level, ok


def is_ambiguous(entry_price: float, o: float, h: float, lo: float, rules: FillRules) -> bool:
    """True when the exit of a protected position on this candle depends on the path inside it: a level inside
    [low, high] and no gap through a level at the open (the open is the candle's first price: a gap is not
    ambiguous)."""
    use_sl, use_tp = rules.stop_loss is not None, rules.take_profit is not None
    stop = entry_price * (1.0 - (rules.stop_loss or 0.0))
    target = entry_price * (1.0 + (rules.take_profit or 0.0))
    if (use_sl and o <= stop) or (use_tp and o >= target):
        return False
    return (use_sl and lo <= stop) or (use_tp and h >= target)


def resolve_exit(entry_price: float, rules: FillRules, kind: str, rows: DetailRows) -> tuple[int, float] | None:
    """(event EV_STOP_LOSS/EV_TAKE_PROFIT, level before slippage) of an ambiguous candle from its detail rows, or
    None when the detail never touches a level (the caller then keeps the conservative candle rule).

    `kind` "1m": rows = (open, high, low, close) arrays of the finer candles in time order; "trades": rows = trade
    prices in time order. THE function the live bot calls with the stream's stored trades (replay == backtest)."""
    use_sl, use_tp = rules.stop_loss is not None, rules.take_profit is not None
    stop = entry_price * (1.0 - (rules.stop_loss or 0.0))
    target = entry_price * (1.0 + (rules.take_profit or 0.0))
    if kind == "1m":
        o, h, lo = (np.ascontiguousarray(a, dtype=np.float64) for a in rows[:3])
        ev, level, ok = _first_touch_candles(o, h, lo, stop, target, use_sl, use_tp)
    elif kind == "trades":
        ev, level, ok = _first_touch_trades(np.ascontiguousarray(rows, dtype=np.float64), stop, target, use_sl,
                                            use_tp)
    else:
        raise ValueError(f"detail must be one of {', '.join(DETAIL_SOURCES)}, got {kind!r}")
    return (int(ev), float(level)) if ok else None


@njit(cache=True, error_model="numpy")
def _refill_kernel(open_, high, low, close, action, initial, fee, slippage, fraction, use_sl, sl, use_tp, tp,
                   ov_bar, ov_event, ov_level):  # pragma: no cover - compiled
    """`simulate`'s loop with the exits of candles ov_bar (ascending) fixed to (ov_event, ov_level): `_exit` there,
    `_bar` everywhere else. Returns (equity, event rows, cash, amount, fees_paid) like the fill kernel."""
    n = close.shape[0]
    equity = np.empty(n, np.float64)
    buys = 0
    for i in range(n):
        buys += action[i] == 1
    rec = np.empty((2 * buys + 1, 6), np.float64)
    cash = initial
    amount = 0.0
    entry_price = 0.0
    entry_bar = n
    fees_paid = 0.0
    m = 0
    k = 0
    for i in range(n):
        if k < ov_bar.shape[0] and i == ov_bar[k] and amount > 0.0:
            cash, amount, entry_price, ev, p, a, f = _exit(cash, amount, ov_level[k], ov_event[k], fee, slippage)
            k += 1
        else:
            if k < ov_bar.shape[0] and i == ov_bar[k]:
                k += 1
            cash, amount, entry_price, ev, p, a, f = _bar(cash, amount, entry_price, i > entry_bar, open_[i],
                                                          high[i], low[i], close[i], action[i], fee, slippage,
                                                          fraction, use_sl, sl, use_tp, tp)
        if ev != EV_NONE:
            fees_paid += f
            rec[m, 0] = i
            rec[m, 1] = ev
            rec[m, 2] = p
            rec[m, 3] = a
            rec[m, 4] = f
            rec[m, 5] = cash
            m += 1
            entry_bar = i if ev == EV_BUY else n
        equity[i] = cash + amount * close[i]
    return equity, rec[:m].copy(), cash, amount, fees_paid


@dataclass
class DetailReport:
    """What the detail changed: ambiguous exits on candles alone, how many the detail resolved differently
    (reason or price), and the candles whose detail was missing (conservative rule kept, warned)."""

    source: str
    ambiguous_exits: int = 0
    changed: int = 0
    missing: list[int] = field(default_factory=list)
    untouched: list[int] = field(default_factory=list)
    resolved: dict[int, tuple[int, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ambiguous_exits": self.ambiguous_exits, "changed": self.changed,
                "missing": len(self.missing), "untouched": len(self.untouched)}


def simulate_detail(timestamp: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                    action: np.ndarray, rules: FillRules, kind: str, source: DetailSource
                    ) -> tuple[SimResult, SimResult, DetailReport]:
    """(detail result, candle-only result, report). `source` is asked once, for the ambiguous candles only."""
    if kind not in DETAIL_SOURCES:
        raise ValueError(f"detail must be one of {', '.join(DETAIL_SOURCES)}, got {kind!r}")
    base = simulate(timestamp, open_, high, low, close, action, rules)
    report = DetailReport(kind)
    ev = base.events
    if rules.stop_loss is None and rules.take_profit is None or ev.shape[0] < 2:
        return base, base, report
    o = np.asarray(open_, dtype=np.float64)
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    k = ev.shape[0] // 2
    entry_px = ev[0:2 * k:2, 2]
    xbar = ev[1:2 * k:2, 0].astype(np.int64)
    xcode = ev[1:2 * k:2, 1].astype(np.int64)
    xprice = ev[1:2 * k:2, 2]
    use_sl, use_tp = rules.stop_loss is not None, rules.take_profit is not None
    stop = entry_px * (1.0 - (rules.stop_loss or 0.0))
    target = entry_px * (1.0 + (rules.take_profit or 0.0))
    xo, xh, xl = o[xbar], h[xbar], lo[xbar]
    gap = (use_sl & (xo <= stop)) | (use_tp & (xo >= target))
    inside = (use_sl & (xl <= stop)) | (use_tp & (xh >= target))
    amb = ((xcode == EV_STOP_LOSS) | (xcode == EV_TAKE_PROFIT)) & inside & ~gap
    bars = xbar[amb]
    report.ambiguous_exits = int(bars.shape[0])
    if not bars.shape[0]:
        return base, base, report
    starts, stops, cols = source(bars)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    stops = np.ascontiguousarray(stops, dtype=np.int64)
    cols = tuple(np.ascontiguousarray(c_, dtype=np.float64) for c_ in cols)
    c0 = cols[0]
    c1 = cols[1] if kind == "1m" else c0
    c2 = cols[2] if kind == "1m" else c0
    event, level, ok = _resolve_all(kind == "trades", starts, stops, c0, c1, c2, np.ascontiguousarray(stop[amb]),
                                    np.ascontiguousarray(target[amb]), use_sl, use_tp)
    missing = stops <= starts
    report.missing = bars[missing].tolist()
    report.untouched = bars[~missing & ~ok].tolist()
    use = ok & ~missing
    ov_bar, ov_event, ov_level = bars[use], event[use], level[use]
    before_code, before_price = xcode[amb][use], xprice[amb][use]
    report.changed = int(((ov_event != before_code) | (ov_level * (1.0 - rules.slippage) != before_price)).sum())
    report.resolved = {int(b): (int(e), float(v)) for b, e, v in zip(ov_bar, ov_event, ov_level, strict=True)}
    if not report.changed:
        return base, base, report
    ts = np.asarray(timestamp, dtype=np.int64)
    c = np.ascontiguousarray(close, dtype=np.float64)
    equity, events, cash, amount, fees_paid = _refill_kernel(
        np.ascontiguousarray(o), np.ascontiguousarray(h), np.ascontiguousarray(lo), c,
        np.ascontiguousarray(action, dtype=np.int8), float(rules.initial_balance), *rules._kernel_args(),
        np.ascontiguousarray(ov_bar), np.ascontiguousarray(ov_event), np.ascontiguousarray(ov_level))
    result = SimResult(
        columns=trade_columns(ts, events), open_trade=open_trade_of(ts, c, events), equity=equity,
        final_equity=float(equity[-1]), fees_paid=float(fees_paid), initial_balance=float(rules.initial_balance),
        final_cash=float(cash), final_position=float(amount), events=events, stats=None,
    )
    return result, base, report


def frame_source(kind: str, detail_ts: np.ndarray, columns: tuple[np.ndarray, ...], candle_close_ts: np.ndarray,
                 timeframe_ms: int) -> DetailSource:
    """A DetailSource over detail rows in time order: 1m candles (close-time labels, columns open/high/low/close) or
    trades (timestamps, columns (price,)). Candle i covers [t_i - tf, t_i): 1m candles closing in (t_i - tf, t_i],
    trades stamped in [t_i - tf, t_i). Two vectorized searchsorted calls; the columns are not copied."""
    ts = np.asarray(detail_ts, dtype=np.int64)
    close_ts = np.asarray(candle_close_ts, dtype=np.int64)
    side = "right" if kind == "1m" else "left"
    cols = tuple(np.ascontiguousarray(c, dtype=np.float64) for c in (columns[:4] if kind == "1m" else columns[:1]))

    def source(bars: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        t = close_ts[np.asarray(bars, dtype=np.int64)]
        return np.searchsorted(ts, t - timeframe_ms, side=side), np.searchsorted(ts, t, side=side), cols

    return source


def cached_source(kind: str, source: DetailSource) -> DetailSource:
    """`source` asked at most once per candle: many parameter sets of one sweep chunk share the detail rows of the
    candles they find ambiguous (each set finds its own; the union is read once)."""
    ncols = 4 if kind == "1m" else 1
    seen: dict[int, tuple[np.ndarray, ...]] = {}

    def cached(bars: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
        bars = np.asarray(bars, dtype=np.int64)
        new = np.array([b for b in dict.fromkeys(bars.tolist()) if b not in seen], dtype=np.int64)
        if new.shape[0]:
            starts, stops, cols = source(new)
            for b, a, z in zip(new.tolist(), np.asarray(starts).tolist(), np.asarray(stops).tolist(), strict=True):
                seen[b] = tuple(np.asarray(c[a:z], dtype=np.float64) for c in cols[:ncols])
        parts = [seen[b] for b in bars.tolist()]
        lengths = np.array([p[0].shape[0] for p in parts], dtype=np.int64)
        stops_out = np.cumsum(lengths)
        cols_out = tuple(np.concatenate([p[j] for p in parts]) if parts else np.empty(0, np.float64)
                         for j in range(ncols))
        return stops_out - lengths, stops_out, cols_out

    return cached


def frame_detail_source(kind: str, detail_ts: np.ndarray, detail_ohlc: tuple[np.ndarray, ...] | np.ndarray,
                        candle_close_ts: np.ndarray, timeframe_ms: int) -> DetailSource:
    """`frame_source` over detail rows held in memory (a 1m CSV's open/high/low/close, or trade prices)."""
    cols = tuple(detail_ohlc) if kind == "1m" else (np.asarray(detail_ohlc, dtype=np.float64),)
    return frame_source(kind, detail_ts, cols, candle_close_ts, timeframe_ms)


MAX_DETAIL_WARNINGS = 20


def detail_warnings(kind: str, missing_ts: list[int], untouched_ts: list[int]) -> list[str]:
    """The warnings naming each ambiguous candle (close time, ms UTC) that kept the conservative rule: no detail
    rows, or rows that never touch a level. One wording for backtests, sweeps and replays."""
    from apps.market.timeframes import format_ms

    problems = sorted([(t, "no detail data") for t in missing_ts] +
                      [(t, "detail never touches a level") for t in untouched_ts])
    out = [f"detail {kind}: {why} for the candle closing at {format_ms(int(t))} UTC ({int(t)}); its exit keeps the "
           "conservative stop-first rule" for t, why in problems[:MAX_DETAIL_WARNINGS]]
    if len(problems) > MAX_DETAIL_WARNINGS:
        out.append(f"detail {kind}: ... and {len(problems) - MAX_DETAIL_WARNINGS} more candles without usable "
                   "detail (conservative rule kept)")
    return out
