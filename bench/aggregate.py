"""Benchmark: 10,000,000 trades -> 1m candles. Prints ONE JSON line.

Compares our one-pass numba kernel (`trades_to_candles`, DataFrame out) with pandas resample (with and without
building the DataFrame) and numpy searchsorted + reduceat, all timed in this run (medians of 3 after a warm-up; input
generated before timing). Open/high/low/close/timestamps must be bit-identical to pandas; the volume is a sum in
another order (pandas uses Kahan summation, so do we) and is reported as the max relative difference.

Run: `.venv/bin/python bench/aggregate.py [--n 10000000]` (no database, no Django settings needed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.market.aggregation import trades_to_candles  # noqa: E402

TF_MS = 60_000


def make_trades(n: int, seed: int = 20231124) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """~86 ms mean spacing with ~20 % of trades sharing the previous trade's millisecond; random-walk prices."""
    rng = np.random.default_rng(seed)
    gaps = np.rint(rng.exponential(86.0 / 0.8, n)).astype(np.int64)
    gaps[rng.random(n) < 0.2] = 0
    ts = 1_700_000_000_000 + np.cumsum(gaps)
    price = np.round(30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-5, n))), 2)
    amount = np.round(rng.exponential(0.05, n), 8) + 1e-8
    return ts, price, amount


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0, out


def pandas_frame(ts, price, amount) -> pd.DataFrame:
    return pd.DataFrame({"price": price, "amount": amount}, index=pd.to_datetime(ts, unit="ms"))


def pandas_resample(df: pd.DataFrame) -> pd.DataFrame:
    r = df.resample("1min", closed="left", label="right")
    out = pd.DataFrame(
        {
            "open": r["price"].first(),
            "high": r["price"].max(),
            "low": r["price"].min(),
            "close": r["price"].last(),
            "volume": r["amount"].sum(),
        }
    )
    out = out.loc[out["open"].notna()]
    out.insert(0, "timestamp", out.index.as_unit("ms").asi8)
    return out.reset_index(drop=True)


def numpy_reduceat(ts, price, amount):
    first = ts[0] // TF_MS * TF_MS
    edges = np.arange(first, ts[-1] + TF_MS, TF_MS, dtype=np.int64)
    starts = np.searchsorted(ts, edges, side="left")
    starts = np.unique(starts[starts < len(ts)])
    ends = np.append(starts[1:], len(ts))
    return (
        ts[starts] // TF_MS * TF_MS + TF_MS,
        price[starts],
        np.maximum.reduceat(price, starts),
        np.minimum.reduceat(price, starts),
        price[ends - 1],
        np.add.reduceat(amount, starts),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000_000)
    n = parser.parse_args().n
    ts, price, amount = make_trades(n)

    t0 = time.perf_counter()
    trades_to_candles(ts[:1000], price[:1000], amount[:1000], "1m")  # first call: compile (or load the numba cache)
    compile_s = time.perf_counter() - t0

    ours_ms, ours = timed(lambda: trades_to_candles(ts, price, amount, "1m"))
    pandas_ms, ref = timed(lambda: pandas_resample(pandas_frame(ts, price, amount)))
    prebuilt = pandas_frame(ts, price, amount)
    pandas_only_ms, _ = timed(lambda: pandas_resample(prebuilt))
    numpy_ms, npy = timed(lambda: numpy_reduceat(ts, price, amount))

    identical = len(ours) == len(ref) and all(
        np.array_equal(ours[c].to_numpy(), ref[c].to_numpy()) for c in ("timestamp", "open", "high", "low", "close")
    )
    numpy_identical = all(
        np.array_equal(a, ref[c].to_numpy())
        for a, c in zip(npy[:5], ("timestamp", "open", "high", "low", "close"), strict=True)
    )
    vol_ref = ref["volume"].to_numpy()
    rel = np.abs(ours["volume"].to_numpy() - vol_ref) / np.abs(vol_ref)
    print(
        json.dumps(
            {
                "bench": "aggregate",
                "n_trades": n,
                "n_candles": len(ours),
                "shared_ms_fraction": round(float(np.mean(np.diff(ts) == 0)), 4),
                "ours_ms": round(ours_ms, 2),
                "pandas_ms": round(pandas_ms, 2),
                "pandas_resample_only_ms": round(pandas_only_ms, 2),
                "numpy_reduceat_ms": round(numpy_ms, 2),
                "speedup_vs_pandas": round(pandas_ms / ours_ms, 2),
                "speedup_vs_pandas_resample_only": round(pandas_only_ms / ours_ms, 2),
                "speedup_vs_numpy": round(numpy_ms / ours_ms, 2),
                "identical_ohlc": bool(identical),
                "numpy_identical_ohlc": bool(numpy_identical),
                "max_volume_rel_err": float(rel.max()),
                "volume_tolerance": 1e-12,
                "compile_s": round(compile_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
