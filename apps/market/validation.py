"""Candle and trade validation (pure: numpy/pandas, no Django).

Every row is checked with vectorized masks; a rejected row gets ONE Rejection naming the market, the timestamp (ms and
ISO), the first rule it breaks and the offending values, so an operator can find it. The valid rest is returned intact.
Rule order (first match wins): nan, off_grid, high_low, negative_volume, duplicate_timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from apps.market.timeframes import format_ms, timeframe_ms

#: The columns of a candle frame, in order (the one definition: files, providers, engine and API use it).
CANDLE_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
TRADE_COLUMNS: tuple[str, ...] = ("timestamp", "price", "amount")

RULE_NAN = "nan"
RULE_OFF_GRID = "off_grid"
RULE_HIGH_LOW = "high_low"
RULE_NEGATIVE_VOLUME = "negative_volume"
RULE_DUPLICATE = "duplicate_timestamp"
RULE_NON_POSITIVE_PRICE = "non_positive_price"
RULE_NEGATIVE_AMOUNT = "negative_amount"


@dataclass
class Rejection:
    """Why one input row was not stored. `row` is the 0-based position of the row in the batch given."""

    market: str
    timestamp: int | None
    rule: str
    message: str
    row: int | None

    def __str__(self) -> str:
        return self.message


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)} (have: {', '.join(map(str, df.columns))})")


def _as_float(df: pd.DataFrame, column: str, what: str) -> np.ndarray:
    try:
        return pd.to_numeric(df[column], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: column {column!r} is not numeric ({exc})") from None


def _where(prefix: str, ts: float) -> str:
    if not np.isfinite(ts):
        return f"{prefix} @ {ts}"
    ms = int(ts)
    return f"{prefix} @ {ms} ({format_ms(ms)})"


def clip_close_times(df: pd.DataFrame, start: int | None, end: int | None) -> pd.DataFrame:
    """The rows whose `timestamp` (close time, ms) lies in [start, end]; either bound may be None (open)."""
    if start is None and end is None:
        return df
    ts = df["timestamp"].to_numpy()
    mask = np.ones(len(ts), dtype=bool)
    if start is not None:
        mask &= ts >= start
    if end is not None:
        mask &= ts <= end
    return df.loc[mask].reset_index(drop=True)


def empty_candle_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": np.empty(0, dtype=np.int64),
            **{c: np.empty(0, dtype=np.float64) for c in PRICE_COLUMNS},
        }
    )


def validate_candles(df: pd.DataFrame, *, market: str, timeframe: str) -> tuple[pd.DataFrame, list[Rejection]]:
    """Split a batch into (valid candle frame sorted by close time, rejections).

    `market` is a label such as "binance BTC/USDT"; messages read "<market> <tf> @ <ms> (<iso>): rejected: ... [rule]".
    An unknown timeframe raises TimeframeError; a missing/non-numeric column raises ValueError naming it.
    """
    tf = timeframe_ms(timeframe)
    what = f"{market} {timeframe}"
    _require_columns(df, CANDLE_COLUMNS, what)
    n = len(df)
    if n == 0:
        return empty_candle_frame(), []

    ts_f = _as_float(df, "timestamp", what)
    cols = {c: _as_float(df, c, what) for c in PRICE_COLUMNS}
    o, h, lo, c, v = (cols[k] for k in PRICE_COLUMNS)

    finite = np.isfinite(ts_f) & np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
    bad_nan = ~finite
    ts = np.where(finite, ts_f, 0).astype(np.int64)
    with np.errstate(invalid="ignore"):
        bad_grid = finite & ((ts_f != np.floor(ts_f)) | (ts % tf != 0))
        ok = finite & ~bad_grid
        top = np.maximum(o, c)
        bottom = np.minimum(o, c)
        bad_hl = ok & ((h < top) | (lo > bottom) | (h < lo))
        ok &= ~bad_hl
        bad_vol = ok & (v < 0)
        ok &= ~bad_vol
    # Duplicates among otherwise-valid rows: the first occurrence is kept.
    dup = np.zeros(n, dtype=bool)
    ok_idx = np.flatnonzero(ok)
    if ok_idx.size:
        dup_ok = pd.Series(ts[ok_idx]).duplicated(keep="first").to_numpy()
        dup[ok_idx[dup_ok]] = True
    ok &= ~dup

    rejections: list[Rejection] = []
    if not ok.all():
        for i in np.flatnonzero(~ok).tolist():
            where = _where(what, ts_f[i])
            ts_i = int(ts_f[i]) if np.isfinite(ts_f[i]) else None
            if bad_nan[i]:
                fields = [k for k in CANDLE_COLUMNS if not np.isfinite(ts_f[i] if k == "timestamp" else cols[k][i])]
                vals = ", ".join(f"{k}={ts_f[i] if k == 'timestamp' else cols[k][i]}" for k in fields)
                rule, text = RULE_NAN, f"non-finite value(s) {vals}"
            elif bad_grid[i]:
                rule, text = RULE_OFF_GRID, f"timestamp {ts_f[i]:.0f} is not a multiple of {timeframe} ({tf} ms)"
            elif bad_hl[i]:
                rule = RULE_HIGH_LOW
                if h[i] < top[i]:
                    text = f"high {h[i]} < max(open, close) {top[i]}"
                elif lo[i] > bottom[i]:
                    text = f"low {lo[i]} > min(open, close) {bottom[i]}"
                else:
                    text = f"high {h[i]} < low {lo[i]}"
            elif bad_vol[i]:
                rule, text = RULE_NEGATIVE_VOLUME, f"volume {v[i]} < 0"
            else:
                rule, text = RULE_DUPLICATE, f"duplicate timestamp in batch (row {i}; first occurrence kept)"
            rejections.append(Rejection(market, ts_i, rule, f"{where}: rejected: {text} [{rule}]", i))

    keep = np.flatnonzero(ok)
    order = np.argsort(ts[keep], kind="stable")
    keep = keep[order]
    valid = pd.DataFrame({"timestamp": ts[keep], **{k: cols[k][keep] for k in PRICE_COLUMNS}})
    return valid, rejections


def validate_trades(df: pd.DataFrame, *, market: str) -> tuple[pd.DataFrame, list[Rejection]]:
    """Split a trades frame into (valid rows in input order, rejections): finite, integral timestamp, price > 0,
    amount >= 0. Other columns (side, trade_id) are kept."""
    _require_columns(df, TRADE_COLUMNS, f"{market} trades")
    n = len(df)
    if n == 0:
        return df.reset_index(drop=True), []
    ts_f = _as_float(df, "timestamp", market)
    price = _as_float(df, "price", market)
    amount = _as_float(df, "amount", market)
    finite = np.isfinite(ts_f) & np.isfinite(price) & np.isfinite(amount)
    with np.errstate(invalid="ignore"):
        bad_nan = ~finite | (finite & (ts_f != np.floor(ts_f)))
        bad_price = ~bad_nan & (price <= 0)
        bad_amount = ~bad_nan & ~bad_price & (amount < 0)
    ok = ~(bad_nan | bad_price | bad_amount)
    rejections: list[Rejection] = []
    for i in np.flatnonzero(~ok).tolist():
        where = _where(f"{market} trade", ts_f[i])
        if bad_nan[i]:
            rule, text = RULE_NAN, f"non-finite or fractional value(s) timestamp={ts_f[i]}, price={price[i]}, " \
                f"amount={amount[i]}"
        elif bad_price[i]:
            rule, text = RULE_NON_POSITIVE_PRICE, f"price {price[i]} <= 0"
        else:
            rule, text = RULE_NEGATIVE_AMOUNT, f"amount {amount[i]} < 0"
        ts_i = int(ts_f[i]) if np.isfinite(ts_f[i]) else None
        rejections.append(Rejection(market, ts_i, rule, f"{where}: rejected: {text} [{rule}]", i))
    valid = df.iloc[np.flatnonzero(ok)].reset_index(drop=True)
    valid = valid.assign(
        timestamp=ts_f[ok].astype(np.int64), price=price[ok], amount=amount[ok]
    )
    return valid, rejections
