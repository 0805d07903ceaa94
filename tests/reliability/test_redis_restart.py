"""Our own Redis (broker, result backend, pub/sub) restarted mid-run: workers reconnect by themselves and no sweep
chunk or bot tick is lost or doubled. The shared Redis is never touched: a private redis-server on a free port with
an append-only file (a broker must persist: see README), restarted with SIGKILL while a chunk is running.

A chunk message Redis handed out by BRPOP in the instant it stopped is lost to the broker (popped, never in the
unacked set); the beat's recovery pass (recover_stalled_sweeps, run here as the beat would) sends it again, so the
sweep still counts every set once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from apps.backtest.models import Status, Sweep, SweepResult
from apps.bots import services as bot_services
from apps.bots.models import Bot, Signal
from apps.market.services import ingest_candles
from tests.reliability import strategies
from tests.reliability.harness import (
    ROOT,
    PrivateRedis,
    log_tail,
    process_env,
    real_candles,
    start_worker_on,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]

MARKET = {"exchange": "h12redis", "symbol": "BTC/USDT", "timeframe": "1m"}
GRID = {"fast": [5, 8, 10, 12], "slow": [20, 30, 40]}
STALL_S = 15  # no stored progress this long after the release: a chunk was lost with the restart

DISPATCH = """
import django, sys
django.setup()
from apps.backtest import services
from apps.bots.tasks import tick_bot_task
if {sweep}:
    print(services.create_sweep(strategy="h12_block_once", grid={grid!r}, chunk_size=2, top_k=12, **{market!r}).pk)
for bot_id in {bots!r}:
    tick_bot_task.delay(bot_id)
"""
# The beat's sweep recovery pass (recover_sweeps_task), through the private broker: a chunk message Redis handed out
# by BRPOP as it stopped is in neither the queue nor the unacked set, so only this pass sends it again.
RECOVER = """
import django
django.setup()
from apps.backtest.services import recover_stalled_sweeps
print(recover_stalled_sweeps(stall_s={stall_s}))
"""


def _client(url):
    import redis

    return redis.Redis.from_url(url)


def test_given_our_redis_restarted_mid_sweep_and_ticks_then_workers_reconnect_and_nothing_is_lost_or_doubled(figures):
    df = real_candles(400)
    ingest_candles(**MARKET, df=df.iloc[:300], publish=False)
    bots = []
    for i in range(3):
        bot = Bot.objects.create(name=f"h12-redis-{i}", strategy="sma_cross", parameters={"fast": 5, "slow": 20},
                                 **MARKET)
        bot_services.reset_portfolio(bot, history_start=int(df["timestamp"].iloc[0]))
        bots.append(bot)
    with PrivateRedis(persist=True) as private:
        env = {"REDIS_URL": private.url, "CELERY_BROKER_URL": private.url, "CELERY_RESULT_BACKEND": private.url,
               "TRADEBOT_STRATEGIES": strategies.PATHS, "DJANGO_SETTINGS_MODULE": "tests.reliability.worker_settings"}
        worker = None
        try:
            worker = start_worker_on(process_env(redis_url=private.url, extra=env), queues="backtest,bots")
            for bot in bots:
                bot_services.arm_replay(bot, start=int(df["timestamp"].iloc[0]))  # decides the stored candles too
            dispatch_env = process_env(redis_url=private.url, extra={"TRADEBOT_STRATEGIES": strategies.PATHS})

            def run(code: str) -> str:
                out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                     timeout=120, env=dispatch_env)
                assert out.returncode == 0, out.stderr[-2000:]
                return out.stdout

            def dispatch(sweep: bool) -> str:
                return run(DISPATCH.format(sweep=sweep, grid=GRID, market=MARKET, bots=[b.pk for b in bots]))

            recovered = []

            def sweep_finished():
                sweep = Sweep.objects.get(pk=sweep_id)
                if sweep.status != Status.RUNNING:
                    return sweep
                if time.monotonic() - released_at > STALL_S and not recovered:  # what the beat would do
                    recovered.append(run(RECOVER.format(stall_s=STALL_S)).strip())
                return None

            sweep_id = int(dispatch(True).strip().splitlines()[-1])  # + ticks of the first 300 candles
            r = _client(private.url)
            wait_until(lambda: r.get(strategies.PID), what="a sweep chunk running on the worker", limit_s=45)
            private.restart(signal.SIGTERM)  # stop + start on the same port: the AOF brings the queues back
            r = _client(private.url)
            listener = r.pubsub(ignore_subscribe_messages=True)
            listener.subscribe(*[f"signals:{b.pk}" for b in bots])
            ingest_candles(**MARKET, df=df.iloc[300:], publish=False)
            dispatch(False)  # ticks of 100 new candles through the restarted broker
            r.set(strategies.RELEASE, 1)
            released_at = time.monotonic()
            sweep = wait_until(sweep_finished, what="the sweep finishes after the restart", limit_s=55)
            last = int(df["timestamp"].iloc[-1])
            wait_until(lambda: all(Bot.objects.get(pk=b.pk).last_candle_timestamp == last for b in bots),
                       what="every bot ticked", limit_s=30)
            alive = worker.poll() is None
            notified, quiet_since = 0, time.monotonic()
            while time.monotonic() - quiet_since < 2 and notified < 300:
                message = listener.get_message(timeout=0.2)
                if message is not None and message["type"] == "message":
                    notified, quiet_since = notified + 1, time.monotonic()
            listener.close()
        finally:
            if worker is not None:
                stop_process(worker)
            log = log_tail(worker, 200000) if worker is not None else ""
    indexes = list(SweepResult.objects.filter(sweep_id=sweep_id).values_list("index", flat=True))
    stamps = [list(Signal.objects.filter(bot=b).values_list("timestamp", flat=True)) for b in bots]
    figures.fault = "own Redis (broker + results + pub/sub) stopped and restarted while a sweep chunk ran"
    figures.faults_injected = private.restarts
    figures.decisions = len(indexes) + sum(len(s) for s in stamps)
    figures.lost = (sweep.total - len(set(indexes))) + sum(len(df) - len(set(s)) for s in stamps)
    figures.doubled = (len(indexes) - len(set(indexes))) + sum(len(s) - len(set(s)) for s in stamps) + max(
        0, sweep.completed - sweep.total)
    figures.extra = {"worker_reconnected": "Connected to redis" in log.split("Connection to broker lost")[-1],
                     "signals_published_after_restart": notified, "sweep_recovery_pass": recovered}
    assert alive
    assert notified == 3 * 100  # notifications resumed: every post-restart decision was published
    assert "Connection to broker lost" in log  # the restart really cut the worker off
    assert sweep.status == Status.DONE and (sweep.completed, sweep.total) == (12, 12), (sweep.error, log[-6000:])
    figures.check("the worker reconnected by itself; the sweep finished with all 12 sets once; 3 bots decided "
                  "all 400 candles once (100 of them dispatched after the restart, each published on signals:{id})")
    figures.assert_nothing_lost_or_doubled()
