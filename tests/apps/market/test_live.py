"""CandleBuilder (incremental trades -> candles): fed real trades in batches of any size, it builds exactly what the
batch aggregation builds, and a trade older than the bucket being formed is late, as if trades came one by one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.market.aggregation import trades_to_candles
from apps.market.live import CandleBuilder

TF = 60_000


@pytest.fixture(scope="module")
def xrp():
    from tests.conftest import DATA_DIR

    df = pd.read_csv(DATA_DIR / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz")
    return df["timestamp"].to_numpy(np.int64), df["price"].to_numpy(), df["amount"].to_numpy()


def build(ts, price, amount, sizes) -> tuple[pd.DataFrame, CandleBuilder]:
    start = (int(ts[0]) // TF) * TF
    builder = CandleBuilder("1m", start=start)
    frames, i = [], 0
    for size in sizes:
        closed = builder.add(ts[i:i + size], price[i:i + size], amount[i:i + size])
        i += size
        if closed is not None:
            frames.append(closed.candles)
        if i >= len(ts):
            break
    frames.append(builder.close_due(int(ts[-1]) + TF, 0).candles)
    return pd.concat(frames, ignore_index=True), builder


@pytest.mark.parametrize("batch", [1, 7, 1000, 20_000])
def test_given_real_trades_in_batches_when_built_then_candles_equal_batch_aggregation(xrp, batch):
    ts, price, amount = xrp
    got, builder = build(ts, price, amount, [batch] * (len(ts) // batch + 1))
    want = trades_to_candles(ts, price, amount, "1m")
    assert builder.late == 0 and builder.pending() == 0
    pd.testing.assert_frame_equal(got, want)


def test_given_a_trade_older_than_the_bucket_in_progress_when_added_then_it_is_late_and_not_merged(xrp):
    ts, price, amount = (a[:200].copy() for a in xrp)
    minute = (ts // TF) * TF
    j = int(np.flatnonzero(np.diff(minute))[0]) + 1  # first trade of the second minute
    order = np.r_[np.arange(j + 1), j - 1, np.arange(j + 1, len(ts))]  # a trade of minute 1 again after it
    got, builder = build(ts[order], price[order], amount[order], [len(order)])
    assert builder.late == 1 and builder.late_floor == int(minute[j - 1])
    pd.testing.assert_frame_equal(got, trades_to_candles(ts, price, amount, "1m"))
