"""ingest_candles / resample_stored / get_or_create_market on real PostgreSQL with the real Binance sample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from django.db import transaction

from apps.market.csvio import read_candle_csv
from apps.market.models import Candle, Market
from apps.market.selectors import candle_frame, last_candle_timestamp
from apps.market.services import (
    CandleBatch,
    StaleLeaseError,
    get_or_create_market,
    ingest_candles,
    ingest_candles_many,
    resample_stored,
)
from apps.market.timeframes import TimeframeError

pytestmark = pytest.mark.django_db

EX, SYM = "binance", "BTC/USDT"


@pytest.fixture
def btc_1m(data_dir) -> pd.DataFrame:
    return read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe="1m",
                           time_label="open")


def _stored(timeframe: str = "1m") -> pd.DataFrame:
    return candle_frame(exchange=EX, symbol=SYM, timeframe=timeframe)


def test_given_real_binance_1m_when_ingested_then_every_row_stored_with_close_labels(
    btc_1m, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=btc_1m)

    assert (result.received, result.stored, result.rejected, result.updated) == (66087, 66087, [], 0)
    assert len(result.new_timestamps) == 66087
    assert result.new_timestamps == sorted(result.new_timestamps)
    assert Candle.objects.filter(exchange=EX, symbol=SYM, timeframe="1m").count() == 66087
    first = Candle.objects.filter(exchange=EX, symbol=SYM, timeframe="1m").order_by("timestamp").first()
    # file row 1: open time 1679004900000, 24899.18, 24943.98, 24896.29, 24934.2, 293.13711
    assert first.timestamp == 1679004960000
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        24899.18, 24943.98, 24896.29, 24934.2, 293.13711)
    assert last_candle_timestamp(EX, SYM, "1m") == 1682974860000 + 60_000
    pd.testing.assert_frame_equal(_stored(), btc_1m)
    assert Market.objects.filter(exchange=EX, symbol=SYM, timeframe="1m").count() == 1
    assert len(callbacks) == 1  # one publish of the new candles, scheduled after commit


def test_given_stored_data_when_reingested_then_nothing_changes_and_nothing_is_announced(
    btc_1m, django_capture_on_commit_callbacks
):
    ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=btc_1m)
    before = _stored()
    ids_before = list(Candle.objects.order_by("timestamp").values_list("id", flat=True)[:100])

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        again = ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=btc_1m)

    assert (again.received, again.stored, again.new_timestamps, again.updated) == (66087, 66087, [], 0)
    assert callbacks == []
    pd.testing.assert_frame_equal(_stored(), before)
    assert list(Candle.objects.order_by("timestamp").values_list("id", flat=True)[:100]) == ids_before


def test_given_changed_candle_when_reingested_then_updated_in_place_and_not_new(btc_1m):
    ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=btc_1m.iloc[:50])
    corrected = btc_1m.iloc[10:12].copy()
    corrected["volume"] = corrected["volume"] + 1.0

    result = ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=corrected)

    assert (result.new_timestamps, result.updated, result.stored) == ([], 2, 2)
    stored = _stored()
    assert len(stored) == 50
    np.testing.assert_array_equal(stored["volume"].iloc[10:12].to_numpy(), corrected["volume"].to_numpy())
    assert "2 updated" in result.summary()


def test_given_corrupted_rows_when_ingested_then_rejected_by_name_and_rest_stored(btc_1m):
    df = btc_1m.iloc[:100].copy()
    df.loc[3, "open"] = np.nan
    df.loc[10, "high"] = df.loc[10, "low"] - 5.0
    df.loc[20, "volume"] = -2.0
    df.loc[30, "timestamp"] = df.loc[30, "timestamp"] + 30_000

    result = ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=df)

    assert sorted((r.row, r.rule) for r in result.rejected) == [
        (3, "nan"), (10, "high_low"), (20, "negative_volume"), (30, "off_grid")]
    assert all(r.message.startswith("binance BTC/USDT 1m @ ") for r in result.rejected)
    assert (result.received, result.stored, len(result.new_timestamps)) == (100, 96, 96)
    stored = _stored()
    assert len(stored) == 96
    rejected_ts = {int(btc_1m.loc[i, "timestamp"]) for i in (3, 10, 20, 30)}
    assert rejected_ts.isdisjoint(stored["timestamp"].tolist())


def test_given_batch_when_outer_transaction_rolls_back_then_nothing_stored(btc_1m):
    with pytest.raises(RuntimeError), transaction.atomic():
        ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=btc_1m.iloc[:500])
        assert Candle.objects.count() == 500
        raise RuntimeError("crash after the upsert")
    assert Candle.objects.count() == 0
    assert not Market.objects.filter(exchange=EX, symbol=SYM).exists()


def test_given_unknown_timeframe_when_ingested_then_timeframe_error_and_nothing_stored(btc_1m):
    with pytest.raises(TimeframeError, match="unknown timeframe '3m'"):
        ingest_candles(exchange=EX, symbol=SYM, timeframe="3m", df=btc_1m.iloc[:10])
    assert Candle.objects.count() == 0


def test_given_stored_1m_when_resampled_to_5m_then_equals_binance_own_5m_candles(btc_1m, data_dir):
    ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=btc_1m, publish=False)
    exchange_5m = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-5m.csv.gz", timeframe="5m",
                                  time_label="open")

    result = resample_stored(exchange=EX, symbol=SYM, source_tf="1m", target_tf="5m", publish=False)

    ours = _stored("5m")
    assert result.rejected == [] and len(result.new_timestamps) == len(ours)
    both = ours.merge(exchange_5m, on="timestamp", suffixes=("", "_ex"))
    # complete buckets only: the outage's partial buckets are not built, everything built matches Binance
    assert len(both) == len(ours) > 13_000
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(both[col].to_numpy(), both[f"{col}_ex"].to_numpy())
    np.testing.assert_allclose(both["volume"].to_numpy(), both["volume_ex"].to_numpy(), rtol=1e-9, atol=1e-6)


def test_given_resampled_market_when_resampled_again_then_nothing_new(btc_1m):
    ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=btc_1m.iloc[:3000], publish=False)
    first = resample_stored(exchange=EX, symbol=SYM, target_tf="1h", publish=False)
    ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=btc_1m.iloc[3000:4000], publish=False)

    second = resample_stored(exchange=EX, symbol=SYM, target_tf="1h", publish=False)
    third = resample_stored(exchange=EX, symbol=SYM, target_tf="1h", publish=False)

    assert len(first.new_timestamps) > 40
    assert second.new_timestamps and min(second.new_timestamps) > max(first.new_timestamps)
    assert third.new_timestamps == [] and third.updated == 0
    assert len(_stored("1h")) == len(first.new_timestamps) + len(second.new_timestamps)


def test_given_existing_market_when_get_or_create_with_options_then_updated_once():
    m1 = get_or_create_market(EX, SYM, "1m")
    m2 = get_or_create_market(EX, SYM, "1m", watched=True, provider="replay")
    assert m1.pk == m2.pk
    m1.refresh_from_db()
    assert (m1.watched, m1.provider) == (True, "replay")
    with pytest.raises(TimeframeError):
        get_or_create_market(EX, SYM, "7m")


@pytest.mark.django_db(transaction=True)
def test_given_concurrent_writer_when_fresh_insert_collides_then_falls_back_to_upsert(btc_1m):
    """Another connection inserts a candle of the batch's range and commits while our plain INSERT waits on it."""
    import threading
    import time

    import psycopg2
    from django.db import connection, connections

    batch = btc_1m.iloc[:100]
    x = batch.iloc[50]
    s = connection.settings_dict
    other = psycopg2.connect(host=s["HOST"], port=s["PORT"], user=s["USER"], dbname=s["NAME"])
    with other.cursor() as cur:  # uncommitted: invisible to our existence check, but holds the unique key
        cur.execute(
            "INSERT INTO market_data (exchange, symbol, timeframe, timestamp, open, high, low, close, volume) "
            "VALUES (%s, %s, '1m', %s, %s, %s, %s, %s, %s)",
            [EX, SYM, int(x.timestamp), *(float(x[c]) for c in ("open", "high", "low", "close")), float(x.volume) + 1],
        )
    out: dict = {}

    def ingest() -> None:
        try:
            out["result"] = ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=batch, publish=False)
        finally:
            connections.close_all()

    worker = threading.Thread(target=ingest)
    worker.start()
    watcher = psycopg2.connect(host=s["HOST"], port=s["PORT"], user=s["USER"], dbname=s["NAME"])
    watcher.autocommit = True  # pg_stat_activity is a per-transaction snapshot: poll outside a transaction
    with watcher.cursor() as cur:
        for _ in range(6000):  # wait (bounded) until our INSERT blocks on the other transaction's row
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                        "AND query LIKE 'INSERT INTO market_data%%'", [s["NAME"]])
            if cur.fetchone()[0]:
                break
            time.sleep(0.01)
        else:
            other.rollback()
            raise AssertionError("the ingest never waited on the concurrent row")
    watcher.close()
    other.commit()
    other.close()
    worker.join()

    result = out["result"]
    assert int(x.timestamp) not in result.new_timestamps
    assert (len(result.new_timestamps), result.updated, result.stored) == (99, 1, 100)
    pd.testing.assert_frame_equal(_stored(), batch.reset_index(drop=True))


# --- market_create / market_watch / market_unwatch ----------------------------------------------------------------

def test_given_a_new_market_when_watched_then_created_watched_with_the_default_provider_and_idempotent():
    from apps.market.services import market_unwatch, market_watch

    first = market_watch(exchange="binance", symbol="SOL/USDT", timeframe="1h")
    again = market_watch(exchange="binance", symbol="SOL/USDT", timeframe="1h")

    assert first.pk == again.pk and again.watched and again.provider == "ccxt"
    assert market_watch(exchange="replay", symbol="SOL/USDT", timeframe="1h").provider == "replay"
    assert market_unwatch(market=again).watched is False
    assert Market.objects.filter(symbol="SOL/USDT", exchange="binance").count() == 1


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"provider": "nonexistent"}, "provider"),
    ({"exchange": "nosuchexchange"}, "exchange"),
    ({"symbol": "SOLUSDT"}, "symbol"),
    ({"timeframe": "2h"}, "timeframe"),
])
def test_given_a_market_no_provider_can_serve_when_watched_or_created_then_refused_naming_the_field(kwargs, field):
    from apps.common.errors import ApplicationError
    from apps.market.services import market_create, market_watch

    market = {"exchange": "binance", "symbol": "SOL/USDT", "timeframe": "1h", **kwargs}
    for service in (market_watch, market_create):
        with pytest.raises(ApplicationError) as err:
            service(**market)
        assert err.value.field == field
    assert not Market.objects.filter(symbol__startswith="SOL").exists()


def test_given_replay_candles_when_ingest_creates_the_market_then_it_gets_the_replay_provider(btc_1m):
    """A market first seen by ingest gets the provider registered for its exchange (a `replay` market recorded with
    provider ccxt made `collect` fail with "unknown ccxt exchange id 'replay'")."""
    from apps.market.providers.registry import register, unregister

    ingest_candles(exchange="replay", symbol=SYM, timeframe="1m", df=btc_1m.iloc[:5], publish=False)
    ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=btc_1m.iloc[:5], publish=False)
    register("h10feed", lambda **_: None, exchanges=("h10feed",))
    try:
        ingest_candles(exchange="h10feed", symbol=SYM, timeframe="1m", df=btc_1m.iloc[:5], publish=False)
    finally:
        unregister("h10feed")

    providers = dict(Market.objects.filter(symbol=SYM, timeframe="1m").values_list("exchange", "provider"))
    assert providers == {"replay": "replay", EX: "ccxt", "h10feed": "h10feed"}
    assert get_or_create_market("h10feed", SYM, "1m").provider == "h10feed"  # an existing row keeps its provider


@pytest.fixture
def eth_1m(data_dir) -> pd.DataFrame:
    return read_candle_csv(data_dir / "binance_spot_2023" / "binance_ETH_USDT-1m.csv.gz", timeframe="1m",
                           time_label="open")


def test_given_two_markets_when_ingested_together_then_each_gets_its_own_new_and_corrected_candles(
    btc_1m, eth_1m, django_capture_on_commit_callbacks
):
    ingest_candles(exchange=EX, symbol="ETH/USDT", timeframe="1m", df=eth_1m.iloc[:50])
    eth_batch = eth_1m.iloc[40:60].copy()
    eth_batch.loc[45, "close"] = eth_batch.loc[45, "high"]  # a correction (as a late trade makes one)
    btc, eth = get_or_create_market(EX, SYM, "1m"), get_or_create_market(EX, "ETH/USDT", "1m")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        got_btc, got_eth = ingest_candles_many([CandleBatch(btc, btc_1m.iloc[:20]), CandleBatch(eth, eth_batch)])

    assert got_btc.new_timestamps == btc_1m["timestamp"].iloc[:20].tolist()
    assert (got_btc.updated, got_btc.updated_timestamps) == (0, [])
    assert got_eth.new_timestamps == eth_1m["timestamp"].iloc[50:60].tolist()
    assert (got_eth.updated, got_eth.updated_timestamps) == (1, [int(eth_1m["timestamp"].iat[45])])
    pd.testing.assert_frame_equal(_stored(), btc_1m.iloc[:20])
    expected_eth = pd.concat([eth_1m.iloc[:40], eth_batch], ignore_index=True)
    pd.testing.assert_frame_equal(candle_frame(exchange=EX, symbol="ETH/USDT", timeframe="1m"), expected_eth)
    assert len(callbacks) == 2  # each market announced after the one commit


def test_given_a_stale_lease_in_a_batch_when_ingested_together_then_only_that_market_is_refused(btc_1m, eth_1m):
    btc, eth = get_or_create_market(EX, SYM, "1m"), get_or_create_market(EX, "ETH/USDT", "1m")
    Market.objects.filter(pk=eth.pk).update(stream_fence=5)  # another process took ETH over with token 5

    got_btc, got_eth = ingest_candles_many([CandleBatch(btc, btc_1m.iloc[:10], fence=3),
                                            CandleBatch(eth, eth_1m.iloc[:10], fence=4)])

    assert isinstance(got_eth, StaleLeaseError) and got_eth.field == "fence"
    assert "lease token 4 is stale (market fenced at 5)" in str(got_eth)
    assert not Candle.objects.filter(symbol="ETH/USDT").exists()
    assert got_btc.new_timestamps == btc_1m["timestamp"].iloc[:10].tolist()
    assert Market.objects.get(pk=btc.pk).stream_fence == 3  # the owner's first write raises the fence
    assert Market.objects.get(pk=eth.pk).stream_fence == 5


def test_given_one_market_twice_when_ingested_together_then_refused_and_nothing_stored(btc_1m):
    btc = get_or_create_market(EX, SYM, "1m")

    with pytest.raises(ValueError, match="one frame per market"):
        ingest_candles_many([CandleBatch(btc, btc_1m.iloc[:10]), CandleBatch(btc, btc_1m.iloc[10:20])])

    assert not Candle.objects.exists()
