"""Provider registry, the CSV provider over the real sample files, and the replay of stored history as a live feed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.market.collector import collect_market
from apps.market.csvio import read_candle_csv, read_trades_csv
from apps.market.models import Market
from apps.market.providers.base import Provider, ProviderError
from apps.market.providers.csv import CsvProvider
from apps.market.providers.registry import available, get_provider, register, unregister
from apps.market.providers.replay import ReplayProvider, replay_into
from apps.market.selectors import candle_frame
from apps.market.services import ingest_candles
from tests.apps.market.test_ccxt_provider import OUTAGE_FIRST_MISSING_OPEN
from tests.apps.market.test_collector import read_messages

OUTAGE_LAST_CLOSE_BEFORE = OUTAGE_FIRST_MISSING_OPEN  # the candle closing at 12:40 is the last before the hole


# --- registry ------------------------------------------------------------------------------------------------------
def test_given_the_registry_when_listing_then_the_three_builtins_are_known_and_others_can_be_added():
    register("h3dummy", lambda **options: CsvProvider(**options))
    try:
        assert {"ccxt", "csv", "replay", "h3dummy"} <= set(available())
        provider = get_provider("h3dummy", path=__file__, time_label="close")
        assert isinstance(provider, Provider)
    finally:
        unregister("h3dummy")
    assert "h3dummy" not in available()
    with pytest.raises(ValueError, match="built-in"):
        unregister("ccxt")


def test_given_an_option_a_provider_does_not_take_when_building_it_then_the_error_names_the_provider():
    with pytest.raises(ProviderError, match=r"provider 'csv' cannot be built with options \['colour', 'path'"):
        get_provider("csv", path=".", time_label="open", colour="red")


# --- csv -----------------------------------------------------------------------------------------------------------
def test_given_a_directory_of_exchange_files_when_fetching_then_pages_equal_the_file_with_close_labels(data_dir):
    provider = get_provider("csv", path=data_dir / "binance_spot_2023", time_label="open", exchange="binance",
                            limit=300)

    pages = list(provider.fetch_candles("ETH/USDT", "1h"))

    expected = read_candle_csv(data_dir / "binance_spot_2023" / "binance_ETH_USDT-1h.csv", timeframe="1h",
                               time_label="open")
    assert [len(p) for p in pages] == [300, 300, 119]
    pd.testing.assert_frame_equal(pd.concat(pages, ignore_index=True), expected)
    assert expected["timestamp"].iat[0] == 1680364800000 + 3600_000  # file's first OPEN time + 1h


def test_given_since_until_and_a_clock_when_fetching_from_csv_then_only_that_window_of_closed_candles(data_dir):
    expected = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-15m.csv", timeframe="15m",
                               time_label="open")
    ts = expected["timestamp"].to_numpy()
    provider = CsvProvider(data_dir / "binance_spot_2023", time_label="open", clock=lambda: int(ts[200]) + 1)

    df = pd.concat(provider.fetch_candles("BTC/USDT", "15m", since=int(ts[100]), until=int(ts[500])),
                   ignore_index=True)

    np.testing.assert_array_equal(df["timestamp"].to_numpy(), ts[101:201])  # (since, now], not up to `until`


def test_given_no_time_label_when_building_a_csv_provider_then_it_refuses_to_guess(data_dir):
    with pytest.raises(ProviderError, match="time_label 'open' or 'close'.*shifts every candle"):
        get_provider("csv", path=data_dir / "binance_spot_2023")


def test_given_a_symbol_without_a_file_when_fetching_from_csv_then_the_error_says_what_was_looked_for(data_dir):
    provider = CsvProvider(data_dir / "binance_spot_2023", time_label="open")

    with pytest.raises(ProviderError, match=r"no file for SOL/USDT 1m in .*binance_spot_2023"):
        list(provider.fetch_candles("SOL/USDT", "1m"))


def test_given_a_trades_file_when_fetching_trades_from_csv_then_since_and_limit_apply(data_dir):
    provider = CsvProvider(data_dir / "freqtrade_xrp_eth", time_label="open")
    all_trades = read_trades_csv(data_dir / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz")
    since = int(all_trades["timestamp"].iat[5000])

    trades = provider.fetch_trades("XRP/ETH", since=since, limit=100)

    assert len(trades) == 100
    assert (trades["timestamp"] >= since).all() and trades["timestamp"].is_monotonic_increasing
    expected_ids = all_trades.loc[all_trades["timestamp"] >= since, "trade_id"].iloc[:100]
    assert trades["trade_id"].tolist() == expected_ids.tolist()


# --- replay --------------------------------------------------------------------------------------------------------
@pytest.fixture
def stored_around_outage(data_dir, db) -> pd.DataFrame:
    """20 real 1m candles stored as exchange 'binance': 10 before the 2023-03-24 outage hole, 10 after it."""
    full = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe="1m",
                           time_label="open")
    i = int(np.flatnonzero(full["timestamp"].to_numpy() == OUTAGE_LAST_CLOSE_BEFORE)[0])
    frame = full.iloc[i - 9 : i + 11].reset_index(drop=True)
    ingest_candles(exchange="binance", symbol="BTC/USDT", timeframe="1m", df=frame, publish=False)
    return frame


def test_given_stored_history_when_replaying_at_60x_then_candles_in_order_and_sleeps_scaled(stored_around_outage):
    slept: list[float] = []
    provider = ReplayProvider("binance", speed=60, sleep=slept.append, limit=7)

    rows = list(provider.feed("BTC/USDT", "1m"))

    assert [int(r["timestamp"].iat[0]) for r in rows] == stored_around_outage["timestamp"].tolist()
    assert all(len(r) == 1 for r in rows)
    assert slept == [1.0] * 9 + [81.0] + [1.0] * 9  # 60 s per candle / 60, and the 81-minute hole / 60


def test_given_no_speed_when_replaying_then_no_sleep_at_all(stored_around_outage):
    slept: list[float] = []

    rows = list(ReplayProvider("binance", speed=None, sleep=slept.append).feed("BTC/USDT", "1m",
                                                                                 since=OUTAGE_LAST_CLOSE_BEFORE))

    assert len(rows) == 10 and slept == []


def test_given_a_replay_market_when_collecting_with_step_3_then_each_round_serves_the_next_three(stored_around_outage):
    market = Market.objects.create(exchange="replay", symbol="BTC/USDT", timeframe="1m", provider="replay")

    first = collect_market(market.pk, provider=ReplayProvider("binance", step=3))
    second = collect_market(market.pk, provider=ReplayProvider("binance", step=3))

    source = stored_around_outage["timestamp"].tolist()
    assert first.new_timestamps == source[:3] and second.new_timestamps == source[3:6]
    pd.testing.assert_frame_equal(candle_frame(exchange="replay", symbol="BTC/USDT", timeframe="1m"),
                                  stored_around_outage.iloc[:6].reset_index(drop=True))


def test_given_stored_history_when_replaying_into_another_exchange_then_each_candle_is_published_live(
    stored_around_outage, redis_client, django_capture_on_commit_callbacks
):
    pubsub = redis_client.pubsub()
    pubsub.subscribe("market:BTC/USDT")
    pubsub.get_message(timeout=2)

    with django_capture_on_commit_callbacks(execute=True):
        report = replay_into("BTC/USDT", "1m", source="binance", target="h3replay")

    messages = read_messages(pubsub, 20, "h3replay")
    pubsub.close()
    assert (report.emitted, report.stored, report.rejected) == (20, 20, 0)
    assert [m["timestamp"] for m in messages] == stored_around_outage["timestamp"].tolist()
    assert [m["close"] for m in messages] == stored_around_outage["close"].tolist()
    again = replay_into("BTC/USDT", "1m", source="binance", target="h3replay")
    assert (again.emitted, again.stored) == (20, 0)  # idempotent: nothing new the second time


@pytest.mark.parametrize(
    ("options", "message"),
    [({"speed": 0}, "speed must be > 0"), ({"step": 0}, "step must be >= 1"),
     ({"exchange": "binance"}, "source and target are both 'binance'")],
)
def test_given_bad_replay_options_when_building_then_clear_error(options, message):
    with pytest.raises(ProviderError, match=message):
        ReplayProvider("binance", **options)
