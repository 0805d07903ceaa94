"""The fleet on real processes: celery worker(s) and beat on PostgreSQL + Redis, killed and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import call_command
from django.db import connection

from apps.bots import services
from apps.bots.models import Bot, BotPerformance, Signal, Trade
from apps.bots.strategies.registry import create_strategy
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fleet import strategy_actions, twin_fills
from apps.market.selectors import candle_frame
from apps.market.services import ingest_candles
from tests.apps.bots import worker_strategies  # noqa: F401 - registers h8_always_raises here too
from tests.celery_workers import ROOT, _database_url, start_worker, stop_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]

MARKET = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h"}
CSV_1H = ROOT / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-1h.csv"
ENV = {"TRADEBOT_STRATEGIES": "tests.apps.bots.worker_strategies.AlwaysRaises",
       "TRADEBOT_BROKER_VISIBILITY_TIMEOUT": "5"}
GRID = [{"fast": 5, "slow": 20}, {"fast": 8, "slow": 30}, {"fast": 3, "slow": 12}]


@pytest.fixture
def candles() -> pd.DataFrame:
    df = pd.read_csv(CSV_1H)
    df["timestamp"] += 3_600_000
    return df[["timestamp", "open", "high", "low", "close", "volume"]]


@pytest.fixture
def dispatching():
    """This process enqueues for real (not eagerly); queues start empty."""
    from tradebot.celery import app

    was = app.conf.task_always_eager
    app.control.purge()
    app.conf.task_always_eager = False
    yield app
    app.conf.task_always_eager = was


def worker(**kw):
    return start_worker(queues="bots,market", extra_env=ENV, **kw)[0]


def wait_for(check, timeout: float = 240.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def twin_of(bot: Bot) -> tuple[dict[int, str], list[tuple], list[tuple]]:
    """The backtest twin of a bot over the stored candles: its signals, fills and per-candle equity."""
    from apps.bots.trading.fills import simulate

    first = Signal.objects.filter(bot=bot).order_by("timestamp").values_list("timestamp", flat=True).first()
    c = CandleArrays.from_frame(candle_frame(**MARKET, start=bot.history_start))
    strategy = create_strategy(bot.strategy, bot.parameters)
    actions = strategy_actions(c, strategy)
    fills = twin_fills(c, strategy, services.rules_for(bot), trading_from=first, signals=actions)
    masked = actions.copy()
    masked[c.timestamp < first] = 0
    sim = simulate(c.timestamp, c.open, c.high, c.low, c.close, masked, services.rules_for(bot))
    names = {1: "buy", 0: "hold", -1: "sell"}
    keep = c.timestamp >= first
    signals = {int(t): names[int(a)] for t, a in zip(c.timestamp[keep], actions[keep], strict=True)}
    equity = [(int(t), float(e)) for t, e in zip(c.timestamp[keep], sim.equity[keep], strict=True)]
    return signals, [(f["timestamp"], f["side"], f["price"], f["amount"], f["fee"]) for f in fills], equity


def recorded(bot: Bot) -> tuple[dict[int, str], list[tuple], list[tuple]]:
    signals = dict(Signal.objects.filter(bot=bot).values_list("timestamp", "action"))
    fills = list(Trade.objects.filter(bot=bot).order_by("timestamp", "side")
                 .values_list("timestamp", "side", "price", "amount", "fee"))
    equity = list(BotPerformance.objects.filter(bot=bot).order_by("timestamp").values_list("timestamp", "equity"))
    return signals, fills, equity


def test_given_worker_and_beat_when_candles_are_replayed_then_every_bot_equals_its_backtest(
        tmp_path, candles, dispatching):
    from apps.market.providers.replay import replay_into
    from apps.market.services import market_watch

    market_watch(exchange="replay", symbol="BTC/USDT", timeframe="1h")  # provider "replay"
    ingest_candles(exchange="binance", symbol="BTC/USDT", timeframe="1h", df=candles, publish=False)
    for i, params in enumerate(GRID):
        (tmp_path / f"b{i}.json").write_text(json.dumps({"name": f"e2e{i}", "strategy": "sma_cross",
                                                         "parameters": params, "exchange": "replay",
                                                         "symbol": "BTC/USDT", "timeframe": "1h",
                                                         "stop_loss": 0.02 if i == 0 else None}))
    call_command("sync_bots", "--dir", str(tmp_path))
    call_command("setup_periodic_tasks", verbosity=0)
    head = int(candles["timestamp"].iloc[99])
    replay_into("BTC/USDT", "1h", source="binance", target="replay", until=head, publish=False)  # history
    call_command("bot", "start", "--all")
    proc = worker(concurrency=2)
    beat_log = tempfile.NamedTemporaryFile(prefix="celery-beat-", suffix=".log", delete=False)  # noqa: SIM115
    env = {**os.environ, **ENV, "DJANGO_SETTINGS_MODULE": "tradebot.settings.test", "CELERY_TASK_ALWAYS_EAGER": "0",
           "DATABASE_URL": _database_url(dict(connection.settings_dict), connection.settings_dict["NAME"])}
    beat = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tradebot", "beat", "-l", "info", "-S",
                             "django_celery_beat.schedulers:DatabaseScheduler", "-s", str(tmp_path / "beat")],
                            cwd=ROOT, env=env, stdout=beat_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        replay_into("BTC/USDT", "1h", source="binance", target="replay", since=head, speed=None)
        last = int(candles["timestamp"].iloc[-1])
        bots = list(Bot.objects.filter(name__startswith="e2e"))
        wait_for(lambda: all(b.last_candle_timestamp == last for b in Bot.objects.filter(pk__in=[x.pk for x in bots])),
                 what="every bot to decide the last replayed candle")
        wait_for(lambda: "Sending due task bots: monitor" in Path(beat_log.name).read_text(), timeout=120,
                 what="beat to dispatch the monitor")
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(timeout=30)
        stop_worker(proc)
    total_fills = 0
    for bot in Bot.objects.filter(name__startswith="e2e"):
        got, want = recorded(bot), twin_of(bot)
        assert min(got[0]) == int(candles["timestamp"].iloc[100])  # trades only after its start
        assert got[0] == want[0]
        assert got[1] == want[1]
        assert [t for t, _ in got[2]] == [t for t, _ in want[2]]
        assert [e for _, e in got[2]] == pytest.approx([e for _, e in want[2]], rel=1e-12)
        total_fills += len(got[1])
    assert total_fills >= 6


def _start_fleet(candles: pd.DataFrame, n_bots: int, history: int) -> list[Bot]:
    ingest_candles(**MARKET, df=candles.iloc[:history], publish=False)
    bots = [Bot.objects.create(name=f"f{i}", strategy="sma_cross", parameters=GRID[i % len(GRID)], **MARKET)
            for i in range(n_bots)]
    for bot in bots:
        services.start_bot(bot)
    return bots


def _assert_exactly_once(bots: list[Bot], candles: pd.DataFrame, history: int) -> None:
    expected_candles = len(candles) - history
    with connection.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT (bot_id, timestamp)) FROM signals")
        total, distinct = cur.fetchone()
    assert total == distinct == expected_candles * len(bots)
    assert BotPerformance.objects.count() == expected_candles * len(bots)
    for bot in bots[:len(GRID)]:
        want = twin_of(bot)[1]
        for twin_bot in bots[bot.pk - bots[0].pk::len(GRID)]:
            assert recorded(twin_bot)[1] == want
    assert Trade.objects.count() == sum(len(twin_of(b)[1]) for b in bots[:len(GRID)]) * (len(bots) // len(GRID))


def test_given_a_worker_killed_mid_tick_when_a_new_one_starts_then_every_decision_is_made_exactly_once(
        candles, dispatching, settings):
    bots = _start_fleet(candles, 240, 100)
    ingest_candles(**MARKET, df=candles.iloc[100:], publish=True)  # 619 candles x 240 bots pending, in 1 shard
    first = worker(concurrency=1)

    def tick_in_progress():
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        "WHERE c.relname = 'bots' AND l.mode = 'RowShareLock' AND l.pid <> pg_backend_pid()")
            return cur.fetchone()[0] > 0

    wait_for(tick_in_progress, what="a fleet tick holding the bots' locks")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert Signal.objects.count() == 0  # the killed tick rolled back as a whole
    second = worker(concurrency=1)
    try:
        last = int(candles["timestamp"].iloc[-1])
        wait_for(lambda: not Bot.objects.filter(pk__in=[b.pk for b in bots]).exclude(last_candle_timestamp=last)
                 .exists(), timeout=300, what="the redelivered shard to decide every bot")
    finally:
        stop_worker(second)
    _assert_exactly_once(bots, candles, 100)


def test_given_the_same_shard_twice_at_once_then_nothing_is_doubled(candles, dispatching):
    from apps.bots.tasks import tick_shard_task

    bots = _start_fleet(candles, 60, 100)
    ingest_candles(**MARKET, df=candles.iloc[100:], publish=False)
    proc = worker(concurrency=2)
    try:
        ids = [b.pk for b in bots]
        tick_shard_task.delay(ids)
        tick_shard_task.delay(ids)
        last = int(candles["timestamp"].iloc[-1])
        wait_for(lambda: not Bot.objects.filter(pk__in=ids).exclude(last_candle_timestamp=last).exists(),
                 what="both deliveries")
        time.sleep(3)  # let a re-enqueued (skipped) delivery run too
    finally:
        stop_worker(proc)
    _assert_exactly_once(bots, candles, 100)


def test_given_a_strategy_raising_on_four_ticks_then_three_restarts_then_error_and_a_system_event(
        candles, dispatching, redis_client):
    ingest_candles(**MARKET, df=candles.iloc[:100], publish=False)
    bot = Bot.objects.create(name="broken", strategy="h8_always_raises", parameters={"fast": 5, "slow": 20},
                             **MARKET)
    services.start_bot(bot)
    events = redis_client.pubsub(ignore_subscribe_messages=True)
    events.subscribe("system:events")
    proc = worker(concurrency=1)
    try:
        ingest_candles(**MARKET, df=candles.iloc[100:101], publish=True)
        t0 = int(time.time() * 1000)
        outcomes = []
        for i in range(4):
            wait_for(lambda: Bot.objects.get(pk=bot.pk).failed_at is not None, what=f"tick {i + 1} to fail")
            outcomes.append(services.monitor_bots(now_ms=t0 + i * 60_000))
    finally:
        stop_worker(proc)
    bot.refresh_from_db()
    assert [bool(o.restarted) for o in outcomes] == [True, True, True, False]
    assert bot.status == Bot.Status.ERROR and bot.restart_count == 3 and "broken on purpose" in bot.last_error
    seen = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and seen is None:
        message = events.get_message(timeout=0.5)
        if message and json.loads(message["data"]).get("bot_id") == bot.pk:
            seen = json.loads(message["data"])
    events.close()
    assert seen is not None and seen["event"] == "bot_gave_up"


def test_given_every_process_stopped_when_started_again_then_running_bots_resume_and_stopped_stay(
        candles, dispatching):
    ingest_candles(**MARKET, df=candles.iloc[:100], publish=False)
    running = Bot.objects.create(name="runs", strategy="sma_cross", parameters=GRID[0], **MARKET)
    stopped = Bot.objects.create(name="rests", strategy="sma_cross", parameters=GRID[0], **MARKET)
    for bot in (running, stopped):
        services.start_bot(bot)
    services.stop_bot(stopped)
    ingest_candles(**MARKET, df=candles.iloc[100:200], publish=False)  # arrived while everything was down

    proc = worker(concurrency=1)  # worker_ready: sync configs, resume running bots
    try:
        last = int(candles["timestamp"].iloc[199])
        wait_for(lambda: Bot.objects.get(pk=running.pk).last_candle_timestamp == last, what="the running bot")
    finally:
        stop_worker(proc)
    assert Signal.objects.filter(bot=running).count() == 100
    assert not Signal.objects.filter(bot=stopped).exists()
    assert Bot.objects.get(pk=stopped.pk).status == Bot.Status.STOPPED
