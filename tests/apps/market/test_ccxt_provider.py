"""The ccxt provider, driven through ccxt's own request building and parsing; only the HTTP layer is replaced.

Two fakes of Binance's REST API (installed as `exchange.fetch`, the one method ccxt calls for every request):
- RecordedBinance: the recorded bodies in sample_data/ccxt_fixtures (exchangeInfo, klines, aggTrades).
- FakeBinance: recorded exchangeInfo + `/klines` pages built from the REAL 1m sample data, honouring startTime, endTime
  and limit like Binance does, optionally raising ccxt errors (network, rate limit, non-retryable) on chosen calls.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import ccxt
import numpy as np
import pandas as pd
import pytest

from apps.market.csvio import read_candle_csv
from apps.market.providers.base import ProviderError
from apps.market.providers.ccxt import CcxtProvider, make_pro_client, shared_ssl_context
from apps.market.providers.registry import UnknownProviderError, get_provider
from apps.market.timeframes import TimeframeError

FIXTURES = Path(__file__).resolve().parents[3] / "sample_data" / "ccxt_fixtures"
BTC_1M = Path(__file__).resolve().parents[3] / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz"
RECORDED_NOW = 1634944350000  # 2021-10-22 23:12:30 UTC: the 23:12 kline is still open
MIN = 60_000
DATA_FIRST_OPEN = 1679004900000  # 2023-03-16 22:15 (open time, as in the file)
DATA_LAST_OPEN = 1682974860000  # 2023-05-01 21:01
OUTAGE_FIRST_MISSING_OPEN = 1679661600000  # 2023-03-24 12:40 open: 80 candles missing until 13:59


def binance_client(fetch) -> ccxt.binance:
    """A real ccxt binance client whose HTTP layer is `fetch` (spot markets only: a single exchangeInfo request)."""
    client = ccxt.binance({"enableRateLimit": True, "options": {"fetchMarkets": {"types": ["spot"]}}})
    client.fetch = fetch
    return client


class RecordedBinance:
    """Answers with the byte-for-byte recorded Binance bodies."""

    def __init__(self) -> None:
        self.bodies = {
            "/exchangeInfo": json.loads((FIXTURES / "binance_rest_exchangeInfo_BTCUSDT_ETHUSDT.json").read_text()),
            "/klines": json.loads((FIXTURES / "binance_rest_klines_BTCUSDT_1m.json").read_text()),
            "/aggTrades": json.loads((FIXTURES / "binance_rest_aggTrades_BTCUSDT.json").read_text()),
        }
        self.urls: list[str] = []

    def __call__(self, url, method="GET", headers=None, body=None):
        self.urls.append(url)
        path = urlsplit(url).path
        for frag, resp in self.bodies.items():
            if path.endswith(frag):
                return json.loads(json.dumps(resp))
        raise ccxt.NetworkError("no canned response for " + url)


class FakeBinance:
    """Binance /api/v3/klines over the real 2023 BTC/USDT 1m history, as Binance would serve it at time `now`.

    `errors` maps the n-th klines call (1-based) to an exception raised instead of answering; `fail_from` makes every
    klines call from that number on raise a non-retryable ccxt.ExchangeError (an "interrupted" run).
    """

    def __init__(self, now: int | None = None, *, errors: dict[int, Exception] | None = None,
                 fail_from: int | None = None) -> None:
        self.exchange_info = json.loads((FIXTURES / "binance_rest_exchangeInfo_BTCUSDT_ETHUSDT.json").read_text())
        with gzip.open(BTC_1M, "rt") as fh:
            df = pd.read_csv(fh)
        self.opens = df["timestamp"].to_numpy(np.int64)
        self.values = df[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)
        self.now = int(now if now is not None else DATA_LAST_OPEN + MIN)
        self.errors = dict(errors or {})
        self.fail_from = fail_from
        self.kline_calls = 0
        self.kline_params: list[dict[str, str]] = []
        self.urls: list[str] = []

    def __call__(self, url, method="GET", headers=None, body=None):
        self.urls.append(url)
        parts = urlsplit(url)
        if parts.path.endswith("/exchangeInfo"):
            return json.loads(json.dumps(self.exchange_info))
        if not parts.path.endswith("/klines"):
            raise ccxt.NetworkError("fake binance does not serve " + url)
        self.kline_calls += 1
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.kline_params.append(query)
        if self.kline_calls in self.errors:
            raise self.errors[self.kline_calls]
        if self.fail_from is not None and self.kline_calls >= self.fail_from:
            raise ccxt.ExchangeError("binance {\"code\":-1003,\"msg\":\"interrupted (test)\"}")
        if query.get("interval") != "1m" or query.get("symbol") != "BTCUSDT":
            raise ccxt.BadRequest("fake binance serves BTCUSDT 1m only")
        limit = min(int(query.get("limit", 500)), 1000)
        mask = self.opens <= self.now  # the candle open at `now` is served too: it is still forming
        if "startTime" in query:
            mask &= self.opens >= int(query["startTime"])
        if "endTime" in query:
            mask &= self.opens <= int(query["endTime"])
        idx = np.flatnonzero(mask)
        idx = idx[:limit] if "startTime" in query else idx[-limit:]
        return [
            [int(self.opens[i]), *(f"{v:.8f}" for v in self.values[i]), int(self.opens[i]) + MIN - 1, "0.0", 1,
             "0.0", "0.0", "0"]
            for i in idx
        ]


def expected_frame(first_close: int, last_close: int) -> pd.DataFrame:
    """The sample file read by the project's own reader (open labels -> close labels), cut to [first, last]."""
    df = read_candle_csv(BTC_1M, timeframe="1m", time_label="open")
    ts = df["timestamp"].to_numpy()
    return df.loc[(ts >= first_close) & (ts <= last_close)].reset_index(drop=True)


def concat(pages) -> pd.DataFrame:
    pages = list(pages)
    return pd.concat(pages, ignore_index=True) if pages else pd.DataFrame()


# --- recorded HTTP bodies ------------------------------------------------------------------------------------------
def test_given_recorded_klines_when_fetching_latest_then_forming_candle_dropped_and_labels_are_close_times():
    recorded = RecordedBinance()
    provider = CcxtProvider("binance", client=binance_client(recorded), clock=lambda: RECORDED_NOW, sleep=None)

    df = concat(provider.fetch_candles("BTC/USDT", "1m"))

    raw = recorded.bodies["/klines"]
    assert len(raw) == 10 and len(df) == 9  # the 23:12 candle (open at recording time) is not returned
    assert df["timestamp"].tolist() == [int(k[0]) + MIN for k in raw[:9]]
    assert df["timestamp"].iat[-1] == 1634944320000  # close of the 23:11 candle == open of the forming one
    assert df["open"].tolist() == [float(k[1]) for k in raw[:9]]
    assert df["high"].tolist() == [float(k[2]) for k in raw[:9]]
    assert df["low"].tolist() == [float(k[3]) for k in raw[:9]]
    assert df["close"].tolist() == [float(k[4]) for k in raw[:9]]
    assert df["volume"].tolist() == [float(k[5]) for k in raw[:9]]
    assert [str(d) for d in df.dtypes] == ["int64"] + ["float64"] * 5
    assert sum("/klines" in u for u in recorded.urls) == 1  # a forming candle means we reached the present: stop


def test_given_recorded_klines_when_fetching_since_a_close_time_then_only_later_candles_are_returned():
    recorded = RecordedBinance()
    provider = CcxtProvider("binance", client=binance_client(recorded), clock=lambda: RECORDED_NOW)
    since = int(recorded.bodies["/klines"][3][0])  # open of the 4th candle = close time of the 3rd

    df = concat(provider.fetch_candles("BTC/USDT", "1m", since=since))

    assert df["timestamp"].tolist() == [int(k[0]) + MIN for k in recorded.bodies["/klines"][3:9]]
    assert f"startTime={since}" in [u for u in recorded.urls if "/klines" in u][0]


def test_given_recorded_klines_and_a_later_clock_when_paging_then_stops_when_the_exchange_has_nothing_newer():
    recorded = RecordedBinance()  # answers every klines request with the same 10 candles, like a stale exchange
    provider = CcxtProvider("binance", client=binance_client(recorded), clock=lambda: RECORDED_NOW + 3600_000)

    df = concat(provider.fetch_candles("BTC/USDT", "1m", since=int(recorded.bodies["/klines"][0][0])))

    # all 10 are closed an hour later (the 23:12 one included); since = open of the first = a close time before it
    assert df["timestamp"].tolist() == [int(k[0]) + MIN for k in recorded.bodies["/klines"]]
    assert sum("/klines" in u for u in recorded.urls) == 2  # second page gave nothing newer -> stop, no loop


def test_given_recorded_agg_trades_when_fetching_trades_then_trades_frame_with_ids_and_sides():
    recorded = RecordedBinance()
    provider = CcxtProvider("binance", client=binance_client(recorded), clock=lambda: RECORDED_NOW)

    trades = provider.fetch_trades("BTC/USDT", limit=10)

    raw = recorded.bodies["/aggTrades"]
    assert len(trades) == 10
    assert trades["timestamp"].tolist() == sorted(int(t["T"]) for t in raw)
    assert trades["trade_id"].tolist() == [str(t["a"]) for t in sorted(raw, key=lambda t: t["T"])]
    assert trades["price"].tolist() == [float(t["p"]) for t in sorted(raw, key=lambda t: t["T"])]
    assert set(trades["side"]) <= {"buy", "sell"}
    assert str(trades["timestamp"].dtype) == "int64"


# --- fake Binance over the real 2023 history -----------------------------------------------------------------------
def test_given_three_days_of_history_when_paging_with_limit_500_then_pages_equal_the_exchange_data():
    fake = FakeBinance()
    provider = CcxtProvider("binance", client=binance_client(fake), clock=lambda: fake.now, limit=500)
    since = DATA_FIRST_OPEN + 60 * MIN  # close time (exclusive)
    until = since + 3 * 1440 * MIN

    pages = list(provider.fetch_candles("BTC/USDT", "1m", since=since, until=until))

    df = concat(pages)
    expected = expected_frame(since + 1, until)
    pd.testing.assert_frame_equal(df, expected)
    assert all(len(p) <= 500 for p in pages)
    assert len(pages) == fake.kline_calls == -(-len(expected) // 500)
    assert [int(p["startTime"]) for p in fake.kline_params] == [int(p["timestamp"].iat[0]) - MIN for p in pages]


def test_given_transient_network_and_rate_limit_errors_when_paging_then_retried_with_backoff_and_nothing_lost():
    fake = FakeBinance(errors={1: ccxt.NetworkError("connection reset"), 2: ccxt.RateLimitExceeded("429"),
                               4: ccxt.RateLimitExceeded("429 again")})
    slept: list[float] = []
    provider = CcxtProvider("binance", client=binance_client(fake), clock=lambda: fake.now, limit=1000,
                            sleep=slept.append, backoff=1.0)
    since = DATA_FIRST_OPEN
    until = since + 2000 * MIN

    df = concat(provider.fetch_candles("BTC/USDT", "1m", since=since, until=until))

    pd.testing.assert_frame_equal(df, expected_frame(since + 1, until))
    assert slept == [1.0, 2.0, 1.0]  # exponential per request, reset for the next request
    assert provider.retries == 3
    assert fake.kline_calls == 2 + 3  # 2 pages of 1000 plus 3 failed attempts


def test_given_rate_limit_errors_beyond_the_attempt_budget_when_fetching_then_the_ccxt_error_is_raised():
    fake = FakeBinance(errors={i: ccxt.RateLimitExceeded(f"429 #{i}") for i in range(1, 10)})
    slept: list[float] = []
    provider = CcxtProvider("binance", client=binance_client(fake), clock=lambda: fake.now, sleep=slept.append,
                            max_attempts=3, backoff=0.5)

    with pytest.raises(ccxt.RateLimitExceeded, match="429 #3"):
        list(provider.fetch_candles("BTC/USDT", "1m", since=DATA_FIRST_OPEN))

    assert slept == [0.5, 1.0]
    assert fake.kline_calls == 3


def test_given_a_non_retryable_exchange_error_when_fetching_then_raised_at_once_without_sleeping():
    fake = FakeBinance(fail_from=1)
    slept: list[float] = []
    provider = CcxtProvider("binance", client=binance_client(fake), clock=lambda: fake.now, sleep=slept.append)

    with pytest.raises(ccxt.ExchangeError, match="interrupted"):
        list(provider.fetch_candles("BTC/USDT", "1m", since=DATA_FIRST_OPEN))

    assert slept == [] and fake.kline_calls == 1


def test_given_now_inside_a_minute_when_fetching_the_tail_then_the_forming_candle_is_not_returned():
    forming_open = DATA_FIRST_OPEN + 500 * MIN
    fake = FakeBinance(now=forming_open + 30_000)  # 30 s into the candle opened at forming_open
    provider = CcxtProvider("binance", client=binance_client(fake), clock=lambda: fake.now)

    df = concat(provider.fetch_candles("BTC/USDT", "1m", since=DATA_FIRST_OPEN + 400 * MIN))

    assert df["timestamp"].iat[-1] == forming_open  # the last CLOSED candle closes when the forming one opens
    assert (df["timestamp"] <= fake.now).all()
    assert fake.kline_calls == 1  # the page held the forming candle -> present reached


def test_given_the_real_2023_03_24_outage_when_fetching_across_it_then_the_80_missing_minutes_stay_missing():
    fake = FakeBinance()
    provider = CcxtProvider("binance", client=binance_client(fake), clock=lambda: fake.now, limit=100)
    since = OUTAGE_FIRST_MISSING_OPEN - 30 * MIN
    until = OUTAGE_FIRST_MISSING_OPEN + 200 * MIN

    df = concat(provider.fetch_candles("BTC/USDT", "1m", since=since, until=until))

    steps = np.diff(df["timestamp"].to_numpy())
    assert sorted(set(steps.tolist())) == [MIN, 81 * MIN]
    jump = int(np.flatnonzero(steps == 81 * MIN)[0])
    assert df["timestamp"].iat[jump] == OUTAGE_FIRST_MISSING_OPEN  # last candle before the hole closes at 12:40
    pd.testing.assert_frame_equal(df, expected_frame(since + 1, until))


# --- errors --------------------------------------------------------------------------------------------------------
def test_given_an_unknown_exchange_id_when_building_the_provider_then_clear_error_with_suggestion():
    with pytest.raises(ProviderError, match=r"unknown ccxt exchange id 'binanse'.*did you mean binance"):
        get_provider("ccxt", exchange="binanse")


def test_given_an_unknown_provider_name_when_getting_it_then_error_lists_the_known_ones():
    with pytest.raises(UnknownProviderError, match=r"unknown provider 'ftp': expected one of ccxt, csv, replay"):
        get_provider("ftp")


def test_given_a_symbol_the_exchange_does_not_list_when_fetching_then_clear_error_naming_it():
    provider = CcxtProvider("binance", client=binance_client(RecordedBinance()), clock=lambda: RECORDED_NOW)

    with pytest.raises(ProviderError, match=r"binance has no market 'BTC/USTD'.*did you mean BTC/USDT"):
        list(provider.fetch_candles("BTC/USTD", "1m"))


def test_given_a_timeframe_outside_the_platform_list_when_fetching_then_timeframe_error():
    provider = CcxtProvider("binance", client=binance_client(RecordedBinance()), clock=lambda: RECORDED_NOW)

    with pytest.raises(TimeframeError, match="unknown timeframe '3m'"):
        list(provider.fetch_candles("BTC/USDT", "3m"))


def fake_provider_factory(fake, **provider_options):
    """A registry factory serving `fake` through a real ccxt binance client, whatever exchange name the market has."""

    def factory(exchange: str = "binance", **options) -> CcxtProvider:
        return CcxtProvider("binance", client=binance_client(fake), clock=lambda: fake.now,
                            **{**provider_options, **options})

    return factory


def test_given_two_stream_clients_when_made_then_they_share_one_verifying_tls_context_unless_configured():
    async def contexts():
        clients = [make_pro_client("binance"), make_pro_client("kraken"),
                   make_pro_client("binance", {"verify": False})]
        try:
            return [c.ssl_context for c in clients]
        finally:
            for c in clients:
                await c.close()

    first, second, unverified = asyncio.run(contexts())
    assert first is second is shared_ssl_context()
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    assert len(first.get_ca_certs()) > 100  # certifi's bundle, as ccxt's own default
    assert unverified is None  # ccxt builds (here: skips) its own from the caller's settings
