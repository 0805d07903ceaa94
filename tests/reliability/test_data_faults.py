"""Data-path faults on the real PostgreSQL test database: overlapping and out-of-order candle pages, an insert needing
a missing raw_trades partition, publishing with nobody listening, a disk-full / revoked-permission failure injected
for one market or one bot (a trigger raising the real SQLSTATE), and pg_terminate_backend on a worker mid ingest."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from django.db import connection, transaction

from apps.bots import services as bot_services
from apps.bots.models import Bot, Signal
from apps.market import partitions
from apps.market.collector import collect_all, collect_market
from apps.market.models import Candle, CoveredRange, DataGap, Market, RawTrade
from apps.market.providers.registry import register as register_provider
from apps.market.providers.registry import unregister as unregister_provider
from apps.market.providers.replay import ReplayProvider
from apps.market.services import get_or_create_market, ingest_candles, ingest_trades_detailed
from apps.market.signals import candles_closed
from tests.celery_workers import workers_active
from tests.reliability.harness import other_backends, real_candles, terminate_backend, wait_until

pytestmark = [pytest.mark.django_db(transaction=True)]

SYM, TF = "BTC/USDT", "1m"


def _ledger(market: Market) -> list[tuple[int, int]]:
    return list(CoveredRange.objects.filter(market=market).values_list("first_timestamp", "last_timestamp"))


@pytest.fixture
def announced():
    """Close times announced through candles_closed (what bot ticks are enqueued from), per exchange."""
    seen: dict[str, list[int]] = {}

    def receiver(sender, closed, **kwargs):
        for market, timestamps in closed:
            seen.setdefault(market.exchange, []).extend(timestamps)

    candles_closed.connect(receiver, dispatch_uid="h12-announced")
    yield seen
    candles_closed.disconnect(dispatch_uid="h12-announced")


class PagedProvider:
    """Serves fixed pages in the order given, whatever is asked (an exchange with overlapping, unordered pages)."""

    name = "h12pages"

    def __init__(self, pages):
        self.pages = pages

    def fetch_candles(self, symbol, timeframe, since=None, until=None):
        yield from (p.reset_index(drop=True) for p in self.pages)

    def fetch_trades(self, *a, **k):
        raise NotImplementedError


def test_given_overlapping_and_out_of_order_pages_when_collected_then_each_candle_is_stored_and_announced_once(
        announced, figures):
    df = real_candles(300)
    revised = df.iloc[240:260].copy()
    revised["volume"] = revised["volume"] + 1.0  # the exchange corrected these candles in a later page
    pages = [df.iloc[100:200], df.iloc[150:250], df.iloc[0:120], revised, df.iloc[255:300]]
    market = get_or_create_market("h12pages", SYM, TF, provider="h12pages")
    result = collect_market(market.pk, provider=PagedProvider(pages))

    stored = pd.DataFrame(Candle.objects.filter(exchange="h12pages").order_by("timestamp")
                          .values("timestamp", "volume"))
    said = announced.get("h12pages", [])
    figures.fault = "5 candle pages, overlapping, one older than the ones before it, one revising stored candles"
    figures.faults_injected = len(pages)
    figures.decisions = len(stored)
    figures.lost = len(df) - stored["timestamp"].nunique()
    figures.doubled = (len(stored) - stored["timestamp"].nunique()) + (len(said) - len(set(said)))
    assert stored["timestamp"].tolist() == df["timestamp"].tolist()
    expected_volume = df["volume"].to_numpy().copy()
    expected_volume[240:255] += 1.0  # revised and not re-sent afterwards; 255.. came back unrevised in the last page
    np.testing.assert_array_equal(stored["volume"].to_numpy(), expected_volume)
    assert sorted(said) == df["timestamp"].tolist()
    assert result.updated == 10 + 5 and result.received == 100 + 100 + 120 + 20 + 45
    assert _ledger(market) == [(int(df["timestamp"].iloc[0]), int(df["timestamp"].iloc[-1]))]
    assert DataGap.objects.filter(market=market, status=DataGap.Status.OPEN).count() == 0
    figures.check("300 distinct candles stored once, each announced once; revisions updated in place, not "
                  "re-announced; the ledger is one covered run")
    figures.assert_nothing_lost_or_doubled()


MONTHS = [(2092, 3), (2092, 4)]


@pytest.fixture
def no_far_partitions():
    def drop():
        with connection.cursor() as cur:
            for y, m in MONTHS:
                cur.execute(f"DROP TABLE IF EXISTS {partitions.partition_name(y, m)}")
    drop()
    yield
    drop()


def _trades(month: tuple[int, int], n: int, prefix: str) -> pd.DataFrame:
    start = partitions._month_start(*month)
    return pd.DataFrame({"timestamp": start + np.arange(n, dtype=np.int64) * 1000, "price": 100.0 + np.arange(n),
                         "amount": np.full(n, 0.5), "side": ["buy", "sell"] * (n // 2),
                         "trade_id": [f"{prefix}{i}" for i in range(n)]})


def test_given_trades_needing_a_missing_partition_then_it_is_created_or_the_whole_batch_rolls_back(
        no_far_partitions, monkeypatch, figures):
    partitions.ensure_raw_trade_partitions(partitions._month_start(*MONTHS[0]), partitions._month_start(*MONTHS[0]))
    batch = pd.concat([_trades(MONTHS[0], 50, "a"), _trades(MONTHS[1], 50, "b")], ignore_index=True)

    # The partition of the second month disappears between the check and the insert (e.g. dropped concurrently):
    monkeypatch.setattr("apps.market.services.ensure_month_partitions", lambda months: [])
    with pytest.raises(Exception) as excinfo:
        ingest_trades_detailed(exchange="h12trades", symbol=SYM, df=batch)
    after_failure = RawTrade.objects.filter(exchange="h12trades").count()
    monkeypatch.undo()

    result = ingest_trades_detailed(exchange="h12trades", symbol=SYM, df=batch)
    stored = list(RawTrade.objects.filter(exchange="h12trades").values_list("trade_id", flat=True))
    figures.fault = "a trades batch whose second month has no raw_trades partition"
    figures.faults_injected = 1
    figures.decisions = len(batch)
    figures.lost = len(batch) - len(set(stored))
    figures.doubled = len(stored) - len(set(stored))
    assert "partition" in str(excinfo.value).lower()
    assert after_failure == 0  # no partial rows: the month that had a partition was rolled back too
    assert result.partitions_created == [partitions.partition_name(*MONTHS[1])]
    assert result.inserted == len(batch)
    figures.check("without the partition the batch failed naming it and stored nothing; with the on-demand "
                  "creation it stored all 100 trades once")
    figures.assert_nothing_lost_or_doubled()


def test_given_no_subscriber_when_candles_are_published_then_stored_and_running_bots_still_decide_them(
        redis_client, figures):
    from tradebot.notify import publish

    channel = f"h12-nobody-{uuid.uuid4().hex}"
    receivers = redis_client.publish(channel, b"{}")
    publish(channel, {"event": "nobody listens"})
    df = real_candles(120)
    ingest_candles(exchange="h12quiet", symbol=SYM, timeframe=TF, df=df.iloc[:60], publish=False)
    bot = Bot.objects.create(name="h12-quiet", strategy="sma_cross", parameters={"fast": 5, "slow": 20},
                             exchange="h12quiet", symbol=SYM, timeframe=TF)
    bot_services.arm_replay(bot, start=int(df["timestamp"].iloc[0]))  # decide the stored candles too
    bot_services.tick_bot(bot.pk)
    ingest_candles(exchange="h12quiet", symbol=SYM, timeframe=TF, df=df.iloc[60:], publish=True)  # eager tick
    stamps = list(Signal.objects.filter(bot=bot).values_list("timestamp", flat=True))
    figures.fault = "publishing on channels nobody subscribes to"
    figures.faults_injected = 2
    figures.decisions = len(stamps)
    figures.lost = len(df) - len(set(stamps))
    figures.doubled = len(stamps) - len(set(stamps))
    assert receivers == 0
    assert Candle.objects.filter(exchange="h12quiet").count() == len(df)
    figures.check("PUBLISH reached 0 subscribers without error; the new candles were stored and the running bot "
                  "decided every one (ticks do not depend on pub/sub)")
    figures.assert_nothing_lost_or_doubled()


# --- disk full / revoked permission for one market or one bot ------------------------------------------------------

FAULTS = {"disk_full": ("53100", "could not extend file: No space left on device (injected)"),
          "insufficient_privilege": ("42501", "permission denied for table (injected)"),
          "statement_timeout": ("57014", "canceling statement due to statement timeout (injected)")}


def _inject(table: str, condition: str, sqlstate: str, message: str) -> None:
    with connection.cursor() as cur:
        cur.execute(f"""
            CREATE OR REPLACE FUNCTION h12_fault() RETURNS trigger AS $$
            BEGIN
                IF {condition} THEN RAISE EXCEPTION '{message}' USING ERRCODE = '{sqlstate}'; END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        cur.execute(f"CREATE TRIGGER h12_fault BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW "
                    f"EXECUTE FUNCTION h12_fault()")


def _clear(table: str) -> None:
    with connection.cursor() as cur:
        cur.execute(f"DROP TRIGGER IF EXISTS h12_fault ON {table}")
        cur.execute("DROP FUNCTION IF EXISTS h12_fault()")


@pytest.fixture
def fault_cleanup():
    yield
    with connection.cursor() as cur:  # every trigger first: the function cannot go while one still uses it
        for table in ("market_data", "signals"):
            cur.execute(f"DROP TRIGGER IF EXISTS h12_fault ON {table}")
        cur.execute("DROP FUNCTION IF EXISTS h12_fault()")


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_given_writes_failing_for_one_market_then_error_on_that_market_others_go_on_and_it_recovers(
        fault, fault_cleanup, figures):
    sqlstate, message = FAULTS[fault]
    df = real_candles(200)
    for symbol in ("OK/USDT", "FULL/USDT"):
        ingest_candles(exchange="h12src", symbol=symbol, timeframe=TF, df=df, publish=False)
    register_provider("h12replay", lambda **kw: ReplayProvider(source="h12src", **kw))
    try:
        ok = get_or_create_market("h12dst", "OK/USDT", TF, watched=True, provider="h12replay")
        bad = get_or_create_market("h12dst", "FULL/USDT", TF, watched=True, provider="h12replay")
        _inject("market_data", "NEW.symbol = 'FULL/USDT' AND NEW.exchange = 'h12dst'", sqlstate, message)
        rounds = [collect_all() for _ in range(3)]  # three beat rounds while the fault lasts
        bad.refresh_from_db()
        during = (bad.last_error, Candle.objects.filter(exchange="h12dst", symbol="FULL/USDT").count())
        _clear("market_data")
        recovered = collect_all()
    finally:
        unregister_provider("h12replay")
    bad.refresh_from_db()
    ok.refresh_from_db()
    n_bad = Candle.objects.filter(exchange="h12dst", symbol="FULL/USDT").count()
    n_ok = Candle.objects.filter(exchange="h12dst", symbol="OK/USDT").count()
    figures.fault = f"{fault} (SQLSTATE {sqlstate}) on every write of one market for 3 collection rounds"
    figures.faults_injected = 3
    figures.decisions = n_ok + n_bad
    figures.lost = 2 * len(df) - (n_ok + n_bad)
    assert all("error" in r[str(bad)] and "injected" in r[str(bad)]["error"] for r in rounds)
    assert all("error" not in r[str(ok)] for r in rounds)
    assert "injected" in during[0] and during[1] == 0
    assert "error" not in recovered[str(bad)] and bad.last_error == "" and ok.last_error == ""
    figures.check(f"3 rounds: the market showed '{during[0][:60]}...', stored nothing, the other market was "
                  f"collected; when the fault cleared the next round stored all {len(df)} candles, error cleared")
    figures.assert_nothing_lost_or_doubled()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_given_signal_writes_failing_for_one_bot_then_the_error_is_on_that_bot_the_others_go_on_and_it_recovers(
        fault, fault_cleanup, figures):
    """A shard writes all its bots' rows in one statement per table, so a write the database refuses for one bot's
    rows fails the shard's transaction (nothing half-written); the shard is then ticked bot by bot: the healthy bot
    decides, the failing one gets the error (SQLSTATE and message) in last_error and is failed for the monitor, whose
    restarts fail the same way without raising (no crash loop: bounded by MAX_RESTARTS_PER_HOUR). When the fault
    clears, the next tick decides every candle of that bot once."""
    df = real_candles(150)
    ingest_candles(exchange="h12bots", symbol=SYM, timeframe=TF, df=df, publish=False)
    bots = []
    for name in ("h12-healthy", "h12-starved"):
        bot = Bot.objects.create(name=name, strategy="sma_cross", parameters={"fast": 5, "slow": 20},
                                 exchange="h12bots", symbol=SYM, timeframe=TF)
        bot_services.arm_replay(bot, start=int(df["timestamp"].iloc[0]))  # decide the stored candles too
        bots.append(bot)
    healthy, starved = bots
    sqlstate, message = FAULTS[fault]
    _inject("signals", f"NEW.bot_id = {starved.pk}", sqlstate, message)
    reports = [bot_services.tick_market("h12bots", SYM, TF) for _ in range(2)]  # two ticks while the fault lasts
    during = {b.name: Signal.objects.filter(bot=b).count() for b in bots}
    starved.refresh_from_db()
    error_during = (starved.last_error, starved.failed_at is not None, starved.status)
    monitor = [bot_services.monitor_bots() for _ in range(2)]  # its restarts fail the same way, nothing raises
    starved.refresh_from_db()
    restarts_during = starved.restart_count
    _clear("signals")
    bot_services.tick_market("h12bots", SYM, TF)
    counts = {b.name: list(Signal.objects.filter(bot=b).values_list("timestamp", flat=True)) for b in bots}
    figures.fault = f"{fault} (SQLSTATE {sqlstate}) on every signal insert of one bot of a shard for 2 ticks"
    figures.faults_injected = 2 + len(monitor)
    figures.decisions = sum(len(v) for v in counts.values())
    figures.lost = sum(len(df) - len(set(v)) for v in counts.values())
    figures.doubled = sum(len(v) - len(set(v)) for v in counts.values())
    figures.extra = {"error_on_bot": error_during[0], "monitor_restarts_during_fault": restarts_during}
    assert during == {"h12-healthy": len(df), "h12-starved": 0}  # the healthy bot went on; nothing half-written
    assert all(r.skipped.startswith("error: database write failed") for rep in reports for r in rep
               if r.bot_id == starved.pk)
    assert error_during[0].startswith(f"database write failed (SQLSTATE {sqlstate}): ")
    assert "injected" in error_during[0]
    assert error_during[1] and error_during[2] == Bot.Status.RUNNING
    assert [m.restarted for m in monitor] == [[starved.pk], [starved.pk]] and restarts_during == 2
    for bot in bots:
        bot.refresh_from_db()
        assert bot.status == Bot.Status.RUNNING and bot.last_candle_timestamp == int(df["timestamp"].iloc[-1])
        assert bot.failed_at is None
    figures.check(f"during the fault the healthy bot decided all {len(df)} candles, the other stored nothing and "
                  f"showed '{error_during[0][:70]}...'; 2 monitor restarts failed the same way without raising; "
                  "after the fault cleared the next tick decided every candle of both bots once")
    figures.assert_nothing_lost_or_doubled()


# --- pg_terminate_backend on a worker mid ingest -------------------------------------------------------------------

@pytest.mark.workers
def test_given_the_worker_connection_terminated_mid_ingest_then_rolled_back_retried_and_stored_once(figures):
    from apps.market.tasks import collect_market_task

    df = real_candles(300)
    ingest_candles(exchange="binance", symbol="H12/TERM", timeframe=TF, df=df, publish=False)
    market = get_or_create_market("replay", "H12/TERM", TF, provider="replay")
    env = {"TRADEBOT_FETCH_LIMIT": "100"}  # 3 pages, one transaction each
    with workers_active(concurrency=1, queues="collect", extra_env=env):
        with transaction.atomic():
            with connection.cursor() as cur:  # the ledger write of the first page will wait on this lock
                cur.execute("LOCK TABLE market_coveredrange IN EXCLUSIVE MODE")
            collect_market_task.delay(market.pk)
            pid = wait_until(lambda: other_backends(waiting_on_lock=True), what="the worker blocked mid ingest")[0]
            assert terminate_backend(pid)
            # The retry (a new attempt on a fresh connection) reaches the same lock: the first attempt is over.
            wait_until(lambda: [p for p in other_backends(waiting_on_lock=True) if p != pid],
                       what="the retried ingest", limit_s=45)
            with connection.cursor() as cur:
                cur.execute("SELECT count(*) FROM market_data WHERE exchange = 'replay'")
                committed_after_kill = cur.fetchone()[0]
        wait_until(lambda: Candle.objects.filter(exchange="replay").count() == len(df),
                   what="the retried collection stored everything", limit_s=45)
        # The success is recorded on the market just after the last page commits (clearing the killed attempt's
        # error): wait for that too, not only for the candles.
        wait_until(lambda: (m := Market.objects.get(pk=market.pk)).last_collected_at is not None and m.last_error == "",
                   what="the retried collection recorded its success", limit_s=45)
        market.refresh_from_db()
    stamps = list(Candle.objects.filter(exchange="replay").values_list("timestamp", flat=True))
    figures.fault = "pg_terminate_backend on the worker's connection inside an ingest transaction"
    figures.faults_injected = 1
    figures.decisions = len(stamps)
    figures.lost = len(df) - len(set(stamps))
    figures.doubled = len(stamps) - len(set(stamps))
    assert committed_after_kill == 0  # the terminated transaction's rows were rolled back
    assert _ledger(market) == [(int(df["timestamp"].iloc[0]), int(df["timestamp"].iloc[-1]))]
    assert market.last_error == ""
    figures.check("the killed transaction left no rows; the task was retried on a fresh connection and stored "
                  "the 300 candles once with a consistent ledger")
    figures.assert_nothing_lost_or_doubled()
