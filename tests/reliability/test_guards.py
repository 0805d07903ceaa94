"""Every guard is load-bearing: each test here fails when its guard is removed (checked by removing it).

Guards about processes run on real Celery worker processes (tests/celery_workers.py); the database guards run
concurrent sessions against the real PostgreSQL test database.
"""

from __future__ import annotations

import io
import logging
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from apps.backtest import services as backtest_services
from apps.backtest.models import BacktestRun, Status, Sweep, WalkForward
from apps.bots import services as bot_services
from apps.bots.models import Bot, Signal
from apps.market import partitions
from apps.market import services as market_services
from apps.market.models import CoveredRange, DataGap, Market
from apps.market.providers.registry import register as register_provider
from apps.market.providers.registry import unregister as unregister_provider
from apps.market.services import ingest_candles
from tests.celery_workers import workers_active
from tests.reliability import strategies
from tests.reliability.harness import free_port, real_candles, wait_until

pytestmark = [pytest.mark.django_db(transaction=True)]

MARKET = {"exchange": "h12guard", "symbol": "BTC/USDT", "timeframe": "1m"}
WORKER_ENV = {"TRADEBOT_STRATEGIES": strategies.PATHS}


@pytest.fixture
def stored():
    df = real_candles(300)
    ingest_candles(**MARKET, df=df, publish=False)
    return df


@pytest.fixture
def test_strategies():
    strategies.register_all()
    strategies.reset_keys()
    yield
    strategies.reset_keys()


def _running_bot(stored, name: str, strategy: str = "sma_cross") -> Bot:
    bot = Bot.objects.create(name=name, strategy=strategy, parameters={"fast": 5, "slow": 20}, **MARKET)
    bot_services.arm_replay(bot, start=int(stored["timestamp"].iloc[0]))  # decides the stored candles too
    return bot


# --- worker start resumes running bots -----------------------------------------------------------------------------

@pytest.mark.workers
def test_given_running_bots_behind_when_a_real_worker_starts_then_they_catch_up_and_stopped_bots_stay(
        stored, figures):
    """Guard: apps.bots.tasks._resume_on_worker_start (worker_ready)."""
    behind = _running_bot(stored, "h12-behind")
    bot_services.tick_bot(behind.pk, until=int(stored["timestamp"].iloc[99]))
    stopped = _running_bot(stored, "h12-stopped")
    bot_services.stop_bot(stopped)
    last = int(stored["timestamp"].iloc[-1])

    with workers_active(concurrency=1, queues="bots"):
        wait_until(lambda: Bot.objects.get(pk=behind.pk).last_candle_timestamp == last,
                   what="the running bot resumed by the worker-start hook", limit_s=45)

    signals = list(Signal.objects.filter(bot=behind).values_list("timestamp", flat=True))
    figures.fault = "worker (re)start with running bots behind"
    figures.faults_injected = 1
    figures.decisions = len(signals)
    figures.lost = len(stored) - len(set(signals))
    figures.doubled = len(signals) - len(set(signals))
    assert Signal.objects.filter(bot=stopped).count() == 0
    figures.check("a running bot 200 candles behind caught up on worker start; a stopped bot was not ticked")
    figures.assert_nothing_lost_or_doubled()


# --- chord error callback ------------------------------------------------------------------------------------------

@pytest.mark.workers
def test_given_a_chunk_that_always_fails_transiently_when_retries_run_out_then_the_sweep_is_failed_with_the_reason(
        stored, test_strategies, figures):
    """Guard: the chord body's .on_error(fail_sweep_task) in apps.backtest.services.dispatch_sweep."""
    with workers_active(concurrency=2, queues="backtest", extra_env=WORKER_ENV):
        sweep = backtest_services.create_sweep(strategy="h12_always_transient", grid={"fast": [5], "slow": [20, 30]},
                                               chunk_size=1, **MARKET)
        sweep = wait_until(lambda: (s := Sweep.objects.get(pk=sweep.pk)).status not in (Status.PENDING, Status.RUNNING)
                           and s,
                           what="the sweep leaves RUNNING", limit_s=50)
    calls = int(strategies.redis_client().get(strategies.CALLS) or 0)
    figures.fault = "a sweep chunk failing transiently on every attempt"
    figures.faults_injected = calls
    figures.decisions = 1
    figures.extra = {"attempts": calls}
    assert sweep.status == Status.FAILED
    assert sweep.error.startswith("a chunk failed") and "OperationalError" in sweep.error
    assert "simulated transient" in sweep.error
    assert calls >= 4  # the first attempt + 3 retries of at least one chunk
    figures.check("after 1 + 3 attempts the chord error callback marked the sweep FAILED naming the error")


# --- redelivered backtest run that already finished ----------------------------------------------------------------

@pytest.mark.workers
def test_given_a_finished_run_when_its_task_is_delivered_again_then_it_is_not_computed_or_stored_twice(
        stored, test_strategies, figures):
    """Guard: `if run.status == Status.DONE: return run` in apps.backtest.services.execute_run."""
    from apps.backtest.tasks import run_backtest_task

    with workers_active(concurrency=1, queues="backtest", extra_env=WORKER_ENV):
        run = backtest_services.create_run(strategy="h12_counting", parameters={"fast": 5, "slow": 20}, **MARKET)
        wait_until(lambda: BacktestRun.objects.get(pk=run.pk).status == Status.DONE, what="run done")
        first = BacktestRun.objects.get(pk=run.pk)
        for _ in range(2):  # a redelivery (acks_late after a lost ack) is the same message again
            run_backtest_task.delay(run.pk).get(timeout=30)
    again = BacktestRun.objects.get(pk=run.pk)
    computes = int(strategies.redis_client().get(strategies.CALLS))
    figures.fault = "a finished backtest run's task delivered twice more"
    figures.faults_injected = 2
    figures.decisions = 1
    figures.doubled = computes - 1
    assert (again.finished_at, again.started_at, again.metrics) == (first.finished_at, first.started_at, first.metrics)
    figures.check("two redeliveries of a DONE run computed nothing and left the stored result untouched")
    figures.assert_nothing_lost_or_doubled()


# --- row lock in a bot tick ----------------------------------------------------------------------------------------

@pytest.mark.workers
def test_given_two_workers_ticking_one_bot_at_once_then_each_candle_is_decided_once(stored, test_strategies, figures):
    """Guard: Bot.objects.select_for_update() in apps.bots.services.tick_bot."""
    from apps.bots.tasks import tick_bot_task

    bot = _running_bot(stored, "h12-locked", strategy="h12_barrier")
    bot_services.stop_bot(bot)  # started once the workers are up, so the worker-start resume does not tick it
    with workers_active(concurrency=2, queues="bots", extra_env=WORKER_ENV):
        bot_services.arm_replay(bot, start=int(stored["timestamp"].iloc[0]))  # decides the stored candles
        results = [tick_bot_task.delay(bot.pk) for _ in range(2)]
        decided = [r.get(timeout=40) for r in results]
    bot.refresh_from_db()
    stamps = list(Signal.objects.filter(bot=bot).values_list("timestamp", flat=True))
    figures.fault = "two concurrent ticks of one bot on two worker processes"
    figures.faults_injected = 1
    figures.decisions = sum(decided)
    figures.doubled = sum(decided) - len(stored)
    figures.lost = len(stored) - len(set(stamps))
    assert sorted(decided) == [0, len(stored)], decided
    assert bot.last_error == "" and bot.failed_at is None
    figures.check("the second tick waited for the first and found nothing left to decide (no error, no duplicate)")
    figures.assert_nothing_lost_or_doubled()


# --- per-market ingest lock ----------------------------------------------------------------------------------------

def test_given_two_adjacent_pages_ingested_concurrently_then_the_ledger_covers_both_as_one_run(
        monkeypatch, figures):
    """Guard: the Market row lock (select_for_update) in apps.market.services.ingest_candles."""
    df = real_candles(200)
    pages = [df.iloc[:100].reset_index(drop=True), df.iloc[100:].reset_index(drop=True)]
    market_services.get_or_create_market(**MARKET)
    barrier = threading.Barrier(2, timeout=3)
    real_upsert = market_services.upsert_candles_many

    def upsert_then_meet(frames):  # both sessions inside their transaction at once, unless serialised
        out = real_upsert(frames)
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        return out

    monkeypatch.setattr(market_services, "upsert_candles_many", upsert_then_meet)
    errors: list[BaseException] = []

    def ingest(page):
        try:
            ingest_candles(**MARKET, df=page, publish=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ingest, args=(p,)) for p in pages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    market = Market.objects.get(**MARKET)
    ranges = list(CoveredRange.objects.filter(market=market).values_list("first_timestamp", "last_timestamp"))
    gaps = DataGap.objects.filter(market=market, status=DataGap.Status.OPEN).count()
    figures.fault = "two ingests of adjacent pages of one market at the same time"
    figures.faults_injected = 1
    figures.decisions = 2
    assert errors == []
    assert ranges == [(int(df["timestamp"].iloc[0]), int(df["timestamp"].iloc[-1]))], ranges
    assert gaps == 0
    figures.check("the ledger shows one covered run over both pages and no gap")


# --- partition-creation lock ---------------------------------------------------------------------------------------

FAR_MONTHS = [(2091, 1), (2091, 2)]


@pytest.fixture
def far_partitions():
    def drop():
        with connection.cursor() as cur:
            for y, m in FAR_MONTHS:
                cur.execute(f"DROP TABLE IF EXISTS {partitions.partition_name(y, m)}")
    drop()
    yield [partitions.partition_name(y, m) for y, m in FAR_MONTHS]
    drop()


def test_given_two_sessions_creating_the_same_partitions_then_each_is_created_once_without_error(
        far_partitions, monkeypatch, figures):
    """Guard: pg_advisory_xact_lock in apps.market.partitions.ensure_raw_trade_partitions."""
    barrier = threading.Barrier(2, timeout=3)
    real_existing = partitions.existing_partitions
    calls = threading.local()

    def existing_then_meet():
        out = real_existing()
        calls.n = getattr(calls, "n", 0) + 1
        if calls.n == 2:  # the re-check taken under the lock: both sessions there at once, unless serialised
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
        return out

    monkeypatch.setattr(partitions, "existing_partitions", existing_then_meet)
    start = partitions._month_start(*FAR_MONTHS[0])
    end = partitions._month_start(*FAR_MONTHS[-1])
    created: list[list[str]] = []
    errors: list[BaseException] = []

    def create():
        try:
            created.append(partitions.ensure_raw_trade_partitions(start, end))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    names = [n for lst in created for n in lst]
    figures.fault = "two sessions creating the same raw_trades partitions at once"
    figures.faults_injected = 1
    figures.decisions = len(far_partitions)
    figures.doubled = len(names) - len(set(names))
    figures.lost = len(set(far_partitions) - set(real_existing()))
    assert errors == [], errors
    assert sorted(names) == sorted(far_partitions)
    figures.check("each partition was created by exactly one session, the other saw it and created nothing")
    figures.assert_nothing_lost_or_doubled()


# --- failures marked FAILED ----------------------------------------------------------------------------------------

@pytest.mark.workers
def test_given_a_run_with_no_candles_when_a_worker_runs_it_then_failed_with_the_reason_and_the_worker_goes_on(
        stored, figures):
    """Guard: the except block of apps.backtest.services.execute_run (status FAILED + error)."""
    with workers_active(concurrency=1, queues="backtest"):
        bad = backtest_services.create_run(strategy="sma_cross", parameters={"fast": 5, "slow": 20},
                                           exchange="h12nowhere", symbol="NO/DATA", timeframe="1m")
        good = backtest_services.create_run(strategy="sma_cross", parameters={"fast": 5, "slow": 20}, **MARKET)
        wait_until(lambda: BacktestRun.objects.get(pk=good.pk).status == Status.DONE, what="the good run done")
        bad = wait_until(lambda: (r := BacktestRun.objects.get(pk=bad.pk)).status != Status.RUNNING and r,
                         what="the bad run finished")
    figures.fault = "a backtest run whose data does not exist"
    figures.faults_injected = 1
    figures.decisions = 2
    assert bad.status == Status.FAILED
    assert bad.error.startswith("BacktestInputError: no candles for") and bad.finished_at is not None
    assert bad.metrics == {} and bad.trades == []
    figures.check("the run is FAILED with 'no candles for ...', nothing half-stored; the next run on that worker "
                  "is DONE")


def test_given_a_walkforward_with_no_candles_then_it_is_stored_failed_with_the_reason(figures):
    """Guard: the except block of apps.backtest.services.create_and_run_walkforward."""
    with pytest.raises(Exception):  # noqa: B017 - the caller sees the error too
        backtest_services.create_and_run_walkforward(strategy="sma_cross", grid={"fast": [5], "slow": [20]},
                                                     train=100, test=50, exchange="h12nowhere", symbol="NO/DATA",
                                                     timeframe="1m")
    study = WalkForward.objects.get()
    figures.fault = "a walk-forward study over missing data"
    figures.faults_injected = 1
    figures.decisions = 1
    assert study.status == Status.FAILED and study.error and study.finished_at is not None
    assert study.windows in ([], None, {})
    figures.check(f"study stored FAILED: {study.error[:80]}")


# --- Redis publish failure -----------------------------------------------------------------------------------------

def test_given_redis_down_when_new_candles_are_ingested_then_stored_and_the_publish_failure_is_logged(
        settings, caplog, figures):
    """Guard: the try/except around Redis in tradebot.notify.publish / publish_many."""
    import tradebot.notify as notify

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings.NOTIFY_BACKEND = "redis"
    old_client, notify._redis_client = notify._redis_client, None
    try:
        with caplog.at_level(logging.ERROR, logger="tradebot.notify"):
            notify.publish("system:events", {"event": "h12"})
            df = real_candles(20)
            result = ingest_candles(**MARKET, df=df, publish=True)
    finally:
        notify._redis_client = old_client
    figures.fault = "Redis unreachable while publishing"
    figures.faults_injected = 2
    figures.decisions = len(df)
    figures.lost = len(df) - len(result.new_timestamps)
    failures = [r for r in caplog.records if "publish" in r.getMessage() and "failed" in r.getMessage()]
    assert len(failures) >= 2
    figures.check("publish and the after-commit candle announcement logged the failure; all 20 candles stored")
    figures.assert_nothing_lost_or_doubled()


# --- collect --market with a failing market ------------------------------------------------------------------------

def test_given_a_failing_market_first_when_collect_market_runs_then_the_others_are_collected_and_exit_is_1(
        stored, figures):
    """Guard: the per-market try/except in apps.market.management.commands.collect (--market path)."""
    from apps.market.providers.replay import ReplayProvider

    class Broken:
        name = "h12broken"

        def fetch_candles(self, *a, **k):
            raise ConnectionError("exchange unreachable (injected)")

        def fetch_trades(self, *a, **k):
            raise ConnectionError("exchange unreachable (injected)")

    register_provider("h12broken", lambda **_: Broken())
    register_provider("h12replay", lambda **kw: ReplayProvider(source=MARKET["exchange"], **kw))
    try:
        bad = market_services.get_or_create_market("a-h12broken", "BTC/USDT", "1m", provider="h12broken")
        good = market_services.get_or_create_market("b-h12ok", "BTC/USDT", "1m", provider="h12replay")
        out = io.StringIO()
        with pytest.raises(CommandError) as excinfo:
            call_command("collect", "--market", str(bad.pk), "--market", str(good.pk), stdout=out)
    finally:
        unregister_provider("h12broken")
        unregister_provider("h12replay")
    lines = out.getvalue().splitlines()
    bad.refresh_from_db()
    good.refresh_from_db()
    from apps.market.models import Candle

    stored_good = Candle.objects.filter(exchange="b-h12ok").count()
    figures.fault = "collect --market with the first market failing"
    figures.faults_injected = 1
    figures.decisions = 2
    figures.lost = len(stored) - stored_good
    assert "1 of 2 markets failed" in str(excinfo.value)
    assert any("a-h12broken" in line and "ERROR ConnectionError: exchange unreachable" in line for line in lines)
    assert any("b-h12ok" in line and f"received {len(stored)}" in line for line in lines), lines
    assert "exchange unreachable" in bad.last_error and good.last_error == ""
    figures.check("the failing market got an ERROR line and last_error, the next one was collected in full, exit 1")
    figures.assert_nothing_lost_or_doubled()
