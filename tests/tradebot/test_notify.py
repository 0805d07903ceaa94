"""tradebot.notify on a real Redis: a batch larger than one script call arrives whole, once and in publish order, also
after Redis lost the script (a restart empties its script cache)."""

from __future__ import annotations

import uuid

import orjson

from apps.market.csvio import read_candle_csv
from tradebot.notify import PUBLISH_CHUNK, publish_many


def test_given_more_messages_than_one_call_when_published_as_a_batch_then_each_arrives_once_in_order(
        redis_client, data_dir, settings):
    settings.NOTIFY_BACKEND = "redis"
    candles = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe="1m",
                              time_label="open").iloc[:2 * PUBLISH_CHUNK + 7]
    channels = [f"notify-test:{uuid.uuid4().hex}:{k}" for k in range(3)]
    messages = [(channels[i % 3], {"timestamp": int(c.timestamp), "close": c.close, "volume": c.volume})
                for i, c in enumerate(candles.itertuples())]
    pubsub = redis_client.pubsub()
    pubsub.subscribe(*channels)
    try:
        assert [pubsub.get_message(timeout=10)["type"] for _ in channels] == ["subscribe"] * 3
        publish_many(messages[:PUBLISH_CHUNK])
        redis_client.script_flush()
        publish_many(messages[PUBLISH_CHUNK:])
        got = []
        while len(got) < len(messages):
            msg = pubsub.get_message(timeout=10)
            assert msg is not None, f"only {len(got)} of {len(messages)} messages arrived"
            got.append((msg["channel"].decode(), orjson.loads(msg["data"])))
        assert got == messages and pubsub.get_message(timeout=0.2) is None
    finally:
        pubsub.close()
