"""New closed candles reach a REAL Redis subscriber on market:{symbol} after commit, exactly once, never on rollback.

Absence is proven without timing: after the action the test publishes a sentinel on the same channel and reads up to
it; Redis delivers one channel's messages in publish order, so anything published before the sentinel is seen first.
"""

from __future__ import annotations

import uuid

import orjson
import pandas as pd
import pytest
from django.db import transaction

from apps.market.csvio import read_candle_csv
from apps.market.models import Candle, Market
from apps.market.services import announce_together, ingest_candles
from apps.market.signals import candles_closed

pytestmark = pytest.mark.django_db(transaction=True)

EXCHANGE = "pubsub-binance"  # unique exchange: other suites may publish on market:BTC/USDT concurrently
SYMBOL = "BTC/USDT"
CHANNEL = "market:BTC/USDT"


@pytest.fixture
def btc_1m(data_dir) -> pd.DataFrame:
    return read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe="1m",
                           time_label="open").iloc[:20].reset_index(drop=True)


@pytest.fixture
def subscriber(redis_client):
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    assert pubsub.get_message(timeout=10) is None  # consumes the subscribe confirmation

    def drain() -> list[dict]:
        """Candle payloads of our exchange published so far (reads up to a fresh sentinel)."""
        sentinel = uuid.uuid4().hex
        redis_client.publish(CHANNEL, orjson.dumps({"sentinel": sentinel}))
        got: list[dict] = []
        for _ in range(100_000):
            msg = pubsub.get_message(timeout=30)
            assert msg is not None, "sentinel never arrived"
            payload = orjson.loads(msg["data"])
            if payload.get("sentinel") == sentinel:
                return got
            if payload.get("exchange") == EXCHANGE:
                got.append(payload)
        raise AssertionError("sentinel never arrived")

    yield drain
    pubsub.close()


def _expected(df: pd.DataFrame) -> list[dict]:
    return [
        {"exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1m", "timestamp": int(r.timestamp), "open": r.open,
         "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
        for r in df.itertuples()
    ]


def test_given_subscriber_when_new_candles_committed_then_each_arrives_once_as_json_in_order(btc_1m, subscriber):
    ingest_candles(exchange=EXCHANGE, symbol=SYMBOL, timeframe="1m", df=btc_1m.iloc[:10])
    first = subscriber()
    ingest_candles(exchange=EXCHANGE, symbol=SYMBOL, timeframe="1m", df=btc_1m)  # 10 known + 10 new
    second = subscriber()
    ingest_candles(exchange=EXCHANGE, symbol=SYMBOL, timeframe="1m", df=btc_1m)  # all known
    third = subscriber()

    assert first == _expected(btc_1m.iloc[:10])
    assert first[0]["timestamp"] == 1679004960000
    assert second == _expected(btc_1m.iloc[10:])
    assert third == []


def test_given_open_transaction_when_ingested_then_published_only_after_commit(btc_1m, subscriber):
    with transaction.atomic():
        ingest_candles(exchange=EXCHANGE, symbol=SYMBOL, timeframe="1m", df=btc_1m.iloc[:5])
        during = subscriber()
    after = subscriber()
    assert during == []
    assert after == _expected(btc_1m.iloc[:5])


def test_given_rollback_when_ingested_then_nothing_published_nothing_signalled_nothing_stored(btc_1m, subscriber):
    calls: list[list[int]] = []

    def receiver(sender, closed, **kwargs):
        calls.extend(timestamps for _, timestamps in closed)

    candles_closed.connect(receiver)
    try:
        with pytest.raises(RuntimeError), transaction.atomic():
            ingest_candles(exchange=EXCHANGE, symbol=SYMBOL, timeframe="1m", df=btc_1m)
            raise RuntimeError("crash before commit")
    finally:
        candles_closed.disconnect(receiver)

    assert subscriber() == []
    assert calls == []
    assert Candle.objects.filter(exchange=EXCHANGE).count() == 0


def test_given_receiver_when_candles_committed_then_signal_carries_market_and_new_timestamps(btc_1m, subscriber):
    calls: list[tuple[Market, list[int]]] = []

    def receiver(sender, closed, **kwargs):
        calls.extend(closed)

    def broken(sender, **kwargs):
        raise ValueError("a broken receiver must not undo or block the ingest")

    candles_closed.connect(receiver)
    candles_closed.connect(broken)
    try:
        ingest_candles(exchange=EXCHANGE, symbol=SYMBOL, timeframe="1m", df=btc_1m.iloc[:3])
        ingest_candles(exchange=EXCHANGE, symbol=SYMBOL, timeframe="1m", df=btc_1m.iloc[:4])
    finally:
        candles_closed.disconnect(receiver)
        candles_closed.disconnect(broken)

    ts = btc_1m["timestamp"].tolist()
    assert [(m.exchange, m.symbol, m.timeframe) for m, _ in calls] == [(EXCHANGE, SYMBOL, "1m")] * 2
    assert [t for _, t in calls] == [ts[:3], ts[3:4]]
    assert len(subscriber()) == 4
    assert Candle.objects.filter(exchange=EXCHANGE).count() == 4


def test_given_publish_false_when_ingested_then_stored_but_silent(btc_1m, subscriber):
    result = ingest_candles(exchange=EXCHANGE, symbol=SYMBOL, timeframe="1m", df=btc_1m, publish=False)
    assert len(result.new_timestamps) == 20
    assert subscriber() == []


def test_given_markets_stored_together_when_the_block_ends_then_one_signal_carries_the_committed_ones(btc_1m):
    calls: list[list[tuple[str, list[int]]]] = []

    def receiver(sender, closed, **kwargs):
        calls.append([(m.exchange, timestamps) for m, timestamps in closed])

    candles_closed.connect(receiver)
    try:
        with announce_together():
            with transaction.atomic():
                ingest_candles(exchange="binance", symbol="ETH/USDT", timeframe="1m", df=btc_1m.iloc[:2])
                with pytest.raises(RuntimeError), transaction.atomic():  # a market whose write failed: not announced
                    ingest_candles(exchange="binance", symbol="SOL/USDT", timeframe="1m", df=btc_1m.iloc[:2])
                    raise RuntimeError("this market's savepoint rolls back")
                ingest_candles(exchange="kraken", symbol="ETH/USDT", timeframe="1m", df=btc_1m.iloc[:3])
            assert calls == []  # committed and published, announced when the block ends
            ingest_candles(exchange="binance", symbol="ETH/USDT", timeframe="1m", df=btc_1m.iloc[2:3])  # joins it
    finally:
        candles_closed.disconnect(receiver)

    ts = btc_1m["timestamp"].tolist()
    assert calls == [[("binance", ts[:2]), ("kraken", ts[:3]), ("binance", ts[2:3])]]
    assert not Candle.objects.filter(symbol="SOL/USDT").exists()
