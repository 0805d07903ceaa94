"""Trades -> candles and candles -> higher-timeframe candles (pure: no Django).

Buckets follow the exchanges: a candle stamped t (its CLOSE time) holds [t - tf, t), so a trade exactly at t starts
the next candle. Both directions are one-pass numba kernels over time-ordered input, because pandas' resample spends
most of its time building an index (see bench/aggregate.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

from apps.market.timeframes import TimeframeError, timeframe_ms
from apps.market.validation import CANDLE_COLUMNS


@njit(cache=True, nogil=True)
def _trades_kernel(ts, price, amount, tf, out_ts, o, h, lo, c, v):  # pragma: no cover - compiled
    """One pass over trades in time order -> (candles written or -1 when out of room, in_order, price_sum, min_amount).

    Divides only when a bucket changes and keeps the running candle in registers. Input checks are folded into cheap
    running values (a NaN/inf price makes price_sum non-finite, a negative amount shows in min_amount, a NaN/inf amount
    in the candle's volume) because a per-trade branch for each rule costs about one memory-bound pass each; the
    caller locates the offending row only when a check fails. Volume is a plain running sum (pandas uses Kahan
    summation: they agree to ~1e-15 relative)."""
    n = ts.shape[0]
    cap = out_ts.shape[0]
    k = -1
    end = np.iinfo(np.int64).min  # exclusive end of the current bucket = its close-time label
    prev = ts[0]
    in_order = True
    psum = 0.0
    amin = 0.0
    ch = 0.0
    cl = 0.0
    cc = 0.0
    cv = 0.0
    for i in range(n):
        t = ts[i]
        p = price[i]
        a = amount[i]
        psum += p
        if a < amin:
            amin = a
        if t < prev:
            in_order = False
        prev = t
        if t >= end:
            if k >= 0:
                h[k] = ch
                lo[k] = cl
                c[k] = cc
                v[k] = cv
            k += 1
            if k == cap:
                return -1, False, psum, amin
            end = (t // tf) * tf + tf
            out_ts[k] = end
            o[k] = p
            ch = p
            cl = p
            cc = p
            cv = a
        else:
            if p > ch:
                ch = p
            if p < cl:
                cl = p
            cc = p
            cv += a
    if k >= 0:
        h[k] = ch
        lo[k] = cl
        c[k] = cc
        v[k] = cv
    return k + 1, in_order, psum, amin


@njit(cache=True, nogil=True)
def _resample_kernel(ts, op, hi, lo, cl, vol, src, tgt, out_ts, o, h, lw, c, v, cnt):  # pragma: no cover - compiled
    """One pass over ascending source candles (close labels) into target buckets; cnt = source candles per bucket."""
    n = ts.shape[0]
    k = -1
    cur = 0
    comp = 0.0
    for i in range(n):
        b = (ts[i] - src) // tgt
        if k < 0 or b != cur:
            k += 1
            cur = b
            out_ts[k] = b * tgt + tgt
            o[k] = op[i]
            h[k] = hi[i]
            lw[k] = lo[i]
            c[k] = cl[i]
            v[k] = vol[i]
            cnt[k] = 1
            comp = 0.0
        else:
            if hi[i] > h[k]:
                h[k] = hi[i]
            if lo[i] < lw[k]:
                lw[k] = lo[i]
            c[k] = cl[i]
            y = vol[i] - comp
            s = v[k] + y
            comp = s - v[k] - y
            v[k] = s
            cnt[k] += 1
    return k + 1


def empty_candle_frame(*, filled: bool = False) -> pd.DataFrame:
    cols: dict[str, np.ndarray] = {"timestamp": np.empty(0, dtype=np.int64)}
    cols.update({c: np.empty(0, dtype=np.float64) for c in CANDLE_COLUMNS[1:]})
    if filled:
        cols["filled"] = np.empty(0, dtype=bool)
    return pd.DataFrame(cols)


def trades_to_candles_arrays(
    ts: np.ndarray, price: np.ndarray, amount: np.ndarray, timeframe: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(timestamp, open, high, low, close, volume) arrays; the array form of `trades_to_candles` without fill."""
    tf = timeframe_ms(timeframe)
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    price = np.ascontiguousarray(price, dtype=np.float64)
    amount = np.ascontiguousarray(amount, dtype=np.float64)
    if not (ts.ndim == price.ndim == amount.ndim == 1) or not (len(ts) == len(price) == len(amount)):
        raise ValueError(
            f"trades arrays must be 1-D and of equal length: timestamp {ts.shape}, price {price.shape}, "
            f"amount {amount.shape}"
        )
    n = len(ts)
    if n == 0:
        f = np.empty(0, dtype=np.float64)
        return np.empty(0, dtype=np.int64), f, f.copy(), f.copy(), f.copy(), f.copy()
    # Sized from the ends (no extra pass over the input); out-of-order input may need more room: it gets sorted.
    span = int(ts[-1] // tf - ts[0] // tf) + 1 if ts[-1] >= ts[0] else 1
    out = _alloc(min(n, span))
    written, in_order, psum, amin = _trades_kernel(ts, price, amount, tf, *out)
    if written < 0 or not in_order:
        # Not in time order: a stable sort keeps the given order among trades sharing a millisecond.
        order = np.argsort(ts, kind="stable")
        ts, price, amount = ts[order], price[order], amount[order]
        out = _alloc(min(n, int(ts[-1] // tf - ts[0] // tf) + 1))
        written, in_order, psum, amin = _trades_kernel(ts, price, amount, tf, *out)
    else:
        order = None
    out = tuple(a[:written] for a in out)
    if not np.isfinite(psum) or not amin >= 0.0 or not (out[3] > 0.0).all() or not np.isfinite(out[5]).all():
        _raise_bad_trade(price, amount, order)
    return out  # type: ignore[return-value]


def _alloc(size: int) -> tuple[np.ndarray, ...]:
    size = max(1, size)
    return (np.empty(size, dtype=np.int64),) + tuple(np.empty(size, dtype=np.float64) for _ in range(5))


def _raise_bad_trade(price: np.ndarray, amount: np.ndarray, order: np.ndarray | None) -> None:
    """Slow path, bad input only: name the first offending trade (row in the caller's order, 0-based)."""
    checks = (
        ("price", price, ~((price > 0.0) & np.isfinite(price)), "must be a positive finite number"),
        ("amount", amount, ~((amount >= 0.0) & np.isfinite(amount)), "must be a finite number >= 0"),
    )
    found = []
    for field, values, bad, rule in checks:
        idx = np.flatnonzero(bad)
        if len(idx):
            rows = order[idx] if order is not None else idx
            j = int(np.argmin(rows))
            found.append((int(rows[j]), field, rule, float(values[idx[j]])))
    if found:
        row, field, rule, value = min(found)
        raise ValueError(f"trade row {row} (0-based), field {field!r}: {rule}, got {value!r}")


def trades_to_candles(
    ts: np.ndarray, price: np.ndarray, amount: np.ndarray, timeframe: str, *, fill: bool = False
) -> pd.DataFrame:
    """Candle frame (close labels) from trades: open = first trade, close = last trade in the given order (trades
    sharing a millisecond keep their order), high/low = extremes, volume = sum of amounts.

    Intervals without trades produce no candle; with `fill=True` they become flat zero-volume candles at the previous
    close between the first and last trade (like Kraken's and Binance's own), flagged in a boolean `filled` column.
    Input not in time order is stably sorted first. Bad price/amount -> ValueError naming the row.
    """
    t, o, h, lo, c, v = trades_to_candles_arrays(ts, price, amount, timeframe)
    if not fill:
        return pd.DataFrame({"timestamp": t, "open": o, "high": h, "low": lo, "close": c, "volume": v})
    if len(t) == 0:
        return empty_candle_frame(filled=True)
    return _fill_flat(t, o, h, lo, c, v, timeframe_ms(timeframe))


def _fill_flat(t, o, h, lo, c, v, tf: int) -> pd.DataFrame:
    """Expand to every bucket from first to last; empty ones are flat at the previous close with zero volume."""
    full_ts = np.arange(t[0], t[-1] + tf, tf, dtype=np.int64)
    pos = (t - t[0]) // tf
    has = np.zeros(len(full_ts), dtype=bool)
    has[pos] = True
    # Index of the last real candle at or before each slot: its close is the flat price of an empty slot.
    last_real = np.maximum.accumulate(np.where(has, np.arange(len(full_ts)), 0))
    flat = np.empty(len(full_ts), dtype=np.float64)
    flat[pos] = c
    flat = flat[last_real]
    out = {"timestamp": full_ts}
    for name, values in (("open", o), ("high", h), ("low", lo), ("close", c)):
        col = flat.copy()
        col[pos] = values
        out[name] = col
    vol = np.zeros(len(full_ts), dtype=np.float64)
    vol[pos] = v
    out["volume"] = vol
    out["filled"] = ~has
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Settled:
    """What is known about a source series (source close times, inclusive): it was fetched from `first` through
    `last`, except the `pending` ranges (open gaps: not fetched yet). Holes outside `pending` are settled: the source
    had nothing there."""

    first: int
    last: int
    pending: tuple[tuple[int, int], ...] = ()

    def mask(self, bucket_closes: np.ndarray, src: int, tgt: int) -> np.ndarray:
        """True for the buckets (target close times) whose every source interval is settled."""
        lo = bucket_closes - tgt + src  # first source close time in the bucket
        ok = (lo >= self.first) & (bucket_closes <= self.last)
        for a, b in self.pending:
            ok &= ~((lo <= b) & (bucket_closes >= a))
        return ok


def check_resample(source_tf: str, target_tf: str) -> tuple[int, int]:
    """(source ms, target ms), or TimeframeError when the target is not a whole multiple of the source."""
    src = timeframe_ms(source_tf)
    tgt = timeframe_ms(target_tf)
    if tgt < src or tgt % src:
        raise TimeframeError(
            f"cannot resample {source_tf} to {target_tf}: the target must be a whole multiple of the source timeframe"
        )
    return src, tgt


def resample_candles(
    df: pd.DataFrame, source_tf: str, target_tf: str, *, complete_only: bool = True,
    settled: Settled | None = None,
) -> pd.DataFrame:
    """Candle frame of `target_tf` from a candle frame of `source_tf` (close labels on both sides).

    A target candle closing at T takes the source candles closing in (T - target, T]: first open, max high, min low,
    last close, summed volume. 1d buckets close at 00:00 UTC. With `complete_only=True` (default) a bucket missing any
    of its target/source source candles is DROPPED, so an exchange outage (e.g. Binance 2023-03-24, 80 missing 1m
    candles) or the still-forming end of the data never yields a wrong candle; `complete_only=False` keeps such
    partial buckets. Unsorted input is sorted; duplicate or off-grid source timestamps are a ValueError.

    With `settled` (what the ledger knows about the source, see `Settled`) the rule is the exchanges' own instead: an
    interval the source reported nothing for (no trades, exchange down: an `empty` / `exchange_outage` gap) contributes
    nothing and the bucket is still built from the rest; a bucket is held back only while one of its intervals is not
    fetched yet (an open gap, or outside what was fetched) — so the still-forming bucket is never built.
    """
    src, tgt = check_resample(source_tf, target_tf)
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"candle frame lacks column {missing[0]!r} (needs {', '.join(CANDLE_COLUMNS)})")
    ts = np.ascontiguousarray(df["timestamp"].to_numpy(), dtype=np.int64)
    cols = [np.ascontiguousarray(df[c].to_numpy(dtype=np.float64)) for c in CANDLE_COLUMNS[1:]]
    if len(ts) == 0:
        return empty_candle_frame()
    if len(ts) > 1 and not (np.diff(ts) > 0).all():
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        cols = [col[order] for col in cols]
        dup = np.flatnonzero(np.diff(ts) == 0)
        if len(dup):
            raise ValueError(f"{source_tf} candles: duplicate timestamp {int(ts[dup[0]])}")
    off = np.flatnonzero(ts % src)
    if len(off):
        raise TimeframeError(f"{source_tf} candles: timestamp {int(ts[off[0]])} is not on the {source_tf} grid")
    if tgt == src:
        return pd.DataFrame({"timestamp": ts, **dict(zip(CANDLE_COLUMNS[1:], cols, strict=True))})
    size = min(len(ts), int((ts[-1] - src) // tgt - (ts[0] - src) // tgt) + 1)
    out_ts = np.empty(size, dtype=np.int64)
    o, h, lo, c, v = (np.empty(size, dtype=np.float64) for _ in range(5))
    cnt = np.empty(size, dtype=np.int64)
    k = _resample_kernel(ts, *cols, src, tgt, out_ts, o, h, lo, c, v, cnt)
    keep = slice(0, k)
    out = pd.DataFrame(
        {"timestamp": out_ts[keep], "open": o[keep], "high": h[keep], "low": lo[keep], "close": c[keep],
         "volume": v[keep]}
    )
    if settled is not None:
        out = out.loc[settled.mask(out["timestamp"].to_numpy(), src, tgt)].reset_index(drop=True)
    elif complete_only:
        out = out.loc[cnt[keep] == tgt // src].reset_index(drop=True)
    return out
