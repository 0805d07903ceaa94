"""The soak: many running bots ticking candle after candle on real workers while workers are SIGKILLed and the
broker Redis is restarted; counts every decision (signals rows), lost and doubled, wall time and peak worker memory.

Used by tests/reliability/test_soak.py: bounded in `make test`, full size with `make soak` (SOAK_BOTS=10000,
SOAK_CANDLES=60). Everything runs on a private Redis (the shared one is never restarted) and the test database.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field

from tests.reliability.harness import (
    PrivateRedis,
    process_env,
    real_candles,
    start_worker_on,
    stop_process,
)

MARKET = {"exchange": "h12soak", "symbol": "BTC/USDT", "timeframe": "1m"}
WARMUP = 30


@dataclass
class SoakFigures:
    bots: int
    candles: int
    workers: int
    expected_decisions: int = 0
    decisions: int = 0
    lost: int = 0
    doubled: int = 0
    bots_with_errors: int = 0
    supervisor_restarts: int = 0
    workers_killed: int = 0
    redis_restarts: int = 0
    wall_seconds: float = 0.0
    seconds_per_candle: list[float] = field(default_factory=list)
    peak_worker_rss_mb: float = 0.0
    api: dict = field(default_factory=dict)  # the API under load during the soak (tests.load figures)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["seconds_per_candle"] = [round(s, 2) for s in self.seconds_per_candle]
        return out


def _group_rss_mb(pgids: set[int]) -> float:
    """Resident memory of every process in these process groups (a worker and its pool), in MB."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                pgrp = int(f.read().rsplit(")", 1)[1].split()[2])
            if pgrp not in pgids:
                continue
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024


def _seed_bots(n: int, history_start: int, decided_until: int) -> list[int]:
    from apps.bots.models import Bot

    rows = [Bot(name=f"h12-soak-{i:05d}", strategy="sma_cross", parameters={"fast": 5, "slow": 20}, **MARKET,
                status=Bot.Status.RUNNING, cash=1000.0, initial_balance=1000.0, peak_equity=1000.0,
                history_start=history_start, last_candle_timestamp=decided_until) for i in range(n)]
    Bot.objects.bulk_create(rows, batch_size=2000)
    return list(Bot.objects.filter(name__startswith="h12-soak-").values_list("pk", flat=True))


def _wait_or_supervise(ids: list[int], close: int, k: int, candles: int, figures: SoakFigures) -> None:
    """Wait until every bot decided `close`. A tick message lost with the broker (popped by a worker in the instant
    Redis was killed) is what the beat monitor exists for: when no bot advances for STALL_S, run the real
    monitor_bots pass (its silence threshold reached by passing a later `now_ms`), which restarts the silent bots."""
    from django.utils import timezone

    from apps.bots.models import Bot
    from apps.bots.services import monitor_bots

    behind = Bot.objects.filter(pk__in=ids, last_candle_timestamp__lt=close)
    deadline = time.monotonic() + 180 + len(ids) / 20
    last_count, last_change = behind.count(), time.monotonic()
    while last_count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{last_count} bots never decided candle {k + 1}/{candles}")
        time.sleep(0.2)
        count = behind.count()
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            later = int(timezone.now().timestamp() * 1000) + 10 * 60_000
            figures.supervisor_restarts += len(monitor_bots(now_ms=later).restarted)
            last_change = time.monotonic()


STALL_S = 20.0


def _api_load(ids: list[int], rate: float, seconds: float):
    """The read API under `rate` requests/s while the soak runs: a gunicorn of the production settings' kind on the
    test database, a staff token, requests spread over candle pages, bot signals, trades and bot details."""
    from django.conf import settings
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from tests.celery_workers import _database_url
    from tests.load import BackgroundLoad
    from tests.servers import gunicorn_server

    user = User.objects.create_user("h12-soak-reader", password="soak-pass-123")
    token = Token.objects.create(user=user).key
    db = dict(settings.DATABASES["default"])
    from django.db import connection

    env = {"DATABASE_URL": _database_url(db, connection.settings_dict["NAME"]), "DJANGO_DEBUG": "0",
           "CELERY_TASK_ALWAYS_EAGER": "0", "CELERY_BROKER_URL": "memory://",
           "CELERY_RESULT_BACKEND": "cache+memory://", "TRADEBOT_THROTTLE_USER": "100000000/minute"}
    server = gunicorn_server(env=env, workers=2, threads=4)
    base = server.__enter__()
    rng = random.Random(7)
    market = f"exchange={MARKET['exchange']}&symbol={MARKET['symbol']}&timeframe={MARKET['timeframe']}"
    paths = [lambda: f"/api/v1/market/candles/?{market}&limit=100",
             lambda: f"/api/v1/bots/{rng.choice(ids)}/signals/?limit=50",
             lambda: f"/api/v1/bots/{rng.choice(ids)}/trades/?limit=50",
             lambda: f"/api/v1/bots/{rng.choice(ids)}/"]
    load = BackgroundLoad(lambda: base + rng.choice(paths)(), {"Authorization": f"Token {token}"}, rate, seconds,
                          lambda status, body: status == 200).start()
    return server, load


def run_soak(*, bots: int, candles: int, workers: int = 2, concurrency: int = 2, kill_every: int = 10,
             redis_restart_at: int | None = None, shard_size: int | None = None, api_rps: float = 0.0,
             api_seconds: float = 0.0, seed: int = 12) -> SoakFigures:
    from celery import Celery
    from django.conf import settings
    from django.db.models import Count
    from django.test import override_settings

    from apps.bots.models import Bot, Signal
    from apps.bots.services import market_shards
    from apps.market.services import ingest_candles

    rng = random.Random(seed)
    figures = SoakFigures(bots=bots, candles=candles, workers=workers, expected_decisions=bots * candles)
    df = real_candles(WARMUP + candles)
    ingest_candles(**MARKET, df=df.iloc[:WARMUP], publish=False)
    ts = df["timestamp"].astype("int64").tolist()
    ids = _seed_bots(bots, history_start=ts[0], decided_until=ts[WARMUP - 1])
    with PrivateRedis(persist=True) as private:
        env = process_env(redis_url=private.url, extra={"DJANGO_SETTINGS_MODULE": "tests.reliability.worker_settings"})
        dispatcher = Celery("h12soak", broker=private.url, set_as_current=False)  # sends only, not the app of the suite
        procs = [start_worker_on(env, queues="bots", concurrency=concurrency) for _ in range(workers)]
        server, load = _api_load(ids, api_rps, api_seconds) if api_rps and api_seconds else (None, None)
        t0 = time.monotonic()
        try:
            for k in range(candles):
                started = time.monotonic()
                close = ts[WARMUP + k]
                ingest_candles(**MARKET, df=df.iloc[WARMUP + k: WARMUP + k + 1], publish=False)
                with dispatcher.connection_for_write() as conn, conn.Producer() as producer:
                    with override_settings(TRADEBOT_TICK_SHARD_SIZE=shard_size or settings.TRADEBOT_TICK_SHARD_SIZE):
                        shards = market_shards(**MARKET)  # what a stored candle enqueues (enqueue_ticks)
                    for shard in shards:
                        dispatcher.send_task("apps.bots.tasks.tick_shard_task", args=[shard], queue="bots",
                                             routing_key="bots", producer=producer, ignore_result=True)
                if kill_every and k % kill_every == kill_every // 2:
                    victim = rng.randrange(len(procs))
                    os.killpg(procs[victim].pid, signal.SIGKILL)  # mid candle: its unacked ticks come back
                    procs[victim].wait(timeout=10)
                    procs[victim] = start_worker_on(env, queues="bots", concurrency=concurrency)
                    figures.workers_killed += 1
                if redis_restart_at is not None and k == redis_restart_at:
                    private.restart()
                    figures.redis_restarts += 1
                figures.peak_worker_rss_mb = max(figures.peak_worker_rss_mb, _group_rss_mb({p.pid for p in procs}))
                _wait_or_supervise(ids, close, k, candles, figures)
                figures.seconds_per_candle.append(time.monotonic() - started)
            if load is not None:
                figures.api = load.join(timeout=api_seconds + 120).as_dict()
        finally:
            if server is not None:
                server.__exit__(None, None, None)
            for p in procs:
                stop_process(p)
            dispatcher.close()
    figures.wall_seconds = round(time.monotonic() - t0, 1)
    window = {"bot_id__in": ids, "timestamp__gt": ts[WARMUP - 1]}
    rows = Signal.objects.filter(**window).count()
    distinct = Signal.objects.filter(**window).values("bot_id", "timestamp").distinct().count()
    per_bot = Signal.objects.filter(**window).values("bot_id").annotate(n=Count("id"))
    figures.decisions = rows
    figures.lost = figures.expected_decisions - distinct
    figures.doubled = rows - distinct
    figures.bots_with_errors = Bot.objects.filter(pk__in=ids).exclude(last_error="").count()
    assert all(r["n"] == candles for r in per_bot) or figures.lost  # consistent with the totals
    figures.peak_worker_rss_mb = round(figures.peak_worker_rss_mb, 1)
    return figures
