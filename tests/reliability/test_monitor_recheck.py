"""The beat monitor decides on what it reads under the bot's row lock, not on the unlocked read before it.

Guard: the re-check of status / failed_at / silence after `select_for_update` in apps.bots.services.monitor_bots. A
tick that holds the bot's row lock (as every tick does) and recovers the bot while the monitor waits for that lock
must win: the monitor neither restarts that bot nor counts a restart for it.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction
from django.utils import timezone

from apps.bots import services as bot_services
from apps.bots.models import Bot
from apps.market.services import ingest_candles
from tests.reliability.harness import other_backends, real_candles, wait_until

pytestmark = [pytest.mark.django_db(transaction=True)]

MARKET = {"exchange": "h12mon", "symbol": "BTC/USDT", "timeframe": "1m"}


def _failed_bot(df, name: str) -> Bot:
    bot = Bot.objects.create(name=name, strategy="sma_cross", parameters={"fast": 5, "slow": 20}, **MARKET)
    bot_services.arm_replay(bot, start=int(df["timestamp"].iloc[0]))
    bot_services.tick_bot(bot.pk)  # decides every stored candle: nothing pending, not silent
    Bot.objects.filter(pk=bot.pk).update(failed_at=timezone.now(), last_error="OperationalError: injected")
    return Bot.objects.get(pk=bot.pk)


@pytest.mark.parametrize("how", ["recovered", "stopped"])
def test_given_a_failed_bot_that_recovers_while_the_monitor_waits_for_its_lock_then_it_is_not_restarted(
        how, figures):
    df = real_candles(120)
    ingest_candles(**MARKET, df=df, publish=False)
    racing = _failed_bot(df, f"h12-racing-{how}")
    failed = _failed_bot(df, f"h12-failed-{how}")  # the control: really failed, must be restarted
    locked = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def tick_holding_the_lock():
        """What a tick does: the bot's row lock, then (here) the bot recovers and the tick commits."""
        try:
            with transaction.atomic():
                Bot.objects.select_for_update().get(pk=racing.pk)
                locked.set()
                release.wait(30)
                if how == "recovered":
                    Bot.objects.filter(pk=racing.pk).update(failed_at=None, last_error="", heartbeat_at=timezone.now())
                else:
                    Bot.objects.filter(pk=racing.pk).update(status=Bot.Status.STOPPED)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    reports = []

    def monitor():
        try:
            reports.append(bot_services.monitor_bots())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    holder = threading.Thread(target=tick_holding_the_lock)
    holder.start()
    assert locked.wait(10)
    mon = threading.Thread(target=monitor)
    mon.start()
    waiting = wait_until(lambda: other_backends(waiting_on_lock=True), what="the monitor waiting on the bot's lock",
                         limit_s=20)
    release.set()
    holder.join(30)
    mon.join(60)
    assert errors == [], errors
    report = reports[0]
    racing.refresh_from_db()
    failed.refresh_from_db()
    figures.fault = f"a failed bot {how} by a tick holding its row lock while the monitor waited for it"
    figures.faults_injected = 1
    figures.decisions = len(report.restarted) + len(report.gave_up)
    figures.doubled = int(racing.pk in report.restarted) + racing.restart_count
    figures.extra = {"monitor_backends_waiting": len(waiting), "restarted": report.restarted}
    assert report.restarted == [failed.pk] and report.gave_up == []
    assert racing.restart_count == 0 and racing.restart_times == []
    assert racing.status == (Bot.Status.RUNNING if how == "recovered" else Bot.Status.STOPPED)
    assert failed.restart_count == 1
    figures.check(f"the monitor read the bot as failed, waited for its lock, saw it {how} and left it alone "
                  "(0 restarts counted); the really failed bot beside it was restarted once")
    figures.assert_nothing_lost_or_doubled()
