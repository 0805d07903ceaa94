"""Monthly raw_trades partitions on real PostgreSQL: created on demand, idempotent, visible in the catalog."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from django.db import connection

from apps.market.csvio import read_trades_csv
from apps.market.models import RawTrade
from apps.market.partitions import create_partitions_ahead, ensure_raw_trade_partitions, existing_partitions
from apps.market.services import ingest_trades, ingest_trades_detailed, ingest_trades_many
from apps.market.upsert import TradeFrame

pytestmark = pytest.mark.django_db


def _bounds(name: str) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c WHERE c.relname = %s", [name])
        return cur.fetchone()[0]


@pytest.fixture
def xrp_trades(data_dir) -> pd.DataFrame:
    return read_trades_csv(data_dir / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz")


def test_given_a_month_when_partitions_ensured_then_catalog_shows_it_with_month_bounds_and_repeat_is_noop():
    oct_2019 = int(datetime(2019, 10, 11, tzinfo=UTC).timestamp() * 1000)
    nov_2019 = int(datetime(2019, 11, 30, 23, 59, tzinfo=UTC).timestamp() * 1000)

    created = ensure_raw_trade_partitions(oct_2019, nov_2019)

    assert created == ["raw_trades_y2019m10", "raw_trades_y2019m11"]
    assert {"raw_trades_y2019m10", "raw_trades_y2019m11"} <= set(existing_partitions())
    assert _bounds("raw_trades_y2019m10") == "FOR VALUES FROM ('1569888000000') TO ('1572566400000')"
    assert ensure_raw_trade_partitions(oct_2019, nov_2019) == []


def test_given_real_trades_in_a_new_month_when_ingested_then_partition_created_on_demand(xrp_trades):
    assert "raw_trades_y2019m10" not in existing_partitions()

    result = ingest_trades_detailed(exchange="binance", symbol="XRP/ETH", df=xrp_trades)

    assert (result.received, result.inserted, result.rejected) == (12477, 12477, [])
    assert result.partitions_created == ["raw_trades_y2019m10"]
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM raw_trades_y2019m10")
        assert cur.fetchone()[0] == 12477
    first = RawTrade.objects.get(exchange="binance", symbol="XRP/ETH", trade_id="13519807")
    assert (first.timestamp, first.price, first.amount, first.side) == (1570752011620, 0.00141342, 23.0, "sell")


def test_given_stored_trades_when_reingested_then_nothing_inserted(xrp_trades):
    assert ingest_trades(exchange="binance", symbol="XRP/ETH", df=xrp_trades.iloc[:1000]) == 1000
    assert ingest_trades(exchange="binance", symbol="XRP/ETH", df=xrp_trades) == 11477
    assert ingest_trades(exchange="binance", symbol="XRP/ETH", df=xrp_trades) == 0
    assert RawTrade.objects.filter(symbol="XRP/ETH").count() == 12477


def test_given_trades_of_two_distant_months_when_ingested_then_only_those_months_get_partitions(data_dir, xrp_trades):
    kraken = read_trades_csv(data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv")
    both = pd.concat([xrp_trades.iloc[:10], kraken.iloc[:10]], ignore_index=True)

    result = ingest_trades_detailed(exchange="mixed", symbol="X/Y", df=both)

    assert result.partitions_created == ["raw_trades_y2019m10", "raw_trades_y2025m11"]
    assert "raw_trades_y2020m01" not in existing_partitions()
    assert result.inserted == 20


def test_given_months_ahead_when_created_then_current_and_next_months_exist():
    now = datetime.now(tz=UTC)
    create_partitions_ahead(3)
    names = set(existing_partitions())
    y, m = now.year, now.month
    for _ in range(4):
        assert f"raw_trades_y{y:04d}m{m:02d}" in names
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    assert create_partitions_ahead(3) == []


def test_given_sides_in_other_spellings_and_long_ids_when_ingested_then_stored_normalized(xrp_trades):
    trades = xrp_trades.iloc[:6].copy()
    trades["side"] = [" Buy", "SELL", "b", "s", None, "liquidation"]
    trades["trade_id"] = trades["trade_id"].astype(str)
    trades.loc[trades.index[0], "trade_id"] = "x" * 80

    assert ingest_trades(exchange="binance", symbol="XRP/ETH", df=trades) == 6

    stored = dict(RawTrade.objects.filter(symbol="XRP/ETH").values_list("trade_id", "side"))
    ids = ["x" * 64, *trades["trade_id"].iloc[1:]]
    assert [stored[i] for i in ids] == ["buy", "sell", "buy", "sell", "", ""]


def test_given_two_markets_when_trades_ingested_together_then_each_counts_its_own_new_trades(xrp_trades):
    ingest_trades(exchange="binance", symbol="XRP/ETH", df=xrp_trades.iloc[:1000])
    other = xrp_trades.iloc[:500].copy()
    other.loc[3, "price"] = -1.0  # one bad row: refused for this market only

    xrp, copy = ingest_trades_many([TradeFrame("binance", "XRP/ETH", xrp_trades.iloc[:3000]),
                                    TradeFrame("binance", "XRP/COPY", other)])

    assert (xrp.received, xrp.inserted, xrp.rejected) == (3000, 2000, [])
    assert (copy.received, copy.inserted, len(copy.rejected)) == (500, 499, 1)
    bad = copy.rejected[0]
    assert (bad.row, bad.market) == (3, "binance XRP/COPY") and "price" in bad.message
    assert RawTrade.objects.filter(symbol="XRP/ETH").count() == 3000
    assert sorted(RawTrade.objects.filter(symbol="XRP/COPY").values_list("trade_id", flat=True)) == sorted(
        other.drop(index=3)["trade_id"].astype(str))


def test_given_two_markets_in_different_months_when_ingested_together_then_each_lists_only_its_own_partitions(
        data_dir, xrp_trades):
    kraken = read_trades_csv(data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv")

    xrp, xbt = ingest_trades_many([TradeFrame("binance", "XRP/ETH", xrp_trades.iloc[:10]),
                                   TradeFrame("kraken", "XBT/USDT", kraken.iloc[:10])])

    assert (xrp.partitions_created, xbt.partitions_created) == (["raw_trades_y2019m10"], ["raw_trades_y2025m11"])
    assert (xrp.inserted, xbt.inserted) == (10, 10)
