"""Backfill through ccxt against a fake Binance serving the real 2023 BTC/USDT 1m history (only HTTP is faked)."""

from __future__ import annotations

import io

import ccxt
import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.market.collector import backfill, missing_ranges
from apps.market.models import Candle, CoveredRange, DataGap, Market
from apps.market.providers.ccxt import CcxtProvider
from apps.market.providers.registry import register, unregister
from apps.market.selectors import candle_frame
from tests.apps.market.test_ccxt_provider import (
    DATA_FIRST_OPEN,
    MIN,
    OUTAGE_FIRST_MISSING_OPEN,
    FakeBinance,
    binance_client,
    expected_frame,
    fake_provider_factory,
)

pytestmark = pytest.mark.django_db

OUTAGE_START = OUTAGE_FIRST_MISSING_OPEN + MIN  # close time of the first missing candle (12:41)
OUTAGE_END = OUTAGE_START + 79 * MIN  # close time of the 80th (14:00)


def provider_for(fake: FakeBinance, limit: int = 1000) -> CcxtProvider:
    return CcxtProvider("binance", client=binance_client(fake), clock=lambda: fake.now, limit=limit,
                        sleep=lambda s: None)


def ledger(exchange: str) -> tuple[list, list]:
    market = Market.objects.get(exchange=exchange, symbol="BTC/USDT", timeframe="1m")
    ranges = list(CoveredRange.objects.filter(market=market).values_list("first_timestamp", "last_timestamp",
                                                                          "candles"))
    gaps = list(DataGap.objects.filter(market=market).values_list("start_timestamp", "end_timestamp", "missing",
                                                                   "status"))
    return ranges, gaps


def test_given_the_real_outage_in_range_when_backfilling_then_recorded_as_exchange_outage_and_never_retried():
    fake = FakeBinance()
    since, until = OUTAGE_START - 160 * MIN, OUTAGE_END + 120 * MIN

    report = backfill("binance", "BTC/USDT", "1m", since, until, provider=provider_for(fake), progress=False)

    expected = expected_frame(since, until)
    assert len(expected) == (until - since) // MIN + 1 - 80
    pd.testing.assert_frame_equal(candle_frame(exchange="binance", symbol="BTC/USDT", timeframe="1m"), expected)
    assert (report.fetched, report.stored, report.rejected) == (len(expected), len(expected), 0)
    assert (report.gaps_found, report.gaps_filled, report.outages) == (1, 0, 1)
    gap = DataGap.objects.get()
    assert (gap.start_timestamp, gap.end_timestamp, gap.missing) == (OUTAGE_START, OUTAGE_END, 80)
    assert gap.status == DataGap.Status.EXCHANGE_OUTAGE and gap.attempts == 1
    assert "no candles" in gap.note
    assert fake.kline_calls == 2  # the range (one page) + the one re-request of the gap
    assert [int(p["limit"]) for p in fake.kline_params] == [len(expected) + 80, 80]  # never more than the range holds

    again = backfill("binance", "BTC/USDT", "1m", since, until, provider=provider_for(fake), progress=False)

    assert fake.kline_calls == 2  # nothing fetched: covered ranges and the known outage are skipped
    assert (again.fetched, again.stored, again.gaps_found, again.outages) == (0, 0, 0, 0)
    assert DataGap.objects.get().attempts == 1
    assert Candle.objects.count() == len(expected)


def test_given_a_run_interrupted_after_two_pages_when_rerun_then_it_resumes_and_ends_like_an_uninterrupted_run():
    since = DATA_FIRST_OPEN + MIN
    until = since + 4499 * MIN  # 4,500 candles = 5 pages of 1,000 (the last one partial)

    broken = FakeBinance(fail_from=3)  # pages 1 and 2 answer, then a non-retryable error
    with pytest.raises(ccxt.ExchangeError, match="interrupted"):
        backfill("binance", "BTC/USDT", "1m", since, until, provider=provider_for(broken), progress=False)
    assert Candle.objects.filter(exchange="binance").count() == 2000  # the pages stored before the failure stay
    assert missing_ranges(Market.objects.get(exchange="binance"), since, until) == [(since + 2000 * MIN, until)]

    resumed = FakeBinance()
    report = backfill("binance", "BTC/USDT", "1m", since, until, provider=provider_for(resumed), progress=False)

    starts = [int(p["startTime"]) for p in resumed.kline_params]
    assert min(starts) == since + 2000 * MIN - MIN  # opens at the first missing candle: stored pages not refetched
    assert resumed.kline_calls == 3
    assert (report.fetched, report.stored) == (2500, 2500)

    reference = FakeBinance()
    backfill("reference", "BTC/USDT", "1m", since, until, provider=provider_for(reference), progress=False)
    resumed_frame = candle_frame(exchange="binance", symbol="BTC/USDT", timeframe="1m")
    pd.testing.assert_frame_equal(resumed_frame, candle_frame(exchange="reference", symbol="BTC/USDT", timeframe="1m"))
    pd.testing.assert_frame_equal(resumed_frame, expected_frame(since, until))
    assert ledger("binance") == ledger("reference") == ([(since, until, 4500)], [])
    assert reference.kline_calls == 5


def test_given_a_covered_middle_when_computing_missing_ranges_then_only_the_holes_around_it_are_listed():
    fake = FakeBinance()
    since = DATA_FIRST_OPEN + MIN
    backfill("binance", "BTC/USDT", "1m", since + 100 * MIN, since + 199 * MIN, provider=provider_for(fake),
             progress=False)
    market = Market.objects.get(exchange="binance")

    todo = missing_ranges(market, since, since + 299 * MIN)

    assert todo == [(since, since + 99 * MIN), (since + 200 * MIN, since + 299 * MIN)]


def test_given_a_since_not_on_the_grid_when_backfilling_then_it_starts_at_the_next_close_time():
    fake = FakeBinance()
    since = DATA_FIRST_OPEN + MIN + 1  # 1 ms after a close time

    report = backfill("binance", "BTC/USDT", "1m", since, since + 10 * MIN, provider=provider_for(fake),
                      progress=False)

    stored = candle_frame(exchange="binance", symbol="BTC/USDT", timeframe="1m")["timestamp"].to_numpy()
    assert report.since == DATA_FIRST_OPEN + 2 * MIN
    np.testing.assert_array_equal(stored, DATA_FIRST_OPEN + MIN * np.arange(2, 12))


@pytest.fixture
def fakebinance():
    fake = FakeBinance()
    register("fakebinance", fake_provider_factory(fake, sleep=lambda s: None))
    yield fake
    unregister("fakebinance")


def test_given_iso_dates_when_running_the_backfill_command_then_one_summary_line_and_candles_stored(fakebinance):
    out = io.StringIO()

    call_command("backfill", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
                 "--since", "2023-03-20", "--until", "2023-03-20T02:00", "--provider", "fakebinance", stdout=out)

    line = out.getvalue().strip()
    assert "\n" not in line
    assert line.startswith("binance BTC/USDT 1m 2023-03-20 00:00:00 .. 2023-03-20 02:00:00: fetched 121")
    assert Candle.objects.filter(exchange="binance").count() == 121
    assert Market.objects.get(exchange="binance").provider == "fakebinance"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeframe", "2m", "--since", "2023-03-20"], "--timeframe: unknown timeframe '2m'"),
        (["--timeframe", "1m", "--since", "yesterday"], "--since: not a time: 'yesterday'"),
        (["--timeframe", "1m", "--since", "2023-03-20", "--until", "2023-03-19"], "is before --since"),
        (["--timeframe", "1m", "--since", "2023-03-20", "--provider", "ftp"], "unknown provider 'ftp'"),
    ],
)
def test_given_bad_arguments_when_running_the_backfill_command_then_one_line_error_with_exit_2(args, message):
    with pytest.raises(CommandError) as err:
        call_command("backfill", "--exchange", "binance", "--symbol", "BTC/USDT", *args)

    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value.returncode == 2
    assert Candle.objects.count() == 0


def test_given_an_exchange_failure_when_running_the_backfill_command_then_exit_1_saying_rerun_resumes(fakebinance):
    fakebinance.fail_from = 1

    with pytest.raises(CommandError, match="ExchangeError.*rerun to resume") as err:
        call_command("backfill", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
                     "--since", "2023-03-20", "--until", "2023-03-20T02:00", "--provider", "fakebinance")

    assert err.value.returncode == 1
