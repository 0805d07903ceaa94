"""Crash recovery: failed or silent bots are restarted at most 3 times per rolling hour, then set to error."""

from __future__ import annotations

import pandas as pd
import pytest
from django.utils import timezone

from apps.bots import services
from apps.bots.models import Bot
from apps.market.services import ingest_candles

pytestmark = pytest.mark.django_db(transaction=True)

MARKET = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m"}
MINUTE = 60_000


@pytest.fixture
def stored(data_dir) -> pd.DataFrame:
    df = pd.read_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", nrows=300)
    df["timestamp"] = df["timestamp"] + MINUTE
    df = df[["timestamp", "open", "high", "low", "close", "volume"]]
    ingest_candles(**MARKET, df=df, publish=False)
    return df


def running_bot(stored, name="sup", parameters=None) -> Bot:
    bot = Bot.objects.create(name=name, strategy="sma_cross", parameters=parameters or {"fast": 5, "slow": 20},
                             **MARKET)
    services.arm_replay(bot, start=int(stored["timestamp"].iloc[0]))
    return bot


def now_ms() -> int:
    return int(timezone.now().timestamp() * 1000)


def test_given_a_failing_bot_when_monitored_then_restarted_three_times_per_hour_then_error(stored, redis_client):
    bot = running_bot(stored)
    Bot.objects.filter(pk=bot.pk).update(parameters={"fast": 50, "slow": 20})  # every tick raises
    events = redis_client.pubsub(ignore_subscribe_messages=True)
    events.subscribe("system:events")

    t0 = now_ms()
    outcomes = []
    for i in range(4):
        services.tick_market(**MARKET)  # fails, records the error
        bot.refresh_from_db()
        assert bot.failed_at is not None and "fast" in bot.last_error
        outcomes.append(services.monitor_bots(now_ms=t0 + i * 60_000))

    bot.refresh_from_db()
    assert [bool(o.restarted) for o in outcomes] == [True, True, True, False]
    assert outcomes[3].gave_up == [bot.pk]
    assert bot.status == Bot.Status.ERROR
    assert bot.restart_count == 3
    assert "gave up after 3 restarts" in bot.last_error
    message = None
    for _ in range(50):
        message = events.get_message(timeout=0.1)
        if message:
            break
    assert message is not None and b"bot_gave_up" in message["data"]
    events.close()


def test_given_restarts_older_than_an_hour_when_monitored_then_the_window_rolls(stored):
    bot = running_bot(stored)
    t0 = now_ms()
    Bot.objects.filter(pk=bot.pk).update(restart_times=[t0 - 3_700_000, t0 - 3_650_000, t0 - 3_620_000],
                                         failed_at=timezone.now(), last_error="boom")

    report = services.monitor_bots(now_ms=t0)

    bot.refresh_from_db()
    assert report.restarted == [bot.pk]
    assert bot.status == Bot.Status.RUNNING
    assert bot.restart_times == [t0]


def test_given_a_silent_bot_with_pending_candles_when_monitored_then_restart_catches_up(stored):
    bot = running_bot(stored)
    services.tick_bot(bot.pk, until=int(stored["timestamp"].iloc[100]))  # decided 101 of 300, then went silent
    Bot.objects.filter(pk=bot.pk).update(heartbeat_at=timezone.now() - pd.Timedelta(minutes=10))

    report = services.monitor_bots()

    bot.refresh_from_db()
    assert report.restarted == [bot.pk]
    assert bot.last_candle_timestamp == int(stored["timestamp"].iloc[-1])  # the restart tick (eager) caught up


def test_given_an_idle_but_healthy_bot_when_monitored_then_it_is_left_alone(stored):
    bot = running_bot(stored)
    services.tick_bot(bot.pk)
    Bot.objects.filter(pk=bot.pk).update(heartbeat_at=timezone.now() - pd.Timedelta(hours=2))

    report = services.monitor_bots()

    assert report.restarted == [] and report.gave_up == []


def test_given_running_bots_when_a_worker_starts_then_they_resume_from_their_last_candle(stored):
    bot = running_bot(stored)
    services.tick_bot(bot.pk, until=int(stored["timestamp"].iloc[50]))
    stopped = running_bot(stored, name="stopped")
    services.stop_bot(stopped)

    resumed = services.resume_running_bots()

    bot.refresh_from_db()
    assert resumed == [bot.pk]
    assert bot.last_candle_timestamp == int(stored["timestamp"].iloc[-1])
    assert bot.signals.count() == len(stored)


def test_given_many_running_bots_on_one_market_when_a_worker_starts_then_each_bot_is_enqueued_once(stored, settings):
    settings.TRADEBOT_TICK_SHARD_SIZE = 2
    bots = [running_bot(stored, name=f"fleet-{i}") for i in range(5)]

    resumed = services.resume_running_bots()

    assert resumed == sorted(b.pk for b in bots)  # one market, three shards: not one round of shards per bot


def test_given_bots_schedule_when_periodic_tasks_are_set_up_then_the_monitor_is_scheduled():
    from django.core.management import call_command
    from django_celery_beat.models import PeriodicTask

    call_command("setup_periodic_tasks", verbosity=0)

    assert PeriodicTask.objects.filter(task="apps.bots.tasks.monitor_bots_task", enabled=True).count() == 1
