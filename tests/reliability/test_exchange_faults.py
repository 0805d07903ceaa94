"""The exchange misbehaving on the real collection path: a real `collect` worker (ccxt against the loopback fake
Binance of apps/market/testing/binance.py, replaying recorded real XRP/ETH trades) while the fake answers 429, 5xx,
timeouts, garbage and candles that break the rules, in turns, then is down, then recovers.

What must hold: each failed request is retried with back-off (the fake counts the requests); a market whose exchange
stays down backs off (last_error, failures, retry_after) and beat rounds skip it; nothing invalid is stored; a hole
left by broken candles stays an OPEN gap in the ledger (not an exchange outage, which would never be asked for again)
and the next healthy backfill fills it; in the end the stored candles are exactly the exchange's own aggregation.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.utils import timezone

from apps.market.aggregation import trades_to_candles_arrays
from apps.market.collector import due_markets
from apps.market.models import Candle, DataGap, Market
from apps.market.services import get_or_create_market
from apps.market.testing.binance import FakeBinanceThread, load_tape
from tests.celery_workers import workers_active

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]

TF = 60_000
XRP = Path(__file__).resolve().parents[2] / "sample_data" / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz"
HISTORY_MIN = 180
TURNS = ["429", "500", "503", "timeout", "garbage"]  # one request each, in a row: 5 retries, the 6th attempt works


def _stored() -> dict[int, tuple]:
    rows = Candle.objects.filter(exchange="binance", symbol="XRP/ETH", timeframe="1m").values_list(
        "timestamp", "open", "high", "low", "close", "volume")
    return {r[0]: r[1:] for r in rows}


def _result(async_result, what: str, limit_s: float = 60):
    try:
        return async_result.get(timeout=limit_s, propagate=True)
    except Exception as exc:  # noqa: BLE001 - named in the failure
        raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc


def test_given_the_exchange_failing_in_turns_then_down_when_collected_then_backoff_gap_kept_nothing_invalid_recovered(
        figures):
    from apps.market.tasks import backfill_task, collect_market_task, collect_watched_task

    boundary = int(time.time() * 1000) // TF * TF  # the newest closed minute: the fake's clock stops just before it
    raw = load_tape(XRP, symbol="XRP/ETH")
    tape = raw.shifted(boundary - HISTORY_MIN * TF - int(raw.ts[0]) // TF * TF)  # whole minutes: same candles
    start = boundary - (HISTORY_MIN - 1) * TF
    n = int(np.searchsorted(tape.ts, boundary - 1, side="right"))
    t, o, h, lo, c, v = trades_to_candles_arrays(tape.ts[:n], tape.price[:n], tape.amount[:n], "1m")
    keep = (t >= start) & (t <= boundary)
    reference = {int(a): (b, cc, d, e, f) for a, b, cc, d, e, f in zip(*(x[keep] for x in (t, o, h, lo, c, v)),
                                                                        strict=True)}
    middle = boundary - 60 * TF

    with FakeBinanceThread([tape], speed=1, start_at=boundary - 1, paused=True) as fake:
        fake.server.hang_s = 2.5
        env = {"TRADEBOT_EXCHANGE_URLS": json.dumps(fake.exchange_urls()), "TRADEBOT_FETCH_LIMIT": "20",
               "TRADEBOT_FETCH_ATTEMPTS": "6", "TRADEBOT_FETCH_BACKOFF_S": "0.1",
               "TRADEBOT_EXCHANGE_TIMEOUT_MS": "1000"}
        market = get_or_create_market("binance", "XRP/ETH", "1m", watched=True, provider="ccxt")
        with workers_active(concurrency=1, queues="collect", extra_env=env):
            # 1. A backfill of the first two hours while the exchange answers 429, 500, 503, a timeout and garbage
            #    in a row: every one retried with back-off, the history stored as the exchange has it.
            for kind in TURNS:
                fake.fail_next(1, kind, path="klines")
            t0 = time.monotonic()
            first = _result(backfill_task.delay("binance", "XRP/ETH", "1m", start, middle), "backfill under faults")
            turns_s = time.monotonic() - t0
            after_turns = _stored()
            faults_turns = dict(fake.stats.faults)

            # 2. The exchange is down (503 on every try): the market backs off, a beat round skips it.
            fake.fail_next(6, "503", path="klines")
            down = _result(collect_market_task.delay(market.pk), "collection while the exchange is down")
            market.refresh_from_db()
            backing_off = (market.last_error, market.failures, market.retry_after)
            skipped_round = _result(collect_watched_task.delay(), "beat round during the backoff")
            waiting = [m.pk for m in due_markets()[1]]

            # 3. The exchange is back, but its first page of live candles is broken; the backoff's time is up (set:
            #    it is a minute): the next beat round collects the market, the 20 broken candles are rejected and
            #    their hole stays in the ledger.
            fake.fail_next(1, "invalid", path="klines")
            Market.objects.filter(pk=market.pk).update(retry_after=timezone.now() - timedelta(seconds=1))
            round_ids = _result(collect_watched_task.delay(), "beat round after recovery")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not Market.objects.get(pk=market.pk).last_collected_at:
                time.sleep(0.2)
            market.refresh_from_db()
            recovered = (market.failures, market.last_error)
            rejected_live = fake.stats.faults.get("invalid", 0) * 20
            broken = sorted(set(reference) - set(_stored()))
            broken = [ts for ts in broken if ts > middle]
            gap_after_live = list(DataGap.objects.filter(market=market, status=DataGap.Status.OPEN,
                                                         start_timestamp__lte=broken[0], end_timestamp__gte=broken[-1])
                                  .values_list("status", flat=True)) if broken else []
            # 4. It keeps sending broken candles to a backfill of that hour: rejected, the gap still OPEN (not an
            #    exchange outage); then it heals and a backfill fills the gap.
            fake.fail_next(10_000, "invalid", path="klines")
            still_broken = _result(backfill_task.delay("binance", "XRP/ETH", "1m", middle, boundary),
                                   "backfill while the candles are broken")
            fake.heal()
            outage_over_broken = DataGap.objects.filter(
                market=market, status=DataGap.Status.EXCHANGE_OUTAGE, start_timestamp__lte=broken[-1],
                end_timestamp__gte=broken[0]).count()
            open_over_broken = DataGap.objects.filter(
                market=market, status=DataGap.Status.OPEN, start_timestamp__lte=broken[-1],
                end_timestamp__gte=broken[0]).count()

            healed = _result(backfill_task.delay("binance", "XRP/ETH", "1m", start, boundary), "healthy backfill")
        market.refresh_from_db()
        stats = fake.stats

    stored = _stored()
    invalid = Candle.objects.filter(exchange="binance", symbol="XRP/ETH").extra(
        where=["high < low OR volume < 0 OR high < open OR high < close OR low > open OR low > close"]).count()
    mismatched = [ts for ts in reference if ts in stored and not np.allclose(stored[ts], reference[ts], rtol=0,
                                                                            atol=0)]
    open_gaps = DataGap.objects.filter(market=market, status=DataGap.Status.OPEN).count()
    figures.fault = ("the exchange answering 429, 500, 503, a timeout, garbage JSON in turns, then down (503 x6), "
                     "then broken candles, then healthy")
    figures.faults_injected = sum(stats.faults.values())
    figures.decisions = len(stored)
    figures.lost = len(set(reference) - set(stored))
    figures.doubled = Candle.objects.filter(exchange="binance", symbol="XRP/ETH").count() - len(stored)
    figures.extra = {"faults_by_kind": stats.faults, "klines_requests": stats.by_path.get("/api/v3/klines", 0),
                     "backfill_under_faults_s": round(turns_s, 1), "rejected_broken": rejected_live,
                     "backfill_while_broken_rejected": still_broken["rejected"], "reference_candles": len(reference),
                     "backoff_error": backing_off[0][:120], "healthy_backfill_stored": healed["stored"]}

    assert faults_turns == {k: 1 for k in TURNS}
    assert first["stored"] == len([ts for ts in reference if ts <= middle]) == len(after_turns)
    assert {ts: after_turns[ts] for ts in after_turns} == {ts: reference[ts] for ts in after_turns}
    assert rejected_live == 20 and len(broken) == 20 and gap_after_live == [DataGap.Status.OPEN]
    assert still_broken["rejected"] > 0 and still_broken["stored"] == 0
    assert outage_over_broken == 0 and open_over_broken >= 1  # kept open, not written off as an outage
    assert "error" in down and backing_off[1] == 1 and backing_off[0]
    assert backing_off[2] is not None and backing_off[2] > timezone.now() + timedelta(seconds=30)
    assert market.pk not in skipped_round and market.pk in waiting
    assert market.pk in round_ids and recovered == (0, "") and market.failures == 0 and market.last_error == ""
    assert invalid == 0 and mismatched == []
    assert open_gaps == 0
    assert all(stored.get(ts) == reference[ts] for ts in broken)  # the broken candles, stored right at last
    figures.check(f"{len(TURNS)} faults in a row retried with back-off inside one backfill ({turns_s:.1f}s), its "
                  f"{first['stored']} candles equal to the exchange's; a page of 20 broken candles rejected and its "
                  "hole kept OPEN through a backfill that got only broken candles; 6 x 503 backed the market off "
                  f"('{backing_off[0][:50]}...') and the beat round skipped it; after recovery the round collected "
                  f"it and a backfill filled the hole: {len(stored)} candles stored, 0 invalid, 0 open gaps")
    figures.assert_nothing_lost_or_doubled()
