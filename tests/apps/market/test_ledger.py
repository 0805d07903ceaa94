"""Data-quality ledger (CoveredRange / DataGap) on the real Binance 2023-03-24 outage and on split real batches."""

from __future__ import annotations

import pandas as pd
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.market.csvio import read_candle_csv
from apps.market.ledger import refresh_ledger
from apps.market.models import CoveredRange, DataGap, Market
from apps.market.selectors import gaps_in_range, market_coverage
from apps.market.services import get_or_create_market, ingest_candles
from tests.factories import BASE_CLOSE_MS, CandleFactory

pytestmark = pytest.mark.django_db

EX, SYM = "binance", "BTC/USDT"
# Binance outage: 80 missing 1m candles, OPEN times 12:40..13:59 => CLOSE times 12:41..14:00 (2023-03-24 UTC).
OUTAGE_FIRST_MISSING_CLOSE = 1679661660000
OUTAGE_LAST_MISSING_CLOSE = 1679666400000
FIRST_CLOSE = 1679004960000
LAST_CLOSE = 1682974920000


@pytest.fixture
def btc_1m(data_dir) -> pd.DataFrame:
    return read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe="1m",
                           time_label="open")


def _ingest(df: pd.DataFrame):
    return ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=df, publish=False)


def _ranges(market: Market) -> list[tuple[int, int, int]]:
    return list(market.covered_ranges.order_by("first_timestamp").values_list("first_timestamp", "last_timestamp",
                                                                              "candles"))


def test_given_real_outage_when_ingested_then_one_gap_of_80_with_close_time_bounds(btc_1m):
    _ingest(btc_1m)
    market = Market.objects.get(exchange=EX, symbol=SYM, timeframe="1m")

    gaps = list(market.gaps.all())
    assert [(g.start_timestamp, g.end_timestamp, g.missing, g.status) for g in gaps] == [
        (OUTAGE_FIRST_MISSING_CLOSE, OUTAGE_LAST_MISSING_CLOSE, 80, DataGap.Status.OPEN)]
    assert _ranges(market) == [
        (FIRST_CLOSE, OUTAGE_FIRST_MISSING_CLOSE - 60_000, 10_945),
        (OUTAGE_LAST_MISSING_CLOSE + 60_000, LAST_CLOSE, 55_142),
    ]
    coverage = market_coverage(market)
    assert (coverage["candles"], coverage["open_gaps"], coverage["missing_candles"]) == (66087, 1, 80)
    assert (coverage["first_timestamp"], coverage["last_timestamp"]) == (FIRST_CLOSE, LAST_CLOSE)
    assert [g.pk for g in gaps_in_range(EX, SYM, "1m", OUTAGE_LAST_MISSING_CLOSE, LAST_CLOSE)] == [gaps[0].pk]
    assert gaps_in_range(EX, SYM, "1m", LAST_CLOSE - 1000, LAST_CLOSE) == []


def test_given_batches_in_order_when_one_arrives_after_a_pause_then_hole_recorded_then_filled_by_backfill(btc_1m):
    for lo, hi in ((0, 500), (500, 1000), (1500, 2000)):  # collector rounds; rows 1000..1499 never arrived
        _ingest(btc_1m.iloc[lo:hi])
    market = Market.objects.get(exchange=EX, symbol=SYM, timeframe="1m")
    ts = btc_1m["timestamp"]
    gap = market.gaps.get()
    assert (gap.start_timestamp, gap.end_timestamp, gap.missing, gap.status) == (
        ts[1000], ts[1499], 500, DataGap.Status.OPEN)
    assert _ranges(market) == [(ts[0], ts[999], 1000), (ts[1500], ts[1999], 500)]

    _ingest(btc_1m.iloc[1000:1500])  # backfill

    gap.refresh_from_db()
    assert gap.status == DataGap.Status.FILLED
    assert _ranges(market) == [(ts[0], ts[1999], 2000)]
    assert market_coverage(market)["open_gaps"] == 0


def test_given_outage_gap_when_partly_backfilled_then_rest_keeps_outage_status_and_attempts(btc_1m):
    _ingest(btc_1m.iloc[:100])
    _ingest(btc_1m.iloc[200:300])
    market = Market.objects.get(exchange=EX, symbol=SYM, timeframe="1m")
    DataGap.objects.filter(market=market).update(status=DataGap.Status.EXCHANGE_OUTAGE, attempts=3)
    ts = btc_1m["timestamp"]

    _ingest(btc_1m.iloc[100:150])

    gap = market.gaps.get()
    assert (gap.start_timestamp, gap.end_timestamp, gap.missing) == (ts[150], ts[199], 50)
    assert (gap.status, gap.attempts) == (DataGap.Status.EXCHANGE_OUTAGE, 3)
    refresh_ledger(market)
    assert market.gaps.get().status == DataGap.Status.EXCHANGE_OUTAGE


def test_given_tail_of_gap_backfilled_when_refreshed_then_same_row_shrinks(btc_1m):
    _ingest(btc_1m.iloc[:100])
    _ingest(btc_1m.iloc[200:300])
    market = Market.objects.get(exchange=EX, symbol=SYM, timeframe="1m")
    gap_id = market.gaps.get().pk

    _ingest(btc_1m.iloc[180:200])

    gap = market.gaps.get()
    assert (gap.pk, gap.missing, gap.end_timestamp) == (gap_id, 80, btc_1m["timestamp"][179])


def test_given_candles_stored_without_ledger_when_refreshing_a_window_then_whole_ledger_rebuilt():
    market = get_or_create_market(EX, SYM, "1m")
    CandleFactory.create_batch(30)  # closes BASE_CLOSE_MS .. +29 min, ledger knows nothing
    for i in range(40, 50):
        CandleFactory(timestamp=BASE_CLOSE_MS + i * 60_000)

    refresh_ledger(market, start=BASE_CLOSE_MS + 45 * 60_000, end=BASE_CLOSE_MS + 49 * 60_000)

    assert _ranges(market) == [(BASE_CLOSE_MS, BASE_CLOSE_MS + 29 * 60_000, 30),
                               (BASE_CLOSE_MS + 40 * 60_000, BASE_CLOSE_MS + 49 * 60_000, 10)]
    assert [(g.start_timestamp, g.missing) for g in market.gaps.all()] == [(BASE_CLOSE_MS + 30 * 60_000, 10)]


def test_given_full_refresh_twice_when_nothing_changed_then_ledger_identical(btc_1m):
    _ingest(btc_1m.iloc[:3000])
    _ingest(btc_1m.iloc[3100:3200])
    market = Market.objects.get(exchange=EX, symbol=SYM, timeframe="1m")
    before = (_ranges(market), list(market.gaps.values_list("pk", "start_timestamp", "missing", "status")))

    refresh_ledger(market)
    refresh_ledger(market, start=int(btc_1m["timestamp"][50]), end=int(btc_1m["timestamp"][60]))

    assert (_ranges(market), list(market.gaps.values_list("pk", "start_timestamp", "missing", "status"))) == before
    assert CoveredRange.objects.filter(market=market).count() == 2


def test_given_empty_market_when_refreshed_then_no_ranges_and_no_gaps():
    market = get_or_create_market(EX, SYM, "5m")
    refresh_ledger(market)
    assert market_coverage(market)["candles"] == 0
    assert market.covered_ranges.count() == 0


def _tail_read(after: int) -> str:
    return (f"COPY (SELECT timestamp FROM market_data WHERE exchange = '{EX}' AND symbol = '{SYM}' "
            f"AND timeframe = '1m' AND timestamp >= {after} ORDER BY timestamp) TO STDOUT WITH (FORMAT binary)")


def test_given_a_long_history_when_live_candles_append_one_by_one_then_the_run_grows_without_rescanning_it(btc_1m):
    _ingest(btc_1m.iloc[:5000])
    market = Market.objects.get(exchange=EX, symbol=SYM, timeframe="1m")

    for i in range(5000, 5003):
        with CaptureQueriesContext(connection) as queries:
            _ingest(btc_1m.iloc[i:i + 1])
        reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("COPY (")]
        # no rescan: the only read of stored close times starts after the newest covered run
        assert reads == [_tail_read(int(btc_1m["timestamp"][i - 1]) + 1)]

    extended = _ranges(market)
    refresh_ledger(market)  # the full rebuild agrees
    assert extended == _ranges(market) == [(FIRST_CLOSE, int(btc_1m["timestamp"][5002]), 5003)]


def test_given_a_candle_after_a_pause_when_appended_then_the_hole_is_still_recorded(btc_1m):
    _ingest(btc_1m.iloc[:100])
    _ingest(btc_1m.iloc[105:106])
    market = Market.objects.get(exchange=EX, symbol=SYM, timeframe="1m")

    assert [(g.start_timestamp, g.missing) for g in market.gaps.all()] == [(int(btc_1m["timestamp"][100]), 5)]
    assert len(_ranges(market)) == 2


def test_given_a_live_batch_with_quiet_minutes_when_appended_then_its_runs_and_holes_equal_a_full_rebuild(btc_1m):
    _ingest(btc_1m.iloc[:1000])
    market = Market.objects.get(exchange=EX, symbol=SYM, timeframe="1m")
    # the next 200 real minutes with some left out, as a stream stores minutes that had trades: the first run
    # continues the history, then holes of 1, 3 and 10 minutes
    batch = btc_1m.iloc[1000:1200].drop(index=[1050, *range(1100, 1103), *range(1150, 1160)])

    with CaptureQueriesContext(connection) as queries:
        _ingest(batch)
    appended = (_ranges(market), [(g.start_timestamp, g.missing, g.status)
                                  for g in market.gaps.order_by("start_timestamp")])
    assert [q["sql"] for q in queries.captured_queries if q["sql"].startswith("COPY (")] == [
        _tail_read(int(btc_1m["timestamp"][999]) + 1)]  # the tail path: nothing of the history read
    ts = btc_1m["timestamp"]
    assert appended[1] == [(int(ts[1050]), 1, "open"), (int(ts[1100]), 3, "open"), (int(ts[1150]), 10, "open")]
    assert appended[0][0] == (FIRST_CLOSE, int(ts[1049]), 1050)  # the history's run, extended
    refresh_ledger(market)  # the full rebuild agrees
    assert appended == (_ranges(market), [(g.start_timestamp, g.missing, g.status)
                                          for g in market.gaps.order_by("start_timestamp")])


def test_given_a_watched_range_when_a_live_batch_is_appended_then_its_holes_inside_are_empty_as_a_rebuild_marks_them(
        btc_1m):
    _ingest(btc_1m.iloc[:1000])
    market = Market.objects.get(exchange=EX, symbol=SYM, timeframe="1m")
    ts = btc_1m["timestamp"]
    batch = btc_1m.iloc[1000:1200].drop(index=[1050, *range(1100, 1103), *range(1150, 1160)])
    stored = ingest_candles(exchange=EX, symbol=SYM, timeframe="1m", df=batch, publish=False, ledger=False)
    watched = (int(ts[1099]), int(ts[1199]), "stream: no trades in these minutes")  # saw the 2nd and 3rd hole only

    with CaptureQueriesContext(connection) as queries:
        refresh_ledger(market, start=stored.new_timestamps[0], end=stored.new_timestamps[-1], empty=watched)
    gaps = list(market.gaps.order_by("start_timestamp").values_list("start_timestamp", "missing", "status", "note"))
    assert not any("UPDATE" in q["sql"] and "datagap" in q["sql"] for q in queries.captured_queries)  # at insert
    assert gaps == [(int(ts[1050]), 1, "open", ""), (int(ts[1100]), 3, "empty", watched[2]),
                    (int(ts[1150]), 10, "empty", watched[2])]
    refresh_ledger(market, empty=watched)  # the general path: a full rebuild, then mark_empty, agrees
    assert gaps == list(market.gaps.order_by("start_timestamp").values_list("start_timestamp", "missing", "status",
                                                                            "note"))
