"""Benchmark: one new candle through a bot fleet, end to end on real Celery workers and PostgreSQL. ONE JSON line.

Setup (untimed, scratch database `tradebot_bench_bots`, your REDIS_URL): 1h candles of the real Binance BTC/USDT
sample (sample_data/binance_spot_2023) stored per market; sma_cross bots with 100 distinct parameter sets
(fast 3..12 x slow 20..29), running, each having decided every candle but the newest (history start = first stored).

Timed, per case and worker count (real `celery worker -c 1` and `-c 2` on queue bots): from the commit of
`ingest_candles(..., publish=True)` of ONE new candle per market (every market's candle in one transaction, as the
stream's CandleWriter stores simultaneous closes; the commit fans out one `tick_shard_task` per shard of
TRADEBOT_TICK_SHARD_SIZE bots) until every bot of the case has that candle's signal and snapshot stored (polled:
`last_candle_timestamp` moves in the same transaction as the signal/snapshot rows; a cheap probe every 10 ms, the exact
count once at the end). Median of ROUNDS candles.
Cases: 1,000 and 10,000 bots on one market; 100 markets x 100 bots (one candle on every market, one commit).

Baseline, same run: the per-bot path this replaced (commit f2774a0's `tick_bot`: one bot per transaction, its own
window read and ORM writes), called in this process (no Celery overhead: favourable to the baseline) over 1,000 bots.
mem_per_bot_kb: tracemalloc peak of one in-process `tick_shard` over 10,000 bots, divided by 10,000.
The machine is shared (other sessions' tests and benchmarks run at the same time): absolute figures are noisy.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRATCH = "tradebot_bench_bots"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
HISTORY = 300  # stored candles before the timed ones
PARAMS = [{"fast": f, "slow": s} for f in range(3, 13) for s in range(20, 30)]


def _admin(sql: str) -> None:
    import psycopg2

    u = urlparse(os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres")
    conn = psycopg2.connect(host=u.hostname, port=u.port or 5432, user=u.username, password=u.password,
                            dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _setup_django() -> None:
    u = urlparse(os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres")
    _admin(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
    _admin(f"CREATE DATABASE {SCRATCH}")
    auth = u.username + (f":{u.password}" if u.password else "")
    os.environ["DATABASE_URL"] = f"postgres://{auth}@{u.hostname}:{u.port or 5432}/{SCRATCH}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tradebot.settings.test"
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "0"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _candles():
    import pandas as pd

    df = pd.read_csv(ROOT / "sample_data" / "binance_spot_2023" / "binance_BTC_USDT-1h.csv")
    df["timestamp"] += 3_600_000
    return df[["timestamp", "open", "high", "low", "close", "volume"]]


def _reset() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("TRUNCATE signals, trades, bot_performance, bots, market_data, market_coveredrange, "
                    "market_datagap, market_market CASCADE")


def _fleet(markets: list[str], per_market: int, df) -> dict[str, list[int]]:
    """Store HISTORY candles per market and create running bots that decided all of them."""
    from apps.bots.models import Bot
    from apps.market.services import ingest_candles

    out = {}
    first, last = int(df["timestamp"].iloc[0]), int(df["timestamp"].iloc[HISTORY - 1])
    for ex in markets:
        ingest_candles(exchange=ex, symbol="BTC/USDT", timeframe="1h", df=df.iloc[:HISTORY], publish=False)
        bots = Bot.objects.bulk_create([
            Bot(name=f"{ex}-{i}", strategy="sma_cross", parameters=PARAMS[i % len(PARAMS)], exchange=ex,
                symbol="BTC/USDT", timeframe="1h", status="running", history_start=first,
                last_candle_timestamp=last) for i in range(per_market)])
        out[ex] = [b.pk for b in bots]
    return out


def _all_at(ids: list[int], ts: int) -> bool:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM bots WHERE id = ANY(%s) AND last_candle_timestamp = %s", [ids, ts])
        return cur.fetchone()[0] == len(ids)


def _any_pending(lo: int, hi: int, ts: int) -> bool:
    """Cheap probe while polling: is any bot of the id range not at `ts` yet? Scans from the newest id (the last shard
    enqueued) and stops at the first one pending. The exact count (`_all_at`) would cost PostgreSQL ~14 ms per poll
    over 10,000 ids, most of a core at a 5 ms poll interval: the harness would compete with the workers it measures."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT 1 FROM bots WHERE id BETWEEN %s AND %s AND last_candle_timestamp IS DISTINCT FROM %s "
                    "ORDER BY id DESC LIMIT 1", [lo, hi, ts])
        return cur.fetchone() is not None


def _round(fleet: dict[str, list[int]], df, k: int) -> float:
    """Ingest candle HISTORY + k on every market; seconds from the commit until every bot stored it."""
    from django.db import transaction

    from apps.market.services import announce_together, ingest_candles

    ids = [i for v in fleet.values() for i in v]
    lo, hi = min(ids), max(ids)
    assert hi - lo + 1 == len(ids), "the probe needs the case's bots to hold one contiguous id range"
    row = df.iloc[HISTORY + k:HISTORY + k + 1]
    ts = int(row["timestamp"].iloc[0])
    committed: list[float] = []
    # every market's candle in one transaction and one announcement, as the stream's writer stores them
    with announce_together(), transaction.atomic():
        transaction.on_commit(lambda: committed.append(time.perf_counter()))  # first callback: the clock starts
        for ex in fleet:
            ingest_candles(exchange=ex, symbol="BTC/USDT", timeframe="1h", df=row, publish=True)
    t0 = committed[0]
    deadline = t0 + 300
    while _any_pending(lo, hi, ts):
        if time.perf_counter() > deadline:
            raise RuntimeError("fleet did not decide the candle within 300 s")
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    assert _all_at(ids, ts)
    return elapsed


def _case(markets: list[str], per_market: int, df) -> dict:
    _reset()
    fleet = _fleet(markets, per_market, df)
    n = len(markets) * per_market
    _round(fleet, df, 0)  # warm-up: worker imports, numba cache, strategy instances
    times = [_round(fleet, df, k) for k in range(1, ROUNDS + 1)]
    med = statistics.median(times)
    return {"bots": n, "seconds": round(med, 3), "bot_ticks_per_s": round(n / med, 1),
            "spread_s": [round(min(times), 3), round(max(times), 3)]}


def _legacy_per_bot(df, n: int = 1000) -> dict:
    """The per-bot path this replaced, timed in-process over n bots for one new candle."""
    from legacy_tick import tick_bot

    from apps.market.services import ingest_candles

    _reset()
    fleet = _fleet(["legacy"], n, df)
    ingest_candles(exchange="legacy", symbol="BTC/USDT", timeframe="1h", df=df.iloc[HISTORY:HISTORY + 1],
                   publish=False)
    t0 = time.perf_counter()
    for pk in fleet["legacy"]:
        tick_bot(pk)
    sec = time.perf_counter() - t0
    assert _all_at(fleet["legacy"], int(df["timestamp"].iloc[HISTORY]))
    return {"bots": n, "seconds": round(sec, 3), "bot_ticks_per_s": round(n / sec, 1)}


def _memory(df, n: int = 10_000) -> float:
    from apps.bots import services
    from apps.market.services import ingest_candles

    _reset()
    fleet = _fleet(["mem"], n, df)
    ingest_candles(exchange="mem", symbol="BTC/USDT", timeframe="1h", df=df.iloc[HISTORY:HISTORY + 1],
                   publish=False)
    tracemalloc.start()
    services.tick_shard(fleet["mem"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return round(peak / n / 1024, 2)


def main() -> None:
    _setup_django()
    sys.path.insert(0, str(ROOT / "bench"))
    from django.conf import settings

    from tests.celery_workers import start_worker, stop_worker
    from tradebot.celery import app

    df = _candles()
    app.conf.task_always_eager = False
    out: dict = {"bench": "bots", "shard_size": settings.TRADEBOT_TICK_SHARD_SIZE, "rounds": ROUNDS,
                 "machine_shared": True}
    baseline = _legacy_per_bot(df)
    out["per_bot_baseline_1000"] = baseline
    print(json.dumps({"partial": out}), file=sys.stderr, flush=True)
    for procs in (2, 1):
        app.control.purge()
        proc, _ = start_worker(concurrency=procs, queues="bots", database_name=SCRATCH, timeout=240,
                               extra_env={"CELERY_TASK_ALWAYS_EAGER": "0"})
        try:
            out[f"workers_{procs}"] = {
                "one_market_1000": _case(["m0"], 1000, df),
                "one_market_10000": _case(["m0"], 10_000, df),
                "markets_100x100": _case([f"m{i}" for i in range(100)], 100, df),
            }
            print(json.dumps({"partial": out}), file=sys.stderr, flush=True)
            if procs == 2 and os.environ.get("BENCH_SHARD_SWEEP", "1") == "1":  # shard size (producer side), 10k bots
                default = settings.TRADEBOT_TICK_SHARD_SIZE
                sweep = {}
                for size in sorted({250, 500, 1000, 2500} - {default}):
                    settings.TRADEBOT_TICK_SHARD_SIZE = size
                    sweep[size] = _case(["m0"], 10_000, df)["seconds"]
                settings.TRADEBOT_TICK_SHARD_SIZE = default
                sweep[default] = out["workers_2"]["one_market_10000"]["seconds"]
                out["shard_size_sweep_10000_s"] = dict(sorted(sweep.items()))
                print(json.dumps({"partial": out}), file=sys.stderr, flush=True)
        finally:
            stop_worker(proc)
    w1, w2 = out["workers_1"], out["workers_2"]
    out["speedup_vs_per_bot_1000"] = round(w2["one_market_1000"]["bot_ticks_per_s"] / baseline["bot_ticks_per_s"], 1)
    out["speedup_vs_per_bot_10000"] = round(w2["one_market_10000"]["bot_ticks_per_s"] / baseline["bot_ticks_per_s"],
                                            1)
    out["scaling_1_to_2_workers_10000"] = round(w1["one_market_10000"]["seconds"] / w2["one_market_10000"]["seconds"],
                                                2)
    out["mem_per_bot_kb"] = _memory(df)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
