"""A sweep chunk lost for good: the worker SIGKILLed whole mid-chunk and the broker then restarted without
persistence (every queued and unacked message, and the chord's counter, gone). Without recovery the sweep stays
RUNNING forever; the beat's recover_sweeps_task (a real beat process, SlotLockedScheduler) sends the missing
parameter sets again and the sweep completes with every set counted once (unique (sweep, index) results).

Guard: apps.backtest.services.recover_stalled_sweeps (scripts/check_guards.py removes its re-dispatch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from apps.backtest.models import Status, Sweep, SweepResult
from apps.market.services import ingest_candles
from tests.reliability import strategies
from tests.reliability.harness import (
    ROOT,
    PrivateRedis,
    log_tail,
    process_env,
    real_candles,
    start_beat,
    start_worker_on,
    stop_process,
    wait_until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]

MARKET = {"exchange": "h12lost", "symbol": "BTC/USDT", "timeframe": "1m"}
GRID = {"fast": [5, 8, 10, 12], "slow": [20, 30, 40]}  # 12 parameter sets, 4 chunks of 3
STALL_S = "3"

DISPATCH = """
import django
django.setup()
from apps.backtest import services
print(services.create_sweep(strategy="h12_block_once", grid={grid!r}, chunk_size=3, top_k=12, **{market!r}).pk)
"""


def _client(url):
    import redis

    return redis.Redis.from_url(url)


@pytest.fixture
def recovery_schedule():
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="h12 recover sweeps", task="apps.backtest.tasks.recover_sweeps_task",
                                interval=every, queue="backtest")
    yield


def test_given_a_chunk_lost_with_the_broker_when_the_beat_recovers_then_the_sweep_completes_with_every_set_once(
        recovery_schedule, figures):
    strategies.register_all()
    ingest_candles(**MARKET, df=real_candles(600), publish=False)
    with PrivateRedis(persist=False) as private:
        env = process_env(redis_url=private.url, extra={
            "TRADEBOT_STRATEGIES": strategies.PATHS, "DJANGO_SETTINGS_MODULE": "tests.reliability.worker_settings",
            "TRADEBOT_SWEEP_STALL_S": STALL_S})
        worker = beat = None
        try:
            worker = start_worker_on(env, queues="backtest", concurrency=2)
            out = subprocess.run([sys.executable, "-c", DISPATCH.format(grid=GRID, market=MARKET)], cwd=ROOT,
                                 env=env, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr[-2000:]
            sweep_id = int(out.stdout.strip().splitlines()[-1])
            r = _client(private.url)
            wait_until(lambda: r.get(strategies.PID), what="a chunk blocked inside the strategy", limit_s=45)
            before_kill = SweepResult.objects.filter(sweep_id=sweep_id).count()
            os.killpg(worker.pid, signal.SIGKILL)  # main process and pool: nothing acks, nothing cleans up
            worker.wait(timeout=10)
            private.restart()  # no append-only file: every message and the chord's counter are gone
            lost_messages = sum(_client(private.url).llen(q) for q in ("backtest",))
            _client(private.url).set(strategies.RELEASE, 1)  # the counter restarted: no compute blocks again
            stuck = Sweep.objects.get(pk=sweep_id)

            worker = start_worker_on(env, queues="backtest", concurrency=2)
            beat = start_beat(env, scheduler="tradebot.beat:SlotLockedScheduler")
            try:
                sweep = wait_until(lambda: (s := Sweep.objects.get(pk=sweep_id)).status != Status.RUNNING and s,
                                   what="the recovered sweep finishes", limit_s=50)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nbeat: {log_tail(beat)}\nworker: {log_tail(worker)}") from None
            worker_log = log_tail(worker, 200000)
        finally:
            for proc in (beat, worker):
                if proc is not None:
                    stop_process(proc)
    indexes = list(SweepResult.objects.filter(sweep_id=sweep_id).values_list("index", flat=True))
    figures.fault = ("SIGKILL of the whole worker mid sweep chunk, then the broker restarted without persistence "
                     "(the chunk's message and the chord counter lost)")
    figures.faults_injected = 2
    figures.decisions = len(indexes)
    figures.lost = sweep.total - len(set(indexes))
    figures.doubled = len(indexes) - len(set(indexes)) + max(0, sweep.completed - sweep.total)
    figures.extra = {"results_before_kill": before_kill, "status_after_loss": stuck.status,
                     "redispatches": sweep.redispatches, "messages_left_after_restart": lost_messages,
                     "stall_s": float(STALL_S)}
    assert stuck.status == Status.RUNNING and lost_messages == 0
    assert sweep.status == Status.DONE, (sweep.error, worker_log[-4000:])
    assert (sweep.total, sweep.completed, sweep.failed, sweep.error) == (12, 12, 0, "")
    assert sorted(r["index"] for r in sweep.ranking) == list(range(12))
    assert sweep.redispatches >= 1
    figures.check(f"{before_kill} of 12 sets were stored when the chunk was lost; after {STALL_S}s without progress "
                  f"the beat re-dispatched the {12 - before_kill} missing sets ({sweep.redispatches} time(s)); the "
                  "sweep ranked all 12, each stored once")
    figures.assert_nothing_lost_or_doubled()
